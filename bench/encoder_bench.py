#!/usr/bin/env python3
"""The encoder-only routes (TEI's POST /embed and POST /rerank) against an in-process ONNX Runtime
ceiling, and a labelling run through POST /v1/classify with and without the encoder cache, for
bench/encoder.sh (issue 23). Not a test: it prints figures and makes no assertions about them.

    encoder_bench.py inputs MODEL_DIR WORK_DIR
        writes WORK_DIR/texts.jsonl (the pool of distinct texts the /embed and /rerank runs take
        from, each used once, with token ids), WORK_DIR/classify.jsonl (the labelling run's
        inputs), WORK_DIR/classify-warmup.jsonl and WORK_DIR/settings.json (rerank template and
        words with their token ids, embedding pooling, the labelling run's template and label
        sets); needs num2words and tokenizers (bench/encoder.sh runs it with .venv)
    encoder_bench.py run URL MODEL_DIR WORK_DIR OUT_JSONL [SERVER_PID]
        part 1, against a running server (--encoder-cache-mb 0): warm-up, then ROUNDS rounds,
        each an HTTP step (/embed and /rerank at 1 and 32 clients with one item per request, and
        one client with 32 items per request) and a ceiling step (a subprocess), their order
        alternating by round; then a correctness check against the Python reference
    encoder_bench.py ceiling MODEL_DIR WORK_DIR ROUTE START COUNT SECONDS
        (a subprocess of `run`) the in-process ONNX Runtime loop over texts START..START+COUNT
        of the pool; one JSON line
    encoder_bench.py reference MODEL_DIR WORK_DIR START COUNT
        (a subprocess of `run`) reference embeddings and rerank scores of those texts, alone and
        as one padded batch; one JSON line
    encoder_bench.py classify URL WORK_DIR OUT_JSONL TAG ROUND [SERVER_PID]
        part 3, against a running server: the labelling run (the same inputs under each label set
        in turn, requests of CLASSIFY_BATCH inputs from CLASSIFY_CLIENTS clients), timed end to
        end per label set, with the server's encoder-cache metrics before and after each set;
        the answers go to WORK_DIR/answers-TAG-ROUND.json
    encoder_bench.py compare WORK_DIR OUT_JSONL
        the labelling runs' answers against each other (cached against uncached, same round;
        and between rounds of the same kind, for the noise floor)
    encoder_bench.py layout OUT_JSONL LABEL SERVER_LOG
        the server's thread layout from its "model loaded" log line
    encoder_bench.py log OUT_JSONL LABEL SERVER_LOG
        the server log's ERROR / WARN / panic lines (bench/models_bench.py's)
    encoder_bench.py report OUT_JSONL
        the markdown report

Sizes come from the environment (see bench/encoder.sh): ROUNDS, ITEMS_1 (items of a 1-client
run), ITEMS_32 (items of a 32-client run and of a 32-items-per-request run; rounded up to a
multiple of 32), WARMUP_ITEMS, CEILING_SECONDS, CEILING_THREADS, RERANK_QUERY, CLASSIFY_INPUTS,
CLASSIFY_BATCH, CLASSIFY_CLIENTS, CLASSIFY_TEMPLATE.

Texts: lists of numbers written out in words by num2words, each text in one of English, German,
French or Spanish (the bundled model's data), joined with ", " up to a token length drawn
uniformly from TEXT_TOKENS (EOS included), from a fixed seed; every text is distinct, and every
/embed or /rerank item is a text not sent before in the run (nothing repeats between requests).
The HTTP client is bench/openai_bench.py's closed loop (Python threads, one keep-alive connection
each, opened before the clock starts; counted, not timed: every client sends its share of the
requests back to back, and items/s = items answered / the time until the last answer).
"""

import http.client
import json
import math
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
import openai_bench  # noqa: E402  (its closed-loop HTTP client and /proc CPU-time reader)

TEXT_TOKENS = (10, 60)
LANGS = ("en", "de", "fr", "es")
ROUTES = ("embed", "rerank")
CASES = ("c1", "c32", "b32")  # 1 client x 1 item/request, 32 clients x 1, 1 client x 32
CASE_LABELS = {"c1": "1 client, 1 item per request", "c32": "32 clients, 1 item per request",
               "b32": "1 client, 32 items per request"}
MONOT5 = {"template": "Query: {query} Document: {document} Relevant:", "true_word": "true", "false_word": "false"}
CACHE_METRICS = ("t5serve_encoder_cache_hits_total", "t5serve_encoder_cache_misses_total",
                 "t5serve_encoder_cache_bytes", "t5serve_encoder_cache_evictions_total")
CHECK_TEXTS = 32
CLASSIFY_WARMUP = 64


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def sizes() -> dict:
    """The run's sizes (the environment's), and how many pool texts part 1 takes."""
    items_32 = math.ceil(env_int("ITEMS_32", 1024) / 32) * 32
    s = {"rounds": env_int("ROUNDS", 3), "items_1": env_int("ITEMS_1", 200), "items_32": items_32,
         "warmup_items": math.ceil(env_int("WARMUP_ITEMS", 64) / 32) * 32,
         "ceiling_seconds": env_float("CEILING_SECONDS", 3), "classify_inputs": env_int("CLASSIFY_INPUTS", 1000),
         "classify_batch": env_int("CLASSIFY_BATCH", 32), "classify_clients": env_int("CLASSIFY_CLIENTS", 4)}
    per_route = 2 * s["warmup_items"] + 8 + s["rounds"] * (s["items_1"] + 2 * items_32)
    s["pool_texts"] = len(ROUTES) * per_route + CHECK_TEXTS
    return s


def load_tokenizer(model_dir: str):
    from tokenizers import Tokenizer

    # As t5serve reads tokenizer.json (src/model/tokenizer.rs): no padding, no truncation, the
    # post-processor's EOS appended.
    tok = Tokenizer.from_file(str(Path(model_dir, "tokenizer.json")))
    tok.no_padding()
    tok.no_truncation()
    return tok


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path) if line.strip()]


