"""Starts the real t5serve binary on a free port for the Python tests."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Server:
    def __init__(self, binary: Path, model: str = "tests/data/tiny-t5", args: tuple = ()):
        env = dict(os.environ, NO_COLOR="1", RUST_LOG="info")
        env.setdefault("ORT_DYLIB_PATH", str(ROOT / ".ort/libonnxruntime.so.1.31.1"))
        # The log goes to a file: a pipe nobody reads would fill up and block the server.
        self.log_path = ROOT / "target" / f"python-test-server-{os.getpid()}-{id(self)}.log"
        self.log = open(self.log_path, "w+")
        self.process = subprocess.Popen(
            [str(binary), "serve", "--model", str(ROOT / model), "--port", "0", *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.time() + 60
        port = None
        while port is None and time.time() < deadline and self.process.poll() is None:
            m = re.search(r"listening addr=127\.0\.0\.1:(\d+)", self.log_path.read_text())
            if m:
                port = int(m.group(1))
            else:
                time.sleep(0.1)
        if port is None:
            self.process.kill()
            raise RuntimeError("the server did not start:\n" + self.log_path.read_text())
        self.base = f"http://127.0.0.1:{port}"

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()
        self.log_path.unlink(missing_ok=True)


def post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def serves_like_the_reference_loop(test, binary: Path, model: Path, weights: str, steps: int = 12) -> dict:
    """Serves the quantized `model` with the real binary: /v1/models reports its
    quantization.json and `weights`, and its greedy tokens on six golden prompts equal
    t5tools.ort_greedy's, an independent loop over the same graphs on this machine. Returns
    /v1/models."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from t5tools import ort_greedy

    golden = json.loads((ROOT / "tests/data/golden.json").read_text())["cases"]
    server = Server(binary, model=str(model))
    try:
        with urllib.request.urlopen(server.base + "/v1/models", timeout=30) as r:
            models = json.loads(r.read())
        info = models["models"][0]
        test.assertEqual(info["weights"], weights)
        test.assertEqual(info["quantization"], json.loads((model / "quantization.json").read_text()))
        for case in [c for c in golden if c["prompt"]][:6]:
            want = ort_greedy(model, case["input_ids"], steps)
            params = {"max_new_tokens": steps, "min_new_tokens": steps, "details": True}
            got = post(server.base, "/v1/generate", {"inputs": case["prompt"], "parameters": params})
            test.assertEqual([t["id"] for t in got["details"]["tokens"]], want, case["prompt"])
        return models
    finally:
        server.stop()
