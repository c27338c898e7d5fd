#!/usr/bin/env python3
"""Judge: two .onnx files hold the same ModelProto, field by field.

Why: checks that onnx-opt's read/write round trip (or a no-op pipeline) is
lossless. External data is loaded (and inlined) first, so a model saved with
external data equals the same model saved inline. Equality is decided on
SerializeToString(deterministic=True); on mismatch the first differing field
path (e.g. graph.node[3](conv).attribute[0](pads).ints[1]) is printed.
Exit 0 = equal.

    .venv/bin/python -m tests.judges.proto_equal A.onnx B.onnx
"""
import argparse
import os
import struct
import sys

import onnx
from google.protobuf.descriptor import FieldDescriptor
from onnx import external_data_helper as ext


def load(path):
    """Load a model with its external data inlined, as if it had been saved inline."""
    m = onnx.load(path, load_external_data=False)
    for t in ext._get_all_tensors(m):
        if ext.uses_external_data(t):
            ext.load_external_data_for_tensor(t, os.path.dirname(path))
            t.ClearField("data_location")
            t.ClearField("external_data")
    return m


def label(x, y, i):
    """Path element for repeated element i; names the element by its `name` field."""
    if "name" not in x.DESCRIPTOR.fields_by_name or not (x.name or y.name):
        return f"[{i}]"
    return f"[{i}]({x.name})" if x.name == y.name else f"[{i}]({x.name}|{y.name})"


def is_repeated(field):
    if hasattr(field, "is_repeated"):  # protobuf >= 6 (label is gone in 7)
        return field.is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED


def same_scalar(x, y):
    if isinstance(x, float) and isinstance(y, float):
        return struct.pack("<d", x) == struct.pack("<d", y)
    return x == y


def show(v):
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    s = repr(v)
    return s if len(s) < 80 else s[:77] + "..."


def first_diff(a, b, path):
    """Return a description of the first difference between messages a and b, or None."""
    fa, fb = dict(a.ListFields()), dict(b.ListFields())
    for field in a.DESCRIPTOR.fields:
        p = f"{path}.{field.name}" if path else field.name
        if (field in fa) != (field in fb):
            return f"{p}: set only in {'A' if field in fa else 'B'}"
        if field not in fa:
            continue
        va, vb = fa[field], fb[field]
        is_msg = field.type == FieldDescriptor.TYPE_MESSAGE
        if is_repeated(field):
            for i, (x, y) in enumerate(zip(va, vb)):
                d = first_diff(x, y, p + label(x, y, i)) if is_msg else \
                    (None if same_scalar(x, y) else f"{p}[{i}]: {show(x)} vs {show(y)}")
                if d:
                    return d
            if len(va) != len(vb):
                return f"{p}: {len(va)} vs {len(vb)} elements"
        elif is_msg:
            d = first_diff(va, vb, p)
            if d:
                return d
        elif isinstance(va, bytes) and va != vb:
            k = next((i for i, (x, y) in enumerate(zip(va, vb)) if x != y), min(len(va), len(vb)))
            return f"{p}: {len(va)} vs {len(vb)} bytes, first difference at byte {k}"
        elif not same_scalar(va, vb):
            return f"{p}: {show(va)} vs {show(vb)}"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    try:
        ma, mb = load(args.a), load(args.b)
    except Exception as e:
        print(f"FAIL load: {type(e).__name__}: {' '.join(str(e).split())[:400]}")
        sys.exit(1)
    if ma.SerializeToString(deterministic=True) == mb.SerializeToString(deterministic=True):
        print(f"ok   {args.a} == {args.b}")
        sys.exit(0)
    d = first_diff(ma, mb, "") or "serialisations differ but no field difference found"
    print(f"FAIL {args.a} != {args.b}: {d}")
    sys.exit(1)


if __name__ == "__main__":
    main()
