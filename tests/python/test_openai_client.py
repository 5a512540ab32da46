"""The official `openai` client against t5serve (issue 20, in progress): what is served so far.
`client.models.list()` reads `GET /v1/models` in OpenAI's list shape. Starts the real server
binary on a free port.

    python tests/python/test_openai_client.py [path/to/t5serve]
"""

import sys
import time
import unittest
import urllib.request
from pathlib import Path

import openai

from server import ROOT, Server

BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/t5serve"


class OpenAiClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(BINARY)
        cls.client = openai.OpenAI(base_url=cls.server.base + "/v1", api_key="unused")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_models_list_names_the_served_model(self):
        before = int(time.time())
        models = list(self.client.models.list())
        self.assertEqual([m.id for m in models], ["tiny-t5"])
        self.assertEqual(models[0].object, "model")
        self.assertEqual(models[0].owned_by, "t5serve")
        # Loaded when the server started: not in the future, and not long ago.
        self.assertLessEqual(models[0].created, before + 1)
        self.assertGreater(models[0].created, before - 600)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
