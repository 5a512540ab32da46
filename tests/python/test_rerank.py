"""Reranking on the real binary: TEI's `POST /rerank` over plain HTTP, and the Cohere-shaped
`POST /v1/rerank` (and `/v2/rerank`) through Cohere's own client from PyPI (`cohere`, pointed at
the server with `base_url`), on the tiny test model and the bundled model.

The reference is independent of the server: onnxruntime over the model's own `encoder_model.onnx`
and `decoder_model.onnx`, in Python, on the model's rerank input (monoT5's `Query: {query}
Document: {document} Relevant:` unless its t5serve.json sets another) tokenized by Hugging Face's
`tokenizers`; the score is the first decoder step's logit of the true word's first token
(`▁true`) minus the false word's (`▁false`) (raw), or its sigmoid. The bundled numbers model
never learned relevance: its t5serve.json compares `English` with `German` after
`{query}: {document}`, so the query `language` ranks documents by how English they read.

Tolerances: the tiny model is float32; a pair scored alone or in a padded batch goes through
different matrix shapes, so logits agree to float rounding (measured: a few 1e-7): 1e-5. The
bundled model is int8 with dynamic quantization, whose activation scales are computed over the
whole batch; so its reference runs the same batch as the server (documents of equal token length:
one batch without padding, as the server's length buckets form it), on this CPU, and agrees as
closely as the float model.

    python tests/python/test_rerank.py [path/to/t5serve]
"""

import json
import sys
import unittest
import urllib.error
import urllib.request
from pathlib import Path

import cohere
import numpy as np
import onnxruntime
from tokenizers import Tokenizer

from server import ROOT, Server

BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/t5serve"
ATOL = 1e-5
MONOT5 = {"template": "Query: {query} Document: {document} Relevant:", "true_word": "true", "false_word": "false"}


