#!/usr/bin/env bash
# Runs every test from a fresh clone: brings ONNX Runtime (PyPI wheel), then the Rust suite
# (unit tests, real-ORT parity tests on the committed models, HTTP tests on a real socket), then
# a real Prometheus scraping the service, the TGI client test with the real client from PyPI, and
# the deployment files (Kubernetes manifests, compose file) against their schemas.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_ort.sh
# Formatting and lints first: a failure here costs seconds, not the whole run.
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked --all-targets --features fault-injection -- -D warnings
# The bundled int8 model's oracle, computed on this machine: ONNX Runtime's int8 kernel depends on
# the CPU (src/model/cpu.rs), so its scores are only true where they were computed. optimum +
# transformers (scripts/requirements.txt) run the same files here, into target/cpu-reference/,
# which tests/bundled_model.rs and tests/load.rs read (tests/common/mod.rs, cpu_fixture).
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --disable-pip-version-check -r scripts/requirements.txt
cargo build --locked
.venv/bin/python scripts/cpu_reference.py target/cpu-reference --binary target/debug/t5serve
cargo test --locked
# Failure handling, with the test-only fault hooks (a failing step, a panicking handler, a dead
# decode thread; src/faults.rs).
cargo test --locked --features fault-injection --test faults
# A real Prometheus (Debian's package; installed when missing) scrapes the real binary.
tests/prometheus.sh target/debug/t5serve
# The OpenAPI document is valid OpenAPI; the real TGI client (huggingface_hub) works against the
# real binary; the real binary's responses validate against the OpenAPI schemas.
if [ ! -x .venv-test/bin/python ]; then python3 -m venv .venv-test; fi
.venv-test/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt
.venv-test/bin/openapi-spec-validator openapi.yaml
.venv-test/bin/python tests/python/test_tgi_client.py target/debug/t5serve
# The official openai client against the OpenAI-compatible routes served so far.
.venv-test/bin/python tests/python/test_openai_client.py target/debug/t5serve
.venv-test/bin/python tests/python/test_openapi_responses.py target/debug/t5serve
# TEI's /rerank and Cohere's /v1/rerank (Cohere's own client) against onnxruntime.
.venv-test/bin/python tests/python/test_rerank.py target/debug/t5serve
# t5serve batch on OpenAI's batch file format, checked with the openai package's own models.
.venv-test/bin/python tests/python/test_batch_openai.py target/debug/t5serve
# The Open Inference Protocol's REST routes with Triton's and KServe's own clients.
.venv-test/bin/python tests/python/test_oip_client.py target/debug/t5serve
# ... and over gRPC with Triton's client (its own process: it cannot be imported beside kserve).
.venv-test/bin/python tests/python/test_oip_grpc.py target/debug/t5serve
# The KServe manifests (deploy/kserve) against the kserve SDK's own resource models.
.venv-test/bin/python tests/python/test_kserve_manifests.py target/debug/t5serve
# The int8 export path: scripts/quantize_model.py on the tiny model, served by the real binary,
# equal to a reference greedy loop over the same int8 graphs.
.venv-test/bin/python tests/python/test_int8_export.py target/debug/t5serve
# The benchmark charts (bench/charts.py): points, bars and ratio labels where the figures put them.
python3 tests/python/test_charts.py
# The int4 export path: scripts/quantize_model.py --quantize int4 on the tiny model (MatMulNBits,
# accuracy_level 4), served by the real binary, equal to a reference greedy loop over the same graphs.
.venv-test/bin/python tests/python/test_int4_export.py target/debug/t5serve
# The fused-graph rewrites (scripts/fuse_graphs.py) against the unfused graphs: outputs within the
# derived tolerance, greedy ids equal, and the real binary serving the fused tiny model.
.venv-test/bin/python tests/python/test_fused_graphs.py target/debug/t5serve
# The exporter's removal of the masked decoder's per-step copies (scripts/t5tools.drop_copies).
.venv-test/bin/python tests/python/test_drop_copies.py
# Property-based conformance to openapi.yaml (schemathesis, fixed seed and example count).
tests/schemathesis.sh target/debug/t5serve
# Kubernetes manifests against the official schemas (strict), the compose file with docker-compose.
scripts/check_deploy.sh
