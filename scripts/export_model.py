#!/usr/bin/env python3
"""Exports a Hugging Face T5-family checkpoint to a model directory t5serve loads.

    python scripts/export_model.py google/flan-t5-small models/flan-t5-small
    python scripts/export_model.py ./my-finetuned-t5 models/my-t5 --merged

The source is a hub id (needs network) or a local folder with config.json, weights and a
tokenizer. The output is optimum's `text2text-generation-with-past` layout: encoder_model.onnx,
decoder_model.onnx + decoder_with_past_model.onnx (or decoder_model_merged.onnx with --merged),
config.json, generation_config.json and tokenizer.json without fixed padding or truncation.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
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
    args = p.parse_args()
    t5tools.export_onnx(
        args.model,
        args.output,
        keep_merged=args.merged or args.both,
        keep_split=not args.merged or args.both,
    )
    if args.masked:
        t5tools.export_masked_with_past(args.model, args.output)
    print(f"exported {args.model} -> {args.output} ({t5tools.dir_size_mb(args.output):.1f} MB)")


if __name__ == "__main__":
    main()
