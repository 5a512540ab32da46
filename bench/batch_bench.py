#!/usr/bin/env python3
"""`t5serve batch` against the server at 32 HTTP clients, and its resident memory on a long file,
for bench/batch.sh (issue 25). Not a test: it prints figures and makes no assertions about them.

    batch_bench.py inputs MODEL_DIR WORK_DIR OUT_JSONL
        writes WORK_DIR/requests.jsonl (ROWS generate requests, 20-60 input tokens each with the
        model's tokenizer, max_new_tokens = min_new_tokens = NEW_TOKENS) and WORK_DIR/memory.jsonl
        (MEM_ROWS short requests, 5-15 tokens, max_new_tokens = min_new_tokens = MEM_NEW_TOKENS);
        fixed seed; appends a workload line
    batch_bench.py batch BIN REQUESTS ANSWERS LOG OUT_JSONL MODEL ROUND POSITION -- FLAGS...
        runs `BIN batch --input REQUESTS --output ANSWERS FLAGS...` (ANSWERS removed first: an
        existing output would be resumed) and appends its figures: the summary line's own (its
        clock starts after the models are loaded) and this script's wall clocks
    batch_bench.py server URL REQUESTS ANSWERS OUT_JSONL MODEL ROUND POSITION [SERVER_PID]
        CLIENTS closed-loop clients (threads, one keep-alive http.client connection each,
        connected before the clock starts) take the next request of REQUESTS in file order until
        none is left; rows/s and generated tokens/s over the time from the start to the last
        answer; the answers to ANSWERS (JSONL: id, status, generated_text, generated_tokens)
    batch_bench.py compare BATCH_ANSWERS SERVER_ANSWERS OUT_JSONL MODEL ROUND
        the batch's texts against the server's, by id
    batch_bench.py memory BIN REQUESTS ANSWERS LOG OUT_JSONL MODEL -- FLAGS...
        runs the batch on the long file, VmRSS from /proc/PID/status every RSS_EVERY s (default 1)
    batch_bench.py log OUT_JSONL LABEL LOG
        the log's ERROR / WARN / panic lines, as one JSON line (bench/models_bench.py's)
    batch_bench.py report OUT_JSONL
        the markdown report

Sizes come from the environment (see bench/batch.sh): ROWS, NEW_TOKENS, CLIENTS, MEM_ROWS,
MEM_NEW_TOKENS, RSS_EVERY.
"""

import http.client
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models_bench  # noqa: E402  (its JSONL emitter and server-log reader)
import openai_bench  # noqa: E402  (its /proc CPU-time reader)

SEED = 25

# Plain English words for the inputs (the t5-small-shaped models have random weights: what the
# words say does not matter, their token counts do).
WORDS = (
    "the a an of to in and for on with at by from about into over after under between through "
    "house garden river city morning evening train station market letter window mountain village "
    "teacher doctor student farmer driver neighbour company government weather language question "
    "answer problem reason report meeting holiday breakfast kitchen bridge forest island harbour "
    "old new small large quiet busy early late bright dark warm cold green yellow careful happy "
    "walks opens closes carries builds reads writes sends finds keeps brings leaves follows sells "
    "quickly slowly often never always together again almost perhaps yesterday tomorrow tonight "
    "seven twelve hundred thousand first second last every many several few other another same"
).split()
PREFIXES = ("translate English to German: ", "translate English to French: ", "summarize: ",
            "translate English to Romanian: ")


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


# ---------------------------------------------------------------------------------------------
# inputs


def make_texts(tok, rng: random.Random, n: int, lo: int, hi: int) -> tuple[list[str], list[int]]:
    """`n` distinct texts of lo..hi tokens (EOS included), each a prefix and random words."""
    texts, lengths, seen = [], [], set()
    while len(texts) < n:
        target = rng.randint(lo, hi)
        prefix = rng.choice(PREFIXES)
        words = [rng.choice(WORDS) for _ in range(max(1, int(target * 0.8)))]
        text = prefix + " ".join(words).capitalize() + "."
        ids = tok.encode(text).ids
        while len(ids) > target and len(words) > 1:  # trim to the target
            words.pop()
            text = prefix + " ".join(words).capitalize() + "."
            ids = tok.encode(text).ids
        while len(ids) < target:  # and grow to it
            words.append(rng.choice(WORDS))
            text = prefix + " ".join(words).capitalize() + "."
            ids = tok.encode(text).ids
        if not lo <= len(ids) <= hi or text in seen:
            continue
        seen.add(text)
        texts.append(text)
        lengths.append(len(ids))
    return texts, lengths


