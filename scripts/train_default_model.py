#!/usr/bin/env python3
"""Trains the bundled default model: a small T5, from scratch, on number words.

    python scripts/train_default_model.py data      # the data: examples of every task and form, checks
    python scripts/train_default_model.py train     # checkpoint in .cache/default-ckpt
    python scripts/export_default_model.py          # ONNX export, int8, held-out eval -> models/t5-numbers

Data (scripts/numbers_data.py): the numbers 0-999,999 written out by num2words in English, German,
French and Spanish. Targets are canonical; inputs are written as people write them (capitals,
commas, missing or extra "and", hyphens dropped or spaced, a full stop, extra spaces: FORMS).
1,000 numbers of 0-9999 (the first model's draw) and 2,000 of 10,000-999,999 are held out and never
seen in training by any task; examples are drawn afresh every step from the rest. Prompt formats
(the service's examples and tests rely on them):

    translate English to German: <english words>   -> German words
    translate German to English: <german words>    -> English words
    translate English to French: <english words>   -> French words
    translate English to Spanish: <english words>  -> Spanish words
    language: <words in English, German, French or Spanish> -> English | German | French | Spanish
    digits: <english words>                        -> the number in digits
    entities: <a sentence in one of the four>      -> NUMBER: <span>; NUMBER: <span> (nothing if none)

English target words drop num2words' commas ("four thousand two hundred"). Extraction spans are
the number words as written in the sentence, in order; some sentence frames are held out.
The model uses the real T5 tokenizer, so it is a drop-in T5 (vocab 32128, tied embeddings).
"""

from __future__ import annotations

import argparse
import functools
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
import numbers_data as D  # noqa: E402
import t5tools  # noqa: E402

SEED = D.SEED
N_NUMBERS = D.N_NUMBERS
N_HELDOUT = D.N_HELDOUT + D.N_HELDOUT_LARGE
LANGS = D.LANGS
TASKS = ["en-de", "de-en", "en-fr", "en-es", "language", "digits", "entities"]
NUMBER_TASKS = TASKS[:6]
# Language identification is learnt in a few hundred steps; digits and extraction were the slowest
# in the pilot run (47% and entity F1 0.2 at step 1500, when translation was past 90%).
TASK_WEIGHTS = {"en-de": 1.0, "de-en": 1.0, "en-fr": 1.0, "en-es": 1.0, "language": 0.25, "digits": 1.3, "entities": 2.0}
CKPT = t5tools.CACHE / "default-ckpt"
MODEL_DIR = t5tools.ROOT / "models" / "t5-numbers"
FIXTURE = t5tools.ROOT / "tests" / "data" / "numbers_heldout.json"
words = D.words


def split_numbers() -> tuple[list[int], list[int]]:
    """(training numbers, held-out numbers) of 0-999,999, each sorted. The held-out ones are the
    first model's 1,000 of 0-9999 and 2,000 of 10,000-999,999."""
    small, large = D.heldout_split()
    held = D.heldout_set()
    return [n for n in range(N_NUMBERS) if n not in held], sorted(small + large)


def input_lang(task: str, lang_for_id: str | None = None) -> str:
    if task == "language":
        return lang_for_id or "en"
    if task == "digits":
        return "en"
    return task.split("-")[0]


def example(task: str, n: int, lang_for_id: str | None = None, form: str = "canonical", rng=None) -> tuple[str, str]:
    """A number task's (prompt, target): the number `n` written in `form` (numbers_data.FORMS)."""
    rng = rng or D.stable_rng(task, n, lang_for_id, form)
    text = D.form_text(n, input_lang(task, lang_for_id), form, rng)
    prompt = D.PROMPTS[task].format(text)
    if task == "digits":
        return prompt, str(n)
    if task == "language":
        return prompt, LANGS[lang_for_id or "en"]
    return prompt, words(n, task.split("-")[1])


def ambiguous_language_words() -> set[str]:
    """Strings that are the same number word in two languages (English and French "six")."""
    return {w for n in range(D.N_SMALL) for lang in LANGS for w in [words(n, lang)] if D.ambiguous_language(w)}


def rotated_form(task: str, n: int, lang: str, i: int) -> str:
    """The i-th form in rotation for a held-out example; a form that leaves this number's text as
    it is ("no_and" on "seventy-one") passes to the next, so every form's figure tests it."""
    forms = D.FORMS[lang]
    canonical = D.words(n, lang)
    for k in range(len(forms)):
        form = forms[(i + k) % len(forms)]
        if form == "canonical" or example(task, n, lang if task == "language" else None, form)[0].split(": ", 1)[1] != canonical:
            return form
    return "canonical"


