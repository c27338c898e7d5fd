#!/usr/bin/env python3
"""Judge: every MODEL passes onnx.checker.check_model(path, full_check=True).

Why: an independent validity check of what onnx-opt writes (types, shapes,
opset rules), from the reference implementation. The path form is used so
external data and >2 GB models work. Exit 0 = all valid.

    .venv/bin/python -m tests.judges.check MODEL.onnx [MODEL.onnx ...]
"""
import argparse
import sys

import onnx


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    failed = 0
    for path in args.models:
        try:
            onnx.checker.check_model(path, full_check=True)
            print(f"ok   {path}")
        except Exception as e:  # checker raises several exception types
            msg = " ".join(str(e).split())
            print(f"FAIL {path}: {type(e).__name__}: {msg[:500]}")
            failed += 1
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
