#!/usr/bin/env python3
"""The Open Inference Protocol (KServe v2) over REST and gRPC against t5serve's own route, for
bench/oip.sh. Not a test: it prints figures and makes no assertions about them.

    oip_bench.py inputs MODEL_DIR WORK_DIR
        writes WORK_DIR/openai-prompt.txt, the 64-token prompt (bench/openai_bench.py's inputs;
        needs transformers: bench/oip.sh runs it with .venv)
    oip_bench.py run URL GRPC_ADDRESS WORK_DIR OUT_JSONL [SERVER_PID]
        against a running server (HTTP at URL, gRPC at GRPC_ADDRESS, host:port): each route's
        answer alone (the reference texts), warm-up, then ROUNDS rounds of timed windows, each
        route at 1 and at 32 clients; appends JSON lines to OUT_JSONL and prints them (needs
        tritonclient[http,grpc]: bench/oip.sh runs it with .venv-test)
    oip_bench.py log OUT_JSONL LABEL SERVER_LOG
        the server log's ERROR / WARN / panic lines, as one JSON line (bench/models_bench.py's)
    oip_bench.py report OUT_JSONL
        the markdown report

Sizes come from the environment (see bench/oip.sh): ROUNDS, DURATION (seconds per timed window),
WARMUP (seconds of warm-up traffic per route), NEW_TOKENS; and GRPC_OWN_CONNECTIONS (below).

The routes, the same workload each (the 64-token prompt, greedy, min_new_tokens =
max_new_tokens = NEW_TOKENS, one text per request):
    v1       POST /v1/generate, JSON, bench/openai_bench.py's client and body (http.client, one
             keep-alive connection per client thread);
    v2_rest  POST /v2/models/ID/infer through Triton's tritonclient.http, its defaults (binary
             tensor data both ways), one InferenceServerClient per client thread;
    grpc     ModelInfer through Triton's tritonclient.grpc, its defaults, one
             InferenceServerClient per client thread (its channel options are the same for every
             client, so gRPC's global subchannel pool puts them all on one HTTP/2 connection: the
             report counts the connections in each window; GRPC_OWN_CONNECTIONS=1 gives each
             client a subchannel pool, and so a connection, of its own).
Both v2 routes send `text_input` (BYTES, shape [1]) with parameters {"max_new_tokens": N,
"min_new_tokens": N}. Each client's connection is opened (a request to the server: v1 a TCP
connect, the v2 clients is_server_live) before the clock starts.

Windows are bench/models_bench.py's: every client starts at the same instant (a barrier) and
sends requests back to back until DURATION has passed, then finishes the request in flight.
tokens/s = the requests answered without error inside the window x NEW_TOKENS / the window;
latencies are those of every answered request started in it. Each answer's text is compared with
v1's answer to the prompt sent alone (greedy: they should agree), and v1's usage.generated_tokens
with NEW_TOKENS (the v2 routes do not report a count).
"""

import json
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models_bench  # noqa: E402  (its JSONL emitter and server-log reader)
import openai_bench  # noqa: E402  (its prompt, /proc CPU-time reader and HTTP helpers)

PROMPT_TOKENS = openai_bench.PROMPT_TOKENS
ROUTES = ("v1", "v2_rest", "grpc")
LABELS = {"v1": "POST /v1/generate (JSON)", "v2_rest": "POST /v2/models/ID/infer (tritonclient.http, binary)",
          "grpc": "gRPC ModelInfer (tritonclient.grpc)"}
CONCURRENCIES = (1, 32)


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


# ---------------------------------------------------------------------------------------------
# the clients: one object per client thread; call() -> (text, tokens reported or None)


class CallError(Exception):
    """An answer that is not a success, as received; `reconnect` when the connection is gone."""

    def __init__(self, note: str, reconnect: bool = False):
        super().__init__(note)
        self.reconnect = reconnect


