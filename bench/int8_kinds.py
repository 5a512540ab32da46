#!/usr/bin/env python3
"""Which kind of int8 model suits THIS CPU (issue 26, item 2): signed and unsigned weights,
per-tensor and per-channel, full and reduced range, for speed and for agreement with fp32.

    nice -n 15 .venv/bin/python bench/int8_kinds.py [FP32_DIR] [--numbers-ckpt DIR | --numbers-fp32 DIR]
        [--threads 1,2] [--batches 1,32] [--case-seconds 20] [--prompts 32] [--steps 32] [--numbers N]
        [--skip-speed] [--skip-agreement] [--binary target/release/t5serve | --cpu JSON] [--quick]

FP32_DIR (default models/t5-small-shape, made by scripts/make_test_models.py --shape t5-small
when absent) is an exported fp32 directory with the split decoders. Its int8 copies, one per kind, are written
with scripts/quantize_model.py into bench/work/int8-kinds/NAME/KIND (reused while the source and
the settings are unchanged):

    s8-tensor-rr   --reduce-range (the exporter's default) s8-channel-rr  --per-channel --reduce-range
    s8-tensor      --full-range                           s8-channel     --per-channel --full-range
    u8-tensor      --weights uint8                        u8-channel     --weights uint8 --per-channel

1. Speed: onnxruntime's Python API, no server. The encoder on 64-token inputs and the cached step
   (decoder_with_past_model.onnx, and decoder_with_past_masked.onnx with an all-ones mask when
   the directory has it: the graph the bundled layout runs at every step) with 16 positions of
   self-attention cache, at each batch of --batches, with each intra-op thread count of --threads
   (inputs and sessions as bench/fused_profile.py builds them: spinning off, so that the seven
   sessions' thread pools do not spin against each other). Per graph, batch and thread count the
   kinds run interleaved, one run each per cycle, order rotating (fused_profile.interleaved_times),
   as many cycles as fit in --case-seconds (at least 14), so machine drift hits every kind alike;
   the sessions are created afresh in 7 blocks, the creation order rotated each block, because
   the session created last ran faster than identical ones created before it (see speed()).
   Besides the six kinds a second session of the default's files runs as a control ("A/A"): its
   ratio to the default is the noise floor of the run. Figures: median ms per run, and the median
   over cycles of each cycle's ratio to the default.
2. Agreement with fp32, greedy (bench/int8_agreement.py, run as is): the share of tokens equal
   to fp32's before the first divergence and the share of whole sequences equal, --prompts prompts
   x --steps steps, one prompt at a time, one thread. On the t5-small shape (random weights) this
   is a weak probe; the bundled model's accuracy below is the real one.
3. Optional, the bundled numbers model: --numbers-ckpt DIR (a checkpoint of
   scripts/train_default_model.py, e.g. .cache/default-ckpt-v3 once its training has finished:
   exported to fp32 with scripts/export_model.py into bench/work/int8-kinds/numbers-NAME/fp32) or
   --numbers-fp32 DIR (an fp32 export already made), quantized to the six kinds like FP32_DIR,
   then the held-out exact match per number task of fp32 and each kind (scripts/
   export_default_model.py's evaluate_full: optimum + transformers generate, greedy, as
   bench/numbers_accuracy.py and the model card), on --numbers held-out numbers (default all),
   in a child process (importing train_default_model re-executes the process with another
   malloc setting, which must not reach the speed figures).

The CPU (`t5serve cpu` of --binary, default target/release/t5serve or else target/debug/t5serve,
never a build; with the model name and cores, as bench/serve.sh's cpu_report) and the
figures go to bench/results/DATE-int8-kinds-NAME.jsonl and .md, with a recommended default for
this CPU by the rule stated in the report (RULE below). --quick: a smoke run of the script (1
thread, batches 1 and 2, 0.5 s per case, 2 prompts x 4 steps, 12 numbers), written to
bench/work/int8-kinds/results unless --results-dir says otherwise.

Run time on an idle 2-core machine, t5-small shape, defaults, no numbers model (estimated, not
measured yet): 10-15 minutes: quantization 2-4 (per-channel takes several times longer than
per-tensor), speed 6-7 (2 thread counts x 6 cases x 20 s, plus 294 session loads), agreement 1-2.
The numbers model adds its export (~1 min), its quantization (~1 min) and 7 evaluations of 3,000
numbers x 6 tasks (roughly 15-30 minutes; --numbers 1000 for a third of it). The figures hold for this CPU's int8 kernel only (src/model/cpu.rs): compare runs whose CPU
lines agree. Not a test: no assertions.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "scripts"))
import fused_profile  # noqa: E402  (session, step_feeds, interleaved_times)
import t5tools  # noqa: E402

# name -> scripts/quantize_model.py flags, each explicit (the exporter's default is named, not
# implied). The first is the exporter's default kind and the baseline: 7-bit signed weights since
# this script's AVX2 run (bench/results/2026-12-03-1021-int8-kinds-t5-small-shape.md) recommended
# them. Every kind is quantized unfused (--no-fuse below), where the exporter's default also fuses.
KINDS = {
    "s8-tensor-rr": ["--reduce-range"],
    "s8-tensor": ["--full-range"],
    "s8-channel-rr": ["--per-channel", "--reduce-range"],
    "s8-channel": ["--per-channel", "--full-range"],
    "u8-tensor": ["--weights", "uint8"],
    "u8-channel": ["--weights", "uint8", "--per-channel"],
}
DEFAULT = next(iter(KINDS))
CONTROL = f"{DEFAULT} (A/A)"
WORK = ROOT / "bench" / "work" / "int8-kinds"
ENC_LEN, PAST_LEN = 64, 16
# Below this, a speed difference is not believed, whatever the A/A control says.
MIN_NOISE = 0.02
# Greedy agreement (tokens before divergence) may fall this many points below the default's, or
# one prompt's worth (100 / prompts) where that is more.
AGREEMENT_POINTS = 1.0
GRAPH_ORDER = ("encoder_model.onnx", "decoder_with_past_model.onnx", "decoder_with_past_masked.onnx")

RULE = (
    "A kind qualifies when its greedy agreement with fp32 (tokens before the first divergence) is at "
    f"most {AGREEMENT_POINTS:g} point, or one prompt's worth (100 / prompts) where that is more, below the "
    "default's, and, when the numbers model ran, no number task's held-out exact match falls more than 1 point "
    "below fp32's (the bundling rule of scripts/export_default_model.py). Its speed score is the geometric mean, over every timed graph, batch and "
    f"thread count, of its median per-cycle time ratio to the default ({DEFAULT}). The noise is the largest "
    f"distance from 1 of the A/A control's ratios, at least {MIN_NOISE:g}. Among the qualifying kinds whose score "
    "is within the noise of the best one, the recommendation prefers, in order: one that cannot saturate on this "
    "CPU's int8 kernel (only when the kernel saturates: reduced range or unsigned weights), the default, the "
    "lowest score. No qualifying kind: serve fp32."
)


def cpu_report(binary: Path | None, given: str | None) -> dict:
    """bench/serve.sh's cpu_report: the model name and cores, then what `t5serve cpu` says."""
    if given:
        return json.loads(given)
    name = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    return {"model_name": name, "cores": os.cpu_count(), **t5tools.cpu_report(binary)}


