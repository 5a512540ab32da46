#!/usr/bin/env python3
"""Where the time goes under bench/run.sh's workload (64-token inputs, exactly 32 new tokens,
greedy) on one model directory, for a target that is not met.

1. The server, over HTTP, at each concurrency (closed loop, bench/work/prompt.txt): the process's
   CPU seconds per wall second (of the machine's cores), and the decode lanes' and prefill
   thread's run time from /metrics: prefill runs (encoder + first step) and cached steps, with
   the mean rows per step and per prefill and the mean milliseconds of each. What the CPU spent
   outside those runs is the server's own work (HTTP, tokenizing, scheduling, cache moves).
2. ONNX Runtime alone on the same graphs, at the mean batch the server ran (rounded), on the
   server's thread count: milliseconds per run and per op type (ORT's profiler), grouped into
   int8 matrix products, float matrix products, attention, normalisation, data movement and
   elementwise ops; and the rate of the int8 kernels in multiply-adds per second per thread (each
   int8 weight element is one multiply-add per input position: 64 per row in the encoder, 1 in a
   step), over their share of the run time.
3. The weights a cached step reads whole (its initializers other than the token embedding, which
   is read a row per token), in bytes per step time, against the
   machine's memory copy rate (numpy, 256 MiB): where the two meet, the step at that batch is
   bound by reading its weights from memory, not by arithmetic.

    .venv/bin/python bench/where_time_goes.py [MODEL_DIR] [--clients 1,32] [--requests 192] \\
        [--binary target/release/t5serve] [--threads 2] [--json OUT]

Needs bench/run.sh's prompt and the release loadgen. Not a test: no assertions; figures are of
this machine (the CPU report is printed and recorded).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import openai_bench  # noqa: E402  (its /proc CPU-time reader)
from fused_profile import interleaved_times, op_profiles, session, step_feeds  # noqa: E402

NEW_TOKENS = 32
GROUPS = {
    "int8 matmul": {"DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeLinear", "MatMulNBits"},
    "float matmul": {"MatMul", "FusedMatMul", "Gemm"},
    "attention": {"Softmax", "MultiHeadAttention"},
    "normalisation": {"SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "Pow", "ReduceMean", "Sqrt", "Reciprocal"},
    "data movement": {"Concat", "Reshape", "Transpose", "Gather", "Slice", "Unsqueeze", "Squeeze", "Shape", "Expand", "Cast", "Where", "Range", "ConstantOfShape", "Identity"},
}


def group_of(op: str) -> str:
    return next((g for g, ops in GROUPS.items() if op in ops), "elementwise and other")


def metrics(url: str) -> dict[str, float]:
    """Sums of every sample of each family (all models, lanes and label values)."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = re.sub(r"\{.*\}", "", line.rsplit(" ", 1)[0]), float(line.rsplit(" ", 1)[1])
        out[name] = out.get(name, 0.0) + value
    return out


