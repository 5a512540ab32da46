"""deploy/kserve/ against KServe's own Python SDK (`kserve`): every manifest deserializes into the
SDK's model of its kind (V1alpha1ServingRuntime, V1alpha1ClusterServingRuntime,
V1beta1InferenceService) and serializes back to the same document (a misspelled or unknown key
would be dropped, a wrong type changed); every InferenceService's model format and protocol are
served by the runtime it names (or one that selects the format automatically); the runtime's
container maps KServe's model mount to --model, uses only flags the real binary has, and probes
routes the server has.

    python tests/python/test_kserve_manifests.py [path/to/t5serve]
"""

import json
import subprocess
import sys
import unittest
from pathlib import Path

import kserve
import kserve.models
import kubernetes.client
import yaml

from server import ROOT

BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/t5serve"
DIR = ROOT / "deploy/kserve"
KINDS = {
    "ServingRuntime": "V1alpha1ServingRuntime",
    "ClusterServingRuntime": "V1alpha1ClusterServingRuntime",
    "InferenceService": "V1beta1InferenceService",
}


class ManifestApiClient(kserve.ApiClient):
    """The SDK's ApiClient knows only KServe's own types; Kubernetes' core types inside them
    (V1ObjectMeta, V1Container...) go to the kubernetes package's ApiClient."""

    _k8s = kubernetes.client.ApiClient()

    def _ApiClient__deserialize(self, data, klass):
        if (
            isinstance(klass, str)
            and klass[:5] not in ("list[", "dict(")
            and klass not in self.NATIVE_TYPES_MAPPING
            and not hasattr(kserve.models, klass)
        ):
            return self._k8s._ApiClient__deserialize(data, klass)
        return super()._ApiClient__deserialize(data, klass)


class _Response:
    def __init__(self, document):
        self.data = json.dumps(document)


def lost(document, back, path=""):
    """What the SDK's model dropped or changed of a document."""
    if isinstance(document, dict):
        for k, v in document.items():
            if not isinstance(back, dict) or k not in back:
                yield f"{path}/{k} lost"
            else:
                yield from lost(v, back[k], f"{path}/{k}")
    elif isinstance(document, list):
        if not isinstance(back, list) or len(document) != len(back):
            yield f"{path}: list changed"
        else:
            for i, (a, b) in enumerate(zip(document, back)):
                yield from lost(a, b, f"{path}[{i}]")
    elif document != back:
        yield f"{path}: {document!r} became {back!r}"


def load(path):
    document = yaml.safe_load(path.read_text())
    model = ManifestApiClient().deserialize(_Response(document), KINDS[document["kind"]])
    return document, model


class KServeManifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.files = sorted(DIR.glob("*.yaml"))
        cls.loaded = {p.name: load(p) for p in cls.files}
        cls.runtimes = {m.metadata.name: (d, m) for d, m in cls.loaded.values() if d["kind"] != "InferenceService"}
        cls.services = [(d, m) for d, m in cls.loaded.values() if d["kind"] == "InferenceService"]
        cls.help = subprocess.run([str(BINARY), "serve", "--help"], capture_output=True, text=True, check=True).stdout
        cls.openapi = (ROOT / "openapi.yaml").read_text()

    def test_every_manifest_is_its_kinds_model_without_loss(self):
        self.assertEqual({d["kind"] for d, _ in self.loaded.values()}, set(KINDS))
        for name, (document, model) in self.loaded.items():
            with self.subTest(name):
                back = kserve.ApiClient().sanitize_for_serialization(model)
                self.assertEqual(list(lost(document, back)), [])

    def test_the_sdk_catches_a_misspelled_key(self):
        document = yaml.safe_load((DIR / "inferenceservice.yaml").read_text())
        model = document["spec"]["predictor"]["model"]
        model["storageURI"] = model.pop("storageUri")
        back = ManifestApiClient().deserialize(_Response(document), KINDS["InferenceService"])
        self.assertIn("/spec/predictor/model/storageURI lost", list(lost(document, kserve.ApiClient().sanitize_for_serialization(back))))

    def test_every_service_is_served_by_its_runtime(self):
        self.assertGreaterEqual(len(self.services), 2)
        for document, isvc in self.services:
            with self.subTest(isvc.metadata.name):
                model = isvc.spec.predictor.model
                self.assertTrue(model.storage_uri)
                runtime = self.runtimes[model.runtime][1] if model.runtime else None
                candidates = [runtime] if runtime else [r for _, r in self.runtimes.values()]
                served = [
                    r
                    for r in candidates
                    if any(
                        f.name == model.model_format.name
                        and (model.model_format.version is None or f.version == model.model_format.version)
                        and (runtime or f.auto_select)
                        for f in r.spec.supported_model_formats
                    )
                    and (model.protocol_version or "v1") in r.spec.protocol_versions
                ]
                self.assertTrue(served, f"no runtime serves {model.model_format.name} over {model.protocol_version}")

    def test_the_runtime_container_runs_t5serve_as_kserve_expects(self):
        for name, (document, runtime) in self.runtimes.items():
            with self.subTest(name):
                [container] = runtime.spec.containers
                args = container.args
                self.assertEqual(args[args.index("--model") + 1], "{{.Name}}=/mnt/models", "KServe's model mount")
                for flag in [a for a in args if a.startswith("--")]:
                    self.assertIn(flag, self.help, f"{flag} is not a t5serve flag")
                for env in container.env:
                    if env.name.startswith("T5SERVE_"):
                        self.assertIn(env.name, self.help, f"{env.name} is not a t5serve variable")
                port = int(args[args.index("--port") + 1])
                self.assertEqual([p.container_port for p in container.ports], [port])
                self.assertEqual(int(args[args.index("--grpc-port") + 1]), 9000)
                for probe, path in ((container.readiness_probe, "/v2/health/ready"), (container.liveness_probe, "/v2/health/live")):
                    self.assertEqual((probe.http_get.path, probe.http_get.port), (path, port))
                    self.assertIn(f"\n  {path}:\n", self.openapi)
                self.assertEqual(set(runtime.spec.protocol_versions), {"v2", "grpc-v2"})
        grpc = [m for d, m in self.services if m.spec.predictor.model.protocol_version == "grpc-v2"]
        self.assertEqual([p.container_port for p in grpc[0].spec.predictor.model.ports], [9000])


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