def inputs(model_dir: str, work: str, out_path: str) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_dir, "tokenizer.json")))
    rows, new_tokens = env_int("ROWS", 512), env_int("NEW_TOKENS", 32)
    mem_rows, mem_new = env_int("MEM_ROWS", 100000), env_int("MEM_NEW_TOKENS", 4)
    rng = random.Random(SEED)
    Path(work).mkdir(parents=True, exist_ok=True)
    texts, lengths = make_texts(tok, rng, rows, 20, 60)
    params = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
    with open(Path(work, "requests.jsonl"), "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"r{i:06d}", "inputs": t, "parameters": params}) + "\n")
    # The long file: a pool of short texts, cycled with distinct ids (tokenizing 100,000 texts
    # here would take longer than the run).
    pool, pool_lengths = make_texts(tok, rng, min(mem_rows, 4096), 5, 15)
    mparams = {"max_new_tokens": mem_new, "min_new_tokens": mem_new}
    with open(Path(work, "memory.jsonl"), "w") as f:
        for i in range(mem_rows):
            f.write(json.dumps({"id": f"m{i:06d}", "inputs": pool[i % len(pool)], "parameters": mparams}) + "\n")
    mem_lengths = [pool_lengths[i % len(pool)] for i in range(mem_rows)]
    models_bench.emitter(out_path)({
        "kind": "workload", "rows": rows, "new_tokens": new_tokens, "clients": env_int("CLIENTS", 32),
        "input_tokens": {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths),
                         "mean": statistics.mean(lengths)},
        "mem_rows": mem_rows, "mem_new_tokens": mem_new, "mem_distinct_texts": len(pool),
        "mem_input_tokens": {"min": min(mem_lengths), "median": statistics.median(mem_lengths),
                             "max": max(mem_lengths), "mean": statistics.mean(mem_lengths)},
        "tokenizer": str(Path(model_dir, "tokenizer.json")), "seed": SEED})


# ---------------------------------------------------------------------------------------------
# the batch process


SUMMARY = re.compile(r"^t5serve batch: (\d+) of (\d+) lines answered in ([\d.]+) s")


def parse_summary(line: str) -> dict:
    """The summary line's figures; its wording may change, so each figure is looked up alone."""
    out: dict = {"summary_line": line}
    m = SUMMARY.search(line)
    if m:
        out["summary_answered"], out["summary_lines"] = int(m.group(1)), int(m.group(2))
        out["summary_seconds"] = float(m.group(3))
    for key, pattern in (("summary_rows_per_s", r"([\d.]+) rows/s"), ("summary_tokens_per_s", r"([\d.]+) tokens/s")):
        m = re.search(pattern, line)
        if m:
            out[key] = float(m.group(1))
    return out


