"""The int8 export path end to end: scripts/quantize_model.py (the code behind
`export_model.py --quantize int8`) quantizes the committed fp32 tiny model, the real binary serves
the result, and its greedy tokens equal an independent greedy loop over the same int8 graphs
(onnxruntime's Python API, numpy argmax, one prompt at a time).

    python tests/python/test_int8_export.py [path/to/t5serve]
"""

import functools
import json
import subprocess
import sys
import tempfile
import unittest
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from server import ROOT, Server

BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/t5serve"
SOURCE = ROOT / "tests/data/tiny-t5-masked"  # split decoders + the masked decoder
STEPS = 12


def quantize(out: Path, *extra: str) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/quantize_model.py"), str(SOURCE), str(out), *extra],
        check=True,
        capture_output=True,
    )


@functools.lru_cache(maxsize=None)
def sessions(model: Path) -> tuple:
    """The encoder, decoder_model and decoder_with_past_model of `model`, loaded once."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    names = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")
    return tuple(ort.InferenceSession(str(model / n), opts, providers=["CPUExecutionProvider"]) for n in names)


def reference_greedy(model: Path, input_ids: list[int], steps: int) -> list[int]:
    """Greedy decoding over optimum's split graphs: encoder once, decoder_model for the first
    step, decoder_with_past_model after it, the cross-attention K/V kept from the first step.
    EOS (id 1) is never chosen, as with min_new_tokens = steps."""
    encoder, first, with_past = sessions(model)
    ids = np.array([input_ids], dtype=np.int64)
    mask = np.ones_like(ids)
    hidden = encoder.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    token = np.array([[0]], dtype=np.int64)  # T5's decoder start token
    outs = first.run(None, {"input_ids": token, "encoder_hidden_states": hidden, "encoder_attention_mask": mask})
    names = [o.name for o in first.get_outputs()]
    past = {n.replace("present", "past_key_values"): v for n, v in zip(names, outs) if n.startswith("present")}
    logits = outs[names.index("logits")]
    generated = []
    for _ in range(steps):
        scores = logits[0, -1].copy()
        scores[1] = -np.inf
        nxt = int(np.argmax(scores))
        generated.append(nxt)
        feeds = {"input_ids": np.array([[nxt]], dtype=np.int64), "encoder_attention_mask": mask, **past}
        outs = with_past.run(None, feeds)
        names = [o.name for o in with_past.get_outputs()]
        for n, v in zip(names, outs):
            if n.startswith("present"):
                past[n.replace("present", "past_key_values")] = v
        logits = outs[names.index("logits")]
    return generated


def post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


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

    def test_server_serves_int8_and_equals_the_reference_loop(self):
        golden = json.loads((ROOT / "tests/data/golden.json").read_text())["cases"]
        cases = [c for c in golden if c["prompt"]][:6]
        server = Server(BINARY, model=str(self.int8))
        try:
            with urllib.request.urlopen(server.base + "/v1/models", timeout=30) as r:
                info = json.loads(r.read())["models"][0]
            self.assertEqual(info["weights"], "int8")
            self.assertEqual(info["quantization"], json.loads((self.int8 / "quantization.json").read_text()))
            for case in cases:
                want = reference_greedy(self.int8, case["input_ids"], STEPS)
                got = post(
                    server.base,
                    "/v1/generate",
                    {"inputs": case["prompt"], "parameters": {"max_new_tokens": STEPS, "min_new_tokens": STEPS, "details": True}},
                )
                self.assertEqual([t["id"] for t in got["details"]["tokens"]], want, case["prompt"])
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
