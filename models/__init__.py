"""Models: finding, validating, analysing, converting and running the networks convscope shows.

ONNX checks and graph analysis (layers, receptive fields), the sandboxed analysis of uploads, the
built-in EfficientNet-Lite0, the torch twin of an ONNX file (for the workers' gradients), and ONNX
Runtime sessions (`runtimes`) with the forward views computed on them (`forward`). `models` may import `core`;
it never imports `service` or `workers`. Only the modules that build torch networks import torch.
"""
