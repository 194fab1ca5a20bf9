#!/usr/bin/env python3
"""profiled's encoder as an ONNX graph, for ONNX Runtime.

Builds the forward of docs/model-format.md from a version folder's
``model.safetensors`` + ``model.json``:

* ``standard``  — standard ONNX ops only (opset 20: LayerNormalization,
  MatMul, Softmax, Gelu with tanh approximation, ...);
* ``mha``       — ONNX Runtime's fused ``com.microsoft.MultiHeadAttention``
  for the attention of every layer (projections stay MatMul + Add)
  and ``com.microsoft.FastGelu`` (bias + tanh GELU) in the FFN;
* ``attention`` — ``com.microsoft.Attention`` (QKV projection + attention in
  one op) for the full layers, ``MultiHeadAttention`` for the last one,
  ``FastGelu`` in the FFN.

Graph inputs: ``x`` float32 [B, T, d] — each user's token embeddings (the
sum of table rows, tokenized by ``examples/reference_forward.py``, which is
independent of profiled's Rust tokenizer), **left**-padded to the longest
user of the batch; ``bias`` float32 [B, 1, T, T] — the additive
prefix-visible + causal mask (0 allowed, -1e9 elsewhere, padding masked);
``keep`` int32 [B, T, T] — the same mask as 1/0 (only the ``attention``
variant reads it). Output ``profile`` float32 [B, d_out], unit rows.

Like profiled's encoder, the last layer computes queries, attention, FFN and
the head only at the last position (keys and values for all tokens).

CLI (used by the parity test and by ``benches/peers/run``)::

    onnx_encoder.py parity MODEL_DIR USERS_JSON OUT_F32 [--variant standard]

writes ORT's profile of every user of USERS_JSON (a JSON array of
model-format inputs) as raw little-endian f32 rows, one user per ORT call.
"""

import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples"))
import reference_forward as rf  # noqa: E402

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

VARIANTS = ("standard", "mha", "attention")
OPSET = 20


def load_model(model_dir):
    with open(os.path.join(model_dir, "model.json"), encoding="utf-8") as f:
        meta = json.load(f)
    W = {k: v.astype(np.float32) for k, v in load_file(os.path.join(model_dir, "model.safetensors")).items()}
    return meta, W


class Embedder:
    """Caches the f64 tables once (embed_user converts per call otherwise)."""

    def __init__(self, meta, W):
        self.meta = meta
        self.W = {k: v.astype(np.float64) for k, v in W.items() if not k.startswith("layers.")}

    def __call__(self, inp):
        meta, Wd = self.meta, self.W
        schema = meta["schema"]
        prefix, events = rf.tokenize(meta, inp)
        P = len(prefix)
        rows = []
        for fi, (f, (kind, val)) in enumerate(zip(schema["fields"], prefix)):
            name = f["name"]
            if kind == "cat":
                v = Wd[f"fields.{name}.embedding"][val]
            elif kind == "num":
                v = Wd[f"fields.{name}.missing"] if val is None else val * Wd[f"fields.{name}.weight"]
            else:
                v = (
                    Wd[f"fields.{name}.missing"]
                    if val is None
                    else val.astype(np.float64) @ Wd[f"fields.{name}.embedding"]
                )
            rows.append(v + Wd["embed.type"][fi])
        item_genres = schema["items"]["genres"]
        for pos, (item_row, rating, gap) in enumerate(events):
            v = Wd["behaviour.item"][item_row].copy()
            if item_row >= rf.VOCAB_OFFSET:
                for g in item_genres[item_row - rf.VOCAB_OFFSET]:
                    v = v + Wd["behaviour.genre"][g]
            v = v + Wd["behaviour.rating"][rating] + Wd["behaviour.gap"][gap]
            v = v + Wd["behaviour.position"][pos] + Wd["embed.type"][P]
            rows.append(v)
        return np.stack(rows).astype(np.float32), P