def serve(binary: str, model: Path, port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [binary, "serve", "--port", str(port), "--model", str(model), "--max-concurrent-requests", "1024"],
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.kill()
    sys.exit(f"the server did not start; see {log}")


def loadgen(url: str, clients: int, requests: int, prompt: Path) -> dict:
    out = subprocess.run(["target/release/examples/loadgen", url, "closed", str(clients), str(requests), str(prompt), str(NEW_TOKENS)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def server_split(url: str, pid: int, clients: int, requests: int, prompt: Path) -> dict:
    m0, c0 = metrics(url), openai_bench.cpu_seconds(pid)
    run = loadgen(url, clients, requests, prompt)
    m1, c1 = metrics(url), openai_bench.cpu_seconds(pid)
    d = {k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in m1}
    wall = run["wall_s"]
    prefill_s, prefills = d["t5serve_encoder_duration_seconds_sum"], d["t5serve_encoder_duration_seconds_count"]
    step_s, steps = d["t5serve_decode_step_duration_seconds_sum"], d["t5serve_decode_step_duration_seconds_count"]
    rows = d["t5serve_batch_size_sum"]
    return {
        "clients": clients, "requests": run["requests"], "wall_s": wall, "tokens_per_s": run["tokens_per_s"],
        "p50_ms": run["p50_s"] * 1000,
        "cpu_per_wall_s": (c1 - c0) / wall,
        "prefill_s_per_wall_s": prefill_s / wall, "step_s_per_wall_s": step_s / wall,
        "prefills": prefills, "rows_per_prefill": run["requests"] / prefills if prefills else 0.0,
        "prefill_ms": 1000 * prefill_s / prefills if prefills else 0.0,
        "steps": steps, "rows_per_step": rows / steps if steps else 0.0,
        "step_ms": 1000 * step_s / steps if steps else 0.0,
    }


def weights_read(graph: Path) -> tuple[int, int]:
    """(bytes, int8 elements) of the initializers that some node other than a Gather reads: a run
    reads them whole, where a Gather (the token embedding) reads one row per token. Each int8
    element is one multiply-add per input position (row x token) of the run."""
    model = onnx.load(str(graph), load_external_data=False)
    read_whole = {i for n in model.graph.node if n.op_type != "Gather" for i in n.input}
    size, int8 = 0, 0
    for t in model.graph.initializer:
        if t.name in read_whole:
            n = int(np.prod(t.dims))
            size += n * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
            int8 += n if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) else 0
    return size, int8


def copy_rate_gb_s() -> float:
    """Bytes read + written per second copying 256 MiB (best of 5): the machine's memory rate."""
    src = np.ones(1 << 25, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.nbytes / best / 1e9


def graph_profile(model: Path, graph: str, batch: int, threads: int, cycles: int) -> dict:
    feeds = step_feeds(model, graph, batch, threads)
    times = interleaved_times([session(model / graph, threads)], feeds, cycles)[0]
    ops = op_profiles([model / graph], feeds, threads, max(10, cycles // 2))[0]
    total = sum(ops.values())
    groups: dict[str, float] = {}
    for op, us in ops.items():
        groups[group_of(op)] = groups.get(group_of(op), 0.0) + us
    return {
        "graph": graph, "batch": batch, "threads": threads, "ms_per_run": statistics.median(times),
        "op_us": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "group_share": {g: us / total for g, us in sorted(groups.items(), key=lambda kv: -kv[1])},
    }


def print_server(s: dict, cores: int) -> None:
    print(f"\n## Server, {s['clients']} client(s): {s['tokens_per_s']:.0f} tokens/s, p50 {s['p50_ms']:.0f} ms, {s['requests']} requests")
    print(f"- CPU: {s['cpu_per_wall_s']:.2f} of {cores} cores busy")
    print(f"- prefill runs: {s['prefill_s_per_wall_s']:.2f} s per wall second, {s['prefills']:.0f} runs, "
          f"{s['rows_per_prefill']:.1f} rows each, {s['prefill_ms']:.1f} ms each")
    print(f"- cached steps: {s['step_s_per_wall_s']:.2f} s per wall second, {s['steps']:.0f} steps, "
          f"{s['rows_per_step']:.1f} rows each, {s['step_ms']:.2f} ms each")


def print_graph(g: dict, weights: tuple[int, int], positions: int, rate: float | None) -> None:
    """`positions`: input positions per row (64 for the encoder, 1 for a step)."""
    print(f"\n## ONNX Runtime alone: {g['graph']}, batch {g['batch']}, {g['threads']} thread(s): {g['ms_per_run']:.2f} ms per run")
    for name, share in g["group_share"].items():
        print(f"- {name}: {100 * share:.0f}%")
    print("- top op types (us per run): " + ", ".join(f"{op} {us:.0f}" for op, us in list(g["op_us"].items())[:8]))
    size, int8 = weights
    if int8:
        macs = int8 * positions * g["batch"]
        seconds = g["ms_per_run"] / 1000 * g["group_share"].get("int8 matmul", 0.0)
        g["int8_gmac_per_s_per_thread"] = macs / seconds / 1e9 / g["threads"] if seconds else None
        print(f"- int8 multiply-adds: {macs / 1e9:.2f} G per run, {g['int8_gmac_per_s_per_thread']:.0f} G/s per thread "
              "in the int8 matmul kernels (their share of the run time)")
    if rate:
        gb_s = size / (g["ms_per_run"] / 1000) / 1e9
        print(f"- weights read per run: {size / 1e6:.1f} MB, {gb_s:.1f} GB/s ({100 * gb_s / rate:.0f}% of the memory copy rate)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, nargs="?", default=Path("models/t5-small-shape-int8"))
    p.add_argument("--clients", default="1,32")
    p.add_argument("--requests", type=int, default=192, help="requests per concurrency (a quarter at 1 client)")
    p.add_argument("--binary", default="target/release/t5serve")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads of the graph profile; 0: as the server ran (one per core for one client "
                        "on the solo sessions, the cores shared by the decode lanes above that)")
    p.add_argument("--cycles", type=int, default=40)
    p.add_argument("--port", type=int, default=18935)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    prompt = Path("bench/work/prompt.txt")
    if not prompt.exists():
        sys.exit("no bench/work/prompt.txt: run bench/run.sh first")
    cpu = json.loads(subprocess.run([args.binary, "cpu"], check=True, capture_output=True, text=True).stdout)
    cores = os.cpu_count() or 1
    print(f"CPU: {json.dumps(cpu)}; {cores} cores; model {args.model}")
    url = f"http://127.0.0.1:{args.port}"
    log = Path("bench/work/where-time-goes-server.log")
    proc = serve(args.binary, args.model, args.port, log)
    found = re.search(r"decode_lanes=(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", log.read_text()))
    lanes = int(found.group(1)) if found else 1
    print(f"decode lanes: {lanes}")
    try:
        loadgen(url, 4, 8, prompt)
        split = []
        for c in (int(x) for x in args.clients.split(",")):
            split.append(server_split(url, proc.pid, c, max(args.requests if c > 1 else args.requests // 4, 16), prompt))
            print_server(split[-1], cores)
    finally:
        proc.terminate()
        proc.wait()
    rate = copy_rate_gb_s()
    print(f"\nmemory copy rate (numpy, 256 MiB, read + write): {rate:.1f} GB/s")
    step_graph = "decoder_with_past_model.onnx"
    step_weights = weights_read(args.model / step_graph)
    encoder_weights = weights_read(args.model / "encoder_model.onnx")
    graphs = []
    for s in split:
        threads = args.threads or (cores if s["clients"] == 1 else max(1, cores // lanes))
        batch = max(1, round(s["rows_per_step"]))
        graphs.append(graph_profile(args.model, step_graph, batch, threads, args.cycles))
        print_graph(graphs[-1], step_weights, 1, rate)
        enc_batch = max(1, round(s["rows_per_prefill"]))
        graphs.append(graph_profile(args.model, "encoder_model.onnx", enc_batch, threads, max(10, args.cycles // 2)))
        print_graph(graphs[-1], encoder_weights, 64, None)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "model": str(args.model), "lanes": lanes, "server": split, "copy_rate_gb_s": rate,
                                         "step_weights_read": step_weights, "encoder_weights_read": encoder_weights, "graphs": graphs}, indent=1))


if __name__ == "__main__":
    main()
