#!/usr/bin/env python3
"""Exports the trained default model (scripts/train_default_model.py train) and bundles it.

    python scripts/export_default_model.py [--quick] [--ckpt DIR] [--numbers N] [--sentences N] [--binary target/debug/t5serve | --cpu JSON]

1. ONNX export through export_model.py's code path (optimum, split decoders).
2. Dynamic int8 quantization (onnxruntime quantize_dynamic, signed QInt8 weights, per-tensor,
   the exporter's default range: 7-bit since 2026-12-03, so the bundle committed before then is
   full-range and the next export is not) of
   the encoder and both split decoders; the merged decoder is not used (its weights sit inside
   `If` subgraphs, which quantize_dynamic leaves alone).
3. The held-out evaluation of fp32 and int8 with an independent implementation (optimum's
   ORTModelForSeq2SeqLM and transformers' generate, greedy) through train_default_model.evaluate:
   exact match per task, per written form and per size on all 3,000 held-out numbers (each in the
   next form of its input language in turn), and entity precision/recall/F1 per language on 400
   held-out sentences per language.
4. Bundles int8 if every number task's exact match and every language's entity F1 (in points)
   stays within 1 point of fp32, else fp32, into models/t5-numbers with eval.json, t5serve.json
   and a model card; writes the end-to-end test fixture tests/data/numbers_heldout.json (100
   held-out prompts per task, number tasks in rotated forms, with optimum's outputs, one prompt at
   a time) and the decoding fixture tests/data/numbers_decoding.json.
5. Confidence: the mean log-probability of an answer's generated tokens (EOS included) on
   held-out prompts answered right and on prompts outside what the model knows (numbers of
   1,000,000-99,999,999, misspelled number words, Italian and Portuguese numbers, sentences
   without a number), and the threshold that best separates them; in eval.json and the card.

`--quick` checks the pipeline on a checkpoint mid-training: few numbers, outputs under
.cache/default-export only (models/ and tests/data are not touched).
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numbers_data as D  # noqa: E402
import t5tools  # noqa: E402
import train_default_model as T  # noqa: E402

WORK = t5tools.CACHE / "default-export"
FIXTURE_PER_TASK = 100
# One max_new_tokens for the whole fixture (the Rust test sends it with every prompt): extraction
# answers are longer than any number task's.
FIXTURE_MAX_NEW_TOKENS = max(40, T.ENTITY_MAX_TOKENS)
# Greedy outputs of two correct implementations may differ where the top-2 logits are closer than this.
NEAR_TIE = 1e-3
# int8 is bundled when no number task's exact match and no language's entity F1 (x100) drops more.
INT8_TOLERANCE = 1.0
# Not bundled: the masked cached-step graph serves every later step (with an all-ones mask when no
# request joined late), so optimum's plain one, which the evaluation runs, would only add its size
# and a session per lane. The masked graph measured as fast as the plain one on this model (int8,
# past 12, source 24, one thread: 0.92-0.99x its time at batch 1, 8 and 32, AVX2).
LEFT_OUT = {"decoder_with_past_model.onnx"}
# Held-out sentences per language for the entity figures (eval_sets).
SENTENCES_PER_LANGUAGE = 400


def quantize(src: Path, dst: Path) -> None:
    t5tools.quantize_dir(src, dst, per_channel=False)


def plain_with_past(masked: Path, out: Path) -> None:
    """Writes the masked cached-step graph with its `decoder_attention_mask` input replaced by an
    all-ones mask computed inside the graph ([batch, past length + 1], from the first past key's
    shape): optimum's decoder-with-past interface over the masked graph's own weights and ops, so
    an independent implementation (optimum + transformers) can run the files the server runs."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(masked))
    g = model.graph
    name = "decoder_attention_mask"
    if not any(i.name == name for i in g.input):
        raise SystemExit(f"{masked} has no input {name}")
    kept = [i for i in g.input if i.name != name]
    del g.input[:]
    g.input.extend(kept)
    key = "past_key_values.0.decoder.key"
    one = helper.make_tensor("ones_mask_one", TensorProto.INT64, [1], [1])
    g.initializer.append(one)
    nodes = [
        helper.make_node("Shape", [key], ["ones_mask_batch"], start=0, end=1),
        helper.make_node("Shape", [key], ["ones_mask_past"], start=2, end=3),
        helper.make_node("Add", ["ones_mask_past", "ones_mask_one"], ["ones_mask_len"]),
        helper.make_node("Concat", ["ones_mask_batch", "ones_mask_len"], ["ones_mask_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["ones_mask_shape"], [name], value=helper.make_tensor("v", TensorProto.INT64, [1], [1])),
    ]
    for node in reversed(nodes):
        g.node.insert(0, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def optimum_dir(model_dir: Path) -> Path:
    """`model_dir` itself, or for a directory whose only cached-step graph is the masked one (the
    bundled layout) a scratch directory of links to its files plus plain_with_past's graph."""
    model_dir = Path(model_dir)
    if (model_dir / "decoder_with_past_model.onnx").exists():
        return model_dir
    import atexit
    import tempfile

    view = Path(tempfile.mkdtemp(prefix="t5serve-optimum-view-"))
    atexit.register(shutil.rmtree, view, True)
    for f in model_dir.iterdir():
        (view / f.name).symlink_to(f.resolve())
    plain_with_past(model_dir / t5tools.MASKED_WITH_PAST, view / "decoder_with_past_model.onnx")
    return view


def load_ort(model_dir: Path):
    """optimum's ORTModelForSeq2SeqLM over the split graphs of `model_dir` (optimum_dir)."""
    from optimum.onnxruntime import ORTModelForSeq2SeqLM

    return ORTModelForSeq2SeqLM.from_pretrained(
        str(optimum_dir(model_dir)),
        use_cache=True,
        use_merged=False,
        encoder_file_name="encoder_model.onnx",
        decoder_file_name="decoder_model.onnx",
        decoder_with_past_file_name="decoder_with_past_model.onnx",
        provider="CPUExecutionProvider",
    )


def generate_scored(model, tok, prompts: list[str], batch: int = 250, max_new_tokens: int = 40):
    """Greedy outputs and, per prompt, the smallest top-2 logit margin over its generated steps and
    the mean log-probability (log-softmax over the full vocabulary, as the server reports it) of
    its generated tokens, EOS included; a row cut at max_new_tokens averages all its steps."""
    import torch

    texts, margins, mean_logprobs = [], [], []
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
            logp = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)  # [b, steps]
        seqs = out.sequences[:, 1:]
        texts.extend(tok.batch_decode(seqs, skip_special_tokens=True))
        top2 = torch.stack([torch.topk(s.float(), 2, dim=-1).values for s in out.scores], dim=1)  # [b, steps, 2]
        gaps = top2[..., 0] - top2[..., 1]
        for r in range(seqs.shape[0]):
            ids = seqs[r].tolist()
            n = ids.index(1) + 1 if 1 in ids else len(ids)
            margins.append(float(gaps[r, :n].min()))
            mean_logprobs.append(float(logp[r, :n].float().mean()))
    return texts, margins, mean_logprobs


def generate_with_margins(model, tok, prompts: list[str], batch: int = 250, max_new_tokens: int = 40):
    """Greedy outputs and, per prompt, the smallest top-2 logit margin over its generated steps."""
    texts, margins, _ = generate_scored(model, tok, prompts, batch, max_new_tokens)
    return texts, margins


def evaluate_full(model_dir: Path, tok, numbers: list[int], entity_numbers: list[int] | None) -> dict:
    """train_default_model.evaluate on the ONNX files through optimum: exact match per task, per
    form and per size on `numbers` (rotated forms), entity P/R/F1 per language on sentences of
    `entity_numbers` (none: the number tasks only)."""
    t = time.time()
    tasks = T.TASKS if entity_numbers else T.NUMBER_TASKS
    res = T.evaluate(load_ort(model_dir), tok, numbers, tasks, entity_numbers)
    print(f"  {model_dir.name} ({time.time() - t:.0f}s):\n{T.summary(res)}", flush=True)
    return res


def evaluate(model_dir: Path, tok, numbers: list[int], entity_numbers: list[int] | None = None) -> dict[str, float]:
    """Held-out exact match per task (bench/numbers_accuracy.py's figure)."""
    return evaluate_full(model_dir, tok, numbers, entity_numbers)["exact"]


def int8_verdict(fp32: dict, int8: dict) -> tuple[bool, str, dict]:
    """Whether int8 stays within INT8_TOLERANCE points of fp32 on every number task's exact match
    and every language's entity F1 (x100), the reason in words, and the drops."""
    drops = {task: round(fp32["exact"][task] - int8["exact"][task], 2) for task in T.NUMBER_TASKS if task in fp32["exact"]}
    f1_drops = {
        lang: round(100.0 * (fp32["entities"][lang]["f1"] - int8["entities"][lang]["f1"]), 2)
        for lang in fp32.get("entities", {})
    }
    worst_task = max(drops, key=drops.get)
    worst = drops[worst_task]
    worst_lang = max(f1_drops, key=f1_drops.get) if f1_drops else None
    worst_f1 = f1_drops[worst_lang] if worst_lang else 0.0
    ok = worst <= INT8_TOLERANCE + 1e-9 and worst_f1 <= INT8_TOLERANCE + 1e-9
    said = f"at most {max(worst, 0):.2f} points of exact match ({worst_task})"
    if worst_lang:
        said += f" and {max(worst_f1, 0):.2f} points of entity F1 ({D.LANGS[worst_lang]})"
    if ok:
        reason = f"int8 loses {said} against fp32, within {INT8_TOLERANCE:g}, so the int8 files are bundled."
    else:
        reason = f"int8 loses {said} against fp32, more than {INT8_TOLERANCE:g}, so the fp32 files are bundled."
    return ok, reason, {"exact_match_points": drops, "entity_f1_points": f1_drops}


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
    # /v1/extract (src/tasks/extract.rs ExtractSettings): the model writes `NUMBER: span; NUMBER: span`.
    "extract": {"template": "entities: {text}", "separator": ";", "delimiter": ":"},
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


def heldout_cases(
    model, tok, examples: list[tuple[str, str, str]], max_new_tokens: int = FIXTURE_MAX_NEW_TOKENS
) -> tuple[list[dict], dict[str, float]]:
    """Greedy outputs of `model` for (task, prompt, target) examples, one prompt at a time, with
    each output's smallest top-2 logit margin, and exact match per task.

    One prompt at a time: int8 graphs quantize activations per tensor, so a row's result can
    depend on the other rows of its batch; the server is compared one request at a time."""
    cases = []
    right: dict[str, list[bool]] = {}
    for task, prompt, target in examples:
        [out], [m] = generate_with_margins(model, tok, [prompt], batch=1, max_new_tokens=max_new_tokens)
        cases.append({"task": task, "prompt": prompt, "target": target, "optimum": out, "min_margin": round(m, 6), "near_tie": m < NEAR_TIE})
        right.setdefault(task, []).append(out == target)
    return cases, {task: round(100.0 * sum(r) / len(r), 2) for task, r in right.items()}


def fixture_examples(heldout: list[int], per_task: int) -> tuple[list[tuple[str, str, str]], dict[str, dict[str, int]]]:
    """The fixture's (task, prompt, target): `per_task` held-out numbers per task, number tasks in
    rotated forms, entities one held-out sentence per number; and how many prompts per form
    (entities: per language) each task has."""
    examples, groups = [], {}
    for ti, task in enumerate(T.TASKS):
        for prompt, target, group in T.labelled_examples(fixture_numbers(heldout, ti, per_task), task, "rotate"):
            examples.append((task, prompt, target))
            g = groups.setdefault(task, {})
            g[group] = g.get(group, 0) + 1
    return examples, groups


# ---------------------------------------------------------------------------------------------
# Confidence: in-domain answers against inputs outside what the model knows.

PROMPTS = D.PROMPTS
# Sentences without a number, none from the extraction data (confidence_sets adds its number-less frames).
PLAIN_SENTENCES = {
    "en": [
        "The weather was lovely this morning.",
        "Could you pass me the salt, please?",
        "My sister works at the library.",
        "We are going to the beach on Sunday.",
        "The cat is sleeping on the sofa.",
        "He forgot his umbrella at the office.",
        "This soup needs a little more pepper.",
        "The meeting was moved to the afternoon.",
        "She plays the piano beautifully.",
        "Where did you park the car?",
        "The children are reading in the garden.",
        "I would like a cup of tea.",
        "The river flows through the old town.",
        "Please close the window before you leave.",
        "They painted the kitchen yellow.",
        "Our neighbours have a very friendly dog.",
        "The shop closes early on holidays.",
        "He wrote a long letter to his friend.",
        "The museum is near the central station.",
        "I can't find my keys anywhere.",
        "hello world",
        "thanks a lot",
        "red green blue",
        "the quick brown fox jumps over the lazy dog",
        "What time is it?",
    ],
    "de": [
        "Das Wetter war heute Morgen herrlich.",
        "Kannst du mir bitte das Salz geben?",
        "Meine Schwester arbeitet in der Bibliothek.",
        "Wir fahren am Sonntag an den Strand.",
        "Die Katze schläft auf dem Sofa.",
        "Er hat seinen Regenschirm im Büro vergessen.",
        "Die Suppe braucht noch etwas Pfeffer.",
        "Die Besprechung wurde auf den Nachmittag verlegt.",
        "Sie spielt wunderschön Klavier.",
        "Wo hast du das Auto geparkt?",
        "Die Kinder lesen im Garten.",
        "Ich hätte gern eine Tasse Tee.",
        "Der Fluss fließt durch die Altstadt.",
        "Bitte schließ das Fenster, bevor du gehst.",
        "Guten Morgen",
    ],
}
CONFIDENCE_MAX_NEW_TOKENS = 64  # the server's default_max_new_tokens
CONFIDENCE_IN_DOMAIN = 500
CONFIDENCE_PER_KIND = 100
QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)


def misspell(text: str, rng: random.Random) -> str | None:
    """`text` with one typo in a word of four letters or more (a letter dropped, doubled, swapped
    with the next or replaced; never the first), or None when it has no such word."""
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if sum(c.isalpha() for c in w) >= 4]
    if not long:
        return None
    for _ in range(50):
        i = rng.choice(long)
        w = words[i]
        k = rng.choice([j for j, c in enumerate(w) if c.isalpha() and j > 0])
        op = rng.choice(("drop", "double", "swap", "replace"))
        if op == "drop":
            w2 = w[:k] + w[k + 1 :]
        elif op == "double":
            w2 = w[:k] + w[k] + w[k:]
        elif op == "swap" and k + 1 < len(w) and w[k + 1].isalpha():
            w2 = w[:k] + w[k + 1] + w[k] + w[k + 2 :]
        else:
            w2 = w[:k] + rng.choice("aeiourstnlm") + w[k + 1 :]
        new = " ".join(words[:i] + [w2] + words[i + 1 :])
        if D.language_key(new) != D.language_key(text):
            return new
    return None


