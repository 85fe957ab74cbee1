"""The servers users would pick instead, serving the same ONNX file for
``benchmarks/peers.py``: each module here runs inside that server's own process, with
onnxruntime at one intra-op and one inter-op thread, as NEUKONFIG's partitions run."""
