#!/usr/bin/env python3
"""Reference forward pass of a profiled model: numpy + safetensors only.

Reads ``model.safetensors`` and ``model.json`` of a model version folder,
tokenizes every golden example's input exactly as ``docs/model-format.md``
specifies, computes its profile vector and compares it with the stored one.

    python examples/reference_forward.py models/ml-100k/1 [--min-cosine 0.9999]

Prints one line per golden example and, as the last line, a JSON object
``{"examples": n, "min_cosine": c, "mean_cosine": m}``. Exits with status 1
if any cosine is below ``--min-cosine``.

This file is the executable form of the format contract: anyone producing
model files (e.g. from PyTorch) can check them with it.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file

MISSING, OOV, VOCAB_OFFSET = 0, 1, 2
MASK_VALUE = -1e9


class FeatureError(ValueError):
    pass


def as_text(v):
    """String form of a field value (integral numbers without a decimal point)."""
    if isinstance(v, str):
        return v
    x = float(v)
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return np.format_float_positional(x, unique=True, trim="-")


def parse_number(field, v):
    """A finite number, or None for an empty string; error otherwise."""
    if isinstance(v, str):
        if v.strip() == "":
            return None
        try:
            x = float(v.strip())
        except ValueError:
            raise FeatureError(f"{field}: `{v}` is not a number")
    else:
        x = float(v)
    if not math.isfinite(x):
        raise FeatureError(f"{field}: value {x} is not finite")
    return x


def categorical_value(field, transform, v):
    if not isinstance(v, str) and not math.isfinite(float(v)):
        raise FeatureError(f"{field}: value is not finite")
    kind = transform["type"]
    if kind == "identity":
        s = as_text(v)
        return s if s != "" else None
    if kind == "prefix":
        s = as_text(v)[: transform["length"]]
        return s if s != "" else None
    if kind == "bucket":
        x = parse_number(field, v)
        if x is None:
            return None
        i = sum(1 for e in transform["edges"] if e <= x)
        return transform["labels"][i]
    raise FeatureError(f"{field}: unknown transform {kind}")


def round_half_away(r):
    return math.copysign(math.floor(abs(r) + 0.5), r)


def tokenize(meta, inp):
    """Returns (prefix tokens, behaviour tokens) per docs/model-format.md."""
    schema = meta["schema"]
    beh = schema["behaviour"]
    rmin, rmax = beh["rating_min"], beh["rating_max"]
    item_index = {iid: k for k, iid in enumerate(schema["items"]["ids"])}
    item_genres = schema["items"]["genres"]
    n_genres = len(schema["genres"])
    fields = inp.get("fields", {}) or {}
    columns = {f["source"] for f in schema["fields"] if not f["source"].startswith("events.")}
    for k in fields:
        if k not in columns:
            raise FeatureError(f"unknown field {k}")
    events = []
    for e in inp.get("events", []) or []:
        r = e.get("rating")
        if r is not None and not math.isfinite(float(r)):
            raise FeatureError("events: rating not finite")
        events.append((item_index.get(e["item"]), int(e["timestamp"]), r))
    events.sort(key=lambda e: e[1])  # stable: ties keep the given order

    def rating_weight(r):
        if r is None:
            return (rmax - rmin) / 2.0 + 1.0
        return min(max(float(r), rmin), rmax) - rmin + 1.0

    prefix = []
    for f in schema["fields"]:
        kind = f["kind"]
        src = f["source"]
        if kind["type"] == "categorical":
            if src not in fields:
                prefix.append(("cat", MISSING))
                continue
            val = categorical_value(src, kind["transform"], fields[src])
            if val is None:
                prefix.append(("cat", MISSING))
            else:
                vocab = {s: VOCAB_OFFSET + i for i, s in enumerate(kind["vocab"])}
                prefix.append(("cat", vocab.get(val, OOV)))
        elif kind["type"] == "numeric":
            if src == "events.count":
                x = float(len(events))
            elif src in fields:
                x = parse_number(src, fields[src])
            else:
                x = None
            if x is None:
                prefix.append(("num", None))
                continue
            if kind["transform"] == "log1p":
                if x <= -1:
                    raise FeatureError(f"{src}: value <= -1")
                x = math.log1p(x)
            z = (x - kind["mean"]) / kind["std"]
            z = min(max(z, -kind["clip"]), kind["clip"])
            prefix.append(("num", float(np.float32(z))))
        elif kind["type"] == "preference":
            w = np.zeros(n_genres, dtype=np.float64)
            total = 0.0
            for item, _, r in events:
                if item is not None:
                    rho = rating_weight(r)
                    for g in item_genres[item]:
                        w[g] += rho
                        total += rho
            if total > 0:
                prefix.append(("pref", (w / total).astype(np.float32)))
            else:
                prefix.append(("pref", None))
        else:
            raise FeatureError(f"unknown field kind {kind['type']}")

    max_events = beh["max_events"]
    nb = beh["gap_buckets"]
    start = max(0, len(events) - max_events)
    tokens = []
    for i in range(start, len(events)):
        item, t, r = events[i]
        if i == 0:
            gap = 0
        else:
            g = max(0, t - events[i - 1][1])
            gap = 1 + min((g + 1).bit_length() - 1, nb - 2)
        if r is None:
            rating = 0
        else:
            rating = 1 + int(min(max(round_half_away(float(r)), rmin), rmax)) - rmin
        tokens.append((OOV if item is None else VOCAB_OFFSET + item, rating, gap))
    if not prefix and not tokens:
        raise FeatureError("no tokens")
    return prefix, tokens


def layer_norm(x, w, b, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def linear(W, name, x):
    return x @ W[name + ".weight"].T + W[name + ".bias"]


def profile(meta, W, inp):
    arch = meta["architecture"]
    schema = meta["schema"]
    d, h = arch["d_model"], arch["heads"]
    dh = d // h
    eps = arch["ln_eps"]
    prefix, events = tokenize(meta, inp)
    P = len(prefix)
    rows = []
    item_genres = schema["items"]["genres"]
    for fi, (f, (kind, val)) in enumerate(zip(schema["fields"], prefix)):
        name = f["name"]
        if kind == "cat":
            v = W[f"fields.{name}.embedding"][val]
        elif kind == "num":
            v = W[f"fields.{name}.missing"] if val is None else val * W[f"fields.{name}.weight"]
        else:
            v = (
                W[f"fields.{name}.missing"]
                if val is None
                else val.astype(np.float64) @ W[f"fields.{name}.embedding"]
            )
        rows.append(v + W["embed.type"][fi])
    for pos, (item_row, rating, gap) in enumerate(events):
        v = W["behaviour.item"][item_row].copy()
        if item_row >= VOCAB_OFFSET:
            for g in item_genres[item_row - VOCAB_OFFSET]:
                v = v + W["behaviour.genre"][g]
        v = v + W["behaviour.rating"][rating] + W["behaviour.gap"][gap]
        v = v + W["behaviour.position"][pos] + W["embed.type"][P]
        rows.append(v)
    x = np.stack(rows)
    T = x.shape[0]
    q_idx = np.arange(T)[:, None]
    k_idx = np.arange(T)[None, :]
    allowed = (k_idx < P) | (k_idx <= q_idx)
    mask = np.where(allowed, 0.0, MASK_VALUE)
    for l in range(arch["layers"]):
        p = f"layers.{l}"
        xn = layer_norm(x, W[p + ".ln1.weight"], W[p + ".ln1.bias"], eps)
        q = linear(W, p + ".attn.q", xn).reshape(T, h, dh).transpose(1, 0, 2)
        k = linear(W, p + ".attn.k", xn).reshape(T, h, dh).transpose(1, 0, 2)
        v = linear(W, p + ".attn.v", xn).reshape(T, h, dh).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh) + mask
        s = s - s.max(axis=-1, keepdims=True)
        a = np.exp(s)
        a = a / a.sum(axis=-1, keepdims=True)
        ctx = (a @ v).transpose(1, 0, 2).reshape(T, d)
        x = x + linear(W, p + ".attn.o", ctx)
        xn = layer_norm(x, W[p + ".ln2.weight"], W[p + ".ln2.bias"], eps)
        x = x + linear(W, p + ".ffn.down", gelu_tanh(linear(W, p + ".ffn.up", xn)))
    x = layer_norm(x, W["final_norm.weight"], W["final_norm.bias"], eps)
    y = linear(W, "head", x[-1])
    return y / math.sqrt(float(y @ y) + 1e-24)


def item_vectors(meta, W):
    """Unit item vectors [n_items, d_out] (for scoring; not needed for profiles)."""
    schema = meta["schema"]
    m = np.zeros((len(schema["items"]["ids"]), len(schema["genres"])))
    for i, gs in enumerate(schema["items"]["genres"]):
        m[i, gs] = 1.0
    v = W["items.embedding"] + m @ W["items.genre"]
    return v / np.sqrt((v * v).sum(axis=1, keepdims=True) + 1e-24)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--min-cosine", type=float, default=0.9999)
    args = ap.parse_args()
    with open(os.path.join(args.model_dir, "model.json"), encoding="utf-8") as f:
        meta = json.load(f)
    W = {k: v.astype(np.float64) for k, v in load_file(os.path.join(args.model_dir, "model.safetensors")).items()}
    cosines = []
    for i, g in enumerate(meta["golden"]):
        got = profile(meta, W, g["input"])
        want = np.asarray(g["profile"], dtype=np.float64)
        cos = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want) + 1e-30))
        cosines.append(cos)
        print(f"golden {i:2d} cos {cos:.7f}  {g.get('note', '')}")
    ok = bool(cosines) and min(cosines) >= args.min_cosine
    summary = {
        "examples": len(cosines),
        "min_cosine": min(cosines) if cosines else None,
        "mean_cosine": sum(cosines) / len(cosines) if cosines else None,
        "ok": ok,
    }
    print(json.dumps(summary))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
