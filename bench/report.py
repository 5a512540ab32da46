#!/usr/bin/env python3
"""Turns bench/run.sh's JSON lines into markdown: tokens/s of every engine, t5serve's ratios
against each, the targets of the batching and performance issues, and t5serve's latencies.
With --charts STEM it also draws them (bench/charts.py) as STEM-tokens.svg and STEM-open-loop.svg
and links them from the markdown; --open-loop LOG adds bench/open_loop.sh's sweep (its JSON lines,
OUT, or its printed text) to the open-loop chart and states, for each of its curves, the highest
tested rate whose p99 stays within 2x the single-request p50 (charts.within_2x). To redraw the
charts of a committed run:

    python3 bench/report.py bench/results/NAME.jsonl t5-small "" --charts bench/results/NAME >/dev/null
"""

import json
import os
import platform
import statistics
import sys
from datetime import date

import charts


chart_stem = charts.option("--charts")
open_log = charts.option("--open-loop")
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
shape = sys.argv[2]
flags = sys.argv[3] if len(sys.argv) > 3 else ""
BATCHES = (1, 8, 32)
# The performance targets (issue 26), as t5serve's tokens/s over the other engine's at a concurrency:
# fp32 against the best fp32 engine, int8 against CTranslate2 int8.
FP32_BARS = {32: 1.2, 1: 1.0}
INT8_BARS = {1: 2.0, 32: 1.5}
tps: dict[str, dict[int, float]] = {}
lat: dict[str, dict[int, dict]] = {}
open_loop: dict[str, dict] = {}
# Paired rounds: {batch: {round: (t5serve-int8 tokens/s, ctranslate2-int8 tokens/s)}}.
paired: dict[int, dict[int, list]] = {}
# The thread setting an engine was fastest with, by batch (CTranslate2: intra_threads=2 or inter_threads=2).
settings: dict[str, dict[int, str]] = {}
cpu_report = next((r["cpu"] for r in rows if r["engine"] == "cpu"), None)
for r in rows:
    name = r["engine"]
    if name == "cpu":
        continue
    if name.startswith("paired-"):
        v = r["run"]["tokens_per_s"] if "run" in r else r["tokens_per_s"]
        slot = paired.setdefault(r["batch"], {}).setdefault(r["round"], [None, None])
        slot[0 if name == "paired-t5serve-int8" else 1] = v
    elif name.startswith("t5serve") and name.endswith("-open"):
        open_loop[name.removesuffix("-open")] = r["run"]
    elif name.startswith("t5serve"):
        tps.setdefault(name, {})[r["batch"]] = r["run"]["tokens_per_s"]
        lat.setdefault(name, {})[r["batch"]] = r["run"]
    else:
        tps.setdefault(name, {})[r["batch"]] = r["tokens_per_s"]
        if "setting" in r:
            settings.setdefault(name, {})[r["batch"]] = r["setting"]
ours = [n for n in tps if n.startswith("t5serve")]
others = [n for n in tps if not n.startswith("t5serve")]


def cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


if cpu_report:
    cpu, cores = cpu_report["model_name"], cpu_report["cores"]
else:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    cores = os.cpu_count()
print(f"# t5serve benchmark, {shape} shape, {date.today()} on {platform.node()} ({cores} cores, {cpu})\n")
# int8 kernels differ by instruction set (src/model/cpu.rs): figures are only compared with runs
# on the same kernel.
if cpu_report:
    print(
        f"CPU flags that decide ONNX Runtime's kernels: {', '.join(cpu_report['features']) or 'none of them'}; "
        f"int8 kernel {cpu_report['int8_kernel']} (saturating: {str(cpu_report['int8_kernel_saturates']).lower()}).\n"
    )
else:
    print("CPU flags: not recorded (a run made before bench/run.sh recorded them).\n")
print(
    "64-token inputs, exactly 32 new tokens per request, greedy. Generated tokens/s: t5serve at that many "
    "concurrent HTTP clients, the others at that batch size in-process (optimum: ORTModelForSeq2SeqLM + "
    "generate; CTranslate2: Translator.translate_batch, the faster of one batch on 2 intra_threads and two "
    "half batches on inter_threads=2), on the machine's 2 cores."
    + (f" t5serve flags: `{flags}`." if flags else "")
    + "\n"
)
print("| engine | " + " | ".join(str(b) for b in BATCHES) + " |")
print("|---|" + "---|" * len(BATCHES))
for name, v in tps.items():
    print(f"| {name} | " + " | ".join(cell(v.get(b)) for b in BATCHES) + " |")
