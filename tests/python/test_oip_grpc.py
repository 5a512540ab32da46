"""The Open Inference Protocol over gRPC with Triton's own client (`tritonclient.grpc`), on the
real binary with `--grpc-port`: health, metadata, inference equal to the golden outputs and to
`/v1/generate`, classification equal to `/v1/classify`, errors with the protocol's codes, the
API key as `authorization` metadata, cancellation dropping the rows, and the metrics' route label.

Its own process: `tritonclient.grpc` and `kserve` register the same protobuf package
(`inference`), so they cannot be imported together (test_oip_client.py has KServe's client).

    python tests/python/test_oip_grpc.py [path/to/t5serve]
"""

import json
import socket
import sys
import time
import unittest
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from server import ROOT, Server

BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/t5serve"
GOLDEN = json.loads((ROOT / "tests/data/golden.json").read_text())
TINY = "tiny-t5"
NUMBERS = "numbers"
KEY = "0123456789abcdef-grpc"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base, path, body, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(base + path, json.dumps(body).encode(), headers)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def metrics(base):
    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        return r.read().decode()


def metric(base, name, **labels):
    """A metric summed over the series whose labels include the given ones."""
    total, found = 0.0, False
    for line in metrics(base).splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total, found = total + float(value), True
    return total if found else None


