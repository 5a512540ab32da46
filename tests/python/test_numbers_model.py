"""The bundled model (models/t5-numbers) through HTTP on the real binary, against answers computed
here, never by the server or the model:

- every number task on numbers written as people write them (scripts/numbers_data.py's forms:
  capitals, commas, missing or extra "and", hyphens dropped or spaced, a full stop, extra
  spaces...), the answer being num2words' canonical text (digits: the number itself; language:
  the language's name);
- the inputs the issue found answered wrongly by the first model, word for word;
- `POST /v1/extract` on sentences built from held-out frames with held-out numbers: the gold
  spans are the number words put into the sentence, so entity precision, recall and F1 (exact
  span match) need no model; every located entity's offsets slice the input (counted in Unicode
  characters, as Python indexes a str) to exactly its text; alone and 32 per request agree.

Held-out numbers (`numbers_data.heldout_split`) and held-out frames are never seen in training by
any task. The model card (models/t5-numbers/README.md) reports the full held-out tables; these
tests draw their own samples, with a fixed seed.

Bars. The card's bar is 99% exact match per task and form on the held-out numbers; here each
task and form is a sample of FORM_SAMPLE numbers, and the bar is one miss in that sample
(FORM_BAR): the int8 kernels differ between CPUs (AVX2 saturates where VNNI and AMX do not), and
on the first model they moved top-2 margins by up to 0.42 but no greedy answer of 600; a second
miss would mean the model, not the kernel, is below the card's bar. Entity F1 must be at least
0.95 per language, as the issue asks.

Scores alone and in a batch: the activations' int8 scales are computed over the whole batch
(dynamic quantization), so a sentence's token log-probabilities move with its batch-mates;
SCORE_ATOL bounds that, the answers themselves must be equal.

    python tests/python/test_numbers_model.py [path/to/t5serve]
"""

import json
import random
import sys
import unittest
import urllib.request
from pathlib import Path

from tokenizers import Tokenizer

from server import ROOT, Server

sys.path.insert(0, str(ROOT / "scripts"))
import numbers_data as D  # noqa: E402

BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/t5serve"
MODEL = "models/t5-numbers"
FORM_SAMPLE = 60
FORM_BAR = FORM_SAMPLE - 1
SENTENCES_PER_LANGUAGE = 60
F1_BAR = 0.95
SCORE_ATOL = 0.05
BATCH = 32
TASK_PROMPTS = D.PROMPTS


