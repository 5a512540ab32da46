"""Responses of the real server validate against openapi.yaml: for a set of requests covering
every JSON route (successes and errors), the body is checked with the schema the spec gives for
that route, method and status (OpenAPI 3.1 schemas are JSON Schema 2020-12).

    python tests/python/test_openapi_responses.py [path/to/t5serve]
"""

import json
import sys
import unittest
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import yaml

from server import ROOT, Server

BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/t5serve"
SPEC = yaml.safe_load((ROOT / "openapi.yaml").read_text())

# (method, path, JSON body or None, expected status)
CASES = [
    ("post", "/v1/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 4}}, 200),
    ("post", "/v1/generate", {"inputs": ["Hi", "Hello there"], "parameters": {"max_new_tokens": 4, "details": True}}, 200),
    ("post", "/v1/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 6, "num_beams": 3, "num_return_sequences": 2}}, 200),
    ("post", "/v1/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 4, "do_sample": True, "seed": 1}}, 200),
    ("post", "/v1/generate", {"inputs": ""}, 422),
    ("post", "/v1/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 0}}, 422),
    ("post", "/v1/generate", None, 400),
    ("post", "/v1/classify", {"inputs": "vier", "labels": ["English", "German"], "template": "language: {text}"}, 200),
    ("post", "/v1/classify", {"inputs": ["a", "b"], "labels": ["x", "y", "z"], "multi_label": True}, 200),
    ("post", "/v1/classify", {"inputs": "a", "labels": ["only"]}, 422),
    ("post", "/v1/translate", {"text": ["four"], "source_lang": "English", "target_lang": "German", "parameters": {"max_new_tokens": 4}}, 200),
    ("post", "/v1/translate", {"text": "x", "source_lang": "German", "target_lang": "Klingon"}, 422),
    ("get", "/v1/translate/languages", None, 200),
    ("get", "/v1/models", None, 200),
    ("post", "/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 4, "details": True}}, 200),
    ("post", "/generate", {"inputs": "Hi", "parameters": {"best_of": 3}}, 422),
    ("post", "/", {"inputs": "Hi", "parameters": {"max_new_tokens": 3}}, 200),
    ("get", "/info", None, 200),
    ("get", "/health", None, 200),
    ("get", "/health/ready", None, 200),
    ("get", "/health/live", None, 200),
]


def schema_for(method: str, path: str, status: int) -> dict:
    response = SPEC["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = SPEC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    # "#/components/..." references resolve inside this document.
    return {**schema, "components": SPEC["components"]}


def call(base: str, method: str, path: str, body):
    data = None if body is None else json.dumps(body).encode()
    if method == "post" and body is None:
        data = b"{not json"
    req = urllib.request.Request(base + path, data=data, method=method.upper(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class OpenApiResponsesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(BINARY)
        # Ready once the warm-up batch has run.
        import time

        for _ in range(300):
            try:
                if call(cls.server.base, "get", "/health/ready", None)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_every_response_validates_against_its_schema(self):
        for method, path, body, want in CASES:
            with self.subTest(f"{method} {path} -> {want}"):
                status, payload = call(self.server.base, method, path, body)
                self.assertEqual(status, want, payload)
                jsonschema.validate(payload, schema_for(method, path, status), cls=jsonschema.Draft202012Validator)

    def test_the_served_json_document_is_the_committed_yaml(self):
        # PyYAML's reading of openapi.yaml is the reference for the server's /openapi.json.
        status, served = call(self.server.base, "get", "/openapi.json", None)
        self.assertEqual(status, 200)
        self.assertEqual(served, SPEC)
        with urllib.request.urlopen(self.server.base + "/openapi.yaml") as r:
            self.assertEqual(r.read().decode(), (ROOT / "openapi.yaml").read_text())

    def test_a_wrong_response_would_fail(self):
        # The check is live: a body missing a required field is refused.
        with self.assertRaises(jsonschema.ValidationError):
            jsonschema.validate({"finish_reason": "eos"}, schema_for("post", "/v1/generate", 200), cls=jsonschema.Draft202012Validator)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
