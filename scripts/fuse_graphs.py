#!/usr/bin/env python3
"""Rewrites an exported model directory's graphs to use ONNX Runtime's fused CPU kernels:

    python scripts/fuse_graphs.py SRC_DIR OUT_DIR [--rewrites skip_layernorm,attention] [--no-greedy]
        [--attention-cache-inputs]

OUT_DIR gets the same files: encoder_model.onnx, decoder_model.onnx, decoder_with_past_model.onnx
and decoder_with_past_masked.onnx rewritten (same inputs, outputs, names and shapes), everything
else copied (a merged decoder is copied unchanged: its weights sit in `If` subgraphs), and
fusion.json, which records what was applied where and the differences measured.

The rewrites (each applied to a graph only if that graph still matches the unfused one):
- skip_layernorm: T5's RMS norm (Pow, ReduceMean, Add, Sqrt, Div, Mul, Mul) becomes
  SimplifiedLayerNormalization (onnxruntime.transformers' own fusion, after dropping T5's
  float->float Casts), and the residual Add in front of it joins it as
  SkipSimplifiedLayerNormalization (com.microsoft; its 4th output carries the residual sum).
- attention: each Softmax block (Q·Kᵀ + bias, Softmax, ·V, Transpose, Reshape) becomes one
  com.microsoft MultiHeadAttention with scale 1 (T5 does not scale) and the graph's own position
  bias + mask as `attention_bias`. Wherever the BNSH key/value exist anyway (present.* outputs
  written by the export's own Transpose/Concat nodes, the cross-attention cache inputs) the
  attention reads them; the encoder gives it Q, K, V as [b, s, d] directly. (With
  --attention-cache-inputs, cached self-attention takes past_key/past_value and writes
  present.N.decoder.{key,value} itself: fewer nodes, but a slower kernel at batch 32.)

What onnxruntime.transformers.optimizer(model_type="t5") would do instead does not work for
these graphs: it fuses the position bias into RelativePositionBias (no CPU kernel in 1.31), its
decoder attention fusion only recognizes ORT's own T5 export names (past_key_self, ...), not
optimum's. ORT already fuses at session load (level ALL, as the server uses): SimplifiedLayer-
Normalization, Transpose+MatMul into FusedMatMul, and for int8 graphs DynamicQuantizeLinear +
MatMulInteger + scale into DynamicQuantizeMatMul / MatMulIntegerToFloat; rewriting those offline
changes nothing. What it does not fuse at load is what is done here.

Verification, per graph and per rewrite: the rewritten graph and the unfused one run on the same
inputs (real ones: golden prompts through the unfused graphs, a padded batch, a batch with a
longer random input, several cache lengths, left-padded decoder masks for the masked graph); every
output's max and mean abs difference must stay within TOLERANCE (fractions of the output's
largest magnitude; derived at TOLERANCE: fp32 1e-4, int8 5e-2, the size of int8's own rounding
noise). Then greedy decoding over the fused directory must give the unfused directory's token ids
on the golden prompts, except at a step where the unfused top-2 logit margin is itself below the
tolerance (then either token is right, and that prompt stops there).
"""

from __future__ import annotations

import argparse
import heapq
import json
import shutil
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent

GRAPHS = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_with_past_masked.onnx")
REWRITES = ("skip_layernorm", "attention")
FUSED_OPS = {
    "skip_layernorm": ("SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization"),
    "attention": ("MultiHeadAttention",),
}

# Allowed |fused - unfused| per output, as fractions of max(1, max |unfused output|): of the max
# and of the mean over all elements of one sample input.
# fp32: the fused kernels only reorder float sums (softmax normalization, the RMS reduction, the
# attention GEMMs); one reordering costs a few ulps (1.2e-7 relative each) and that grows over the
# layers. 1e-4 is ~800 ulps: far above what was measured (max 1.7e-6..4e-6, mean ~5e-7, at
# outputs of magnitude 2..9 on the tiny and t5-small-shape models) and far below a real defect
# (a wrong scale, mask or position bias moves logits by 0.35..4).
# int8: every activation is quantized at run time (uint8, one scale per tensor from its min/max),
# so an ulp of difference can move an element, or the whole tensor's scale, across a rounding
# step, and that spreads through the layers like the quantization error itself. Measured on
# t5-small-shape-int8: fused vs unfused max 0.046..0.074 (mean 0.008..0.012) at outputs of
# magnitude 5..9, while the unfused int8 graph's own error against the fp32 graph is max
# 0.11..0.13 (mean 0.017..0.021) and the fused graph's is the same (mean 0.0214 vs 0.0216 on the
# encoder, 0.0168 vs 0.0168 on the cached step); ONNX Runtime's own optimization levels (ALL vs
# BASIC) move the unfused int8 outputs by up to 0.039. So: max 5e-2 and mean 5e-3 (a defect that
# breaks even some rows moves the mean by more than 1e-2), with the greedy check on top.
TOLERANCE = {"fp32": {"max": 1e-4, "mean": 1e-5}, "int8": {"max": 5e-2, "mean": 5e-3}}


