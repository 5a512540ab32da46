#!/usr/bin/env python3
"""Writes an int8 (or int4) copy of an exported model directory (what `export_model.py
--quantize int8|int4` does after exporting), for directories that are already ONNX:

    python scripts/quantize_model.py models/flan-t5-small models/flan-t5-small-int8 [--per-channel]
    python scripts/quantize_model.py models/flan-t5-small models/flan-t5-small-int4 --quantize int4

Dynamic quantization with signed int8 weights (QInt8), per-tensor by default, of the encoder and
the split decoder graphs (and decoder_with_past_masked.onnx when present). The settings are
recorded in quantization.json; t5serve loads the directory like any other and reports them in
/v1/models. Needs only onnxruntime and onnx (no PyTorch).

Signed weights are 7-bit by default (`--reduce-range`): CPUs without VNNI or AMX (`t5serve cpu`
says "int8_kernel_saturates": true) add pairs of u8 x s8 products in 16 bits with saturation,
which 7-bit weights cannot reach, and on the CPUs measured the reduced range cost no speed.
`--full-range` gives 8-bit signed weights (exact on VNNI and AMX CPUs only); `--weights uint8`
takes the u8 x u8 kernel, which does not saturate either.

The int8 copy's graphs are then rewritten to ONNX Runtime's fused CPU kernels, as export_model.py
does (`--no-fuse` skips it; `--fuse` asks for it with int4 too).

`--quantize int4`: 4-bit weights of the same graphs (scripts/int4tools.py: MatMulNBits with
accuracy_level 4 for every MatMul with a constant weight, lm_head included, GatherBlockQuantized
for the token embedding; `--block-size`, default 32, `--symmetric`). Then the accuracy guard: for
the bundled numbers model's exports it evaluates `source` and the int4 copy on the held-out set
(needs PyTorch, transformers and optimum: scripts/requirements.txt) and refuses the copy (removes
it, exits non-zero) when any task loses more than 1 point; for other models it warns that it
could not run.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import int4tools  # noqa: E402
import t5tools  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="exported fp32 model directory (split decoders)")
    p.add_argument("output", type=Path, help="quantized model directory to write")
    p.add_argument("--quantize", choices=["int8", "int4"], default="int8", help="weight type (default int8)")
    t5tools.add_quantize_flags(p)
    int4tools.add_int4_flags(p)
    t5tools.add_fuse_flag(p)
    args = p.parse_args()
    if t5tools.quantize_flags_used(args) and args.quantize != "int8":
        p.error("--per-channel, --reduce-range, --full-range and --weights go with --quantize int8")
    int4tools.check_int4_flags(p, args)
    if args.quantize == "int4":
        settings = int4tools.quantize_dir_int4(args.source, args.output, block_size=args.block_size, symmetric=args.symmetric)
        int4tools.guard(args.source, args.source, args.output, args)
    else:
        settings = t5tools.quantize_dir(
            args.source, args.output, per_channel=args.per_channel, reduce_range=args.reduce_range, weights=args.weights
        )
    if t5tools.fuse_wanted(args, args.quantize):
        t5tools.fuse_in_place(args.output, explicit=args.fuse is True)
    print(
        f"quantized {args.source} -> {args.output} ({t5tools.dir_size_mb(args.output):.1f} MB; "
        f"{', '.join(settings['graphs'])})"
    )


if __name__ == "__main__":
    main()
