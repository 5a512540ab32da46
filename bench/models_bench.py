#!/usr/bin/env python3
"""Several models in one t5serve process, for bench/models.sh. Not a test: it prints figures and
makes no assertions about them.

    models_bench.py inputs MODEL_DIR WORK_DIR
        writes WORK_DIR/openai-prompt.txt, the 64-token prompt (bench/openai_bench.py's inputs)
    models_bench.py run URL WORK_DIR OUT_JSONL SERVER_PID ROUND one|two
        against a running server serving model "a" (one) or "a" and "b" (two): that server's
        timed closed-loop cases for the round (order alternating by round); appends JSON lines
    models_bench.py memory URL WORK_DIR OUT_JSONL SERVER_PID
        against a server started with `--model a=DIR --model-repository REPO` (REPO/b -> DIR):
        loads b, and VmRSS of the server through unload/load cycles
    models_bench.py log OUT_JSONL LABEL SERVER_LOG
        the server log's ERROR / WARN / panic lines, as one JSON line
    models_bench.py report OUT_JSONL
        the markdown report

Sizes come from the environment (see bench/models.sh): DURATION (seconds per timed run),
WARMUP (seconds of traffic per model after a server starts), CYCLES (unload/load cycles),
NEW_TOKENS.

The client is bench/openai_bench.py's (Python threads, one keep-alive connection each, opened
before the clock starts), but timed rather than counted: every client of every group starts at
the same instant and sends requests back to back until DURATION has passed, then finishes the
request it has in flight. Throughput counts the tokens of the requests answered within the
window, divided by the window; latencies are those of every request started within it. Two
groups (one per model) run in the same window, so that each model's figure is measured while
the other is busy for all of it.
"""

import http.client
import json
import os
import re
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import openai_bench  # noqa: E402  (its prompt, /proc CPU-time reader and HTTP helpers)