def texts_input(texts, shape=None):
    data = np.array([t.encode() for t in texts], dtype=np.object_)
    if shape is not None:
        data = data.reshape(shape)
    tensor = triton.InferInput("text_input", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


class Grpc(unittest.TestCase):
    KEY = None

    @classmethod
    def setUpClass(cls):
        port = free_port()
        args = ["--model", f"{NUMBERS}=models/t5-numbers", "--grpc-port", str(port)]
        if cls.KEY:
            args += ["--api-key", cls.KEY]
        cls.server = Server(BINARY, args=tuple(args))
        cls.address = f"127.0.0.1:{port}"
        cls.client = triton.InferenceServerClient(cls.address)
        # The server listens before its warm-up is done; ready follows it.
        deadline = time.time() + 60
        while not cls.client.is_server_ready() and time.time() < deadline:
            time.sleep(0.1)
        cls.headers = {"authorization": f"Bearer {cls.KEY}"} if cls.KEY else None
        cls.cases = [c for c in GOLDEN["cases"] if c["prompt"]]
        cls.params = {"max_new_tokens": GOLDEN["steps"], "min_new_tokens": GOLDEN["min_new_tokens"]}

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop()

    def reference(self, model, texts, **parameters):
        body = {"model": model, "inputs": texts, "parameters": parameters}
        return [r["generated_text"] for r in post(self.server.base, "/v1/generate", body, self.KEY)]


class Protocol(Grpc):
    def test_health_and_metadata(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        self.assertTrue(self.client.is_model_ready(TINY))
        self.assertTrue(self.client.is_model_ready(NUMBERS, model_version="1"))
        self.assertFalse(self.client.is_model_ready("nope"))
        self.assertFalse(self.client.is_model_ready(TINY, model_version="2"))
        server = self.client.get_server_metadata(as_json=True)
        self.assertEqual(server["name"], "t5serve")
        self.assertIn("binary_tensor_data", server["extensions"])
        meta = self.client.get_model_metadata(NUMBERS, as_json=True)
        self.assertEqual((meta["name"], meta["versions"], meta["platform"]), (NUMBERS, ["1"], "t5serve"))
        self.assertEqual(meta["inputs"], [{"name": "text_input", "datatype": "BYTES", "shape": ["-1"]}])
        self.assertEqual([o["name"] for o in meta["outputs"]], ["text_output", "label", "scores"])

    def test_generation_matches_the_golden_and_v1_generate(self):
        texts = [c["prompt"] for c in self.cases]
        golden = [c["text"] for c in self.cases]
        self.assertEqual(self.reference(TINY, texts, **self.params), golden)
        for shape in (None, (len(texts), 1)):
            with self.subTest(shape=shape):
                result = self.client.infer(TINY, [texts_input(texts, shape)], parameters=self.params, request_id="g1")
                got = result.as_numpy("text_output")
                self.assertEqual(got.shape, (len(texts),) if shape is None else shape)
                self.assertEqual([t.decode() for t in got.reshape(-1)], golden)
                response = result.get_response(as_json=True)
                self.assertEqual((response["model_name"], response["id"]), (TINY, "g1"))
        texts = ["translate English to German: forty-two", "digits: three thousand four hundred and fifty-seven"]
        sampled = {"do_sample": True, "temperature": 0.9, "top_k": 20, "seed": 11, "max_new_tokens": 12}
        for params in ({"max_new_tokens": 24}, sampled):
            result = self.client.infer(NUMBERS, [texts_input(texts)], parameters=params)
            got = [t.decode() for t in result.as_numpy("text_output")]
            self.assertEqual(got, self.reference(NUMBERS, texts, **params))

    def test_classification_matches_v1_classify(self):
        texts = ["vierhundert", "cuatrocientos", "four hundred"]
        labels = ["German", "Spanish", "English", "French"]
        reference = post(self.server.base, "/v1/classify", {"model": NUMBERS, "inputs": texts, "labels": labels})
        result = self.client.infer(
            NUMBERS, [texts_input(texts)], parameters={"task": "classify", "labels": json.dumps(labels)}
        )
        self.assertEqual([t.decode() for t in result.as_numpy("label")], [r["label"] for r in reference])
        scores = result.as_numpy("scores")
        self.assertEqual((scores.dtype, scores.shape), (np.float32, (3, 4)))
        for row, ref in zip(scores, reference):
            expected = [next(s["score"] for s in ref["scores"] if s["label"] == l) for l in labels]
            np.testing.assert_allclose(row, expected, rtol=1e-6, atol=1e-7)
        only = [triton.InferRequestedOutput("label")]
        result = self.client.infer(NUMBERS, [texts_input(texts[:1])], parameters={"task": "classify"}, outputs=only)
        self.assertIsNone(result.as_numpy("scores"))
        self.assertEqual(result.as_numpy("label")[0].decode(), "German")

    def test_typed_contents_in_typed_contents_out(self):
        # The protocol's messages as Triton's package defines them, sent by its generated stub.
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        texts = [c["prompt"] for c in self.cases[:3]]
        request = service_pb2.ModelInferRequest(model_name=TINY, id="typed")
        tensor = request.inputs.add(name="text_input", datatype="BYTES", shape=[len(texts)])
        tensor.contents.bytes_contents.extend(t.encode() for t in texts)
        for k, v in self.params.items():
            request.parameters[k].int64_param = v
        with grpc.insecure_channel(self.address) as channel:
            response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
        self.assertEqual((response.model_name, response.id, len(response.raw_output_contents)), (TINY, "typed", 0))
        [out] = response.outputs
        self.assertEqual((out.name, out.datatype, list(out.shape)), ("text_output", "BYTES", [3]))
        self.assertEqual([b.decode() for b in out.contents.bytes_contents], [c["text"] for c in self.cases[:3]])

    def test_errors_carry_the_protocols_codes_and_messages(self):
        def fails(code, text, call):
            with self.assertRaises(InferenceServerException) as e:
                call()
            self.assertEqual(e.exception.status(), f"StatusCode.{code}", e.exception.message())
            self.assertIn(text, e.exception.message())

        fails("NOT_FOUND", "not served", lambda: self.client.infer("nope", [texts_input(["x"])]))
        fails("NOT_FOUND", "not served", lambda: self.client.get_model_metadata("nope"))
        number = triton.InferInput("text_input", [1], "FP32")
        number.set_data_from_numpy(np.array([1.0], dtype=np.float32))
        fails("INVALID_ARGUMENT", "must be BYTES", lambda: self.client.infer(TINY, [number]))
        square = texts_input(["a", "b", "c", "d"], (2, 2))
        fails("INVALID_ARGUMENT", "must be [n] or [n, 1]", lambda: self.client.infer(TINY, [square]))
        fails("INVALID_ARGUMENT", "unknown field `nope`", lambda: self.client.infer(TINY, [texts_input(["x"])], parameters={"nope": 1}))
        asked = [triton.InferRequestedOutput("label")]
        fails("INVALID_ARGUMENT", "unknown output", lambda: self.client.infer(TINY, [texts_input(["x"])], outputs=asked))

    def test_a_cancelled_call_drops_its_rows_and_calls_are_counted(self):
        base = self.server.base
        before = metric(base, "t5serve_requests_cancelled_total") or 0.0
        # min_new_tokens = max_new_tokens: the row would run 512 steps.
        params = {"max_new_tokens": 512, "min_new_tokens": 512}
        with self.assertRaises(InferenceServerException) as e:
            self.client.infer(TINY, [texts_input(["Hello"])], parameters=params, client_timeout=0.3)
        # The client's deadline travels as grpc-timeout: whichever side notices first ends the
        # call (tonic's server answers CANCELLED "Timeout expired", the client DEADLINE_EXCEEDED).
        self.assertIn(e.exception.status(), ("StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED"))
        deadline = time.time() + 20
        while time.time() < deadline and (metric(base, "t5serve_active_rows") or 0.0) > 0:
            time.sleep(0.02)
        self.assertEqual(metric(base, "t5serve_active_rows"), 0.0, "the cancelled row was dropped")
        self.assertGreater(metric(base, "t5serve_requests_cancelled_total"), before)
        self.client.infer(TINY, [texts_input(["Hello"])], parameters=self.params)
        ok = metric(base, "t5serve_requests_total", route="/inference.GRPCInferenceService/ModelInfer", status="200", model=TINY)
        self.assertGreaterEqual(ok, 1.0)


class ApiKey(Grpc):
    KEY = KEY

    def test_the_key_is_the_authorization_metadata_except_for_health(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        for call in (
            lambda h: self.client.infer(TINY, [texts_input(["x"])], parameters=self.params, headers=h),
            lambda h: self.client.get_model_metadata(TINY, headers=h),
        ):
            with self.assertRaises(InferenceServerException) as e:
                call(None)
            self.assertEqual(e.exception.status(), "StatusCode.UNAUTHENTICATED")
            with self.assertRaises(InferenceServerException) as e:
                call({"authorization": "Bearer wrong-wrong-wrong-wrong"})
            self.assertIn("wrong", e.exception.message())
            call(self.headers)
        text = self.cases[0]["prompt"]
        result = self.client.infer(TINY, [texts_input([text])], parameters=self.params, headers=self.headers)
        self.assertEqual(result.as_numpy("text_output")[0].decode(), self.cases[0]["text"])


class Draining(Grpc):
    def test_sigterm_turns_ready_false_refuses_new_calls_and_finishes_those_in_flight(self):
        import signal
        import threading

        done = {}
        long = {"max_new_tokens": 300, "min_new_tokens": 300}

        def in_flight():
            try:
                done["result"] = self.client.infer(TINY, [texts_input(["Hello"])], parameters=long)
            except Exception as e:  # reported below
                done["error"] = e

        thread = threading.Thread(target=in_flight)
        thread.start()
        deadline = time.time() + 20
        while (metric(self.server.base, "t5serve_active_rows") or 0.0) < 1 and time.time() < deadline:
            time.sleep(0.01)
        self.server.process.send_signal(signal.SIGTERM)
        deadline = time.time() + 10
        while self.client.is_server_ready() and time.time() < deadline:
            time.sleep(0.01)
        self.assertFalse(self.client.is_server_ready())
        with self.assertRaises(InferenceServerException) as e:
            self.client.infer(TINY, [texts_input(["x"])])
        self.assertEqual(e.exception.status(), "StatusCode.UNAVAILABLE")
        self.assertIn("shutting down", e.exception.message())
        thread.join(60)
        self.assertNotIn("error", done)
        self.assertEqual(len(done["result"].as_numpy("text_output")), 1)
        self.assertEqual(self.server.process.wait(timeout=30), 0)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