def log(*a) -> None:
    print(*a, flush=True)


# ---------------------------------------------------------------------------------------------
# Graph plumbing (plain onnx)


class Graph:
    """Producer/consumer maps and constant lookup over a ModelProto's main graph."""

    def __init__(self, model: onnx.ModelProto, nodes: list):
        self.model = model
        self.g = model.graph
        self.inputs = {i.name for i in self.g.input}
        self.outputs = {o.name for o in self.g.output}
        self.inits = {i.name: i for i in self.g.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in nodes:
            for o in n.output:
                if o:
                    self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers[i].append(n)

    def prod(self, name: str, op: str | None = None):
        n = self.producer.get(name)
        if n is not None and op is not None and n.op_type != op:
            return None
        return n

    def only_consumer(self, name: str):
        c = self.consumers.get(name, [])
        if len(c) != 1 or name in self.outputs:
            return None
        return c[0]

    def const(self, name: str):
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        n = self.producer.get(name)
        if n is not None and n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def concat_tail(self, shape_name: str, k: int):
        """The last k entries of a Reshape target built by Concat(..., const, const) or a constant."""
        c = self.const(shape_name)
        if c is not None:
            return [int(x) for x in c.reshape(-1)[-k:]]
        n = self.prod(shape_name, "Concat")
        if n is None or len(n.input) < k:
            return None
        tail = []
        for i in n.input[-k:]:
            v = self.const(i)
            if v is None or v.size != 1:
                return None
            tail.append(int(v.reshape(-1)[0]))
        return tail


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def prune_and_sort(model: onnx.ModelProto, nodes: list | None = None, priority: list | None = None) -> None:
    """Sets the graph's nodes to `nodes` (default: its own), less those no graph output depends
    on (graph inputs always stay), drops unused initializers, and orders the nodes topologically,
    by `priority` (default: position) where the order is free."""
    g = model.graph
    nodes = list(g.node) if nodes is None else nodes
    priority = list(range(len(nodes))) if priority is None else priority
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    live, stack = set(), [producer[o.name] for o in g.output if o.name in producer]
    while stack:
        i = stack.pop()
        if i in live:
            continue
        live.add(i)
        stack.extend(producer[x] for x in nodes[i].input if x in producer)
    available = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    waiting = defaultdict(list)
    missing = {}
    heap = []
    for i in sorted(live):
        need = {x for x in nodes[i].input if x not in available and x in producer}
        missing[i] = len(need)
        for x in need:
            waiting[x].append(i)
        if not need:
            heapq.heappush(heap, (priority[i], i))
    order = []
    while heap:
        _, i = heapq.heappop(heap)
        order.append(i)
        for o in nodes[i].output:
            for j in waiting.pop(o, []):
                missing[j] -= 1
                if missing[j] == 0:
                    heapq.heappush(heap, (priority[j], j))
    if len(order) != len(live):
        raise RuntimeError("graph has a cycle after rewriting")
    out = [nodes[i] for i in order]
    used = {x for n in out for x in n.input} | {o.name for o in g.output}
    inits = [t for t in g.initializer if t.name in used]
    g.ClearField("node")
    g.node.extend(out)
    g.ClearField("initializer")
    g.initializer.extend(inits)


def ensure_ms_opset(model: onnx.ModelProto) -> None:
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def drop_noop_casts(model: onnx.ModelProto) -> int:
    """Removes Casts whose input already has the target type (the export's float->float Casts
    in front of every RMS norm and Softmax); ORT drops them at load too."""
    types = elem_types(model)
    outputs = {o.name for o in model.graph.output}
    nodes = list(model.graph.node)
    rename = {}
    dead = set()
    for k, n in enumerate(nodes):
        if n.op_type == "Cast" and types.get(n.input[0]) == attr(n, "to") and n.output[0] not in outputs:
            rename[n.output[0]] = n.input[0]
            dead.add(k)
    for n in nodes:
        for k, i in enumerate(n.input):
            while i in rename:
                i = rename[i]
            n.input[k] = i
    for o in model.graph.output:
        assert o.name not in rename
    prune_and_sort(model, [n for k, n in enumerate(nodes) if k not in dead])
    return len(dead)


# ---------------------------------------------------------------------------------------------
# Rewrites


def rewrite_skip_layernorm(model: onnx.ModelProto, cfg: dict) -> int:
    """RMS norm -> SimplifiedLayerNormalization (onnxruntime.transformers' fusion, after dropping
    T5's float->float Casts), then residual Add + norm -> SkipSimplifiedLayerNormalization."""
    import logging

    import onnxruntime.transformers  # noqa: F401  (puts its fusion modules on sys.path)
    from fusion_simplified_layernorm import FusionSimplifiedLayerNormalization  # type: ignore
    from onnx_model import OnnxModel  # type: ignore

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    drop_noop_casts(model)
    FusionSimplifiedLayerNormalization(OnnxModel(model)).apply()
    ensure_ms_opset(model)
    # The Add + norm step is done here rather than with onnxruntime.transformers'
    # FusionSkipSimplifiedLayerNormalization: that one needs its symbolic shape inference (sympy)
    # to prove both Add inputs have one shape, and it leaves the first residual Add alone (one of
    # its inputs is the embedding Gather, kept for BERT's EmbedLayerNormalization). Every T5
    # residual Add adds two [batch, seq, d_model] tensors; the kernel rejects any other shapes,
    # which the verification would catch. The residual sum stays available as the 4th output.
    nodes = list(model.graph.node)
    G = Graph(model, nodes)
    drop = set()
    for k, n in enumerate(nodes):
        add = G.prod(n.input[0], "Add") if n.op_type == "SimplifiedLayerNormalization" else None
        if add is None or len(add.input) != 2 or any(G.const(i) is not None or i in G.inputs for i in add.input):
            continue
        if attr(n, "axis", -1) != -1:
            continue
        others = [c for c in G.consumers[add.output[0]] if c is not n]
        outs = [n.output[0]] + (["", "", add.output[0]] if others or add.output[0] in G.outputs else [])
        nodes[k] = helper.make_node(
            "SkipSimplifiedLayerNormalization",
            [add.input[0], add.input[1], n.input[1]],
            outs,
            name=n.name + "/skip",
            domain="com.microsoft",
            epsilon=attr(n, "epsilon", 1e-6),
        )
        drop.add(id(add))
    prune_and_sort(model, [n for n in nodes if id(n) not in drop])
    return sum(n.op_type in FUSED_OPS["skip_layernorm"] for n in model.graph.node)


def _kv_source(G: Graph, t4: str, H: int, D: int):
    """Where a BNSH key/value tensor of an attention block comes from:
    ('input', None, None)            a graph input (cross-attention over the cache),
    ('past', past_name, x3d)         Concat(past input, Transpose(Reshape(x3d))) (self-attention with a cache),
    ('proj', None, x3d)              Transpose(Reshape(x3d)) (no cache)."""
    if t4 in G.inputs:
        return ("input", None, None)
    n = G.prod(t4)
    if n is None:
        return None
    if n.op_type == "Concat" and len(n.input) == 2 and attr(n, "axis") in (2, -2) and n.input[0] in G.inputs:
        x3d = _proj_3d(G, n.input[1], H, D)
        return ("past", n.input[0], x3d) if x3d else None
    x3d = _proj_3d(G, t4, H, D)
    return ("proj", None, x3d) if x3d else None


def _proj_3d(G: Graph, t4: str, H: int, D: int):
    """x3d when t4 = Transpose[0,2,1,3](Reshape(x3d, [b, -1, H, D]))."""
    t = G.prod(t4, "Transpose")
    if t is None or list(attr(t, "perm", [])) != [0, 2, 1, 3]:
        return None
    r = G.prod(t.input[0], "Reshape")
    if r is None or G.concat_tail(r.input[1], 2) != [H, D]:
        return None
    return r.input[0]


def rewrite_attention(model: onnx.ModelProto, cfg: dict, cache_inputs: bool = False) -> int:
    """Softmax attention blocks -> com.microsoft MultiHeadAttention (CPU kernel).

    Self-attention over a cache: by default the export's Concat nodes keep writing present.*
    and the attention reads those (BNSH key/value). With cache_inputs, the attention takes
    past_key/past_value and writes present.* itself (fewer nodes), but ORT 1.31's CPU kernel is
    slower that way at batch 32: 730 us against 450 us + ~100 us of Concat per layer
    (b=32, 8 heads, d_kv 64, 16 cached positions, one thread); bench/fused_profile.py compares."""
    H, D = int(cfg["num_heads"]), int(cfg["d_kv"])
    drop_noop_casts(model)
    nodes = list(model.graph.node)
    G = Graph(model, nodes)
    index = {id(n): i for i, n in enumerate(nodes)}
    removed: set[int] = set()
    added: list[tuple[onnx.NodeProto, float]] = []
    for sm in [n for n in nodes if n.op_type == "Softmax"]:
        if attr(sm, "axis", -1) != -1:
            continue
        add = G.prod(sm.input[0], "Add")
        if add is None or G.only_consumer(add.output[0]) is not sm:
            continue
        qk, bias = None, None
        for i in (0, 1):
            cand = G.prod(add.input[i], "MatMul")
            if cand is not None and G.only_consumer(cand.output[0]) is add:
                qk, bias = cand, add.input[1 - i]
                break
        if qk is None:
            continue
        q3d = _proj_3d(G, qk.input[0], H, D)
        tk = G.prod(qk.input[1], "Transpose")
        if q3d is None or tk is None:
            continue
        perm = list(attr(tk, "perm", []))
        k4 = k_src = None
        if perm == [0, 1, 3, 2]:
            k4 = tk.input[0]
            k_src = _kv_source(G, k4, H, D)
        elif perm == [0, 2, 3, 1]:
            rk = G.prod(tk.input[0], "Reshape")
            if rk is None or G.concat_tail(rk.input[1], 2) != [H, D]:
                continue
            k_src = ("proj", None, rk.input[0])
            for c in G.consumers.get(rk.output[0], []):
                if c.op_type == "Transpose" and list(attr(c, "perm", [])) == [0, 2, 1, 3]:
                    k4 = c.output[0]
        if k_src is None:
            continue
        av = G.only_consumer(sm.output[0])
        if av is None or av.op_type != "MatMul" or av.input[0] != sm.output[0]:
            continue
        v4 = av.input[1]
        v_src = _kv_source(G, v4, H, D)
        ta = G.only_consumer(av.output[0])
        if v_src is None or ta is None or ta.op_type != "Transpose" or list(attr(ta, "perm", [])) != [0, 2, 1, 3]:
            continue
        ro = G.only_consumer(ta.output[0])
        if ro is None or ro.op_type != "Reshape" or G.concat_tail(ro.input[1], 1) != [H * D]:
            continue

        def materialized(t4):
            # A BNSH tensor that exists anyway: a graph input or output, or used by other nodes.
            if t4 is None:
                return False
            return t4 in G.inputs or t4 in G.outputs or len(G.consumers.get(t4, [])) > 1

        drop = [sm, add, qk, av, ta, ro]
        outputs = [ro.output[0]]
        extra: list[tuple[onnx.NodeProto, float]] = []
        if k_src[0] == "past" and v_src[0] == "past" and cache_inputs:
            # The attention concatenates the cache itself and writes present.* (same names).
            # Other readers of present.* must not depend on the attention's output (the position
            # bias reads the cache length from Shape(present.0.decoder.key)): a Shape of it becomes
            # Shape(past) + [0, 0, new tokens, 0].
            others = [c for t4 in (k4, v4) for c in G.consumers.get(t4, []) if c is not tk and c is not av]
            if any(c.op_type != "Shape" or c.attribute for c in others):
                continue
            for c in others:
                past = k_src[1] if k4 in c.input else v_src[1]
                base = c.output[0]
                extra += [
                    (helper.make_node("Shape", [past], [base + "/past"], name=c.name + "/past"), index[id(c)]),
                    (helper.make_node("Shape", [q3d], [base + "/new"], name=c.name + "/new", start=1, end=2), index[id(c)]),
                    (
                        helper.make_node("Concat", ["fuse_graphs/zeros2", base + "/new", "fuse_graphs/zeros1"], [base + "/grow"], name=c.name + "/grow", axis=0),
                        index[id(c)],
                    ),
                    (helper.make_node("Add", [base + "/past", base + "/grow"], [base], name=c.name + "/total"), index[id(c)]),
                ]
                drop.append(c)
            inputs = [q3d, k_src[2], v_src[2], "", "", bias, k_src[1], v_src[1]]
            outputs += [k4, v4]
            drop += [G.prod(k4), G.prod(v4)]
        elif materialized(k4) and materialized(v4):
            # The BNSH key/value exist anyway (present.* outputs, the cross-attention cache).
            inputs = [q3d, k4, v4, "", "", bias]
        elif k_src[0] == "proj" and v_src[0] == "proj":
            inputs = [q3d, k_src[2], v_src[2], "", "", bias]
        else:
            continue
        node = helper.make_node(
            "MultiHeadAttention",
            inputs,
            outputs,
            name=ro.name.rsplit("/", 1)[0] + "/MultiHeadAttention" if "/" in ro.name else f"MultiHeadAttention_{len(added)}",
            domain="com.microsoft",
            num_heads=H,
            scale=1.0,
        )
        if any(id(n) in removed for n in drop):
            continue
        removed.update(id(n) for n in drop)
        added.append((node, index[id(ro)] - 0.5))
        added += extra
    if not added:
        return 0
    if any(n.op_type == "Concat" and "fuse_graphs/zeros2" in n.input for n, _ in added):
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(np.zeros(2, np.int64), "fuse_graphs/zeros2"),
                numpy_helper.from_array(np.zeros(1, np.int64), "fuse_graphs/zeros1"),
            ]
        )
    keep = [(n, index[id(n)]) for n in nodes if id(n) not in removed] + added
    ensure_ms_opset(model)
    prune_and_sort(model, [n for n, _ in keep], [p for _, p in keep])
    return sum(n.op_type == "MultiHeadAttention" for n, _ in added)


