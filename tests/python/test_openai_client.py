"""The official `openai` client against t5serve's OpenAI-compatible routes, on the real binary,
over the tiny test model and the bundled model: models, completions, chat (plain, streamed,
through a chat template), embeddings, and every error class the client raises.

References, each independent of the route under test:
- completions and chat: `/v1/generate` (whose greedy decoding the Rust parity tests check against
  transformers) for the same input and parameters; exact expected texts where bias forces them;
- chat templates: Jinja itself (`jinja2`, as transformers renders templates);
- embeddings: onnxruntime over the model's own `encoder_model.onnx`, in Python, with the input
  ids from Hugging Face's `tokenizers` and mean pooling + L2 normalization in numpy.

    python tests/python/test_openai_client.py [path/to/t5serve]
"""

import json
import shutil
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

import jinja2
import numpy as np
import onnxruntime
import openai
from tokenizers import Tokenizer

from server import ROOT, Server

BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/t5serve"

# The encoder's outputs of one row alone and of the same row in a padded batch of 32 go through
# different matrix shapes (ONNX Runtime's GEMM blocks differently), so they agree to float
# rounding, not bit for bit: after pooling and normalization, components of size ~0.05 differ by
# a few 1e-7 on the float models (measured). 1e-5 leaves 10x room, and is far below any real
# error (a wrong pooling or a padded position counted moves components by 1e-2 or more).
EMBED_ATOL = 1e-5
# The int8 bundled model quantizes activations per batch (dynamic quantization): a row's scale
# depends on the others in its batch, so the batch-of-32 case gets its own, derived bound. The
# reference runs the same graph on this CPU, alone: it must agree as closely as the float model.
EMBED_ATOL_INT8_BATCH = 2e-2


