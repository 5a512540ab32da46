#!/usr/bin/env python3
"""Builds the test models and their golden outputs, with fixed seeds and nothing but PyPI.

    python scripts/make_test_models.py                       # tests/data/tiny-t5 + tests/data/golden.json
    python scripts/make_test_models.py --shape t5-small      # models/t5-small-shape (+ -hf checkpoint) for benchmarks, not committed

The tiny model is a random-weight T5 that uses the real T5 tokenizer (vocab 32128, tied
embeddings), exported through the same code path as export_model.py. T5's default init makes a
tiny random model repeat one token forever, so the init is scaled until greedy outputs vary.

golden.json holds, for each prompt, what transformers (PyTorch) computes: the input ids, the
greedy ids for 24 steps (min_new_tokens = max_new_tokens = 24), the decoded text, and at every
step the top-5 raw logits (ids and values).
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import t5tools  # noqa: E402

SHAPES = {
    # d_model, d_kv, d_ff, layers, heads
    "tiny": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4),
    "t5-small": dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8),
    "t5-base": dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12),
}

GOLDEN_STEPS = 24

# From 1 token (EOS only) to about 100 tokens; plain ASCII, punctuation, digits and non-Latin text.
PROMPTS = [
    "",
    "Hi",
    "translate English to German: The house is wonderful.",
    "summarize: The quick brown fox jumps over the lazy dog.",
    "question: What is the capital of France? context: Paris is the capital and largest city of France.",
    "Grüße aus Köln, 42 Äpfel und 3.14 Birnen!",
    "cola sentence: The course is jumping well.",
    "stsb sentence1: A man is playing a guitar. sentence2: A person plays an instrument.",
    "translate English to French: " + "It was the best of times, it was the worst of times. " * 3,
    (
        "summarize: State authorities dispatched emergency crews Tuesday to survey the damage after an "
        "onslaught of severe weather in Mississippi. Officials said the storms caused flooding, downed "
        "power lines and damaged dozens of homes across several counties, while forecasters warned that "
        "more rain was expected later in the week. Residents were urged to stay off the roads."
    ),
]


def make_config(shape: str):
    from transformers import T5Config

    return T5Config(
        vocab_size=32128,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        **SHAPES[shape],
    )


def build_model(shape: str, seed: int):
    import torch
    from transformers import GenerationConfig, T5ForConditionalGeneration

    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(make_config(shape)).eval()
    if shape == "tiny":
        # The default init gives near-uniform logits, and greedy decoding repeats one token.
        # Larger weights and a strong relative position bias make outputs depend on the input.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "relative_attention_bias" in name:
                    p.normal_(0.0, 3.0)
                elif "layer_norm" in name:
                    continue
                else:
                    p.normal_(0.0, 0.3)
            # A larger EOS embedding (tied with the output layer) makes some prompts end early,
            # so that EOS, min_new_tokens and beam scoring are exercised: 6 of the 10 golden
            # prompts end within 24 tokens.
            model.shared.weight[1] *= 4.0
    model.generation_config = GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    return model


def split_off_merged(out: Path) -> None:
    """Moves the merged decoder into a sibling directory that shares the encoder and tokenizer.

    The server must load both layouts; symlinks keep the committed fixtures small.
    """
    merged = out.parent / (out.name + "-merged")
    if merged.exists():
        shutil.rmtree(merged)
    merged.mkdir()
    (out / "decoder_model_merged.onnx").rename(merged / "decoder_model_merged.onnx")
    for name in sorted(p.name for p in out.iterdir()):
        if name.endswith(".json") or name == "encoder_model.onnx":
            (merged / name).symlink_to(Path("..") / out.name / name)
    print(f"merged variant: {merged}")


def make_masked_variant(out: Path, model, tokenizer) -> None:
    """tests/data/tiny-t5-masked: the tiny model's files (symlinks) plus the masked decoder graph,
    for the tests of rows joining a running batch."""
    masked = out.parent / (out.name + "-masked")
    if masked.exists():
        shutil.rmtree(masked)
    masked.mkdir()
    for name in sorted(p.name for p in out.iterdir()):
        (masked / name).symlink_to(Path("..") / out.name / name)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        t5tools.export_masked_with_past(tmp, masked)
    print(f"masked variant: {masked}")


def golden(model, tokenizer) -> dict:
    import torch

    cases = []
    for prompt in PROMPTS:
        enc = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **enc,
                do_sample=False,
                num_beams=1,
                max_new_tokens=GOLDEN_STEPS,
                min_new_tokens=GOLDEN_STEPS,
                output_logits=True,
                return_dict_in_generate=True,
            )
        ids = out.sequences[0, 1:].tolist()  # drop the decoder start token
        with torch.no_grad():
            natural = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=GOLDEN_STEPS)[0, 1:].tolist()
        steps = []
        for logits in out.logits:
            top = torch.topk(logits[0].float(), 5)
            steps.append({"ids": top.indices.tolist(), "logits": [round(v, 7) for v in top.values.tolist()]})
        cases.append(
            {
                "prompt": prompt,
                "input_ids": enc["input_ids"][0].tolist(),
                "ids": ids,
                "text": tokenizer.decode(ids, skip_special_tokens=True),
                # Plain greedy without min_new_tokens: ends at EOS where the model says so.
                "natural_ids": natural,
                "top5": steps,
            }
        )
        print(f"  {len(cases[-1]['input_ids']):3d} tokens -> {ids[:8]}... {cases[-1]['text'][:40]!r}")
    return {
        "generated_by": "transformers (PyTorch) greedy generate, scripts/make_test_models.py",
        "steps": GOLDEN_STEPS,
        "min_new_tokens": GOLDEN_STEPS,
        "eos_token_id": 1,
        "cases": cases,
    }


# Decoding options whose outputs the server must reproduce exactly (greedy, fixed length).
DECODING_CASES = [
    {"repetition_penalty": 1.3},
    {"repetition_penalty": 0.8},
    {"no_repeat_ngram_size": 2},
    {"no_repeat_ngram_size": 3, "repetition_penalty": 1.2},
]


def decoding_golden(model, tokenizer) -> dict:
    """transformers' greedy generate with logits processors, for a few prompts."""
    import torch

    cases = []
    for options in DECODING_CASES:
        for prompt in PROMPTS[1:6]:
            enc = tokenizer(prompt, return_tensors="pt")
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    do_sample=False,
                    num_beams=1,
                    max_new_tokens=GOLDEN_STEPS,
                    min_new_tokens=GOLDEN_STEPS,
                    output_scores=True,
                    return_dict_in_generate=True,
                    **options,
                )
            ids = out.sequences[0, 1:].tolist()
            # The smallest top-2 margin of the processed scores: where it is tiny, two correct
            # implementations may pick different tokens.
            margins = [round(float(torch.topk(s[0].float(), 2).values.diff().abs()), 7) for s in out.scores]
            cases.append(
                {
                    "prompt": prompt,
                    "parameters": options,
                    "ids": ids,
                    "text": tokenizer.decode(ids, skip_special_tokens=True),
                    "margins": margins,
                }
            )
    return {
        "generated_by": "transformers (PyTorch) greedy generate with logits processors, scripts/make_test_models.py",
        "max_new_tokens": GOLDEN_STEPS,
        "min_new_tokens": GOLDEN_STEPS,
        "cases": cases,
    }