def may_saturate(cpu: dict, quant: dict) -> bool:
    """src/model/cpu.rs int8_may_saturate: signed full-range weights on a saturating kernel."""
    return bool(cpu.get("int8_kernel_saturates")) and quant["weight_type"] == "QInt8" and not quant.get("reduce_range")


def source_stamp(src: Path) -> dict:
    return {
        "source": str(src.resolve()),
        "graphs": {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(src.glob("*.onnx"))},
    }


def quantize_kinds(src: Path, dest: Path, kinds: list[str], force: bool) -> dict[str, Path]:
    """Each kind's int8 copy of `src` under `dest`, by scripts/quantize_model.py; a copy made
    from the same source files with the same flags (its stamp beside it) is kept."""
    import onnxruntime

    out = {}
    for kind in kinds:
        d = dest / kind
        stamp = dest / f"{kind}.source.json"
        want = dict(source_stamp(src), flags=KINDS[kind], onnxruntime=onnxruntime.__version__)
        if not force and (d / t5tools.QUANTIZATION_FILE).exists() and stamp.exists() and json.loads(stamp.read_text()) == want:
            print(f"  {kind}: kept {d}", flush=True)
        else:
            t = time.time()
            stamp.unlink(missing_ok=True)
            # Unfused: the kinds differ in their matrix products, which fusing leaves alone, and
            # fusing each copy would add its verification to every kind.
            cmd = [sys.executable, str(ROOT / "scripts" / "quantize_model.py"), str(src), str(d), *KINDS[kind], "--no-fuse"]
            # onnxruntime's advice to pre-process, once per graph, is left out; any other output is shown.
            run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            noise = [l for l in run.stderr.splitlines() if "consider to run pre-processing" not in l]
            if noise or run.returncode:
                print("\n".join(noise), file=sys.stderr, flush=True)
            if run.returncode:
                raise SystemExit(f"{' '.join(cmd)}: exit {run.returncode}")
            stamp.write_text(json.dumps(want) + "\n")
            print(f"  {kind}: {' '.join(KINDS[kind])} -> {d} ({time.time() - t:.0f} s)", flush=True)
        out[kind] = d
    return out


