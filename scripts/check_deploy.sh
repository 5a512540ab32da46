#!/usr/bin/env bash
# Validates the deployment artifacts for real, against published schemas:
#   1. every manifest in deploy/kubernetes/*.yaml
#        - built-in kinds: the official Kubernetes OpenAPI-derived JSON schemas of one fixed
#          Kubernetes version, strict (unknown fields are errors), via the PyPI package
#          kubernetes-validate, which ships those schemas;
#        - the ServiceMonitor (a CRD, no official schema there): deploy/kubernetes/schemas/
#          servicemonitor.json, with python-jsonschema;
#        - kustomization.yaml: lists exactly the other manifests, no unknown keys;
#        - cross-references no schema sees: selectors match labels, named ports exist, T5SERVE_*
#          env vars are real config keys (src/config/mod.rs), the HPA targets the Deployment, and
#          terminationGracePeriodSeconds > preStop sleep + shutdown grace;
#   2. docker/docker-compose.yml with `docker-compose config -q` (Debian's docker-compose; it
#      validates against the compose schema without a Docker engine).
# Installs what it needs on first use: a venv in .venv-deploy (pinned versions), and the
# docker-compose apt package if missing. Runs both groups; exits non-zero if either fails.
# Usage: scripts/check_deploy.sh            (from anywhere)
#   DEPLOY_K8S_DIR=dir DEPLOY_COMPOSE_FILE=file scripts/check_deploy.sh   checks other copies.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

K8S_VERSION=1.34.0              # the Kubernetes version manifests are validated against
KUBERNETES_VALIDATE_VERSION=1.37.0
JSONSCHEMA_VERSION=4.26.0
PYYAML_VERSION=6.0.4
venv="$root/.venv-deploy"
k8s_dir="${DEPLOY_K8S_DIR:-deploy/kubernetes}"
compose_file="${DEPLOY_COMPOSE_FILE:-docker/docker-compose.yml}"

# --- tools --------------------------------------------------------------------------------
want="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION jsonschema==$JSONSCHEMA_VERSION PyYAML==$PYYAML_VERSION"
have_venv() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$want" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for req in sys.argv[1].split():
    name, _, wanted = req.partition("==")
    if version(name) != wanted:
        sys.exit(1)
PY
}
if ! have_venv; then
  echo "== installing $want into .venv-deploy"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install -q --disable-pip-version-check $want
  have_venv || { echo "FAIL: .venv-deploy does not hold $want" >&2; exit 1; }
fi

if ! command -v docker-compose >/dev/null 2>&1; then
  echo "== installing docker-compose (Debian package)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi

# --- 1. Kubernetes manifests --------------------------------------------------------------
echo "== Kubernetes manifests in $k8s_dir: kubernetes-validate $KUBERNETES_VALIDATE_VERSION" \
  "(Kubernetes $K8S_VERSION schemas, strict), jsonschema $JSONSCHEMA_VERSION"
status=0
"$venv/bin/python" - "$k8s_dir" "$K8S_VERSION" "$root" <<'PY' || status=1
import glob, json, os, re, sys, tomllib

import jsonschema
import yaml
from kubernetes_validate import utils as kv

k8s_dir, k8s_version, root = sys.argv[1], sys.argv[2], sys.argv[3]
errors = []


def fail(where, msg):
    errors.append(f"{where}: {msg}")


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)

files = sorted(glob.glob(os.path.join(k8s_dir, "*.yaml")) + glob.glob(os.path.join(k8s_dir, "*.yml")))
if not files:
    sys.exit(f"FAIL: no manifests in {k8s_dir}")

sm_schema_path = os.path.join(k8s_dir, "schemas", "servicemonitor.json")
docs = []  # (file, document)
for path in files:
    name = os.path.basename(path)
    try:
        with open(path) as f:
            loaded = [d for d in yaml.load_all(f, Loader=StrictLoader) if d is not None]
    except yaml.YAMLError as e:
        fail(name, f"YAML: {e}")
        continue
    if not loaded:
        fail(name, "no document")
    for d in loaded:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            fail(name, "document without apiVersion/kind")
            continue
        docs.append((path, d))

by_kind = {}
for path, d in docs:
    name = os.path.basename(path)
    kind, api = d["kind"], d["apiVersion"]
    mname = (d.get("metadata") or {}).get("name")
    label = f"{name} {kind}/{mname}" if mname else f"{name} {kind}"
    by_kind.setdefault(kind, []).append((name, d))
    if kind == "Kustomization":
        if api != "kustomize.config.k8s.io/v1beta1":
            fail(label, f"apiVersion {api!r}")
        allowed = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "namePrefix"}
        for key in set(d) - allowed:
            fail(label, f"unexpected key {key!r}")
        listed = d.get("resources") or []
        others = sorted(os.path.basename(p) for p in files if p != path)
        if sorted(listed) != others or len(set(listed)) != len(listed):
            fail(label, f"resources {listed} != manifests here {others}")
        print(f"  ok  {name} Kustomization: lists {len(listed)} resources, all the manifests here")
    elif kind == "ServiceMonitor":
        with open(sm_schema_path) as f:
            schema = json.load(f)
        jsonschema.Draft202012Validator.check_schema(schema)
        v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        errs = sorted(v.iter_errors(d), key=lambda e: list(e.absolute_path))
        for e in errs:
            fail(label, f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}")
        if not errs:
            print(f"  ok  {label}: {sm_schema_path}")
    else:
        try:
            got = kv.validate(d, k8s_version, strict=True)
            print(f"  ok  {label}: Kubernetes {got} strict schema")
        except kv.ValidationError as e:
            fail(label, f"{'.'.join(map(str, e.path)) or '(root)'}: {e.message}")
        except (kv.SchemaNotFoundError, kv.InvalidSchemaError, kv.VersionNotSupportedError) as e:
            fail(label, e.message)  # kubernetes-validate's CLI only warns here: not good enough

