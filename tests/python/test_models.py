"""Tests of the Python side: generated models are reproducible, valid and runnable.

Why: the committed models/*.onnx are the inputs of the Rust tests; they must be
exactly what models/generate.py produces (so anyone can regenerate them), pass
the onnx checker and run in onnxruntime. Fetched suite models (models/cache/)
are checked too when present.

    .venv/bin/python -m pytest tests/python
"""
import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, "models")
GENERATED = ["cnn", "mlp", "transformer", "canon", "subgraph"]
sys.path.insert(0, MODELS)
from make_inputs import make_inputs  # noqa: E402

with open(os.path.join(MODELS, "suite.json")) as f:
    SUITE = [m["name"] for m in json.load(f)["models"] if not m.get("holdout")]


def run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)


def test_generate_is_deterministic(tmp_path):
    for d in ("a", "b"):
        r = run(os.path.join(MODELS, "generate.py"), "--out", str(tmp_path / d))
        assert r.returncode == 0, r.stderr
    for name in GENERATED:
        a = (tmp_path / "a" / f"{name}.onnx").read_bytes()
        assert a == (tmp_path / "b" / f"{name}.onnx").read_bytes(), f"{name}: two runs differ"
        with open(os.path.join(MODELS, f"{name}.onnx"), "rb") as f:
            assert a == f.read(), f"models/{name}.onnx is stale: rerun models/generate.py"


def test_generated_models_pass_checker():
    r = run("tests/judges/check.py", *[f"models/{n}.onnx" for n in GENERATED])
    assert r.returncode == 0, r.stdout + r.stderr


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", GENERATED)
def test_generated_model_runs(name):
    sess = session(os.path.join(MODELS, f"{name}.onnx"))
    feeds = make_inputs(name, seed=0)
    for sign in (1, -1):  # both If branches of subgraph.onnx
        outs = sess.run(None, {k: v * sign for k, v in feeds.items()})
        assert all(np.isfinite(o).all() for o in outs)


@pytest.mark.parametrize("name", SUITE)
def test_suite_model_checks_and_runs(name):
    path = os.path.join(MODELS, "cache", f"{name}.onnx")
    if not os.path.exists(path):
        pytest.skip("not fetched (run models/fetch.py)")
    r = run("tests/judges/check.py", path)
    assert r.returncode == 0, r.stdout + r.stderr
    outs = session(path).run(None, make_inputs(name, seed=0))
    assert all(np.isfinite(o).all() for o in outs)
