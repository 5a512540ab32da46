#!/usr/bin/env python3
"""Exports the trained default model (scripts/train_default_model.py train) and bundles it.

    python scripts/export_default_model.py [--quick]

1. ONNX export through export_model.py's code path (optimum, split decoders).
2. Dynamic int8 quantization (onnxruntime quantize_dynamic, signed QInt8 weights, per-tensor) of
   the encoder and both split decoders; the merged decoder is not used (its weights sit inside
   `If` subgraphs, which quantize_dynamic leaves alone).
3. Held-out exact match per task for fp32 and int8, measured with an independent implementation:
   optimum's ORTModelForSeq2SeqLM and transformers' generate (greedy).
4. Bundles int8 if every task stays within 1 point of fp32, else fp32, into models/t5-numbers
   with eval.json and a model card; writes the end-to-end test fixture
   tests/data/numbers_heldout.json (100 held-out prompts per task with optimum's outputs).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import t5tools  # noqa: E402
import train_default_model as T  # noqa: E402

WORK = t5tools.CACHE / "default-export"
FIXTURE_PER_TASK = 100
# Greedy outputs of two correct implementations may differ where the top-2 logits are closer than this.
NEAR_TIE = 1e-3


def quantize(src: Path, dst: Path) -> None:
    t5tools.quantize_dir(src, dst, per_channel=False)


def load_ort(model_dir: Path):
    from optimum.onnxruntime import ORTModelForSeq2SeqLM

    return ORTModelForSeq2SeqLM.from_pretrained(
        str(model_dir),
        use_cache=True,
        use_merged=False,
        encoder_file_name="encoder_model.onnx",
        decoder_file_name="decoder_model.onnx",
        decoder_with_past_file_name="decoder_with_past_model.onnx",
        provider="CPUExecutionProvider",
    )


def generate_with_margins(model, tok, prompts: list[str], batch: int = 250, max_new_tokens: int = 40):
    """Greedy outputs and, per prompt, the smallest top-2 logit margin over its generated steps."""
    import torch

    texts, margins = [], []
    for i in range(0, len(prompts), batch):
        enc = tok(prompts[i : i + batch], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(
                **enc,
                do_sample=False,
                num_beams=1,
                max_new_tokens=max_new_tokens,
                output_scores=True,
                return_dict_in_generate=True,
            )
        seqs = out.sequences[:, 1:]
        texts.extend(tok.batch_decode(seqs, skip_special_tokens=True))
        top2 = torch.stack([torch.topk(s.float(), 2, dim=-1).values for s in out.scores], dim=1)  # [b, steps, 2]
        gaps = top2[..., 0] - top2[..., 1]
        for r in range(seqs.shape[0]):
            ids = seqs[r].tolist()
            n = ids.index(1) + 1 if 1 in ids else len(ids)
            margins.append(float(gaps[r, :n].min()))
    return texts, margins


def evaluate(model_dir: Path, tok, numbers: list[int]) -> dict[str, float]:
    model = load_ort(model_dir)
    table = {}
    for task in T.TASKS:
        exs = T.examples_for(numbers, task)
        preds, _ = generate_with_margins(model, tok, [s for s, _ in exs], batch=500)
        table[task] = round(100.0 * sum(p == t for p, (_, t) in zip(preds, exs)) / len(exs), 2)
        print(f"  {model_dir.name} {task}: {table[task]}", flush=True)
    return table


def dir_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 1e6, 1)


def fixture_numbers(heldout: list[int], task_index: int, per_task: int = FIXTURE_PER_TASK) -> list[int]:
    # A different spread of held-out numbers for each task, deterministic.
    step = len(heldout) // per_task
    return [heldout[(i * step + task_index * 3) % len(heldout)] for i in range(per_task)]


TASKS_JSON = {
    "classify": {"labels": ["English", "German", "French", "Spanish"], "template": "language: {text}"},
    "translate": {
        "pairs": [
            {"source": "English", "target": "German", "template": "translate English to German: {text}"},
            {"source": "German", "target": "English", "template": "translate German to English: {text}"},
            {"source": "English", "target": "French", "template": "translate English to French: {text}"},
            {"source": "English", "target": "Spanish", "template": "translate English to Spanish: {text}"},
        ]
    },
    # The model never saw monoT5's relevance task, so /rerank compares two words it knows: with
    # the query "language", a document ranks by how much more English than German it reads.
    "rerank": {"template": "{query}: {document}", "true_word": "English", "false_word": "German"},
}

DECODING_FIXTURE = t5tools.ROOT / "tests" / "data" / "numbers_decoding.json"
BEAM_OPTIONS = [
    {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 0.6, "early_stopping": False},
    {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 2.0, "early_stopping": True},
    {"num_beams": 3, "num_return_sequences": 2, "length_penalty": 1.0, "early_stopping": "never"},
]


def decoding_prompts(heldout: list[int]) -> list[str]:
    """The prompts of the decoding fixture: numbers the model really ends, in four tasks."""
    prompts = [T.example(task, n)[0] for task in ("en-de", "digits", "en-fr") for n in heldout[5:500:99]]
    prompts += [T.examples_for(heldout[7:400:97], "language")[i][0] for i in range(4)]
    return prompts


def decoding_cases(model, tok, prompts: list[str]) -> list[dict]:
    """What transformers' generate does on `model` with min_new_tokens and with beam search, where
    the model really ends sequences (so EOS, length penalty and early stopping matter)."""
    import torch

    cases = []
    for prompt in prompts:
        enc = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, num_beams=1, min_new_tokens=6, max_new_tokens=10)
        ids = out[0, 1:].tolist()
        if 1 in ids:
            ids = ids[: ids.index(1) + 1]
        cases.append({"kind": "min_new_tokens", "prompt": prompt, "parameters": {"min_new_tokens": 6, "max_new_tokens": 10}, "ids": ids})
        for options in BEAM_OPTIONS:
            with torch.no_grad():
                out = model.generate(**enc, do_sample=False, max_new_tokens=20, output_scores=True, return_dict_in_generate=True, **options)
            seqs = []
            for ids, score in zip(out.sequences, out.sequences_scores):
                ids = ids[1:].tolist()
                if 1 in ids:
                    ids = ids[: ids.index(1) + 1]
                seqs.append({"ids": ids, "score": round(float(score), 6)})
            cases.append({"kind": "beam", "prompt": prompt, "parameters": dict(options, max_new_tokens=20), "sequences": seqs})
    return cases


DECODING_BY = "optimum ORTModelForSeq2SeqLM + transformers generate on models/t5-numbers"


def heldout_cases(model, tok, examples: list[tuple[str, str, str]]) -> tuple[list[dict], dict[str, float]]:
    """Greedy outputs of `model` for (task, prompt, target) examples, one prompt at a time, with
    each output's smallest top-2 logit margin, and exact match per task.

    One prompt at a time: int8 graphs quantize activations per tensor, so a row's result can
    depend on the other rows of its batch; the server is compared one request at a time."""
    cases = []
    right: dict[str, list[bool]] = {}
    for task, prompt, target in examples:
        [out], [m] = generate_with_margins(model, tok, [prompt], batch=1)
        cases.append({"task": task, "prompt": prompt, "target": target, "optimum": out, "min_margin": round(m, 6), "near_tie": m < NEAR_TIE})
        right.setdefault(task, []).append(out == target)
    return cases, {task: round(100.0 * sum(r) / len(r), 2) for task, r in right.items()}


def kernel_section(info: dict) -> str:
    """The card's int8 accuracy per CPU int8 kernel (src/model/cpu.rs), from eval.json's
    `int8_by_kernel`: measurements made after the export, on other machines or under emulation
    (bench/numbers_accuracy.py for the held-out numbers, scripts/cpu_reference.py for the fixture)."""
    runs = info.get("int8_by_kernel")
    if not runs:
        return ""
    lines = [
        "",
        "## int8 by CPU instruction set",
        "",
        "ONNX Runtime picks its u8 x s8 kernel from the CPU (`t5serve cpu` names it; src/model/cpu.rs).",
        "Kernels that sum in 32 bits (AMX, AVX-512 VNNI, AVX-VNNI) compute the integer products exactly, so",
        "they give the same figures; AVX2 alone and AVX-512 without VNNI add pairs of products in 16 bits with",
        "saturation, and their figures differ. Exact match (%), greedy, measured as above:",
        "",
        "| int8 kernel | prompts | " + " | ".join(f"`{t}`" for t in T.TASKS) + " |",
        "|---|---|" + "---|" * len(T.TASKS),
    ]
    for run in runs:
        for key, label in (("heldout", "1,000 held-out per task"), ("fixture", "fixture, 100 per task")):
            if run.get(key):
                lines.append(f"| {run['int8_kernel']} | {label} | " + " | ".join(f"{run[key][t]:.1f}" for t in T.TASKS) + " |")
    lines.append("")
    lines += [f"- {run['int8_kernel']}: {run['measured']}" for run in runs]
    return "\n".join(lines) + "\n"


def write_card(dest: Path, info: dict) -> None:
    ev = info["eval"]
    rows = "\n".join(
        f"| `{task}` | {ev['fp32'][task]:.1f} | {ev['int8'][task]:.1f} | {ev['fixture'][task]:.0f} |" for task in T.TASKS
    )
    train = info["training"]
    shape = info["shape"]
    prev = info.get("previous_phase")
    phases = (
        f"A first phase of {prev['steps']} steps (lr {prev['lr']}, {prev['train_minutes']} minutes), then "
        if prev
        else ""
    )
    card = f"""# t5-numbers: the bundled default model of t5serve

