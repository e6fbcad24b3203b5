"""Models: finding, validating, analysing and loading the networks convscope shows."""