def speed(dirs: dict[str, Path], threads: list[int], batches: list[int], case_seconds: float, masked: bool) -> list[dict]:
    """One row per (graph, batch, threads, kind): median ms, and the median per-cycle ratio to
    the default; the control (a second session of the default's files) is one of the kinds.

    The sessions of a graph are created afresh in as many blocks as there are sessions, the
    creation order rotated by one each block (a Latin square), and each block runs its share of
    the cycles at every batch: on the 2-core VM the session created last ran 3-10% faster than
    identical ones created before it, which a fixed order would credit to one kind."""
    graphs = list(GRAPH_ORDER[:2])
    if masked and all((d / t5tools.MASKED_WITH_PAST).exists() for d in dirs.values()):
        graphs.append(t5tools.MASKED_WITH_PAST)
    names = [*dirs, CONTROL]
    paths = [*dirs.values(), dirs[DEFAULT]]
    base = names.index(DEFAULT)
    n = len(paths)
    rows = []
    for n_threads in threads:
        for graph in graphs:
            feeds = {b: fused_profile.step_feeds(dirs[DEFAULT], graph, b, n_threads, ENC_LEN, PAST_LEN) for b in batches}
            times = {b: [[] for _ in paths] for b in batches}
            per_block = {}
            for block in range(n):
                created = {i: fused_profile.session(paths[i] / graph, n_threads) for i in [*range(block, n), *range(block)]}
                sessions = [created[i] for i in range(n)]
                for b in batches:
                    if b not in per_block:
                        # One warm run each (the first run allocates), then one timed: the cost of a cycle.
                        for s in sessions:
                            s.run(None, feeds[b])
                        t = time.perf_counter()
                        for s in sessions:
                            s.run(None, feeds[b])
                        per_block[b] = max(2, math.ceil(case_seconds / max(1e-6, time.perf_counter() - t) / n))
                    for acc, ts in zip(times[b], fused_profile.interleaved_times(sessions, feeds[b], per_block[b])):
                        acc.extend(ts)
                del created, sessions
            for b in batches:
                for name, ts in zip(names, times[b]):
                    paired = [x / y for x, y in zip(ts, times[b][base])]
                    rows.append({
                        "kind": "speed",
                        "variant": name,
                        "graph": graph,
                        "batch": b,
                        "threads": n_threads,
                        "cycles": len(ts),
                        "blocks": n,
                        "ms_median": round(statistics.median(ts), 3),
                        "ms_p10": round(fused_profile.pct(ts, 10), 3),
                        "ratio_median": round(statistics.median(paired), 4),
                        "ratio_p25": round(fused_profile.pct(paired, 25), 4),
                        "ratio_p75": round(fused_profile.pct(paired, 75), 4),
                    })
                line = ", ".join(f"{r['variant']} {r['ms_median']:.1f} ms ({r['ratio_median']:.3f})" for r in rows[-n:])
                print(f"  {graph} batch {b}, {n_threads} thread(s), {len(times[b][0])} cycles: {line}", flush=True)
    return rows


