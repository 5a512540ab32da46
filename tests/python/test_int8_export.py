"""The int8 export path end to end: scripts/quantize_model.py (the code behind
`export_model.py --quantize int8`) quantizes the committed fp32 tiny model (and fuses the copy's
graphs, unless --no-fuse), the real binary serves the result, and its greedy tokens equal an
independent greedy loop over the same int8 graphs (onnxruntime's Python API, numpy argmax, one
prompt at a time).

    python tests/python/test_int8_export.py [path/to/t5serve]
"""

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort

from server import ROOT, serves_like_the_reference_loop

BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/t5serve"
SOURCE = ROOT / "tests/data/tiny-t5-masked"  # split decoders + the masked decoder
STEPS = 12


def quantize(out: Path, *extra: str) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/quantize_model.py"), str(SOURCE), str(out), *extra],
        check=True,
        capture_output=True,
    )


class Int8Export(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(dir=ROOT / "target")
        cls.int8 = Path(cls.tmp.name) / "tiny-t5-int8"
        quantize(cls.int8)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_graphs_are_quantized_and_settings_recorded(self):
        settings = json.loads((self.int8 / "quantization.json").read_text())
        self.assertEqual(settings["weight_type"], "QInt8")
        self.assertFalse(settings["per_channel"])
        # Signed weights are 7-bit unless --full-range (t5tools.quantize_dir).
        self.assertTrue(settings["reduce_range"])
        self.assertEqual(
            settings["graphs"],
            ["encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_with_past_masked.onnx"],
        )
        for name in settings["graphs"]:
            graph = onnx.load(str(self.int8 / name), load_external_data=False).graph
            ops = {n.op_type for n in graph.node}
            self.assertIn("MatMulInteger", ops, name)
            self.assertIn("DynamicQuantizeLinear", ops, name)
            int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
            self.assertTrue(int8_weights, f"{name} has no int8 (signed) weights")
            self.assertLess((self.int8 / name).stat().st_size, (SOURCE / name).stat().st_size, name)

    def test_int8_copies_are_fused_unless_no_fuse(self):
        # t5tools.fuse_wanted: int8 copies get ONNX Runtime's fused kernels by default
        # (scripts/fuse_graphs.py, every rewrite verified against the unfused graph there).
        report = json.loads((self.int8 / "fusion.json").read_text())
        for name in ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_with_past_masked.onnx"):
            self.assertEqual(report["graphs"][name]["applied"], ["skip_layernorm", "attention"], name)
            ops = {n.op_type for n in onnx.load(str(self.int8 / name), load_external_data=False).graph.node}
            self.assertTrue({"MultiHeadAttention", "SkipSimplifiedLayerNormalization", "MatMulInteger"} <= ops, name)
        out = Path(self.tmp.name) / "tiny-t5-int8-unfused"
        quantize(out, "--no-fuse")
        self.assertFalse((out / "fusion.json").exists())
        ops = {n.op_type for n in onnx.load(str(out / "decoder_with_past_model.onnx"), load_external_data=False).graph.node}
        self.assertNotIn("MultiHeadAttention", ops)
        self.assertIn("Softmax", ops)
        self.serves_like_the_reference_loop(out)

    def test_a_fusion_that_fails_keeps_the_unfused_graphs(self):
        # What fuse_graphs.fuse_dir does when the fused greedy ids differ: writes part of the
        # output, then exits. The default keeps the unfused copy with a warning; --fuse fails.
        sys.path.insert(0, str(ROOT / "scripts"))
        import fuse_graphs
        import t5tools

        def fails(src, out, *args, **kwargs):
            out.mkdir(parents=True, exist_ok=True)
            (out / "fusion.json").write_text("{}")
            raise SystemExit("greedy ids of the fused graphs differ from the unfused ones")

        out = Path(self.tmp.name) / "tiny-t5-int8-fusion-fails"
        quantize(out, "--no-fuse")
        before = sorted(f.name for f in out.iterdir())
        real, fuse_graphs.fuse_dir = fuse_graphs.fuse_dir, fails
        try:
            t5tools.fuse_in_place(out, explicit=False)
            self.assertEqual(sorted(f.name for f in out.iterdir()), before)
            with self.assertRaises(SystemExit) as raised:
                t5tools.fuse_in_place(out, explicit=True)
            self.assertIn("unfused graphs are kept", str(raised.exception))
            self.assertEqual(sorted(f.name for f in out.iterdir()), before)
        finally:
            fuse_graphs.fuse_dir = real
        self.assertFalse(out.with_name(out.name + ".unfused-tmp").exists())
        self.serves_like_the_reference_loop(out)

    def test_per_channel_is_an_option(self):
        out = Path(self.tmp.name) / "tiny-t5-int8-pc"
        quantize(out, "--per-channel")
        self.assertTrue(json.loads((out / "quantization.json").read_text())["per_channel"])

    def test_quantizing_twice_or_a_merged_only_directory_is_refused(self):
        r = subprocess.run(
            [sys.executable, str(ROOT / "scripts/quantize_model.py"), str(self.int8), str(Path(self.tmp.name) / "again")],
            capture_output=True,
            text=True,
        )
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("already quantized", r.stderr)
        r = subprocess.run(
            [sys.executable, str(ROOT / "scripts/quantize_model.py"), str(ROOT / "tests/data/tiny-t5-merged"), str(Path(self.tmp.name) / "m")],
            capture_output=True,
            text=True,
        )
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("split decoder pair", r.stderr)

    def serves_like_the_reference_loop(self, model: Path) -> dict:
        return serves_like_the_reference_loop(self, BINARY, model, "int8", STEPS)

    def test_server_serves_int8_and_equals_the_reference_loop(self):
        models = self.serves_like_the_reference_loop(self.int8)
        # The default (7-bit signed weights) cannot saturate on any CPU.
        self.assertFalse(models["models"][0]["int8_may_saturate"])

    def test_full_range_weights_are_served_and_may_saturate_where_the_kernel_does(self):
        out = Path(self.tmp.name) / "tiny-t5-int8-full"
        quantize(out, "--full-range")
        self.assertFalse(json.loads((out / "quantization.json").read_text())["reduce_range"])
        graph = onnx.load(str(out / "decoder_with_past_model.onnx")).graph
        weights = [onnx.numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims]
        self.assertGreater(max(int(np.abs(w.astype(np.int32)).max()) for w in weights), 64, "8-bit weights use the full range")
        models = self.serves_like_the_reference_loop(out)
        self.assertEqual(models["models"][0]["int8_may_saturate"], models["cpu"]["int8_kernel_saturates"])

    def test_flags_that_contradict_or_do_not_apply_are_refused(self):
        for flags in (["--reduce-range", "--full-range"], ["--quantize", "int4", "--full-range"]):
            with self.subTest(flags=flags):
                r = subprocess.run(
                    [sys.executable, str(ROOT / "scripts/quantize_model.py"), str(SOURCE), str(Path(self.tmp.name) / "x"), *flags],
                    capture_output=True,
                    text=True,
                )
                self.assertEqual(r.returncode, 2, r.stderr)

    def test_reduce_range_and_unsigned_weights_are_served_and_cannot_saturate(self):
        for flags, dtype in ((["--reduce-range"], onnx.TensorProto.INT8), (["--weights", "uint8"], onnx.TensorProto.UINT8)):
            with self.subTest(flags=flags):
                out = Path(self.tmp.name) / ("tiny-t5-int8" + "".join(flags))
                quantize(out, *flags)
                settings = json.loads((out / "quantization.json").read_text())
                self.assertEqual(settings["reduce_range"], "--reduce-range" in flags)
                self.assertEqual(settings["weight_type"], "QUInt8" if dtype == onnx.TensorProto.UINT8 else "QInt8")
                graph = onnx.load(str(out / "decoder_with_past_model.onnx")).graph
                weights = [onnx.numpy_helper.to_array(t) for t in graph.initializer if t.data_type == dtype and t.dims]
                self.assertTrue(weights)
                if dtype == onnx.TensorProto.INT8:
                    # 7-bit weights: |w| <= 64, so a pair of u8 x s8 products stays within 16 bits.
                    self.assertLessEqual(max(int(np.abs(w.astype(np.int32)).max()) for w in weights), 64)
                models = self.serves_like_the_reference_loop(out)
                self.assertFalse(models["models"][0]["int8_may_saturate"])


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
