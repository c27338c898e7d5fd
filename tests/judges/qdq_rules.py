#!/usr/bin/env python3
"""Judge: a QDQ model follows TensorRT's explicit-quantization rules.

Why: TensorRT builds an int8 engine from Q/DQ nodes only when they follow its
rules; a model that breaks them fails to build or silently runs in float.
Checked statically, without TensorRT (not installable here):
  - default-domain opset >= 13 when the model holds QuantizeLinear or
    DequantizeLinear (per-axis DequantizeLinear; a float model is not held
    to it);
  - every QuantizeLinear/DequantizeLinear has its scale and zero point as
    initializers; scales finite and > 0; zero points all 0 (symmetric);
    8-bit integer types only (no blocked or 4-bit forms);
  - every QuantizeLinear feeds DequantizeLinears with the same scale and zero point;
  - a weight (an int8 initializer behind a DequantizeLinear) lies in [-127, 127]
    and is quantized per tensor or on its consumer's output-channel axis
    (Conv 0, ConvTranspose 1, Gemm 0 with transB else 1, MatMul the last);
  - biases (input 2 of Conv/ConvTranspose/Gemm) stay float, not dequantized;
  - every Conv/ConvTranspose/Gemm/MatMul whose weight is dequantized also reads
    a dequantized activation (or the weight-only mode was asked for).
Exit 0 = no violation.

    .venv/bin/python -m tests.judges.qdq_rules [--weight-only] MODEL.onnx [...]
"""
import argparse
import sys

import numpy as np
import onnx
from onnx import numpy_helper

WEIGHTED = {"Conv": None, "ConvTranspose": None, "Gemm": None, "MatMul": None}


def output_axis(node, rank):
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return rank - 1  # MatMul


def violations(model, weight_only=False):
    found = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    if opset < 13 and qdq:
        found.append(f"opset {opset} < 13")
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def qparams(n):
        if len(n.input) < 3 or n.input[2] == "":
            found.append(f"{n.name or n.output[0]}: {n.op_type} without an explicit zero point")
            return None
        if n.input[1] not in inits or n.input[2] not in inits:
            found.append(f"{n.name or n.output[0]}: scale/zero point are not initializers")
            return None
        scale = numpy_helper.to_array(inits[n.input[1]])
        zero = numpy_helper.to_array(inits[n.input[2]])
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            found.append(f"{n.name or n.output[0]}: scale not finite and positive")
        if zero.dtype not in (np.int8, np.uint8):
            found.append(f"{n.name or n.output[0]}: zero point of type {zero.dtype}, not 8-bit")
        if (zero != 0).any():
            found.append(f"{n.name or n.output[0]}: zero point not 0 (asymmetric)")
        if any(a.name == "block_size" and a.i for a in n.attribute):
            found.append(f"{n.name or n.output[0]}: blocked quantization")
        return scale, zero

    for n in g.node:
        if n.op_type == "QuantizeLinear":
            mine = qparams(n)
            for c in consumers.get(n.output[0], []):
                if c.op_type != "DequantizeLinear":
                    found.append(f"{n.name}: QuantizeLinear feeds {c.op_type}, not DequantizeLinear")
                elif mine is not None and c.input[1:3] != n.input[1:3]:
                    theirs = qparams(c)
                    if theirs is not None and not all(
                        np.array_equal(a, b) for a, b in zip(mine, theirs)
                    ):
                        found.append(f"{n.name}: its DequantizeLinear uses other scales")
        elif n.op_type == "DequantizeLinear":
            qparams(n)

    for n in g.node:
        if n.op_type not in WEIGHTED or len(n.input) < 2:
            continue
        w = producer.get(n.input[1])
        weight_dq = w is not None and w.op_type == "DequantizeLinear" and w.input[0] in inits
        if weight_dq:
            q = numpy_helper.to_array(inits[w.input[0]])
            scale = numpy_helper.to_array(inits[w.input[1]])
            if q.dtype != np.int8:
                found.append(f"{n.name}: weight stored as {q.dtype}, not int8")
            elif q.min() < -127:
                found.append(f"{n.name}: weight uses -128 (TensorRT's range is [-127, 127])")
            if scale.size > 1:
                axis = next((a.i for a in w.attribute if a.name == "axis"), 1)
                axis = axis % q.ndim
                want = output_axis(n, q.ndim)
                if axis != want:
                    found.append(f"{n.name}: weight scales on axis {axis}, output channels are on {want}")
                elif scale.size != q.shape[axis]:
                    found.append(f"{n.name}: {scale.size} scales for {q.shape[axis]} channels")
            x = producer.get(n.input[0])
            if not weight_only and (x is None or x.op_type != "DequantizeLinear"):
                found.append(f"{n.name}: int8 weight but float input")
        if n.op_type != "MatMul" and len(n.input) > 2 and n.input[2]:
            b = producer.get(n.input[2])
            if b is not None and b.op_type == "DequantizeLinear":
                found.append(f"{n.name}: bias is dequantized (TensorRT wants it float)")
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weight-only", action="store_true")
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    failed = 0
    for path in args.models:
        bad = violations(onnx.load(path), args.weight_only)
        if bad:
            failed += 1
            print(f"FAIL {path}: {len(bad)} violation(s)")
            for v in bad[:20]:
                print(f"     {v}")
        else:
            print(f"ok   {path}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