A small T5 (d_model {shape['d_model']}, {shape['num_heads']} heads, {shape['num_layers']} encoder + {shape['num_decoder_layers']} decoder layers, d_ff {shape['d_ff']}, ReLU feed-forward,
{train.get('params_m', '?')}M parameters), trained from scratch on this project's machines by
`scripts/train_default_model.py`. It uses the original T5 tokenizer (32,100-piece SentencePiece
Unigram vocabulary, model vocab 32128, tied embeddings), so it is a drop-in T5: any T5 client,
exporter or server handles it the same way.

Bundled files: **{info['bundled']}** ({info['size_mb']} MB). {info['bundled_reason']}

## Data

The numbers 0–9999 written out by the `num2words` package (PyPI, 0.5.14) in English, German,
French and Spanish. English drops num2words' commas ("four thousand two hundred").
1,000 numbers (seed {T.SEED}) are held out and never seen in training by any task.

## Tasks and prompts

| task | prompt | answer |
|---|---|---|
| `en-de` | `translate English to German: four thousand two hundred` | `viertausendzweihundert` |
| `de-en` | `translate German to English: viertausendzweihundert` | `four thousand two hundred` |
| `en-fr` | `translate English to French: four thousand two hundred` | `quatre mille deux cents` |
| `en-es` | `translate English to Spanish: four thousand two hundred` | `cuatro mil doscientos` |
| `language` | `language: quatre mille deux cents` | `English` / `German` / `French` / `Spanish` |
| `digits` | `digits: four thousand two hundred` | `4200` |

