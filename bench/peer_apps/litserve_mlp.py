"""Peer: LitServe with batching (16 requests / 5 ms), the MLP on ONNX Runtime with one intra-op thread.

    python litserve_mlp.py PORT   (BENCH_MODEL = the ONNX file)
"""

from __future__ import annotations

import os
import sys

import litserve as ls
import numpy as np
import onnxruntime as ort


class MLP(ls.LitAPI):
    def setup(self, device: str) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(os.environ["BENCH_MODEL"], options, providers=["CPUExecutionProvider"])

    def decode_request(self, request: dict) -> np.ndarray:
        return np.asarray(request["inputs"], dtype=np.float32).reshape(512)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"x": x})[0]

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray) -> dict:
        return {"outputs": [output.tolist()]}


if __name__ == "__main__":
    server = ls.LitServer(MLP(max_batch_size=16, batch_timeout=0.005), accelerator="cpu", workers_per_device=1)
    server.run(port=int(sys.argv[1]), num_api_servers=1, generate_client_file=False)