def run_batch(binary: str, requests: str, answers: str, log: str, flags: list[str], sample_rss: bool = False) -> dict:
    """Runs the batch; wall clocks from the start of the process and from its "batch started" log
    line (the models loaded) to its exit. With sample_rss, VmRSS every RSS_EVERY s."""
    Path(answers).unlink(missing_ok=True)
    cmd = [binary, "batch", "--input", requests, "--output", answers, *flags]
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info,ort=warn")
    env["NO_COLOR"] = "1"
    t_spawn = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True,
                            errors="replace")
    box: dict = {"started": None, "summary": None}
    samples: list = []  # (t since spawn, VmRSS kB)

    def read_stderr() -> None:
        with open(log, "w") as f:
            for line in proc.stderr:
                now = time.perf_counter()
                f.write(line)
                if box["started"] is None and "batch started" in line:
                    box["started"] = now
                    box["cpu_at_start"] = openai_bench.cpu_seconds(proc.pid)
                if line.startswith("t5serve batch:"):
                    box["summary"] = line.strip()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    cpu_pid = proc.pid
    cpu_last = None

    def forward(signum, _frame):
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        sys.exit(143)

    signal.signal(signal.SIGTERM, forward)
    every = env_float("RSS_EVERY", 1.0)
    while True:
        try:
            proc.wait(timeout=every if sample_rss else 0.2)
            break
        except subprocess.TimeoutExpired:
            pass
        c = openai_bench.cpu_seconds(cpu_pid)
        cpu_last = c if c is not None else cpu_last
        if sample_rss:
            kb = vm_rss_kb(proc.pid)
            if kb is not None:
                samples.append((time.perf_counter() - t_spawn, kb))
    t_exit = time.perf_counter()
    reader.join(timeout=10)
    res = {"cmd": " ".join(cmd), "exit_code": proc.returncode, "wall_total_s": t_exit - t_spawn,
           "cpu_s": cpu_last}
    if box["started"] is not None:
        res["load_s"] = box["started"] - t_spawn
        res["wall_after_load_s"] = t_exit - box["started"]
        if cpu_last is not None and box.get("cpu_at_start") is not None:
            # CPU seconds after the load (the last sample is up to 0.2 s before the exit)
            res["cpu_after_load_s"] = cpu_last - box["cpu_at_start"]
    if box["summary"]:
        res.update(parse_summary(box["summary"]))
    if sample_rss:
        res["rss_samples"] = samples
        res["started_at_s"] = res.get("load_s")
    return res


def vm_rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def read_answers(path: str) -> tuple[dict, dict]:
    """A batch output file: {id: (status, text, tokens)} and counters."""
    got, counts = {}, {"records": 0, "ok": 0, "errors": 0, "tokens": 0, "full_length": 0, "first_errors": []}
    for line in open(path):
        if not line.strip():
            continue
        r = json.loads(line)
        counts["records"] += 1
        resp = r.get("response") or {}
        if r.get("status") == 200 and "generated_text" in resp:
            counts["ok"] += 1
            n = resp.get("usage", {}).get("generated_tokens", 0)
            counts["tokens"] += n
            got[r["id"]] = (200, resp["generated_text"], n)
        else:
            counts["errors"] += 1
            if len(counts["first_errors"]) < 3:
                counts["first_errors"].append(line.strip()[:400])
            got[r["id"]] = (r.get("status"), None, 0)
    return got, counts