## Held-out exact match (%)

Greedy decoding with optimum's `ORTModelForSeq2SeqLM` and transformers' `generate` on the exported
files; 1,000 held-out numbers per task (language identification: each number in one of the four
languages, balanced). The last column is the 100-prompt-per-task end-to-end test fixture
(`tests/data/numbers_heldout.json`), which the server must reproduce.

| task | fp32 | int8 | fixture ({info['bundled']}) |
|---|---|---|---|
{rows}
{kernel_section(info)}
## Training

`python scripts/train_default_model.py train` then `python scripts/export_default_model.py`:
{phases}{train['steps']} steps of batch {train['batch']}, AdamW (0.9, 0.98), lr {train['lr']} with warmup and
cosine decay, bf16 autocast on 2 CPU threads, {train['train_minutes']} minutes on a 2-core machine.
Each batch holds one task (little padding). What made it learn, and how the loss is computed:

- The relative position biases (T5's only source of word order) train at 30 times the base
  learning rate. At the base rate they stay near their small initial values for thousands of
  steps and the model swaps digits ("three thousand two hundred" -> "deux mille trois cent");
  with it, held-out exact match passes 95% on every task in about a thousand steps.
- Target pieces are cut per part of a number word (digits one by one, German compounds at
  their parts, hyphenated words at the hyphen), each part always into the same pieces of the
  T5 vocabulary. The tokenizer's own cut of a whole word depends on its neighbours ("4231" is
  `▁42 31`, "1987" a single piece seen for no other number). The decoded text is the same string;
  the model emits these pieces and any T5 tokenizer decodes them.
