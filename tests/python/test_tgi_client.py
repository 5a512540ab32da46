"""Existing TGI clients work unchanged against t5serve: huggingface_hub's InferenceClient
(text_generation, with and without stream and details; get_endpoint_info) and the
`text-generation` package's Client (generate and generate_stream, which use TGI's `POST /`)
against the tiny model, checked against transformers' golden outputs. Starts the real server
binary on a free port.

    python tests/python/test_tgi_client.py [path/to/t5serve]
"""

import json
import sys
import unittest
import urllib.request
from pathlib import Path

import text_generation
from huggingface_hub import InferenceClient

from server import Server

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/t5serve"
GOLDEN = json.loads((ROOT / "tests/data/golden.json").read_text())
EOS = GOLDEN["eos_token_id"]
# TGI has no min_new_tokens: use the prompts where transformers' raw argmax is never EOS, so
# that plain greedy decoding gives exactly the golden 24 tokens.
CASES = [c for c in GOLDEN["cases"] if c["prompt"] and all(s["ids"][0] != EOS for s in c["top5"])]
STEPS = GOLDEN["steps"]


class TgiClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(BINARY)
        cls.base = cls.server.base
        cls.client = InferenceClient(model=cls.base)
        assert len(CASES) >= 3, "need golden prompts without an EOS argmax"

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_text_generation_returns_the_golden_text(self):
        for case in CASES:
            text = self.client.text_generation(case["prompt"], max_new_tokens=STEPS)
            self.assertEqual(text, case["text"], case["prompt"])

    def test_details_report_tokens_and_finish_reason(self):
        case = CASES[0]
        out = self.client.text_generation(case["prompt"], max_new_tokens=STEPS, details=True)
        self.assertEqual(out.generated_text, case["text"])
        self.assertEqual(out.details.finish_reason, "length")
        self.assertEqual(out.details.generated_tokens, STEPS)
        self.assertEqual([t.id for t in out.details.tokens], case["ids"])
        self.assertTrue(all(t.logprob < 0 for t in out.details.tokens))

    def test_streaming_yields_the_text_token_by_token(self):
        for case in CASES[:3]:
            pieces = list(self.client.text_generation(case["prompt"], max_new_tokens=STEPS, stream=True))
            self.assertEqual(len(pieces), STEPS)
            self.assertEqual("".join(pieces), case["text"], case["prompt"])

    def test_streaming_with_details_ends_with_the_full_text(self):
        case = CASES[1]
        events = list(self.client.text_generation(case["prompt"], max_new_tokens=STEPS, stream=True, details=True))
        self.assertEqual([e.token.id for e in events], case["ids"])
        self.assertTrue(all(e.generated_text is None for e in events[:-1]))
        self.assertEqual(events[-1].generated_text, case["text"])
        self.assertEqual(events[-1].details.finish_reason, "length")
        self.assertEqual(events[-1].details.generated_tokens, STEPS)

    def test_stop_sequences_and_seeded_sampling(self):
        case = CASES[0]
        stop = case["text"].split()[1]
        text = self.client.text_generation(case["prompt"], max_new_tokens=STEPS, stop=[stop])
        self.assertEqual(text, case["text"][: case["text"].index(stop) + len(stop)])
        a = self.client.text_generation(case["prompt"], max_new_tokens=12, do_sample=True, top_k=20, seed=5)
        b = self.client.text_generation(case["prompt"], max_new_tokens=12, do_sample=True, top_k=20, seed=5)
        self.assertEqual(a, b)

    def test_tgi_routes_with_plain_http(self):
        case = CASES[0]
        body = json.dumps({"inputs": case["prompt"], "parameters": {"max_new_tokens": STEPS, "details": True}}).encode()
        req = urllib.request.Request(f"{self.base}/generate", body, {"Content-Type": "application/json"})
        out = json.loads(urllib.request.urlopen(req).read())
        self.assertEqual(out["generated_text"], case["text"])
        self.assertEqual(out["details"]["finish_reason"], "length")
        req = urllib.request.Request(f"{self.base}/generate_stream", body, {"Content-Type": "application/json"})
        lines = [l for l in urllib.request.urlopen(req).read().decode().splitlines() if l.startswith("data:")]
        self.assertEqual(len(lines), STEPS)
        self.assertEqual(json.loads(lines[-1][5:])["generated_text"], case["text"])

    def test_text_generation_client_generate_and_stream(self):
        # text_generation.Client posts to `/` and reads TGI's one-element list (or its stream).
        client = text_generation.Client(self.base)
        for case in CASES[:3]:
            out = client.generate(case["prompt"], max_new_tokens=STEPS)
            self.assertEqual(out.generated_text, case["text"], case["prompt"])
            self.assertEqual(out.details.finish_reason, "length")
            self.assertEqual(out.details.generated_tokens, STEPS)
            self.assertEqual([t.id for t in out.details.tokens], case["ids"])
            events = list(client.generate_stream(case["prompt"], max_new_tokens=STEPS))
            self.assertEqual([e.token.id for e in events], case["ids"])
            self.assertEqual("".join(e.token.text for e in events), case["text"])
            self.assertEqual(events[-1].generated_text, case["text"])
            self.assertEqual(events[-1].details.finish_reason, "length")
        stop = CASES[0]["text"].split()[1]
        out = client.generate(CASES[0]["prompt"], max_new_tokens=STEPS, stop_sequences=[stop])
        self.assertEqual(out.details.finish_reason, "stop_sequence")
        with self.assertRaises(text_generation.errors.ValidationError) as e:
            client.generate(CASES[0]["prompt"], max_new_tokens=10**6)
        self.assertIn("max_new_tokens", str(e.exception))

    def test_compat_route_answers_a_one_element_list(self):
        case = CASES[0]
        body = json.dumps({"inputs": case["prompt"], "parameters": {"max_new_tokens": STEPS}}).encode()
        req = urllib.request.Request(f"{self.base}/", body, {"Content-Type": "application/json"})
        out = json.loads(urllib.request.urlopen(req).read())
        self.assertEqual(out, [{"generated_text": case["text"]}])

    def test_info_describes_the_server_as_tgi_does(self):
        # huggingface_hub reads a TGI endpoint's /info through its "hf-inference" provider.
        info = InferenceClient(model=self.base, provider="hf-inference").get_endpoint_info()
        self.assertEqual(info["model_id"], "tiny-t5")
        self.assertEqual(info["max_best_of"], 1)
        self.assertEqual(info["max_input_tokens"], 512)
        self.assertEqual(info["max_client_batch_size"], 32)
        self.assertEqual(info["max_stop_sequences"], 4)
        self.assertEqual(info["router"], "t5serve")
        self.assertIsInstance(info["version"], str)

    def test_unsupported_tgi_features_are_refused_clearly(self):
        body = json.dumps({"inputs": "Hi", "parameters": {"best_of": 2}}).encode()
        req = urllib.request.Request(f"{self.base}/generate", body, {"Content-Type": "application/json"})
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        self.assertEqual(e.exception.code, 422)
        self.assertIn("best_of", json.loads(e.exception.read())["error"])


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
