#!/usr/bin/env python3
"""Trains the bundled default model: a small T5, from scratch, on number words.

    python scripts/train_default_model.py train     # ~30 min on 2 cores; checkpoint in .cache/default-ckpt
    python scripts/export_default_model.py          # ONNX export, int8, held-out eval -> models/t5-numbers

Data: the numbers 0-9999 written out by num2words in English, German, French and Spanish.
1,000 numbers are held out and never seen in training by any task. Prompt formats (the service's
examples and tests rely on them):

    translate English to German: <english words>   -> German words
    translate German to English: <german words>    -> English words
    translate English to French: <english words>   -> French words
    translate English to Spanish: <english words>  -> Spanish words
    language: <words in English, German, French or Spanish> -> English | German | French | Spanish
    digits: <english words>                        -> the number in digits

English words drop num2words' commas ("four thousand two hundred").
The model uses the real T5 tokenizer, so it is a drop-in T5 (vocab 32128, tied embeddings).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
from pathlib import Path

# glibc returns freed blocks to the OS with munmap on every step otherwise: 30-50% of CPU time
# went to system calls. The setting is read at process start, so re-exec once with it.
if os.environ.get("MALLOC_MMAP_MAX_") != "0":
    os.environ["MALLOC_MMAP_MAX_"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import t5tools  # noqa: E402

SEED = 20261129
N_NUMBERS = 10000
N_HELDOUT = 1000
LANGS = {"en": "English", "de": "German", "fr": "French", "es": "Spanish"}
TASKS = ["en-de", "de-en", "en-fr", "en-es", "language", "digits"]
# Language identification is learnt in a few hundred steps; the other tasks need the steps.
TASK_WEIGHTS = {"en-de": 1.0, "de-en": 1.0, "en-fr": 1.0, "en-es": 1.0, "language": 0.4, "digits": 1.0}
CKPT = t5tools.CACHE / "default-ckpt"
MODEL_DIR = t5tools.ROOT / "models" / "t5-numbers"
FIXTURE = t5tools.ROOT / "tests" / "data" / "numbers_heldout.json"


def words(n: int, lang: str) -> str:
    from num2words import num2words

    text = num2words(n, lang=lang)
    return text.replace(",", "") if lang == "en" else text


def split_numbers() -> tuple[list[int], list[int]]:
    rng = random.Random(SEED)
    numbers = list(range(N_NUMBERS))
    rng.shuffle(numbers)
    heldout = sorted(numbers[:N_HELDOUT])
    train = sorted(numbers[N_HELDOUT:])
    return train, heldout


def example(task: str, n: int, lang_for_id: str | None = None) -> tuple[str, str]:
    if task == "digits":
        return f"digits: {words(n, 'en')}", str(n)
    if task == "language":
        lang = lang_for_id or "en"
        return f"language: {words(n, lang)}", LANGS[lang]
    src, tgt = task.split("-")
    return f"translate {LANGS[src]} to {LANGS[tgt]}: {words(n, src)}", words(n, tgt)


def ambiguous_language_words() -> set[str]:
    """Strings that are the same number word in two languages (English and French "six")."""
    seen: dict[str, set[str]] = {}
    for n in range(N_NUMBERS):
        for lang in LANGS:
            seen.setdefault(words(n, lang), set()).add(lang)
    return {w for w, langs in seen.items() if len(langs) > 1}


def examples_for(numbers: list[int], task: str) -> list[tuple[str, str]]:
    if task != "language":
        return [example(task, n) for n in numbers]
    amb = ambiguous_language_words()
    out = []
    for i, n in enumerate(numbers):
        lang = list(LANGS)[i % 4]  # balanced languages across held-out numbers
        if words(n, lang) in amb:
            lang = list(LANGS)[(i + 1) % 4]
        out.append(example(task, n, lang))
    return out


def make_config(args):
    from transformers import T5Config

    return T5Config(
        vocab_size=32128,
        d_model=args.d_model,
        d_kv=args.d_model // args.heads,
        d_ff=args.d_ff,
        num_layers=args.enc_layers,
        num_decoder_layers=args.dec_layers,
        num_heads=args.heads,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=args.dropout,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )


# German writes a number as one word; these are its parts (longest match first).
GERMAN_MORPHS = sorted(
    "null eins ein zwei drei vier fünf sechs sech sieben sieb acht neun zehn elf zwölf zwanzig dreißig zig "
    "hundert tausend und".split(),
    key=len,
    reverse=True,
)


def morphs(word: str, lang: str) -> list[str]:
    """A number word cut into the parts it is built from: hyphen compounds, German compounds, digits."""
    if lang == "digits":
        return list(word)
    parts = re.split(r"(-)", word)
    if lang != "de":
        return [p for p in parts if p]
    out = []
    for part in parts:
        i = 0
        while i < len(part):
            m = next((m for m in GERMAN_MORPHS if part.startswith(m, i)), None)
            if m is None:  # not a number word we know: keep the rest whole
                out.append(part[i:])
                break
            out.append(m)
            i += len(m)
    return out


def target_ids(tok, text: str, lang: str) -> list[int]:
    """Label ids in which every part of a number word is always cut into the same T5 pieces.

    The tokenizer's own segmentation of a whole word depends on its neighbours ("4231" is
    "▁42" "31", "7777" is "▁7" "777", and "1987" is one piece seen for no other number), so a
    held-out number's canonical pieces can be ones never seen in that role. Training on per-part
    pieces (each a piece of the real T5 vocabulary) makes the output compositional; the decoded
    text is the same string, and nothing at inference time changes.
    """
    model = tok.backend_tokenizer.model
    pieces: list[str] = []
    for w, word in enumerate(text.split(" ")):
        for i, part in enumerate(morphs(word, lang)):
            pieces += [t.value for t in model.tokenize(("▁" if i == 0 else "") + part)]
    ids = tok.convert_tokens_to_ids(pieces) + [tok.eos_token_id]
    if tok.decode(ids, skip_special_tokens=True) != text or tok.unk_token_id in ids:
        raise SystemExit(f"segmentation of {text!r} does not decode back: {pieces}")
    return ids


def target_lang(task: str) -> str:
    if task == "digits":
        return "digits"
    if task == "language":
        return "label"
    return task.split("-")[1]


def check_tokenizer(tok) -> None:
    """Every number word must survive encode/decode, or exact match is impossible."""
    bad = []
    for n in range(0, N_NUMBERS, 7):
        for lang in LANGS:
            w = words(n, lang)
            if tok.decode(tok(w)["input_ids"], skip_special_tokens=True) != w:
                bad.append((n, lang, w))
    if bad:
        raise SystemExit(f"tokenizer does not round-trip {len(bad)} strings, e.g. {bad[:3]}")


def generate(model, tok, prompts: list[str], batch: int = 200, max_new_tokens: int = 40) -> list[str]:
    import torch

    out = []
    for i in range(0, len(prompts), batch):
        enc = tok(prompts[i : i + batch], return_tensors="pt", padding=True)
        with torch.no_grad():
            ids = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens)
        out.extend(tok.batch_decode(ids, skip_special_tokens=True))
    return out


def evaluate(model, tok, numbers: list[int], tasks: list[str] = TASKS) -> dict[str, float]:
    model.eval()
    table = {}
    for task in tasks:
        exs = examples_for(numbers, task)
        preds = generate(model, tok, [s for s, _ in exs])
        table[task] = round(100.0 * sum(p == t for p, (_, t) in zip(preds, exs)) / len(exs), 2)
    model.train()
    return table


def full_vocab_loss(model, input_ids, mask, labels, used_ids, local, unused_row):
    """Exact full-vocabulary cross entropy at the cost of the used tokens only.

    Tokens that never occur in the data share one learnable embedding row (`unused_row`;
    embeddings are tied with the LM head), so their logits are all equal and the partition
    function over the full vocabulary is the sum over used tokens plus (vocab - used) times
    exp(that logit). The model stays a drop-in T5 with the full vocabulary (`materialize`
    writes the shared row into every unused slot); skipping 32k-wide logits halves the step time.
    """
    import torch

    enc = model.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
    dec_in = model._shift_right(labels.clamp(min=0))
    dec = model.decoder(input_ids=dec_in, encoder_hidden_states=enc, encoder_attention_mask=mask).last_hidden_state
    h = dec * (model.config.d_model**-0.5)
    logits = (h @ model.shared.weight[used_ids].T).float()
    others = (h @ unused_row).float() + math.log(model.config.vocab_size - len(used_ids))
    log_z = torch.logaddexp(torch.logsumexp(logits, dim=-1), others)
    valid = labels >= 0
    target = local[labels.clamp(min=0)]
    picked = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return ((log_z - picked) * valid).sum() / valid.sum()


def materialize(model, keep, unused_row) -> None:
    """Writes the shared row into every unused embedding slot: the exported model is a plain T5."""
    import torch

    with torch.no_grad():
        model.shared.weight[~keep] = unused_row.detach()


def train(args) -> None:
    import torch
    from transformers import GenerationConfig, T5ForConditionalGeneration

    torch.manual_seed(SEED)
    random.seed(SEED)
    torch.set_num_threads(args.threads)
    tok = t5tools.load_t5_tokenizer()
    check_tokenizer(tok)
    train_numbers, heldout = split_numbers()
    amb = ambiguous_language_words()

    # Pre-tokenize every training example once.
    data: dict[str, list[tuple[list[int], list[int]]]] = {}
    for task in [t for t in TASKS if t in args.tasks.split(",")]:
        pairs = []
        if task == "language":
            for n in train_numbers:
                for lang in LANGS:
                    if words(n, lang) not in amb:
                        pairs.append(example(task, n, lang))
        else:
            pairs = [example(task, n) for n in train_numbers]
        src = tok([s for s, _ in pairs])["input_ids"]
        if args.segment:
            tgt = [target_ids(tok, t, target_lang(task)) for _, t in pairs]
        else:
            tgt = tok([t for _, t in pairs])["input_ids"]
        data[task] = list(zip(src, tgt))
    tasks = [t for t in TASK_WEIGHTS if t in args.tasks.split(",")]
    weights = [TASK_WEIGHTS[t] for t in tasks]

    if args.init_from:
        # A second phase: continue from a checkpoint (its unused rows all hold the shared row).
        model = T5ForConditionalGeneration.from_pretrained(args.init_from)
    else:
        model = T5ForConditionalGeneration(make_config(args))
    model.generation_config = GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    used = sorted({0, 1} | {i for pairs in data.values() for s, t in pairs for i in s + t})
    used_ids = torch.tensor(used)
    local = torch.full((model.config.vocab_size,), -1, dtype=torch.long)
    local[used_ids] = torch.arange(len(used))
    keep = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    keep[used_ids] = True
    unused = model.shared.weight[~keep]
    unused_row = torch.nn.Parameter((unused[0] if args.init_from else unused.mean(dim=0)).detach().clone())
    print(f"{len(used)} token ids occur in the data; the others share one embedding row", flush=True)
    model.train()
    # The relative position biases are the only source of word order in T5, and they start near 0
    # (std d_model^-0.5). With Adam at the base rate they need thousands of steps to reach the values
    # that let a head single out a neighbour; until then the model swaps digits ("two thousand three
    # hundred" -> "trois mille deux cent"). They get a larger rate of their own.
    bias = [p for n, p in model.named_parameters() if "relative_attention_bias" in n]
    rest = [p for n, p in model.named_parameters() if "relative_attention_bias" not in n] + [unused_row]
    groups = [
        {"params": rest, "scale": 1.0},
        {"params": bias, "scale": args.position_lr_scale, "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), weight_decay=args.weight_decay)
    warmup = args.warmup

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    rng = random.Random(SEED + 1)
    eval_numbers = heldout[:: max(1, N_HELDOUT // args.eval_numbers)]  # the final table uses all
    log = []
    start = time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step) * g["scale"]
        if args.mixed_batches:
            batch = [rng.choice(data[rng.choices(tasks, weights)[0]]) for _ in range(args.batch)]
        else:  # one task per batch: similar lengths, little padding
            batch = rng.choices(data[rng.choices(tasks, weights)[0]], k=args.batch)
        src_len = max(len(s) for s, _ in batch)
        tgt_len = max(len(t) for _, t in batch)
        input_ids = torch.zeros((len(batch), src_len), dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        labels = torch.full((len(batch), tgt_len), -100, dtype=torch.long)
        for i, (s, t) in enumerate(batch):
            input_ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
            labels[i, : len(t)] = torch.tensor(t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = full_vocab_loss(model, input_ids, mask, labels, used_ids, local, unused_row)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0:
            el = time.time() - start
            print(f"step {step} loss {loss.item():.4f} lr {lr_at(step):.2e} {el / (step + 1):.2f}s/step", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            materialize(model, keep, unused_row)
            acc = evaluate(model, tok, eval_numbers, tasks)
            entry = {"step": step + 1, "minutes": round((time.time() - start) / 60, 1), "heldout_subset": acc}
            log.append(entry)
            print(json.dumps(entry), flush=True)
            model.save_pretrained(args.out)
            tok.save_pretrained(args.out)
            (args.out / "train_log.json").write_text(json.dumps(log, indent=1))
    minutes = (time.time() - start) / 60
    materialize(model, keep, unused_row)
    final = None if args.no_final_eval else evaluate(model, tok, heldout)
    print("final held-out exact match (PyTorch fp32):", json.dumps(final), flush=True)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    info = {
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "train_minutes": round(minutes, 1),
        "threads": args.threads,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "heldout_pytorch": final,
        "log": log,
    }
    if args.init_from:
        previous = json.loads((Path(args.init_from) / "train_log.json").read_text())
        info["previous_phase"] = previous
    (args.out / "train_log.json").write_text(json.dumps(info, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=4000)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--warmup", type=int, default=200)
    t.add_argument("--eval-every", type=int, default=500)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--dropout", type=float, default=0.0, help="dropout rate (the exported model has none active)")
    t.add_argument("--d-model", type=int, default=256)
    t.add_argument("--d-ff", type=int, default=1024)
    t.add_argument("--heads", type=int, default=8)
    t.add_argument("--enc-layers", type=int, default=3)
    t.add_argument("--dec-layers", type=int, default=3)
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--position-lr-scale", type=float, default=30.0, help="learning-rate factor of the position biases")
    t.add_argument("--tasks", default=",".join(TASKS), help="train and evaluate only these tasks (experiments)")
    t.add_argument("--eval-numbers", type=int, default=200, help="held-out numbers in the training log's table")
    t.add_argument("--no-segment", dest="segment", action="store_false", help="canonical label pieces")
    t.add_argument("--mixed-batches", action="store_true", help="tasks mixed inside a batch")
    t.add_argument("--init-from", type=Path, help="continue from this checkpoint (a second phase)")
    t.add_argument("--out", type=Path, default=CKPT, help="checkpoint directory to write")
    t.add_argument("--no-final-eval", action="store_true", help="leave the full held-out table to the export")
    args = p.parse_args()
    train(args)


if __name__ == "__main__":
    main()