def post(base, path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def answer(task, n, lang):
    """num2words' answer to a number task (lang: the input's language for `language`)."""
    if task == "digits":
        return str(n)
    if task == "language":
        return D.LANGS[lang]
    return D.words(n, task.split("-")[1])


def input_langs(task):
    return list(D.LANGS) if task == "language" else ["en" if task == "digits" else task.split("-")[0]]


class NumbersModel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(BINARY, model=MODEL)
        cls.tokenizer = Tokenizer.from_file(str(ROOT / MODEL / "tokenizer.json"))
        cls.tokenizer.no_padding()
        cls.tokenizer.no_truncation()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def generate(self, prompts):
        out = []
        for i in range(0, len(prompts), BATCH):
            r = post(self.server.base, "/v1/generate", {"inputs": prompts[i : i + BATCH], "parameters": {"max_new_tokens": 48}})
            out += [x["generated_text"] for x in r]
        return out

    def extract(self, texts):
        out = []
        for i in range(0, len(texts), BATCH):
            out += post(self.server.base, "/v1/extract", {"inputs": texts[i : i + BATCH]})
        return out

    def round_trips(self, text):
        enc = self.tokenizer.encode(text)
        return self.tokenizer.token_to_id("<unk>") not in enc.ids and self.tokenizer.decode(enc.ids) == text

    def test_the_issues_inputs(self):
        """The inputs the first model answered confidently and wrongly."""
        cases = [
            ("en-de", "three thousand, four hundred and fifty-seven", 3457),
            ("digits", "three thousand, four hundred and fifty-seven", 3457),
            ("en-de", "Three Thousand Four Hundred and Fifty-Seven", 3457),
            ("digits", "Three Thousand Four Hundred and Fifty-Seven", 3457),
            ("digits", "Three thousand four hundred and fifty-seven.", 3457),
            ("en-de", "fifty seven", 57),
            ("digits", "fifty seven", 57),
            ("en-fr", "twelve thousand", 12000),
            ("en-es", "twelve thousand", 12000),
        ]
        got = self.generate([TASK_PROMPTS[t].format(text) for t, text, _ in cases])
        for (task, text, n), g in zip(cases, got):
            self.assertEqual(g, answer(task, n, "en"), f"{task}: {text!r}")

    def test_every_task_in_every_form(self):
        """FORM_SAMPLE held-out numbers per task and form (numbers_data.FORMS of the input's
        language; a form that leaves a number's text as it is passes to another number)."""
        small, large = D.heldout_split()
        rng = random.Random(20261202)
        cells, prompts, answers = [], [], []
        for task in TASK_PROMPTS:
            for lang in input_langs(task):
                for form in D.FORMS[lang]:
                    k = 0
                    while k < FORM_SAMPLE:
                        n = rng.choice(small) if rng.random() < 0.5 else rng.choice(large)
                        text = D.form_text(n, lang, form, D.stable_rng("test", task, n, lang, form))
                        if (form != "canonical" and text == D.words(n, lang)) or not self.round_trips(text.strip()):
                            continue
                        if task == "language" and D.ambiguous_language(text):
                            continue
                        cells.append((task, lang, form, text))
                        prompts.append(TASK_PROMPTS[task].format(text))
                        answers.append(answer(task, n, lang))
                        k += 1
        got = self.generate(prompts)
        right, misses = {}, {}
        for cell, g, a in zip(cells, got, answers):
            key = cell[:3]
            right[key] = right.get(key, 0) + (g == a)
            if g != a:
                misses.setdefault(key, []).append((cell[3], g, a))
        low = {k: (v, misses[k]) for k, v in right.items() if v < FORM_BAR}
        print(f"forms: {len(right)} task/form cells of {FORM_SAMPLE}; misses in {len(misses)} cells", flush=True)
        self.assertEqual(low, {}, f"cells under {FORM_BAR}/{FORM_SAMPLE} (input, answer, num2words)")

    def heldout_sentences(self):
        """SENTENCES_PER_LANGUAGE sentences per language from the held-out frames (in turn), with
        held-out numbers, and their gold spans."""
        small, large = D.heldout_split()
        rng = random.Random(20261203)
        out = []
        for lang in D.LANGS:
            frames = D.FRAMES[lang]["heldout"]
            for i in range(SENTENCES_PER_LANGUAGE):
                numbers = iter([rng.choice(small) if rng.random() < 0.6 else rng.choice(large) for _ in range(200)])
                prompt, _, spans = D.entity_example(
                    lang, D.stable_rng("test-entities", lang, i), frame=frames[i % len(frames)], numbers=numbers, round_trip=self.round_trips
                )
                out.append((lang, prompt.removeprefix(D.ENTITY_PROMPT), spans))
        return out

    def test_extraction_on_heldout_sentences(self):
        sentences = self.heldout_sentences()
        results = self.extract([s for _, s, _ in sentences])
        tally = {}
        for (lang, text, gold), r in zip(sentences, results):
            got = [e["text"] for e in r["entities"]]
            for e in r["entities"]:
                self.assertEqual(e["type"], "NUMBER", r)
                if e["located"]:
                    self.assertEqual(text[e["start"] : e["end"]], e["text"], f"offsets of {e} in {text!r}")
                else:
                    self.assertIsNone(e["start"], r)
            tp = sum(min(gold.count(s), got.count(s)) for s in set(got))
            t = tally.setdefault(lang, [0, 0, 0])
            t[0], t[1], t[2] = t[0] + tp, t[1] + len(got), t[2] + len(gold)
        for lang, (tp, n_got, n_gold) in tally.items():
            p, r = tp / max(1, n_got), tp / max(1, n_gold)
            f1 = 2 * p * r / max(1e-9, p + r)
            print(f"entities {lang}: precision {p:.3f} recall {r:.3f} F1 {f1:.3f} ({n_gold} spans)", flush=True)
            self.assertGreaterEqual(f1, F1_BAR, lang)

    def test_extraction_alone_and_32_per_request_agree(self):
        sentences = [s for _, s, _ in self.heldout_sentences()][::4][:BATCH]
        together = post(self.server.base, "/v1/extract", {"inputs": sentences})
        for text, batched in zip(sentences, together):
            alone = post(self.server.base, "/v1/extract", {"inputs": text})
            strip = lambda r: [{k: v for k, v in e.items() if k != "score"} for e in r["entities"]]  # noqa: E731
            self.assertEqual(strip(alone), strip(batched), text)
            self.assertEqual(alone["output"], batched["output"], text)
            for a, b in zip(alone["entities"], batched["entities"]):
                self.assertAlmostEqual(a["score"], b["score"], delta=SCORE_ATOL, msg=text)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
