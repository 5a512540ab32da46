#!/usr/bin/env python3
"""Recovers a PyTorch checkpoint from an exported model directory (the bundled models/t5-numbers):
the start of a training phase that goes on from the committed model.

    python scripts/bundle_checkpoint.py [MODEL_DIR] [OUT]   # default models/t5-numbers -> .cache/bundle-ckpt

The exporter names most weights anonymously (`onnx::MatMul_123`, transposed), so the names are
found by value: a probe model of the same configuration gets random weights, goes through the same
exporter (t5tools.export_onnx), and each of its initializers is matched to the parameter that holds
the same values (as they are, transposed, or times a constant). The bundle's initializers of those
names are read back, int8 ones dequantized ((q - zero point) * scale, per tensor or per channel),
and written into the parameters. Every parameter must be found; the recovered model must give the
bundle's greedy answers on a set of prompts (checked here with onnxruntime on the bundled files).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import t5tools  # noqa: E402

GRAPHS = ("encoder_model.onnx", "decoder_model.onnx")
CHECK_PROMPTS = (
    "translate English to German: four thousand two hundred",
    "translate German to English: dreihundertzwölf",
    "translate English to French: seventy-one",
    "translate English to Spanish: nine thousand nine hundred ninety-nine",
    "language: quatre mille deux cents",
    "digits: one thousand and five",
)


def initializers(path: Path) -> dict:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def dequantized(inits: dict, name: str):
    """The float value of initializer `name` of a graph, dequantizing an int8 one; None if absent."""
    import numpy as np

    if name in inits:
        return inits[name].astype(np.float32)
    q = inits.get(name + "_quantized")
    if q is None:
        return None
    scale = inits[name + "_scale"].astype(np.float32)
    zero = inits[name + "_zero_point"].astype(np.float32)
    if scale.size > 1:  # per channel: along the axis whose length is the scale's
        axis = [a for a, n in enumerate(q.shape) if n == scale.size][-1]
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (q.astype(np.float32) - zero) * scale


def match(param, value):
    """How an exported initializer holds a parameter: ("same" | "transposed", factor) or None."""
    import numpy as np

    if value.size != param.size or value.size < 2:
        return None
    for how, v in (("same", value), ("transposed", value.T if value.ndim == 2 else None)):
        if v is None or v.shape != param.shape:
            continue
        ratio = v.reshape(-1)[:64] / param.reshape(-1)[:64]
        factor = float(np.median(ratio))
        if np.allclose(v, param * factor, rtol=1e-4, atol=1e-6):
            return how, factor
    return None


def probe_map(model_dir: Path, work: Path) -> dict[str, tuple[str, str, str, float]]:
    """parameter name -> (graph, initializer name, how, factor), from a probe model's export."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config.from_pretrained(model_dir)
    probe = T5ForConditionalGeneration(cfg)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in probe.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    probe.save_pretrained(work / "probe")
    t5tools.load_t5_tokenizer().save_pretrained(work / "probe")
    t5tools.export_onnx(str(work / "probe"), work / "probe-onnx")
    params = {n: p.detach().numpy() for n, p in probe.named_parameters()}
    found: dict[str, tuple[str, str, str, float]] = {}
    for graph in GRAPHS:
        for name, value in initializers(work / "probe-onnx" / graph).items():
            for pname, p in params.items():
                if pname in found:
                    continue
                how = match(p, value)
                if how:
                    found[pname] = (graph, name, *how)
                    break
    missing = sorted(set(params) - set(found))
    if missing:
        raise SystemExit(f"parameters not found in the exported graphs: {missing}")
    return found


def recover(model_dir: Path, out: Path) -> None:
    import numpy as np
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    work = Path(tempfile.mkdtemp(prefix="t5serve-bundle-ckpt-"))
    try:
        where = probe_map(model_dir, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    model = T5ForConditionalGeneration(T5Config.from_pretrained(model_dir))
    graphs = {g: initializers(model_dir / g) for g in GRAPHS}
    with torch.no_grad():
        for pname, p in model.named_parameters():
            graph, name, how, factor = where[pname]
            value = dequantized(graphs[graph], name)
            if value is None:
                raise SystemExit(f"{model_dir / graph} has no initializer {name} ({pname})")
            value = value.T if how == "transposed" else value
            p.copy_(torch.from_numpy(np.ascontiguousarray(value / factor)))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    t5tools.load_t5_tokenizer().save_pretrained(out)
    check(model, model_dir)
    # The phase that made the bundle, as the next phase's export reports it (previous_phase).
    previous = model_dir / "eval.json"
    card = json.loads(previous.read_text()) if previous.exists() else {}
    info = dict(card.get("training", {}))
    # The phases before it, for a card that names them all.
    info["previous_phase"] = card.get("previous_phase")
    info.update(recovered_from=str(model_dir.resolve().relative_to(t5tools.ROOT)) if model_dir.resolve().is_relative_to(t5tools.ROOT) else str(model_dir))
    info["recovered_int8"] = (model_dir / t5tools.QUANTIZATION_FILE).exists()
    info["recovered_commit"] = bundle_commit(model_dir)
    info["tasks"] = sorted(info.get("heldout_pytorch") or card.get("eval", {}).get("int8") or {})
    (out / "train_log.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    print(f"recovered {sum(p.numel() for p in model.parameters())} parameters from {model_dir} into {out}")


def bundle_commit(model_dir: Path) -> str | None:
    """The commit that last changed the bundle's encoder (None outside a git checkout)."""
    import subprocess

    r = subprocess.run(
        ["git", "log", "-1", "--format=%h", "--", str(model_dir / GRAPHS[0])], cwd=t5tools.ROOT, capture_output=True, text=True
    )
    return r.stdout.strip() or None


def check(model, model_dir: Path) -> None:
    """The recovered model answers the check prompts as the bundled files do (greedy; the
    reference never ends, so the recovered answer must be its prefix)."""
    import torch

    tok = t5tools.load_t5_tokenizer()
    for prompt in CHECK_PROMPTS:
        ids = tok(prompt)["input_ids"]
        bundled = t5tools.ort_greedy(model_dir, ids, 24)
        out = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, num_beams=1)[0].tolist()[1:]
        ours = out[: out.index(1)] if 1 in out else out
        if ours != bundled[: len(ours)]:
            raise SystemExit(f"recovered model differs on {prompt!r}: {tok.decode(ours)!r} vs {tok.decode(bundled)!r}")
        print(f"{prompt!r} -> {tok.decode(ours, skip_special_tokens=True)!r}")


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else t5tools.ROOT / "models" / "t5-numbers"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else t5tools.CACHE / "bundle-ckpt"
    recover(src, dst)
