"""The one onnxruntime session every peer serves: one thread, CPU, as NEUKONFIG's."""

from __future__ import annotations

import onnxruntime as ort


def one_thread_session(model_file: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_file, options, providers=["CPUExecutionProvider"])