for name, by_b in settings.items():
    print(f"\n{name} was fastest with: " + ", ".join(f"{by_b[b]} at {b}" for b in BATCHES if b in by_b) + ".")

if others:
    print("\nRatio t5serve / engine:\n")
    print("| engine | " + " | ".join(f"{o.removeprefix('t5serve-')} @ {b}" for o in ours for b in BATCHES) + " |")
    print("|---|" + "---|" * (len(ours) * len(BATCHES)))
    for name in others:
        v = tps[name]
        cells = [f"{tps[o][b] / v[b]:.2f}" if b in v and b in tps[o] else "-" for o in ours for b in BATCHES]
        print(f"| {name} | " + " | ".join(cells) + " |")

    def best(kind: str, b: int) -> tuple[str, float]:
        cands = [(n, tps[n][b]) for n in others if kind in n and b in tps[n]]
        return max(cands, key=lambda c: c[1]) if cands else ("-", float("nan"))

    print("\nTargets (same run):\n")
    print("| target | measured | bar | met |")
    print("|---|---|---|---|")
    checks = []
    if "t5serve-fp32" in tps:
        for b, bar in FP32_BARS.items():
            n, v = best("fp32", b)
            checks.append((f"fp32 at concurrency {b} / best fp32 engine ({n})", tps["t5serve-fp32"][b] / v, bar))
    if "t5serve-int8" in tps and "ctranslate2-int8" in tps:
        for b, bar in INT8_BARS.items():
            checks.append((f"int8 at concurrency {b} / ctranslate2-int8", tps["t5serve-int8"][b] / tps["ctranslate2-int8"][b], bar))
    for b, rounds in sorted(paired.items()):
        ratios = sorted(t / c for t, c in rounds.values() if t and c)
        if ratios:
            median = statistics.median(ratios)
            each = ", ".join(f"{x:.2f}" for x in ratios)
            checks.append((f"int8 at concurrency {b} / ctranslate2-int8, median of {len(ratios)} paired rounds ({each})", median, INT8_BARS[b]))
    for label, ratio, bar in checks:
        print(f"| {label} | {ratio:.2f}x | >= {bar}x | {'yes' if ratio >= bar else 'no'} |")
    for name, run in open_loop.items():
        single = lat[name][1]["p50_s"]
        ratio = run["p99_s"] / single
        print(f"| {name} open-loop p99 / single-request p50 | {ratio:.2f}x | <= 2x | {'yes' if ratio <= 2 else 'no'} |")

for name in ours:
    print(f"\n{name} latency (closed loop):\n")
    print("| concurrency | p50 ms | p99 ms | mean time to first token ms |")
    print("|---|---|---|---|")
    for b in BATCHES:
        if b in lat[name]:
            r = lat[name][b]
            print(f"| {b} | {r['p50_s'] * 1000:.0f} | {r['p99_s'] * 1000:.0f} | {r['ttft_mean_s'] * 1000:.1f} |")
    if name in open_loop:
        o = open_loop[name]
        single = lat[name][1]["p50_s"]
        print(
            f"\nOpen loop (Poisson, {o['param']:.2f} req/s = 50% of the concurrency-32 rate, {o['requests']} requests): "
            f"p50 {o['p50_s'] * 1000:.0f} ms, p99 {o['p99_s'] * 1000:.0f} ms = {o['p99_s'] / single:.2f}x the "
            f"single-request p50 ({single * 1000:.0f} ms); mean time to first token {o['ttft_mean_s'] * 1000:.1f} ms."
        )

open_text = open(open_log).read() if open_log else None
if open_text:
    for c in charts.open_curves(charts.open_loop_log(open_text)).values():
        w = charts.within_2x(c)
        print(f"\nOpen-loop sweep, {c.name}: {charts.describe(w) if w else 'no single-request p50 recorded'}.")

if chart_stem:
    drawn = charts.write(rows, shape, chart_stem, open_text)
    if drawn:
        print("\nCharts: " + ", ".join(f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in drawn) + ".")