# ---------------------------------------------------------------------------------------------
# inputs


def make_inputs(model_dir: str, work: str) -> None:
    from num2words import num2words

    tok = load_tokenizer(model_dir)
    s = sizes()
    work_p = Path(work)
    work_p.mkdir(parents=True, exist_ok=True)
    rng = random.Random(23)
    seen: set[str] = set()

    def words(n: int, lang: str) -> str:
        w = num2words(n, lang=lang)
        return w.replace(",", "") if lang == "en" else w  # as the model's data (its README)

    def text() -> dict:
        """Numbers in words, one language, joined with ", " while the text stays within a token
        length drawn from TEXT_TOKENS (the first number always); distinct from every other."""
        while True:
            lang = rng.choice(LANGS)
            target = rng.randint(*TEXT_TOKENS)
            parts: list[str] = []
            ids: list[int] = []
            while len(ids) < target:
                w = words(rng.randrange(10000), lang)
                cand_ids = tok.encode(", ".join(parts + [w])).ids
                if parts and len(cand_ids) > target:
                    break
                parts.append(w)
                ids = cand_ids
            t = ", ".join(parts)
            if t not in seen:
                seen.add(t)
                return {"text": t, "lang": lang, "ids": ids}

    with open(work_p / "texts.jsonl", "w") as f:
        for _ in range(s["pool_texts"]):
            f.write(json.dumps(text()) + "\n")
    for name, n in (("classify.jsonl", s["classify_inputs"]), ("classify-warmup.jsonl", CLASSIFY_WARMUP)):
        with open(work_p / name, "w") as f:
            for _ in range(n):
                f.write(json.dumps(text()) + "\n")

    own = {}
    tasks = Path(model_dir, "t5serve.json")
    if tasks.exists():
        own = json.loads(tasks.read_text())
    rerank = dict(MONOT5, **own.get("rerank", {}))
    # The first token of each word, as t5serve reads them (src/http/mod.rs).
    rerank["true_id"] = tok.encode(rerank["true_word"]).ids[0]
    rerank["false_id"] = tok.encode(rerank["false_word"]).ids[0]
    rerank["from_model"] = "rerank" in own
    embedding = {"pooling": "mean", "normalize": True, **own.get("embedding", {})}
    first = own.get("classify", {}).get("labels") or ["English", "German", "French", "Spanish"]
    label_sets = [first, ["true", "false"], ["Englisch", "Deutsch", "Französisch", "Spanisch"]]
    settings = {
        "rerank": rerank,
        "rerank_query": os.environ.get("RERANK_QUERY", "language"),
        "embedding": embedding,
        "classify_template": os.environ.get("CLASSIFY_TEMPLATE", "language: {text}"),
        "label_sets": label_sets,
        "label_set_tokens": [[len(tok.encode(label).ids) - 1 for label in ls] for ls in label_sets],
        "sizes": s,
    }
    (work_p / "settings.json").write_text(json.dumps(settings, indent=1))
    pool = read_jsonl(work_p / "texts.jsonl")
    lens = [len(t["ids"]) for t in pool]
    print(json.dumps({"pool_texts": len(pool), "tokens_min": min(lens), "tokens_max": max(lens),
                      "tokens_mean": round(statistics.mean(lens), 1), "classify_inputs": s["classify_inputs"]}))


# ---------------------------------------------------------------------------------------------
# the in-process ceiling and the reference


def ort_session(model_dir: str, graph: str, threads: int):
    import onnxruntime as ort

    # As t5serve builds its sessions (src/model/runtime.rs): every graph optimization, spinning
    # on, one inter-op thread; intra-op threads as given (CEILING_THREADS; one per core by default).
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    return ort.InferenceSession(str(Path(model_dir, graph)), opts, providers=["CPUExecutionProvider"])


def pad(rows: list[list[int]]):
    import numpy as np

    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)  # T5's pad id is 0
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


class Engine:
    """One set of sessions (the encoder; the decoder too for rerank) and the route's arithmetic:
    what /embed returns (pooled over the real tokens, L2-normalized) or what /rerank scores
    (logit of the true word's first token minus the false word's at the first decoder step)."""

    def __init__(self, model_dir: str, route: str, settings: dict, threads: int):
        self.route, self.settings = route, settings
        self.enc = ort_session(model_dir, "encoder_model.onnx", threads)
        self.dec = ort_session(model_dir, "decoder_model.onnx", threads) if route == "rerank" else None

    def strings(self, texts: list[str]) -> list[str]:
        if self.route == "embed":
            return texts
        r, q = self.settings["rerank"], self.settings["rerank_query"]
        return [r["template"].replace("{query}", q).replace("{document}", t) for t in texts]

    def run(self, rows: list[list[int]]):
        import numpy as np

        ids, mask = pad(rows)
        (hidden,) = self.enc.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
        if self.route == "rerank":
            start = np.zeros((len(rows), 1), dtype=np.int64)  # decoder_start_token_id 0
            (logits,) = self.dec.run(["logits"], {"input_ids": start, "encoder_hidden_states": hidden,
                                                  "encoder_attention_mask": mask})
            r = self.settings["rerank"]
            first = logits[:, 0, :]
            return first[:, r["true_id"]].astype(np.float64) - first[:, r["false_id"]].astype(np.float64)
        e = self.settings["embedding"]
        m = mask[:, :, None].astype(np.float32)
        if e["pooling"] == "max":
            pooled = np.where(m > 0, hidden, -np.inf).max(axis=1)
        elif e["pooling"] == "first":
            pooled = hidden[:, 0, :]
        else:
            pooled = (hidden * m).sum(axis=1) / m.sum(axis=1)
        if e.get("normalize", True):
            pooled = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled


def ceiling(model_dir: str, work: str, route: str, start: int, count: int, seconds: float) -> dict:
    """Items/s of the in-process loop over the texts in padded batches of 32, in the texts' order,
    at least `seconds` and one whole pass per variant:
      tokenized      tokenization (tokenizers' encode_batch, of the filled rerank template for
                     rerank) inside the clock with padding, the graphs, pooling/normalization or
                     the logit difference: the ceiling of the target (the server tokenizes too);
      pretokenized   the same, the token ids computed before the clock;
      two_sessions   tokenized, two sets of sessions of half the threads each running alternate
                     batches side by side (t5serve's layout for an int8 model on this machine:
                     two decode lanes of a core each)."""
    import numpy as np
    import onnxruntime
    import tokenizers

    settings = json.loads(Path(work, "settings.json").read_text())
    texts = [t["text"] for t in read_jsonl(Path(work, "texts.jsonl"))[start : start + count]]
    threads = env_int("CEILING_THREADS", 0) or os.cpu_count() or 1
    tok = load_tokenizer(model_dir)
    engine = Engine(model_dir, route, settings, threads)
    batches = [texts[i : i + 32] for i in range(0, len(texts), 32)]
    pretok = [[e.ids for e in tok.encode_batch(engine.strings(b))] for b in batches]
    tokens = sum(len(r) for b in pretok for r in b)
    padding = 1 - tokens / sum(len(b) * max(len(r) for r in b) for b in pretok)

    def measure(eng: Engine, mine: list[int], t0: float, tokenize: bool) -> tuple[int, int, float, float]:
        done, passes, tok_s = 0, 0, 0.0
        while True:
            for k in mine:
                if tokenize:
                    a = time.perf_counter()
                    rows = [e.ids for e in tok.encode_batch(eng.strings(batches[k]))]
                    tok_s += time.perf_counter() - a
                else:
                    rows = pretok[k]
                eng.run(rows)
                done += len(rows)
            passes += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                return done, passes, elapsed, tok_s

    out = {"threads": threads, "onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__,
           "numpy": np.__version__, "texts": len(texts), "tokens": tokens, "padding_fraction": padding, "variants": {}}
    every = list(range(len(batches)))
    for name, tokenize in (("tokenized", True), ("pretokenized", False)):
        for k in every[:2]:  # warm-up
            engine.run(pretok[k])
        done, passes, elapsed, tok_s = measure(engine, every, time.perf_counter(), tokenize)
        out["variants"][name] = {"items_per_s": done / elapsed, "items": done, "wall_s": elapsed, "passes": passes,
                                 "tokenize_s": tok_s}
    del engine
    half = max(1, threads // 2)
    engines = [Engine(model_dir, route, settings, half) for _ in range(2)]
    shares = [every[0::2], every[1::2]]
    for eng, share in zip(engines, shares):
        if share:
            eng.run(pretok[share[0]])
    results: list = [(0, 0, 0.0, 0.0), (0, 0, 0.0, 0.0)]
    t0 = time.perf_counter()
    workers = [threading.Thread(target=lambda k=k: results.__setitem__(k, measure(engines[k], shares[k], t0, True)))
               for k in range(2) if shares[k]]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done, elapsed = sum(r[0] for r in results), max(r[2] for r in results)
    out["variants"]["two_sessions"] = {"items_per_s": done / elapsed, "items": done, "wall_s": elapsed,
                                       "passes": min(r[1] for r in results if r[1]), "threads_per_session": half,
                                       "tokenize_s": sum(r[3] for r in results)}
    return out


def reference(model_dir: str, work: str, start: int, count: int) -> dict:
    """Embeddings and rerank scores of the texts, each alone (batch 1, no padding) and all as one
    padded batch in order, with CEILING_THREADS threads."""
    settings = json.loads(Path(work, "settings.json").read_text())
    texts = [t["text"] for t in read_jsonl(Path(work, "texts.jsonl"))[start : start + count]]
    threads = env_int("CEILING_THREADS", 0) or os.cpu_count() or 1
    tok = load_tokenizer(model_dir)
    out = {}
    for route in ROUTES:
        eng = Engine(model_dir, route, settings, threads)
        rows = [tok.encode(s).ids for s in eng.strings(texts)]
        out[route] = {"alone": [eng.run([r])[0].tolist() for r in rows], "batch": eng.run(rows).tolist(),
                      "tokens": [len(r) for r in rows]}
    return out


def subprocess_json(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# part 1: /embed and /rerank against the ceiling


def run(url: str, model_dir: str, work: str, out_path: str, server_pid: int | None) -> None:
    # Killed (bench/encoder.sh's trap): exit through SystemExit, so that a running ceiling
    # subprocess is killed too (subprocess.run does on any exception).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    emit = models_bench.emitter(out_path)
    s = sizes()
    settings = json.loads(Path(work, "settings.json").read_text())
    pool = read_jsonl(Path(work, "texts.jsonl"))
    if len(pool) < s["pool_texts"]:
        sys.exit(f"{work}/texts.jsonl holds {len(pool)} texts, the sizes need {s['pool_texts']}: run `inputs` again")
    model_id = openai_bench.get_json(url, "/v1/models")["data"][0]["id"]
    cursor = [0]

    def take(n: int) -> tuple[int, list[str]]:
        at = cursor[0]
        cursor[0] += n
        return at, [t["text"] for t in pool[at : at + n]]

    query = settings["rerank_query"]

    def bodies(route: str, texts: list[str], per: int) -> list[bytes]:
        groups = [texts[i : i + per] for i in range(0, len(texts), per)]
        if route == "embed":
            return [json.dumps({"inputs": g}).encode() for g in groups]
        return [json.dumps({"query": query, "texts": g, "raw_scores": True}).encode() for g in groups]

    def check(route: str, per: int):
        def f(b, i):
            if route == "embed":
                ok = len(b) == per and all(isinstance(v, list) and len(v) == len(b[0]) for v in b)
            else:
                ok = sorted(x["index"] for x in b) == list(range(per)) and all(isinstance(x["score"], (int, float)) for x in b)
            return {"items": len(b), "well_formed": int(ok)}
        return f

    def slice_for(case: str, n: int) -> tuple[int, int]:
        conc, per = {"c1": (1, 1), "c32": (32, 1), "b32": (1, 32)}[case]
        n = math.ceil(n / (conc * per)) * conc * per  # every client the same share; no text twice
        at, _ = take(n)
        return at, n

    def http_case(route: str, case: str, texts_at: tuple[int, int], record_round: int | None) -> dict:
        conc, per = {"c1": (1, 1), "c32": (32, 1), "b32": (1, 32)}[case]
        at, n = texts_at
        texts = [t["text"] for t in pool[at : at + n]]
        res = openai_bench.closed_loop(url, "/" + route, bodies(route, texts, per), conc, n // per, check(route, per),
                                       server_pid if record_round else None)
        res["items_per_s"] = res.get("items", 0) / res["wall_s"]
        res["items_per_request"] = per
        res["first_text"] = at
        return res

    emit({"kind": "workload", "model_id": model_id, **s, "rerank": settings["rerank"],
          "rerank_query": query, "embedding": settings["embedding"],
          "text_tokens": TEXT_TOKENS, "pool_tokens_mean": statistics.mean(len(t["ids"]) for t in pool),
          "pool_tokens_min": min(len(t["ids"]) for t in pool), "pool_tokens_max": max(len(t["ids"]) for t in pool)})

    # Warm-up, each route: 32 clients, 1 client, 32 items per request (not recorded).
    for route in ROUTES:
        http_case(route, "c32", slice_for("c32", s["warmup_items"]), None)
        http_case(route, "c1", slice_for("c1", 8), None)
        http_case(route, "b32", slice_for("b32", s["warmup_items"]), None)

    for r in range(1, s["rounds"] + 1):
        # The round's texts, fixed before either step: the ceiling runs over the texts of the
        # round's 32-client run of its route, whichever step comes first.
        plan = {(route, case): slice_for(case, s["items_1"] if case == "c1" else s["items_32"])
                for route in ROUTES for case in CASES}
        for step in (["http", "ceiling"] if r % 2 else ["ceiling", "http"]):
            if step == "http":
                for route in ROUTES:
                    for case in CASES:
                        res = http_case(route, case, plan[(route, case)], r)
                        emit({"kind": "http", "route": route, "case": case, "round": r, "run": res})
                continue
            for route in ROUTES:
                at, n = plan[(route, "c32")]
                srv0 = openai_bench.cpu_seconds(server_pid)
                ceil = subprocess_json("ceiling", model_dir, work, route, str(at), str(n), str(s["ceiling_seconds"]))
                srv1 = openai_bench.cpu_seconds(server_pid)
                line = {"kind": "ceiling", "route": route, "round": r, "first_text": at, **ceil}
                if srv0 is not None and srv1 is not None:
                    line["idle_server_cpu_s"] = srv1 - srv0
                emit(line)

    # Correctness: fresh texts, each alone and all in one request, against the Python reference.
    at, texts = take(CHECK_TEXTS)
    ref = subprocess_json("reference", model_dir, work, str(at), str(CHECK_TEXTS))
    line = {"kind": "check", "texts": CHECK_TEXTS, "ref_tokens": ref["embed"]["tokens"]}
    for route in ROUTES:
        alone, batch = [], None
        for t in texts:
            body = {"inputs": [t]} if route == "embed" else {"query": query, "texts": [t], "raw_scores": True}
            status, raw = openai_bench.post_json(url, "/" + route, body)
            if status != 200:
                line[route] = {"error": f"{status} {raw.decode(errors='replace')[:300]}"}
                break
            b = json.loads(raw)
            alone.append(b[0] if route == "embed" else b[0]["score"])
        else:
            body = {"inputs": texts} if route == "embed" else {"query": query, "texts": texts, "raw_scores": True}
            status, raw = openai_bench.post_json(url, "/" + route, body)
            if status == 200:
                b = json.loads(raw)
                if route == "embed":
                    batch = b
                else:
                    batch = [0.0] * len(texts)
                    for x in b:
                        batch[x["index"]] = x["score"]
            line[route] = {
                "server_alone_vs_ref_alone": compare_values(alone, ref[route]["alone"], route),
                "server_batch_vs_ref_batch": compare_values(batch, ref[route]["batch"], route) if batch else {"error": f"{status}"},
                "server_batch_vs_ref_alone": compare_values(batch, ref[route]["alone"], route) if batch else {"error": f"{status}"},
                "ref_batch_vs_ref_alone": compare_values(ref[route]["batch"], ref[route]["alone"], route),
            }
            if route == "rerank":
                # The order /rerank returns (most relevant first) against the reference's order.
                line[route]["ranking_equal_to_ref_batch"] = rank(batch) == rank(ref[route]["batch"]) if batch else None
    emit(line)


def rank(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def compare_values(a, b, route: str) -> dict:
    """Vectors (embed): the largest absolute difference and the least cosine; scores (rerank):
    the largest absolute difference."""
    if a is None or b is None or len(a) != len(b):
        return {"error": f"counts differ: {None if a is None else len(a)} against {None if b is None else len(b)}"}
    if route == "rerank":
        return {"compared": len(a), "max_abs_diff": max(abs(x - y) for x, y in zip(a, b))}
    worst, cos = 0.0, 1.0
    for x, y in zip(a, b):
        if len(x) != len(y):
            return {"compared": len(a), "error": f"lengths differ: {len(x)} against {len(y)}"}
        worst = max(worst, max(abs(p - q) for p, q in zip(x, y)))
        nx = math.sqrt(sum(p * p for p in x)) or 1.0
        ny = math.sqrt(sum(q * q for q in y)) or 1.0
        cos = min(cos, sum(p * q for p, q in zip(x, y)) / (nx * ny))
    return {"compared": len(a), "max_abs_diff": worst, "min_cosine": cos}


# ---------------------------------------------------------------------------------------------
# part 3: the labelling run


def cache_metrics(url: str) -> dict:
    """The encoder-cache metrics from /metrics, each summed over its labels; None when absent."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode(errors="replace")
    conn.close()
    return parse_cache_metrics(text)


def parse_cache_metrics(text: str) -> dict:
    out = {}
    for name in CACHE_METRICS:
        vals = [float(m.group(1)) for m in re.finditer(rf"^{name}(?:\{{[^\n]*\}})?\s+(\S+)", text, re.M)]
        out[name] = sum(vals) if vals else None
    return out


def classify(url: str, work: str, out_path: str, tag: str, rnd: int, server_pid: int | None) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    emit = models_bench.emitter(out_path)
    s = sizes()
    settings = json.loads(Path(work, "settings.json").read_text())
    inputs = [t["text"] for t in read_jsonl(Path(work, "classify.jsonl"))]
    warm = [t["text"] for t in read_jsonl(Path(work, "classify-warmup.jsonl"))]
    template = settings["classify_template"]
    batch, clients = s["classify_batch"], s["classify_clients"]

    def bodies(texts: list[str], labels: list[str]) -> list[bytes]:
        return [json.dumps({"inputs": texts[i : i + batch], "labels": labels, "template": template}).encode()
                for i in range(0, len(texts), batch)]

    def check(b, i):
        return {"inputs": len(b), "well_formed": int(all("label" in x and "scores" in x for x in b))}

    # Warm-up: other inputs under every label set (each label set's shapes), not recorded.
    for labels in settings["label_sets"]:
        openai_bench.closed_loop(url, "/v1/classify", bodies(warm, labels), 2, math.ceil(len(warm) / batch), check)

    answers: dict[str, list] = {}
    before_all = cache_metrics(url)
    for k, labels in enumerate(settings["label_sets"], 1):
        kept: dict[int, list] = {}

        def keep(b, i):
            kept[i] = [[x["label"], {y["label"]: y["score"] for y in x["scores"]}] for x in b]

        bs = bodies(inputs, labels)
        # Requests handed out one by one to `clients` closed-loop clients: the static share
        # closed_loop gives (client c sends requests c*per .. c*per+per-1) when the count divides.
        m0 = cache_metrics(url)
        res = openai_bench.closed_loop(url, "/v1/classify", bs, clients, len(bs), check, server_pid, keep)
        m1 = cache_metrics(url)
        flat = []
        for i in range(len(bs)):
            flat.extend(kept.get(i, [[None, {}]] * len(inputs[i * batch : (i + 1) * batch])))
        answers[str(k)] = flat
        delta = {n: (m1[n] - m0[n] if m1[n] is not None and m0[n] is not None else None) for n in CACHE_METRICS}
        emit({"kind": "classify", "tag": tag, "round": rnd, "set": k, "labels": labels, "template": template, "inputs": len(inputs),
              "seconds": res["wall_s"], "inputs_per_s": res.get("inputs", 0) / res["wall_s"], "run": res,
              "cache_metrics_delta": delta, "cache_metrics_after": m1})
    Path(work, f"answers-{tag}-{rnd}.json").write_text(json.dumps(answers))
    emit({"kind": "cache_metrics", "tag": tag, "round": rnd, "before": before_all, "after": cache_metrics(url)})


def compare(work: str, out_path: str) -> None:
    emit = models_bench.emitter(out_path)
    files = sorted(Path(work).glob("answers-*.json"))
    runs = {}
    for f in files:
        _, tag, rnd = f.stem.split("-")
        runs[(tag, int(rnd))] = json.loads(f.read_text())

    def diff(a: dict, b: dict) -> dict:
        out = {}
        for k in a:
            x, y = a[k], b.get(k, [])
            labels = sum(1 for p, q in zip(x, y) if p[0] != q[0]) + abs(len(x) - len(y))
            scores = sum(1 for p, q in zip(x, y) if p[1] != q[1])
            worst = max((abs(p[1][lab] - q[1].get(lab, float("nan"))) for p, q in zip(x, y) for lab in p[1]), default=0.0)
            missing = sum(1 for p in x if p[0] is None) + sum(1 for q in y if q[0] is None)
            out[k] = {"inputs": len(x), "label_mismatches": labels, "score_mismatches": scores, "max_abs_score_diff": worst,
                      "unanswered": missing}
        return out

    rounds = sorted({r for _, r in runs})
    pairs = []
    for r in rounds:
        if ("off", r) in runs and ("on", r) in runs:
            pairs.append(("on", r, "off", r))
    for tag in ("off", "on"):
        rs = [r for t, r in runs if t == tag]
        for a, b in zip(rs, rs[1:]):
            pairs.append((tag, b, tag, a))
    for ta, ra, tb, rb in pairs:
        emit({"kind": "classify_check", "a": [ta, ra], "b": [tb, rb], "sets": diff(runs[(ta, ra)], runs[(tb, rb)])})


def layout(out_path: str, label: str, log_path: str) -> None:
    """The server's own account of its thread layout (its "model loaded" line)."""
    emit = models_bench.emitter(out_path)
    keys = ("weights", "int8_kernel", "decode_lanes", "intra_op_threads", "ort_thread_pool", "prefill_thread",
            "solo_sessions", "prefill_and_step_threads", "http_threads", "tokenizer_threads", "intra_op_spinning",
            "encoder_cache_mb", "encoder_cache_bytes", "encoder_cache")
    found = {}
    for line in open(log_path, errors="replace"):
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        if "model loaded" not in line:
            continue
        for k in keys:
            m = re.search(rf"\b{k}=(\"[^\"]*\"|\S+)", line)
            if m:
                found[k] = m.group(1).strip('"')
        break
    caches = sorted({re.sub(r"\x1b\[[0-9;]*m", "", l).strip()[:300] for l in open(log_path, errors="replace")
                     if "cache" in l.lower() and "kv_cache" not in l.lower()})[:3]
    emit({"kind": "server_layout", "label": label, "log": log_path, "layout": found, "cache_log_lines": caches})


# ---------------------------------------------------------------------------------------------
# the report


def report(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    meta = next(r for r in rows if r["kind"] == "meta")
    wl = next((r for r in rows if r["kind"] == "workload"), None)
    https = [r for r in rows if r["kind"] == "http"]
    ceils = [r for r in rows if r["kind"] == "ceiling"]
    chk = next((r for r in rows if r["kind"] == "check"), None)
    cls = [r for r in rows if r["kind"] == "classify"]
    cms = [r for r in rows if r["kind"] == "cache_metrics"]
    cchk = [r for r in rows if r["kind"] == "classify_check"]
    layouts = [r for r in rows if r["kind"] == "server_layout"]
    med = statistics.median
    cpu = meta["cpu"]
    cores = cpu["cores"]

    def medf(values) -> float:
        v = [x for x in values if x is not None]
        return med(v) if v else float("nan")

    def lst(values, fmt="{:.0f}") -> str:
        return ", ".join(fmt.format(x) for x in values)

    print(f"# Encoder-only routes (/embed, /rerank) against an in-process ceiling, and the encoder cache on a labelling run, "
          f"{meta['model']}, {meta['date']} on {meta['host']} ({cores} cores, {cpu['model_name']})\n")
    print(f"`{meta['command']}`{' (QUICK=1: a smoke run, too short for figures to mean much)' if meta.get('quick') else ''}, "
          f"t5serve at {meta['git_commit'][:7]}{' with uncommitted changes' if meta['git_dirty'] else ''} "
          f"(`{meta['bin']}`){', flags `' + meta['server_flags'] + '`' if meta['server_flags'] else ''}.\n")
    print(f"CPU flags (/proc/cpuinfo): {', '.join(meta['cpu_flags']) or 'none of them'}; t5serve's int8 kernel "
          f"{cpu['int8_kernel']} (saturating: {str(cpu['int8_kernel_saturates']).lower()}).\n")
    print("```\nCPU: " + json.dumps(cpu, separators=(",", ":")) + "\n```\n")
    if not meta.get("cache_flag_passed", True):
        print("**The encoder-cache flag was not passed** (CACHE_OFF_FLAGS / CACHE_ON_FLAGS empty): the servers ran with "
              "their default, so part 1 may not be cache-free and the labelling run's \"off\" and \"on\" servers are the "
              "same configuration. A smoke run of the script only, not a measurement of the cache.\n")
    for r in layouts:
        lay = r["layout"]
        print(f"Server `{r['label']}` as it logged its layout: " + (", ".join(f"{k} {v}" for k, v in lay.items()) or "no \"model loaded\" line found")
              + ".")
    if layouts:
        print()
    if wl is None:
        print("No workload line: the client did not start.")
        return

    # --- part 1 -----------------------------------------------------------------------------
    c0 = ceils[0] if ceils else {}
    print("## 1. /embed and /rerank against the in-process ceiling\n")
    print(f"One server: `{meta['serve_off']}`. Texts: number words (num2words; each text one language of English, German, "
          f"French, Spanish), {wl['text_tokens'][0]}-{wl['text_tokens'][1]} tokens (pool mean {wl['pool_tokens_mean']:.1f}, "
          f"EOS included), every item a text not sent before in the run. `POST /embed` {{\"inputs\": [...]}} (model's pooling: "
          f"{wl['embedding'].get('pooling', 'mean')}, normalized) and `POST /rerank` {{\"query\": {json.dumps(wl['rerank_query'])}, "
          f"\"texts\": [...], \"raw_scores\": true}} (template `{wl['rerank']['template']}`"
          f"{' from the model' if wl['rerank'].get('from_model') else ' (monoT5 default)'}, words "
          f"{json.dumps(wl['rerank']['true_word'])}/{json.dumps(wl['rerank']['false_word'])} = ids "
          f"{wl['rerank']['true_id']}/{wl['rerank']['false_id']}). Cases: 1 client x {wl['items_1']} items, 32 clients x "
          f"{wl['items_32']} items (1 item per request), 1 client x {wl['items_32']} items in requests of 32. Closed loop "
          "(Python threads, one keep-alive connection each, opened before the clock); items/s = items answered / time to "
          f"the last answer. {wl['rounds']} round(s), the HTTP step and the ceiling step alternating in order by round, after "
          f"a warm-up (not counted).\n")
    print(f"Ceiling: onnxruntime {c0.get('onnxruntime', '?')} in Python ({meta.get('ceiling_python', '?')}), the same "
          "encoder_model.onnx (and for rerank decoder_model.onnx, its first step: decoder input the start token 0), "
          f"all graph optimizations, intra-op threads {c0.get('threads', '?')}, spinning, 1 inter-op thread; over the texts "
          f"of the round's 32-client run, padded batches of 32 in their order (padding {c0.get('padding_fraction', 0):.0%} "
          f"of the padded tokens in round 1's embed texts), the route's arithmetic in numpy (mean pooling over real tokens + "
          f"L2 normalization; logits[:,0,true]-logits[:,0,false]), at least {wl['ceiling_seconds']:g} s and one pass per "
          f"variant. Variants: **tokenized** (tokenizers {c0.get('tokenizers', '?')} encode_batch inside the clock, as the "
          "server tokenizes: the target's ceiling), **pretokenized** (ids computed before the clock), **two sessions** "
          f"(tokenized; two sets of sessions of {c0.get('variants', {}).get('two_sessions', {}).get('threads_per_session', '?')} "
          "thread(s) each running alternate batches side by side, as t5serve's two decode lanes do).\n")
    print("| route | case | items/s (median) | rounds | p50 ms | p99 ms | errors | well-formed | client CPU share | server CPU (cores) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for route in ROUTES:
        for case in CASES:
            v = [r["run"] for r in sorted(https, key=lambda r: r["round"]) if r["route"] == route and r["case"] == case]
            if not v:
                continue
            share = sum(x["client_cpu_s"] for x in v) / sum(x["wall_s"] * cores for x in v)
            srv = medf(x["server_cpu_s"] / x["wall_s"] if "server_cpu_s" in x else None for x in v)
            print(f"| /{route} | {CASE_LABELS[case]} | {medf(x['items_per_s'] for x in v):.1f} | {lst((x['items_per_s'] for x in v), '{:.1f}')} | "
                  f"{medf(x['p50_s'] for x in v) * 1000:.1f} | {medf(x['p99_s'] for x in v) * 1000:.1f} | "
                  f"{sum(x.get('errors', 0) for x in v)} | {sum(x.get('well_formed', 0) for x in v)}/{sum(x['requests'] for x in v)} | "
                  f"{share:.1%} | {srv:.2f} |")
        for var, label in (("tokenized", "ceiling, batch 32, tokenized in the clock"), ("pretokenized", "ceiling, batch 32, pretokenized"),
                           ("two_sessions", "ceiling, batch 32, tokenized, 2 sessions side by side")):
            v = [r["variants"][var] for r in sorted(ceils, key=lambda r: r["round"]) if r["route"] == route]
            if not v:
                continue
            tshare = medf(x["tokenize_s"] / x["wall_s"] for x in v) if var != "two_sessions" else None
            note = f" (tokenizing: {tshare:.0%} of the time)" if tshare else ""
            print(f"| /{route} | {label}{note} | {medf(x['items_per_s'] for x in v):.1f} | {lst((x['items_per_s'] for x in v), '{:.1f}')} | "
                  "| | | | | |")
    idle = [r["idle_server_cpu_s"] for r in ceils if "idle_server_cpu_s" in r]
    print(f"\nClient CPU: the Python client's CPU time over the run as a share of the machine's {cores} cores (it competes "
          "with the server). Server CPU during the ceiling runs (idle server): " + lst(idle, "{:.2f} s") + ".\n")

    print("Ratios server / ceiling (each round's HTTP run against the same round's ceiling; median of the rounds' ratios):\n")
    print("| route | case | / ceiling tokenized | rounds | target | / pretokenized | / two sessions | / fastest ceiling |")
    print("|---|---|---|---|---|---|---|---|")
    verdicts = []
    for route in ROUTES:
        cr = {r["round"]: r["variants"] for r in ceils if r["route"] == route}
        for case in CASES:
            hr = {r["round"]: r["run"]["items_per_s"] for r in https if r["route"] == route and r["case"] == case}
            ks = [k for k in sorted(hr) if k in cr]
            if not ks:
                continue
            ratio = lambda var: [hr[k] / cr[k][var]["items_per_s"] for k in ks]  # noqa: E731
            main = ratio("tokenized")
            fastest = [hr[k] / max(v["items_per_s"] for v in cr[k].values()) for k in ks]
            m = med(main)
            target = case in ("c32", "b32")
            t = f">= 0.8: {'met' if m >= 0.8 else 'not met'}" if target else "-"
            if target:
                verdicts.append(f"/{route} {CASE_LABELS[case]}: {m:.2f} ({'met' if m >= 0.8 else 'not met'})")
            print(f"| /{route} | {CASE_LABELS[case]} | {m:.2f} | {lst(main, '{:.2f}')} | {t} | {med(ratio('pretokenized')):.2f} | "
                  f"{med(ratio('two_sessions')):.2f} | {med(fastest):.2f} |")
    if verdicts:
        print("\nThe issue's target, at least 0.8 of the ceiling at batch 32 through HTTP: " + "; ".join(verdicts) + ".\n")

    errs = [(r["route"], r["case"], r["round"], e) for r in https for e in r["run"].get("first_errors", [])]
    for route, case, rnd, e in errs[:8]:
        print(f"- error (/{route}, {case}, round {rnd}): `{e}`")
    if errs:
        print()
    if chk:
        print(f"Correctness, in passing: {chk['texts']} fresh texts ({min(chk['ref_tokens'])}-{max(chk['ref_tokens'])} tokens "
              "of the embed input) sent each alone and then all in one request, against the Python reference (the ceiling's "
              "code) of each alone (batch 1) and of all as one padded batch in order:\n")
        print("| route | comparison | compared | max abs diff | min cosine |")
        print("|---|---|---|---|---|")
        for route in ROUTES:
            d = chk.get(route, {})
            if "error" in d:
                print(f"| /{route} | request failed: {d['error']} | | | |")
                continue
            for key, label in (("server_alone_vs_ref_alone", "server alone / reference alone"),
                               ("server_batch_vs_ref_batch", "server, 32 in a request / reference padded batch"),
                               ("server_batch_vs_ref_alone", "server, 32 in a request / reference alone"),
                               ("ref_batch_vs_ref_alone", "reference padded batch / reference alone")):
                x = d.get(key, {})
                if "max_abs_diff" in x:
                    cos = f"{x['min_cosine']:.6f}" if "min_cosine" in x else "-"
                    print(f"| /{route} | {label} | {x['compared']} | {x['max_abs_diff']:.2e} | {cos} |")
                else:
                    print(f"| /{route} | {label} | {x.get('error', 'not measured')} | | |")
            if route == "rerank" and d.get("ranking_equal_to_ref_batch") is not None:
                print(f"| /rerank | ranking of the 32 equal to the reference batch's | {'yes' if d['ranking_equal_to_ref_batch'] else 'no'} | | |")
        print("\nint8 graphs quantize activations with one scale per tensor computed at run time, so an int8 row's result "
              "depends on the rows batched with it (and the server batches by length, not as the reference pads); float32 "
              "rows agree to about 1e-6 in every line. Scores are raw (logit differences, raw_scores: true).\n")

    # --- part 3 -----------------------------------------------------------------------------
    if not cls:
        return
    sets = sorted({r["set"] for r in cls})
    labels = {r["set"]: r["labels"] for r in cls}
    n_inputs = cls[0]["inputs"]
    sz = wl
    print("## 3. Labelling run: the same inputs under three label sets, with and without the encoder cache\n")
    print(f"`POST /v1/classify` over the same {n_inputs} distinct inputs (texts as above) with template "
          f"`{cls[0].get('template', '?')}`, in requests of {sz['classify_batch']} inputs from {sz['classify_clients']} "
          "closed-loop clients, each label set in turn, timed end to end per label set: "
          + "; ".join(f"set {k} {json.dumps(labels[k], ensure_ascii=False)}" for k in sets)
          + f". Servers: `{meta['serve_off']}` (off) and `{meta['serve_on']}` (on), a fresh server per run, "
          f"{len({r['round'] for r in cls})} round(s), the order of off and on alternating by round; each run after a warm-up "
          f"on {CLASSIFY_WARMUP} other inputs under every label set.\n")
    print("| cache | round | set | seconds | inputs/s | errors | hits (delta) | misses (delta) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(cls, key=lambda r: (r["round"], r["tag"] != "off", r["set"])):
        d = r["cache_metrics_delta"]
        fmt = lambda v: "absent" if v is None else f"{v:.0f}"  # noqa: E731
        print(f"| {r['tag']} | {r['round']} | {r['set']} | {r['seconds']:.2f} | {r['inputs_per_s']:.1f} | {r['run'].get('errors', 0)} | "
              f"{fmt(d['t5serve_encoder_cache_hits_total'])} | {fmt(d['t5serve_encoder_cache_misses_total'])} |")
    by = {(r["tag"], r["round"], r["set"]): r["seconds"] for r in cls}
    rounds = sorted({r["round"] for r in cls})
    print("\nSpeed-up of the cache per label set (seconds off / seconds on, the same round; median of the rounds), and "
          "each server's time for the set against its own set 1 (on the cached server, set 1 fills the cache):\n")
    print("| set | off s (median) | on s (median) | speed-up | rounds | off: set / set 1 | on: set / set 1 |")
    print("|---|---|---|---|---|---|---|")
    for k in sets:
        ups = [by[("off", r, k)] / by[("on", r, k)] for r in rounds if ("off", r, k) in by and ("on", r, k) in by]
        rel = lambda tag: medf(by[(tag, r, k)] / by[(tag, r, 1)] for r in rounds if (tag, r, k) in by and (tag, r, 1) in by)  # noqa: E731
        print(f"| {k} | {medf(by.get(('off', r, k)) for r in rounds):.2f} | {medf(by.get(('on', r, k)) for r in rounds):.2f} | "
              f"{medf(ups):.2f} | {lst(ups, '{:.2f}')} | {rel('off'):.2f} | {rel('on'):.2f} |")
    print("\nThe encoder-cache metrics from /metrics, summed over their labels, after each run (totals since the server "
          "started, warm-up included):\n")
    print("| cache | round | " + " | ".join(n.removeprefix("t5serve_") for n in CACHE_METRICS) + " |")
    print("|---|---|" + "---|" * len(CACHE_METRICS))
    for r in sorted(cms, key=lambda r: (r["round"], r["tag"] != "off")):
        print(f"| {r['tag']} | {r['round']} | " + " | ".join("absent" if r["after"][n] is None else f"{r['after'][n]:.0f}"
                                                          for n in CACHE_METRICS) + " |")
    print("\nAnswers compared (labels and every label's score, exactly; between runs of the same kind for the noise "
          "floor: int8 scores depend on which rows the server batched together):\n")
    print("| compared | set | inputs | label mismatches | score mismatches | max abs score diff | unanswered |")
    print("|---|---|---|---|---|---|---|")
    for r in cchk:
        for k, d in sorted(r["sets"].items()):
            print(f"| {r['a'][0]} round {r['a'][1]} / {r['b'][0]} round {r['b'][1]} | {k} | {d['inputs']} | {d['label_mismatches']} | "
                  f"{d['score_mismatches']} | {d['max_abs_score_diff']:.2e} | {d['unanswered']} |")
    cerrs = [(r["tag"], r["round"], r["set"], e) for r in cls for e in r["run"].get("first_errors", [])]
    for tag, rnd, k, e in cerrs[:6]:
        print(f"- error (cache {tag}, round {rnd}, set {k}): `{e}`")
    print()
    for r in (r for r in rows if r["kind"] == "server_log"):
        h = r.get("health_503_while_starting", 0)
        print(f"Server log `{r['label']}` ({r['log']}, {r['lines']} lines): ERROR/panic lines {r['errors']}, WARN lines "
              f"{r['warnings']}; besides these, {h} ERROR lines for a 503 from GET /health while starting.\n")
        for e in r["first_errors"][:3]:
            print(f"- `{e}`")


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    pid = lambda k: int(args[k]) if len(args) > k and args[k] else None  # noqa: E731
    if cmd == "inputs":
        make_inputs(args[0], args[1])
    elif cmd == "run":
        run(args[0], args[1], args[2], args[3], pid(4))
    elif cmd == "ceiling":
        print(json.dumps(ceiling(args[0], args[1], args[2], int(args[3]), int(args[4]), float(args[5]))))
    elif cmd == "reference":
        print(json.dumps(reference(args[0], args[1], int(args[2]), int(args[3]))))
    elif cmd == "classify":
        classify(args[0], args[1], args[2], args[3], int(args[4]), pid(5))
    elif cmd == "compare":
        compare(args[0], args[1])
    elif cmd == "layout":
        layout(args[0], args[1], args[2])
    elif cmd == "log":
        models_bench.log_lines(args[0], args[1], args[2])
    elif cmd == "report":
        report(args[0])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