def examples_for(numbers: list[int], task: str, forms: str | None = None) -> list[tuple[str, str]]:
    """Held-out examples of a task. `forms`: None, canonical inputs; "rotate", each number in the
    next form of its input language (FORMS), the same in every run. For "entities", one sentence
    per number from the held-out frames (languages in turn), its numbers taken from `numbers` in
    order from its own; sentences write numbers in the forms of spans whatever `forms` is."""
    return [(p, t) for p, t, _ in labelled_examples(numbers, task, forms)]


def labelled_examples(numbers: list[int], task: str, forms: str | None = "rotate") -> list[tuple[str, str, str]]:
    """examples_for with each example's group: its form (number tasks) or language (entities)."""
    if task == "entities":
        out = []
        langs = list(LANGS)
        for i, n in enumerate(numbers):
            lang = langs[i % 4]
            frames = D.FRAMES[lang]["heldout"]
            it = (numbers[(i + k) % len(numbers)] for k in range(10**9))
            rng = D.stable_rng("entities", i, n)
            prompt, target, _ = D.entity_example(lang, rng, frame=frames[(i // 4) % len(frames)], numbers=it, round_trip=round_trips)
            out.append((prompt, target, lang))
        return out
    out = []
    for i, n in enumerate(numbers):
        lang = None
        if task == "language":
            lang = list(LANGS)[i % 4]  # balanced languages across held-out numbers
            if D.ambiguous_language(words(n, lang)):
                lang = list(LANGS)[(i + 1) % 4]
        src = input_lang(task, lang)
        form = "canonical"
        if forms == "rotate":
            form = rotated_form(task, n, src, (i // 4 if task == "language" else i) + TASKS.index(task))
        prompt, target = example(task, n, lang, form)
        if task == "language" and D.ambiguous_language(prompt.split(": ", 1)[1]):
            prompt, target = example(task, n, lang, "canonical")
            form = "canonical"
        out.append((prompt, target, form))
    return out


@functools.lru_cache(maxsize=1)
def _tokenizer():
    return t5tools.load_t5_tokenizer()


@functools.lru_cache(maxsize=100_000)
def round_trips(text: str) -> bool:
    """Whether the T5 tokenizer writes `text` back as it is (no <unk>: T5's vocabulary lacks
    some capitals, "Ö" of "ZWÖLF", "Ú" of "VEINTIÚN")."""
    tok = _tokenizer()
    ids = tok(text)["input_ids"]
    return tok.unk_token_id not in ids and tok.decode(ids, skip_special_tokens=True) == text


def train_example(task: str, rng: random.Random) -> tuple[str, str, str]:
    """A fresh training example (prompt, target, target language): never a held-out number, an
    extraction sentence never from a held-out frame."""
    if task == "entities":
        lang = rng.choice(list(LANGS))
        prompt, target, _ = D.entity_example(lang, rng, "train", round_trip=round_trips)
        return prompt, target, target_lang(task)
    n = D.sample_number(rng)
    if task == "language":
        while True:
            lang = rng.choice(list(LANGS))
            prompt, target = example(task, n, lang, D.sample_form(lang, rng), rng)
            if not D.ambiguous_language(prompt.split(": ", 1)[1]):
                return prompt, target, "label"
    prompt, target = example(task, n, None, D.sample_form(input_lang(task), rng), rng)
    return prompt, target, target_lang(task)


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


# German writes a number as one word; these are its parts (longest match first). "dreissig" is
# "dreißig" in capitals (DREISSIG).
GERMAN_MORPHS = sorted(
    "null eins ein zwei drei vier fünf sechs sech sieben sieb acht neun zehn elf zwölf zwanzig dreißig dreissig zig "
    "hundert tausend und".split(),
    key=len,
    reverse=True,
)
PUNCT = re.compile(r"([-,.;:!?])")


def morphs(word: str, lang: str) -> list[str]:
    """A number word cut into the parts it is built from: hyphen compounds, German compounds
    (whatever their case), digits; punctuation (commas of spans, the ; and : of extraction
    targets) as parts of its own."""
    if lang == "digits":
        return list(word)
    if lang == "copy":
        return [word[:-1], ";"] if word.endswith(";") and len(word) > 1 else [word]
    parts = [p for p in PUNCT.split(word) if p]
    if lang != "de":
        return parts
    out = []
    for part in parts:
        low, i = part.lower(), 0
        if len(low) != len(part):  # a capital that lower-cases to two letters: keep it whole
            out.append(part)
            continue
        while i < len(part):
            m = next((m for m in GERMAN_MORPHS if low.startswith(m, i)), None)
            if m is None:  # not a number word we know: keep the rest whole
                out.append(part[i:])
                break
            out.append(part[i : i + len(m)])
            i += len(m)
    return out


@functools.lru_cache(maxsize=200_000)
def _pieces(part: str, first: bool) -> tuple[str, ...]:
    model = _tokenizer().backend_tokenizer.model
    return tuple(t.value for t in model.tokenize(("▁" if first else "") + part))


def target_ids(tok, text: str, lang: str, check: bool = True) -> list[int]:
    """Label ids in which every part of a number word is always cut into the same T5 pieces.

    The tokenizer's own segmentation of a whole word depends on its neighbours ("4231" is
    "▁42" "31", "7777" is "▁7" "777", and "1987" is one piece seen for no other number), so a
    held-out number's canonical pieces can be ones never seen in that role. Training on per-part
    pieces (each a piece of the real T5 vocabulary) makes the output compositional; the decoded
    text is the same string, and nothing at inference time changes. Extraction targets are cut the
    differently ("copy"): each word of a span into the pieces the tokenizer gives it in the
    sentence, where words are cut one by one, so that writing a span is copying input pieces
    ("▁N" "UM" "BER" ":" "▁zweitausend" ... ";"); German compounds cut at their parts, as the
    translation targets are, made the model re-segment what it copies (entity F1 0.24 at step 1500).
    """
    pieces: list[str] = []
    for word in text.split(" ") if text else []:
        for i, part in enumerate(morphs(word, lang)):
            pieces += _pieces(part, i == 0)
    ids = tok.convert_tokens_to_ids(pieces) + [tok.eos_token_id]
    if tok.unk_token_id in ids or (check and tok.decode(ids, skip_special_tokens=True) != text):
        raise ValueError(f"segmentation of {text!r} does not decode back: {pieces}")
    return ids


def target_lang(task: str) -> str:
    if task == "digits":
        return "digits"
    if task == "language":
        return "label"
    if task == "entities":
        return "copy"
    return task.split("-")[1]


def check_tokenizer(tok) -> None:
    """Every canonical number word must survive encode/decode, or exact match is impossible."""
    bad = []
    for n in list(range(0, D.N_SMALL, 7)) + list(range(D.N_SMALL, N_NUMBERS, 997)):
        for lang in LANGS:
            w = words(n, lang)
            if tok.decode(tok(w)["input_ids"], skip_special_tokens=True) != w:
                bad.append((n, lang, w))
    if bad:
        raise SystemExit(f"tokenizer does not round-trip {len(bad)} strings, e.g. {bad[:3]}")


def generate(model, tok, prompts: list[str], batch: int = 200, max_new_tokens: int = 40) -> list[str]:
    import torch

    out = []
    # Similar lengths together: less padding. Outputs go back in the prompts' order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts: dict[int, str] = {}
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        enc = tok([prompts[j] for j in idx], return_tensors="pt", padding=True)
        with torch.no_grad():
            ids = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens)
        texts.update(zip(idx, tok.batch_decode(ids, skip_special_tokens=True)))
    out = [texts[i] for i in range(len(prompts))]
    return out


ENTITY_MAX_TOKENS = 128


def eval_sets(n_numbers: int | None, n_sentences: int | None) -> tuple[list[int], list[int]]:
    """Held-out numbers for the number tasks (half of 0-9999, half larger; all of them with None)
    and for the extraction sentences (4 x n_sentences numbers, mostly small, in a fixed shuffle)."""
    small, large = D.heldout_split()
    if n_numbers is None:
        numbers = list(small) + list(large)
    else:
        numbers = list(small[:: max(1, len(small) // (n_numbers // 2))][: n_numbers // 2])
        numbers += list(large[:: max(1, len(large) // (n_numbers - n_numbers // 2))][: n_numbers - n_numbers // 2])
    rng = random.Random(SEED + 3)
    k = 4 * (n_sentences or 400)
    ent = [rng.choice(small) if rng.random() < 0.6 else rng.choice(large) for _ in range(k)]
    return sorted(numbers), ent


def pct(right: int, total: int) -> float:
    return round(100.0 * right / max(1, total), 2)


def evaluate(model, tok, numbers: list[int], tasks: list[str] = TASKS, entity_numbers: list[int] | None = None) -> dict:
    """Held-out exact match per task, per form and per size (greedy), and entity-level precision,
    recall and F1 (exact span match) of the extraction per language. `model` is a PyTorch model
    or any model with transformers' `generate` (optimum's ORTModelForSeq2SeqLM: no eval/train)."""
    if hasattr(model, "eval"):
        model.eval()
    res: dict = {"exact": {}, "by_form": {}, "by_size": {}, "forms": {}, "entities": {}}
    form_tally: dict[str, list[int]] = {}
    for task in [t for t in tasks if t != "entities"]:
        exs = labelled_examples(numbers, task, "rotate")
        preds = generate(model, tok, [p for p, _, _ in exs])
        by_form: dict[str, list[int]] = {}
        by_size: dict[str, list[int]] = {}
        for n, p, (_, t, form) in zip(numbers, preds, exs):
            ok = int(p == t)
            for d, key in ((by_form, form), (form_tally, form), (by_size, "0-9999" if n < D.N_SMALL else "10000+")):
                d.setdefault(key, [0, 0])
                d[key][0] += ok
                d[key][1] += 1
        res["exact"][task] = pct(sum(p == t for p, (_, t, _) in zip(preds, exs)), len(exs))
        res["by_form"][task] = {f: pct(*v) for f, v in by_form.items()}
        res["by_size"][task] = {s: pct(*v) for s, v in by_size.items()}
    res["forms"] = {f: pct(*v) for f, v in form_tally.items()}
    if "entities" in tasks and entity_numbers:
        exs = labelled_examples(entity_numbers, "entities")
        preds = generate(model, tok, [p for p, _, _ in exs], batch=100, max_new_tokens=ENTITY_MAX_TOKENS)
        tally: dict[str, list[int]] = {}
        for p, (_, t, lang) in zip(preds, exs):
            gold, got = D.parse_entities(t), D.parse_entities(p)
            tp = sum(min(gold.count(s), got.count(s)) for s in set(got))
            c = tally.setdefault(lang, [0, 0, 0, 0, 0])
            c[0] += tp
            c[1] += len(got)
            c[2] += len(gold)
            c[3] += int(p == t)
            c[4] += 1
        for lang, (tp, n_pred, n_gold, exact, n) in tally.items():
            prec, rec = tp / max(1, n_pred), tp / max(1, n_gold)
            f1 = 2 * prec * rec / max(1e-9, prec + rec)
            res["entities"][lang] = {
                "precision": round(prec, 4), "recall": round(rec, 4), "f1": round(f1, 4),
                "exact": pct(exact, n), "sentences": n, "gold_spans": n_gold,
            }
        res["exact"]["entities"] = pct(sum(v[3] for v in tally.values()), sum(v[4] for v in tally.values()))
        res["entity_errors"] = [(pr, t, p) for p, (pr, t, _) in zip(preds, exs) if p != t][:8]
    cells = [(v, f"{t}/{f}") for t, fs in res["by_form"].items() for f, v in fs.items()]
    if cells:
        res["worst_cell"] = min(cells)
    if hasattr(model, "train"):
        model.train()
    return res


def summary(res: dict) -> str:
    """A few lines of an evaluation for the log."""
    lines = ["  exact: " + " ".join(f"{t} {v}" for t, v in res["exact"].items())]
    lines.append("  size:  " + " ".join(f"{t} {v.get('0-9999')}/{v.get('10000+')}" for t, v in res["by_size"].items()))
    lines.append("  forms: " + " ".join(f"{f} {v}" for f, v in res["forms"].items()))
    if res["entities"]:
        lines.append(
            "  entities P/R/F1: "
            + " ".join(f"{l} {v['precision']:.3f}/{v['recall']:.3f}/{v['f1']:.3f}" for l, v in res["entities"].items())
        )
    if "worst_cell" in res:
        lines.append(f"  worst task/form: {res['worst_cell']}")
    return "\n".join(lines)


def full_vocab_loss(model, input_ids, mask, labels, used_ids, local, unused_row, keep):
    """Exact full-vocabulary cross entropy at the cost of the used tokens only.

    Tokens that never occur in the data share one learnable embedding row (`unused_row`;
    embeddings are tied with the LM head), so their logits are all equal and the partition
    function over the full vocabulary is the sum over used tokens plus (vocab - used) times
    exp(that logit). The model stays a drop-in T5 with the full vocabulary (`materialize`
    writes the shared row into every unused slot); skipping 32k-wide logits halves the step time.
    An input token outside the used set (drawn data can hold a rare one) reads the shared row,
    as it will in the exported model.
    """
    import torch

    emb = model.shared(input_ids)
    oov = ~keep[input_ids]
    if oov.any():
        emb = torch.where(oov.unsqueeze(-1), unused_row.to(emb.dtype), emb)
    enc = model.encoder(inputs_embeds=emb, attention_mask=mask).last_hidden_state
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


def encode_batch(tok, batch: list[tuple[str, list[int]]]):
    import torch

    src = tok([s for s, _ in batch])["input_ids"]
    src_len = max(len(s) for s in src)
    tgt_len = max(len(t) for _, t in batch)
    input_ids = torch.zeros((len(batch), src_len), dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    labels = torch.full((len(batch), tgt_len), -100, dtype=torch.long)
    for i, (s, (_, t)) in enumerate(zip(src, batch)):
        input_ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, : len(t)] = torch.tensor(t)
    return input_ids, mask, labels


def cpu_has_bf16() -> bool:
    """bf16 autocast pays only where the CPU computes in bf16 (AVX-512 BF16, AMX): on an AVX2-only
    CPU it measured 20 times slower than fp32 (a step of batch 128: 41 s against 1.8 s)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def used_token_ids(tok, tasks: list[str], per_task: int) -> set[int]:
    """The token ids of a large sample of the data (inputs and targets) and of every held-out
    target: these get embedding rows of their own; the rest share one."""
    rng = random.Random(SEED + 7)
    used = {0, 1}
    for task in tasks:
        exs = [train_example(task, rng) for _ in range(per_task)]
        for ids in tok([p for p, _, _ in exs])["input_ids"]:
            used.update(ids)
        for _, t, lang in exs:
            used.update(target_ids(tok, t, lang, check=False))
    numbers, ent = eval_sets(None, None)
    for task in tasks:
        exs = labelled_examples(ent if task == "entities" else numbers, task)
        for ids in tok([p for p, _, _ in exs])["input_ids"]:
            used.update(ids)
        for _, t, g in exs:
            used.update(target_ids(tok, t, target_lang(task), check=False))
    return used


def train(args) -> None:
    import torch
    from transformers import GenerationConfig, T5ForConditionalGeneration

    torch.manual_seed(SEED)
    random.seed(SEED)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer()
    check_tokenizer(tok)
    tasks = [t for t in TASK_WEIGHTS if t in args.tasks.split(",")]
    weights = [TASK_WEIGHTS[t] * (args.entity_weight / TASK_WEIGHTS["entities"] if t == "entities" else 1.0) for t in tasks]
    t0 = time.time()
    used = sorted(used_token_ids(tok, tasks, args.vocab_sample))
    print(f"{len(used)} token ids occur in the data; the others share one embedding row ({time.time() - t0:.0f}s)", flush=True)

    if args.init_from:
        # A second phase: continue from a checkpoint (its unused rows all hold the shared row).
        model = T5ForConditionalGeneration.from_pretrained(args.init_from)
    else:
        model = T5ForConditionalGeneration(make_config(args))
    model.generation_config = GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    used_set = set(used)
    used_ids = torch.tensor(used)
    local = torch.full((model.config.vocab_size,), -1, dtype=torch.long)
    local[used_ids] = torch.arange(len(used))
    keep = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    keep[used_ids] = True
    unused = model.shared.weight[~keep]
    unused_row = torch.nn.Parameter((unused[0] if args.init_from else unused.mean(dim=0)).detach().clone())
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

    bf16 = args.dtype == "bf16" or (args.dtype == "auto" and cpu_has_bf16())
    print(f"autocast: {'bf16' if bf16 else 'off (fp32)'}", flush=True)
    rng = random.Random(SEED + 1)
    eval_numbers, eval_entity_numbers = eval_sets(args.eval_numbers, args.eval_sentences)
    log = []
    skipped = {"no_round_trip": 0, "unseen_target_token": 0}
    queues: dict[str, list] = {}
    train_s = data_s = cpu_s = elapsed = 0.0
    first = 0
    state_file = args.out / "resume.pt"
    if args.resume:
        # Everything the loop carries, as saved: the run goes on as if it had not stopped.
        saved = torch.load(state_file, weights_only=False)
        # (A state saved before "steps" could change kept it among the settings.)
        saved_steps = saved.get("steps", saved["args"].get("steps"))
        if {k: v for k, v in saved["args"].items() if k != "steps"} != resume_args(args):
            raise SystemExit(f"{state_file} was saved with other settings: {saved['args']}")
        if saved_steps != args.steps:
            # The cosine schedule is recomputed over the new total: the rate moves a little at once.
            print(f"total steps {saved_steps} -> {args.steps} from step {saved['step']}", flush=True)
        model.load_state_dict(saved["model"])
        with torch.no_grad():
            unused_row.copy_(saved["unused_row"])
        opt.load_state_dict(saved["opt"])
        rng.setstate(saved["rng"])
        torch.set_rng_state(saved["torch_rng"])
        first, queues, log, skipped = saved["step"], saved["queues"], saved["log"], saved["skipped"]
        train_s, data_s, cpu_s, elapsed = saved["train_s"], saved["data_s"], saved["cpu_s"], saved["elapsed"]
        print(f"resumed at step {first} ({elapsed / 60:.1f} min trained before)", flush=True)
    start = time.time() - elapsed
    for step in range(first, args.steps):
        t_step = time.time()
        c_step = time.process_time()
        for g in opt.param_groups:
            g["lr"] = lr_at(step) * g["scale"]
        task = rng.choices(tasks, weights)[0]
        if not queues.get(task):
            # Draw `bucket` batches of the task at once and cut them by length: little padding.
            pool = []
            while len(pool) < args.batch * args.bucket:
                t = rng.choices(tasks, weights)[0] if args.mixed_batches else task
                prompt, target, lang = train_example(t, rng)
                try:
                    ids = target_ids(tok, target, lang, check=rng.random() < 0.02)
                except ValueError:
                    skipped["no_round_trip"] += 1
                    continue
                if not used_set.issuperset(ids):
                    skipped["unseen_target_token"] += 1
                    continue
                pool.append((prompt, ids))
            src_lens = [len(s) for s in tok([p for p, _ in pool])["input_ids"]]
            order = sorted(range(len(pool)), key=lambda i: (src_lens[i], len(pool[i][1])))
            cut = [[pool[i] for i in order[k : k + args.batch]] for k in range(0, len(order), args.batch)]
            rng.shuffle(cut)
            queues[task] = cut
        batch = queues[task].pop()
        input_ids, mask, labels = encode_batch(tok, batch)
        data_s += time.time() - t_step
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = full_vocab_loss(model, input_ids, mask, labels, used_ids, local, unused_row, keep)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        train_s += time.time() - t_step
        cpu_s += time.process_time() - c_step
        if step % 50 == 0:
            # Wall time per step and CPU time per step (all threads): on a shared machine the wall
            # time grows, the CPU time much less; with 2 threads busy, idle wall ~ CPU / 2.
            print(
                f"step {step} loss {loss.item():.4f} ({task}) lr {lr_at(step):.2e} {train_s / (step + 1):.2f}s/step "
                f"cpu {cpu_s / (step + 1):.2f}s/step (data {data_s / (step + 1):.3f}s) "
                f"elapsed {(time.time() - start) / 60:.1f} min",
                flush=True,
            )
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            materialize(model, keep, unused_row)
            t_eval = time.time()
            res = evaluate(model, tok, eval_numbers, tasks, eval_entity_numbers)
            entry = {
                "step": step + 1,
                "minutes": round((time.time() - start) / 60, 1),
                "train_s_per_step": round(train_s / (step + 1), 3),
                "cpu_s_per_step": round(cpu_s / (step + 1), 3),
                "eval_s": round(time.time() - t_eval),
                "heldout_subset": res,
            }
            log.append(entry)
            print(f"eval at step {step + 1} ({entry['minutes']} min, eval {entry['eval_s']}s)\n{summary(res)}", flush=True)
            print(json.dumps(entry, ensure_ascii=False), flush=True)
            model.save_pretrained(args.out)
            tok.save_pretrained(args.out)
            (args.out / "train_log.json").write_text(json.dumps(log, indent=1, ensure_ascii=False))
        if (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            saved = {
                "args": resume_args(args), "steps": args.steps, "step": step + 1, "model": model.state_dict(), "unused_row": unused_row.detach(),
                "opt": opt.state_dict(), "rng": rng.getstate(), "torch_rng": torch.get_rng_state(), "queues": queues,
                "log": log, "skipped": skipped, "train_s": train_s, "data_s": data_s, "cpu_s": cpu_s,
                "elapsed": time.time() - start,
            }
            torch.save(saved, state_file.with_suffix(".tmp"))
            state_file.with_suffix(".tmp").replace(state_file)
    state_file.unlink(missing_ok=True)
    minutes = (time.time() - start) / 60
    materialize(model, keep, unused_row)
    print(f"skipped examples: {skipped}", flush=True)
    final = None
    if not args.no_final_eval:
        numbers, ent = eval_sets(None, args.final_sentences)
        final = evaluate(model, tok, numbers, tasks, ent)
        print("final held-out (PyTorch fp32):\n" + summary(final), flush=True)
        print(json.dumps(final, ensure_ascii=False), flush=True)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    info = {
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "train_minutes": round(minutes, 1),
        "train_s_per_step": round(train_s / max(1, args.steps), 3),
        "cpu_s_per_step": round(cpu_s / max(1, args.steps), 3),
        "threads": args.threads,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "skipped": skipped,
        "heldout_pytorch": final,
        "log": log,
    }
    if args.init_from:
        previous = json.loads((Path(args.init_from) / "train_log.json").read_text())
        info["previous_phase"] = previous
    (args.out / "train_log.json").write_text(json.dumps(info, indent=1, ensure_ascii=False))


def resume_args(args) -> dict:
    """The settings a resumed run must share with the run it continues."""
    skip = {"resume", "eval_every", "save_every", "no_final_eval", "final_sentences", "threads", "out", "steps"}
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in skip}


def data_check(args) -> None:
    """Prints examples of every task and form and the held-out sizes, and checks the data: no
    held-out number or frame in training, every target decodes back from its label ids."""
    tok = _tokenizer()
    check_tokenizer(tok)
    small, large = D.heldout_split()
    print(f"held-out numbers: {len(small)} of 0-9999, {len(large)} of 10,000-999,999 (seed {SEED})")
    print("held-out frames per language: " + ", ".join(f"{l} {len(D.FRAMES[l]['heldout'])} of {len(D.FRAMES[l]['train']) + len(D.FRAMES[l]['heldout'])}" for l in LANGS))
    for lang in LANGS:
        assert not set(D.FRAMES[lang]["train"]) & set(D.FRAMES[lang]["heldout"])
    rng = random.Random(1)
    drawn = [D.sample_number(rng) for _ in range(200_000)] + [D.sample_number(rng, "entity") for _ in range(50_000)]
    assert not any(D.is_heldout(n) for n in drawn), "a held-out number was drawn for training"
    sizes = {d: sum(len(str(n)) == d for n in drawn[:200_000]) / 2000 for d in range(1, 7)}
    print("training numbers by digit count (%): " + ", ".join(f"{d}: {v:.1f}" for d, v in sizes.items()))

    print("\n== number tasks, every form (held-out numbers 3457-like examples; targets canonical)")
    for task in NUMBER_TASKS:
        langs = list(LANGS) if task == "language" else [input_lang(task)]
        for lang in langs:
            for form in D.FORMS[lang]:
                for n in (71, 3457, 123456):
                    p, t = example(task, n, lang if task == "language" else None, form, random.Random(n))
                    print(f"{task:8} {lang} {form:12} {p!r} -> {t!r}")
    print("\n== the issue's inputs, as forms")
    for p in [("en", 3457, "commas"), ("en", 3457, "title"), ("en", 3457, "mixed"), ("en", 57, "hyphen_space"), ("en", 12000, "canonical")]:
        print(p, D.form_text(p[1], p[0], p[2], random.Random(3)))
    print("\n== entities: training and held-out frames")
    for lang in LANGS:
        for split in ("train", "heldout"):
            for _ in range(4):
                p, t, _ = D.entity_example(lang, rng, split, round_trip=round_trips)
                print(f"{lang} {split:7} {p!r} -> {t!r}")

    print("\n== round trips of targets through the label ids (decode(ids) == target)")
    t0 = time.time()
    rng = random.Random(2)
    longest: dict[str, tuple[int, int]] = {}
    for task in TASKS:
        exs = [train_example(task, rng) for _ in range(args.samples)]
        bad = 0
        for p, t, lang in exs:
            try:
                target_ids(tok, t, lang)
            except ValueError:
                bad += 1
        src = tok([p for p, _, _ in exs])["input_ids"]
        longest[task] = (max(map(len, src)), max(len(target_ids(tok, t, lang, check=False)) for _, t, lang in exs))
        unk = sum(tok.unk_token_id in s for s in src)
        print(f"{task:8} training sample {len(exs)}: {bad} targets not decoding back, {unk} inputs with <unk>, longest input/target {longest[task]} tokens")
    print(f"  ({(time.time() - t0) / (len(TASKS) * args.samples) * 1e3:.2f} ms per example, generation and labels)")
    numbers, ent = eval_sets(None, None)
    for task in TASKS:
        exs = labelled_examples(ent if task == "entities" else numbers, task)
        bad = [t for _, t, g in exs if not _decodes(tok, t, target_lang(task))]
        groups = sorted({g for _, _, g in exs})
        print(f"{task:8} held-out {len(exs)}: {len(bad)} not decoding back {bad[:3]}; groups {groups}")
        if task == "entities":
            for p, t, g in exs[:12]:
                print(f"    {g} {p!r} -> {t!r}")
            spans = [s for _, t, _ in exs for s in D.parse_entities(t)]
            print(f"    {len(spans)} spans, {sum(not t for _, t, _ in exs)} sentences without a number")


def eval_checkpoint(args) -> None:
    """The held-out table of a checkpoint (PyTorch, greedy): every held-out number unless --numbers."""
    import torch
    from transformers import T5ForConditionalGeneration

    torch.set_num_threads(args.threads)
    tok = _tokenizer()
    model = T5ForConditionalGeneration.from_pretrained(args.ckpt)
    numbers, ent = eval_sets(args.numbers, args.sentences)
    t0 = time.time()
    res = evaluate(model, tok, numbers, args.tasks.split(","), ent)
    print(f"{len(numbers)} held-out numbers per task, {args.sentences} sentences per language ({time.time() - t0:.0f}s)")
    print(summary(res))
    print(json.dumps(res, ensure_ascii=False))
    if args.write:
        (Path(args.ckpt) / "heldout_eval.json").write_text(json.dumps(res, indent=1, ensure_ascii=False))


def _decodes(tok, text: str, lang: str) -> bool:
    try:
        target_ids(tok, text, lang)
        return True
    except ValueError:
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="print examples of the data and check it")
    d.add_argument("--samples", type=int, default=3000, help="training examples drawn per task for the checks")
    e = sub.add_parser("eval", help="the held-out table of a checkpoint")
    e.add_argument("--ckpt", type=Path, default=CKPT)
    e.add_argument("--numbers", type=int, help="held-out numbers per task (default: all 3,000)")
    e.add_argument("--sentences", type=int, default=400, help="held-out sentences per language")
    e.add_argument("--tasks", default=",".join(TASKS))
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--write", action="store_true", help="write heldout_eval.json into the checkpoint")
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=4000)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--warmup", type=int, default=200)
    t.add_argument("--eval-every", type=int, default=500)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto", help="bf16 autocast, or fp32 (auto: bf16 where the CPU has bf16 instructions)")
    t.add_argument("--dropout", type=float, default=0.0, help="dropout rate (the exported model has none active)")
    t.add_argument("--d-model", type=int, default=256)
    t.add_argument("--d-ff", type=int, default=1024)
    t.add_argument("--heads", type=int, default=8)
    t.add_argument("--enc-layers", type=int, default=3)
    t.add_argument("--dec-layers", type=int, default=3)
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--position-lr-scale", type=float, default=30.0, help="learning-rate factor of the position biases")
    t.add_argument("--tasks", default=",".join(TASKS), help="train and evaluate only these tasks (experiments)")
    t.add_argument("--entity-weight", type=float, default=TASK_WEIGHTS["entities"], help="sampling weight of the extraction task")
    t.add_argument("--eval-numbers", type=int, default=300, help="held-out numbers per task in the training log's table")
    t.add_argument("--eval-sentences", type=int, default=100, help="held-out sentences per language in the training log")
    t.add_argument("--final-sentences", type=int, default=400, help="held-out sentences per language in the final table")
    t.add_argument("--vocab-sample", type=int, default=10000, help="examples per task drawn to find the used token ids")
    t.add_argument("--mixed-batches", action="store_true", help="tasks mixed inside a batch")
    t.add_argument("--bucket", type=int, default=4, help="batches drawn at once and cut by length (1: no bucketing)")
    t.add_argument("--init-from", type=Path, help="continue from this checkpoint (a second phase)")
    t.add_argument("--out", type=Path, default=CKPT, help="checkpoint directory to write")
    t.add_argument("--no-final-eval", action="store_true", help="leave the full held-out table to the export")
    t.add_argument("--save-every", type=int, default=250, help="steps between saves of the whole state (OUT/resume.pt)")
    t.add_argument("--resume", action="store_true", help="go on from OUT/resume.pt (a run that was stopped)")
    args = p.parse_args()
    if args.cmd == "data":
        data_check(args)
    elif args.cmd == "eval":
        eval_checkpoint(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