def batch(binary, requests, answers, log, out_path, model, rnd, position, flags) -> None:
    emit = models_bench.emitter(out_path)
    new_tokens = env_int("NEW_TOKENS", 32)
    res = run_batch(binary, requests, answers, log, flags)
    rows = sum(1 for line in open(requests) if line.strip())
    got, counts = read_answers(answers) if Path(answers).exists() else ({}, {"records": 0, "ok": 0, "errors": 0, "tokens": 0})
    counts["full_length"] = sum(1 for s, _, n in got.values() if s == 200 and n == new_tokens)
    after = res.get("wall_after_load_s")
    res.update({"rows": rows, "answers": counts,
                "rows_per_s": counts["ok"] / after if after else None,
                "tokens_per_s": counts["tokens"] / after if after else None})
    emit({"kind": "batch", "model": model, "round": int(rnd), "position": int(position), "run": res})
    if res["exit_code"] != 0:
        print(f"ERROR: the batch on {model} exited {res['exit_code']}; its log: {log}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# the server


def server(url: str, requests: str, answers: str, out_path: str, model: str, rnd: str, position: str,
           server_pid: str | None = None) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    emit = models_bench.emitter(out_path)
    clients = env_int("CLIENTS", 32)
    new_tokens = env_int("NEW_TOKENS", 32)
    pid = int(server_pid) if server_pid else None
    rows = [json.loads(line) for line in open(requests) if line.strip()]
    bodies = [json.dumps({k: v for k, v in r.items() if k != "id"}).encode() for r in rows]
    u = urlparse(url)
    lock = threading.Lock()
    nxt = [0]
    results: list = [None] * len(rows)  # (status, text, tokens, latency)
    box: dict = {}
    errors: list[str] = []

    def started() -> None:
        box["start"] = time.perf_counter()
        box["cpu0"] = time.process_time()
        box["srv0"] = openai_bench.cpu_seconds(pid)

    barrier = threading.Barrier(clients + 1, action=started)

    def worker() -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        try:
            conn.connect()
        except OSError as e:
            with lock:
                errors.append(f"cannot connect: {e}")
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            conn.close()
            return
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(rows):
                break
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/generate", bodies[i], {"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw, status = resp.read(), resp.status
            except (OSError, http.client.HTTPException) as e:
                raw, status = f"{type(e).__name__}: {e}".encode(), None
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
            t1 = time.perf_counter()
            text, tokens = None, 0
            if status == 200:
                try:
                    b = json.loads(raw)
                    text, tokens = b["generated_text"], b["usage"]["generated_tokens"]
                except (ValueError, KeyError, TypeError):
                    status = -200
            if status != 200:
                with lock:
                    if len(errors) < 5:
                        errors.append(f"{status} {raw.decode(errors='replace')[:300]}")
            results[i] = (status, text, tokens, t1 - t0, t1)
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        sys.exit(f"server {model}: {errors[0] if errors else 'a client could not start'}")
    for t in threads:
        t.join()
    cpu = time.process_time() - box["cpu0"]
    srv1 = openai_bench.cpu_seconds(pid)
    done = [r for r in results if r is not None]
    end = max(r[4] for r in done)
    elapsed = end - box["start"]
    ok = [r for r in done if r[0] == 200]
    tokens = sum(r[2] for r in ok)
    lat = sorted(r[3] for r in ok)
    with open(answers, "w") as f:
        for row, r in zip(rows, results):
            if r is not None:
                f.write(json.dumps({"id": row["id"], "status": r[0], "generated_text": r[1], "generated_tokens": r[2]}) + "\n")
    res = {"rows": len(rows), "clients": clients, "elapsed_s": elapsed, "ok": len(ok), "errors": len(done) - len(ok),
           "tokens": tokens, "full_length": sum(1 for r in ok if r[2] == new_tokens),
           "rows_per_s": len(ok) / elapsed, "tokens_per_s": tokens / elapsed,
           "p50_s": lat[len(lat) // 2] if lat else None,
           "p99_s": lat[min(len(lat) - 1, round((len(lat) - 1) * 0.99))] if lat else None,
           "client_cpu_s": cpu}
    if box["srv0"] is not None and srv1 is not None:
        res["server_cpu_s"] = srv1 - box["srv0"]
    if errors:
        res["first_errors"] = errors
        for e in errors:
            print(f"ERROR from the server run on {model}: {e}", file=sys.stderr)
    emit({"kind": "server", "model": model, "round": int(rnd), "position": int(position), "run": res})


# ---------------------------------------------------------------------------------------------
# the answers


def compare(batch_answers: str, server_answers: str, out_path: str, model: str, rnd: str) -> None:
    got, _ = read_answers(batch_answers)
    srv = {}
    for line in open(server_answers):
        r = json.loads(line)
        srv[r["id"]] = (r["status"], r["generated_text"])
    both = [i for i in srv if i in got and srv[i][0] == 200 and got[i][0] == 200]
    diff = [i for i in both if got[i][1] != srv[i][1]]
    examples = [{"id": i, "batch": got[i][1], "server": srv[i][1]} for i in diff[:3]]
    models_bench.emitter(out_path)({
        "kind": "compare", "model": model, "round": int(rnd), "compared": len(both),
        "missing_in_batch": sum(1 for i in srv if i not in got), "missing_in_server": sum(1 for i in got if i not in srv),
        "mismatches": len(diff), "examples": examples})


# ---------------------------------------------------------------------------------------------
# memory


def memory(binary, requests, answers, log, out_path, model, flags) -> None:
    emit = models_bench.emitter(out_path)
    res = run_batch(binary, requests, answers, log, flags, sample_rss=True)
    rows = sum(1 for line in open(requests) if line.strip())
    lines = ok = tokens = 0
    ids = set()
    if Path(answers).exists():
        for line in open(answers):
            if not line.strip():
                continue
            lines += 1
            r = json.loads(line)
            ids.add(r.get("id"))
            if r.get("status") == 200:
                ok += 1
                tokens += (r.get("response") or {}).get("usage", {}).get("generated_tokens", 0)
    samples = res.pop("rss_samples")
    start = res.get("load_s") or 0.0
    run = [(t, kb) for t, kb in samples if t >= start]
    figures = {}
    if run:
        t0, t1 = run[0][0], run[-1][0]

        def at(frac: float) -> tuple[float, int]:
            target = t0 + frac * (t1 - t0)
            return min(run, key=lambda s: abs(s[0] - target))

        for name, frac in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9)):
            t, kb = at(frac)
            figures[f"rss_{name}_kb"] = kb
            figures[f"rss_{name}_t_s"] = t - start
        figures["rss_first_kb"] = run[0][1]
        figures["rss_last_kb"] = run[-1][1]
        figures["rss_max_kb"] = max(kb for _, kb in run)
        figures["rss_max_t_s"] = next(t for t, kb in run if kb == figures["rss_max_kb"]) - start
        figures["growth_p10_p90"] = (figures["rss_p90_kb"] - figures["rss_p10_kb"]) / figures["rss_p10_kb"]
    if samples:
        figures["rss_max_incl_load_kb"] = max(kb for _, kb in samples)
    after = res.get("wall_after_load_s")
    res.update({"rows": rows, "output_lines": lines, "distinct_ids": len(ids), "ok": ok, "tokens": tokens,
                "rows_per_s": ok / after if after else None, "tokens_per_s": tokens / after if after else None,
                **figures, "samples": len(samples)})
    # The samples themselves, thinned to at most 400 points ((s after load, MiB)).
    step = max(1, len(run) // 400)
    res["rss_series_mib"] = [(round(t - start, 1), round(kb / 1024, 1)) for t, kb in run[::step]]
    emit({"kind": "memory", "model": model, "run": res})
    if res["exit_code"] != 0:
        print(f"ERROR: the memory batch on {model} exited {res['exit_code']}; its log: {log}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# the report


def report(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    meta = next(r for r in rows if r["kind"] == "meta")
    wl = next((r for r in rows if r["kind"] == "workload"), None)
    batches = [r for r in rows if r["kind"] == "batch"]
    servers = [r for r in rows if r["kind"] == "server"]
    compares = [r for r in rows if r["kind"] == "compare"]
    mem = next((r for r in rows if r["kind"] == "memory"), None)
    logs = [r for r in rows if r["kind"] == "server_log"]
    med = statistics.median
    cpu = meta["cpu"]

    def f(x, fmt="{:.1f}") -> str:
        return "-" if x is None else fmt.format(x)

    print(f"# `t5serve batch` against the server at {wl['clients'] if wl else 32} clients, and its memory on a long file, "
          f"{meta['date']} on {meta['host']} ({cpu['cores']} cores, {cpu['model_name']})\n")
    print(f"`{meta['command']}`{' (QUICK=1: a smoke run, too small for figures to mean much)' if meta.get('quick') else ''}, "
          f"t5serve at {meta['git_commit'][:7]}"
          f"{' with uncommitted changes (' + ', '.join(meta.get('dirty_paths') or []) + ')' if meta['git_dirty'] else ''}"
          f"{', extra flags `' + meta['server_flags'] + '`' if meta['server_flags'] else ''}.\n")
    print(f"CPU flags (/proc/cpuinfo): {', '.join(meta['cpu_flags']) or 'none of them'}; t5serve's int8 kernel "
          f"{cpu['int8_kernel']} (saturating: {str(cpu['int8_kernel_saturates']).lower()}).\n")
    print("```\nCPU: " + json.dumps(cpu, separators=(",", ":")) + "\n```\n")
    if meta.get("note"):
        print(meta["note"] + "\n")
    if wl is None:
        print("No workload line: the inputs were not written.")
        return
    it = wl["input_tokens"]
    print(f"Workload: {wl['rows']} generate requests (`{{\"id\", \"inputs\", \"parameters\"}}`), distinct inputs of "
          f"{it['min']}-{it['max']} tokens (median {it['median']:g}, mean {it['mean']:.1f}; a task prefix and random "
          f"English words, fixed seed), greedy, exactly {wl['new_tokens']} new tokens each (max_new_tokens = "
          f"min_new_tokens = {wl['new_tokens']}). Per model and round, on the same file:\n")
    print(f"- **batch**: `{meta['batch_cmd']}` (a fresh process; read-ahead {meta['read_ahead'] or 'default, 4 x max_batch_size'}); "
          "rows/s and tokens/s = answers (and their `usage.generated_tokens`) / the wall time from its `batch started` "
          "log line (the models loaded) to the process's exit, measured by the driver (that is the figure used in the "
          "ratios); beside it the figures of its own summary line (its clock also starts after the load; it stops before "
          "the output's fsync and the exit) and the load time;")
    print(f"- **server**: `{meta['serve_cmd']}` (a fresh process per run, started and warmed by bench/serve.sh's "
          f"start_server), {wl['clients']} closed-loop clients (Python threads, one keep-alive http.client connection each, "
          "connected before the clock starts) taking the file's requests in order until none is left; rows/s and "
          "generated tokens/s = answers (their `usage.generated_tokens`) / the time from the start to the last answer.\n")
    print(f"{meta['rounds']} round{'s' if meta['rounds'] != 1 else ''}, the order batch/server alternating by round (round 1: batch first). "
          "Ratio = batch / server in the same round (target: at least 1.0, as no HTTP is involved).\n")

    models = list(dict.fromkeys(r["model"] for r in batches + servers))
    print("## Throughput\n")
    print("| model | round | order | batch rows/s | batch tok/s | batch summary line rows/s, tok/s | batch load s | "
          "server rows/s | server tok/s | server p50 / p99 s | ratio rows/s | texts differing |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    summary_rows = []
    for m in models:
        rounds = sorted({r["round"] for r in batches + servers if r["model"] == m})
        ratios, b_rows, b_tok, s_rows, s_tok, bs_rows, bs_tok, mism = [], [], [], [], [], [], [], []
        for rnd in rounds:
            b = next((r for r in batches if r["model"] == m and r["round"] == rnd), None)
            s = next((r for r in servers if r["model"] == m and r["round"] == rnd), None)
            c = next((r for r in compares if r["model"] == m and r["round"] == rnd), None)
            br, sr = (b or {}).get("run", {}), (s or {}).get("run", {})
            order = "batch, server" if (b and s and b["position"] < s["position"]) else "server, batch"
            ratio = br["rows_per_s"] / sr["rows_per_s"] if br.get("rows_per_s") and sr.get("rows_per_s") else None
            if ratio is not None:
                ratios.append(ratio)
                b_rows.append(br["rows_per_s"]); b_tok.append(br["tokens_per_s"])
                s_rows.append(sr["rows_per_s"]); s_tok.append(sr["tokens_per_s"])
            if br.get("summary_rows_per_s") is not None:
                bs_rows.append(br["summary_rows_per_s"]); bs_tok.append(br.get("summary_tokens_per_s"))
            if c:
                mism.append((c["mismatches"], c["compared"]))
            errs = ""
            if br.get("exit_code") not in (0, None) or br.get("answers", {}).get("errors"):
                errs += f" (batch exit {br.get('exit_code')}, {br.get('answers', {}).get('errors')} errors)"
            if sr.get("errors"):
                errs += f" (server: {sr['errors']} errors)"
            print(f"| {m} | {rnd} | {order} | {f(br.get('rows_per_s'))} | {f(br.get('tokens_per_s'), '{:.0f}')} | "
                  f"{f(br.get('summary_rows_per_s'))}, {f(br.get('summary_tokens_per_s'), '{:.0f}')} | {f(br.get('load_s'))} | "
                  f"{f(sr.get('rows_per_s'))} | {f(sr.get('tokens_per_s'), '{:.0f}')} | "
                  f"{f(sr.get('p50_s'), '{:.2f}')} / {f(sr.get('p99_s'), '{:.2f}')} | {f(ratio, '{:.3f}')} | "
                  f"{'%d of %d' % c_pair(c) if c else '-'}{errs} |")
        summary_rows.append((m, b_rows, b_tok, bs_rows, bs_tok, s_rows, s_tok, ratios, mism))
    print("\n## Medians over the rounds\n")
    print("| model | batch rows/s | batch tok/s | batch (summary line) rows/s, tok/s | server rows/s | server tok/s | "
          "median ratio batch/server | rounds' ratios | at least 1.0 | texts differing (all rounds) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m, b_rows, b_tok, bs_rows, bs_tok, s_rows, s_tok, ratios, mism in summary_rows:
        if not ratios:
            print(f"| {m} | - | - | - | - | - | - | - | - | - |")
            continue
        r = med(ratios)
        diff = sum(a for a, _ in mism)
        total = sum(b for _, b in mism)
        print(f"| {m} | {med(b_rows):.1f} | {med(b_tok):.0f} | "
              f"{f(med(bs_rows) if bs_rows else None)}, {f(med([x for x in bs_tok if x is not None]) if bs_tok else None, '{:.0f}')} | "
              f"{med(s_rows):.1f} | {med(s_tok):.0f} | {r:.3f} | {', '.join(f'{x:.3f}' for x in ratios)} | "
              f"{'yes' if r >= 1.0 else 'no'} | {diff} of {total} |")
    print()
    tokens_note = []
    for b in batches:
        a = b["run"].get("answers", {})
        if a.get("ok") and a.get("full_length") != a.get("ok"):
            tokens_note.append(f"{b['model']} round {b['round']}: {a['ok'] - a['full_length']} batch answers not "
                               f"{wl['new_tokens']} tokens long")
    for s in servers:
        if s["run"].get("ok") and s["run"].get("full_length") != s["run"]["ok"]:
            tokens_note.append(f"{s['model']} round {s['round']}: {s['run']['ok'] - s['run']['full_length']} server "
                               f"answers not {wl['new_tokens']} tokens long")
    print("Every answer " + ("was" if not tokens_note else "was not") + f" {wl['new_tokens']} tokens long"
          + (": " + "; ".join(tokens_note) if tokens_note else "") + ".\n")
    cpu_notes = []
    for m in models:
        after = [b["run"]["cpu_after_load_s"] / b["run"]["wall_after_load_s"] for b in batches
                 if b["model"] == m and b["run"].get("cpu_after_load_s") is not None and b["run"].get("wall_after_load_s")]
        life = [b["run"]["cpu_s"] / b["run"]["wall_total_s"] for b in batches
                if b["model"] == m and b["run"].get("cpu_s") and b["run"].get("wall_total_s")]
        srv = [s["run"]["server_cpu_s"] / s["run"]["elapsed_s"] for s in servers
               if s["model"] == m and s["run"].get("server_cpu_s") is not None]
        cli = [s["run"]["client_cpu_s"] / s["run"]["elapsed_s"] for s in servers if s["model"] == m]
        part = f"{m}: batch " + (f"{med(after):.2f} after the load" if after else
                                 (f"{med(life):.2f} over its whole life, load included" if life else "-"))
        part += f", server {med(srv):.2f}" if srv else ""
        part += f" (its Python clients {med(cli):.2f})" if cli else ""
        cpu_notes.append(part)
    if cpu_notes:
        print("CPU use in cores, medians over the rounds (the server and its clients over the timed run): "
              + "; ".join(cpu_notes) + ".\n")
    ex = [c for c in compares if c["mismatches"]]
    if ex:
        print("Texts differing: the batch's answer and the server's to the same id (greedy decoding; the two runs group "
              "rows into different batches, and padding and batch shape change the floating-point sums, so random-weight "
              "models, whose top logits are close, can pick another token). First examples:\n")
        for c in ex[:2]:
            for e in c["examples"][:1]:
                print(f"- {c['model']} round {c['round']}, `{e['id']}`: batch `{e['batch'][:120]}` / server `{e['server'][:120]}`")
        print()

    print("## Resident memory on a long file\n")
    if mem is None:
        print("No memory run.")
    else:
        r = mem["run"]
        mt = wl["mem_input_tokens"]
        print(f"`{r['cmd']}`: {wl['mem_rows']} lines (generate, {mt['min']}-{mt['max']} input tokens, median "
              f"{mt['median']:g}; {wl['mem_distinct_texts']} distinct texts cycled, distinct ids; exactly "
              f"{wl['mem_new_tokens']} new tokens each), model {mem['model']}. VmRSS of the process from /proc/PID/status "
              f"every {meta.get('rss_every', 1)} s; times after the `batch started` line (the models loaded, "
              f"{f(r.get('load_s'))} s after the start).\n")
        if "rss_p10_kb" in r:
            mib = lambda kb: kb / 1024  # noqa: E731
            print("| exit | output lines | answered 200 | rows/s | tok/s | run s | RSS first | RSS 10% | RSS 50% | RSS 90% | RSS last | RSS max | growth 10% to 90% |")
            print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            print(f"| {r['exit_code']} | {r['output_lines']} (distinct ids {r['distinct_ids']}) | {r['ok']} | "
                  f"{f(r.get('rows_per_s'))} | {f(r.get('tokens_per_s'), '{:.0f}')} | {f(r.get('wall_after_load_s'))} | "
                  f"{mib(r['rss_first_kb']):.1f} MiB | {mib(r['rss_p10_kb']):.1f} MiB ({r['rss_p10_t_s']:.0f} s) | "
                  f"{mib(r['rss_p50_kb']):.1f} MiB ({r['rss_p50_t_s']:.0f} s) | {mib(r['rss_p90_kb']):.1f} MiB ({r['rss_p90_t_s']:.0f} s) | "
                  f"{mib(r['rss_last_kb']):.1f} MiB | {mib(r['rss_max_kb']):.1f} MiB ({r['rss_max_t_s']:.0f} s) | "
                  f"{100 * r['growth_p10_p90']:+.2f}% |")
            print(f"\nOutput: {r['output_lines']} lines for {r['rows']} input lines "
                  f"({'complete' if r['output_lines'] == r['rows'] == r['distinct_ids'] else 'NOT complete'}); "
                  f"its summary line: `{r.get('summary_line', 'none')}`.\n")
            series = r.get("rss_series_mib", [])
            if series:
                k = max(1, len(series) // 20)
                print("VmRSS over the run (s after load: MiB): " + ", ".join(f"{t:.0f}: {v:.1f}" for t, v in series[::k]) + ".\n")
        else:
            print(f"No samples after the load (exit {r['exit_code']}, {r.get('samples')} samples).\n")

    if logs:
        print("## Logs\n")
        print("ERROR / WARN / panic lines of each process's log (the server's 503s to /health while it warmed up "
              "not counted):\n")
        for lg in logs:
            first = (lg.get("first_errors") or lg.get("first_warnings") or [None])[0]
            print(f"- {lg['label']}: {lg['lines']} lines, {lg['errors']} ERROR/panic, {lg['warnings']} WARN"
                  + (f"; first: `{first[:240]}`" if first else ""))
        print()


def c_pair(c: dict) -> tuple[int, int]:
    return c["mismatches"], c["compared"]


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    flags: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, flags = args[:i], args[i + 1:]
    if cmd == "inputs":
        inputs(*args)
    elif cmd == "batch":
        batch(*args, flags)
    elif cmd == "server":
        server(*args)
    elif cmd == "compare":
        compare(*args)
    elif cmd == "memory":
        memory(*args, flags)
    elif cmd == "log":
        models_bench.log_lines(*args)
    elif cmd == "report":
        report(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