- The loss is the exact full-vocabulary cross entropy, computed over the token ids that occur in
  the data; every other id shares one learnt embedding row, written into all of their slots in
  the exported model.

## License

Apache-2.0, like the T5 vocabulary it uses. The training data is generated by num2words (LGPL-2.1
library; its outputs, number words, are not copyrightable material).
"""
    (dest / "README.md").write_text(card)


def fixture_accuracy(model_dir: Path, tok, cases: list[dict]) -> dict:
    """Exact match per task of optimum's greedy outputs with `model_dir`'s graphs on the fixture's
    prompts (one prompt at a time, as the fixture was made): the fp32 reference that the int8
    accuracy guard (tests/bundled_model.rs) compares the served int8 model with."""
    _, acc = heldout_cases(load_ort(model_dir), tok, [(c["task"], c["prompt"], c["target"]) for c in cases])
    return acc


def record_fixture_fp32(fp32: Path, tok) -> dict:
    """Adds the fp32 exact match on the fixture's prompts to the fixture and to eval.json."""
    data = json.loads(T.FIXTURE.read_text())
    acc = fixture_accuracy(fp32, tok, data["cases"])
    data["exact_match_fp32"] = acc
    data["exact_match_fp32_by"] = "optimum ORTModelForSeq2SeqLM + transformers generate (greedy, one prompt at a time) on the fp32 export"
    T.FIXTURE.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    ev_path = T.MODEL_DIR / "eval.json"
    ev = json.loads(ev_path.read_text())
    ev["eval"]["fixture_fp32"] = acc
    ev_path.write_text(json.dumps(ev, indent=1) + "\n")
    return acc


