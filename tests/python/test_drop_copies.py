"""scripts/t5tools.drop_copies: the one-input Concat nodes torch's exporter leaves in the masked
decoder are removed without changing what the graph computes, a Concat that is a graph output
stays, and the committed masked test graph has none left.

    python tests/python/test_drop_copies.py
"""

import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import t5tools  # noqa: E402


def copies(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type == "Concat" and len(n.input) == 1)


def chain() -> onnx.ModelProto:
    """x -> Concat -> Concat -> Add(one) -> y, and x -> Concat -> z (a graph output)."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("Concat", ["x"], ["c1"], axis=-2),
        helper.make_node("Concat", ["c1"], ["c2"], axis=-2),
        helper.make_node("Add", ["c2", "one"], ["y"]),
        helper.make_node("Concat", ["x"], ["z"], axis=-2),
    ]
    vi = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 3])  # noqa: E731
    graph = helper.make_graph(nodes, "chain", [vi("x")], [vi("y"), vi("z")], initializer=[one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


class DropCopies(unittest.TestCase):
    def test_copies_are_removed_and_outputs_unchanged(self):
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "chain.onnx"
            onnx.save(chain(), str(path))
            self.assertEqual(t5tools.drop_copies(path), 2)
            model = onnx.load(str(path))
            onnx.checker.check_model(model)
            self.assertEqual([n.op_type for n in model.graph.node], ["Add", "Concat"])
            y, z = ort.InferenceSession(str(path)).run(None, {"x": x})
            np.testing.assert_array_equal(y, x + 1)
            np.testing.assert_array_equal(z, x)
            self.assertEqual(t5tools.drop_copies(path), 0, "nothing left to remove")

    def test_the_committed_masked_graph_has_no_copies(self):
        model = onnx.load(str(ROOT / "tests/data/tiny-t5-masked/decoder_with_past_masked.onnx"))
        self.assertEqual(copies(model), 0)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1])