def large_words(n: int, lang: str) -> str:
    from num2words import num2words

    text = num2words(n, lang=lang)
    return text.replace(",", "") if lang == "en" else text


def confidence_sets(heldout: list[int], in_domain: int, per_kind: int):
    """(in-domain, out-of-domain) prompts for the confidence figures.

    In-domain: `in_domain` held-out number prompts, spread over the six number tasks, each number
    in the next written form of its input language: (task, prompt, target, form).
    Out-of-domain, `per_kind` of each kind, (kind, task, prompt, target or None where the prompt
    has no right answer): numbers of 1,000,000-99,999,999 (num2words); held-out numbers with one
    misspelled word; numbers in Italian and in Portuguese (num2words lang it/pt; not one that
    reads as a number of the four languages) for every number task; sentences without a number
    for translation and digits prompts."""
    rng = random.Random(D.SEED + 41)
    ind = []
    per_task = math.ceil(in_domain / len(T.NUMBER_TASKS))
    step = max(1, len(heldout) // per_task)
    for ti, task in enumerate(T.NUMBER_TASKS):
        nums = [heldout[(i * step + 7 * ti + 1) % len(heldout)] for i in range(per_task)]
        ind += [(task, p, t, f) for p, t, f in T.labelled_examples(nums, task, "rotate")]
    ood = []
    word_tasks = ["en-de", "de-en", "en-fr", "en-es", "digits"]

    def target(task: str, n: int, text_of) -> str:
        if task == "digits":
            return str(n)
        return text_of(n, task.split("-")[1])

    for i in range(per_kind):
        task = word_tasks[i % len(word_tasks)]
        n = rng.randrange(1_000_000, 100_000_000)
        ood.append(("over_999999", task, PROMPTS[task].format(large_words(n, T.input_lang(task))), target(task, n, large_words)))
    made = 0
    while made < per_kind:
        task = word_tasks[made % len(word_tasks)]
        n = rng.choice(heldout)
        text = misspell(D.words(n, T.input_lang(task)), rng)
        if text is None:
            continue
        ood.append(("misspelled", task, PROMPTS[task].format(text), target(task, n, D.words)))
        made += 1
    for lang, kind in (("it", "italian"), ("pt", "portuguese")):
        made = 0
        while made < per_kind // 2:
            task = T.NUMBER_TASKS[made % len(T.NUMBER_TASKS)]
            n = rng.randrange(0, D.N_SMALL) if rng.random() < 0.5 else rng.randrange(D.N_SMALL, D.N_NUMBERS)
            text = large_words(n, lang)
            if any(D.language_key(text) == D.language_key(D.words(n, l)) for l in D.LANGS) or D.ambiguous_language(text):
                continue
            ood.append((kind, task, PROMPTS[task].format(text), str(n) if task == "digits" else None))
            made += 1
    sentences = [("en", s) for s in PLAIN_SENTENCES["en"]] + [("de", s) for s in PLAIN_SENTENCES["de"]]
    frames = [(l, f) for l in ("en", "de") for split in ("train", "heldout") for f in D.FRAMES[l][split] if "{" not in f]
    pool = sentences + frames
    en_tasks = ["en-de", "en-fr", "en-es", "digits"]
    for i in range(per_kind):
        lang, s = pool[i % len(pool)]
        cycle = i // len(pool)  # a sentence seen again goes to another task
        task = ["de-en", "digits"][cycle % 2] if lang == "de" else en_tasks[(i + cycle) % len(en_tasks)]
        ood.append(("no_number", task, PROMPTS[task].format(s), None))
    return ind, ood


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)
    out = {}
    for q in QUANTILES:
        x = q * (len(v) - 1)
        lo, hi = math.floor(x), math.ceil(x)
        out[f"p{round(q * 100):g}"] = round(v[lo] + (v[hi] - v[lo]) * (x - lo), 4)
    return out


