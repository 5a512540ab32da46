#!/usr/bin/env python3
"""Turns bench/run.sh's JSON lines into the markdown table (tokens/s and ratios)."""

import json
import os
import platform
import sys
from datetime import date

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
shape = sys.argv[2]
flags = sys.argv[3] if len(sys.argv) > 3 else ""
tps: dict[str, dict[int, float]] = {}
lat = {}
open_loop = None
for r in rows:
    if r["engine"] == "t5serve":
        tps.setdefault("t5serve (HTTP)", {})[r["batch"]] = r["run"]["tokens_per_s"]
        lat[r["batch"]] = r["run"]
    elif r["engine"] == "t5serve-open":
        open_loop = r["run"]
    else:
        tps.setdefault(r["engine"], {})[r["batch"]] = r["tokens_per_s"]

batches = (1, 8, 32)
print(f"# t5serve benchmark, {shape} shape, {date.today()} on {platform.node()} ({os.cpu_count()} cores)\n")
print("64-token inputs, exactly 32 new tokens per request, greedy. Generated tokens/s "
      "(t5serve: concurrency through HTTP; others: batch size in-process)."
      + (f" t5serve flags: `{flags}`." if flags else "") + "\n")
print("| engine | " + " | ".join(str(b) for b in batches) + " |")
print("|---|" + "---|" * len(batches))
for name, v in tps.items():
    print(f"| {name} | " + " | ".join(f"{v.get(b, float('nan')):.0f}" for b in batches) + " |")
ours = tps.get("t5serve (HTTP)", {})
print("\nRatio t5serve / engine:\n")
print("| engine | " + " | ".join(str(b) for b in batches) + " |")
print("|---|" + "---|" * len(batches))
for name, v in tps.items():
    if name.startswith("t5serve"):
        continue
    print(f"| {name} | " + " | ".join(f"{ours.get(b, 0) / v[b]:.2f}" if b in v else "-" for b in batches) + " |")
print("\nt5serve latency (closed loop):\n")
print("| concurrency | p50 ms | p99 ms | mean time to first token ms |")
print("|---|---|---|---|")
for b in batches:
    if b in lat:
        print(f"| {b} | {lat[b]['p50_s'] * 1000:.0f} | {lat[b]['p99_s'] * 1000:.0f} | {lat[b]['ttft_mean_s'] * 1000:.1f} |")
if open_loop:
    single = lat.get(1, {}).get("p50_s", float("nan"))
    print(f"\nOpen loop (Poisson, {open_loop['param']:.2f} req/s = 50% of saturation, {open_loop['requests']} requests): "
          f"p50 {open_loop['p50_s'] * 1000:.0f} ms, p99 {open_loop['p99_s'] * 1000:.0f} ms "
          f"= {open_loop['p99_s'] / single:.2f}x the single-request p50 latency ({single * 1000:.0f} ms).")
