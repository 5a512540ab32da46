#!/usr/bin/env python3
"""Writes an int8 copy of an exported model directory (what `export_model.py --quantize int8`
does after exporting), for directories that are already ONNX:

    python scripts/quantize_model.py models/flan-t5-small models/flan-t5-small-int8 [--per-channel]

Dynamic quantization with signed int8 weights (QInt8), per-tensor by default, of the encoder and
the split decoder graphs (and decoder_with_past_masked.onnx when present). The settings are
recorded in quantization.json; t5serve loads the directory like any other and reports them in
/v1/models. Needs only onnxruntime and onnx (no PyTorch).

For CPUs without VNNI or AMX (`t5serve cpu` says "int8_kernel_saturates": true), whose int8
kernel adds pairs of u8 x s8 products in 16 bits with saturation: `--reduce-range` (7-bit
weights, which cannot saturate) or `--weights uint8`.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import t5tools  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="exported fp32 model directory (split decoders)")
    p.add_argument("output", type=Path, help="int8 model directory to write")
    t5tools.add_quantize_flags(p)
    args = p.parse_args()
    settings = t5tools.quantize_dir(
        args.source, args.output, per_channel=args.per_channel, reduce_range=args.reduce_range, weights=args.weights
    )
    print(
        f"quantized {args.source} -> {args.output} ({t5tools.dir_size_mb(args.output):.1f} MB; "
        f"{', '.join(settings['graphs'])})"
    )


if __name__ == "__main__":
    main()