def batch_inputs(embedded):
    """Left-padded ORT inputs for a list of (rows [T_i, d], P_i)."""
    B = len(embedded)
    T = max(x.shape[0] for x, _ in embedded)
    d = embedded[0][0].shape[1]
    x = np.zeros((B, T, d), dtype=np.float32)
    keep = np.zeros((B, T, T), dtype=np.int32)
    q = np.arange(T)[:, None]
    k = np.arange(T)[None, :]
    for b, (rows, P) in enumerate(embedded):
        n = rows.shape[0]
        o = T - n
        x[b, o:] = rows
        p = min(P, n)
        allowed = (k >= o) & ((k < o + p) | (k <= q))
        keep[b] = allowed
    bias = np.where(keep[:, None, :, :] == 1, 0.0, rf.MASK_VALUE).astype(np.float32)
    return {"x": x, "bias": bias, "keep": keep}


class Graph:
    def __init__(self):
        self.nodes = []
        self.inits = []
        self.n = 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, value, base="c"):
        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), nm))
        return nm

    def op(self, op_type, inputs, base=None, domain=None, n_out=1, **attrs):
        outs = [self.name(base or op_type.lower()) for _ in range(n_out)]
        kw = {"domain": domain} if domain else {}
        self.nodes.append(helper.make_node(op_type, inputs, outs, **kw, **attrs))
        return outs[0] if n_out == 1 else outs