def best_threshold(accept: list[float], reject: list[float]) -> tuple[float, float, float]:
    """The threshold t that maximizes the mean of the fraction of `accept` at or above t and the
    fraction of `reject` below it (balanced accuracy), midway between the two scores it falls
    between; with the two fractions."""
    points = sorted(set(accept) | set(reject))
    cands = [points[0] - 0.01] + [(a + b) / 2 for a, b in zip(points, points[1:])] + [points[-1] + 0.01]
    best = None
    for t in cands:
        a = sum(x >= t for x in accept) / max(1, len(accept))
        r = sum(x < t for x in reject) / max(1, len(reject))
        key = (a + r) / 2
        if best is None or key > best[0] + 1e-12:
            best = (key, t, a, r)
    return best[1], best[2], best[3]


def confidence(model, tok, heldout: list[int], in_domain: int = CONFIDENCE_IN_DOMAIN, per_kind: int = CONFIDENCE_PER_KIND) -> dict:
    """The mean token log-probability of greedy answers (EOS included, one prompt at a time as a
    client sends them) on in-domain prompts answered right and on out-of-domain prompts, their
    quantiles, and the threshold that best separates them (balanced accuracy)."""
    t0 = time.time()
    ind, ood = confidence_sets(heldout, in_domain, per_kind)
    texts, _, scores = generate_scored(model, tok, [p for _, p, _, _ in ind] + [p for _, _, p, _ in ood], batch=1, max_new_tokens=CONFIDENCE_MAX_NEW_TOKENS)
    ind_out, ood_out = list(zip(texts, scores))[: len(ind)], list(zip(texts, scores))[len(ind) :]
    right = [s for (out, s), (_, _, t, _) in zip(ind_out, ind) if out == t]
    wrong = [s for (out, s), (_, _, t, _) in zip(ind_out, ind) if out != t]
    oods = [s for _, s in ood_out]
    threshold, right_above, ood_below = best_threshold(right, oods)
    kinds = {}
    for (kind, task, prompt, target), (out, s) in zip(ood, ood_out):
        k = kinds.setdefault(kind, {"prompts": 0, "below": 0, "with_answer": 0, "answered_right": 0, "scores": [], "examples": []})
        k["prompts"] += 1
        k["below"] += s < threshold
        k["scores"].append(s)
        if target is not None:
            k["with_answer"] += 1
            k["answered_right"] += out == target
        if len(k["examples"]) < 3:
            k["examples"].append({"prompt": prompt, "answer": out, "mean_logprob": round(s, 4)})
    by_kind = {
        kind: {
            "prompts": k["prompts"],
            "below_threshold": round(k["below"] / k["prompts"], 4),
            "median": quantiles(k["scores"])["p50"],
            "with_answer": k["with_answer"],
            "answered_right": k["answered_right"],
            "examples": k["examples"],
        }
        for kind, k in kinds.items()
    }
    res = {
        "measure": "mean log-probability of the greedy answer's generated tokens, EOS included "
        "(log-softmax over the vocabulary; one prompt at a time, max_new_tokens "
        f"{CONFIDENCE_MAX_NEW_TOKENS})",
        "threshold": round(threshold, 4),
        "threshold_token_probability": round(math.exp(threshold), 4),
        "in_domain": {
            "prompts": len(ind),
            "answered_right": len(right),
            "right_at_or_above": round(right_above, 4),
            "quantiles_right": quantiles(right),
            "wrong": len(wrong),
            "wrong_below": round(sum(s < threshold for s in wrong) / len(wrong), 4) if wrong else None,
            "quantiles_wrong": quantiles(wrong),
        },
        "out_of_domain": {
            "prompts": len(ood),
            "below": round(ood_below, 4),
            "quantiles": quantiles(oods),
            "by_kind": by_kind,
        },
        "seconds": round(time.time() - t0),
    }
    print(
        f"confidence ({res['seconds']}s): threshold {res['threshold']} (token p {res['threshold_token_probability']}); "
        f"{len(right)} in-domain right, {100 * right_above:.1f}% at or above; {len(oods)} out-of-domain, "
        f"{100 * ood_below:.1f}% below; " + ", ".join(f"{k} {100 * v['below_threshold']:.0f}%" for k, v in by_kind.items()),
        flush=True,
    )
    return res


