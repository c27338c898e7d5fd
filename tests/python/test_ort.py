"""onnx-opt's ONNX Runtime (`--runtime ort`, `run`, `profile`), judged by Python's onnxruntime.

Why: the figures onnx-opt reports in ONNX Runtime must be the ones a user's
deployment sees. Checked here:
  - `onnx-opt run --runtime ort` on the round trip of every generated and suite
    model returns exactly (bit for bit) what a Python onnxruntime session with
    the same settings (optimisation level all, 1 thread, sequential) returns;
  - `--verify --bench --runtime tract,ort` reports each runtime's figures;
  - `onnx-opt profile` reports op types, layers of the model and nodes;
  - quant calibrated through ONNX Runtime gives the scales it gets through tract;
  - outputs that are string tensors or sequences of maps (skl2onnx's
    classifiers) are read, compared and judged like tensors.

    ONNX_OPT=target/debug/onnx-opt .venv/bin/python -m pytest tests/python/test_ort.py
"""
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.pyhelpers import GENERATED, ONNX_OPT, SUITE, feeds, model_path, session, sh


def deployed_outputs(path, inputs):
    # The settings onnx-opt's sessions use: optimisation level all, 1 thread, sequential.
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, inputs)))


@pytest.mark.parametrize("name", GENERATED + sorted(SUITE))
def test_ort_outputs_equal_python_onnxruntime_bit_for_bit(name, tmp_path):
    out = tmp_path / "rt.onnx"
    code, log = sh(ONNX_OPT, model_path(name), "-o", out, "--passes", "")
    assert code == 0, log
    inputs = feeds(name, 0)
    np.savez(tmp_path / "x.npz", **inputs)
    code, log = sh(ONNX_OPT, "run", out, "--runtime", "ort", "--inputs", tmp_path / "x.npz",
                   "--save", tmp_path / "y.npz")
    assert code == 0, log
    got = np.load(tmp_path / "y.npz")
    want = deployed_outputs(out, inputs)
    assert sorted(got.files) == sorted(want), log
    for k, w in want.items():
        g = got[k]
        assert g.dtype == w.dtype and g.shape == w.shape, (k, g.dtype, g.shape, w.dtype, w.shape)
        assert g.tobytes() == w.tobytes(), f"{k}: max |diff| {np.max(np.abs(g.astype(np.float64) - w))}"


def test_verify_and_bench_report_each_runtime(tmp_path):
    report = tmp_path / "r.json"
    code, log = sh(ONNX_OPT, model_path("cnn"), "-o", tmp_path / "o.onnx", "--passes", "fuse",
                   "--verify", "--bench", "--runtime", "tract,ort", "--runs", "3", "--warmup", "1",
                   "--report", report)
    assert code == 0, log
    assert "verify (tract): ok" in log and "verify (ort): ok" in log, log
    assert "bench (ort, 1 thread, 3 runs)" in log, log
    r = json.loads(report.read_text())
    assert [x["runtime"] for x in r["runtimes"]] == ["tract", "ort"]
    assert r["verify"] == r["runtimes"][0]["verify"] and r["bench"]["runtime"] == "tract"
    for x in r["runtimes"]:
        assert x["verify"]["runtime"] == x["runtime"] and x["verify"]["ok"] is True
        assert max(o["max_rel_err"] for o in x["verify"]["outputs"]) < 1e-4
        b = x["bench"]
        assert b["runtime"] == x["runtime"] and b["threads"] == 1 and b["runs"] == 3
        assert 0 < b["before_ms"]["median"] <= b["before_ms"]["p90"]
        assert b["speedup"] == pytest.approx(b["before_ms"]["median"] / b["after_ms"]["median"])


# silero-vad: tract cannot type its If branches (of different shapes);
# silero-op18-ifless: tract panics on it (at the random samples' length).
@pytest.mark.parametrize("name,why", [("silero-vad", "tract cannot run this model"),
                                      ("silero-op18-ifless", "tract panicked")])
