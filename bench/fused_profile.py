#!/usr/bin/env python3
"""The cached decoder step (decoder_with_past_model.onnx) of an unfused model directory against
its fused copies (scripts/fuse_graphs.py): wall time per step, and time per op type from ONNX
Runtime's profiler, at batch 1 and 32, with 16 positions of self-attention cache and 64 encoder
positions (as bench/graphs.py).

    nice -n 10 .venv/bin/python bench/fused_profile.py models/t5-small-shape /tmp/t5-small-fused [MORE_DIRS...] \\
        [--batches 1,32] [--cycles 200] [--threads 1] [--graph decoder_with_past_model.onnx]

Made for a shared, busy machine: the variants run interleaved, one run each per cycle (order
rotating), and the results are ratios against the first directory: the median of the per-cycle
ratios, the ratio of medians and of 10th percentiles (the least disturbed runs), not absolute
figures. Per-op times come from separately profiled sessions, also interleaved (the profiler
adds its own overhead: compare op types between variants, not with the wall times).
"""

import argparse
import bisect
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(path: Path, threads: int, profile_dir: str | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_dir:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(profile_dir) / path.parent.name)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def step_feeds(model: Path, graph: str, batch: int, threads: int, enc_len: int = 64, past_len: int = 16) -> dict:
    rng = np.random.default_rng(0)
    if graph == "encoder_model.onnx":
        ids = rng.integers(5, 32000, size=(batch, enc_len), dtype=np.int64)
        return {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    encoder = session(model / "encoder_model.onnx", threads)
    first = session(model / "decoder_model.onnx", threads)
    ids = rng.integers(5, 32000, size=(batch, enc_len), dtype=np.int64)
    mask = np.ones_like(ids)
    hidden = encoder.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    start = np.zeros((batch, 1), np.int64)
    names = [o.name for o in first.get_outputs()]
    outs = first.run(None, {"input_ids": start, "encoder_hidden_states": hidden, "encoder_attention_mask": mask})
    feeds = {n.replace("present", "past_key_values"): v for n, v in zip(names, outs) if n.startswith("present")}
    for k in feeds:
        if ".decoder." in k:
            feeds[k] = np.repeat(feeds[k], past_len, axis=2)
    feeds.update({"input_ids": start, "encoder_attention_mask": mask})
    if "masked" in graph:
        feeds["decoder_attention_mask"] = np.ones((batch, past_len + 1), np.int64)
    return feeds


def interleaved_times(sessions: list, feeds: dict, cycles: int) -> list[list[float]]:
    """Milliseconds per run of each session, one run of each per cycle, order rotating: a load
    spike hits all variants alike instead of one block of runs."""
    for s in sessions:
        s.run(None, feeds)
    times = [[] for _ in sessions]
    for c in range(cycles):
        k = c % len(sessions)
        for i in list(range(len(sessions)))[k:] + list(range(len(sessions)))[:k]:
            t = time.perf_counter()
            sessions[i].run(None, feeds)
            times[i].append((time.perf_counter() - t) * 1000)
    return times


def op_profiles(paths: list[Path], feeds: dict, threads: int, runs: int) -> list[dict]:
    """Median microseconds per step by op type (ORT's profiler, kernel time), runs interleaved
    across the variants as above; the median over runs of each op type's per-run sum."""
    with tempfile.TemporaryDirectory() as tmp:
        sessions = []
        for i, p in enumerate(paths):
            d = Path(tmp) / str(i)
            d.mkdir()
            sessions.append(session(p, threads, str(d)))
        interleaved_times(sessions, feeds, runs)
        files = [s.end_profiling() for s in sessions]
        out = []
        for f in files:
            events = json.loads(Path(f).read_text())
            runs_ev = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")[1:]
            per_run = [defaultdict(float) for _ in runs_ev]
            starts = [r[0] for r in runs_ev]
            for e in events:
                if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                    j = bisect.bisect_right(starts, e["ts"]) - 1
                    if j >= 0 and e["ts"] <= runs_ev[j][1]:
                        per_run[j][e["args"]["op_name"]] += e["dur"]
            ops = set().union(*per_run)
            out.append({op: statistics.median(r.get(op, 0.0) for r in per_run) for op in ops})
        return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", type=Path, nargs="+", help="baseline (unfused) model directory first, then fused ones")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--cycles", type=int, default=200, help="interleaved runs of each variant at batch 1 (a quarter at larger batches)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (1: steadier on a busy machine)")
    p.add_argument("--graph", default="decoder_with_past_model.onnx", help="or encoder_model.onnx (64-token inputs)")
    p.add_argument("--json", type=Path, help="write the results here too")
    args = p.parse_args()
    base = args.dirs[0]
    labels = [f"{i}:{d}" for i, d in enumerate(args.dirs)]
    result = {"graph": args.graph, "threads": args.threads, "batches": {}}
    for b in (int(x) for x in args.batches.split(",")):
        feeds = step_feeds(base, args.graph, b, args.threads)
        sessions = [session(d / args.graph, args.threads) for d in args.dirs]
        cycles = args.cycles if b == 1 else max(10, args.cycles // 4)
        times = interleaved_times(sessions, feeds, cycles)
        profiles = op_profiles([d / args.graph for d in args.dirs], feeds, args.threads, max(10, cycles // 3))
        ops = sorted(set().union(*profiles), key=lambda o: -max(pr.get(o, 0.0) for pr in profiles))
        ratios = {}
        for i in range(1, len(sessions)):
            paired = [x / y for x, y in zip(times[i], times[0])]
            ratios[labels[i]] = {
                "paired_median": round(statistics.median(paired), 3),
                "median": round(statistics.median(times[i]) / statistics.median(times[0]), 3),
                "p10": round(pct(times[i], 10) / pct(times[0], 10), 3),
            }
        entry = {
            "cycles": cycles,
            "ms_per_step": {labels[i]: {"median": round(statistics.median(t), 3), "p10": round(pct(t, 10), 3)} for i, t in enumerate(times)},
            "time_ratio_vs_first": ratios,
            "op_us_per_step": {op: [round(pr.get(op, 0.0), 1) for pr in profiles] for op in ops},
            "op_total_us_per_step": [round(sum(pr.values()), 1) for pr in profiles],
        }
        result["batches"][b] = entry
        print(f"\n{args.graph}, batch {b}, {args.threads} thread(s), {cycles} interleaved cycles")
        for i, t in enumerate(times):
            print(f"  {labels[i]}: median {statistics.median(t):.2f} ms, p10 {pct(t, 10):.2f} ms")
        for lab, r in ratios.items():
            print(f"  {lab} / {labels[0]}: paired-ratio median {r['paired_median']:.3f}, ratio of medians {r['median']:.3f}, of p10s {r['p10']:.3f}")
        print("  per op type, us per step (profiler, median over runs): " + " | ".join(labels))
        for op in ops:
            vals = [pr.get(op, 0.0) for pr in profiles]
            if max(vals) >= 1.0:
                print(f"    {op:36s}" + "".join(f"{v:10.1f}" for v in vals))
        print(f"    {'sum':36s}" + "".join(f"{sum(pr.values()):10.1f}" for pr in profiles))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