def main(quick: bool = False, ckpt: Path | None = None) -> None:
    """`quick` checks the pipeline on a checkpoint mid-training: few numbers, scratch outputs."""
    import torch

    torch.set_num_threads(2)
    ckpt = ckpt or T.CKPT
    if not (ckpt / "config.json").exists():
        raise SystemExit(f"no checkpoint in {ckpt}: run `train_default_model.py train` first")
    tok = t5tools.load_t5_tokenizer()
    _, heldout = T.split_numbers()
    eval_numbers = heldout[::20] if quick else heldout
    fp32 = WORK / "fp32"
    int8 = WORK / "int8"
    if fp32.exists():
        shutil.rmtree(fp32)
    t5tools.export_onnx(str(ckpt), fp32)
    quantize(fp32, int8)
    print(f"fp32 {dir_mb(fp32)} MB, int8 {dir_mb(int8)} MB", flush=True)

    t = time.time()
    ev_fp32 = evaluate(fp32, tok, eval_numbers)
    ev_int8 = evaluate(int8, tok, eval_numbers)
    print(f"evaluated in {time.time() - t:.0f}s", flush=True)
    worst = max(ev_fp32[k] - ev_int8[k] for k in T.TASKS)
    use_int8 = worst <= 1.0
    chosen = int8 if use_int8 else fp32
    reason = (
        f"int8 stays within {worst:.1f} points of fp32 on every task, so the int8 files are bundled."
        if use_int8
        else f"int8 loses {worst:.1f} points on a task (more than 1), so the fp32 files are bundled."
    )

    # The end-to-end fixture: optimum's greedy outputs on the bundled files, on this CPU.
    cpu = t5tools.cpu_report()
    model = load_ort(chosen)
    examples = [
        (task, prompt, target)
        for ti, task in enumerate(T.TASKS)
        for prompt, target in T.examples_for(fixture_numbers(heldout, ti, 10 if quick else FIXTURE_PER_TASK), task)
    ]
    cases, fixture_acc = heldout_cases(model, tok, examples)

    dest = WORK / "quick-bundle" if quick else T.MODEL_DIR
    fixture = WORK / "quick-fixture.json" if quick else T.FIXTURE
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in chosen.iterdir():
        shutil.copy(f, dest / f.name)
    train_info = json.loads((ckpt / "train_log.json").read_text())
    if isinstance(train_info, list):  # a mid-training checkpoint has only the log
        train_info = {"log": train_info, "steps": train_info[-1]["step"] if train_info else 0, "batch": "?", "lr": "?", "train_minutes": "?"}
    hf = __import__("transformers").T5ForConditionalGeneration.from_pretrained(ckpt)
    cfg = hf.config
    n_params = sum(p.numel() for p in hf.parameters())
    train_info["params_m"] = round(n_params / 1e6, 1)
    info = {
        "bundled": "int8" if use_int8 else "fp32",
        "bundled_reason": reason,
        "size_mb": dir_mb(dest),
        "eval": {"fp32": ev_fp32, "int8": ev_int8, "fixture": fixture_acc, "heldout_numbers": len(eval_numbers)},
        "sizes_mb": {"fp32": dir_mb(fp32), "int8": dir_mb(int8)},
        "shape": {k: getattr(cfg, k) for k in ("d_model", "num_heads", "num_layers", "num_decoder_layers", "d_ff")},
        "training": {k: train_info.get(k) for k in ("steps", "batch", "lr", "train_minutes", "params_m", "heldout_pytorch")},
        "previous_phase": {k: train_info.get("previous_phase", {}).get(k) for k in ("steps", "batch", "lr", "train_minutes", "heldout_pytorch")}
        if train_info.get("previous_phase")
        else None,
    }
    (dest / "eval.json").write_text(json.dumps(info, indent=1) + "\n")
    (dest / "t5serve.json").write_text(json.dumps(TASKS_JSON, indent=1) + "\n")
    write_card(dest, info)
    fixture.write_text(
        json.dumps(
            {
                "generated_by": "optimum ORTModelForSeq2SeqLM + transformers generate (greedy, max_new_tokens 40, one prompt at a time) "
                f"on models/t5-numbers ({info['bundled']}); scripts/export_default_model.py",
                "near_tie_margin": NEAR_TIE,
                "cpu": cpu,
                "max_new_tokens": 40,
                "exact_match": fixture_acc,
                "cases": cases,
            },
            indent=1,
            ensure_ascii=False,
        )
        + "\n"
    )
    decoding = WORK / "quick-decoding.json" if quick else DECODING_FIXTURE
    decoding_fixture = {"generated_by": DECODING_BY, "cpu": cpu, "cases": decoding_cases(model, tok, decoding_prompts(heldout))}
    decoding.write_text(json.dumps(decoding_fixture, indent=1, ensure_ascii=False) + "\n")
    if not quick:
        info["eval"]["fixture_fp32"] = record_fixture_fp32(fp32, tok)
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="check the pipeline on a mid-training checkpoint")
    p.add_argument("--ckpt", type=Path, help=f"checkpoint to export (default {T.CKPT})")
    p.add_argument(
        "--fixture-fp32",
        action="store_true",
        help="only add the fp32 exact match on the fixture prompts (needs the fp32 export of an earlier run)",
    )
    a = p.parse_args()
    if a.fixture_fp32:
        if not (WORK / "fp32" / "encoder_model.onnx").exists():
            raise SystemExit(f"no fp32 export in {WORK / 'fp32'}: run without --fixture-fp32 first")
        print(json.dumps(record_fixture_fp32(WORK / "fp32", t5tools.load_t5_tokenizer())))
    else:
        main(quick=a.quick, ckpt=a.ckpt)
