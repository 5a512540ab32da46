#!/usr/bin/env python3
"""What the bundled model's int8 graphs give on THIS machine's CPU, for the end-to-end test
fixtures' prompts: the oracle of tests/bundled_model.rs and tests/load.rs.

    python scripts/cpu_reference.py OUT_DIR [--binary target/debug/t5serve] [--model models/t5-numbers]

Why: ONNX Runtime's u8 x s8 kernel depends on the CPU (src/model/cpu.rs). Where it sums in 32 bits
(VNNI, AMX, the SSE path) the integer products are exact and every such CPU gives the same
figures; where it adds pairs of products in 16 bits with saturation (AVX2 alone, AVX-512 without
VNNI) the scores, and at near-ties the texts, differ. So the figures a test compares with are
computed where the test runs.

Reads the committed fixtures (tests/data/numbers_heldout.json, numbers_decoding.json) for their
prompts, targets and parameters, and writes the same files into OUT_DIR with every CPU-dependent
field recomputed here by the same independent implementation that made them (optimum's
ORTModelForSeq2SeqLM + transformers' generate, scripts/export_default_model.py): the greedy text
and its smallest top-2 logit margin, the exact match per task, the min_new_tokens ids, the beam
hypotheses and their scores. Each file records "cpu": what the server reports for this machine
(`t5serve cpu`), so a reference made on another CPU is never taken for this one's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_default_model as E  # noqa: E402
import t5tools  # noqa: E402

DATA = t5tools.ROOT / "tests" / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="directory to write numbers_heldout.json and numbers_decoding.json")
    t5tools.add_cpu_flags(p)
    p.add_argument("--model", type=Path, default=t5tools.ROOT / "models" / "t5-numbers")
    args = p.parse_args()

    import torch

    torch.set_num_threads(2)
    cpu = t5tools.cpu_from_args(args)
    tok = t5tools.load_t5_tokenizer(args.model)
    model = E.load_ort(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    heldout = json.loads((DATA / "numbers_heldout.json").read_text())
    cases, exact = E.heldout_cases(model, tok, [(c["task"], c["prompt"], c["target"]) for c in heldout["cases"]])
    heldout.update(cases=cases, exact_match=exact, cpu=cpu)
    (args.out / "numbers_heldout.json").write_text(json.dumps(heldout, indent=1, ensure_ascii=False) + "\n")

    decoding = json.loads((DATA / "numbers_decoding.json").read_text())
    prompts = list(dict.fromkeys(c["prompt"] for c in decoding["cases"]))
    decoding.update(cases=E.decoding_cases(model, tok, prompts), cpu=cpu)
    (args.out / "numbers_decoding.json").write_text(json.dumps(decoding, indent=1, ensure_ascii=False) + "\n")
    print(
        f"cpu_reference: {len(cases)} greedy and {len(decoding['cases'])} decoding cases on {cpu['int8_kernel']} "
        f"({','.join(cpu['features']) or 'no AVX2'}) in {time.time() - started:.0f} s -> {args.out}"
    )


if __name__ == "__main__":
    main()
