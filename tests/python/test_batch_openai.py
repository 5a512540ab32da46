"""`t5serve batch` on OpenAI's batch file format, checked with the official `openai` package.

An input file in the format OpenAI's Batch API takes (one `{"custom_id", "method", "url",
"body"}` per line, for /v1/completions, /v1/chat/completions and /v1/embeddings) is answered by
`t5serve batch` on the bundled model. Every output line must be OpenAI's batch output record
(`id`, `custom_id`, `response` with `status_code`, `request_id` and `body`, `error`), each body
must load into the `openai` package's own response models (`Completion`, `ChatCompletion`,
`CreateEmbeddingResponse`), a failed line's `error` into its `BatchError`, and the answers must
be the ones the server gives the `openai` client for the same requests: the same texts, and the
same embeddings to float rounding (1e-6: the server is asked one request at a time, as the batch
job runs with `--read-ahead 1`, so both run the same batches; see tests/batch.rs).

    python tests/python/test_batch_openai.py [path/to/t5serve]
"""

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import openai
from openai.types import BatchError, Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from server import ROOT, Server

BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/t5serve"
MODEL = "models/t5-numbers"
REQUESTS = [
    ("cmpl-1", "/v1/completions", {"model": "t5-numbers", "prompt": "translate English to German: forty-two", "max_tokens": 16}),
    ("cmpl-2", "/v1/completions", {"model": "t5-numbers", "prompt": ["digits: seven hundred", "digits: eleven"], "max_tokens": 8}),
    ("chat-1", "/v1/chat/completions", {"model": "t5-numbers", "messages": [{"role": "user", "content": "translate English to French: eighty"}]}),
    ("emb-1", "/v1/embeddings", {"model": "t5-numbers", "input": ["seven", "sieben"]}),
]
MODELS = {"/v1/completions": Completion, "/v1/chat/completions": ChatCompletion, "/v1/embeddings": CreateEmbeddingResponse}


class OpenAIBatchFormat(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = Path(tempfile.mkdtemp(prefix="t5serve-openai-batch-"))
        lines = [json.dumps({"custom_id": c, "method": "POST", "url": u, "body": b}) for c, u, b in REQUESTS]
        lines.append(json.dumps({"custom_id": "bad-url", "method": "POST", "url": "/v1/responses", "body": {}}))
        lines.append(json.dumps({"custom_id": "bad-body", "method": "POST", "url": "/v1/completions", "body": {"model": "t5-numbers"}}))
        (cls.dir / "in.jsonl").write_text("\n".join(lines) + "\n")
        run = subprocess.run(
            [str(BINARY), "batch", "--model", str(ROOT / MODEL), "--read-ahead", "1",
             "--input", str(cls.dir / "in.jsonl"), "--output", str(cls.dir / "out.jsonl")],
            capture_output=True, text=True, timeout=300,
        )
        cls.exit_code, cls.stderr = run.returncode, run.stderr
        cls.records = {r["custom_id"]: r for r in map(json.loads, (cls.dir / "out.jsonl").read_text().splitlines())}
        cls.server = Server(BINARY, model=MODEL)
        cls.client = openai.OpenAI(base_url=cls.server.base + "/v1", api_key="unused")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_every_line_gets_one_record_in_openais_output_format(self):
        self.assertEqual(self.exit_code, 1, "two lines fail: exit status 1\n" + self.stderr)
        self.assertEqual(set(self.records), {c for c, _, _ in REQUESTS} | {"bad-url", "bad-body"})
        for custom_id, url, _ in REQUESTS:
            r = self.records[custom_id]
            self.assertEqual(set(r), {"id", "custom_id", "response", "error"})
            self.assertIsNone(r["error"])
            self.assertEqual(r["response"]["status_code"], 200, r)
            self.assertTrue(r["response"]["request_id"])
            MODELS[url].model_validate(r["response"]["body"])

    def test_a_line_no_route_answers_gets_openais_batch_error(self):
        r = self.records["bad-url"]
        self.assertIsNone(r["response"])
        error = BatchError.model_validate(r["error"])
        self.assertEqual((error.code, error.line), ("invalid_url", 5))
        self.assertIn("/v1/responses", error.message)
        # A request the route refuses is an answer with the route's status and error body.
        r = self.records["bad-body"]
        self.assertIsNone(r["error"])
        self.assertEqual(r["response"]["status_code"], 400, r)
        with self.assertRaises(openai.BadRequestError) as refused:
            # The same request through the client (its low-level post: create() refuses it itself).
            self.client.post("/completions", body={"model": "t5-numbers"}, cast_to=Completion)
        self.assertEqual(r["response"]["body"], refused.exception.response.json())

    def test_answers_are_the_ones_the_server_gives_the_openai_client(self):
        for custom_id, url, body in REQUESTS:
            got = self.records[custom_id]["response"]["body"]
            if url == "/v1/completions":
                want = self.client.completions.create(**body)
                self.assertEqual([c.text for c in Completion.model_validate(got).choices], [c.text for c in want.choices])
                self.assertEqual(Completion.model_validate(got).usage, want.usage)
            elif url == "/v1/chat/completions":
                want = self.client.chat.completions.create(**body)
                got = ChatCompletion.model_validate(got)
                self.assertEqual(got.choices[0].message.content, want.choices[0].message.content)
                self.assertEqual(got.usage, want.usage)
            else:
                want = self.client.embeddings.create(**body)
                got = CreateEmbeddingResponse.model_validate(got)
                for g, w in zip(got.data, want.data, strict=True):
                    np.testing.assert_allclose(g.embedding, w.embedding, atol=1e-6)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