BEAM_CASES = [
    {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 0.6, "early_stopping": False},
    {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 2.0, "early_stopping": True},
    {"num_beams": 3, "num_return_sequences": 3, "length_penalty": 1.0, "early_stopping": "never"},
    {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 1.5, "early_stopping": False, "repetition_penalty": 1.3},
]
BEAM_STEPS = 12


def beam_golden(model, tokenizer) -> dict:
    """transformers' beam search: the sequences (best first) and their scores."""
    import torch

    cases = []
    for options in BEAM_CASES:
        for prompt in PROMPTS[1:6]:
            enc = tokenizer(prompt, return_tensors="pt")
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    do_sample=False,
                    max_new_tokens=BEAM_STEPS,
                    output_scores=True,
                    return_dict_in_generate=True,
                    **options,
                )
            seqs = []
            for ids, score in zip(out.sequences, out.sequences_scores):
                ids = [t for t in ids[1:].tolist()]
                # Drop the padding transformers adds after an early EOS.
                if 1 in ids:
                    ids = ids[: ids.index(1) + 1]
                seqs.append({"ids": ids, "score": round(float(score), 6)})
            cases.append({"prompt": prompt, "parameters": options, "sequences": seqs})
    return {"generated_by": "transformers (PyTorch) beam search generate, scripts/make_test_models.py", "max_new_tokens": BEAM_STEPS, "cases": cases}


SCORE_INPUTS = PROMPTS[2:5]
SCORE_LABELS = ["positive", "negative", "not sure at all"]