# ---------------------------------------------------------------------------------------------
# The model card.


def kernel_section(info: dict) -> str:
    """The card's int8 accuracy per CPU int8 kernel (src/model/cpu.rs), from eval.json's
    `int8_by_kernel`: measurements made after the export, on other machines or under emulation
    (bench/numbers_accuracy.py for the held-out numbers, scripts/cpu_reference.py for the fixture)."""
    runs = info.get("int8_by_kernel")
    if not runs:
        return ""
    tasks = [t for t in T.TASKS if any(t in (run.get(k) or {}) for run in runs for k in ("heldout", "fixture"))]
    lines = [
        "",
        "## int8 by CPU instruction set",
        "",
        "ONNX Runtime picks its u8 x s8 kernel from the CPU (`t5serve cpu` names it; src/model/cpu.rs).",
        "Kernels that sum in 32 bits (AMX, AVX-512 VNNI, AVX-VNNI) compute the integer products exactly, so",
        "they give the same figures; AVX2 alone and AVX-512 without VNNI add pairs of products in 16 bits with",
        "saturation, and their figures differ. Exact match (%), greedy, measured as above:",
        "",
        "| int8 kernel | prompts | " + " | ".join(f"`{t}`" for t in tasks) + " |",
        "|---|---|" + "---|" * len(tasks),
    ]
    heldout_label = f"{info['eval'].get('heldout_numbers', 'all'):,} held-out per task" if isinstance(info["eval"].get("heldout_numbers"), int) else "held-out"
    for run in runs:
        for key, label in (("heldout", heldout_label), ("fixture", f"fixture, {FIXTURE_PER_TASK} per task")):
            if run.get(key):
                lines.append(f"| {run['int8_kernel']} | {label} | " + " | ".join(_pct(run[key].get(t)) for t in tasks) + " |")
    lines.append("")
    lines += [f"- {run['int8_kernel']}: {run['measured']}" for run in runs]
    return "\n".join(lines) + "\n"


