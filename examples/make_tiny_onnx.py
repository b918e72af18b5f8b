"""Write a tiny ONNX model for the README walkthrough: y = scale * x + 1, x float32 [batch, 3].

    python examples/make_tiny_onnx.py --scale 2 v1.onnx
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="where to write the .onnx file")
    parser.add_argument("--scale", type=float, default=2.0)
    args = parser.parse_args()
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["scaled"]), helper.make_node("Add", ["scaled", "one"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(np.float32(args.scale).reshape(()), "scale"),
         numpy_helper.from_array(np.float32(1.0).reshape(()), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, args.out)
    print(f"wrote {args.out}: y = {args.scale:g} * x + 1")


if __name__ == "__main__":
    main()
