"""Starts the real t5serve binary on a free port for the Python tests."""

import os
import re
import subprocess
import time
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
