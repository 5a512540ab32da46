#!/usr/bin/env python3
"""Exports a Hugging Face T5-family checkpoint to a model directory t5serve loads.

    python scripts/export_model.py google/flan-t5-small models/flan-t5-small
    python scripts/export_model.py ./my-finetuned-t5 models/my-t5 --merged
    python scripts/export_model.py google/flan-t5-small models/flan-t5-small-int8 --quantize int8
    python scripts/export_model.py google/flan-t5-small models/flan-t5-small-int4 --quantize int4

The source is a hub id (needs network) or a local folder with config.json, weights and a
tokenizer. The output is optimum's `text2text-generation-with-past` layout: encoder_model.onnx,
decoder_model.onnx + decoder_with_past_model.onnx (or decoder_model_merged.onnx with --merged),
config.json, generation_config.json and tokenizer.json without fixed padding or truncation.

`--quantize int8` writes dynamically quantized graphs instead (signed 7-bit weights, which no
CPU's int8 kernel can saturate, unless `--full-range` or `--weights uint8`; per-tensor unless
`--per-channel`; the split decoders, since the merged one is not quantized) and records the
settings in quantization.json.

`--quantize int4` writes 4-bit weights: every MatMul with a constant weight (attention,
feed-forward, lm_head) becomes ONNX Runtime's MatMulNBits (blocks of `--block-size` weights,
default 32, asymmetric unless `--symmetric`, accuracy_level 4: int8 compute), the token embedding
GatherBlockQuantized (scripts/int4tools.py). An accuracy guard follows: for a model with a
held-out evaluation (the bundled numbers model's checkpoints) fp32 and int4 are evaluated and the
int4 export is refused (non-zero exit, nothing written) when any task loses more than 1 point;
for other models it warns that it could not run.

int8 exports are then rewritten to ONNX Runtime's fused CPU kernels (RMS norm with its residual
Add, attention as MultiHeadAttention; scripts/fuse_graphs.py), each rewrite kept only where it
matches the unfused graph and greedy ids stay the same; `--no-fuse` skips it, `--fuse` asks for it
on float32 and int4 exports too. Served on the t5-small shape int8 (AVX2, 2 cores, 10 paired
rounds of bench/ab.sh) the fused graphs gave 1.18x the tokens/s at 1 client and 1.00x at 32.

scripts/quantize_model.py does the same for a directory that is already exported.
"""

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import int4tools  # noqa: E402
import t5tools  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="hub id (e.g. google/flan-t5-small) or local checkpoint folder")
    p.add_argument("output", type=Path, help="model directory to write")
    p.add_argument("--merged", action="store_true", help="write decoder_model_merged.onnx instead of the split pair")
    p.add_argument("--both", action="store_true", help="keep the split pair and the merged decoder")
    p.add_argument(
        "--masked",
        action="store_true",
        help="also write decoder_with_past_masked.onnx (a decoder self-attention mask input, so rows of "
        "different lengths can share a batch); needs a local checkpoint or network for the hub id",
    )
    p.add_argument(
        "--quantize",
        choices=["int8", "int4"],
        help="write int8 graphs (dynamic quantization, QInt8 weights) or int4 weights (MatMulNBits, "
        "accuracy_level 4, checked against fp32 on a held-out set where the model has one)",
    )
    t5tools.add_fuse_flag(p)
    t5tools.add_quantize_flags(p)
    int4tools.add_int4_flags(p)
    args = p.parse_args()
    if args.quantize and args.merged:
        p.error("--quantize needs the split decoders (quantize_dynamic leaves the merged decoder's If subgraphs alone)")
    if t5tools.quantize_flags_used(args) and args.quantize != "int8":
        p.error("--per-channel, --reduce-range, --full-range and --weights go with --quantize int8")
    int4tools.check_int4_flags(p, args)
    final = args.output
    if args.quantize:
        args.output = final.with_name(final.name + ".fp32-tmp")
    t5tools.export_onnx(
        args.model,
        args.output,
        keep_merged=args.merged or args.both,
        keep_split=not args.merged or args.both,
    )
    if args.masked:
        t5tools.export_masked_with_past(args.model, args.output)
    try:
        if args.quantize == "int8":
            t5tools.quantize_dir(
                args.output, final, per_channel=args.per_channel, reduce_range=args.reduce_range, weights=args.weights
            )
        elif args.quantize == "int4":
            int4tools.quantize_dir_int4(args.output, final, block_size=args.block_size, symmetric=args.symmetric)
            # The guard evaluates the fp32 export beside the int4 one; a refusal removes `final`.
            int4tools.guard(args.model, args.output, final, args)
    finally:
        if args.quantize:
            shutil.rmtree(args.output)
    if t5tools.fuse_wanted(args, args.quantize):
        t5tools.fuse_in_place(final, explicit=args.fuse is True)
    print(f"exported {args.model} -> {final} ({t5tools.dir_size_mb(final):.1f} MB)")


if __name__ == "__main__":
    main()