def agreement(fp32: Path, dirs: dict[str, Path], prompts: int, steps: int, cpu: dict, ids_file: Path) -> list[dict]:
    """bench/int8_agreement.py over every kind, its JSON lines keyed by kind."""
    cmd = [
        sys.executable, str(HERE / "int8_agreement.py"), str(fp32), *map(str, dirs.values()),
        "--prompts", str(prompts), "--steps", str(steps), "--cpu", json.dumps(cpu), "--fp32-ids", str(ids_file),
    ]
    out = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True).stdout
    by_dir = {json.loads(l)["model"]: json.loads(l) for l in out.splitlines() if l.startswith("{")}
    rows = []
    for kind, d in dirs.items():
        r = by_dir[str(d)]
        keep = ("tokens_before_divergence_pct", "sequences_equal_pct", "prompts", "steps")
        rows.append({"kind": "agreement", "variant": kind, **{k: r[k] for k in keep}})
        print(f"  {kind}: {r['tokens_before_divergence_pct']}% of tokens, {r['sequences_equal_pct']}% of sequences", flush=True)
    return rows


def numbers_accuracy(fp32: Path, dirs: dict[str, Path], n_numbers: int | None) -> tuple[list[dict], int]:
    """The held-out exact match per number task of fp32 and each kind, and the number of
    held-out numbers; each kind's drops against fp32 and verdict by export_default_model's rule.
    Run in a child process of its own (--numbers-child)."""
    import torch

    import export_default_model as E
    import train_default_model as T

    torch.set_num_threads(os.cpu_count() or 1)
    numbers, _ = T.eval_sets(n_numbers, 1)
    tok = t5tools.load_t5_tokenizer(fp32)
    rows = []
    ref = None
    for name, d in [("fp32", fp32), *dirs.items()]:
        t = time.time()
        res = E.evaluate_full(d, tok, numbers, None)
        row = {"kind": "accuracy", "variant": name, "exact_match": res["exact"], "seconds": round(time.time() - t)}
        if ref is None:
            ref = res
        else:
            ok, _, drops = E.int8_verdict(ref, res)
            row.update(within_1_point=ok, drops=drops["exact_match_points"])
        rows.append(row)
    return rows, len(numbers)


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def recommend(cpu: dict, quant: dict[str, dict], speed_rows: list, agree_rows: list, acc_rows: list) -> dict:
    """RULE, applied to the figures."""
    kinds = list(quant)
    scores = {k: round(geomean([r["ratio_median"] for r in speed_rows if r["variant"] == k]), 4) for k in kinds} if speed_rows else {}
    control = [r["ratio_median"] for r in speed_rows if r["variant"] == CONTROL]
    noise = round(max([MIN_NOISE, *(abs(x - 1) for x in control)]), 4)
    agree = {r["variant"]: r["tokens_before_divergence_pct"] for r in agree_rows}
    acc = {r["variant"]: r.get("within_1_point") for r in acc_rows if r["variant"] != "fp32"}
    slack = max([AGREEMENT_POINTS, *(100 / r["prompts"] for r in agree_rows)])
    why = {}
    for k in kinds:
        if agree and agree[k] < agree[DEFAULT] - slack - 1e-9:
            why[k] = f"agreement {agree[k]}% < default's {agree[DEFAULT]}% - {slack:.3g}"
        elif acc and not acc[k]:
            why[k] = "a number task more than 1 point below fp32"
    qualified = [k for k in kinds if k not in why]
    if not qualified:
        return {"kind": "recommendation", "variant": None, "flags": None, "scores": scores, "noise": noise,
                "disqualified": why, "text": "none of the int8 kinds qualifies: serve the fp32 export"}
    score = lambda k: scores.get(k, 1.0)  # noqa: E731
    best = min(score(k) for k in qualified)
    near = [k for k in qualified if score(k) <= best + noise]
    saturates = bool(cpu.get("int8_kernel_saturates"))
    pick = min(near, key=lambda k: (saturates and may_saturate(cpu, quant[k]), k != DEFAULT, score(k)))
    bits = [f"speed score {score(pick):.3f} of the default's" if scores else "speed not measured (every kind counts as tied)"]
    if agree:
        bits.append(f"{agree[pick]}% of greedy tokens as fp32")
    if acc:
        bits.append("every number task within 1 point of fp32")
    how = f"`scripts/quantize_model.py SRC DST {' '.join(KINDS[pick])}`" + (" (the exporter's default)" if pick == DEFAULT else "")
    text = f"**{pick}** ({how}): {'; '.join(bits)}; within the noise ({noise:.3f}) of the best: {', '.join(near)}"
    if saturates:
        text += f"; this CPU's int8 kernel ({cpu.get('int8_kernel')}) saturates"
    return {"kind": "recommendation", "variant": pick, "flags": KINDS[pick], "scores": scores, "noise": noise,
            "near_best": near, "disqualified": why, "text": text}