REWRITE_FNS = {"skip_layernorm": rewrite_skip_layernorm, "attention": rewrite_attention}


# ---------------------------------------------------------------------------------------------
# Inputs for verification: real activations from the unfused graphs


def session(model, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as the server
    opts.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def load_prompts(path: Path | None, vocab: int) -> list[list[int]]:
    path = path or ROOT / "tests/data/golden.json"
    if path.exists():
        cases = json.loads(path.read_text())["cases"]
        prompts = [[i % vocab for i in c["input_ids"]] for c in cases if c.get("input_ids")]
        if prompts:
            return prompts
    rng = np.random.default_rng(1)
    return [list(rng.integers(5, vocab, size=n)) + [1] for n in (5, 9, 14, 20)]


def run_dict(s: ort.InferenceSession, feeds: dict) -> dict:
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, feeds)))


def pasts_of(outs: dict, encoder_too: bool) -> dict:
    return {
        k.replace("present", "past_key_values"): v
        for k, v in outs.items()
        if k.startswith("present") and (encoder_too or ".decoder." in k)
    }


def sample_feeds(src: Path, cfg: dict, prompts: list[list[int]]) -> dict[str, list[dict]]:
    """Feeds for each graph, made by running the unfused graphs on real inputs."""
    vocab = int(cfg["vocab_size"])
    rng = np.random.default_rng(0)
    enc = session(src / "encoder_model.onnx")
    first = session(src / "decoder_model.onnx")
    names = {n: src / n for n in GRAPHS if (src / n).exists()}
    with_past = session(names["decoder_with_past_model.onnx"]) if "decoder_with_past_model.onnx" in names else None
    masked = session(names["decoder_with_past_masked.onnx"]) if "decoder_with_past_masked.onnx" in names else None
    stepper = with_past or masked
    feeds = defaultdict(list)

    batches = [prompts[:1], prompts[1:4] or prompts[:1], [list(rng.integers(5, vocab, size=40)) + [1], prompts[-1]]]
    for rows in batches:
        s = max(len(r) for r in rows)
        ids = np.zeros((len(rows), s), np.int64)
        mask = np.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        f_enc = {"input_ids": ids, "attention_mask": mask}
        feeds["encoder_model.onnx"].append(f_enc)
        hidden = enc.run(None, f_enc)[0]
        b = len(rows)
        start = np.zeros((b, 1), np.int64)
        f_first = {"input_ids": start, "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
        feeds["decoder_model.onnx"].append(f_first)
        # Several decoder tokens at once (the causal mask and relative distances in one call).
        longer = np.concatenate([start, rng.integers(5, vocab, size=(b, 3))], axis=1)
        feeds["decoder_model.onnx"].append({**f_first, "input_ids": longer})
        outs = run_dict(first, f_first)
        cross = pasts_of(outs, True)
        cross = {k: v for k, v in cross.items() if ".encoder." in k}
        past = pasts_of(outs, False)
        token = outs["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
        for step in range(6):
            f_step = {"input_ids": token, "encoder_attention_mask": mask, **past, **cross}
            if step in (0, 2, 5):
                if with_past is not None:
                    feeds["decoder_with_past_model.onnx"].append(f_step)
                if masked is not None:
                    plen = past["past_key_values.0.decoder.key"].shape[2]
                    ones = np.ones((b, plen + 1), np.int64)
                    feeds["decoder_with_past_masked.onnx"].append({**f_step, "decoder_attention_mask": ones})
                    if plen >= 2:
                        # A row that joined late: its first cache slots are zero padding, masked out.
                        m = ones.copy()
                        m[0, :2] = 0
                        padded = {k: v.copy() for k, v in past.items()}
                        for v in padded.values():
                            v[0, :, :2] = 0
                        feeds["decoder_with_past_masked.onnx"].append(
                            {**f_step, **padded, "decoder_attention_mask": m}
                        )
            sfeeds = dict(f_step)
            if stepper is masked:
                sfeeds["decoder_attention_mask"] = np.ones((b, past["past_key_values.0.decoder.key"].shape[2] + 1), np.int64)
            outs = run_dict(stepper, sfeeds)
            past = pasts_of(outs, False)
            token = outs["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
    return feeds


# ---------------------------------------------------------------------------------------------
# Verification


def compare(ref: ort.InferenceSession, new: ort.InferenceSession, feeds: list[dict], tol: dict) -> dict:
    """Max and mean abs difference per output over all feeds, and whether they stay within
    tolerance (fractions of max(1, max |reference output|))."""
    ref_in = sorted(i.name for i in ref.get_inputs())
    new_in = sorted(i.name for i in new.get_inputs())
    ref_out = [(o.name, o.type) for o in ref.get_outputs()]
    new_out = [(o.name, o.type) for o in new.get_outputs()]
    if ref_in != new_in or ref_out != new_out:
        return {"ok": False, "why": "inputs or outputs changed"}
    worst, ok = {}, True
    for f in feeds:
        a, b = run_dict(ref, f), run_dict(new, f)
        for k in a:
            if a[k].shape != b[k].shape:
                return {"ok": False, "why": f"{k}: shape {b[k].shape} != {a[k].shape}"}
            if not a[k].size:
                continue
            diff = np.abs(a[k].astype(np.float64) - b[k])
            d, mean = float(diff.max()), float(diff.mean())
            scale = max(1.0, float(np.abs(a[k]).max()))
            if not np.isfinite(d) or d > tol["max"] * scale or mean > tol["mean"] * scale:
                ok = False
            w = worst.setdefault(k, {"max_abs_diff": 0.0, "mean_abs_diff": 0.0, "scale": scale})
            w["max_abs_diff"], w["mean_abs_diff"] = max(w["max_abs_diff"], d), max(w["mean_abs_diff"], mean)
            w["scale"] = max(w["scale"], scale)
    main = worst.get("logits") or worst.get("last_hidden_state")
    present = [v["max_abs_diff"] for k, v in worst.items() if k.startswith("present")]
    return {
        "ok": ok,
        "max_abs_diff": max(v["max_abs_diff"] for v in worst.values()),
        "main_output": {"max_abs_diff": main["max_abs_diff"], "mean_abs_diff": main["mean_abs_diff"], "max_abs": main["scale"]} if main else None,
        "present_max_abs_diff": max(present) if present else None,
        "worst_relative": max(v["max_abs_diff"] / v["scale"] for v in worst.values()),
    }


def greedy(sessions, prompt: list[int], steps: int, masked: bool):
    """Greedy ids (EOS never chosen, as with min_new_tokens) and each step's top-2 margin."""
    enc, first, step = sessions
    ids = np.array([prompt], np.int64)
    mask = np.ones_like(ids)
    hidden = enc.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    outs = run_dict(first, {"input_ids": np.zeros((1, 1), np.int64), "encoder_hidden_states": hidden, "encoder_attention_mask": mask})
    past = pasts_of(outs, True)
    got, margins = [], []
    for _ in range(steps):
        scores = outs["logits"][0, -1].astype(np.float64)
        scores[1] = -np.inf
        top2 = np.sort(scores)[-2:]
        nxt = int(np.argmax(scores))
        got.append(nxt)
        margins.append(float(top2[1] - top2[0]))
        feeds = {"input_ids": np.array([[nxt]], np.int64), "encoder_attention_mask": mask, **past}
        if masked:
            feeds["decoder_attention_mask"] = np.ones((1, past["past_key_values.0.decoder.key"].shape[2] + 1), np.int64)
        outs = run_dict(step, feeds)
        past.update(pasts_of(outs, False))
    return got, margins


def greedy_agrees(ref_dir: Path, new_dir: Path, prompts, steps: int, tol_abs: float, step_graph: str) -> dict:
    masked = step_graph == "decoder_with_past_masked.onnx"

    def sessions(d):
        return tuple(session(d / n) for n in ("encoder_model.onnx", "decoder_model.onnx", step_graph))

    ref, new = sessions(ref_dir), sessions(new_dir)
    equal, tie_breaks, failures = 0, [], []
    for p in prompts:
        a, margins = greedy(ref, p, steps, masked)
        b, _ = greedy(new, p, steps, masked)
        if a == b:
            equal += 1
            continue
        k = next(i for i in range(steps) if a[i] != b[i])
        if margins[k] <= tol_abs:
            tie_breaks.append({"prompt": p, "step": k, "margin": margins[k]})
        else:
            failures.append({"prompt": p, "step": k, "margin": margins[k], "unfused": a, "fused": b})
    return {"prompts": len(prompts), "steps": steps, "equal": equal, "near_ties": tie_breaks, "failures": failures}


# ---------------------------------------------------------------------------------------------


# Protobuf cannot serialize 2 GiB: larger graphs (t5-large and up) keep their weights in an
# external data file, named as optimum names it.
EXTERNAL_ABOVE = 1_800_000_000


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) or 4 * int(np.prod(t.dims)) for t in model.graph.initializer)


def save(model: onnx.ModelProto, path: Path) -> None:
    if weight_bytes(model) > EXTERNAL_ABOVE:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + "_data")
    else:
        onnx.save(model, str(path))