class V1Client:
    def __init__(self, url: str, body: bytes):
        import http.client

        self.http = http.client
        self.u = urlparse(url)
        self.body = body
        self.conn = self.http.HTTPConnection(self.u.hostname, self.u.port, timeout=600)
        self.conn.connect()

    def call(self) -> tuple[str, int | None]:
        try:
            self.conn.request("POST", "/v1/generate", self.body, {"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            raw, status = resp.read(), resp.status
        except (OSError, self.http.HTTPException) as e:
            raise CallError(f"None {type(e).__name__}: {e}", reconnect=True)
        if status != 200:
            raise CallError(f"{status} {raw.decode(errors='replace')[:500]}")
        try:
            b = json.loads(raw)
            return b["generated_text"], b["usage"]["generated_tokens"]
        except (ValueError, KeyError, TypeError) as e:
            raise CallError(f"200 with an unexpected body ({type(e).__name__}: {e}): {raw.decode(errors='replace')[:500]}")

    def close(self) -> None:
        self.conn.close()


class TritonClient:
    """tritonclient.http or tritonclient.grpc, the same calls."""

    def __init__(self, module, address: str, model_id: str, prompt: str, new_tokens: int):
        import numpy as np

        self.m = module
        self.address, self.model_id = address, model_id
        self.params = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
        self.input = module.InferInput("text_input", [1], "BYTES")
        self.input.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
        self.client = self.connect()

    def connect(self):
        if self.m.__name__ == "tritonclient.http":
            c = self.m.InferenceServerClient(self.address, connection_timeout=600, network_timeout=600)
        elif os.environ.get("GRPC_OWN_CONNECTIONS"):
            # Triton's default channel options plus a subchannel pool of the channel's own: one
            # HTTP/2 connection per client instead of one shared by all.
            k = self.m.KeepAliveOptions()
            args = [("grpc.max_send_message_length", self.m.MAX_GRPC_MESSAGE_SIZE),
                    ("grpc.max_receive_message_length", self.m.MAX_GRPC_MESSAGE_SIZE),
                    ("grpc.keepalive_time_ms", k.keepalive_time_ms), ("grpc.keepalive_timeout_ms", k.keepalive_timeout_ms),
                    ("grpc.keepalive_permit_without_calls", k.keepalive_permit_without_calls),
                    ("grpc.http2.max_pings_without_data", k.http2_max_pings_without_data),
                    ("grpc.use_local_subchannel_pool", 1)]
            c = self.m.InferenceServerClient(self.address, channel_args=args)
        else:
            c = self.m.InferenceServerClient(self.address)
        c.is_server_live()  # opens the connection outside the clock
        return c

    def call(self) -> tuple[str, int | None]:
        from tritonclient.utils import InferenceServerException

        try:
            kw = {"client_timeout": 600} if self.m.__name__ == "tritonclient.grpc" else {}
            result = self.client.infer(self.model_id, [self.input], parameters=self.params, **kw)
        except InferenceServerException as e:
            raise CallError(f"{e.status()} {e.message()[:500]}")
        except Exception as e:  # the transport's own (gevent sockets, grpc): a new client
            note = f"None {type(e).__name__}: {str(e)[:500]}"
            try:
                self.client.close()
            except Exception:
                pass
            try:
                self.client = self.connect()
            except Exception as e2:
                note += f" (and reconnecting: {type(e2).__name__}: {str(e2)[:200]})"
            raise CallError(note)
        out = result.as_numpy("text_output")
        if out is None or out.shape != (1,):
            raise CallError(f"unexpected text_output: {None if out is None else out.shape} {result.get_response()}")
        return out[0].decode(), None

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------------------------------------
# the timed window


def connections(port: int) -> int:
    """Established TCP connections to `port` on this machine (the clients' ends)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "01" and int(f[2].rsplit(":", 1)[1], 16) == port:
                n += 1
    return n


def timed_window(make_client, concurrency: int, duration: float, port: int, reference: str | None, new_tokens: int,
                 server_pid: int | None = None, label: str = "") -> dict:
    """`concurrency` threads, each with its own client (made and connected before the barrier),
    start at the same instant and call back to back until `duration` has passed."""
    box: dict = {}
    lock = threading.Lock()

    def started() -> None:
        box["start"] = time.perf_counter()
        box["cpu0"] = time.process_time()
        box["srv0"] = openai_bench.cpu_seconds(server_pid)

    barrier = threading.Barrier(concurrency + 1, action=started)
    reqs: list = []  # (t0, t1, ok)
    errors: list[str] = []
    mismatches: list[str] = []
    counts = {"errors": 0, "full_length": 0, "short": 0, "text_checked": 0, "text_mismatches": 0}

    def worker() -> None:
        try:
            client = make_client()
        except Exception as e:
            with lock:
                errors.append(f"cannot connect: {type(e).__name__}: {e}")
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            client.close()
            return
        deadline = box["start"] + duration
        mine = []
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            ok, note, text, tokens = False, None, None, None
            try:
                text, tokens = client.call()
                ok = True
            except CallError as e:
                note = str(e)
                if e.reconnect:
                    try:
                        client.close()
                        client = make_client()
                    except Exception as e2:
                        note += f" (and reconnecting: {type(e2).__name__}: {e2})"
            t1 = time.perf_counter()
            mine.append((t0, t1, ok))
            with lock:
                if not ok:
                    counts["errors"] += 1
                    if len(errors) < 5:
                        errors.append(note)
                    continue
                if tokens is not None:
                    counts["full_length" if tokens == new_tokens else "short"] += 1
                if reference is not None:
                    counts["text_checked"] += 1
                    if text != reference:
                        counts["text_mismatches"] += 1
                        if len(mismatches) < 3 and text not in mismatches:
                            mismatches.append(text)
        client.close()
        with lock:
            reqs.extend(mine)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        sys.exit(f"{label}: {errors[0] if errors else 'a client could not start'} (is the server still up?)")
    start = box["start"]
    time.sleep(max(0.0, start + duration / 2 - time.perf_counter()))
    conns = connections(port)
    time.sleep(max(0.0, start + duration - time.perf_counter()))
    srv_window = openai_bench.cpu_seconds(server_pid)
    cpu_window = time.process_time()
    for t in threads:
        t.join()
    end = time.perf_counter()
    lat = sorted(t1 - t0 for t0, t1, ok in reqs if ok)
    answered = [r for r in reqs if r[2] and r[1] <= start + duration]
    # Beside the figure: each answered request credited with the share of its time inside the
    # window (less sensitive to the requests in flight when the window ends).
    prorated = sum((min(t1, start + duration) - t0) / (t1 - t0) for t0, t1, ok in reqs if ok and t1 > t0)
    run = {
        "concurrency": concurrency,
        "window_s": duration,
        "drain_s": end - (start + duration),
        "requests": len(reqs),
        "answered_in_window": len(answered),
        "tokens_per_s": len(answered) * new_tokens / duration,
        "tokens_per_s_prorated": prorated * new_tokens / duration,
        "p50_s": lat[len(lat) // 2] if lat else None,
        "p99_s": lat[min(len(lat) - 1, round((len(lat) - 1) * 0.99))] if lat else None,
        "mean_s": statistics.mean(lat) if lat else None,
        **counts,
        "connections_mid_window": conns,
        "client_cpu_s": cpu_window - box["cpu0"],
    }
    if box["srv0"] is not None and srv_window is not None:
        run["server_cpu_s"] = srv_window - box["srv0"]
    if errors:
        run["first_errors"] = errors
        for e in errors:
            print(f"ERROR from {label}: {e}", file=sys.stderr)
    if mismatches:
        run["first_mismatching_texts"] = mismatches
    return run


# ---------------------------------------------------------------------------------------------
# the benchmark


def run(url: str, grpc_address: str, work: str, out_path: str, server_pid: int | None) -> None:
    # Imported here, not at the top: `inputs` runs in a Python without them. tritonclient.grpc
    # must not be imported together with kserve (the same protobuf package); it is not.
    import numpy
    import tritonclient
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    emit = models_bench.emitter(out_path)
    rounds = int(env_float("ROUNDS", 5))
    duration = env_float("DURATION", 8)
    warmup = env_float("WARMUP", 2)
    new_tokens = int(env_float("NEW_TOKENS", 32))
    prompt = Path(work, "openai-prompt.txt").read_text().strip()
    model_id = openai_bench.get_json(url, "/v1/models")["data"][0]["id"]
    u = urlparse(url)
    http_address = f"{u.hostname}:{u.port}"
    grpc_port = int(grpc_address.rsplit(":", 1)[1])
    v1_body = json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}}).encode()
    makers = {
        "v1": lambda: V1Client(url, v1_body),
        "v2_rest": lambda: TritonClient(triton_http, http_address, model_id, prompt, new_tokens),
        "grpc": lambda: TritonClient(triton_grpc, grpc_address, model_id, prompt, new_tokens),
    }
    ports = {"v1": u.port, "v2_rest": u.port, "grpc": grpc_port}
    try:
        import importlib.metadata as md

        version = md.version("tritonclient")
    except Exception:
        version = getattr(tritonclient, "__version__", "?")
    emit({"kind": "workload", "model_id": model_id, "prompt_tokens": PROMPT_TOKENS, "new_tokens": new_tokens,
          "grpc_own_connections": bool(os.environ.get("GRPC_OWN_CONNECTIONS")),
          "rounds": rounds, "duration_s": duration, "warmup_s": warmup, "tritonclient": version,
          "numpy": numpy.__version__, "http": http_address, "grpc": grpc_address})

    # Each route's answer alone, twice: the reference texts (greedy, so they should agree).
    alone = {}
    for route in ROUTES:
        c = makers[route]()
        try:
            alone[route] = [list(c.call()) for _ in range(2)]
        except CallError as e:
            sys.exit(f"{route}: the first request failed: {e}")
        finally:
            c.close()
    reference = alone["v1"][0][0]
    texts = {t for answers in alone.values() for t, _ in answers}
    emit({"kind": "reference", "answers": alone, "agree": len(texts) == 1, "reference_text": reference,
          "v1_tokens": alone["v1"][0][1]})

    # Warm-up: each route at 32 clients, then at 1, for WARMUP seconds in all (not recorded).
    for route in ROUTES:
        timed_window(makers[route], 32, warmup * 0.75, ports[route], None, new_tokens, label=route)
        timed_window(makers[route], 1, warmup * 0.25, ports[route], None, new_tokens, label=route)

    for r in range(1, rounds + 1):
        k = (r - 1) % len(ROUTES)
        order = list(ROUTES[k:] + ROUTES[:k])
        for c in CONCURRENCIES:
            for route in order:
                res = timed_window(makers[route], c, duration, ports[route], reference, new_tokens, server_pid, route)
                emit({"kind": "window", "route": route, "round": r, "order": order, "run": res})


# ---------------------------------------------------------------------------------------------
# the report


def report(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    meta = next(r for r in rows if r["kind"] == "meta")
    wl = next((r for r in rows if r["kind"] == "workload"), None)
    ref = next((r for r in rows if r["kind"] == "reference"), None)
    wins = [r for r in rows if r["kind"] == "window"]
    med = statistics.median
    cpu = meta["cpu"]
    cores = cpu["cores"]

    def medf(values) -> float:
        v = [x for x in values if x is not None]
        return med(v) if v else float("nan")

    def rounds_list(values, fmt="{:.0f}") -> str:
        return ", ".join(fmt.format(x) for x in values)

    def runs(route: str, c: int) -> dict[int, dict]:
        return {r["round"]: r["run"] for r in wins if r["route"] == route and r["run"]["concurrency"] == c}

    print(f"# Open Inference Protocol (v2 REST, gRPC) against /v1/generate, {meta['model']}, {meta['date']} on {meta['host']} "
          f"({cores} cores, {cpu['model_name']})\n")
    print(f"`{meta['command']}`{' (QUICK=1: a smoke run, too short for figures to mean much)' if meta.get('quick') else ''}, "
          f"t5serve at {meta['git_commit'][:7]}{' with uncommitted changes' if meta['git_dirty'] else ''}"
          f"{', flags `' + meta['server_flags'] + '`' if meta['server_flags'] else ''}.\n")
    print(f"CPU flags (/proc/cpuinfo): {', '.join(meta['cpu_flags']) or 'none of them'}; t5serve's int8 kernel "
          f"{cpu['int8_kernel']} (saturating: {str(cpu['int8_kernel_saturates']).lower()}).\n")
    print("```\nCPU: " + json.dumps(cpu, separators=(",", ":")) + "\n```\n")
    if wl is None:
        print("No workload line: the client did not start.")
        return
    rounds = sorted({r["round"] for r in wins})
    print(f"One server: `{meta['serve']}`. Workload: the {wl['prompt_tokens']}-token prompt of bench/openai_bench.py, greedy, "
          f"exactly {wl['new_tokens']} new tokens (min_new_tokens = max_new_tokens = {wl['new_tokens']}), one text per request, "
          f"model `{wl['model_id']}`, through three routes: POST /v1/generate (JSON; http.client, as bench/openai_bench.py), "
          f"POST /v2/models/{wl['model_id']}/infer with Triton's `tritonclient.http` {wl['tritonclient']} (its default: binary "
          f"tensor data both ways) and ModelInfer over gRPC with `tritonclient.grpc` {wl['tritonclient']} (`text_input` BYTES [1], parameters "
          "max_new_tokens and min_new_tokens), one client object per client thread, each connected before the clock starts"
          + (" (gRPC: each client with a subchannel pool of its own, GRPC_OWN_CONNECTIONS=1, so one HTTP/2 connection each)"
             if wl.get("grpc_own_connections") else " (gRPC: Triton's default channel options, the same for every client, so "
             "gRPC's global subchannel pool shares one HTTP/2 connection between them)") + ". "
          f"Timed closed loop: every client starts at once and sends requests back to back for {wl['duration_s']:g} s, then "
          "finishes the one in flight; tokens/s = requests answered inside the window x "
          f"{wl['new_tokens']} / the window; latencies of every answered request started in it. {len(rounds)} rounds, each "
          "route at 1 client then at 32 in each, the three routes' order rotating by round (round 1: v1, v2 REST, gRPC; "
          f"round 2: v2 REST, gRPC, v1; ...), after {wl['warmup_s']:g} s of warm-up traffic per route (not counted). "
          "Figures: median over the rounds, the rounds' values in order.\n")

    print("## Tokens/s and latency\n")
    print("| clients | route | tok/s | rounds | p50 ms | p99 ms | errors | TCP connections | client CPU ms/request | "
          "client CPU share | server CPU (cores) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in CONCURRENCIES:
        for route in ROUTES:
            rr = runs(route, c)
            if not rr:
                continue
            v = [rr[k] for k in sorted(rr)]
            answered = sum(x["requests"] - x["errors"] for x in v)
            cpu_req = sum(x["client_cpu_s"] for x in v) / answered * 1000 if answered else float("nan")
            share = sum(x["client_cpu_s"] for x in v) / sum(x["window_s"] * cores for x in v)
            srv = medf(x["server_cpu_s"] / x["window_s"] if "server_cpu_s" in x else None for x in v)
            conns = sorted({x.get("connections_mid_window", 0) for x in v})
            print(f"| {c} | {LABELS[route]} | {medf(x['tokens_per_s'] for x in v):.0f} | {rounds_list(x['tokens_per_s'] for x in v)} | "
                  f"{medf(x['p50_s'] for x in v) * 1000:.0f} | {medf(x['p99_s'] for x in v) * 1000:.0f} | "
                  f"{sum(x['errors'] for x in v)} | {rounds_list(conns, '{}')} | {cpu_req:.1f} | {share:.1%} | {srv:.2f} |")
    print("\nTCP connections: established connections to the route's port halfway through each window (the distinct "
          "counts over the rounds). Client CPU: this Python process's CPU time over the window (threads of all its clients), "
          "per answered request and as a share of the machine's cores; on a small machine it competes with the server.\n")

    print("## Ratios to /v1/generate\n")
    print("Each round's v2 window against the same round's v1 window at the same concurrency (target: within 5%, i.e. the "
          "median ratio in [0.95, 1.05]).\n")
    print("| clients | ratio | median of the rounds' ratios | rounds | ratio of the medians | within 5% | median ratio, prorated |")
    print("|---|---|---|---|---|---|---|")
    verdicts = []
    for c in CONCURRENCIES:
        base = runs("v1", c)
        for route, name in (("v2_rest", "v2 REST / v1"), ("grpc", "gRPC / v1")):
            other = runs(route, c)
            ks = [k for k in sorted(other) if k in base and base[k]["tokens_per_s"] > 0]
            ratios = [other[k]["tokens_per_s"] / base[k]["tokens_per_s"] for k in ks]
            if not ratios:
                continue
            m = med(ratios)
            mb = medf(base[k]["tokens_per_s"] for k in ks)
            of_medians = medf(other[k]["tokens_per_s"] for k in ks) / mb if mb else float("nan")
            ok = abs(m - 1) <= 0.05
            verdicts.append((c, name, m, ok))
            pr = [other[k].get("tokens_per_s_prorated", 0) / base[k]["tokens_per_s_prorated"] for k in ks
                  if base[k].get("tokens_per_s_prorated")]
            print(f"| {c} | {name} | {m:.3f} | {rounds_list(ratios, '{:.3f}')} | {of_medians:.3f} | {'yes' if ok else 'no'} | "
                  f"{medf(pr):.3f} |")
    if verdicts:
        print("\n" + "; ".join(f"{name} at {c} client{'s' if c > 1 else ''}: {m:.3f}, {'within' if ok else 'not within'} 5%"
                               for c, name, m, ok in verdicts) + ".\n")
        print("Prorated: each answered request credited with the share of its time spent inside the window, so that the "
              "requests in flight when the window closes count in part (the issue's figure counts whole requests only; with "
              "32 clients they are up to 32 requests).\n")

    print("## Answers\n")
    if ref:
        agree = "agree" if ref["agree"] else "DISAGREE"
        shown = json.dumps(ref["reference_text"])
        print(f"Each route's answer to the prompt sent alone (twice each): the texts {agree}; v1's text {shown[:300]}"
              f"{'...' if len(shown) > 300 else ''}, {ref['v1_tokens']} generated tokens.")
        if not ref["agree"]:
            for route, answers in ref["answers"].items():
                print(f"- {route}: " + ", ".join(f"`{json.dumps(t)[:200]}`" for t, _ in answers))
        if ref["reference_text"].strip() == "":
            print("The model's greedy answer decodes to an empty text (a random-weight benchmark shape generating only "
                  "special tokens), so comparing texts cannot tell the routes' answers apart here; run with a trained model "
                  "(e.g. MODEL=models/t5-numbers) for a check that can.")
        print()
    print("| clients | route | answers checked | texts differing from v1's alone | v1 answers with other than "
          f"{wl['new_tokens']} tokens |")
    print("|---|---|---|---|---|")
    for c in CONCURRENCIES:
        for route in ROUTES:
            v = list(runs(route, c).values())
            if not v:
                continue
            short = str(sum(x["short"] for x in v)) + f" of {sum(x['short'] + x['full_length'] for x in v)}" if route == "v1" else "not reported"
            print(f"| {c} | {route} | {sum(x['text_checked'] for x in v)} | {sum(x['text_mismatches'] for x in v)} | {short} |")
    diff = [(r["route"], r["round"], r["run"]["concurrency"], t) for r in wins for t in r["run"].get("first_mismatching_texts", [])]
    if diff:
        print("\nint8 graphs quantize activations with one scale per tensor computed at run time, so a row's greedy answer can "
              "depend on the rows batched with it: differences at 32 clients on every route (v1 included) are that; a "
              "difference on one route only, or at 1 client, is not.\n")
        for route, rnd, c, t in diff[:6]:
            print(f"- differing text ({route}, round {rnd}, {c} clients): `{json.dumps(t)[:200]}`")
    errs = [(r["route"], r["round"], r["run"]["concurrency"], e) for r in wins for e in r["run"].get("first_errors", [])]
    nerr = sum(r["run"]["errors"] for r in wins)
    print(f"\nClient-side errors over all timed windows: {nerr}.\n")
    for route, rnd, c, e in errs[:10]:
        print(f"- error ({route}, round {rnd}, {c} clients): `{e}`")
    if errs:
        print()

    logs = [r for r in rows if r["kind"] == "server_log"]
    for r in logs:
        h = r.get("health_503_while_starting", 0)
        print(f"Server log ({r['log']}, {r['lines']} lines): ERROR/panic lines {r['errors']}, WARN lines {r['warnings']}; besides "
              f"these, {h} ERROR lines for a 503 from GET /health while the server warmed up (bench/serve.sh polls it until it "
              "is ready).\n")
        for e in r["first_errors"]:
            print(f"- `{e}`")
        for w in r["first_warnings"][:2]:
            print(f"- (warning) `{w}`")


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "inputs":
        # bench/openai_bench.py's inputs: the prompt (and its embedding texts, unused here).
        openai_bench.make_inputs(args[0], args[1])
    elif cmd == "run":
        run(args[0], args[1], args[2], args[3], int(args[4]) if len(args) > 4 and args[4] else None)
    elif cmd == "log":
        models_bench.log_lines(args[0], args[1], args[2])
    elif cmd == "report":
        report(args[0])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
