"""An MLServer custom runtime over onnxruntime (MLServer ships none for ONNX).

``model-settings.json`` names ``mlserver_onnx.OnnxModel`` with ``parameters.uri`` the
ONNX file; ``benchmarks/peers.py`` writes it and puts this folder on PYTHONPATH.
"""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from onnx_session import one_thread_session


class OnnxModel(MLModel):
    async def load(self) -> bool:
        self._session = one_thread_session(self.settings.parameters.uri)
        self._input = self._session.get_inputs()[0].name
        self._outputs = [output.name for output in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        batch = NumpyCodec.decode_input(payload.inputs[0])
        results = self._session.run(None, {self._input: batch})
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output(name, result)
                for name, result in zip(self._outputs, results, strict=True)
            ],
        )
