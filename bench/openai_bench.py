#!/usr/bin/env python3
"""The OpenAI-compatible routes against t5serve's own route and an in-process ceiling, for
bench/openai.sh. Not a test: it prints figures and makes no assertions about them.

    openai_bench.py inputs MODEL_DIR WORK_DIR
        writes WORK_DIR/openai-prompt.txt (a 64-token input, as bench/run.sh builds) and
        WORK_DIR/openai-texts.jsonl (texts of 8-64 tokens, EOS included, with their token ids)
    openai_bench.py run URL MODEL_DIR WORK_DIR OUT_JSONL [SERVER_PID]
        against a running server: the paired completions/generate rounds, then the embeddings
        rounds (HTTP against the ceiling, interleaved), and the correctness check; appends JSON
        lines to OUT_JSONL and prints them
    openai_bench.py ceiling MODEL_DIR TEXTS_JSONL MIN_SECONDS
        (a subprocess of `run`) the in-process ONNX Runtime loop; one JSON line
    openai_bench.py reference MODEL_DIR TEXTS_JSONL INDEX...
        (a subprocess of `run`) reference embeddings of those texts; one JSON line
    openai_bench.py report OUT_JSONL
        the markdown report

Sizes come from the environment (see bench/openai.sh): ROUNDS, GEN_REQUESTS_1, GEN_REQUESTS_32,
EMB_REQUESTS_1, EMB_REQUESTS_32, CEILING_SECONDS, NEW_TOKENS.

The HTTP client is Python threads, one keep-alive connection each (opened before the clock
starts), the same client for every route; its own CPU time is recorded with each run
(`client_cpu_s`) because on a small machine it competes with the server for the cores.
"""

import http.client
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

PROMPT_TOKENS = 64
TEXT_TOKENS = (8, 64)
N_TEXTS = 256
REF_INDICES = list(range(0, 16))

# Varied English prose for the embedding inputs (texts are windows of it, 8-64 tokens long).
PROSE = """
The committee met on Tuesday to review the budget for next year, and most members agreed that
the library needed a new roof before winter. A small bakery on the corner sells bread that is
still warm at seven in the morning. Researchers measured the temperature of the lake every hour
for three months and found that the surface warmed faster than expected. Please restart the
router if the connection drops more than twice in one day. The museum's new exhibition brings
together maps, letters and photographs from sailors who crossed the Atlantic in the nineteenth
century. Our support team answers most questions within a day; urgent issues are escalated to
an engineer on call. She planted tomatoes, basil and two rows of beans, then built a fence to
keep the rabbits out. The train to the airport leaves every fifteen minutes from platform four.
Quarterly revenue rose by eight percent, driven by stronger sales in Asia and lower shipping
costs. He forgot his umbrella again and arrived at the interview soaking wet but smiling. In the
mountains the weather changes quickly, so hikers should carry a jacket even on sunny days. The
software update fixes a crash that occurred when users opened very large spreadsheets. Children
at the school learn to play the violin in their second year and perform a concert each spring.
Add the flour slowly, stirring all the time, until the sauce is thick and smooth. The city
council voted to close the main street to cars on Sundays during the summer. After the storm,
volunteers cleared fallen branches from the park and repaired the damaged benches. A good night
of sleep improves memory, mood and the ability to concentrate on difficult problems. The
contract may be terminated by either party with thirty days of written notice. Scientists hope
the new telescope will reveal how the first galaxies formed after the big bang.
""".split()


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# ---------------------------------------------------------------------------------------------
# inputs


def tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def make_inputs(model_dir: str, work: str) -> None:
    tok = tokenizer(model_dir)
    ntok = lambda t: len(tok(t)["input_ids"])  # noqa: E731
    # The 64-token prompt (63 pieces + EOS), exactly as bench/run.sh builds it.
    words = (
        "the quick brown fox jumps over the lazy dog while seven wizards quietly judge "
        "boxing matches near the old harbour and count every ship that passes "
    ).split() * 8
    text = ""
    for w in words:
        cand = (text + " " + w).strip()
        if ntok(cand) > PROMPT_TOKENS:
            break
        text = cand
    assert ntok(text) == PROMPT_TOKENS, ntok(text)
    Path(work, "openai-prompt.txt").write_text(text)
    # Texts of 8-64 tokens: windows of the prose at random offsets, lengths uniform in the range.
    rng = random.Random(20)
    with open(Path(work, "openai-texts.jsonl"), "w") as f:
        for _ in range(N_TEXTS):
            target = rng.randint(*TEXT_TOKENS)
            start = rng.randrange(len(PROSE))
            text, k = "", start
            while True:
                cand = (text + " " + PROSE[k % len(PROSE)]).strip()
                if ntok(cand) > target:
                    break
                text, k = cand, k + 1
            ids = tok(text)["input_ids"]
            assert TEXT_TOKENS[0] - 2 <= len(ids) <= TEXT_TOKENS[1], (text, len(ids))
            f.write(json.dumps({"text": text, "ids": ids}) + "\n")


def read_texts(path: str) -> list[dict]:
    return [json.loads(line) for line in open(path)]


# ---------------------------------------------------------------------------------------------
# the in-process ceiling


def ort_session(model_dir: str, threads: int | None = None):
    import onnxruntime as ort

    # As t5serve builds its sessions (src/model/t5.rs, src/model/runtime.rs): every graph
    # optimization, one intra-op thread per core, spinning on, one inter-op thread.
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or os.cpu_count()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    return ort.InferenceSession(str(Path(model_dir, "encoder_model.onnx")), opts, providers=["CPUExecutionProvider"])


