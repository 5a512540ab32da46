#!/usr/bin/env python3
"""The other engines on the same model and workload, for bench/run.sh.

    python bench/engines.py MODEL_DIR INT8_DIR HF_DIR PROMPT_FILE NEW_TOKENS [ENGINE BATCH]

MODEL_DIR is the fp32 ONNX export t5serve serves, INT8_DIR its int8 copy; HF_DIR the same
weights as a transformers checkpoint (converted here for CTranslate2). Prints one JSON line per engine and batch size:
generated tokens/s at batch 1, 8 and 32, every request exactly NEW_TOKENS tokens. With ENGINE and
BATCH, only that engine at that batch (bench/run.sh's paired rounds).
"""

import json
import os
import sys
import time
from pathlib import Path

BATCHES = (1, 8, 32)


def timed(fn, batch: int, new_tokens: int, min_seconds: float = 3.0) -> float:
    fn()  # warm-up
    runs, start = 0, time.perf_counter()
    while True:
        fn()
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and runs >= 2:
            return runs * batch * new_tokens / elapsed


def optimum_engine(model_dir: str, prompt: str, new_tokens: int):
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForSeq2SeqLM
    from transformers import AutoTokenizer

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = ORTModelForSeq2SeqLM.from_pretrained(
        model_dir,
        use_cache=True,
        use_merged=False,
        encoder_file_name="encoder_model.onnx",
        decoder_file_name="decoder_model.onnx",
        decoder_with_past_file_name="decoder_with_past_model.onnx",
        session_options=opts,
    )
    for b in BATCHES:
        enc = tok([prompt] * b, return_tensors="pt")

        def run():
            with torch.no_grad():
                model.generate(**enc, do_sample=False, num_beams=1, min_new_tokens=new_tokens, max_new_tokens=new_tokens)

        yield b, timed(run, b, new_tokens)


def ct2_engine(hf_dir: str, prompt: str, new_tokens: int, compute_type: str):
    import ctranslate2
    from transformers import AutoTokenizer

    out = Path(hf_dir + f"-ct2-{compute_type}")
    if not out.exists():
        conv = ctranslate2.converters.TransformersConverter(hf_dir)
        conv.convert(str(out), quantization=compute_type, force=True)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    pieces = tok.convert_ids_to_tokens(tok(prompt)["input_ids"])
    # CTranslate2 has two ways to use both cores: one batch on two threads (intra_threads), or
    # two half batches side by side (inter_threads, its documented throughput setting). Each
    # batch size reports the faster of the two, so t5serve is compared with CTranslate2's best.
    settings = [
        ("intra_threads=2", 1, ctranslate2.Translator(str(out), device="cpu", compute_type=compute_type, intra_threads=2)),
        (
            "inter_threads=2",
            2,
            ctranslate2.Translator(str(out), device="cpu", compute_type=compute_type, intra_threads=1, inter_threads=2),
        ),
    ]
    for b in BATCHES:
        best = None
        for setting, parts, tr in settings:
            if b < parts:
                continue

            def run(tr=tr, size=-(-b // parts)):
                tr.translate_batch(
                    [pieces] * b,
                    beam_size=1,
                    max_decoding_length=new_tokens,
                    min_decoding_length=new_tokens,
                    max_batch_size=size,
                )

            tps = timed(run, b, new_tokens)
            if best is None or tps > best[1]:
                best = (setting, tps)
        yield b, best[1], best[0]


def main() -> None:
    model_dir, int8_dir, hf_dir, prompt_file = sys.argv[1:5]
    new_tokens = int(sys.argv[5])
    prompt = Path(prompt_file).read_text().strip()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    global BATCHES
    only = sys.argv[6] if len(sys.argv) > 6 else None
    if only:
        BATCHES = (int(sys.argv[7]),)
    engines = [
        ("optimum-ort-fp32", lambda: optimum_engine(model_dir, prompt, new_tokens)),
        ("optimum-ort-int8", lambda: optimum_engine(int8_dir, prompt, new_tokens)),
        ("ctranslate2-fp32", lambda: ct2_engine(hf_dir, prompt, new_tokens, "float32")),
        ("ctranslate2-int8", lambda: ct2_engine(hf_dir, prompt, new_tokens, "int8")),
    ]
    for name, make in engines:
        if only and name != only:
            continue
        for b, tps, *setting in make():
            line = {"engine": name, "batch": b, "tokens_per_s": round(tps, 1)}
            if setting:
                line["setting"] = setting[0]
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
