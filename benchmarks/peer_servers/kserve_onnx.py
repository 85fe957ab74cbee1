"""A KServe ModelServer over onnxruntime, answering OIP v2 (JSON, and binary tensors
when the request asks for binary outputs).

    python kserve_onnx.py --model_name NAME --model_file FILE --http_port PORT
"""

from __future__ import annotations

import argparse
import uuid

import kserve
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from onnx_session import one_thread_session


class OnnxModel(kserve.Model):
    def __init__(self, name: str, model_file: str) -> None:
        super().__init__(name)
        self.model_file = model_file

    def load(self) -> bool:
        self._session = one_thread_session(self.model_file)
        self._input = self._session.get_inputs()[0].name
        self._outputs = [output.name for output in self._session.get_outputs()]
        self.ready = True
        return self.ready

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        batch = payload.inputs[0].as_numpy()
        results = self._session.run(None, {self._input: batch})
        outputs = []
        for name, result in zip(self._outputs, results, strict=True):
            output = InferOutput(name=name, shape=list(result.shape), datatype="FP32")
            output.set_data_from_numpy(result, binary_data=payload.use_binary_outputs)
            outputs.append(output)
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=payload.use_binary_outputs,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--model_file", required=True)
    args, _ = parser.parse_known_args()  # kserve reads --http_port and the rest itself
    model = OnnxModel(args.model_name, args.model_file)
    model.load()
    kserve.ModelServer(enable_grpc=False, workers=1).start([model])


if __name__ == "__main__":
    main()