# --- cross-references ---------------------------------------------------------------------
def one(kind):
    items = by_kind.get(kind, [])
    if len(items) != 1:
        fail(kind, f"expected exactly one, found {len(items)}")
        return None, None
    return items[0]


def subset(small, big):
    return bool(small) and all(big.get(k) == v for k, v in small.items())


config_rs = open(os.path.join(root, "src", "config", "mod.rs")).read()
env_keys = set(re.findall(r'env\s*=\s*"(T5SERVE_[A-Z0-9_]+)"', config_rs))
with open(os.path.join(root, "config", "default.toml"), "rb") as f:
    default_grace_ms = tomllib.load(f).get("shutdown_grace_ms", 30000)

dep_file, dep = one("Deployment")
svc_file, svc = one("Service")
hpa_file, hpa = one("HorizontalPodAutoscaler")
sm_file, sm = one("ServiceMonitor")
checked = 0
if dep and not errors:
    tmpl = dep["spec"]["template"]
    pod_labels = tmpl["metadata"].get("labels", {})
    if not subset(dep["spec"]["selector"].get("matchLabels", {}), pod_labels):
        fail(dep_file, "spec.selector.matchLabels do not match the pod template's labels")
    containers = tmpl["spec"]["containers"]
    port_names = {p.get("name") for c in containers for p in c.get("ports", []) if p.get("name")}
    for c in containers:
        for env in c.get("env", []):
            n = env["name"]
            if n.startswith("T5SERVE_") and n not in env_keys:
                fail(dep_file, f"container {c['name']}: env {n} is no config key of src/config/mod.rs")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
            if isinstance(port, str) and port not in port_names:
                fail(dep_file, f"container {c['name']}: {probe} port {port!r} is not a container port name")
    main = containers[0]
    env = {e["name"]: e.get("value") for e in main.get("env", [])}
    grace_ms = int(env.get("T5SERVE_SHUTDOWN_GRACE_MS", default_grace_ms))
    pre = ((main.get("lifecycle") or {}).get("preStop") or {})
    sleep_s = (pre.get("sleep") or {}).get("seconds", 0)
    cmd = (pre.get("exec") or {}).get("command") or []
    if len(cmd) == 2 and os.path.basename(cmd[0]) == "sleep":
        sleep_s = float(cmd[1])
    tgps = tmpl["spec"].get("terminationGracePeriodSeconds", 30)
    if not tgps > sleep_s + grace_ms / 1000:
        fail(dep_file, f"terminationGracePeriodSeconds {tgps} <= preStop {sleep_s}s + shutdown grace {grace_ms / 1000}s")
    if not (main.get("resources") or {}).get("requests", {}).get("cpu"):
        fail(dep_file, "no cpu request: the HPA's Utilization target needs one")
    checked += 4
    if svc:
        if not subset(svc["spec"].get("selector", {}), pod_labels):
            fail(svc_file, "spec.selector does not select the Deployment's pods")
        for p in svc["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in port_names:
                fail(svc_file, f"targetPort {p['targetPort']!r} is not a container port name")
        checked += 2
    if hpa:
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref.get("kind"), ref.get("name")) != ("Deployment", dep["metadata"]["name"]):
            fail(hpa_file, f"scaleTargetRef {ref} is not the Deployment {dep['metadata']['name']}")
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            fail(hpa_file, "minReplicas > maxReplicas")
        checked += 2
    if sm and svc:
        if not subset(sm["spec"]["selector"].get("matchLabels", {}), svc["metadata"].get("labels", {})):
            fail(sm_file, "spec.selector.matchLabels do not select the Service")
        svc_ports = {p.get("name") for p in svc["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in svc_ports:
                fail(sm_file, f"endpoint port {ep.get('port')!r} is not a Service port name")
        checked += 2
    if not errors:
        print(f"  ok  cross-references: {checked} checks (labels, named ports, env keys, grace periods)")

if errors:
    for e in errors:
        print(f"  FAIL {e}")
    sys.exit(1)
PY

# --- 2. docker compose --------------------------------------------------------------------
echo "== $compose_file: $(docker-compose version --short 2>/dev/null || echo '?') docker-compose config -q"
if docker-compose -f "$compose_file" config -q; then
  echo "  ok  $compose_file"
else
  echo "  FAIL $compose_file" >&2
  status=1
fi

# --- 3. the image test's tool check -------------------------------------------------------
# docker/test-image.sh installs what is missing; it must look for the real binaries (a shell
# function named podman once hid a missing podman). Its list must be exactly what PATH lacks.
echo "== docker/test-image.sh --list-missing"
expected=()
for tool in podman debootstrap jq curl; do type -P "$tool" >/dev/null || expected+=("$tool"); done
listed=$(docker/test-image.sh --list-missing)
if [ "$listed" = "${expected[*]}" ]; then
  echo "  ok  it would install: ${listed:-nothing}"
else
  echo "  FAIL it would install '$listed'; PATH lacks '${expected[*]}'" >&2
  status=1
fi

if [ "$status" -ne 0 ]; then
  echo "== deployment checks FAILED" >&2
  exit 1
fi
echo "== all deployment checks passed"
