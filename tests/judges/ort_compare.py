#!/usr/bin/env python3
"""Judge: two models compute the same outputs in onnxruntime.

Why: the reference check that a rewrite by onnx-opt preserves semantics. Both
models run on CPU, 1 thread, with ALL graph optimisations disabled, so the
models are compared as written. Inputs come from --inputs (npz, keys = input
names, e.g. from models/make_inputs.py), else are seeded random (floats ~N(0,1),
ints in [0,16), bools); symbolic dims are pinned by --input-shape, else 1.
Outputs are matched by name. --exact requires bit-identical arrays; otherwise
each output must satisfy max|a-b| <= rtol * max|a|. One line per output;
exit 0 = all outputs match.

    .venv/bin/python -m tests.judges.ort_compare A.onnx B.onnx [--inputs X.npz]
        [--seed S] [--input-shape x=1,3,64,64 ...] [--exact | --rtol 1e-5]
"""
import argparse
import sys

import numpy as np

from tests.pyhelpers import session as ort_session

DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
    "tensor(uint16)": np.uint16, "tensor(int32)": np.int32, "tensor(uint32)": np.uint32,
    "tensor(int64)": np.int64, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
}


def fail(msg):
    print(f"FAIL {msg}")
    sys.exit(1)


def session(path):
    try:
        # Log level 4: errors are reported by us, in one line.
        return ort_session(path, optimized=False, log_level=4)
    except Exception as e:
        fail(f"load {path}: {' '.join(str(e).split())[:400]}")


def random_inputs(sess, shapes, seed):
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in sess.get_inputs():
        if i.type not in DTYPES:
            fail(f"input {i.name}: unsupported type {i.type}")
        dtype = DTYPES[i.type]
        shape = shapes.get(i.name) or [d if isinstance(d, int) and d >= 0 else 1 for d in i.shape]
        if np.issubdtype(dtype, np.floating):
            a = rng.standard_normal(shape)
        elif dtype == np.bool_:
            a = rng.integers(0, 2, shape)
        else:
            a = rng.integers(0, 16, shape)
        feeds[i.name] = np.asarray(a).astype(dtype)
    return feeds


def compare(name, a, b, exact, rtol):
    """Return (ok, description) for one output."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False, f"shape/dtype {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"
    if exact:
        same = a.tobytes() == b.tobytes()
        return same, f"{a.dtype}{list(a.shape)} " + ("bit-identical" if same else
                                                     f"differ in {int((a != b).sum())} elements")
    if a.dtype == np.bool_ or a.size == 0:
        same = np.array_equal(a, b)
        return same, f"{a.dtype}{list(a.shape)} " + ("equal" if same else "differ")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    nan_a, nan_b = np.isnan(a64), np.isnan(b64)
    if (nan_a != nan_b).any():
        return False, f"NaN in {int(nan_a.sum())} vs {int(nan_b.sum())} elements"
    ok_mask = ~nan_a
    scale = float(np.abs(a64[ok_mask]).max()) if ok_mask.any() else 0.0
    err = float(np.abs(a64 - b64)[ok_mask].max()) if ok_mask.any() else 0.0
    if np.isinf(a64).any() or np.isinf(b64).any():
        inf_same = np.array_equal(a64[np.isinf(a64)], b64[np.isinf(a64)]) and \
            np.isinf(a64).sum() == np.isinf(b64).sum()
        finite = ok_mask & ~np.isinf(a64)
        scale = float(np.abs(a64[finite]).max()) if finite.any() else 0.0
        err = float(np.abs(a64 - b64)[finite].max()) if finite.any() else 0.0
        if not inf_same:
            return False, "inf in different places"
    ok = err <= rtol * scale
    rel = err / scale if scale else (0.0 if err == 0 else float("inf"))
    return ok, f"{a.dtype}{list(a.shape)} max|a-b|={err:.3g} max|a|={scale:.3g} rel={rel:.3g} (rtol {rtol:g})"


def parse_shape(s):
    try:
        name, dims = s.split("=", 1)
        return name, [int(d) for d in dims.split(",") if d]
    except ValueError:
        fail(f"bad --input-shape {s!r}, want NAME=D,D,...")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--inputs", help="npz with one array per model input")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--input-shape", action="extend", nargs="+", default=[], metavar="NAME=D,D,...")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--exact", action="store_true", help="require bit-identical outputs")
    g.add_argument("--rtol", type=float, default=1e-5, help="max|a-b| <= rtol*max|a| (default 1e-5)")
    args = ap.parse_args()

    sa, sb = session(args.a), session(args.b)
    names_a = sorted(i.name for i in sa.get_inputs())
    names_b = sorted(i.name for i in sb.get_inputs())
    if names_a != names_b:
        fail(f"inputs differ: {names_a} vs {names_b}")
    if args.inputs:
        with np.load(args.inputs) as z:
            feeds = {k: z[k] for k in z.files}
        if sorted(feeds) != names_a:
            fail(f"{args.inputs} has keys {sorted(feeds)}, models want {names_a}")
    else:
        feeds = random_inputs(sa, dict(map(parse_shape, args.input_shape)), args.seed)

    outs_a = [o.name for o in sa.get_outputs()]
    outs_b = [o.name for o in sb.get_outputs()]
    if sorted(outs_a) != sorted(outs_b):
        fail(f"outputs differ: {outs_a} vs {outs_b}")
    try:
        ra = dict(zip(outs_a, sa.run(None, feeds)))
    except Exception as e:
        fail(f"run {args.a}: {' '.join(str(e).split())[:400]}")
    try:
        rb = dict(zip(outs_b, sb.run(None, feeds)))
    except Exception as e:
        fail(f"run {args.b}: {' '.join(str(e).split())[:400]}")

    bad = 0
    for name in outs_a:
        ok, desc = compare(name, np.asarray(ra[name]), np.asarray(rb[name]), args.exact, args.rtol)
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {desc}")
        bad += not ok
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