def embed(sess, rows: list[list[int]]):
    """Pads the rows (T5's pad id 0), runs the encoder, mean-pools over the real tokens and
    L2-normalizes: what /v1/embeddings returns, for one padded batch."""
    import numpy as np

    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    (hidden,) = sess.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
    m = mask[:, :, None].astype(np.float32)
    pooled = (hidden * m).sum(axis=1) / m.sum(axis=1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def ceiling(model_dir: str, texts_path: str, min_seconds: float) -> dict:
    """Inputs/s of the encoder loop over the texts (tokenized beforehand, outside the clock;
    padding, the run, pooling and normalization inside it) in four batchings: one session with a
    thread per core over padded batches of 32 in the texts' order (the ceiling the target uses),
    the same after sorting the texts by length (least padding), batch 1, and two sessions of half
    the cores each running alternate batches of 32 side by side (the layout t5serve picks for an
    int8 model by default: decode_lanes = 2, each lane's sessions on half the cores)."""
    rows = [t["ids"] for t in read_texts(texts_path)]
    sess = ort_session(model_dir)
    in_order = [rows[i : i + 32] for i in range(0, len(rows), 32)]
    by_length = sorted(rows, key=len)
    plans = {
        "b32_in_order": in_order,
        "b32_length_sorted": [by_length[i : i + 32] for i in range(0, len(by_length), 32)],
        "b1": [[r] for r in rows],
    }
    out = {}

    def measure(session, batches: list, start: float) -> tuple[int, int, float]:
        done, passes = 0, 0
        while True:
            for b in batches:
                embed(session, b)
                done += len(b)
            passes += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                return done, passes, elapsed

    def padding(batches: list) -> float:
        padded = sum(len(b) * max(len(r) for r in b) for b in batches)
        return 1 - sum(len(r) for b in batches for r in b) / padded

    for name, batches in plans.items():
        for b in batches[:4]:  # warm-up
            embed(sess, b)
        done, passes, elapsed = measure(sess, batches, time.perf_counter())
        out[name] = {"inputs_per_s": done / elapsed, "inputs": done, "wall_s": elapsed, "passes": passes, "padding_fraction": padding(batches)}
    # Two sessions side by side (ONNX Runtime releases the GIL while a graph runs).
    halves = [ort_session(model_dir, max(1, (os.cpu_count() or 2) // 2)) for _ in range(2)]
    shares = [in_order[0::2], in_order[1::2]]
    for s, share in zip(halves, shares):
        embed(s, share[0])
    results: list = [None, None]
    start = time.perf_counter()
    workers = [threading.Thread(target=lambda k=k: results.__setitem__(k, measure(halves[k], shares[k], start))) for k in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done, elapsed = sum(r[0] for r in results), max(r[2] for r in results)
    out["b32_in_order_2_sessions"] = {"inputs_per_s": done / elapsed, "inputs": done, "wall_s": elapsed,
                                      "passes": min(r[1] for r in results), "padding_fraction": padding(in_order),
                                      "threads_per_session": halves[0].get_session_options().intra_op_num_threads}
    return out


def reference(model_dir: str, texts_path: str, indices: list[int]) -> dict:
    """Embeddings of the texts each alone (batch 1, no padding), and each inside its padded
    in-order batch of 32 (as the ceiling runs it): int8 graphs quantize activations with one
    scale per tensor, computed at run time, so a row's result depends on its batch."""
    rows = [t["ids"] for t in read_texts(texts_path)]
    sess = ort_session(model_dir)
    alone = {i: embed(sess, [rows[i]])[0].tolist() for i in indices}
    in_batch = {}
    for i in indices:
        b0 = i // 32 * 32
        in_batch[i] = embed(sess, rows[b0 : b0 + 32])[i - b0].tolist()
    return {"alone": alone, "in_batch32": in_batch}


def subprocess_json(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# the HTTP client


def cpu_seconds(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def closed_loop(url: str, path: str, bodies: list[bytes], concurrency: int, requests: int, check, server_pid=None, keep=None) -> dict:
    """`concurrency` clients, each sending its share of `requests` back to back on its own
    keep-alive connection; `check(status, parsed_json_or_text, index)` returns a dict of counters
    for the request. Errors are counted and their first bodies kept, exactly as received."""
    u = urlparse(url)
    per = math.ceil(requests / concurrency)
    barrier = threading.Barrier(concurrency + 1)
    lock = threading.Lock()
    latencies: list[float] = []
    counters: dict[str, int] = {}
    errors: list[str] = []
    headers = {"Content-Type": "application/json"}

    def note(mine: dict, what: str) -> None:
        with lock:
            if len(errors) < 5:
                errors.append(what)
        mine["errors"] = mine.get("errors", 0) + 1

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        try:
            conn.connect()
        except OSError as e:
            with lock:
                errors.append(f"cannot connect: {type(e).__name__}: {e}")
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        mine, lat = {}, []
        for j in range(per):
            i = k * per + j
            t = time.perf_counter()
            try:
                conn.request("POST", path, bodies[i % len(bodies)], headers)
                resp = conn.getresponse()
                raw = resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as e:
                status, raw = None, f"{type(e).__name__}: {e}".encode()
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
            lat.append(time.perf_counter() - t)
            if status != 200:
                note(mine, f"{status} {raw.decode(errors='replace')[:500]}")
                continue
            # A 200 whose body is not what the route documents counts as an error too, kept as received.
            try:
                body = json.loads(raw)
                for key, v in check(body, i).items():
                    mine[key] = mine.get(key, 0) + v
                if keep is not None:
                    keep(body, i)
            except (ValueError, KeyError, IndexError, TypeError) as e:
                note(mine, f"200 with an unexpected body ({type(e).__name__}: {e}): {raw.decode(errors='replace')[:500]}")
        conn.close()
        with lock:
            latencies.extend(lat)
            for key, v in mine.items():
                counters[key] = counters.get(key, 0) + v

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        sys.exit(f"{path}: {errors[0] if errors else 'a client could not start'} (is the server still up?)")
    cpu0, srv0, start = time.process_time(), cpu_seconds(server_pid), time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu1, srv1 = time.process_time(), cpu_seconds(server_pid)
    latencies.sort()
    run = {
        "concurrency": concurrency,
        "requests": len(latencies),
        "wall_s": wall,
        "requests_per_s": len(latencies) / wall,
        "p50_s": latencies[len(latencies) // 2],
        "p99_s": latencies[min(len(latencies) - 1, round((len(latencies) - 1) * 0.99))],
        "client_cpu_s": cpu1 - cpu0,
        **counters,
    }
    if srv0 is not None and srv1 is not None:
        run["server_cpu_s"] = srv1 - srv0
    if errors:
        run["first_errors"] = errors
        for e in errors:
            print(f"ERROR from {path}: {e}", file=sys.stderr)
    return run


def get_json(url: str, path: str):
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("GET", path)
    resp = conn.getresponse()
    return json.loads(resp.read())


def post_json(url: str, path: str, body: dict):
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    raw = resp.read()
    return resp.status, raw


# ---------------------------------------------------------------------------------------------
# the benchmark


def run(url: str, model_dir: str, work: str, out_path: str, server_pid: int | None) -> None:
    # Killed (bench/openai.sh's trap): exit through SystemExit, so that a running ceiling or
    # reference subprocess is killed too (subprocess.run does on any exception).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = open(out_path, "a")

    def emit(line: dict) -> None:
        out.write(json.dumps(line) + "\n")
        out.flush()
        print(json.dumps(line), flush=True)

    rounds = env_int("ROUNDS", 5)
    new_tokens = env_int("NEW_TOKENS", 32)
    gen_n = {1: env_int("GEN_REQUESTS_1", 40), 32: env_int("GEN_REQUESTS_32", 256)}
    emb_n = {1: env_int("EMB_REQUESTS_1", 200), 32: env_int("EMB_REQUESTS_32", 800)}
    ceiling_s = float(os.environ.get("CEILING_SECONDS", "4"))
    model_id = get_json(url, "/v1/models")["data"][0]["id"]
    prompt = Path(work, "openai-prompt.txt").read_text().strip()
    texts_path = str(Path(work, "openai-texts.jsonl"))
    texts = read_texts(texts_path)
    emit({"kind": "workload", "model_id": model_id, "prompt_tokens": PROMPT_TOKENS, "new_tokens": new_tokens,
          "texts": len(texts), "text_tokens_min": min(len(t["ids"]) for t in texts),
          "text_tokens_max": max(len(t["ids"]) for t in texts),
          "text_tokens_mean": statistics.mean(len(t["ids"]) for t in texts),
          "rounds": rounds, "gen_requests": gen_n, "emb_requests": emb_n, "ceiling_seconds": ceiling_s})

    # --- 1. /v1/completions against /v1/generate --------------------------------------------
    routes = {
        "completions": (
            "/v1/completions",
            json.dumps({"model": model_id, "prompt": prompt, "max_tokens": new_tokens, "temperature": 0}).encode(),
            lambda b, i: {
                "tokens": b["usage"]["completion_tokens"],
                "prompt_tokens": b["usage"]["prompt_tokens"],
                "full_length": int(b["choices"][0]["finish_reason"] == "length" and b["usage"]["completion_tokens"] == new_tokens),
            },
        ),
        "generate": (
            "/v1/generate",
            json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}}).encode(),
            lambda b, i: {
                "tokens": b["usage"]["generated_tokens"],
                "prompt_tokens": b["usage"]["input_tokens"],
                "full_length": int(b["usage"]["generated_tokens"] == new_tokens),
            },
        ),
    }
    for name, (path, body, check) in routes.items():  # warm-up, both concurrencies
        for c in (1, 32):
            closed_loop(url, path, [body], c, c * 2, check)
    for r in range(1, rounds + 1):
        order = ["completions", "generate"] if r % 2 else ["generate", "completions"]
        for c in (1, 32):
            for name in order:
                path, body, check = routes[name]
                res = closed_loop(url, path, [body], c, gen_n[c], check, server_pid)
                res["tokens_per_s"] = res.get("tokens", 0) / res["wall_s"]
                emit({"kind": "generation", "route": name, "round": r, "run": res})

    # --- 2. /v1/embeddings against the in-process ceiling -------------------------------------
    bodies = [json.dumps({"model": model_id, "input": t["text"], "encoding_format": "float"}).encode() for t in texts]

    def emb_check(b, i):
        t = texts[i % len(texts)]
        ok = len(b["data"]) == 1 and len(b["data"][0]["embedding"]) > 0
        return {"inputs": len(b["data"]), "prompt_tokens": b["usage"]["prompt_tokens"],
                "token_count_matches": int(b["usage"]["prompt_tokens"] == len(t["ids"])), "well_formed": int(ok)}

    # One client can batch too: 32 inputs per request (the texts in order, cycled).
    groups = [[texts[(k * 32 + j) % len(texts)] for j in range(32)] for k in range(max(1, len(texts) // 32))]
    list_bodies = [json.dumps({"model": model_id, "input": [t["text"] for t in g], "encoding_format": "float"}).encode() for g in groups]

    def emb_list_check(b, i):
        g = groups[i % len(groups)]
        return {"inputs": len(b["data"]), "prompt_tokens": b["usage"]["prompt_tokens"],
                "token_count_matches": int(b["usage"]["prompt_tokens"] == sum(len(t["ids"]) for t in g)) * len(g),
                "well_formed": int(len(b["data"]) == len(g))}

    # Correctness, in passing: reference embeddings (batch 1 and inside a padded batch of 32)
    # against the server's, each request alone and then as returned under load.
    ref = subprocess_json("reference", model_dir, texts_path, *map(str, REF_INDICES))
    for c in (1, 32):
        closed_loop(url, "/v1/embeddings", bodies, c, max(32, c * 2), emb_check)  # warm-up
    alone = {}
    for i in REF_INDICES:
        status, raw = post_json(url, "/v1/embeddings", json.loads(bodies[i]))
        if status != 200:
            print(f"ERROR from /v1/embeddings: {status} {raw.decode(errors='replace')}", file=sys.stderr)
            continue
        alone[i] = json.loads(raw)["data"][0]["embedding"]
    under_load: dict[int, list] = {}

    def keep(b, i):
        i %= len(texts)
        if i in ref["alone"] or str(i) in ref["alone"]:
            under_load.setdefault(i, b["data"][0]["embedding"])

    def diff(a: dict, b: dict) -> dict:
        keys = [k for k in a if str(k) in b]
        worst, cos = 0.0, 1.0
        for k in keys:
            x, y = a[k], b[str(k)]
            if len(x) != len(y):
                return {"compared": len(keys), "error": f"lengths differ: {len(x)} against {len(y)}"}
            worst = max(worst, max(abs(p - q) for p, q in zip(x, y)))
            cos = min(cos, sum(p * q for p, q in zip(x, y)))
        return {"compared": len(keys), "max_abs_diff": worst, "min_cosine": cos}

    server_ids = {str(i) for i in alone}
    ref_b1 = ref["alone"]
    ort_in_batch = {k: v for k, v in ref["in_batch32"].items()}
    check_line = {
        "kind": "embedding_check",
        "dimensions": len(next(iter(alone.values()))) if alone else None,
        "server_alone_vs_ort_b1": diff(alone, ref_b1),
        "ort_in_padded_b32_vs_ort_b1": diff({int(k): v for k, v in ort_in_batch.items() if k in server_ids}, ref_b1),
    }

    for r in range(1, rounds + 1):
        steps = ["http", "ceiling"] if r % 2 else ["ceiling", "http"]
        for step in steps:
            if step == "http":
                for c in (1, 32):
                    res = closed_loop(url, "/v1/embeddings", bodies, c, emb_n[c], emb_check, server_pid, keep if c == 32 else None)
                    res["inputs_per_s"] = res.get("inputs", 0) / res["wall_s"]
                    emit({"kind": "embeddings", "round": r, "run": res})
                res = closed_loop(url, "/v1/embeddings", list_bodies, 1, max(2, emb_n[32] // 32), emb_list_check, server_pid)
                res["inputs_per_s"] = res.get("inputs", 0) / res["wall_s"]
                emit({"kind": "embeddings", "round": r, "run": res, "inputs_per_request": 32})
            else:
                srv0 = cpu_seconds(server_pid)
                ceil = subprocess_json("ceiling", model_dir, texts_path, str(ceiling_s))
                srv1 = cpu_seconds(server_pid)
                line = {"kind": "ceiling", "round": r, "batchings": ceil}
                if srv0 is not None and srv1 is not None:
                    line["idle_server_cpu_s"] = srv1 - srv0
                emit(line)
    check_line["server_under_load_c32_vs_ort_b1"] = diff(under_load, ref_b1)
    emit(check_line)


# ---------------------------------------------------------------------------------------------
# the report


def report(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    meta = next(r for r in rows if r["kind"] == "meta")
    wl = next(r for r in rows if r["kind"] == "workload")
    gen = [r for r in rows if r["kind"] == "generation"]
    emb = [r for r in rows if r["kind"] == "embeddings" and r.get("inputs_per_request", 1) == 1]
    emb_lists = [r for r in rows if r["kind"] == "embeddings" and r.get("inputs_per_request", 1) == 32]
    ceil = [r for r in rows if r["kind"] == "ceiling"]
    chk = next((r for r in rows if r["kind"] == "embedding_check"), None)
    med = statistics.median
    cpu = meta["cpu"]
    print(f"# OpenAI-compatible routes, {meta['model']}, {meta['date']} on {meta['host']} ({cpu['cores']} cores, {cpu['model_name']})\n")
    print(f"`{meta['command']}`{' (QUICK=1: a smoke run, too short for figures to mean much)' if meta.get('quick') else ''}, "
          f"t5serve at {meta['git_commit'][:7]}{' with uncommitted changes' if meta['git_dirty'] else ''}"
          f"{', flags `' + meta['server_flags'] + '`' if meta['server_flags'] else ''}.\n")
    print(f"CPU flags (/proc/cpuinfo): {', '.join(meta['cpu_flags']) or 'none of them'}; t5serve's int8 kernel "
          f"{cpu['int8_kernel']} (saturating: {str(cpu['int8_kernel_saturates']).lower()}).\n")
    print("```\nCPU: " + json.dumps(cpu, separators=(",", ":")) + "\n```\n")
    print("Every figure comes from Python clients (threads, one keep-alive connection each), the same for every route; "
          "the client's own CPU time is in the `.jsonl` (`client_cpu_s`) and in the tables as a share of the machine's cores.\n")

    print("## /v1/completions against /v1/generate\n")
    print(f"The same {wl['prompt_tokens']}-token prompt, greedy, {wl['new_tokens']} new tokens: `/v1/generate` with "
          f"min_new_tokens = max_new_tokens = {wl['new_tokens']}, `/v1/completions` with max_tokens {wl['new_tokens']} and "
          f"temperature 0 (it has no minimum; the random-weight model runs to length). Closed loop, {wl['rounds']} rounds, "
          f"the two routes back to back in each (order alternating); requests per run: {wl['gen_requests']['1']} at 1 client, "
          f"{wl['gen_requests']['32']} at 32. Generated tokens/s: median of the rounds, and the median of the rounds' ratios.\n")
    print("| clients | completions tok/s | generate tok/s | median ratio completions/generate | rounds' ratios | within 5% | "
          "full length (completions / generate) | errors | client CPU share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in (1, 32):
        by = lambda route: {r["round"]: r["run"] for r in gen if r["route"] == route and r["run"]["concurrency"] == c}  # noqa: E731
        a, b = by("completions"), by("generate")
        ratios = [a[k]["tokens_per_s"] / b[k]["tokens_per_s"] for k in sorted(a) if k in b and b[k]["tokens_per_s"] > 0]
        full = lambda runs: f"{sum(x.get('full_length', 0) for x in runs.values())}/{sum(x['requests'] for x in runs.values())}"  # noqa: E731
        errs = sum(x.get("errors", 0) for x in [*a.values(), *b.values()])
        share = sum(x["client_cpu_s"] for x in [*a.values(), *b.values()]) / sum(x["wall_s"] * cpu["cores"] for x in [*a.values(), *b.values()])
        m = med(ratios) if ratios else float("nan")
        print(f"| {c} | {med(x['tokens_per_s'] for x in a.values()):.0f} | {med(x['tokens_per_s'] for x in b.values()):.0f} | "
              f"{m:.3f} | {', '.join(f'{x:.2f}' for x in ratios)} | {'yes' if abs(m - 1) <= 0.05 else 'no'} | "
              f"{full(a)} / {full(b)} | {errs} | {share:.1%} |")
    ptoks = sorted({(r["route"], r["run"].get("prompt_tokens", 0) // max(1, r["run"]["requests"] - r["run"].get("errors", 0))) for r in gen})
    print("\nPrompt tokens per request as the server counted them: " + ", ".join(f"{k} {v}" for k, v in ptoks) + ".\n")
    print("| clients | route | p50 ms | p99 ms (median of rounds) |")
    print("|---|---|---|---|")
    for c in (1, 32):
        for route in ("completions", "generate"):
            runs = [r["run"] for r in gen if r["route"] == route and r["run"]["concurrency"] == c]
            print(f"| {c} | {route} | {med(x['p50_s'] for x in runs) * 1000:.0f} | {med(x['p99_s'] for x in runs) * 1000:.0f} |")

    print("\n## /v1/embeddings against an in-process ceiling\n")
    print(f"{wl['texts']} texts of {wl['text_tokens_min']}-{wl['text_tokens_max']} tokens (mean {wl['text_tokens_mean']:.1f}, EOS included), "
          f"one input per request, cycled; requests per run: {wl['emb_requests']['1']} at 1 client, {wl['emb_requests']['32']} at 32. "
          f"Ceiling: onnxruntime {meta.get('onnxruntime', '?')} in Python on the same encoder_model.onnx (all graph optimizations, "
          f"intra-op threads = {cpu['cores']} cores, spinning, 1 inter-op thread), the texts tokenized beforehand and padded, run, "
          f"mean-pooled and L2-normalized (numpy) inside the clock, at least {wl['ceiling_seconds']} s and one whole pass over the texts "
          "per batching per round: "
          "padded batches of 32 in the texts' order (the target's ceiling), batches of 32 after sorting the texts by length "
          "(least padding), batch 1, and two sessions of half the cores each running alternate batches of 32 in order side by side "
          "(the layout t5serve picks for an int8 model: two decode lanes). HTTP and ceiling interleaved, order alternating by round.\n")
    print("| | inputs/s (median of rounds) | rounds |")
    print("|---|---|---|")
    http = {c: [r["run"] for r in emb if r["run"]["concurrency"] == c] for c in (1, 32)}
    for c in (1, 32):
        print(f"| HTTP, {c} client{'s' if c > 1 else ''} | {med(x['inputs_per_s'] for x in http[c]):.1f} | "
              f"{', '.join(format(x['inputs_per_s'], '.1f') for x in http[c])} |")
    if emb_lists:
        v = [r["run"]["inputs_per_s"] for r in emb_lists]
        print(f"| HTTP, 1 client, 32 inputs per request | {med(v):.1f} | {', '.join(format(x, '.1f') for x in v)} |")
    names = {"b32_in_order": "ceiling, batch 32 in order", "b32_length_sorted": "ceiling, batch 32 sorted by length", "b1": "ceiling, batch 1",
             "b32_in_order_2_sessions": "ceiling, batch 32 in order, 2 sessions side by side"}
    ratio_label = {**names, "best": "the round's fastest ceiling"}
    for key, label in names.items():
        v = [r["batchings"][key] for r in ceil]
        print(f"| {label} (padding {v[0]['padding_fraction']:.0%}) | {med(x['inputs_per_s'] for x in v):.1f} | "
              f"{', '.join(format(x['inputs_per_s'], '.1f') for x in v)} |")
    medians = {key: med(r["batchings"][key]["inputs_per_s"] for r in ceil) for key in names}
    fastest = max(medians, key=medians.get)
    if fastest != "b32_in_order":
        print(f"\nThe target's ceiling (padded batches of 32 in the texts' order) is not the fastest in-process loop here: "
              f"{names[fastest]} is ({medians[fastest]:.1f} against {medians['b32_in_order']:.1f} inputs/s), so the ratio against "
              "the round's fastest ceiling below is the stricter figure.")
    print("\nRatios HTTP / ceiling (median of the rounds' ratios, each round's HTTP run against the same round's ceiling):\n")
    print("| ratio | median | rounds | target |")
    print("|---|---|---|---|")

    def ratio(c: int, key: str) -> list[float]:
        if c == 0:  # one client sending 32 inputs per request
            hr = {r["round"]: r["run"]["inputs_per_s"] for r in emb_lists}
        else:
            hr = {r["round"]: r["run"]["inputs_per_s"] for r in emb if r["run"]["concurrency"] == c}
        if key == "best":
            cr = {r["round"]: max(b["inputs_per_s"] for b in r["batchings"].values()) for r in ceil}
        else:
            cr = {r["round"]: r["batchings"][key]["inputs_per_s"] for r in ceil}
        return [hr[k] / cr[k] for k in sorted(hr) if k in cr]

    for c, key, target in ((32, "b32_in_order", 0.8), (32, "b32_length_sorted", None), (32, "b32_in_order_2_sessions", None),
                           (32, "best", None), (1, "b1", None), (1, "b32_in_order", None),
                           (0, "b32_in_order", 0.8), (0, "best", None)):
        rs = ratio(c, key)
        m = med(rs) if rs else float("nan")
        t = f">= {target}: {'met' if m >= target else 'not met'}" if target else "-"
        who = "1 client x 32 inputs" if c == 0 else f"{c} client{'s' if c > 1 else ''}"
        print(f"| HTTP {who} / {ratio_label[key]} | {m:.2f} | {', '.join(f'{x:.2f}' for x in rs)} | {t} |")
    allruns = [x for c in (1, 32) for x in http[c]]
    errs = sum(x.get("errors", 0) for x in allruns)
    ok_tokens = sum(x.get("token_count_matches", 0) for x in allruns)
    answered = sum(x["requests"] - x.get("errors", 0) for x in allruns)
    share = {c: sum(x["client_cpu_s"] for x in http[c]) / sum(x["wall_s"] * cpu["cores"] for x in http[c]) for c in (1, 32)}
    print(f"\nErrors: {errs}. usage.prompt_tokens equal to the reference tokenizer's count: {ok_tokens}/{answered}. "
          f"Client CPU share of the machine: {share[1]:.1%} at 1 client, {share[32]:.1%} at 32. "
          "Server CPU during the ceiling runs (idle server): "
          + ", ".join(f"{r['idle_server_cpu_s']:.2f} s" for r in ceil if "idle_server_cpu_s" in r) + ".\n")
    for x in allruns + [r["run"] for r in gen]:
        for e in x.get("first_errors", []):
            print(f"- error: `{e}`")
    if chk:
        print(f"Correctness ({chk['dimensions']} dimensions; max abs difference and least cosine over "
              f"{chk['server_alone_vs_ort_b1'].get('compared')} texts, against the Python reference of each text alone, batch 1):\n")
        print("| | max abs diff | min cosine |")
        print("|---|---|---|")
        for key, label in (("server_alone_vs_ort_b1", "server, each request alone"),
                           ("server_under_load_c32_vs_ort_b1", "server, as answered at 32 clients (batched with others)"),
                           ("ort_in_padded_b32_vs_ort_b1", "the Python reference itself inside its padded batch of 32")):
            d = chk.get(key, {})
            if "max_abs_diff" in d:
                print(f"| {label} ({d['compared']} texts) | {d['max_abs_diff']:.2e} | {d['min_cosine']:.6f} |")
            else:
                print(f"| {label} | {d.get('error', 'not measured')} | |")
        print("\nint8 graphs quantize activations with one scale per tensor computed at run time, so an int8 row's "
              "embedding depends slightly on the rows batched with it (the last two lines); fp32 rows should agree "
              "to about 1e-6 in every line.")


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "inputs":
        make_inputs(*args)
    elif cmd == "run":
        run(args[0], args[1], args[2], args[3], int(args[4]) if len(args) > 4 and args[4] else None)
    elif cmd == "ceiling":
        print(json.dumps(ceiling(args[0], args[1], float(args[2]))))
    elif cmd == "reference":
        print(json.dumps(reference(args[0], args[1], [int(i) for i in args[2:]])))
    elif cmd == "report":
        report(args[0])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
