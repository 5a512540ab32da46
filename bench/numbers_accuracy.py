#!/usr/bin/env python3
"""The bundled model's held-out exact match per task on THIS machine's int8 kernel, as its model
card measures it (optimum's ORTModelForSeq2SeqLM + transformers' generate, greedy, batches of 500,
the 1,000 held-out numbers per task; scripts/export_default_model.py's evaluate):

    .venv/bin/python bench/numbers_accuracy.py [--model models/t5-numbers] [--binary target/release/t5serve | --cpu JSON]

Prints one JSON line with the CPU report: int8 figures depend on the int8 kernel
(src/model/cpu.rs). Not a test: no assertions.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import export_default_model as E  # noqa: E402
import t5tools  # noqa: E402
import train_default_model as T  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=t5tools.ROOT / "models" / "t5-numbers")
    t5tools.add_cpu_flags(p)
    args = p.parse_args()
    import torch

    torch.set_num_threads(2)
    cpu = t5tools.cpu_from_args(args)
    started = time.time()
    _, heldout = T.split_numbers()
    exact = E.evaluate(args.model, t5tools.load_t5_tokenizer(args.model), heldout)
    print(json.dumps({"model": str(args.model), "heldout_numbers": len(heldout), "exact_match": exact, "cpu": cpu,
                      "seconds": round(time.time() - started)}))


if __name__ == "__main__":
    main()