def loadable(model: onnx.ModelProto, scratch: Path):
    """The model itself, or, when too large to serialize in memory, a file written for it."""
    if weight_bytes(model) <= EXTERNAL_ABOVE:
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)  # save() moves the weights of the proto it is given out to the file
    save(m, scratch)
    return scratch


def is_int8(src: Path, model: onnx.ModelProto) -> bool:
    return (src / "quantization.json").exists() or any(
        n.op_type in ("MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul") for n in model.graph.node
    )


def op_counts(model: onnx.ModelProto) -> dict:
    c = Counter(n.op_type for n in model.graph.node)
    return {op: c[op] for ops in FUSED_OPS.values() for op in ops if c[op]}


def fuse_dir(
    src: Path,
    out: Path,
    rewrites=REWRITES,
    greedy_check: bool = True,
    prompts_path: Path | None = None,
    steps: int = 16,
    cache_inputs: bool = False,
) -> dict:
    cfg = json.loads((src / "config.json").read_text())
    prompts = load_prompts(prompts_path, int(cfg["vocab_size"]))
    present = [n for n in GRAPHS if (src / n).exists()]
    if "encoder_model.onnx" not in present or "decoder_model.onnx" not in present:
        raise SystemExit(f"{src}: needs the split graphs (encoder_model.onnx, decoder_model.onnx, decoder_with_past_*.onnx)")
    if out.resolve() == src.resolve():
        raise SystemExit("OUT_DIR must differ from SRC_DIR")
    out.mkdir(parents=True, exist_ok=True)
    log(f"sampling inputs from the unfused graphs in {src}")
    feeds = sample_feeds(src, cfg, prompts)
    report = {"source": str(src), "onnxruntime": ort.__version__, "attention_cache_inputs": cache_inputs, "graphs": {}}
    for name in present:
        model = onnx.load(str(src / name))
        kind = "int8" if is_int8(src, model) else "fp32"
        tol = TOLERANCE[kind]
        ref = session(src / name)
        entry = {"weights": kind, "tolerance": tol, "applied": [], "rejected": {}, "checks": {}}
        current = model
        for rw in rewrites:
            cand = onnx.ModelProto()
            cand.CopyFrom(current)
            t0 = time.time()
            try:
                if rw == "attention" and REWRITE_FNS[rw] is rewrite_attention:
                    count = rewrite_attention(cand, cfg, cache_inputs)
                else:
                    count = REWRITE_FNS[rw](cand, cfg)
            except Exception as e:  # a rewrite that cannot handle a graph leaves it alone
                entry["rejected"][rw] = f"rewrite failed: {type(e).__name__}: {e}"
                continue
            if count == 0:
                entry["rejected"][rw] = "pattern not found"
                continue
            try:
                check = compare(ref, session(loadable(cand, out / f".check-{name}")), feeds[name], tol)
            except Exception as e:
                entry["rejected"][rw] = f"does not run: {type(e).__name__}: {str(e)[:300]}"
                continue
            check["fused_nodes"] = count
            check["seconds"] = round(time.time() - t0, 1)
            entry["checks"][rw] = check
            if check["ok"]:
                entry["applied"].append(rw)
                current = cand
            else:
                entry["rejected"][rw] = "outputs differ beyond tolerance"
            log(f"{name}: {rw}: {count} fused, max |diff| {check.get('max_abs_diff', float('nan')):.3g}, {'ok' if check['ok'] else 'REJECTED'}")
        entry["fused_ops"] = op_counts(current)
        save(current, out / name)
        for f in out.glob(".check-*"):
            f.unlink()
        report["graphs"][name] = entry
    for f in sorted(src.iterdir()):
        external = any(f.name.startswith(g + "_data") or f.name.startswith(g + ".data") for g in present)
        if f.name not in present and not external and f.is_file() and f.name != "fusion.json":
            shutil.copyfile(f, out / f.name)  # follows symlinks: a self-contained directory
    if greedy_check:
        report["greedy"] = {}
        for step_graph in ("decoder_with_past_model.onnx", "decoder_with_past_masked.onnx"):
            if step_graph in present:
                kind = report["graphs"][step_graph]["weights"]
                # The logits tolerance in absolute terms, at the logits' own scale.
                scale = report["graphs"][step_graph]["checks"].get("attention", {}).get("main_output") or {"max_abs": 1.0}
                tol_abs = TOLERANCE[kind]["max"] * max(1.0, scale["max_abs"])
                g = greedy_agrees(src, out, prompts, steps, tol_abs, step_graph)
                report["greedy"][step_graph] = g
                log(f"greedy over {step_graph}: {g['equal']}/{g['prompts']} prompts equal, {len(g['near_ties'])} near ties, {len(g['failures'])} failures")
        if any(g["failures"] for g in report["greedy"].values()):
            (out / "fusion.json").write_text(json.dumps(report, indent=1))
            raise SystemExit(f"greedy ids of the fused graphs differ from the unfused ones: see {out / 'fusion.json'}")
    (out / "fusion.json").write_text(json.dumps(report, indent=1))
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="exported model directory (split decoders; fp32 or int8)")
    p.add_argument("output", type=Path, help="directory to write the fused graphs to")
    p.add_argument("--rewrites", default=",".join(REWRITES), help=f"comma-separated subset of {','.join(REWRITES)}")
    p.add_argument("--no-greedy", action="store_true", help="skip the greedy-ids check on the golden prompts")
    p.add_argument("--prompts", type=Path, help="JSON with cases[].input_ids (default tests/data/golden.json)")
    p.add_argument("--steps", type=int, default=16, help="greedy steps per prompt in the check")
    p.add_argument(
        "--attention-cache-inputs",
        action="store_true",
        help="cached self-attention takes past_key/past_value and writes present.* itself (fewer nodes, slower kernel at large batches)",
    )
    args = p.parse_args()
    rewrites = [r for r in args.rewrites.split(",") if r]
    unknown = set(rewrites) - set(REWRITES)
    if unknown:
        p.error(f"unknown rewrites {sorted(unknown)}; known: {', '.join(REWRITES)}")
    report = fuse_dir(args.source, args.output, rewrites, not args.no_greedy, args.prompts, args.steps, args.attention_cache_inputs)
    for name, e in report["graphs"].items():
        log(f"{name}: applied {e['applied'] or 'nothing'} {e['fused_ops']}; rejected {e['rejected'] or 'nothing'}")


if __name__ == "__main__":
    main()
