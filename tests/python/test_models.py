"""Tests of the Python side: generated models are reproducible, valid and runnable.

Why: the committed models/*.onnx are the inputs of the Rust tests; they must be
exactly what models/generate.py produces (so anyone can regenerate them), pass
the onnx checker and run in onnxruntime. Fetched suite models (models/cache/)
are checked too when present.

    .venv/bin/python -m pytest tests/python
"""
import os
import sys

import numpy as np
import pytest

from models.make_inputs import make_inputs
from tests.pyhelpers import GENERATED, MODELS, SUITE, judge, model_path, session, sh


def test_generate_is_deterministic(tmp_path):
    for d in ("a", "b"):
        code, log = sh(sys.executable, os.path.join(MODELS, "generate.py"), "--out", tmp_path / d)
        assert code == 0, log
    for name in GENERATED:
        a = (tmp_path / "a" / f"{name}.onnx").read_bytes()
        assert a == (tmp_path / "b" / f"{name}.onnx").read_bytes(), f"{name}: two runs differ"
        with open(os.path.join(MODELS, f"{name}.onnx"), "rb") as f:
            assert a == f.read(), f"models/{name}.onnx is stale: rerun models/generate.py"


def test_generated_models_pass_checker():
    code, log = judge("check", *[model_path(n) for n in GENERATED])
    assert code == 0, log


@pytest.mark.parametrize("name", GENERATED)
def test_generated_model_runs(name):
    sess = session(model_path(name))
    feeds = make_inputs(name, seed=0)
    for sign in (1, -1):  # both If branches of subgraph.onnx
        outs = sess.run(None, {k: v * sign for k, v in feeds.items()})
        assert all(np.isfinite(o).all() for o in outs)


@pytest.mark.parametrize("name", list(SUITE))
def test_suite_model_checks_and_runs(name):
    path = model_path(name)
    if not os.path.exists(path):
        pytest.skip("not fetched (run models/fetch.py)")
    code, log = judge("check", path)
    assert code == 0, log
    outs = session(path).run(None, make_inputs(name, seed=0))
    assert all(np.isfinite(o).all() for o in outs)
