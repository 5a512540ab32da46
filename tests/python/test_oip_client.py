"""The Open Inference Protocol (v2) with its own clients, on the real binary: Triton's
`tritonclient.http` (binary tensors, its default, and JSON) and KServe's `InferenceRESTClient`,
against a server with the tiny test model (the default) and the bundled model.

References, independent of the route under test:
- generation: the tiny model's golden outputs (transformers, tests/data/golden.json), and
  `/v1/generate` for the same texts and parameters (the issue's bar: the same answers);
- classification: `/v1/classify` for the same texts and labels (its scores are tested against
  the decoder's likelihoods in the Rust suite).

    python tests/python/test_oip_client.py [path/to/t5serve]
"""

import asyncio
import json
import sys
import time
import unittest
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from server import ROOT, Server

BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/t5serve"
GOLDEN = json.loads((ROOT / "tests/data/golden.json").read_text())
TINY = "tiny-t5"
NUMBERS = "numbers"


def post(base, path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def texts_input(texts, shape=None, binary=True):
    data = np.array([t.encode() for t in texts], dtype=np.object_)
    if shape is not None:
        data = data.reshape(shape)
    tensor = triton.InferInput("text_input", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data, binary_data=binary)
    return tensor


def text(element):
    return element.decode() if isinstance(element, bytes) else element


class OpenInferenceProtocol(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(BINARY, args=("--model", f"{NUMBERS}=models/t5-numbers"))
        cls.url = cls.server.base.removeprefix("http://")
        cls.client = triton.InferenceServerClient(cls.url)
        # The server listens before its warm-up is done; ready follows it.
        deadline = time.time() + 60
        while not cls.client.is_server_ready() and time.time() < deadline:
            time.sleep(0.1)
        cls.cases = [c for c in GOLDEN["cases"] if c["prompt"]]
        cls.params = {"max_new_tokens": GOLDEN["steps"], "min_new_tokens": GOLDEN["min_new_tokens"]}

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop()

    def reference(self, model, texts, **parameters):
        return [
            r["generated_text"]
            for r in post(self.server.base, "/v1/generate", {"model": model, "inputs": texts, "parameters": parameters})
        ]

    def test_health_and_metadata(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        self.assertTrue(self.client.is_model_ready(TINY))
        self.assertTrue(self.client.is_model_ready(NUMBERS, model_version="1"))
        self.assertFalse(self.client.is_model_ready("nope"))
        self.assertFalse(self.client.is_model_ready(TINY, model_version="2"))
        server = self.client.get_server_metadata()
        self.assertEqual(server["name"], "t5serve")
        self.assertIn("binary_tensor_data", server["extensions"])
        meta = self.client.get_model_metadata(NUMBERS)
        self.assertEqual((meta["name"], meta["versions"]), (NUMBERS, ["1"]))
        self.assertEqual(meta["inputs"], [{"name": "text_input", "datatype": "BYTES", "shape": [-1]}])
        outputs = {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]}
        self.assertEqual(outputs["text_output"], ("BYTES", [-1]))
        self.assertEqual(outputs["scores"], ("FP32", [-1, -1]))

    def test_generation_in_binary_and_json_matches_the_golden_and_v1_generate(self):
        texts = [c["prompt"] for c in self.cases]
        golden = [c["text"] for c in self.cases]
        self.assertEqual(self.reference(TINY, texts, **self.params), golden)
        for binary in (True, False):
            for shape in (None, (len(texts), 1)):
                with self.subTest(binary=binary, shape=shape):
                    out = triton.InferRequestedOutput("text_output", binary_data=binary)
                    result = self.client.infer(
                        TINY, [texts_input(texts, shape, binary)], outputs=[out], parameters=self.params
                    )
                    got = result.as_numpy("text_output")
                    self.assertEqual(got.shape, (len(texts),) if shape is None else shape)
                    # Binary BYTES come back as bytes, JSON ones as str (the client's way).
                    self.assertEqual([text(t) for t in got.reshape(-1)], golden)
                    self.assertEqual(result.get_response()["model_name"], TINY)

    def test_bundled_model_with_its_parameters_and_no_outputs_named(self):
        texts = ["translate English to German: forty-two", "digits: three thousand four hundred and fifty-seven"]
        # No outputs named: the client asks for every output in binary (binary_data_output).
        result = self.client.infer(NUMBERS, [texts_input(texts)], parameters={"max_new_tokens": 24}, request_id="r-7")
        self.assertEqual(result.get_response()["id"], "r-7")
        got = [t.decode() for t in result.as_numpy("text_output")]
        self.assertEqual(got, self.reference(NUMBERS, texts, max_new_tokens=24))
        self.assertEqual(got, ["zweiundvierzig", "3457"])
        # Sampling parameters by /v1/generate's names, with a seed: the same draw.
        sampled = {"do_sample": True, "temperature": 0.9, "top_k": 20, "seed": 11, "max_new_tokens": 12}
        result = self.client.infer(NUMBERS, [texts_input(texts)], parameters=sampled)
        self.assertEqual([t.decode() for t in result.as_numpy("text_output")], self.reference(NUMBERS, texts, **sampled))

    def test_classification_matches_v1_classify(self):
        texts = ["vierhundert", "cuatrocientos", "four hundred"]
        labels = ["German", "Spanish", "English", "French"]
        reference = post(self.server.base, "/v1/classify", {"model": NUMBERS, "inputs": texts, "labels": labels})
        for spelled in (json.dumps(labels), ",".join(labels)):
            with self.subTest(labels=spelled):
                params = {"task": "classify", "labels": spelled}
                result = self.client.infer(NUMBERS, [texts_input(texts)], parameters=params)
                self.assertEqual([t.decode() for t in result.as_numpy("label")], [r["label"] for r in reference])
                scores = result.as_numpy("scores")
                self.assertEqual((scores.dtype, scores.shape), (np.float32, (3, 4)))
                for row, ref in zip(scores, reference):
                    expected = [next(s["score"] for s in ref["scores"] if s["label"] == l) for l in labels]
                    np.testing.assert_allclose(row, expected, rtol=1e-6, atol=1e-7)
        # The model's own label set when none is given.
        result = self.client.infer(NUMBERS, [texts_input(texts[:1])], parameters={"task": "classify"})
        self.assertEqual(result.as_numpy("label")[0].decode(), "German")

    def test_errors_raise_the_clients_exception_with_the_protocols_message(self):
        def fails(status, text, call):
            with self.assertRaises(InferenceServerException) as e:
                call()
            self.assertEqual(e.exception.status(), status, e.exception.message())
            self.assertIn(text, e.exception.message())

        fails("404", "not served", lambda: self.client.infer("nope", [texts_input(["x"])]))
        fails("404", "not served", lambda: self.client.get_model_metadata("nope"))
        number = triton.InferInput("text_input", [1], "FP32")
        number.set_data_from_numpy(np.array([1.0], dtype=np.float32))
        fails("400", "must be BYTES", lambda: self.client.infer(TINY, [number]))
        square = texts_input(["a", "b", "c", "d"], (2, 2))
        fails("400", "must be [n] or [n, 1]", lambda: self.client.infer(TINY, [square]))
        other = triton.InferInput("prompt", [1], "BYTES")
        other.set_data_from_numpy(np.array([b"x"], dtype=np.object_))
        fails("400", "the only input is \"text_input\"", lambda: self.client.infer(TINY, [other]))
        fails("400", "unknown field `nope`", lambda: self.client.infer(TINY, [texts_input(["x"])], parameters={"nope": 1}))
        fails("400", "max_new_tokens", lambda: self.client.infer(TINY, [texts_input(["x"])], parameters={"max_new_tokens": 0}))
        asked = [triton.InferRequestedOutput("label")]
        fails("400", "unknown output \"label\"", lambda: self.client.infer(TINY, [texts_input(["x"])], outputs=asked))

    def test_kserve_rest_client(self):
        from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

        texts = [c["prompt"] for c in self.cases[:3]]

        async def run():
            client = InferenceRESTClient(RESTConfig(protocol="v2"))
            base = self.server.base
            try:
                live = await client.is_server_live(base)
                ready = await client.is_server_ready(base)
                model_ready = await client.is_model_ready(base, TINY)
                tensor = InferInput("text_input", [len(texts)], "BYTES")
                tensor.set_data_from_numpy(np.array(texts, dtype=np.object_), binary_data=False)
                request = InferRequest(model_name=TINY, infer_inputs=[tensor], parameters=self.params)
                response = await client.infer(base, request, model_name=TINY)
                binary = InferInput("text_input", [len(texts)], "BYTES")
                binary.set_data_from_numpy(np.array(texts, dtype=np.object_), binary_data=True)
                request = InferRequest(model_name=TINY, infer_inputs=[binary], parameters=self.params)
                binary_response = await client.infer(base, request, model_name=TINY)
                return live, ready, model_ready, response, binary_response
            finally:
                await client.close()

        live, ready, model_ready, response, binary_response = asyncio.run(run())
        self.assertEqual((live, ready, model_ready), (True, True, True))
        golden = [c["text"] for c in self.cases[:3]]
        for r in (response, binary_response):
            self.assertEqual(r.model_name, TINY)
            self.assertEqual([str(t) for t in r.outputs[0].data], golden)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