def post(base, path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def post_error(base, path, body):
    try:
        post(base, path, body)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    raise AssertionError(f"{path} accepted {body}")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


class Rerank:
    """The tests every served model passes; subclasses name the model and its documents."""

    MODEL_DIR = ""
    QUERY = ""
    DOCUMENTS = []

    @classmethod
    def setUpClass(cls):
        cls.server = Server(BINARY, model=cls.MODEL_DIR, args=("--max-input-tokens", "64"))
        cls.tokenizer = Tokenizer.from_file(str(ROOT / cls.MODEL_DIR / "tokenizer.json"))
        cls.tokenizer.no_padding()
        cls.tokenizer.no_truncation()
        d = ROOT / cls.MODEL_DIR
        cls.encoder = onnxruntime.InferenceSession(str(d / "encoder_model.onnx"))
        cls.decoder = onnxruntime.InferenceSession(str(d / "decoder_model.onnx"))
        tasks = d / "t5serve.json"
        cls.settings = dict(MONOT5, **(json.loads(tasks.read_text()).get("rerank", {}) if tasks.exists() else {}))
        cls.true_id = cls.tokenizer.token_to_id("\u2581" + cls.settings["true_word"])
        cls.false_id = cls.tokenizer.token_to_id("\u2581" + cls.settings["false_word"])
        cls.cohere = cohere.Client(base_url=cls.server.base, api_key="unused")
        cls.model = json.loads(urllib.request.urlopen(cls.server.base + "/v1/models").read())["data"][0]["id"]

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    @classmethod
    def pair(cls, query, document):
        return cls.settings["template"].replace("{query}", query).replace("{document}", document)

    def raw_reference(self, query, documents):
        """logit(▁true) - logit(▁false) at the first decoder step, the pairs as one padded batch."""
        ids = [self.tokenizer.encode(self.pair(query, d)).ids for d in documents]
        n = max(len(i) for i in ids)
        input_ids = np.zeros((len(ids), n), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for row, i in enumerate(ids):
            input_ids[row, : len(i)] = i
            mask[row, : len(i)] = 1
        hidden = self.encoder.run(["last_hidden_state"], {"input_ids": input_ids, "attention_mask": mask})[0]
        start = np.zeros((len(ids), 1), dtype=np.int64)
        feeds = {"input_ids": start, "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
        logits = self.decoder.run(["logits"], feeds)[0][:, 0, :].astype(np.float64)
        return logits[:, self.true_id] - logits[:, self.false_id]

    def test_the_two_words_are_single_tokens(self):
        self.assertEqual(self.tokenizer.encode(self.settings["true_word"]).ids, [self.true_id, 1])
        self.assertEqual(self.tokenizer.encode(self.settings["false_word"]).ids, [self.false_id, 1])

    def test_tei_rerank_equals_onnxruntime(self):
        raw = np.array([self.raw_reference(self.QUERY, [d])[0] for d in self.DOCUMENTS])
        for i, d in enumerate(self.DOCUMENTS):
            alone = post(self.server.base, "/rerank", {"query": self.QUERY, "texts": [d], "raw_scores": True})
            self.assertEqual([r["index"] for r in alone], [0])
            self.assertAlmostEqual(alone[0]["score"], raw[i], delta=ATOL)
        batch_raw = self.raw_reference(self.QUERY, self.DOCUMENTS)
        got = post(self.server.base, "/rerank", {"query": self.QUERY, "texts": self.DOCUMENTS, "return_text": True})
        order = sorted(range(len(self.DOCUMENTS)), key=lambda i: -batch_raw[i])
        self.assertEqual([r["index"] for r in got], order, "best first")
        self.assertEqual([r["text"] for r in got], [self.DOCUMENTS[i] for i in order])
        np.testing.assert_allclose([r["score"] for r in got], sigmoid(batch_raw[order]), atol=ATOL)
        # Raw scores are the logit differences, in the same order.
        raw_got = post(self.server.base, "/rerank", {"query": self.QUERY, "texts": self.DOCUMENTS, "raw_scores": True})
        np.testing.assert_allclose([r["score"] for r in raw_got], batch_raw[order], atol=ATOL)
        self.assertNotIn("text", raw_got[0])

    def test_cohere_client_ranks_as_onnxruntime(self):
        batch_raw = self.raw_reference(self.QUERY, self.DOCUMENTS)
        order = sorted(range(len(self.DOCUMENTS)), key=lambda i: -batch_raw[i])
        r = self.cohere.rerank(model=self.model, query=self.QUERY, documents=self.DOCUMENTS)
        self.assertEqual([x.index for x in r.results], order)
        np.testing.assert_allclose([x.relevance_score for x in r.results], sigmoid(batch_raw[order]), atol=ATOL)
        self.assertIsNone(r.results[0].document, "return_documents defaults to false")
        top = self.cohere.rerank(model=self.model, query=self.QUERY, documents=self.DOCUMENTS, top_n=2, return_documents=True)
        self.assertEqual([x.index for x in top.results], order[:2])
        self.assertEqual([x.document.text for x in top.results], [self.DOCUMENTS[i] for i in order[:2]])
        # Documents as {"text": ...} objects (Cohere's older form, and Jina's) rank the same.
        objects = post(self.server.base, "/v1/rerank", {"query": self.QUERY, "documents": [{"text": d} for d in self.DOCUMENTS]})
        self.assertEqual([x["index"] for x in objects["results"]], order)
        # Cohere's current client posts to /v2/rerank.
        v2 = cohere.ClientV2(base_url=self.server.base, api_key="unused")
        r2 = v2.rerank(model=self.model, query=self.QUERY, documents=self.DOCUMENTS, top_n=3)
        self.assertEqual([x.index for x in r2.results], order[:3])

    def test_a_long_document_is_cut_at_its_end(self):
        # "house" repeated: any cut at a token's edge leaves k words. The reference finds the
        # largest k whose pair fits in max_input_tokens (64) and scores that document.
        words = ["house"] * 100
        fits = max(k for k in range(1, 100) if len(self.tokenizer.encode(self.pair(self.QUERY, " ".join(words[:k]))).ids) <= 64)
        expected = self.raw_reference(self.QUERY, [" ".join(words[:fits])])[0]
        long = " ".join(words)
        code, body = post_error(self.server.base, "/rerank", {"query": self.QUERY, "texts": [long]})
        self.assertEqual(code, 422)
        self.assertIn("max_input_tokens", body["error"])
        got = post(self.server.base, "/rerank", {"query": self.QUERY, "texts": [long], "truncate": True, "raw_scores": True})
        self.assertAlmostEqual(got[0]["score"], expected, delta=ATOL)
        # Cohere's API cuts long documents without being asked.
        r = self.cohere.rerank(model=self.model, query=self.QUERY, documents=[long])
        self.assertAlmostEqual(r.results[0].relevance_score, float(sigmoid(expected)), delta=ATOL)

    def test_bad_requests_are_clear_errors(self):
        base = self.server.base
        for path, body, needle in [
            ("/rerank", {"query": "", "texts": ["a"]}, "query"),
            ("/rerank", {"query": "q", "texts": []}, "texts"),
            ("/rerank", {"query": "q", "texts": ["a", " "]}, "texts[1]"),
            ("/rerank", {"query": "q", "texts": ["a"], "raw": True}, "raw"),
            ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
            ("/v1/rerank", {"query": "q", "documents": [{"body": "a"}]}, "documents"),
            ("/v1/rerank", {"query": "q", "documents": ["a"] * 33}, "max_client_batch_size"),
            ("/v1/rerank", {"query": "q", "documents": ["a"], "model": "nope"}, "nope"),
        ]:
            code, err = post_error(base, path, body)
            self.assertIn(code, (400, 404, 422), (path, body))
            self.assertIn(needle, err["error"], (path, body, err))


class TinyModel(Rerank, unittest.TestCase):
    MODEL_DIR = "tests/data/tiny-t5"
    QUERY = "what is a house"
    DOCUMENTS = [
        "a house is a building",
        "cats eat fish",
        "the sky is blue today",
        "houses have doors and windows",
        "seven",
    ]


class BundledModel(Rerank, unittest.TestCase):
    MODEL_DIR = "models/t5-numbers"
    QUERY = "language"
    # Each pair has the same number of tokens, so the server encodes them as one batch without
    # padding, as the reference does (the int8 model's activation scales span the batch).
    DOCUMENTS = ["vierhundertzwei", "twenty-one", "sechzig", "ninety", "siebzig", "eighteen"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        lens = {len(cls.tokenizer.encode(cls.pair(cls.QUERY, d)).ids) for d in cls.DOCUMENTS}
        assert len(lens) == 1, f"documents must tokenize to one length, got {lens}"


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
