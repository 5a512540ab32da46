"""4-bit weights: what `export_model.py --quantize int4` and `quantize_model.py --quantize int4` do.

Weight-only block quantization with ONNX Runtime's contrib ops (com.microsoft), of the encoder and
the split decoder graphs (and decoder_with_past_masked.onnx when present):

- every MatMul whose weight is a constant 2-D float matrix becomes `MatMulNBits` (4-bit weights,
  one scale, and unless `symmetric` one 4-bit zero point, per `block_size` weights along K), with
  accuracy_level 4: the CPU kernel quantizes the activations to int8 per block and multiplies in
  integers. That covers the attention projections, the feed-forward layers and the lm_head (optimum
  writes the tied lm_head as its own transposed copy of the embedding, so it is a plain MatMul);
- the token embedding (a Gather on a vocabulary-sized table) becomes `GatherBlockQuantized` with
  the same 4-bit blocks along the hidden axis: left in float it would be most of the directory
  (32128 x d_model floats in each of the three or four graphs). A table whose d_model is not a
  multiple of the block size stays float (quantization.json then does not list the embedding);
- MatMuls of two activations (attention scores), the small relative attention bias tables and
  LayerNorm weights stay float.

The weights are packed by onnxruntime's own `quantize_matmul_4bits` (the kernel behind
onnxruntime.quantization's MatMulNBitsQuantizer, whose Python module needs `onnx_ir`, which
neither of the project's environments has), so this needs only onnx, onnxruntime and numpy.
The graphs keep opset 18 (no int4 tensor types: the 4-bit values travel in uint8).

`guard` is the accuracy bar: an int4 export of a model with a held-out evaluation (the bundled
numbers model, scripts/train_default_model.py) is refused when any task's held-out exact match,
or any language's entity F1, drops more than TOLERANCE points below fp32's.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import t5tools  # noqa: E402

BITS = 4
# 32 weights per scale (and zero point): what llama.cpp's Q4_0 and onnxruntime-genai's CPU int4
# models use; 128 (onnxruntime's default) is coarser. Any power of two >= 16 works; a matrix whose
# K is not a multiple is padded with zeros in its last block.
BLOCK_SIZE = 32
# MatMulNBits' accuracy_level 4: activations quantized to int8 (per block), integer dot products.
ACCURACY_LEVEL = 4
# A Gather on a float table with at least this many rows is a token embedding (the relative
# attention bias tables have relative_attention_num_buckets = 32 rows).
EMBEDDING_MIN_ROWS = 1024
# Held-out bar: no task may lose more points (exact match, or entity F1 x 100) against fp32.
TOLERANCE = 1.0
# Held-out extraction sentences per language the guard evaluates (export_default_model.py's number).
GUARD_SENTENCES = 400


def add_int4_flags(p) -> None:
    """The int4 flags of export_model.py and quantize_model.py, declared once."""
    p.add_argument(
        "--block-size",
        type=int,
        default=BLOCK_SIZE,
        help=f"int4: weights per scale along K (a power of two >= 16; default {BLOCK_SIZE})",
    )
    p.add_argument(
        "--symmetric",
        action="store_true",
        help="int4: no zero points (zero fixed at 8); default asymmetric, a 4-bit zero point per block",
    )
    p.add_argument(
        "--heldout",
        choices=["auto", "numbers"],
        default="auto",
        help="int4: the held-out evaluation the accuracy guard runs; auto: the numbers model's when the "
        "source is one of its checkpoints or exports (train_log.json, eval.json, or under "
        ".cache/default-export), else none (the guard cannot run and says so)",
    )
    p.add_argument(
        "--guard-numbers",
        type=int,
        help="int4 guard: held-out numbers per task (default: all of them, as export_default_model.py)",
    )
    p.add_argument(
        "--guard-sentences",
        type=int,
        default=GUARD_SENTENCES,
        help="int4 guard: held-out extraction sentences per language (0: the number tasks only)",
    )


def check_int4_flags(p, args) -> None:
    """Refuses int4 flags without `--quantize int4`, and block sizes MatMulNBits does not take."""
    given = (
        args.block_size != BLOCK_SIZE
        or args.symmetric
        or args.heldout != "auto"
        or args.guard_numbers is not None
        or args.guard_sentences != GUARD_SENTENCES
    )
    if given and args.quantize != "int4":
        p.error("--block-size, --symmetric, --heldout, --guard-numbers and --guard-sentences go with --quantize int4")
    if args.block_size < 16 or args.block_size & (args.block_size - 1):
        p.error(f"--block-size {args.block_size}: MatMulNBits needs a power of two >= 16")


def _pack_nibbles(q):
    """uint8 values 0-15, two per byte along the last axis, the first in the low bits."""
    import numpy as np

    if q.shape[-1] % 2:
        q = np.concatenate([q, np.zeros(q.shape[:-1] + (1,), dtype=np.uint8)], axis=-1)
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def quantize_matmul_weight(w, block_size: int, symmetric: bool):
    """MatMulNBits' inputs for a float weight w [K, N]: packed 4-bit blocks [N, K/block, block/2],
    scales [N, K/block] and zero points [N, ceil(K/block / 2)] (ignored when symmetric), from
    onnxruntime's own packing kernel."""
    import numpy as np
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    rows, cols = w.shape
    blocks = (rows + block_size - 1) // block_size
    padded = np.zeros((blocks * block_size, cols), dtype=np.float32)
    padded[:rows] = w
    packed = np.zeros((cols, blocks, block_size // 2), dtype=np.uint8)
    scales = np.zeros((cols, blocks), dtype=np.float32)
    zero_points = np.zeros((cols, (blocks + 1) // 2), dtype=np.uint8)
    quantize_matmul_4bits(packed, padded, scales, zero_points, block_size, cols, rows, symmetric)
    return packed, scales, zero_points


def quantize_table(table, block_size: int, symmetric: bool):
    """GatherBlockQuantized's inputs (uint8 data, bits 4) for a float table [rows, dim], blocks
    along dim: packed data [rows, dim/2], scales [rows, dim/block], packed zero points
    [rows, ceil(dim/block / 2)] (None when symmetric: the op's default zero point, 8). The
    rounding is onnxruntime's (its quantizer's quant_slice_symmetric / _asymmetric)."""
    import numpy as np

    rows, dim = table.shape
    blocks = table.reshape(rows, dim // block_size, block_size).astype(np.float32)
    if symmetric:
        hi, lo = blocks.max(axis=2, keepdims=True), blocks.min(axis=2, keepdims=True)
        extreme = np.where(np.abs(hi) > np.abs(lo), hi, lo)
        scale = extreme / -8.0
        safe = np.where(scale == 0, 1.0, scale)
        q = np.where(scale == 0, 0, np.rint(blocks / safe)).clip(-8, 7).astype(np.int16) + 8
        zero_points = None
    else:
        lo = np.minimum(blocks.min(axis=2, keepdims=True), 0)
        hi = np.maximum(blocks.max(axis=2, keepdims=True), 0)
        scale = (hi - lo) / 15.0
        safe = np.where(scale == 0, 1.0, scale)
        zp = np.where(scale == 0, 8, np.rint(-lo / safe)).clip(0, 15)
        q = np.where(scale == 0, 8, np.rint(blocks / safe + zp)).clip(0, 15)
        zero_points = _pack_nibbles(zp[..., 0].astype(np.uint8))
    data = _pack_nibbles(q.reshape(rows, dim).astype(np.uint8))
    return data, scale[..., 0].astype(np.float32), zero_points


def quantize_graph(src: Path, dst: Path, block_size: int = BLOCK_SIZE, symmetric: bool = False) -> dict:
    """Writes the int4 copy of one graph; returns what was quantized."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    done: dict[str, list[str]] = {}  # a weight's name -> its quantized inputs (a weight may be shared)
    new_inits = []
    nodes = []
    counts = {"MatMulNBits": 0, "GatherBlockQuantized": 0, "float_matmuls_with_constant_weight": 0}

    def floats(name: str):
        t = inits.get(name)
        if t is None or t.data_type != onnx.TensorProto.FLOAT or len(t.dims) != 2:
            return None
        return numpy_helper.to_array(t)

    def add(name: str, array) -> str:
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    for node in graph.node:
        if node.op_type == "MatMul" and (w := floats(node.input[1])) is not None:
            key = node.input[1]
            if key not in done:
                packed, scales, zp = quantize_matmul_weight(w, block_size, symmetric)
                done[key] = [add(f"{key}_Q4", packed), add(f"{key}_scales", scales)]
                if not symmetric:
                    done[key].append(add(f"{key}_zero_points", zp))
            k, n = w.shape
            nodes.append(
                helper.make_node(
                    "MatMulNBits",
                    [node.input[0], *done[key]],
                    list(node.output),
                    name=(node.name or key) + "_Q4",
                    domain="com.microsoft",
                    K=k,
                    N=n,
                    bits=BITS,
                    block_size=block_size,
                    accuracy_level=ACCURACY_LEVEL,
                )
            )
            counts["MatMulNBits"] += 1
            continue
        if node.op_type == "Gather" and (table := floats(node.input[0])) is not None:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            rows, dim = table.shape
            if axis == 0 and rows >= EMBEDDING_MIN_ROWS and dim % block_size == 0:
                key = node.input[0]
                if key not in done:
                    data, scales, zp = quantize_table(table, block_size, symmetric)
                    done[key] = [add(f"{key}_Q4", data), add(f"{key}_scales", scales)]
                    if zp is not None:
                        done[key].append(add(f"{key}_zero_points", zp))
                data_name, scales_name, *zp_name = done[key]
                nodes.append(
                    helper.make_node(
                        "GatherBlockQuantized",
                        [data_name, node.input[1], scales_name, *zp_name],
                        list(node.output),
                        name=(node.name or key) + "_Q4",
                        domain="com.microsoft",
                        bits=BITS,
                        block_size=block_size,
                        gather_axis=0,
                        quantize_axis=1,
                    )
                )
                counts["GatherBlockQuantized"] += 1
                continue
        if node.op_type == "MatMul" and node.input[1] in inits:
            counts["float_matmuls_with_constant_weight"] += 1
        nodes.append(node)

    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))
    return counts


def int8_compute_active(block_size: int = BLOCK_SIZE, symmetric: bool = False) -> bool:
    """Whether this machine's MatMulNBits CPU kernel really computes in int8 at accuracy_level 4.
    onnxruntime falls back to float compute, silently, where MLAS has no int8 4-bit kernel for the
    CPU and block size; float compute gives the same result as accuracy_level 0 to rounding, int8
    compute (activations quantized per block) differs by ~1e-2 relative."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    k, n = 256, 64
    packed, scales, zp = quantize_matmul_weight(rng.standard_normal((k, n)).astype(np.float32), block_size, symmetric)
    a = rng.standard_normal((4, k)).astype(np.float32)
    out = []
    for level in (0, ACCURACY_LEVEL):
        inputs = [onnx.numpy_helper.from_array(packed, "b"), onnx.numpy_helper.from_array(scales, "s")]
        if not symmetric:
            inputs.append(onnx.numpy_helper.from_array(zp, "z"))
        node = helper.make_node(
            "MatMulNBits", ["a"] + [t.name for t in inputs], ["y"], domain="com.microsoft",
            K=k, N=n, bits=BITS, block_size=block_size, accuracy_level=level,
        )
        graph = helper.make_graph(
            [node], "probe", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, k])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, n])], inputs,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 8
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        out.append(session.run(None, {"a": a})[0])
    return float(np.abs(out[0] - out[1]).max() / np.abs(out[0]).max()) > 1e-4


def quantize_dir_int4(src: Path, dst: Path, block_size: int = BLOCK_SIZE, symmetric: bool = False) -> dict:
    """Writes an int4 copy of the model directory `src` to `dst` (the module's doc says what is
    quantized and how): the encoder, the split decoders and the masked decoder when there is one;
    other files are copied; the settings go to quantization.json, which the server reports in
    /v1/models. Returns those settings."""
    import onnxruntime

    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise SystemExit("quantize: the output directory must differ from the source")
    if (src / t5tools.QUANTIZATION_FILE).exists():
        raise SystemExit(f"quantize: {src} is already quantized ({t5tools.QUANTIZATION_FILE})")
    graphs = [n for n in t5tools.QUANTIZABLE if (src / n).exists()]
    if "decoder_with_past_model.onnx" not in graphs:
        raise SystemExit(
            f"quantize: {src} has no split decoder pair (decoder_model.onnx + decoder_with_past_model.onnx); "
            "export it without --merged (int4, like int8, quantizes the split decoders the server prefers)"
        )
    if block_size < 16 or block_size & (block_size - 1):
        raise SystemExit(f"quantize: block size {block_size}: MatMulNBits needs a power of two >= 16")
    t5tools.fresh_copy_without_graphs(src, dst)
    per_graph = {name: quantize_graph(src / name, dst / name, block_size, symmetric) for name in graphs}
    embeddings = all(c["GatherBlockQuantized"] for c in per_graph.values())
    settings = {
        "method": "onnxruntime MatMulNBits + GatherBlockQuantized (weight-only block quantization, round to nearest)",
        "dtype": "int4",
        "bits": BITS,
        "block_size": block_size,
        "symmetric": symmetric,
        "accuracy_level": ACCURACY_LEVEL,
        "activations": "float; quantized to int8 per block inside MatMulNBits (accuracy_level 4)",
        "quantized": "MatMul constant weights (attention, feed-forward, lm_head)"
        + (", token embedding Gather" if embeddings else "")
        + "; relative attention bias and LayerNorm weights stay float32",
        "graphs": graphs,
        "onnxruntime": onnxruntime.__version__,
    }
    (dst / t5tools.QUANTIZATION_FILE).write_text(json.dumps(settings, indent=1) + "\n")
    return settings


# The held-out guard.


def heldout_kind(source, choice: str = "auto") -> str | None:
    """The held-out evaluation available for `source` (a checkpoint folder, a hub id or an
    exported directory): "numbers" for the bundled numbers model's checkpoints and exports, else
    None. `choice` "numbers" forces it (a copy the markers do not recognize)."""
    if choice != "auto":
        return choice
    path = Path(str(source))
    if not path.is_dir():
        return None
    if (path / "train_log.json").exists():  # scripts/train_default_model.py's checkpoints
        return "numbers"
    eval_json = path / "eval.json"  # scripts/export_default_model.py's bundle (models/t5-numbers)
    if eval_json.exists():
        try:
            if "eval" in json.loads(eval_json.read_text()):
                return "numbers"
        except ValueError:
            pass
    work = (t5tools.CACHE / "default-export").resolve()  # export_default_model.py's fp32 / int8 exports
    return "numbers" if work in path.resolve().parents else None


def evaluate_numbers(model_dir: Path, numbers: int | None, sentences: int) -> dict:
    """The numbers model's held-out evaluation of an exported directory, as export_default_model.py
    measures it (optimum's ORTModelForSeq2SeqLM + transformers generate, greedy, through
    train_default_model.evaluate): exact match per task, entity P/R/F1 per language."""
    import torch

    import export_default_model as E
    import train_default_model as T

    torch.set_num_threads(2)
    nums, ent = T.eval_sets(numbers, sentences or 1)
    res = E.evaluate_full(model_dir, t5tools.load_t5_tokenizer(), nums, ent if sentences else None)
    res["numbers_per_task"] = len(nums)
    return res


def scores(res: dict) -> dict[str, float]:
    """The figures the guard compares, in points: exact match per number task, entity F1 x 100
    per language (the extraction task's exact match is not one: F1 is its measure)."""
    out = {task: v for task, v in res["exact"].items() if task != "entities"}
    for lang, v in res.get("entities", {}).items():
        out[f"entities F1 {lang}"] = round(100.0 * v["f1"], 2)
    return out


def guard(source, fp32_dir: Path, int4_dir: Path, args) -> dict:
    """Runs the held-out guard on an int4 export: for a model with a held-out evaluation,
    evaluates fp32 and int4 on it and refuses (removes `int4_dir`, exits non-zero) when any task
    loses more than TOLERANCE points; for any other model it warns that it could not run. Records
    the outcome in the int4 directory's quantization.json and returns it."""
    kind = heldout_kind(source, args.heldout)
    path = int4_dir / t5tools.QUANTIZATION_FILE
    settings = json.loads(path.read_text())
    if kind is None:
        print(
            f"warning: the int4 accuracy guard could not run: no held-out evaluation is known for {source} "
            f"(only the bundled numbers model has one). Check {int4_dir} against fp32 on your own data before "
            "serving it: 4-bit weights can cost accuracy.",
            file=sys.stderr,
            flush=True,
        )
        result = {"ran": False, "reason": "no held-out evaluation for this model"}
    else:
        print(f"int4 guard: held-out evaluation ({kind}) of fp32 and int4 ...", flush=True)
        try:
            res = {
                "fp32": evaluate_numbers(fp32_dir, args.guard_numbers, args.guard_sentences),
                "int4": evaluate_numbers(int4_dir, args.guard_numbers, args.guard_sentences),
            }
        except ImportError as e:
            shutil.rmtree(int4_dir)
            raise SystemExit(
                f"int4 refused: the held-out guard needs PyTorch, transformers and optimum "
                f"(scripts/requirements.txt; {e}); {int4_dir} was removed"
            ) from e
        fp32, int4 = scores(res["fp32"]), scores(res["int4"])
        lost = {k: round(fp32[k] - int4[k], 2) for k in fp32}
        worst = max(lost, key=lost.get)
        result = {
            "ran": True,
            "heldout": kind,
            "numbers_per_task": res["fp32"]["numbers_per_task"],
            "sentences_per_language": args.guard_sentences,
            "tolerance_points": TOLERANCE,
            "fp32": fp32,
            "int4": int4,
        }
        table = "\n".join(f"  {k:<20} fp32 {fp32[k]:6.2f}  int4 {int4[k]:6.2f}  lost {lost[k]:+.2f}" for k in fp32)
        if lost[worst] > TOLERANCE + 1e-9:
            shutil.rmtree(int4_dir)
            smaller = "--block-size 16, or " if settings["block_size"] > 16 else ""
            raise SystemExit(
                f"int4 refused: {worst} loses {lost[worst]:.2f} points against fp32 on the held-out set, more than "
                f"{TOLERANCE:g}; {int4_dir} was removed. Try {smaller}int8 or fp32.\n{table}"
            )
        print(f"int4 guard passed: at most {max(lost[worst], 0):.2f} points lost ({worst}), within {TOLERANCE:g}\n{table}", flush=True)
    settings["heldout_guard"] = result
    path.write_text(json.dumps(settings, indent=1) + "\n")
    return result