def _pct(v, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


FORM_NOTES = {
    "canonical": "num2words' text (the targets' form)",
    "first_cap": "first letter capital",
    "title": "every word capitalised",
    "upper": "capitals",
    "commas": "num2words' commas",
    "no_and": "without \"and\"",
    "extra_and": "\"and\" after \"thousand\"",
    "hyphen_space": "hyphens as spaces",
    "hyphen_none": "hyphens dropped",
    "hyphens_all": "hyphens everywhere (1990 spelling)",
    "no_et": "\"-un\", \"-onze\" without \"et\"",
    "spaced": "a space after \"tausend\"",
    "no_ein": "\"hundert\", \"tausend\" without \"ein\"",
    "no_y": "without \"y\"",
    "no_accents": "accents dropped",
    "full_stop": "a full stop",
    "extra_spaces": "extra spaces",
    "mixed": "several of these at once",
}
FORM_EXAMPLE_NUMBERS = (3457, 1121, 71, 21, 16, 1100)


def form_examples() -> dict[str, dict[str, str]]:
    """One example of each accepted form per language (numbers_data.form_text), on the first of
    FORM_EXAMPLE_NUMBERS whose text the form changes."""
    out: dict[str, dict[str, str]] = {}
    for lang in D.LANGS:
        for form in D.FORMS[lang]:
            text = None
            for seed in range(50):
                for n in FORM_EXAMPLE_NUMBERS:
                    t = D.form_text(n, lang, form, D.stable_rng("card", lang, form, seed))
                    if form == "mixed":  # a mix that shows: a capital and a change beyond case and spacing
                        ok = t != t.lower() and " ".join(t.lower().split()).rstrip(".") != D.words(n, lang)
                    else:
                        ok = form == "canonical" or t != D.words(n, lang)
                    if ok:
                        text = t
                        break
                if text is not None:
                    break
            out.setdefault(lang, {})[form] = text if text is not None else D.words(FORM_EXAMPLE_NUMBERS[0], lang)
    return out


def all_forms() -> list[str]:
    seen: list[str] = []
    for lang in D.LANGS:
        seen += [f for f in D.FORMS[lang] if f not in seen]
    return [f for f in seen if f != "mixed"] + ["mixed"]


def training_precision(ckpt: Path, args: dict) -> str:
    """bf16 autocast or fp32, from the run's --dtype, or with `auto` from its printed log."""
    dtype = args.get("dtype")
    if dtype == "fp32":
        return "fp32"
    if dtype == "bf16":
        return "bf16 autocast"
    out = ckpt / "train.out"
    if out.exists():
        m = re.search(r"^autocast: (.*)$", out.read_text(errors="replace"), re.M)
        if m:
            return "bf16 autocast" if m.group(1).startswith("bf16") else "fp32"
    return "bf16 autocast where the CPU has bf16 instructions, else fp32 (`--dtype auto`)"


def this_cpu() -> dict:
    """This machine's CPU (train_log.json does not record one: the export runs where training ran)."""
    import os

    name, flags = "unknown CPU", []
    try:
        info = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
        name = m.group(1).strip() if m else name
        have = set(re.search(r"^flags\s*:\s*(.*)$", info, re.M).group(1).split())
        flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in have]
    except (OSError, AttributeError):
        pass
    return {"model": name, "cores": os.cpu_count(), "flags": flags}