def test_verify_runs_in_ort_where_tract_cannot_run_the_model(name, why, tmp_path):
    report = tmp_path / "r.json"
    code, log = sh(ONNX_OPT, model_path(name), "-o", tmp_path / "o.onnx", "--passes", "fuse",
                   "--verify", "--report", report)
    assert code == 0, log
    assert "verify (tract): NOT RUN" in log and why in log and "verify (ort): ok" in log, log
    assert "checked nothing" not in log, log
    r = json.loads(report.read_text())
    assert [x["runtime"] for x in r["runtimes"]] == ["tract", "ort"]
    assert r["verify"] == r["runtimes"][1]["verify"] and r["verify"]["ok"] is True
    # Aimed at tract, the check stays there: a refusal is said, a panic is an error.
    code, log = sh(ONNX_OPT, model_path(name), "-o", tmp_path / "o2.onnx", "--passes", "fuse",
                   "--verify", "--runtime", "tract")
    assert "verify (ort)" not in log, log
    if name == "silero-vad":
        assert code == 0 and "checked nothing" in log, log
    else:
        assert code == 1 and "tract panicked" in log and not (tmp_path / "o2.onnx").exists(), log


def test_profile_sums_kernels_per_op_type_and_layer(tmp_path):
    report = tmp_path / "p.json"
    src = model_path("cnn")
    code, log = sh(ONNX_OPT, "profile", src, "--runtime", "ort", "--runs", "4", "--warmup", "1",
                   "--report", report)
    assert code == 0, log
    p = json.loads(report.read_text())
    assert p["runtime"] == "ort" and p["runs"] == 4 and p["threads"] == 1
    assert 0 < p["kernels_ms"] <= p["run_ms"] * 1.05
    for section in ("op_types", "layers", "nodes"):
        assert sum(r["share"] for r in p[section]) == pytest.approx(1.0, abs=1e-6), section
    total = sum(r["ms"] for r in p["nodes"])
    assert sum(r["ms"] for r in p["op_types"]) == pytest.approx(total)
    m = onnx.load(src)
    names = {n.name for n in m.graph.node if n.name}
    named = [r["name"] for r in p["layers"] if r["name"] != "(added by ONNX Runtime)"]
    assert named and set(named) <= names | {f"{n.op_type}_{k}" for k, n in enumerate(m.graph.node)}
    assert "op type" in log and "layer" in log


def scales(path):
    m = onnx.load(str(path))
    consts = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear":
            out[n.output[0]] = (consts[n.input[1]], consts[n.input[2]] if len(n.input) > 2 else None)
    return out