def post(base, path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


class Routes:
    """The tests every served model passes; subclasses name the model."""

    MODEL_DIR = ""
    PROMPTS = []

    @classmethod
    def setUpClass(cls):
        cls.server = Server(BINARY, model=cls.MODEL_DIR)
        cls.client = openai.OpenAI(base_url=cls.server.base + "/v1", api_key="unused", max_retries=0)
        cls.model = cls.client.models.list().data[0].id
        cls.tokenizer = Tokenizer.from_file(str(ROOT / cls.MODEL_DIR / "tokenizer.json"))

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def generate(self, inputs, **parameters):
        return post(self.server.base, "/v1/generate", {"inputs": inputs, "parameters": parameters})

    def test_models_list_names_the_served_model(self):
        before = int(time.time())
        models = list(self.client.models.list())
        self.assertEqual([m.id for m in models], [Path(self.MODEL_DIR).name])
        self.assertEqual((models[0].object, models[0].owned_by), ("model", "t5serve"))
        self.assertLessEqual(models[0].created, before + 1)
        self.assertGreater(models[0].created, before - 600)

    def test_greedy_completions_equal_generate(self):
        out = self.client.completions.create(model=self.model, prompt=self.PROMPTS, max_tokens=12, temperature=0)
        self.assertEqual(out.object, "text_completion")
        self.assertEqual([c.index for c in out.choices], list(range(len(self.PROMPTS))))
        prompt_tokens = completion_tokens = 0
        for prompt, choice in zip(self.PROMPTS, out.choices):
            ref = self.generate(prompt, max_new_tokens=12)
            self.assertEqual(choice.text, ref["generated_text"])
            self.assertEqual(choice.finish_reason, {"eos": "stop", "length": "length"}[ref["finish_reason"]])
            prompt_tokens += ref["usage"]["input_tokens"]
            completion_tokens += ref["usage"]["generated_tokens"]
        self.assertEqual(
            (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens),
            (prompt_tokens, completion_tokens, prompt_tokens + completion_tokens),
        )
        # Absent temperature is the model's default: greedy for T5.
        again = self.client.completions.create(model=self.model, prompt=self.PROMPTS[0], max_tokens=12)
        self.assertEqual(again.choices[0].text, out.choices[0].text)

    def test_token_id_prompts_equal_text_prompts(self):
        ids = [self.tokenizer.encode(p).ids for p in self.PROMPTS[:2]]
        by_text = self.client.completions.create(model=self.model, prompt=self.PROMPTS[:2], max_tokens=8)
        by_ids = self.client.completions.create(model=self.model, prompt=ids, max_tokens=8)
        one = self.client.completions.create(model=self.model, prompt=ids[0], max_tokens=8)
        self.assertEqual([c.text for c in by_ids.choices], [c.text for c in by_text.choices])
        self.assertEqual(one.choices[0].text, by_text.choices[0].text)
        self.assertEqual(by_ids.usage, by_text.usage)

    def test_sampled_choices_are_prompt_major_and_seeded(self):
        kw = dict(model=self.model, max_tokens=10, temperature=1.0, seed=1234)
        both = self.client.completions.create(prompt=self.PROMPTS[:2], n=3, **kw)
        self.assertEqual([c.index for c in both.choices], list(range(6)))
        for p in range(2):
            alone = self.client.completions.create(prompt=self.PROMPTS[p], n=3, **kw)
            self.assertEqual([c.text for c in both.choices[p * 3 : p * 3 + 3]], [c.text for c in alone.choices])
        again = self.client.completions.create(prompt=self.PROMPTS[:2], n=3, **kw)
        self.assertEqual([c.text for c in again.choices], [c.text for c in both.choices])
        # Choice j is the seed plus j: the first choice of n=3 is the only choice of n=1.
        single = self.client.completions.create(prompt=self.PROMPTS[0], **kw)
        self.assertEqual(single.choices[0].text, both.choices[0].text)

    def test_best_of_returns_the_most_likely_samples(self):
        kw = dict(model=self.model, prompt=self.PROMPTS[0], max_tokens=8, temperature=1.0, seed=99)
        pool = self.client.completions.create(n=4, logprobs=0, **kw)
        best = self.client.completions.create(n=2, best_of=4, **kw)
        ranked = sorted(pool.choices, key=lambda c: -sum(c.logprobs.token_logprobs))
        self.assertEqual([c.text for c in best.choices], [c.text for c in ranked[:2]])
        self.assertIsNone(best.choices[0].logprobs)
        self.assertEqual(best.usage.completion_tokens, pool.usage.completion_tokens)

    def test_stop_sequences_cut_the_text(self):
        full = self.client.completions.create(model=self.model, prompt=self.PROMPTS[0], max_tokens=16).choices[0]
        text = full.text
        self.assertGreaterEqual(len(text), 4, text)
        stop = text[2:4]
        cut = self.client.completions.create(model=self.model, prompt=self.PROMPTS[0], max_tokens=16, stop=stop)
        # As OpenAI: the text ends before the stop sequence.
        self.assertEqual(cut.choices[0].text, text[: text.index(stop)])
        self.assertEqual(cut.choices[0].finish_reason, "stop")
        streamed = self.client.completions.create(
            model=self.model, prompt=self.PROMPTS[0], max_tokens=16, stop=stop, stream=True
        )
        self.assertEqual("".join(ch.choices[0].text for ch in streamed), cut.choices[0].text)
        chat = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": self.PROMPTS[0]}], max_tokens=16, stop=stop
        )
        self.assertEqual(chat.choices[0].message.content, cut.choices[0].text)
        several = self.client.completions.create(
            model=self.model, prompt=self.PROMPTS[0], max_tokens=16, stop=["\x00never", stop, "\x01no", "\x02none"]
        )
        self.assertEqual(several.choices[0].text, cut.choices[0].text)

    def test_length_finish(self):
        # A bias of -100 on EOS (id 1) makes the row run to max_tokens.
        out = self.client.completions.create(
            model=self.model, prompt=self.PROMPTS[0], max_tokens=3, logit_bias={"1": -100}
        )
        self.assertEqual(out.choices[0].finish_reason, "length")
        self.assertEqual(out.usage.completion_tokens, 3)

    def test_logit_bias_forces_a_token(self):
        word = self.tokenizer.token_to_id("▁the")
        out = self.client.completions.create(
            model=self.model, prompt=self.PROMPTS[0], max_tokens=4, logit_bias={str(word): 100}
        )
        self.assertEqual(out.choices[0].text, "the the the the")
        # The frequency penalty lowers it by 2 per use: 100 - 2 * 50 leaves other tokens a chance
        # only much later, but the presence of the parameter must not change the first step.
        pen = self.client.completions.create(
            model=self.model, prompt=self.PROMPTS[0], max_tokens=1, logit_bias={str(word): 100}, frequency_penalty=2
        )
        self.assertEqual(pen.choices[0].text, "the")

    def test_logprobs_legacy_object(self):
        out = self.client.completions.create(model=self.model, prompt=self.PROMPTS[0], max_tokens=6, logprobs=3)
        c = out.choices[0]
        lp = c.logprobs
        ref = self.generate(self.PROMPTS[0], max_new_tokens=6, details=True, top_n_tokens=3)
        ref_tokens = ref["details"]["tokens"]
        self.assertEqual("".join(lp.tokens), c.text)
        self.assertEqual(len(lp.tokens), out.usage.completion_tokens)
        self.assertEqual(lp.tokens, [t["text"] for t in ref_tokens])
        np.testing.assert_allclose(lp.token_logprobs, [t["logprob"] for t in ref_tokens], atol=1e-6)
        offsets = np.cumsum([0] + [len(t) for t in lp.tokens[:-1]]).tolist()
        self.assertEqual(lp.text_offset, offsets)
        for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
            self.assertTrue(3 <= len(top) <= 4, top)
            # Greedy: the chosen token is the most likely one.
            self.assertAlmostEqual(max(top.values()), chosen, places=5)
            self.assertLessEqual(sum(np.exp(list(top.values()))), 1.0 + 1e-5)

    def test_echo_prepends_the_prompt(self):
        plain = self.client.completions.create(model=self.model, prompt=self.PROMPTS[0], max_tokens=5)
        echo = self.client.completions.create(
            model=self.model, prompt=self.PROMPTS[0], max_tokens=5, echo=True, logprobs=1
        )
        c = echo.choices[0]
        self.assertEqual(c.text, self.PROMPTS[0] + plain.choices[0].text)
        self.assertEqual("".join(c.logprobs.tokens), c.text)
        generated = plain.usage.completion_tokens
        self.assertTrue(all(v is None for v in c.logprobs.token_logprobs[:-generated]))
        self.assertTrue(all(v is not None for v in c.logprobs.token_logprobs[-generated:]))

    def test_streamed_completion_joins_to_the_plain_one(self):
        plain = self.client.completions.create(model=self.model, prompt=self.PROMPTS[1], max_tokens=10)
        chunks = list(
            self.client.completions.create(
                model=self.model, prompt=self.PROMPTS[1], max_tokens=10, stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
        self.assertEqual(text, plain.choices[0].text)
        finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        self.assertEqual(finishes, [plain.choices[0].finish_reason])
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage, plain.usage)

    def test_streams_of_several_prompts_and_choices_join_to_the_plain_answer(self):
        kw = dict(model=self.model, prompt=self.PROMPTS[:2], n=2, max_tokens=8, temperature=1.0, seed=77)
        plain = self.client.completions.create(**kw)
        chunks = list(self.client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
        texts, finishes = {}, {}
        for ch in chunks[:-1]:
            (c,) = ch.choices
            texts[c.index] = texts.get(c.index, "") + c.text
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
        self.assertEqual([texts[i] for i in range(4)], [c.text for c in plain.choices])
        self.assertEqual([finishes[i] for i in range(4)], [c.finish_reason for c in plain.choices])
        self.assertEqual(chunks[-1].usage, plain.usage)
        messages = [{"role": "user", "content": self.PROMPTS[1]}]
        chat = self.client.chat.completions.create(model=self.model, messages=messages, n=3, temperature=1.0, seed=5, max_tokens=8)
        stream = self.client.chat.completions.create(
            model=self.model, messages=messages, n=3, temperature=1.0, seed=5, max_tokens=8, stream=True,
            stream_options={"include_usage": True},
        )
        content, roles = {}, {}
        chunks = list(stream)
        for ch in chunks[:-1]:
            (c,) = ch.choices
            if c.delta.role:
                self.assertNotIn(c.index, content, "the role comes first")
                roles[c.index] = c.delta.role
            content[c.index] = content.get(c.index, "") + (c.delta.content or "")
        self.assertEqual(roles, {0: "assistant", 1: "assistant", 2: "assistant"})
        self.assertEqual([content[i] for i in range(3)], [c.message.content for c in chat.choices])
        self.assertEqual(chunks[-1].usage, chat.usage)

    def test_chat_plain_and_streamed(self):
        messages = [{"role": "system", "content": "Answer."}, {"role": "user", "content": self.PROMPTS[2]}]
        ref = self.generate("Answer.\n" + self.PROMPTS[2], max_new_tokens=12)
        out = self.client.chat.completions.create(model=self.model, messages=messages, max_completion_tokens=12)
        self.assertEqual(out.object, "chat.completion")
        self.assertEqual(out.choices[0].message.role, "assistant")
        self.assertEqual(out.choices[0].message.content, ref["generated_text"])
        self.assertEqual(out.usage.prompt_tokens, ref["usage"]["input_tokens"])
        stream = self.client.chat.completions.create(
            model=self.model, messages=messages, max_tokens=12, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        deltas = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        self.assertEqual(deltas, out.choices[0].message.content)
        self.assertEqual([ch.choices[0].finish_reason for ch in chunks if ch.choices][-1], out.choices[0].finish_reason)
        self.assertEqual(chunks[-1].usage, out.usage)
        # Content as text parts is the same message.
        parts = [{"role": "user", "content": [{"type": "text", "text": self.PROMPTS[2][:5]}, {"type": "text", "text": self.PROMPTS[2][5:]}]}]
        by_parts = self.client.chat.completions.create(model=self.model, messages=parts, max_tokens=12)
        self.assertEqual(by_parts.choices[0].message.content, self.generate(self.PROMPTS[2], max_new_tokens=12)["generated_text"])

    def test_chat_logprobs(self):
        messages = [{"role": "user", "content": self.PROMPTS[0]}]
        out = self.client.chat.completions.create(
            model=self.model, messages=messages, max_tokens=5, logprobs=True, top_logprobs=2
        )
        content = out.choices[0].logprobs.content
        self.assertEqual("".join(t.token for t in content), out.choices[0].message.content)
        for t in content:
            self.assertEqual(len(t.top_logprobs), 2)
            self.assertAlmostEqual(t.top_logprobs[0].logprob, t.logprob, places=5)
            self.assertEqual(bytes(t.bytes).decode(), t.token)

    def reference_embeddings(self, texts):
        session = onnxruntime.InferenceSession(str(ROOT / self.MODEL_DIR / "encoder_model.onnx"))
        out = []
        for text in texts:
            ids = np.array([self.tokenizer.encode(text).ids], dtype=np.int64)
            hidden = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
            v = hidden[0].astype(np.float64).mean(axis=0)
            out.append(v / np.linalg.norm(v))
        return np.array(out)

    def test_embeddings_equal_onnxruntime(self):
        texts = [f"{self.PROMPTS[i % len(self.PROMPTS)]} {'and more ' * (i % 7)}".strip() for i in range(32)]
        ref = self.reference_embeddings(texts)
        # The client asks for base64 by default and decodes it.
        alone = [self.client.embeddings.create(model=self.model, input=t).data[0].embedding for t in texts[:4]]
        np.testing.assert_allclose(np.array(alone), ref[:4], atol=EMBED_ATOL)
        floats = self.client.embeddings.create(model=self.model, input=texts[0], encoding_format="float")
        self.assertEqual(floats.data[0].embedding, alone[0])
        batch = self.client.embeddings.create(model=self.model, input=texts)
        self.assertEqual([d.index for d in batch.data], list(range(32)))
        np.testing.assert_allclose(np.array([d.embedding for d in batch.data]), ref, atol=self.BATCH_ATOL)
        tokens = sum(len(self.tokenizer.encode(t).ids) for t in texts)
        self.assertEqual((batch.usage.prompt_tokens, batch.usage.total_tokens), (tokens, tokens))
        ids = self.client.embeddings.create(model=self.model, input=[self.tokenizer.encode(texts[0]).ids])
        np.testing.assert_allclose(ids.data[0].embedding, alone[0], atol=0)
        short = self.client.embeddings.create(model=self.model, input=texts[0], dimensions=8).data[0].embedding
        expected = ref[0][:8] / np.linalg.norm(ref[0][:8])
        np.testing.assert_allclose(short, expected, atol=EMBED_ATOL * 10)

    def test_tei_embed_equals_onnxruntime_and_v1_embeddings(self):
        # TEI's POST /embed: the same rows as /v1/embeddings, in TEI's shape (a list of lists).
        texts = [f"{self.PROMPTS[i % len(self.PROMPTS)]} {'and more ' * (i % 5)}".strip() for i in range(32)]
        ref = self.reference_embeddings(texts)
        alone = [post(self.server.base, "/embed", {"inputs": t}) for t in texts[:3]]
        self.assertEqual([len(a) for a in alone], [1, 1, 1])
        np.testing.assert_allclose(np.array([a[0] for a in alone]), ref[:3], atol=EMBED_ATOL)
        batch = post(self.server.base, "/embed", {"inputs": texts})
        np.testing.assert_allclose(np.array(batch), ref, atol=self.BATCH_ATOL)
        v1 = self.client.embeddings.create(model=self.model, input=texts, encoding_format="float")
        # The same f32 values (each route prints them its own way: shortest f32, or as f64).
        same = np.array([d.embedding for d in v1.data], dtype=np.float32)
        np.testing.assert_array_equal(np.array(batch, dtype=np.float32), same, "/embed and /v1/embeddings agree")
        # normalize: false gives the mean itself.
        session = onnxruntime.InferenceSession(str(ROOT / self.MODEL_DIR / "encoder_model.onnx"))
        ids = np.array([self.tokenizer.encode(texts[0]).ids], dtype=np.int64)
        hidden = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        raw = post(self.server.base, "/embed", {"inputs": texts[0], "normalize": False})[0]
        np.testing.assert_allclose(raw, hidden[0].astype(np.float64).mean(axis=0), atol=EMBED_ATOL * 10)

    def test_tei_embed_truncates_as_asked(self):
        long = " ".join(["seven hundred and seventy-seven"] * 200)
        with self.assertRaises(urllib.error.HTTPError) as e:
            post(self.server.base, "/embed", {"inputs": long})
        self.assertEqual(e.exception.code, 422)
        ids = self.tokenizer.encode(long).ids
        limit = 512
        self.assertGreater(len(ids), limit)
        session = onnxruntime.InferenceSession(str(ROOT / self.MODEL_DIR / "encoder_model.onnx"))

        def reference(kept):
            x = np.array([kept], dtype=np.int64)
            v = session.run(["last_hidden_state"], {"input_ids": x, "attention_mask": np.ones_like(x)})[0][0].mean(axis=0)
            return v / np.linalg.norm(v)

        # Right (TEI's default): the first tokens and the closing EOS; Left: the last tokens.
        right = post(self.server.base, "/embed", {"inputs": long, "truncate": True})[0]
        np.testing.assert_allclose(right, reference(ids[: limit - 1] + ids[-1:]), atol=EMBED_ATOL * 10)
        left = post(self.server.base, "/embed", {"inputs": long, "truncate": True, "truncation_direction": "Left"})[0]
        np.testing.assert_allclose(left, reference(ids[-limit:]), atol=EMBED_ATOL * 10)

    def metric(self, name):
        with urllib.request.urlopen(self.server.base + "/metrics", timeout=30) as r:
            lines = r.read().decode().splitlines()
        values = [float(l.split()[-1]) for l in lines if l.startswith(name + " ") or l.startswith(name + "{")]
        self.assertTrue(values, f"{name} is not in /metrics")
        return sum(values)

    def test_embedding_rows_run_the_encoder_only(self):
        # A step is counted just after it runs, so the last step of an earlier request may be
        # counted after its answer arrived: wait until the count is still.
        steps = self.metric("t5serve_decode_step_duration_seconds_count")
        for _ in range(100):
            time.sleep(0.05)
            now = self.metric("t5serve_decode_step_duration_seconds_count")
            if now == steps:
                break
            steps = now
        encoder_runs = self.metric("t5serve_encoder_duration_seconds_count")
        generated = self.metric("t5serve_generated_tokens_total")
        self.client.embeddings.create(model=self.model, input=self.PROMPTS)
        self.assertEqual(self.metric("t5serve_decode_step_duration_seconds_count"), steps)
        self.assertEqual(self.metric("t5serve_generated_tokens_total"), generated)
        self.assertGreater(self.metric("t5serve_encoder_duration_seconds_count"), encoder_runs)

    def test_errors_raise_the_matching_exceptions(self):
        with self.assertRaises(openai.NotFoundError) as e:
            self.client.completions.create(model="gpt-nope", prompt="x")
        self.assertEqual(e.exception.body["code"], "model_not_found")
        self.assertEqual(e.exception.body["param"], "model")
        cases = [
            dict(temperature=3),
            dict(suffix="after"),
            dict(max_tokens=0),
            dict(logprobs=6),
            dict(stop=["a", "b", "c", "d", "e"]),
            dict(n=2, best_of=1),
            dict(n=1, best_of=2, stream=True),
            dict(logit_bias={"99999999": 1}),
            dict(extra_body={"no_such_field": 1}),
        ]
        for kw in cases:
            with self.subTest(kw=kw), self.assertRaises(openai.BadRequestError) as e:
                self.client.completions.create(model=self.model, prompt="x", **kw)
            self.assertEqual(e.exception.status_code, 400)
            self.assertEqual(e.exception.body["type"], "invalid_request_error")
            self.assertTrue(e.exception.body["message"])
        for kw in [dict(tools=[{"type": "function", "function": {"name": "f"}}]), dict(response_format={"type": "json_object"})]:
            with self.subTest(kw=kw), self.assertRaises(openai.BadRequestError):
                self.client.chat.completions.create(model=self.model, messages=[{"role": "user", "content": "x"}], **kw)
        with self.assertRaises(openai.BadRequestError):
            self.client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
            )
        with self.assertRaises(openai.BadRequestError):
            self.client.embeddings.create(model=self.model, input=[])


class TinyModel(Routes, unittest.TestCase):
    MODEL_DIR = "tests/data/tiny-t5"
    PROMPTS = ["translate English to German: hello", "one two three", "summarize: the cat sat on the mat"]
    BATCH_ATOL = EMBED_ATOL


class BundledModel(Routes, unittest.TestCase):
    MODEL_DIR = "models/t5-numbers"
    PROMPTS = [
        "translate English to German: forty-two",
        "translate English to French: one hundred and seven",
        "translate German to English: dreiundzwanzig",
    ]
    BATCH_ATOL = EMBED_ATOL_INT8_BATCH


TEMPLATE = (
    "{% for m in messages %}{% if m.role == 'system' %}[{{ m.content | trim }}] "
    "{% elif m.role == 'user' %}Q: {{ m.content }}{% if not loop.last %} {% endif %}"
    "{% else %}A: {{ m.content }}{{ eos_token }} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %} A:{% endif %}"
)


class ChatTemplate(unittest.TestCase):
    """A model directory whose t5serve.json has a chat template: the server's rendering equals
    Jinja's for the same messages."""

    @classmethod
    def setUpClass(cls):
        cls.dir = Path(tempfile.mkdtemp()) / "tiny-chat"
        shutil.copytree(ROOT / "tests/data/tiny-t5", cls.dir)
        (cls.dir / "t5serve.json").write_text(json.dumps({"chat_template": TEMPLATE}))
        cls.server = Server(BINARY, model=str(cls.dir))
        cls.client = openai.OpenAI(base_url=cls.server.base + "/v1", api_key="unused", max_retries=0)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.dir.parent)

    def test_messages_go_through_the_template(self):
        messages = [
            {"role": "system", "content": " Be brief. "},
            {"role": "user", "content": "one two"},
            {"role": "assistant", "content": "three"},
            {"role": "user", "content": "four five"},
        ]
        rendered = jinja2.Environment().from_string(TEMPLATE).render(
            messages=messages, add_generation_prompt=True, eos_token="</s>", bos_token=""
        )
        ref = post(self.server.base, "/v1/generate", {"inputs": rendered, "parameters": {"max_new_tokens": 10}})
        out = self.client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=10)
        self.assertEqual(out.choices[0].message.content, ref["generated_text"])
        self.assertEqual(out.usage.prompt_tokens, ref["usage"]["input_tokens"])


