#!/usr/bin/env python3
"""Speed and accuracy of channel pruning, side by side with the unpruned model.

Why: `prune-channels` must make models faster in tract (the issue's target:
at least 1.6x on the generated CNN at 50% of channels), and the price in
accuracy must be shown, not guessed. Timing is by `onnx-opt --bench` (tract,
1 thread, alternating runs); accuracy on a held-out sample the refit never
saw (`--verify-inputs`), in tract (cosine, SNR, top-1 agreement) and in ONNX
Runtime with a task measure: PP-OCR det, IoU of the text masks (p > 0.3);
PP-OCR rec, agreement of the greedy CTC decodes. Each timing is the median
speedup of --repeat runs (the dev machine is shared and noisy).

    .venv/bin/python -m benches.prune [--onnx-opt target/release/onnx-opt] [--repeat 3]

A gate as well as a bench: exits 1 when the CNN speedup is under 1.6x.
"""
import argparse
import os
import statistics
import sys
import tempfile

import numpy as np

from models.make_inputs import make_inputs
from tests.pyhelpers import ROOT, model_path, onnx_opt, outputs

ROWS = [
    # model, input shape, ratio, bench runs
    ("cnn", [1, 3, 32, 32], 0.5, 50),
    ("ppocr-det", [1, 3, 320, 320], 0.3, 20),
    ("ppocr-rec", [1, 3, 48, 320], 0.3, 20),
]


def ort_run(path, feeds):
    return outputs(path, feeds, optimized=True)[0]


def task_measure(name, ref, out):
    if name == "ppocr-det":
        a, b = ref > 0.3, out > 0.3
        union = (a | b).sum()
        return f"text-mask IoU {(a & b).sum() / union if union else 1.0:.3f}"
    if name == "ppocr-rec":
        def decode(p):
            ids = p[0].argmax(-1)
            return [int(i) for k, i in enumerate(ids) if i != 0 and (k == 0 or i != ids[k - 1])]
        da, db = decode(ref), decode(out)
        steps = (ref[0].argmax(-1) == out[0].argmax(-1)).mean()
        return f"CTC decode {'identical' if da == db else f'differs ({len(da)} vs {len(db)} chars)'}, per-step argmax {steps:.3f}"
    return f"argmax agreement {(ref.argmax(-1) == out.argmax(-1)).mean():.3f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx-opt", default=os.path.join(ROOT, "target", "release", "onnx-opt"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    exe = args.onnx_opt
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        print("| model | ratio | refit | params | speedup (tract) | ms before -> after | cosine | SNR dB | top-1 | task measure (ONNX Runtime) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, shape, ratio, runs in ROWS:
            fused = os.path.join(tmp, f"{name}.fused.onnx")
            onnx_opt(exe, model_path(name), fused, "--passes", "fuse")
            cal = os.path.join(tmp, f"{name}-cal")
            os.makedirs(cal)
            for seed in range(4):
                # the plainest form: one .npy per sample, shapes taken from the data
                np.save(os.path.join(cal, f"s{seed}.npy"), make_inputs(name, seed=seed, shapes={"x": shape})["x"])
            held = os.path.join(tmp, f"{name}-heldout.npy")
            held_feeds = make_inputs(name, seed=100, shapes={"x": shape})
            held_feeds = {k: v.astype(np.float32) for k, v in held_feeds.items()}
            np.save(held, held_feeds["x"])
            ref = ort_run(fused, held_feeds)
            for refit in ([False, True] if name != "cnn" else [False]):
                out = os.path.join(tmp, f"{name}.{refit}.onnx")
                passes = f"prune-channels{{ratio={ratio},refit={str(refit).lower()}}}"
                speedups, ms = [], None
                # A refit changes weights, not shapes: timed once (the row above repeats).
                for k in range(1 if refit else args.repeat):
                    extra = ["--inputs", cal] if refit else []
                    r = onnx_opt(exe, fused, out, "--passes", passes,
                                 "--verify", "--verify-inputs", held, "--tolerance", "1e9",
                                 "--bench", "--runs", runs, *extra)
                    speedups.append(r["bench"]["speedup"])
                    ms = (r["bench"]["before_ms"]["median"], r["bench"]["after_ms"]["median"])
                    if k == 0:
                        v = r["verify"]["outputs"][0]
                        params = (r["model"]["before"]["params"], r["model"]["after"]["params"])
                        task = task_measure(name, ref, ort_run(out, held_feeds))
                speedup = statistics.median(speedups)
                print(f"| {name} | {ratio} | {'yes' if refit else 'no'} | {params[0]} -> {params[1]} | {speedup:.2f}x "
                      f"({', '.join(f'{s:.2f}' for s in speedups)}) | {ms[0]:.2f} -> {ms[1]:.2f} | {v['cosine']:.3f} | "
                      f"{v['snr_db']:.1f} | {v.get('top1_agreement', float('nan')):.3f} | {task} |", flush=True)
                if name == "cnn" and speedup < 1.6:
                    failed = True
    if failed:
        print("FAIL: the CNN speedup at 50% of channels is under 1.6x")
        sys.exit(1)
    print("ok: CNN speedup at 50% of channels >= 1.6x")


if __name__ == "__main__":
    main()