@pytest.mark.parametrize("name", ["cnn", "ppocr-cls"])
def test_quant_calibrated_in_ort_matches_tract(name, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    for seed in (1, 2):
        np.savez(calib / f"{seed}.npz", **feeds(name, seed))
    got = {}
    for rt in ("tract", "ort"):
        out = tmp_path / f"{rt}.onnx"
        code, log = sh(ONNX_OPT, model_path(name), "-o", out, "--passes", "fuse,quant{measure=false}",
                       "--inputs", calib, "--calibrate-runtime", rt)
        assert code == 0, log
        got[rt] = scales(out)
    assert got["tract"] and got["tract"].keys() == got["ort"].keys()
    for k, (s, z) in got["tract"].items():
        s2, z2 = got["ort"][k]
        np.testing.assert_allclose(s2, s, rtol=1e-4, err_msg=k)
        assert z2 is None or np.max(np.abs(z2.astype(int) - z.astype(int))) <= 1, k


def classifier_with_map_outputs(scale=(1.0, 1.0, 1.0)):
    """What skl2onnx makes of a classifier trained on named classes: a label
    per row as a string, and the class probabilities as a ZipMap (a sequence
    of one map per row), here on top of a Mul and a Softmax. `scale` is the
    Mul's (a changed one stands for a wrong rewrite)."""
    from onnx import TensorProto, helper

    classes = ["cat", "ant", "bee"]  # keys out of order: columns follow key order
    nodes = [
        helper.make_node("Mul", ["X", "scale"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["p"], axis=1),
        helper.make_node("ArgMax", ["p"], ["best"], axis=1, keepdims=0),
        helper.make_node("LabelEncoder", ["best"], ["label"], domain="ai.onnx.ml",
                         keys_int64s=[0, 1, 2], values_strings=classes),
        helper.make_node("ZipMap", ["p"], ["probabilities"], domain="ai.onnx.ml",
                         classlabels_strings=classes),
    ]
    probabilities = helper.make_value_info("probabilities", helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, None))))
    graph = helper.make_graph(
        nodes, "skl", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("label", TensorProto.STRING, ["N"]), probabilities],
        [numpy_helper.from_array(np.array(scale, np.float32), "scale")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    return model


def test_string_and_map_outputs_are_read_compared_and_judged(tmp_path):
    # Every skl2onnx classifier returns these: ONNX Runtime runs it, and so
    # must onnx-opt's run, --verify and check (they refused it: "not a tensor").
    src, x = tmp_path / "clf.onnx", tmp_path / "x.npz"  # 40 samples, or one of 40 rows
    onnx.save(classifier_with_map_outputs(), src)
    rows = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32) * 3
    np.savez(x, X=rows)
    code, log = sh(ONNX_OPT, "run", src, "--runtime", "ort", "--inputs", x, "--input-shape", "X=40,3",
                   "--save", tmp_path / "y.npz")
    assert code == 0, log
    got = np.load(tmp_path / "y.npz")
    labels, maps = session(src).run(None, {"X": rows})
    # The maps, as rows of their values in key order.
    want = np.array([[m[k] for k in sorted(m)] for m in maps], np.float32)
    assert got["probabilities"].shape == (40, 3) and got["probabilities"].dtype == np.float32
    np.testing.assert_array_equal(got["probabilities"], want)
    # The labels, as hashes: equal where the strings are, different where not.
    hashes = got["label"]
    assert hashes.shape == (40,) and hashes.dtype == np.int64
    assert len(set(labels)) == len(set(hashes.tolist())) >= 2
    for i in range(40):
        assert all((hashes[i] == hashes[j]) == (labels[i] == labels[j]) for j in range(40))

    report = tmp_path / "r.json"
    code, log = sh(ONNX_OPT, src, "-o", tmp_path / "o.onnx", "--passes", "fuse", "--verify", "--runtime", "ort",
                   "--inputs", x, "--report", report)
    assert code == 0, log
    outputs = {o["name"]: o for o in json.loads(report.read_text())["verify"]["outputs"]}
    assert sorted(outputs) == ["label", "probabilities"], log
    assert all(o["max_abs_err"] == 0 and o["samples"] == 40 for o in outputs.values()), log

    # Labels (class indices, in key order as scikit-learn's classes_ are)
    # are scored on the probabilities, not on the label output before them.
    np.savetxt(tmp_path / "labels.txt", [sorted(set(labels)).index(l) for l in labels], fmt="%d")
    code, log = sh(ONNX_OPT, src, "-o", tmp_path / "o.onnx", "--passes", "fuse", "--verify", "--runtime", "ort",
                   "--inputs", x, "--labels", tmp_path / "labels.txt")
    assert code == 0 and "top-1 100.00% -> 100.00%" in log, log
    # tune judges top-1 on the same columns: the original scores 100 on every fold.
    code, log = sh(ONNX_OPT, "tune", src, "-o", tmp_path / "t.onnx", "--inputs", x, "--labels",
                   tmp_path / "labels.txt", "--max-drop", "1", "--budget", "60s")
    assert code == 0 and "original 100.00%" in log and (tmp_path / "t.onnx").exists(), log

    # The deployment gate passes the model itself and fails one that computes
    # other probabilities and labels.
    wrong = tmp_path / "wrong.onnx"
    onnx.save(classifier_with_map_outputs(scale=(1.0, 1.0, 4.0)), wrong)
    for model, want_code in [(src, 0), (wrong, 2)]:
        code, log = sh(ONNX_OPT, "check", model, "--against", src, "--inputs", x, "--runtime", "ort",
                       "--metric", "cosine", "--min-metric", "99")
        assert code == want_code, log