def git_state() -> dict:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = [l[3:] for l in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(dirty), "dirty_paths": dirty}


def markdown(meta: dict, quant: dict, sizes: dict, speed_rows: list, agree_rows: list, acc_rows: list, rec: dict) -> str:
    cpu = meta["cpu"]
    out = [
        f"# int8 kinds on this CPU, {meta['model']}, {meta['date']} on {meta['host']} ({cpu.get('cores')} cores, {cpu.get('model_name')})",
        "",
        f"`{meta['command']}`, t5serve at {meta['git_commit'][:7]}"
        + (f" with uncommitted changes ({', '.join(meta['dirty_paths'])})" if meta["git_dirty"] else "")
        + f", onnxruntime {meta['onnxruntime']}, load average {meta['load_start']} at the start and {meta['load_end']} at the end.",
        "",
        "```",
        f"CPU: {json.dumps(cpu, separators=(',', ':'))}",
        "```",
        "",
        f"**Recommended default on this CPU:** {rec['text']}.",
        "",
        f"Rule: {RULE}",
        "",
        "## Kinds",
        "",
        "| kind | scripts/quantize_model.py flags | weight_type | per_channel | reduce_range | may saturate here | MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, q in quant.items():
        out.append(f"| {k} | {' '.join(KINDS[k])}{' (default)' if k == DEFAULT else ''} | {q['weight_type']} | {q['per_channel']} | {q.get('reduce_range', False)} "
                   f"| {may_saturate(cpu, q)} | {sizes[k]:.1f} |")
    if speed_rows:
        out += ["", "## Speed (onnxruntime, no server)", "",
                f"Median ms per run, and in brackets the median over cycles of the ratio to {DEFAULT} in the same cycle "
                f"(kinds interleaved, order rotating; encoder on {ENC_LEN}-token inputs, cached step with {PAST_LEN} "
                "positions of self-attention cache; spinning off; sessions created afresh in 7 blocks, creation order "
                f"rotated). A/A is a second session of {DEFAULT}'s files: its "
                "distance from 1 is this run's noise. Score: geometric mean of the ratios.", ""]
        cases = sorted({(r["threads"], r["graph"], r["batch"]) for r in speed_rows}, key=lambda c: (c[0], GRAPH_ORDER.index(c[1]), c[2]))
        short = {"encoder_model.onnx": "encoder", "decoder_with_past_model.onnx": "step", t5tools.MASKED_WITH_PAST: "masked step"}
        head = [f"{short[g]} @{b}, {t}t" for t, g, b in cases]
        out += ["| kind | " + " | ".join(head) + " | score |", "|---" * (len(head) + 2) + "|"]
        cell = {(r["variant"], r["threads"], r["graph"], r["batch"]): r for r in speed_rows}
        for k in [*quant, CONTROL]:
            vals = []
            for t, g, b in cases:
                r = cell[(k, t, g, b)]
                vals.append(f"{r['ms_median']:.2f} ({r['ratio_median']:.3f})")
            score = geomean([cell[(k, t, g, b)]["ratio_median"] for t, g, b in cases])
            out.append(f"| {k} | " + " | ".join(vals) + f" | {score:.3f} |")
        cyc = sorted({r["cycles"] for r in speed_rows})
        out += ["", f"Cycles per case: {cyc[0]}-{cyc[-1]}."]
    if agree_rows:
        r0 = agree_rows[0]
        out += ["", f"## Greedy agreement with fp32 (`bench/int8_agreement.py`, {r0['prompts']} prompts x {r0['steps']} steps, one at a time)", "",
                "| kind | tokens before divergence | sequences equal |", "|---|---|---|"]
        out += [f"| {r['variant']} | {r['tokens_before_divergence_pct']}% | {r['sequences_equal_pct']}% |" for r in agree_rows]
    if acc_rows:
        tasks = list(acc_rows[0]["exact_match"])
        out += ["", f"## The numbers model: held-out exact match per task, % ({meta['numbers_source']}, {meta['heldout_numbers']} numbers per task)", "",
                "| kind | " + " | ".join(tasks) + " | worst drop vs fp32 | within 1 point |", "|---" * (len(tasks) + 3) + "|"]
        for r in acc_rows:
            drop = max(r["drops"].values()) if "drops" in r else None
            out.append(f"| {r['variant']} | " + " | ".join(f"{r['exact_match'][t]:.2f}" for t in tasks)
                       + f" | {'' if drop is None else f'{drop:+.2f}'} | {r.get('within_1_point', '')} |")
    if rec.get("disqualified"):
        out += ["", "Not qualified: " + "; ".join(f"{k} ({v})" for k, v in rec["disqualified"].items()) + "."]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, nargs="?", default=Path("models/t5-small-shape"), help="fp32 model directory (split decoders)")
    p.add_argument("--threads", default=None, help="intra-op thread counts, comma-separated (default 1,2)")
    p.add_argument("--batches", default=None, help="batch sizes, comma-separated (default 1,32)")
    p.add_argument("--case-seconds", type=float, default=None, help="interleaved time per graph, batch and thread count (default 20)")
    p.add_argument("--no-masked", action="store_true", help="do not time decoder_with_past_masked.onnx")
    p.add_argument("--prompts", type=int, default=None, help="agreement prompts (default 32)")
    p.add_argument("--steps", type=int, default=None, help="agreement greedy steps (default 32)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--numbers-ckpt", type=Path, help="a numbers-model checkpoint, exported to fp32 with scripts/export_model.py")
    src.add_argument("--numbers-fp32", type=Path, help="an fp32 export of a numbers-model checkpoint")
    p.add_argument("--numbers", type=int, default=None, help="held-out numbers per task (default all; --quick 12)")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-agreement", action="store_true")
    p.add_argument("--requantize", action="store_true", help="quantize again even where a copy of the same source and flags exists")
    p.add_argument("--results-dir", type=Path, default=None, help="default bench/results (--quick: bench/work/int8-kinds/results)")
    p.add_argument("--quick", action="store_true", help="smoke run of the script: minimal sizes")
    t5tools.add_cpu_flags(p)
    p.add_argument("--numbers-child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.numbers_child:
        dirs = {k: args.numbers_child / k for k in KINDS}
        (args.numbers_child / "accuracy.json").write_text(json.dumps(numbers_accuracy(args.model, dirs, args.numbers)))
        return
    quick = args.quick
    threads = [int(x) for x in (args.threads or ("1" if quick else "1,2")).split(",")]
    batches = [int(x) for x in (args.batches or ("1,2" if quick else "1,32")).split(",")]
    case_seconds = args.case_seconds if args.case_seconds is not None else (0.5 if quick else 20.0)
    prompts = args.prompts or (2 if quick else 32)
    steps = args.steps or (4 if quick else 32)
    n_numbers = args.numbers or (12 if quick else None)
    results = args.results_dir or (WORK / "results" if quick else ROOT / "bench" / "results")
    binary = args.binary or next((b for b in (ROOT / "target/release/t5serve", ROOT / "target/debug/t5serve") if b.exists()), None)

    import onnxruntime

    started = time.time()
    load_start = round(os.getloadavg()[0], 2)
    model = args.model
    if not (model / "encoder_model.onnx").exists():
        if str(model).rstrip("/") in ("models/t5-small-shape", "models/t5-base-shape"):
            shape = Path(str(model).rstrip("/")).name.removesuffix("-shape")
            subprocess.run([sys.executable, str(ROOT / "scripts" / "make_test_models.py"), "--shape", shape], check=True, cwd=ROOT)
        else:
            raise SystemExit(f"no {model}/encoder_model.onnx")
    if (model / t5tools.QUANTIZATION_FILE).exists():
        raise SystemExit(f"{model} is quantized already: give the fp32 directory")
    cpu = cpu_report(binary, args.cpu)
    print(f"CPU: {json.dumps(cpu)}", flush=True)
    if load_start > 0.5:
        print(f"warning: load average {load_start} at the start: another process competes for the cores", flush=True)
    name = model.resolve().name
    print(f"quantizing {model} -> {WORK / name}", flush=True)
    dirs = quantize_kinds(model, WORK / name, list(KINDS), args.requantize)
    quant = {k: json.loads((d / t5tools.QUANTIZATION_FILE).read_text()) for k, d in dirs.items()}
    sizes = {k: t5tools.dir_size_mb(d) for k, d in dirs.items()}

    speed_rows, agree_rows, acc_rows = [], [], []
    if not args.skip_speed:
        print(f"speed: threads {threads}, batches {batches}, {case_seconds:g} s per case", flush=True)
        speed_rows = speed(dirs, threads, batches, case_seconds, not args.no_masked)
    if not args.skip_agreement:
        print(f"agreement with fp32: {prompts} prompts x {steps} steps", flush=True)
        agree_rows = agreement(model, dirs, prompts, steps, cpu, WORK / name / f"fp32-ids-{prompts}x{steps}.json")
    numbers_source, heldout = None, None
    if args.numbers_ckpt or args.numbers_fp32:
        if args.numbers_ckpt:
            ckpt = args.numbers_ckpt
            nwork = WORK / f"numbers-{ckpt.resolve().name}"
            fp32 = nwork / "fp32"
            weights = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(ckpt.glob("*.safetensors"))]
            want = {"ckpt": str(ckpt.resolve()), "weights": weights}
            stamp = nwork / "fp32.source.json"
            if args.requantize or not stamp.exists() or json.loads(stamp.read_text()) != want:
                print(f"exporting {ckpt} -> {fp32} (scripts/export_model.py)", flush=True)
                stamp.unlink(missing_ok=True)
                subprocess.run([sys.executable, str(ROOT / "scripts" / "export_model.py"), str(ckpt), str(fp32)], check=True, cwd=ROOT)
                stamp.write_text(json.dumps(want) + "\n")
            numbers_source = f"checkpoint {ckpt}"
        else:
            fp32 = args.numbers_fp32
            nwork = WORK / f"numbers-{fp32.resolve().name}"
            numbers_source = f"fp32 export {fp32}"
        print(f"quantizing {fp32} -> {nwork}", flush=True)
        ndirs = quantize_kinds(fp32, nwork, list(KINDS), args.requantize)
        print("held-out exact match (export_default_model.evaluate_full)", flush=True)
        # In a child process: importing train_default_model re-executes the process with
        # MALLOC_MMAP_MAX_=0, which must not happen here (nor change this process's allocator).
        out = nwork / "accuracy.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), str(fp32), "--numbers-child", str(nwork)]
        subprocess.run(cmd + (["--numbers", str(n_numbers)] if n_numbers else []), check=True, cwd=ROOT)
        acc_rows, heldout = json.loads(out.read_text())

    rec = recommend(cpu, quant, speed_rows, agree_rows, acc_rows)
    now = datetime.datetime.now()
    meta = {
        "kind": "meta",
        "model": str(model),
        "date": now.strftime("%Y-%m-%d %H:%M"),
        "host": socket.gethostname(),
        "cpu": cpu,
        "command": " ".join(["bench/int8_kinds.py", *sys.argv[1:]]),
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "quick": quick,
        "threads": threads,
        "batches": batches,
        "case_seconds": case_seconds,
        "enc_len": ENC_LEN,
        "past_len": PAST_LEN,
        "kinds": {k: {"flags": KINDS[k], "dir": str(d), "quantization": quant[k], "size_mb": round(sizes[k], 1)} for k, d in dirs.items()},
        "numbers_source": numbers_source,
        "heldout_numbers": heldout,
        "load_start": load_start,
        "load_end": round(os.getloadavg()[0], 2),
        "seconds": round(time.time() - started),
        **git_state(),
    }
    results.mkdir(parents=True, exist_ok=True)
    stem = results / f"{now.strftime('%Y-%m-%d-%H%M')}-int8-kinds-{name}"
    with open(f"{stem}.jsonl", "w") as f:
        for row in [meta, *speed_rows, *agree_rows, *acc_rows, rec]:
            f.write(json.dumps(row) + "\n")
    Path(f"{stem}.md").write_text(markdown(meta, quant, sizes, speed_rows, agree_rows, acc_rows, rec))
    print(f"recommended on this CPU: {rec['text']}")
    print(f"written: {stem}.jsonl, {stem}.md ({meta['seconds']} s)")


if __name__ == "__main__":
    main()
