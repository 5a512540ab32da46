#!/usr/bin/env python3
"""Times the exported graphs themselves with onnxruntime's Python API (no server): the encoder
on 64-token inputs, the first decoder step, and a cached step with 16 positions of self-attention
cache, at batch 1, 2, 4, 8 and 32. Shows the compute floor under the server's figures.

    .venv/bin/python bench/graphs.py models/t5-small-shape-int8 [INTRA_OP_THREADS]
"""

import sys
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    model = sys.argv[1]
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads

    def load(name: str) -> ort.InferenceSession:
        return ort.InferenceSession(f"{model}/{name}", opts, providers=["CPUExecutionProvider"])

    encoder, first, with_past = load("encoder_model.onnx"), load("decoder_model.onnx"), load("decoder_with_past_model.onnx")
    names = [o.name for o in first.get_outputs()]
    rng = np.random.default_rng(0)

    def timed(fn, n: int = 5) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n * 1000

    print(f"{model}, {threads} intra-op threads")
    for b in (1, 2, 4, 8, 32):
        ids = rng.integers(5, 32000, size=(b, 64), dtype=np.int64)
        mask = np.ones_like(ids)
        hidden = encoder.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        start = np.zeros((b, 1), np.int64)
        feeds = {"input_ids": start, "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
        outs = first.run(None, feeds)
        past = {n.replace("present", "past_key_values"): v for n, v in zip(names, outs) if n.startswith("present")}
        for k in past:
            if ".decoder." in k:
                past[k] = np.repeat(past[k], 16, axis=2)
        t_enc = timed(lambda: encoder.run(None, {"input_ids": ids, "attention_mask": mask}))
        t_first = timed(lambda: first.run(None, feeds))
        t_step = timed(lambda: with_past.run(None, {"input_ids": start, "encoder_attention_mask": mask, **past}), 10)
        print(
            f"batch {b:2d}: encoder {t_enc:6.1f} ms, first step {t_first:5.1f} ms, "
            f"cached step {t_step:5.1f} ms ({t_step / b:.2f} ms per row)"
        )


if __name__ == "__main__":
    main()
