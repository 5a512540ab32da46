#!/usr/bin/env python3
"""How closely int8 graphs follow their fp32 export, greedy, on THIS machine's int8 kernel:

    .venv/bin/python bench/int8_agreement.py FP32_DIR INT8_DIR [INT8_DIR...] [--prompts 32] [--steps 32]
        [--binary target/release/t5serve | --cpu JSON]

For each int8 directory, over the same prompts (one at a time, no batching, so each row's dynamic
activation scales are its own): the share of greedy tokens equal to fp32's up to the first
divergence (after it the contexts differ), and the share of whole sequences equal. EOS is never
chosen, so every prompt runs `--steps` steps (scripts/t5tools.ort_greedy). Prints one JSON line
per directory with the CPU report: the figures depend on the int8 kernel (src/model/cpu.rs), so
they are only comparable between runs on the same kernel. Not a test: no assertions.
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import t5tools  # noqa: E402

WORDS = (
    "the quick brown fox jumps over lazy dog while seven wizards quietly judge boxing matches near old "
    "harbour and count every ship that passes translate summarize question answer river mountain city "
    "music paper window morning evening garden letter number table story"
).split()


def prompts(n: int, seed: int = 20261201) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 40))) for _ in range(n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fp32", type=Path)
    p.add_argument("int8", type=Path, nargs="+")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--steps", type=int, default=32)
    t5tools.add_cpu_flags(p)
    p.add_argument(
        "--fp32-ids",
        type=Path,
        help="file of fp32's greedy ids: read if it exists, else written (fp32 results do not depend on the int8 "
        "kernel, so a run under an emulator can take them from a run on the machine itself)",
    )
    args = p.parse_args()
    cpu = t5tools.cpu_from_args(args)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(args.fp32 / "tokenizer.json"))
    inputs = [tok.encode(t).ids for t in prompts(args.prompts)]
    started = time.time()
    if args.fp32_ids and args.fp32_ids.exists():
        want = json.loads(args.fp32_ids.read_text())
        assert len(want) == len(inputs) and all(len(w) == args.steps for w in want), f"{args.fp32_ids}: other prompts or steps"
    else:
        want = [t5tools.ort_greedy(args.fp32, ids, args.steps) for ids in inputs]
        if args.fp32_ids:
            args.fp32_ids.write_text(json.dumps(want))
    for d in args.int8:
        same_prefix = equal = 0
        for ids, ref in zip(inputs, want):
            got = t5tools.ort_greedy(d, ids, args.steps)
            n = next((i for i, (a, b) in enumerate(zip(got, ref)) if a != b), len(ref))
            same_prefix += n
            equal += n == len(ref)
        quant = json.loads((d / "quantization.json").read_text())
        print(
            json.dumps(
                {
                    "model": str(d),
                    "weight_type": quant["weight_type"],
                    "reduce_range": quant.get("reduce_range", False),
                    "tokens_before_divergence_pct": round(100 * same_prefix / (len(want) * args.steps), 1),
                    "sequences_equal_pct": round(100 * equal / len(want), 1),
                    "prompts": len(want),
                    "steps": args.steps,
                    "cpu": cpu,
                }
            ),
            flush=True,
        )
    print(f"int8_agreement: {time.time() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
