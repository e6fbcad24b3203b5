"""What the kinds share, kept once and imported by them; no kind lives here.

    backprop, signal_projection           one backward pass with swappable rectifier rules
    ascent, objectives, parameterisations,
    transforms, image_making, icons       gradient ascent on an image: the loop and its parts
    attributions                          attribution kinds run inside other kinds (trust)
    faithfulness, road, imputation,
    imputation_grid, deletion_insertion   the faithfulness scores of an attribution map
    pictures                              composite pictures (rows of captioned tiles, overlays)
"""