def build(meta, W, variant="standard"):
    """An onnx.ModelProto of the encoder (see the module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant}")
    arch = meta["architecture"]
    d, H, L, dout = arch["d_model"], arch["heads"], arch["layers"], arch["d_out"]
    dh = d // H
    eps = float(arch["ln_eps"])
    g = Graph()
    f32 = lambda a: np.ascontiguousarray(np.asarray(a, dtype=np.float32))  # noqa: E731
    i64 = lambda a: np.asarray(a, dtype=np.int64)  # noqa: E731

    def linear(x, wname, bname):
        y = g.op("MatMul", [x, g.const(f32(W[wname].T), "w")])
        return g.op("Add", [y, g.const(f32(W[bname]), "b")])

    def ln(x, prefix):
        return g.op(
            "LayerNormalization",
            [x, g.const(f32(W[prefix + ".weight"]), "g"), g.const(f32(W[prefix + ".bias"]), "b")],
            axis=-1,
            epsilon=eps,
        )

    def heads(x):  # [B, S, d] -> [B, H, S, dh]
        r = g.op("Reshape", [x, g.const(i64([0, 0, H, dh]), "shape")])
        return g.op("Transpose", [r], perm=[0, 2, 1, 3])

    def merge(x):  # [B, H, S, dh] -> [B, S, d]
        t = g.op("Transpose", [x], perm=[0, 2, 1, 3])
        return g.op("Reshape", [t, g.const(i64([0, 0, d]), "shape")])

    def last_row(x, axis):
        return g.op("Slice", [x, g.const(i64([-1])), g.const(i64([2**62])), g.const(i64([axis]))])

    x = "x"
    bias = "bias"
    bias_last = last_row(bias, 2)  # [B, 1, 1, T]
    for l in range(L):
        p = f"layers.{l}"
        final = l == L - 1
        h = ln(x, p + ".ln1")
        hq = last_row(h, 1) if final else h
        resid = last_row(x, 1) if final else x
        if variant == "attention" and not final:
            wqkv = np.concatenate([W[f"{p}.attn.{n}.weight"].T for n in "qkv"], axis=1)
            bqkv = np.concatenate([W[f"{p}.attn.{n}.bias"] for n in "qkv"])
            ctx = g.op(
                "Attention",
                [h, g.const(f32(wqkv), "wqkv"), g.const(f32(bqkv), "bqkv"), "keep"],
                domain="com.microsoft",
                num_heads=H,
                mask_filter_value=rf.MASK_VALUE,
            )
        elif variant in ("mha", "attention"):
            q = linear(hq, p + ".attn.q.weight", p + ".attn.q.bias")
            k = linear(h, p + ".attn.k.weight", p + ".attn.k.bias")
            v = linear(h, p + ".attn.v.weight", p + ".attn.v.bias")
            ctx = g.op(
                "MultiHeadAttention",
                [q, k, v, "", "", bias_last if final else bias],
                domain="com.microsoft",
                num_heads=H,
            )
        else:
            q = heads(linear(hq, p + ".attn.q.weight", p + ".attn.q.bias"))
            k = heads(linear(h, p + ".attn.k.weight", p + ".attn.k.bias"))
            v = heads(linear(h, p + ".attn.v.weight", p + ".attn.v.bias"))
            kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
            s = g.op("Mul", [g.op("MatMul", [q, kt]), g.const(f32(1.0 / math.sqrt(dh)))])
            s = g.op("Add", [s, bias_last if final else bias])
            a = g.op("Softmax", [s], axis=-1)
            ctx = merge(g.op("MatMul", [a, v]))
        x = g.op("Add", [resid, linear(ctx, p + ".attn.o.weight", p + ".attn.o.bias")])
        h2 = ln(x, p + ".ln2")
        if variant == "standard":
            up = g.op(
                "Gelu", [linear(h2, p + ".ffn.up.weight", p + ".ffn.up.bias")], approximate="tanh"
            )
        else:
            up = g.op(
                "FastGelu",
                [
                    g.op("MatMul", [h2, g.const(f32(W[p + ".ffn.up.weight"].T), "w")]),
                    g.const(f32(W[p + ".ffn.up.bias"]), "b"),
                ],
                domain="com.microsoft",
            )
        x = g.op("Add", [x, linear(up, p + ".ffn.down.weight", p + ".ffn.down.bias")])
    y = ln(x, "final_norm")  # [B, 1, d]
    u = linear(y, "head.weight", "head.bias")
    u = g.op("Reshape", [u, g.const(i64([-1, dout]), "shape")])
    ss = g.op("ReduceSum", [g.op("Mul", [u, u]), g.const(i64([1]))], keepdims=1)
    norm = g.op("Sqrt", [g.op("Add", [ss, g.const(f32(1e-24))])])
    g.nodes.append(helper.make_node("Div", [u, norm], ["profile"]))

    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", d]),
        helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["B", 1, "T", "T"]),
    ]
    if variant == "attention":
        inputs.append(helper.make_tensor_value_info("keep", TensorProto.INT32, ["B", "T", "T"]))
    out = [helper.make_tensor_value_info("profile", TensorProto.FLOAT, ["B", dout])]
    graph = helper.make_graph(g.nodes, f"profiled-{variant}", inputs, out, g.inits)
    opsets = [helper.make_opsetid("", OPSET)]
    if variant != "standard":
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="profiled benches/peers")
    model.ir_version = 9
    if variant == "standard":
        onnx.checker.check_model(model)
    return model


def session(model, threads, opt=True):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if threads > 1:
        # Spinning pool threads cost ORT 2-3x at 2 threads on the shared
        # 2-core machine (measured); without spinning it is at its best.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if opt else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def feeds(sess, inputs):
    names = {i.name for i in sess.get_inputs()}
    return {k: v for k, v in inputs.items() if k in names}


def parity_main(argv):
    import argparse

    ap = argparse.ArgumentParser(prog="onnx_encoder.py parity")
    ap.add_argument("model_dir")
    ap.add_argument("users_json")
    ap.add_argument("out_f32")
    ap.add_argument("--variant", default="standard", choices=VARIANTS)
    a = ap.parse_args(argv)
    meta, W = load_model(a.model_dir)
    with open(a.users_json, encoding="utf-8") as f:
        users = json.load(f)
    sess = session(build(meta, W, a.variant), 1)
    emb = Embedder(meta, W)
    out = np.zeros((len(users), meta["architecture"]["d_out"]), dtype=np.float32)
    for i, u in enumerate(users):
        inp = batch_inputs([emb(u)])
        out[i] = sess.run(["profile"], feeds(sess, inp))[0][0]
    out.astype("<f4").tofile(a.out_f32)
    print(json.dumps({"users": len(users), "variant": a.variant, "out": a.out_f32}))


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "parity":
        parity_main(sys.argv[2:])
    else:
        print(__doc__)
        sys.exit(2)