def score_golden(model, tokenizer) -> dict:
    """Teacher-forced log-likelihood of each label (its tokens and EOS) given each input."""
    import torch

    cases = []
    for prompt in SCORE_INPUTS:
        enc = tokenizer(prompt, return_tensors="pt")
        for label in SCORE_LABELS:
            lab = tokenizer(label, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                logits = model(**enc, labels=lab).logits[0]
            logp = torch.log_softmax(logits.float(), dim=-1)
            total = float(logp.gather(1, lab[0][:, None]).sum())
            cases.append({"input": prompt, "label": label, "label_ids": lab[0].tolist(), "logprob": round(total, 6)})
    return {"generated_by": "transformers (PyTorch) teacher forcing, scripts/make_test_models.py", "cases": cases}


def processor_golden() -> dict:
    """transformers' logits processors and warpers on random rows: the reference for the
    server's own implementations (src/generation/processors.rs)."""
    import torch
    from transformers.generation.logits_process import (
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
        TypicalLogitsWarper,
    )

    gen = torch.Generator().manual_seed(1234)
    vocab, rows, hist = 40, 6, 14
    logits = torch.randn(rows, vocab, generator=gen) * 3
    history = torch.randint(0, 12, (rows, hist), generator=gen)  # small ids, so repeats occur
    history[:, 0] = 0  # the decoder start token
    configs = {
        "repetition_penalty=1.3": RepetitionPenaltyLogitsProcessor(1.3),
        "repetition_penalty=0.7": RepetitionPenaltyLogitsProcessor(0.7),
        "no_repeat_ngram_size=2": NoRepeatNGramLogitsProcessor(2),
        "no_repeat_ngram_size=3": NoRepeatNGramLogitsProcessor(3),
        "temperature=0.7": TemperatureLogitsWarper(0.7),
        "top_k=5": TopKLogitsWarper(5),
        "top_p=0.8": TopPLogitsWarper(0.8),
        "top_p=0.3": TopPLogitsWarper(0.3),
        "typical_p=0.5": TypicalLogitsWarper(0.5),
        "typical_p=0.9": TypicalLogitsWarper(0.9),
    }

    def plain(t):
        return [[None if not torch.isfinite(v) else round(float(v), 6) for v in row] for row in t]

    out = {"logits": plain(logits), "history": history.tolist(), "cases": {}}
    for name, proc in configs.items():
        out["cases"][name] = plain(proc(history.clone(), logits.clone()))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--out", type=Path, help="model directory (default depends on --shape)")
    p.add_argument("--seed", type=int, default=20261129)
    p.add_argument("--merged", action="store_true", help="also keep decoder_model_merged.onnx (always for tiny)")
    p.add_argument("--processors-only", action="store_true", help="only rewrite tests/data/processors.json")
    p.add_argument("--goldens-only", action="store_true", help="rewrite the tiny model's golden files, not the model")
    p.add_argument("--masked-only", action="store_true", help="only (re)write tests/data/tiny-t5-masked")
    args = p.parse_args()
    if args.processors_only or args.shape == "tiny":
        path = t5tools.ROOT / "tests/data/processors.json"
        path.write_text(json.dumps(processor_golden()) + "\n")
        print(f"processor golden: {path}")
        if args.processors_only:
            return

    import torch

    torch.set_num_threads(2)
    default_out = t5tools.ROOT / ("tests/data/tiny-t5" if args.shape == "tiny" else f"models/{args.shape}-shape")
    out = args.out or default_out
    tokenizer = t5tools.load_t5_tokenizer()
    model = build_model(args.shape, args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        if args.goldens_only:
            write_goldens(model, tokenizer, out.parent)
            return
        if args.masked_only:
            make_masked_variant(out, model, tokenizer)
            return
        ckpt = Path(tmp) / "ckpt"
        model.save_pretrained(ckpt)
        tokenizer.save_pretrained(ckpt)
        if out.exists():
            shutil.rmtree(out)
        t5tools.export_onnx(str(ckpt), out, keep_merged=args.shape == "tiny" or args.merged)
        if args.shape != "tiny":
            # Benchmarks convert the same weights for CTranslate2.
            hf = out.parent / (out.name + "-hf")
            if hf.exists():
                shutil.rmtree(hf)
            shutil.copytree(ckpt, hf)
            # The benchmark serves with iteration-level batching.
            t5tools.export_masked_with_past(str(ckpt), out)
    if args.shape == "tiny":
        split_off_merged(out)
        make_masked_variant(out, model, tokenizer)
    print(f"model: {out} ({t5tools.dir_size_mb(out):.1f} MB)")

    if args.shape == "tiny":
        write_goldens(model, tokenizer, out.parent)


def write_goldens(model, tokenizer, data_dir: Path) -> None:
    goldens = (
        ("golden.json", golden(model, tokenizer)),
        ("golden_decoding.json", decoding_golden(model, tokenizer)),
        ("golden_beam.json", beam_golden(model, tokenizer)),
        ("golden_scores.json", score_golden(model, tokenizer)),
    )
    for name, data in goldens:
        path = data_dir / name
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        print(f"golden: {path}")


if __name__ == "__main__":
    main()
