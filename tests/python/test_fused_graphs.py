"""Fused graphs (issue 26, item 3): scripts/fuse_graphs.py rewrites the committed tiny model's
graphs to ONNX Runtime's fused CPU kernels (SkipSimplifiedLayerNormalization, MultiHeadAttention);
the rewritten graphs keep their inputs and outputs, their logits match the unfused graphs', their
greedy ids equal an independent greedy loop over the UNFUSED graphs (scripts/t5tools.ort_greedy),
and the real binary serves the fused directory with those same tokens.

    .venv-test/bin/python tests/python/test_fused_graphs.py [path/to/t5serve]

The logits tolerance, LOGITS_TOL: |fused - unfused| <= 1e-4 * max(1, max |logits|). The fused
kernels only reorder float32 sums (softmax normalization, the RMS reduction, attention GEMMs),
a few ulps (1.2e-7 relative) each, compounding over the layers; 1e-4 is ~800 ulps. Measured on
this model: max 1.7e-6..4e-6 at outputs of magnitude 2..4 (the script's fusion.json records it),
on models/t5-small-shape max 2.6e-6..3.8e-6 at magnitude 5..9. A wrong attention scale moves this
model's logits by 2.5..4.3 (test_a_rewrite_that_changes_the_results_is_not_applied), a missing
mask or a wrongly padded cache by 0.35..1.6 (DESIGN.md). int8 graphs get the script's int8
tolerance, 5e-2 (derived in scripts/fuse_graphs.py: the size of int8's own rounding noise).
Greedy ids must be equal, except where the unfused top-2 margin at the first differing step is
itself below LOGITS_TOL (DESIGN.md: golden margins on this model can be ~1e-5); either token is
right there.
"""

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

sys.path.insert(0, str(ROOT / "scripts"))
from t5tools import ort_greedy  # noqa: E402

BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/t5serve"
SOURCE = ROOT / "tests/data/tiny-t5-masked"  # split decoders + the masked decoder
GRAPHS = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_with_past_masked.onnx")
STEPS = 12
LOGITS_TOL = 1e-4  # relative to max(1, max |logits|); derivation in the module docstring


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def io_signature(path: Path):
    g = onnx.load(str(path), load_external_data=False).graph

    def sig(vs):
        return [
            (v.name, v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
            for v in vs
        ]

    return sig(g.input), sig(g.output)


def margins_along(model: Path, input_ids: list[int], path: list[int]) -> list[tuple[float, float]]:
    """(top-2 logit margin, max |logit|) of the unfused graphs at each step of `path`, fed token
    by token (teacher forcing); EOS is excluded, as in ort_greedy."""
    enc, first, step = (session(model / n) for n in GRAPHS[:3])
    ids = np.array([input_ids], np.int64)
    mask = np.ones_like(ids)
    hidden = enc.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    names = [o.name for o in first.get_outputs()]
    outs = dict(zip(names, first.run(None, {"input_ids": np.zeros((1, 1), np.int64), "encoder_hidden_states": hidden, "encoder_attention_mask": mask})))
    past = {k.replace("present", "past_key_values"): v for k, v in outs.items() if k.startswith("present")}
    margins = []
    for tok in path:
        scores = outs["logits"][0, -1].astype(np.float64)
        scores[1] = -np.inf
        top = np.sort(scores)[-2:]
        margins.append((float(top[1] - top[0]), float(np.abs(outs["logits"][0, -1]).max())))
        outs = dict(
            zip(
                [o.name for o in step.get_outputs()],
                step.run(None, {"input_ids": np.array([[tok]], np.int64), "encoder_attention_mask": mask, **past}),
            )
        )
        past.update({k.replace("present", "past_key_values"): v for k, v in outs.items() if k.startswith("present")})
    return margins


class FusedGraphs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        (ROOT / "target").mkdir(exist_ok=True)
        cls.tmp = tempfile.TemporaryDirectory(dir=ROOT / "target")
        cls.fused = Path(cls.tmp.name) / "tiny-t5-fused"
        r = subprocess.run(
            [sys.executable, str(ROOT / "scripts/fuse_graphs.py"), str(SOURCE), str(cls.fused)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise RuntimeError(f"fuse_graphs.py failed:\n{r.stdout}\n{r.stderr}")
        cls.report = json.loads((cls.fused / "fusion.json").read_text())
        cfg = json.loads((SOURCE / "config.json").read_text())
        cls.layers, cls.dec_layers = cfg["num_layers"], cfg.get("num_decoder_layers", cfg["num_layers"])
        golden = json.loads((ROOT / "tests/data/golden.json").read_text())["cases"]
        cls.cases = [c for c in golden if c["prompt"]]

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_fused_ops_present_and_signatures_kept(self):
        attentions = {
            "encoder_model.onnx": self.layers,
            "decoder_model.onnx": 2 * self.dec_layers,
            "decoder_with_past_model.onnx": 2 * self.dec_layers,
            "decoder_with_past_masked.onnx": 2 * self.dec_layers,
        }
        for name in GRAPHS:
            with self.subTest(graph=name):
                self.assertEqual(self.report["graphs"][name]["applied"], ["skip_layernorm", "attention"])
                graph = onnx.load(str(self.fused / name), load_external_data=False).graph
                ops = [(n.domain, n.op_type) for n in graph.node]
                self.assertEqual(ops.count(("com.microsoft", "MultiHeadAttention")), attentions[name])
                # Every norm after a residual Add is fused with it; only the first (on the
                # embeddings) stays a plain SimplifiedLayerNormalization.
                blocks = self.layers if name == "encoder_model.onnx" else self.dec_layers
                norms = blocks * (2 if name == "encoder_model.onnx" else 3)
                self.assertEqual(ops.count(("com.microsoft", "SkipSimplifiedLayerNormalization")), norms)
                self.assertEqual(ops.count(("", "SimplifiedLayerNormalization")), 1)
                self.assertNotIn(("", "Softmax"), ops)
                self.assertNotIn(("", "Pow"), ops)
                self.assertEqual(io_signature(self.fused / name), io_signature(SOURCE / name))
        # The other files are copied (symlinks resolved: the directory stands alone).
        for f in ("config.json", "generation_config.json", "tokenizer.json", "special_tokens_map.json", "tokenizer_config.json"):
            self.assertTrue((self.fused / f).is_file() and not (self.fused / f).is_symlink(), f)

    def test_logits_and_caches_match_the_unfused_graphs(self):
        """Independent of the script's own check: the first step and 6 cached steps of each
        golden prompt as a padded batch, fused vs unfused, every output compared."""
        ref = {n: session(SOURCE / n) for n in GRAPHS}
        new = {n: session(self.fused / n) for n in GRAPHS}
        rows = [c["input_ids"] for c in self.cases[:5]]
        s = max(map(len, rows))
        ids = np.zeros((len(rows), s), np.int64)
        mask = np.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = r, 1
        worst = {}

        def both(name, feeds):
            a, b = ref[name].run(None, feeds), new[name].run(None, feeds)
            for o, x, y in zip(ref[name].get_outputs(), a, b):
                self.assertEqual(x.shape, y.shape, (name, o.name))
                tol = LOGITS_TOL * max(1.0, float(np.abs(x).max()))
                d = float(np.abs(x - y).max())
                self.assertLessEqual(d, tol, (name, o.name))
                worst[name] = max(worst.get(name, 0.0), d)
            return dict(zip([o.name for o in ref[name].get_outputs()], a))

        hidden = both("encoder_model.onnx", {"input_ids": ids, "attention_mask": mask})["last_hidden_state"]
        outs = both("decoder_model.onnx", {"input_ids": np.zeros((len(rows), 1), np.int64), "encoder_hidden_states": hidden, "encoder_attention_mask": mask})
        past = {k.replace("present", "past_key_values"): v for k, v in outs.items() if k.startswith("present")}
        for step in range(6):
            tok = outs["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
            feeds = {"input_ids": tok, "encoder_attention_mask": mask, **past}
            plen = past["past_key_values.0.decoder.key"].shape[2]
            dmask = np.ones((len(rows), plen + 1), np.int64)
            if plen > 2:
                dmask[1, :2] = 0  # a row that joined late: its first two cache slots are padding
            both("decoder_with_past_masked.onnx", {**feeds, "decoder_attention_mask": dmask})
            outs = both("decoder_with_past_model.onnx", feeds)
            past.update({k.replace("present", "past_key_values"): v for k, v in outs.items() if k.startswith("present")})
        print(f"\n  max |fused - unfused| per graph: { {k: f'{v:.2g}' for k, v in worst.items()} }", file=sys.stderr)

    def assert_same_or_near_tie(self, got: list[int], want: list[int], case: dict, source: Path = SOURCE, tol: float = LOGITS_TOL):
        if got == want:
            return
        k = next(i for i in range(len(want)) if got[i] != want[i])
        margin, scale = margins_along(source, case["input_ids"], want)[k]
        self.assertLessEqual(margin, tol * max(1.0, scale), f"{case['prompt']!r}: differs at step {k} with margin {margin}")

    def test_greedy_equals_the_unfused_reference_loop(self):
        for case in self.cases:
            with self.subTest(prompt=case["prompt"]):
                want = ort_greedy(SOURCE, case["input_ids"], STEPS)
                got = ort_greedy(self.fused, case["input_ids"], STEPS)
                self.assert_same_or_near_tie(got, want, case)

    def test_server_serves_the_fused_directory_with_the_same_tokens(self):
        if not BINARY.exists():
            self.skipTest(f"{BINARY} not built")
        server = Server(BINARY, model=str(self.fused))
        try:
            for case in self.cases[:6]:
                got = post(
                    server.base,
                    "/v1/generate",
                    {"inputs": case["prompt"], "parameters": {"max_new_tokens": STEPS, "min_new_tokens": STEPS, "details": True}},
                )
                ids = [t["id"] for t in got["details"]["tokens"]]
                # The server runs the very graphs the reference loop runs: exactly equal.
                self.assertEqual(ids, ort_greedy(self.fused, case["input_ids"], STEPS), case["prompt"])
                self.assert_same_or_near_tie(ids, ort_greedy(SOURCE, case["input_ids"], STEPS), case)
        finally:
            server.stop()

    def test_int8_graphs_fuse_too(self):
        """scripts/quantize_model.py's int8 graphs (DynamicQuantizeLinear + MatMulInteger) take
        the same rewrites; the script checks them at int8's tolerance and by greedy ids."""
        import fuse_graphs

        int8 = Path(self.tmp.name) / "tiny-t5-int8"
        # Unfused int8 graphs (quantize_model.py fuses its copy itself unless --no-fuse).
        subprocess.run(
            [sys.executable, str(ROOT / "scripts/quantize_model.py"), str(SOURCE), str(int8), "--no-fuse"],
            check=True,
            capture_output=True,
        )
        out = Path(self.tmp.name) / "tiny-t5-int8-fused"
        report = fuse_graphs.fuse_dir(int8, out)
        for name in GRAPHS:
            entry = report["graphs"][name]
            self.assertEqual(entry["weights"], "int8", name)
            self.assertEqual(entry["applied"], ["skip_layernorm", "attention"], name)
            ops = {n.op_type for n in onnx.load(str(out / name), load_external_data=False).graph.node}
            self.assertTrue({"MultiHeadAttention", "SkipSimplifiedLayerNormalization", "MatMulInteger"} <= ops, name)
        self.assertEqual(json.loads((out / "quantization.json").read_text()), json.loads((int8 / "quantization.json").read_text()))
        for g in report["greedy"].values():
            self.assertFalse(g["failures"])
        for case in self.cases[:4]:
            self.assert_same_or_near_tie(ort_greedy(out, case["input_ids"], STEPS), ort_greedy(int8, case["input_ids"], STEPS), case, int8, 5e-2)

    def test_attention_with_cache_inputs_verifies_too(self):
        """--attention-cache-inputs: cached self-attention takes past_key/past_value and writes
        present.* itself; the export's Concat of the cache is gone."""
        import fuse_graphs

        out = Path(self.tmp.name) / "cache-inputs"
        report = fuse_graphs.fuse_dir(SOURCE, out, cache_inputs=True)
        for name in ("decoder_with_past_model.onnx", "decoder_with_past_masked.onnx"):
            self.assertEqual(report["graphs"][name]["applied"], ["skip_layernorm", "attention"])
            graph = onnx.load(str(out / name), load_external_data=False).graph
            mha = [n for n in graph.node if n.op_type == "MultiHeadAttention"]
            self.assertEqual(sum(len(n.input) == 8 and n.input[6].startswith("past_key_values.") for n in mha), self.dec_layers)
            writers = {o for n in mha for o in n.output}
            self.assertTrue({o.name for o in graph.output if o.name.startswith("present.")} <= writers)
        self.assertFalse(any(g["failures"] for g in report["greedy"].values()))

    def test_a_rewrite_that_changes_the_results_is_not_applied(self):
        """The script keeps a rewrite only where the graph still verifies: here an attention
        rewrite with a wrong scale (1/sqrt(d_kv), as most transformers use, but T5 does not)."""
        import fuse_graphs

        def wrong_scale(model, cfg):
            n = fuse_graphs.rewrite_attention(model, cfg)
            for node in model.graph.node:
                if node.op_type == "MultiHeadAttention":
                    for a in node.attribute:
                        if a.name == "scale":
                            a.f = cfg["d_kv"] ** -0.5
            return n

        fuse_graphs.REWRITE_FNS["wrong_scale"] = wrong_scale
        try:
            out = Path(self.tmp.name) / "wrong"
            report = fuse_graphs.fuse_dir(SOURCE, out, ["skip_layernorm", "wrong_scale"], greedy_check=False)
        finally:
            del fuse_graphs.REWRITE_FNS["wrong_scale"]
        for name in GRAPHS:
            entry = report["graphs"][name]
            self.assertEqual(entry["applied"], ["skip_layernorm"], name)
            self.assertIn("wrong_scale", entry["rejected"], name)
            ops = {n.op_type for n in onnx.load(str(out / name), load_external_data=False).graph.node}
            self.assertNotIn("MultiHeadAttention", ops, name)
            self.assertIn("SkipSimplifiedLayerNormalization", ops, name)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