def write_card(dest: Path, info: dict) -> None:
    ev = info["eval"]
    bundled = info["bundled"]
    det = ev["detail"]
    size_row = lambda task, key: _pct(det[bundled]["by_size"].get(task, {}).get(key))  # noqa: E731
    rows = "\n".join(
        f"| `{task}` | {_pct(ev['fp32'].get(task))} | {_pct(ev['int8'].get(task))} | {size_row(task, '0-9999')} | "
        f"{size_row(task, '10000+')} | {_pct(ev['fixture'].get(task), 0)} |"
        for task in T.TASKS
    )
    form_rows = []
    for form in all_forms():
        cells = [_pct(det[bundled]["by_form"].get(task, {}).get(form)) for task in T.NUMBER_TASKS]
        form_rows.append(f"| {form} | " + " | ".join(cells) + " |")
    ent_rows = []
    for lang, name in D.LANGS.items():
        f, i = det["fp32"]["entities"].get(lang), det["int8"]["entities"].get(lang)
        if not f or not i:
            continue
        ent_rows.append(
            f"| {name} | {i['sentences']} | {i['gold_spans']} | {f['precision']:.3f} | {f['recall']:.3f} | {f['f1']:.3f} | "
            f"{i['precision']:.3f} | {i['recall']:.3f} | {i['f1']:.3f} | {i['exact']:.1f} |"
        )
    examples = form_examples()
    forms_table = "\n".join(
        f"| {form} | {FORM_NOTES.get(form, '')} | "
        + " | ".join(f"`{json.dumps(examples[lang][form], ensure_ascii=False)}`" if form in D.FORMS[lang] else "–" for lang in D.LANGS)
        + " |"
        for form in all_forms()
    )
    frames = {l: (len(D.FRAMES[l]["train"]), len(D.FRAMES[l]["heldout"])) for l in D.LANGS}
    n_frames = sum(a + b for a, b in frames.values())
    n_held_frames = sum(b for _, b in frames.values())
    small, large = D.heldout_split()
    n = ev["heldout_numbers"]
    numbers_said = f"all {n:,}" if n == len(small) + len(large) else f"{n:,} (of the {len(small) + len(large):,})"

    conf = info["confidence"]
    cin, cout = conf["in_domain"], conf["out_of_domain"]
    qkeys = list(cin["quantiles_right"])
    q_rows = [
        "| answers | count | " + " | ".join(qkeys) + " |",
        "|---|---|" + "---|" * len(qkeys),
        f"| in-domain, right | {cin['answered_right']} | " + " | ".join(f"{cin['quantiles_right'][k]:.3f}" for k in qkeys) + " |",
    ]
    if cin["wrong"]:
        q_rows.append(f"| in-domain, wrong | {cin['wrong']} | " + " | ".join(f"{cin['quantiles_wrong'][k]:.3f}" for k in qkeys) + " |")
    q_rows.append(f"| out of domain | {cout['prompts']} | " + " | ".join(f"{cout['quantiles'][k]:.3f}" for k in qkeys) + " |")
    kind_names = {
        "over_999999": "numbers of 1,000,000-99,999,999 (num2words), translation and digits",
        "misspelled": "held-out numbers with one misspelled word, translation and digits",
        "italian": "numbers in Italian (num2words), every number task",
        "portuguese": "numbers in Portuguese (num2words), every number task",
        "no_number": "sentences without a number, translation and digits",
    }
    kind_rows = "\n".join(
        f"| {kind_names.get(k, k)} | {v['prompts']} | {v['median']:.3f} | {100 * v['below_threshold']:.0f}% | "
        + (f"{v['answered_right']} of {v['with_answer']}" if v["with_answer"] else "–")
        + " |"
        for k, v in cout["by_kind"].items()
    )
    kind_examples = "\n".join(
        f"- `{v['examples'][0]['prompt']}` -> `{v['examples'][0]['answer']}` ({v['examples'][0]['mean_logprob']:.2f})"
        for v in cout["by_kind"].values()
        if v["examples"]
    )
    wrong_line = (
        f" Of the {cin['wrong']} in-domain prompts answered wrongly, {100 * cin['wrong_below']:.0f}% fall below it too."
        if cin["wrong"]
        else ""
    )

    train = info["training"]
    args = train.get("args") or {}
    shape = info["shape"]
    prev = info.get("previous_phase")
    phases = ""
    if prev:
        origin = (
            f" (the model committed in {prev['recovered_commit']}, whose weights `scripts/bundle_checkpoint.py` "
            f"recovers from its {'int8' if prev.get('recovered_int8') else 'fp32'} files)"
            if prev.get("recovered_commit")
            else ""
        )
        tasks = f" on the tasks {', '.join(prev['tasks'])}" if prev.get("tasks") else ""
        earlier, p = [], prev.get("previous_phase")
        while isinstance(p, dict):
            earlier.insert(0, f"{p['steps']} steps (lr {p['lr']}, {p['train_minutes']} minutes)")
            p = p.get("previous_phase")
        before = f"phases of {', then '.join(earlier)}, then " if earlier else "a first phase, "
        phases = (
            f"{before}{prev['steps']} steps (lr {prev['lr']}, {prev['train_minutes']} minutes){tasks}{origin}; "
            "then this phase, from those weights: "
        )
    cpu = train["cpu"]
    cpu_text = f"a {cpu['cores']}-core {cpu['model']}" + (f" ({', '.join(cpu['flags'])})" if cpu["flags"] else "")
    weights = dict(T.TASK_WEIGHTS)
    if args.get("entity_weight") is not None:
        weights["entities"] = args["entity_weight"]
    per_step = ""
    if train.get("train_s_per_step") is not None:
        per_step = f" ({train['train_s_per_step']} s per step, {train.get('cpu_s_per_step')} CPU-seconds)"
    card = f"""# t5-numbers: the bundled default model of t5serve

A small T5 (d_model {shape['d_model']}, {shape['num_heads']} heads, {shape['num_layers']} encoder + {shape['num_decoder_layers']} decoder layers, d_ff {shape['d_ff']}, ReLU feed-forward,
{train.get('params_m', '?')}M parameters), trained {"from scratch and then in phases (see Training)" if prev else "from scratch"} on this project's machines by
`scripts/train_default_model.py`. It uses the original T5 tokenizer (32,100-piece SentencePiece
Unigram vocabulary, model vocab 32128, tied embeddings), so it is a drop-in T5: any T5 client,
exporter or server handles it the same way.

Bundled files: **{bundled}** ({info['size_mb']} MB). {info['bundled_reason']} The cached decoder
steps run `decoder_with_past_masked.onnx` (optimum's cached-step graph with a decoder
self-attention mask input), so new requests join a running batch; optimum's own
`decoder_with_past_model.onnx`, which the evaluation below runs, computes the same and is left out.

## Data

The numbers 0–999,999 written out by the `num2words` package (PyPI, 0.5.14) in English, German,
French and Spanish. English drops num2words' commas ("four thousand two hundred"); two num2words
slips above 20,000 are corrected (German 101,000 "einhunderteintausend", Spanish 31,000 "treinta
y un mil"). Answers are always this canonical text; inputs are written as people write them, in
these forms (`scripts/numbers_data.py` `FORMS`; one example each):

| form | what changes | English | German | French | Spanish |
|---|---|---|---|---|---|
{forms_table}

Training draws numbers by size rather than uniformly (99% of 0–999,999 have six digits): a third
from 0–9999 by digit count, the rest a × 1000 + b with a of 10–999 and b often 0 or under 100
("twelve thousand", "forty thousand and six"). Held out, never seen in training by any task: {len(small):,} numbers of 0–9999 (seed {T.SEED}, the
first model's draw) and {len(large):,} of 10,000–999,999. Extraction sentences come from {n_frames} sentence frames
in the four languages, some without a number; {n_held_frames} of them ({', '.join(f'{b} {D.LANGS[l]}' for l, (_, b) in frames.items())}) are
held out, and the numbers in a sentence are written in the forms above (without full stop, extra
spaces or mixes, which belong to the sentence).

## Tasks and prompts

| task | prompt | answer |
|---|---|---|
| `en-de` | `translate English to German: four thousand two hundred` | `viertausendzweihundert` |
| `de-en` | `translate German to English: viertausendzweihundert` | `four thousand two hundred` |
| `en-fr` | `translate English to French: four thousand two hundred` | `quatre mille deux cents` |
| `en-es` | `translate English to Spanish: four thousand two hundred` | `cuatro mil doscientos` |
| `language` | `language: quatre mille deux cents` | `English` / `German` / `French` / `Spanish` |
| `digits` | `digits: Four Hundred and Twelve Thousand, Five Hundred.` | `412500` |
| `entities` | `entities: They sold twenty-one tickets in Three hours.` | `NUMBER: twenty-one; NUMBER: Three` |
| `entities` | `entities: Someone left the door open tonight.` | (empty: no number) |

`t5serve.json` sets these prompts for `/v1/classify`, `/v1/translate` and `/v1/extract` (spans
as written in the sentence, `;` between entities, `:` after the type).

## Held-out evaluation

Greedy decoding with optimum's `ORTModelForSeq2SeqLM` and transformers' `generate` on the exported
files (`train_default_model.evaluate`). Number tasks: {numbers_said} held-out numbers per task,
each written in the next form of its input language in turn (a form that leaves a number's text
as it is passes to the next); language identification: each number in one of the four languages,
balanced. `entities`: {ev['entity_sentences'] // 4:,} held-out sentences per language (held-out frames, held-out
numbers), exact match of the whole answer. The last column is the {ev.get('fixture_per_task', FIXTURE_PER_TASK)}-prompt-per-task end-to-end test
fixture (`tests/data/numbers_heldout.json`, rotated forms too), which the server must reproduce.

Exact match (%):

| task | fp32 | int8 | {bundled}, 0–9999 | {bundled}, 10,000+ | fixture ({bundled}) |
|---|---|---|---|---|---|
{rows}

Exact match (%) per written form of the input, {bundled} (the bundled files):

| form | """ + " | ".join(f"`{t}`" for t in T.NUMBER_TASKS) + f""" |
|---|""" + "---|" * len(T.NUMBER_TASKS) + f"""
{chr(10).join(form_rows)}

Entity extraction, per language: precision, recall and F1 of the spans (a span counts when its
text is exactly the gold span's), and exact match (%) of the whole answer:

| language | sentences | gold spans | fp32 P | fp32 R | fp32 F1 | int8 P | int8 R | int8 F1 | int8 exact |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(ent_rows)}
{kernel_section(info)}
## Confidence: inputs outside what the model knows

The model always answers; an input it does not know (a number past 999,999, a typo, another
language, a sentence with no number) gets an answer too, usually a wrong one. Its confidence
tells them apart: ask `/v1/generate` for `"parameters": {{"details": true}}`, and take the mean
of the `logprob` of the answer's tokens in `details.tokens` (the end-of-sequence token, `special:
true`, included), greedy decoding. On held-out data ({bundled}, one prompt at a time,
max_new_tokens {CONFIDENCE_MAX_NEW_TOKENS}): {cin['prompts']} held-out number prompts over the six number tasks in
rotated forms, of which {cin['answered_right']} were answered right, against {cout['prompts']} prompts out of the domain.
Quantiles of the mean token log-probability:

{chr(10).join(q_rows)}

The threshold that best separates the two (the mean of the two fractions on the right side is
highest) is **{conf['threshold']:.3f}** (a geometric-mean token probability of {conf['threshold_token_probability']:.3f}): treat an
answer whose mean token log-probability is below it as outside what the model knows.
{100 * cin['right_at_or_above']:.1f}% of the right in-domain answers are at or above it, {100 * cout['below']:.1f}% of the out-of-domain
answers below it.{wrong_line} Per kind of input:

| out-of-domain prompts | count | median | below the threshold | answered right |
|---|---|---|---|---|
{kind_rows}

For example (mean token log-probability in brackets):

{kind_examples}

int8 figures move a little with the other rows of a batch (activation scales are computed per
batch), so a served answer's confidence can differ slightly from these one-prompt figures.

## Training

`python scripts/train_default_model.py train` then `python scripts/export_default_model.py`:
{phases}{train['steps']} steps of batch {train['batch']}, AdamW (0.9, 0.98, weight decay {args.get('weight_decay', '?')}), lr {train['lr']} with
{args.get('warmup', '?')} warmup steps and cosine decay, {train['precision']} on {args.get('threads') or train.get('threads') or '?'} CPU threads, {train['train_minutes']} minutes{per_step}
on {cpu_text}. {"Batches mix the tasks" if args.get("mixed_batches") else "Each batch holds one task (little padding)"}; tasks are drawn with
weights {', '.join(f'{t} {w:g}' for t, w in weights.items())}. Every example is drawn afresh (numbers,
forms, sentences). What made it learn, and how the loss is computed:

- The relative position biases (T5's only source of word order) train at {args.get('position_lr_scale', 30):g} times the base
  learning rate. At the base rate they stay near their small initial values for thousands of
  steps and the model swaps digits ("three thousand two hundred" -> "deux mille trois cent");
  with it, the first model (0–9999) passed 95% held-out exact match on every task in about a
  thousand steps.
- Target pieces are cut per part of a number word (digits one by one, German compounds at
  their parts, hyphenated words at the hyphen), each part always into the same pieces of the
  T5 vocabulary. The tokenizer's own cut of a whole word depends on its neighbours ("4231" is
  `▁42 31`, "1987" a single piece seen for no other number). The decoded text is the same string;
  the model emits these pieces and any T5 tokenizer decodes them.
- Extraction targets are cut as the tokenizer cuts the sentence: each word of a span into the
  pieces it has in the input, where words are cut one by one, so writing a span is copying the
  input's pieces one by one (`▁N UM BER :` then the span's own pieces, `;` between entities).
  Cutting German compounds at their parts there, as translation targets are, made the model
  re-segment what it copies (entity F1 0.24 at step 1500 in a pilot run).
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


def load_train_info(ckpt: Path) -> dict:
    """train_log.json of the run: a dict when it finished, only the log (a list) mid-training."""
    train_info = json.loads((ckpt / "train_log.json").read_text())
    if isinstance(train_info, list):  # a mid-training checkpoint has only the log
        last = train_info[-1] if train_info else {}
        train_info = {
            "log": train_info,
            "steps": last.get("step", 0),
            "batch": "?",
            "lr": "?",
            "train_minutes": last.get("minutes", "?"),
            "train_s_per_step": last.get("train_s_per_step"),
            "cpu_s_per_step": last.get("cpu_s_per_step"),
        }
    return train_info


def main(
    quick: bool = False, ckpt: Path | None = None, cpu: dict | None = None, numbers: int | None = None, sentences: int = SENTENCES_PER_LANGUAGE
) -> None:
    """`quick` checks the pipeline on a checkpoint mid-training: few numbers, scratch outputs."""
    import torch

    started = time.time()
    torch.set_num_threads(2)
    ckpt = ckpt or T.CKPT
    if not (ckpt / "config.json").exists():
        raise SystemExit(f"no checkpoint in {ckpt}: run `train_default_model.py train` first")
    cpu = cpu if cpu is not None else t5tools.cpu_report()  # what the server says of this CPU (the fixtures record it)
    tok = t5tools.load_t5_tokenizer()
    _, heldout = T.split_numbers()
    # Every held-out number (or `numbers` of them, half small, half large) and `sentences` per
    # language; quick: 60 numbers, 10 sentences.
    eval_numbers, entity_numbers = T.eval_sets(60, 10) if quick else T.eval_sets(numbers, sentences)
    fp32 = WORK / "fp32"
    int8 = WORK / "int8"
    if fp32.exists():
        shutil.rmtree(fp32)
    t = time.time()
    t5tools.export_onnx(str(ckpt), fp32)
    t5tools.export_masked_with_past(str(ckpt), fp32)
    quantize(fp32, int8)
    print(f"fp32 {dir_mb(fp32)} MB, int8 {dir_mb(int8)} MB ({time.time() - t:.0f}s)", flush=True)

    t = time.time()
    res = {"fp32": evaluate_full(fp32, tok, eval_numbers, entity_numbers), "int8": evaluate_full(int8, tok, eval_numbers, entity_numbers)}
    print(f"evaluated in {time.time() - t:.0f}s", flush=True)
    use_int8, reason, drops = int8_verdict(res["fp32"], res["int8"])
    chosen = int8 if use_int8 else fp32
    bundled = "int8" if use_int8 else "fp32"
    print(reason, flush=True)

    # The end-to-end fixture: optimum's greedy outputs on the bundled files, on this CPU.
    model = load_ort(chosen)
    t = time.time()
    examples, fixture_groups = fixture_examples(heldout, 10 if quick else FIXTURE_PER_TASK)
    longest = max(len(T.target_ids(tok, tg, T.target_lang(task), check=False)) for task, _, tg in examples)
    if longest > FIXTURE_MAX_NEW_TOKENS:
        print(f"warning: a fixture target has {longest} tokens, more than max_new_tokens {FIXTURE_MAX_NEW_TOKENS}", flush=True)
    cases, fixture_acc = heldout_cases(model, tok, examples)
    print(f"fixture: {len(cases)} prompts ({time.time() - t:.0f}s), longest target {longest} tokens, exact match {fixture_acc}", flush=True)

    conf = confidence(model, tok, heldout, *((60, 12) if quick else (CONFIDENCE_IN_DOMAIN, CONFIDENCE_PER_KIND)))

    dest = WORK / "quick-bundle" if quick else T.MODEL_DIR
    fixture = WORK / "quick-fixture.json" if quick else T.FIXTURE
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in chosen.iterdir():
        if f.name not in LEFT_OUT:
            shutil.copy(f, dest / f.name)
    train_info = load_train_info(ckpt)
    hf = __import__("transformers").T5ForConditionalGeneration.from_pretrained(ckpt)
    cfg = hf.config
    n_params = sum(p.numel() for p in hf.parameters())
    train_info["params_m"] = round(n_params / 1e6, 1)
    train_args = train_info.get("args") or {}
    train_info["precision"] = training_precision(ckpt, train_args)
    train_info["cpu"] = train_info.get("cpu") or this_cpu()
    detail = {k: {key: v for key, v in r.items() if key != "exact"} for k, r in res.items()}
    info = {
        "bundled": bundled,
        "bundled_reason": reason,
        "int8_drop": drops,
        "size_mb": dir_mb(dest),
        "eval": {
            "fp32": res["fp32"]["exact"],
            "int8": res["int8"]["exact"],
            "fixture": fixture_acc,
            "heldout_numbers": len(eval_numbers),
            "entity_sentences": len(entity_numbers),
            "fixture_per_task": len(cases) // len(T.TASKS),
            "by": "optimum ORTModelForSeq2SeqLM + transformers generate (greedy), train_default_model.evaluate: "
            "number tasks in rotated forms, entity P/R/F1 per language",
            "detail": detail,
        },
        "confidence": conf,
        "sizes_mb": {"fp32": dir_mb(fp32), "int8": dir_mb(int8)},
        "shape": {k: getattr(cfg, k) for k in ("d_model", "num_heads", "num_layers", "num_decoder_layers", "d_ff")},
        "training": {
            k: train_info.get(k)
            for k in ("steps", "batch", "lr", "train_minutes", "train_s_per_step", "cpu_s_per_step", "threads", "params_m", "precision", "cpu", "args", "heldout_pytorch")
        },
        "previous_phase": {
            k: train_info.get("previous_phase", {}).get(k)
            for k in (
                "steps",
                "batch",
                "lr",
                "train_minutes",
                "heldout_pytorch",
                "tasks",
                "recovered_from",
                "recovered_int8",
                "recovered_commit",
                "previous_phase",
            )
        }
        if isinstance(train_info.get("previous_phase"), dict)
        else None,
    }
    (dest / "eval.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    (dest / "t5serve.json").write_text(json.dumps(TASKS_JSON, indent=1) + "\n")
    write_card(dest, info)
    fixture.write_text(
        json.dumps(
            {
                "generated_by": "optimum ORTModelForSeq2SeqLM + transformers generate (greedy, max_new_tokens "
                f"{FIXTURE_MAX_NEW_TOKENS}, one prompt at a time) on models/t5-numbers ({bundled}); "
                "scripts/export_default_model.py. Number tasks: held-out numbers in rotated written forms; "
                "entities: one held-out sentence per held-out number",
                "near_tie_margin": NEAR_TIE,
                "cpu": cpu,
                "max_new_tokens": FIXTURE_MAX_NEW_TOKENS,
                "exact_match": fixture_acc,
                "prompts_per_form": fixture_groups,
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
    summary = {k: v for k, v in info.items() if k not in ("confidence",)}
    summary["eval"] = {k: v for k, v in info["eval"].items() if k != "detail"}
    summary["training"] = {k: v for k, v in info["training"].items() if k not in ("args", "heldout_pytorch")}
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    print(f"written: {dest} (card, eval.json), {fixture}, {decoding}; {time.time() - started:.0f}s in all", flush=True)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="check the pipeline on a mid-training checkpoint")
    p.add_argument("--ckpt", type=Path, help=f"checkpoint to export (default {T.CKPT})")
    p.add_argument("--numbers", type=int, help="held-out numbers per task in the tables (default: all 3,000)")
    p.add_argument("--sentences", type=int, default=SENTENCES_PER_LANGUAGE, help="held-out sentences per language")
    t5tools.add_cpu_flags(p)
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
        main(
            quick=a.quick,
            ckpt=a.ckpt,
            cpu=t5tools.cpu_from_args(a) if (a.cpu or a.binary) else None,
            numbers=a.numbers,
            sentences=a.sentences,
        )