KEY = "sesame-open-up-please"


class Limits(unittest.TestCase):
    """401 with the API key, 429 at max_concurrent_requests."""

    @classmethod
    def setUpClass(cls):
        cls.server = Server(BINARY, args=("--api-key", KEY, "--max-concurrent-requests", "1"))

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def client(self, key):
        return openai.OpenAI(base_url=self.server.base + "/v1", api_key=key, max_retries=0)

    def test_wrong_key_is_an_authentication_error(self):
        for route in [
            lambda c: c.completions.create(model="tiny-t5", prompt="x"),
            lambda c: c.chat.completions.create(model="tiny-t5", messages=[{"role": "user", "content": "x"}]),
            lambda c: c.embeddings.create(model="tiny-t5", input="x"),
        ]:
            with self.assertRaises(openai.AuthenticationError) as e:
                route(self.client("wrong"))
            self.assertEqual(e.exception.body["code"], "invalid_api_key")
        self.assertEqual(self.client(KEY).completions.create(model="tiny-t5", prompt="x", max_tokens=1).object, "text_completion")

    def test_a_full_server_is_a_rate_limit_error_with_retry_after(self):
        good = self.client(KEY)
        # EOS banned: the stream holds the only admission permit for 512 tokens.
        stream = good.completions.create(
            model="tiny-t5", prompt="x", max_tokens=512, logit_bias={"1": -100}, stream=True
        )
        first = next(iter(stream))
        self.assertEqual(first.object, "text_completion")
        try:
            with self.assertRaises(openai.RateLimitError) as e:
                good.completions.create(model="tiny-t5", prompt="y", max_tokens=1)
            self.assertEqual(e.exception.response.headers["retry-after"], "1")
            self.assertEqual(e.exception.body["code"], "rate_limit_exceeded")
        finally:
            stream.close()


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