PROMPT_TOKENS = openai_bench.PROMPT_TOKENS


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def proc_status(pid: int) -> dict:
    """VmRSS, VmHWM, RssAnon, RssFile (kB) and Threads of the server, from /proc/PID/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            out[key] = int(value.split()[0])
    return out


def request(url: str, method: str, path: str, body: dict | None = None, timeout: float = 600) -> tuple[int | None, str, float]:
    u = urlparse(url)
    t = time.perf_counter()
    try:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        conn.request(method, path, json.dumps(body).encode() if body is not None else None,
                     {"Content-Type": "application/json"} if body is not None else {})
        resp = conn.getresponse()
        status, raw = resp.status, resp.read().decode(errors="replace")
        conn.close()
    except (OSError, http.client.HTTPException) as e:
        status, raw = None, f"{type(e).__name__}: {e}"
    return status, raw, time.perf_counter() - t


def models_state(url: str) -> dict:
    status, raw, _ = request(url, "GET", "/v1/models", timeout=60)
    if status != 200:
        return {"_error": f"{status} {raw[:500]}"}
    return {m["id"]: m.get("state") for m in json.loads(raw).get("models", [])}


def wait_ready(url: str, ids: list[str], limit_s: float = 300) -> dict:
    """Waits until every model in ids is listed as ready (the server answers /health once the
    default one is)."""
    end = time.monotonic() + limit_s
    while True:
        states = models_state(url)
        if all(states.get(i) == "ready" for i in ids) or time.monotonic() > end:
            return states
        time.sleep(0.25)


# ---------------------------------------------------------------------------------------------
# the timed closed loop


def timed_groups(url: str, groups: list[dict], duration: float, prompt: str, new_tokens: int, server_pid: int | None = None) -> dict:
    """groups: [{"model": id, "concurrency": n}, ...]; every client of every group starts at the
    same instant (a barrier) and sends POST /v1/generate back to back until the window ends.
    Returns {model: run} with tokens/s over the window, p50/p99 latency and errors as received."""
    u = urlparse(url)
    total = sum(g["concurrency"] for g in groups)
    box: dict = {}
    lock = threading.Lock()
    headers = {"Content-Type": "application/json"}

    def started() -> None:
        box["start"] = time.perf_counter()
        box["cpu0"] = time.process_time()
        box["srv0"] = openai_bench.cpu_seconds(server_pid)

    barrier = threading.Barrier(total + 1, action=started)
    per_group: dict[str, list] = {g["model"]: [] for g in groups}  # (t0, t1, tokens, ok)
    errors: dict[str, list] = {g["model"]: [] for g in groups}
    counts: dict[str, dict] = {g["model"]: {"errors": 0, "full_length": 0, "prompt_tokens_seen": set()} for g in groups}

    def worker(model: str, body: bytes) -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        try:
            conn.connect()
        except OSError as e:
            with lock:
                errors[model].append(f"cannot connect: {type(e).__name__}: {e}")
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        deadline = box["start"] + duration
        mine = []
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            try:
                conn.request("POST", "/v1/generate", body, headers)
                resp = conn.getresponse()
                raw = resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as e:
                status, raw = None, f"{type(e).__name__}: {e}".encode()
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
            t1 = time.perf_counter()
            tokens, ok, note = 0, False, None
            if status == 200:
                try:
                    b = json.loads(raw)
                    tokens = b["usage"]["generated_tokens"]
                    ok = True
                    with lock:
                        counts[model]["full_length"] += int(tokens == new_tokens)
                        counts[model]["prompt_tokens_seen"].add(b["usage"]["input_tokens"])
                except (ValueError, KeyError, TypeError) as e:
                    note = f"200 with an unexpected body ({type(e).__name__}: {e}): {raw.decode(errors='replace')[:500]}"
            else:
                note = f"{status} {raw.decode(errors='replace')[:500]}"
            if note is not None:
                with lock:
                    counts[model]["errors"] += 1
                    if len(errors[model]) < 5:
                        errors[model].append(note)
            mine.append((t0, t1, tokens, ok))
        conn.close()
        with lock:
            per_group[model].extend(mine)

    threads = []
    for g in groups:
        body = json.dumps({"model": g["model"], "inputs": prompt,
                           "parameters": {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}}).encode()
        threads += [threading.Thread(target=worker, args=(g["model"], body), daemon=True) for _ in range(g["concurrency"])]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        first = next((e[0] for e in errors.values() if e), "a client could not start")
        sys.exit(f"/v1/generate: {first} (is the server still up?)")
    start = box["start"]
    time.sleep(max(0.0, start + duration - time.perf_counter()))
    srv_window = openai_bench.cpu_seconds(server_pid)
    cpu_window = time.process_time()
    for t in threads:
        t.join()
    end = time.perf_counter()
    out = {}
    for g in groups:
        m = g["model"]
        reqs = per_group[m]
        lat = sorted(t1 - t0 for t0, t1, _, ok in reqs if ok)
        in_window = [r for r in reqs if r[1] <= start + duration]
        run = {
            "model": m,
            "concurrency": g["concurrency"],
            "window_s": duration,
            "drain_s": end - (start + duration),
            "requests": len(reqs),
            "requests_in_window": len(in_window),
            "tokens_in_window": sum(r[2] for r in in_window),
            "tokens_per_s": sum(r[2] for r in in_window) / duration,
            "p50_s": lat[len(lat) // 2] if lat else None,
            "p99_s": lat[min(len(lat) - 1, round((len(lat) - 1) * 0.99))] if lat else None,
            "mean_s": statistics.mean(lat) if lat else None,
            "errors": counts[m]["errors"],
            "full_length": counts[m]["full_length"],
            "prompt_tokens_seen": sorted(counts[m]["prompt_tokens_seen"]),
            "client_cpu_s": cpu_window - box["cpu0"],
        }
        if box["srv0"] is not None and srv_window is not None:
            run["server_cpu_s"] = srv_window - box["srv0"]
        if errors[m]:
            run["first_errors"] = errors[m]
            for e in errors[m]:
                print(f"ERROR from /v1/generate (model {m}): {e}", file=sys.stderr)
        out[m] = run
    return out


# ---------------------------------------------------------------------------------------------
# the benchmark

# The cases of each server, in the order of odd rounds (even rounds run them in reverse).
CASES = {
    "one": [("a32_alone", [("a", 32)])],
    "two": [
        ("a32_b_idle", [("a", 32)]),
        ("both32", [("a", 32), ("b", 32)]),
        ("a32_b1", [("a", 32), ("b", 1)]),
        ("b1_alone", [("b", 1)]),
    ],
}


def emitter(out_path: str):
    out = open(out_path, "a")

    def emit(line: dict) -> None:
        out.write(json.dumps(line) + "\n")
        out.flush()
        print(json.dumps(line), flush=True)

    return emit


def run(url: str, work: str, out_path: str, server_pid: int, rnd: int, kind: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    emit = emitter(out_path)
    duration = env_float("DURATION", 8)
    warmup = env_float("WARMUP", 2)
    new_tokens = int(env_float("NEW_TOKENS", 32))
    prompt = Path(work, "openai-prompt.txt").read_text().strip()
    ids = ["a"] if kind == "one" else ["a", "b"]
    t = time.perf_counter()
    states = wait_ready(url, ids)
    emit({"kind": "server", "server": kind, "round": rnd, "models": states, "ready_wait_s": time.perf_counter() - t,
          "status_after_start": proc_status(server_pid)})
    # Warm-up: each model at 32 clients, then at 1, for WARMUP seconds in all (not recorded).
    for m in ids:
        timed_groups(url, [{"model": m, "concurrency": 32}], warmup * 0.75, prompt, new_tokens)
        timed_groups(url, [{"model": m, "concurrency": 1}], warmup * 0.25, prompt, new_tokens)
    cases = CASES[kind] if rnd % 2 else list(reversed(CASES[kind]))
    for name, groups in cases:
        before = proc_status(server_pid)
        res = timed_groups(url, [{"model": m, "concurrency": c} for m, c in groups], duration, prompt, new_tokens, server_pid)
        emit({"kind": "case", "case": name, "server": kind, "round": rnd, "runs": res, "status_before": before})
    time.sleep(1)
    emit({"kind": "server_idle", "server": kind, "round": rnd, "status": proc_status(server_pid), "models": models_state(url)})


def memory(url: str, work: str, out_path: str, server_pid: int) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    emit = emitter(out_path)
    warmup = env_float("WARMUP", 2)
    cycles = int(env_float("CYCLES", 3))
    new_tokens = int(env_float("NEW_TOKENS", 32))
    prompt = Path(work, "openai-prompt.txt").read_text().strip()
    step = 0

    def snapshot(label: str, **extra) -> None:
        nonlocal step
        time.sleep(1)  # let freed memory and ended threads settle
        step += 1
        emit({"kind": "memory", "step": step, "label": label, "status": proc_status(server_pid),
              "models": models_state(url), **extra})

    def control(action: str) -> dict:
        status, raw, secs = request(url, "POST", f"/v1/models/b/{action}")
        line = {"kind": "control", "action": action, "status": status, "body": raw[:1000], "client_s": secs}
        emit(line)
        if status != 200:
            print(f"ERROR from POST /v1/models/b/{action}: {status} {raw[:1000]}", file=sys.stderr)
        return line

    def traffic(ids: list[str]) -> dict:
        res = timed_groups(url, [{"model": m, "concurrency": 32} for m in ids], warmup, prompt, new_tokens)
        return {m: {k: r[k] for k in ("requests", "errors", "tokens_per_s") if k in r} | ({"first_errors": r["first_errors"]} if "first_errors" in r else {})
                for m, r in res.items()}

    wait_ready(url, ["a"])
    snapshot("a only, after start (its warm-up done), idle")
    snapshot("a only, idle after traffic on a", traffic=traffic(["a"]))
    c = control("load")
    snapshot("a + b (b just loaded from the repository), idle", load=c)
    snapshot("a + b, idle after traffic on both", traffic=traffic(["a", "b"]))
    for k in range(1, cycles + 1):
        c = control("unload")
        # A request for b after its unload: documented as a 404 naming the served models.
        st, raw, _ = request(url, "POST", "/v1/generate", {"model": "b", "inputs": prompt, "parameters": {"max_new_tokens": 1}})
        snapshot(f"cycle {k}: after POST /v1/models/b/unload", unload=c, request_to_b={"status": st, "body": raw[:300]})
        c = control("load")
        snapshot(f"cycle {k}: after POST /v1/models/b/load, idle", load=c)
        snapshot(f"cycle {k}: idle after traffic on both", traffic=traffic(["a", "b"]))


def log_lines(out_path: str, label: str, log_path: str) -> None:
    emit = emitter(out_path)
    errors, warns, total = [], [], 0
    for line in open(log_path, errors="replace"):
        total += 1
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)  # the text log's colours
        if " ERROR " in line or "panicked" in line or '"level":"ERROR"' in line:
            errors.append(line.rstrip()[:600])
        elif " WARN " in line or '"level":"WARN"' in line:
            warns.append(line.rstrip()[:600])
    # bench/serve.sh's start_server polls /health until it answers 200: the 503s before that
    # (warming up) are logged at ERROR by the HTTP trace layer; counted apart from the others.
    startup = [e for e in errors if "path=/health" in e and "503" in e]
    errors = [e for e in errors if e not in startup]
    emit({"kind": "server_log", "label": label, "log": log_path, "lines": total, "errors": len(errors), "warnings": len(warns),
          "health_503_while_starting": len(startup), "first_errors": errors[:5], "first_warnings": warns[:5],
          "first_health_503": startup[:1]})


# ---------------------------------------------------------------------------------------------
# the report


def report(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    meta = next(r for r in rows if r["kind"] == "meta")
    cases = [r for r in rows if r["kind"] == "case"]
    med = statistics.median
    cpu = meta["cpu"]
    cores = cpu["cores"]
    mib = lambda kb: kb / 1024  # noqa: E731
    ms = lambda s: "-" if s is None else f"{s * 1000:.0f}"  # noqa: E731

    def runs(case: str, model: str) -> dict[int, dict]:
        return {r["round"]: r["runs"][model] for r in cases if r["case"] == case and model in r["runs"]}

    def medf(values) -> float:
        v = [x for x in values if x is not None]
        return med(v) if v else float("nan")

    def rounds_list(values, fmt="{:.0f}") -> str:
        return ", ".join(fmt.format(x) for x in values)

    rounds = sorted({r["round"] for r in cases})
    print(f"# Several models in one process, {meta['model']}, {meta['date']} on {meta['host']} ({cores} cores, {cpu['model_name']})\n")
    print(f"`{meta['command']}`{' (QUICK=1: a smoke run, too short for figures to mean much)' if meta.get('quick') else ''}, "
          f"t5serve at {meta['git_commit'][:7]}{' with uncommitted changes' if meta['git_dirty'] else ''}"
          f"{', flags `' + meta['server_flags'] + '`' if meta['server_flags'] else ''}.\n")
    print(f"CPU flags (/proc/cpuinfo): {', '.join(meta['cpu_flags']) or 'none of them'}; t5serve's int8 kernel "
          f"{cpu['int8_kernel']} (saturating: {str(cpu['int8_kernel_saturates']).lower()}).\n")
    print("```\nCPU: " + json.dumps(cpu, separators=(",", ":")) + "\n```\n")
    print(f"Servers: `{meta['serve_one']}` (only a) and `{meta['serve_two']}` (a and b: the same model directory "
          f"under two ids), each started afresh in each of {len(rounds)} rounds, the two servers' order alternating by round "
          "and the cases on the two-model server in reverse order in even rounds. "
          f"Workload: POST /v1/generate with the {PROMPT_TOKENS}-token prompt of bench/openai_bench.py, greedy, exactly "
          f"{meta['new_tokens']} new tokens (min_new_tokens = max_new_tokens), \"model\" naming a or b. Timed closed loop: "
          f"every client of every group starts at once and sends requests back to back for {meta['duration_s']:g} s on its own "
          "keep-alive connection (Python threads); tokens/s counts the requests answered inside the window, latencies every "
          f"request started in it. After each start, {meta['warmup_s']:g} s of warm-up traffic per model (not counted). "
          "Figures: median over the rounds, the rounds' values in order.\n")

    # --- 1 and 2 ------------------------------------------------------------------------------
    print("## Model a at 32 clients: alone in its server, and beside an idle model b\n")
    print("| server | a tok/s | rounds | p50 ms | p99 ms | errors | server CPU (cores) | client CPU share |")
    print("|---|---|---|---|---|---|---|---|")
    for case, label in (("a32_alone", "only a (`--model a=...`)"), ("a32_b_idle", "a and b, b idle")):
        rr = runs(case, "a")
        if not rr:
            continue
        v = [rr[k] for k in sorted(rr)]
        srv = medf(x.get("server_cpu_s", 0) / x["window_s"] for x in v)
        share = sum(x["client_cpu_s"] for x in v) / sum(x["window_s"] * cores for x in v)
        print(f"| {label} | {medf(x['tokens_per_s'] for x in v):.0f} | {rounds_list(x['tokens_per_s'] for x in v)} | "
              f"{medf(x['p50_s'] for x in v) * 1000:.0f} | {medf(x['p99_s'] for x in v) * 1000:.0f} | "
              f"{sum(x['errors'] for x in v)} | {srv:.2f} | {share:.1%} |")
    one, two = runs("a32_alone", "a"), runs("a32_b_idle", "a")
    ratios = [two[k]["tokens_per_s"] / one[k]["tokens_per_s"] for k in sorted(one) if k in two and one[k]["tokens_per_s"] > 0]
    if ratios:
        print(f"\nRatio (a beside idle b) / (a alone), per round: median {med(ratios):.3f} ({rounds_list(ratios, '{:.2f}')}).\n")

    # --- 3 ------------------------------------------------------------------------------------
    print("## Both busy: 32 clients on a and 32 on b in the same window\n")
    a, b = runs("both32", "a"), runs("both32", "b")
    ks = [k for k in sorted(a) if k in b]
    if ks:
        print("| model | tok/s | rounds | p50 ms | p99 ms | errors |")
        print("|---|---|---|---|---|---|")
        for m, rr in (("a", a), ("b", b)):
            v = [rr[k] for k in ks]
            print(f"| {m} | {medf(x['tokens_per_s'] for x in v):.0f} | {rounds_list(x['tokens_per_s'] for x in v)} | "
                  f"{medf(x['p50_s'] for x in v) * 1000:.0f} | {medf(x['p99_s'] for x in v) * 1000:.0f} | {sum(x['errors'] for x in v)} |")
        sums = [a[k]["tokens_per_s"] + b[k]["tokens_per_s"] for k in ks]
        fair = [min(a[k]["tokens_per_s"], b[k]["tokens_per_s"]) / max(a[k]["tokens_per_s"], b[k]["tokens_per_s"])
                if max(a[k]["tokens_per_s"], b[k]["tokens_per_s"]) > 0 else float("nan") for k in ks]
        print(f"| sum a + b | {med(sums):.0f} | {rounds_list(sums)} | | | |")
        srv = [ (a[k].get("server_cpu_s") or 0) / a[k]["window_s"] for k in ks]
        print(f"\nFairness min/max of the two models' tok/s: median {med(fair):.3f} ({rounds_list(fair, '{:.2f}')}). "
              f"Server CPU: {med(srv):.2f} cores (median).")
        if two:
            rs = [sums[i] / two[k]["tokens_per_s"] for i, k in enumerate(ks) if k in two and two[k]["tokens_per_s"] > 0]
            if rs:
                print(f"Sum against a alone at 32 clients on the same two-model server (b idle), per round: "
                      f"median {med(rs):.3f} ({rounds_list(rs, '{:.2f}')}).")
        print()

    print("## Asymmetric: 32 clients on a and 1 client on b, against b alone at 1 client\n")
    aa, ab, b1 = runs("a32_b1", "a"), runs("a32_b1", "b"), runs("b1_alone", "b")
    if ab and b1:
        print("| | tok/s | rounds | p50 ms | rounds' p50 ms | p99 ms | requests | errors |")
        print("|---|---|---|---|---|---|---|---|")
        for label, rr in (("a (32 clients) while b has 1", aa), ("b (1 client) while a has 32", ab),
                          ("b alone at 1 client (a idle)", b1), ("a alone at 32 clients (b idle)", two)):
            v = [rr[k] for k in sorted(rr)]
            if not v:
                continue
            print(f"| {label} | {medf(x['tokens_per_s'] for x in v):.0f} | {rounds_list(x['tokens_per_s'] for x in v)} | "
                  f"{medf(x['p50_s'] for x in v) * 1000:.0f} | {rounds_list((x['p50_s'] or 0) * 1000 for x in v)} | "
                  f"{medf(x['p99_s'] for x in v) * 1000:.0f} | {sum(x['requests'] for x in v)} | {sum(x['errors'] for x in v)} |")
        rs = [ab[k]["p50_s"] / b1[k]["p50_s"] for k in sorted(ab) if k in b1 and ab[k]["p50_s"] and b1[k]["p50_s"]]
        if rs:
            print(f"\nb's p50 latency beside busy a / b's p50 alone, per round: median {med(rs):.2f}x ({rounds_list(rs, '{:.2f}')}).")
        ta = [ab[k]["tokens_per_s"] / aa[k]["tokens_per_s"] for k in sorted(ab) if k in aa and aa[k]["tokens_per_s"] > 0]
        ra = [aa[k]["tokens_per_s"] / two[k]["tokens_per_s"] for k in sorted(aa) if k in two and two[k]["tokens_per_s"] > 0]
        if ra:
            sa = [(aa[k]["tokens_per_s"] + ab[k]["tokens_per_s"]) / two[k]["tokens_per_s"] for k in sorted(aa) if k in ab and k in two and two[k]["tokens_per_s"] > 0]
            print(f"a's tok/s while b has 1 client / a's alone at 32 clients (b idle), per round: median {med(ra):.3f} "
                  f"({rounds_list(ra, '{:.2f}')}); the sum a + b against a alone: median {med(sa):.3f} ({rounds_list(sa, '{:.2f}')}).")
        if ta:
            print(f"b's share of the tokens (b/a tok/s) in the asymmetric case: median {med(ta):.3f}; with 1 of 33 clients, "
                  f"an even split of requests would be {1 / 32:.3f}.")
        print()

    # --- errors -------------------------------------------------------------------------------
    errs = [(r["case"], r["round"], m, e) for r in cases for m, x in r["runs"].items() for e in x.get("first_errors", [])]
    nerr = sum(x["errors"] for r in cases for x in r["runs"].values())
    short = sum(x["requests"] - x["errors"] - x["full_length"] for r in cases for x in r["runs"].values())
    ptoks = sorted({p for r in cases for x in r["runs"].values() for p in x.get("prompt_tokens_seen", [])})
    print(f"Client-side errors over all timed runs: {nerr}; answers with other than {meta['new_tokens']} tokens: {short}; "
          f"input_tokens as the server counted them: {', '.join(map(str, ptoks))}.\n")
    for case, rnd, m, e in errs[:10]:
        print(f"- error ({case}, round {rnd}, model {m}): `{e}`")
    if errs:
        print()

    # --- 4 ------------------------------------------------------------------------------------
    mem = [r for r in rows if r["kind"] == "memory"]
    if mem:
        print("## Resident memory through unload and load\n")
        print(f"`{meta['serve_memory']}` (REPO a temporary folder holding a symlink b -> {meta['model']}), then "
              "POST /v1/models/b/load, traffic, and unload/load cycles; /proc/PID/status 1 s after each step "
              f"(traffic: {meta['warmup_s']:g} s at 32 clients per model).\n")
        print("| step | VmRSS MiB | change MiB | RssAnon MiB | RssFile MiB | threads | b | control answer |")
        print("|---|---|---|---|---|---|---|---|")
        prev = None
        for r in mem:
            s = r["status"]
            ctl = r.get("load") or r.get("unload")
            ctl_s = ""
            if ctl:
                ctl_s = f"{ctl['status']} in {ctl['client_s']:.2f} s"
                if ctl["status"] != 200:
                    ctl_s += f": `{ctl['body'][:200]}`"
            if "request_to_b" in r:
                q = r["request_to_b"]
                ctl_s += f"; a request for b then: {q['status']}"
            tr = r.get("traffic")
            if tr:
                bad = {m: x for m, x in tr.items() if x.get("errors")}
                if bad:
                    ctl_s += "; traffic errors: " + "; ".join(f"{m}: {x['errors']} (`{x.get('first_errors', [''])[0][:200]}`)" for m, x in bad.items())
            change = "" if prev is None else f"{mib(s['VmRSS'] - prev):+.0f}"
            prev = s["VmRSS"]
            print(f"| {r['label']} | {mib(s['VmRSS']):.0f} | {change} | {mib(s.get('RssAnon', 0)):.0f} | {mib(s.get('RssFile', 0)):.0f} | "
                  f"{s.get('Threads', '')} | {r['models'].get('b', 'not listed')} | {ctl_s} |")
        peak = max(r["status"].get("VmHWM", 0) for r in mem)
        print(f"\nPeak VmHWM of that server: {mib(peak):.0f} MiB.\n")
    idle = [r for r in rows if r["kind"] == "server_idle"]
    if idle:
        print("Idle after the rounds' traffic (each round's server, 1 s after its last run):\n")
        print("| server | VmRSS MiB (median) | rounds | threads |")
        print("|---|---|---|---|")
        for kind, label in (("one", "only a"), ("two", "a and b")):
            v = [r["status"] for r in idle if r["server"] == kind]
            if v:
                print(f"| {label} | {medf(mib(x['VmRSS']) for x in v):.0f} | {rounds_list(mib(x['VmRSS']) for x in v)} | "
                      f"{v[0].get('Threads', '')} |")
        print()

    # --- server logs --------------------------------------------------------------------------
    logs = [r for r in rows if r["kind"] == "server_log"]
    if logs:
        print("## Server logs\n")
        h = sum(r.get("health_503_while_starting", 0) for r in logs)
        print(f"{len(logs)} server runs; ERROR/panic lines: {sum(r['errors'] for r in logs)}, WARN lines: {sum(r['warnings'] for r in logs)}; "
              f"besides these, {h} ERROR lines for a 503 from GET /health while the server warmed up (bench/serve.sh polls it until it is ready)"
              + (f", e.g. `{next(r['first_health_503'][0] for r in logs if r.get('first_health_503'))}`" if h else "") + ".\n")
        for r in logs:
            for e in r["first_errors"]:
                print(f"- {r['label']}: `{e}`")
            for w in r["first_warnings"][:2]:
                print(f"- {r['label']} (warning): `{w}`")


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "inputs":
        # bench/openai_bench.py's inputs: the prompt (and its embedding texts, unused here).
        openai_bench.make_inputs(args[0], args[1])
    elif cmd == "run":
        run(args[0], args[1], args[2], int(args[3]), int(args[4]), args[5])
    elif cmd == "memory":
        memory(args[0], args[1], args[2], int(args[3]))
    elif cmd == "log":
        log_lines(args[0], args[1], args[2])
    elif cmd == "report":
        report(args[0])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
