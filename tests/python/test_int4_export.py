"""The int4 export path end to end: scripts/quantize_model.py --quantize int4 (the code behind
`export_model.py --quantize int4`, scripts/int4tools.py) quantizes the committed fp32 tiny model,
the graphs hold MatMulNBits (accuracy_level 4) and GatherBlockQuantized, the real binary serves
the result, and its greedy tokens equal an independent greedy loop over the same int4 graphs
(onnxruntime's Python API, numpy argmax, one prompt at a time).

The tiny model's matrices are small (K = 32 or 64): at the default block size 32 each column of a
K = 32 matrix is one block; the --block-size 16 case gives every matrix two or four blocks per
column. The tiny model has no held-out evaluation, so the accuracy guard must say it could not run.

    python tests/python/test_int4_export.py [path/to/t5serve]
"""

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import onnx

from server import ROOT, serves_like_the_reference_loop

sys.path.insert(0, str(ROOT / "scripts"))
import int4tools  # noqa: E402

BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/t5serve"
SOURCE = ROOT / "tests/data/tiny-t5-masked"  # tests/data/tiny-t5's graphs + the masked decoder
STEPS = 12
GRAPHS = ["encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_with_past_masked.onnx"]


def quantize(source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts/quantize_model.py"), str(source), str(out), "--quantize", "int4", *extra],
        capture_output=True,
        text=True,
    )


def constant_matmuls(graph) -> list[str]:
    inits = {t.name for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class Int4Export(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(dir=ROOT / "target")
        cls.int4 = Path(cls.tmp.name) / "tiny-t5-int4"
        cls.run_default = quantize(SOURCE, cls.int4)
        if cls.run_default.returncode != 0:
            raise RuntimeError(f"quantize_model.py --quantize int4 failed:\n{cls.run_default.stderr}")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_settings_are_recorded(self):
        settings = json.loads((self.int4 / "quantization.json").read_text())
        self.assertEqual(settings["dtype"], "int4")
        self.assertEqual(settings["bits"], 4)
        self.assertEqual(settings["block_size"], 32)
        self.assertFalse(settings["symmetric"])
        self.assertEqual(settings["accuracy_level"], 4)
        self.assertEqual(settings["graphs"], GRAPHS)
        self.assertNotIn("weight_type", settings)  # no int8 weights: nothing for the server's saturation rule

    def test_every_constant_matmul_is_matmulnbits_and_the_embedding_is_4_bit(self):
        for name in GRAPHS:
            with self.subTest(graph=name):
                before = onnx.load(str(SOURCE / name)).graph
                after = onnx.load(str(self.int4 / name)).graph
                self.assertEqual(constant_matmuls(after), [], "a MatMul with a constant weight is left in float")
                nbits = [n for n in after.node if n.op_type == "MatMulNBits"]
                self.assertEqual(len(nbits), len(constant_matmuls(before)))
                for node in nbits:
                    self.assertEqual(node.domain, "com.microsoft")
                    a = attrs(node)
                    self.assertEqual((a["bits"], a["block_size"], a["accuracy_level"]), (4, 32, 4), node.name)
                    self.assertEqual(len(node.input), 4, "asymmetric: packed weights, scales and zero points")
                if name != "encoder_model.onnx":
                    self.assertIn("/lm_head/MatMul_Q4", [n.name for n in nbits], "the lm_head is 4-bit too")
                gathers = [n for n in after.node if n.op_type == "GatherBlockQuantized"]
                self.assertEqual(len(gathers), 1, "the token embedding")
                self.assertEqual(attrs(gathers[0])["bits"], 4)
                # Small float tables (the relative attention bias) stay float.
                inits = {t.name: t for t in after.initializer}
                float_tables = [
                    inits[n.input[0]] for n in after.node if n.op_type == "Gather" and n.input[0] in inits
                ]
                self.assertTrue(float_tables)
                self.assertTrue(all(t.dims[0] < int4tools.EMBEDDING_MIN_ROWS for t in float_tables))
                self.assertLess((self.int4 / name).stat().st_size, (SOURCE / name).stat().st_size / 4, name)

    def test_accuracy_level_4_computes_in_int8_on_this_cpu(self):
        # onnxruntime silently falls back to float compute where MLAS has no int8 kernel.
        self.assertTrue(int4tools.int8_compute_active(32, symmetric=False))
        self.assertTrue(int4tools.int8_compute_active(16, symmetric=True))

    def test_the_guard_says_it_could_not_run(self):
        self.assertIn("guard could not run", self.run_default.stderr)
        guard = json.loads((self.int4 / "quantization.json").read_text())["heldout_guard"]
        self.assertEqual(guard, {"ran": False, "reason": "no held-out evaluation for this model"})

    def test_bad_flags_and_quantizing_twice_are_refused(self):
        out = Path(self.tmp.name) / "refused"
        for extra, said in (
            (["--block-size", "24"], "power of two"),
            (["--block-size", "8"], "power of two"),
            (["--per-channel"], "go with --quantize int8"),
        ):
            with self.subTest(extra=extra):
                r = quantize(SOURCE, out, *extra)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(said, r.stderr)
        r = subprocess.run(
            [sys.executable, str(ROOT / "scripts/quantize_model.py"), str(SOURCE), str(out), "--symmetric"],
            capture_output=True,
            text=True,
        )
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("go with --quantize int4", r.stderr)
        r = quantize(self.int4, out)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("already quantized", r.stderr)
        r = quantize(ROOT / "tests/data/tiny-t5-merged", out)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("split decoder pair", r.stderr)

    def serves_like_the_reference_loop(self, model: Path) -> dict:
        return serves_like_the_reference_loop(self, BINARY, model, "int4", STEPS)

    def test_server_serves_int4_and_equals_the_reference_loop(self):
        models = self.serves_like_the_reference_loop(self.int4)
        # int4 weights cannot saturate the int8 kernel: |w - zero point| <= 15 against int8 activations.
        self.assertFalse(models["models"][0]["int8_may_saturate"])

    def test_block_size_16_symmetric_on_the_split_only_model_is_served(self):
        out = Path(self.tmp.name) / "tiny-t5-int4-b16-sym"
        r = quantize(ROOT / "tests/data/tiny-t5", out, "--block-size", "16", "--symmetric")
        self.assertEqual(r.returncode, 0, r.stderr)
        settings = json.loads((out / "quantization.json").read_text())
        self.assertEqual((settings["block_size"], settings["symmetric"]), (16, True))
        self.assertEqual(settings["graphs"], GRAPHS[:3])
        graph = onnx.load(str(out / "decoder_with_past_model.onnx")).graph
        nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
        self.assertTrue(nbits)
        for node in nbits:
            self.assertEqual(len(node.input), 3, "symmetric: no zero points")
            a = attrs(node)
            self.assertGreaterEqual(a["K"] // a["block_size"], 2, "several blocks per column")
        self.serves_like_the_reference_loop(out)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
