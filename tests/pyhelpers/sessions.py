"""ONNX Runtime sessions, on one thread, and timing them."""
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from .measures import max_rel_err


def session(path, optimized=True, log_level=3):
    """A CPU session on one thread, sequential. `optimized=False` turns ORT's
    graph rewrites off, for comparing two models' arithmetic as written;
    `log_level` 3 prints errors only."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = log_level
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def outputs(model, feeds, optimized=False):
    """Every output of `model` (a path or a session) on `feeds`, of which
    the inputs it does not have are left out."""
    sess = model if isinstance(model, ort.InferenceSession) else session(model, optimized)
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in names})


def time_interleaved(sessions, feeds, runs, warmup=5):
    """Median ms of each session on `feeds`, runs interleaved so that drift
    on a shared machine hits every session alike."""
    for s in sessions:
        for _ in range(warmup):
            s.run(None, feeds)
    times = [[] for _ in sessions]
    for _ in range(runs):
        for i, s in enumerate(sessions):
            t = time.perf_counter()
            s.run(None, feeds)
            times[i].append((time.perf_counter() - t) * 1e3)
    return [float(np.median(t)) for t in times]


def rounding_floor(lifted_path, feeds, nudged):
    """How far rounding alone moves the outputs: every weight and bias of a
    Conv/ConvTranspose/Gemm/MatMul scaled by 1 +- eps (about one ulp).
    `lifted_path` has its weights as initializers (`--passes lift-constants`);
    the nudged copy is written to `nudged`. A rewrite that folds weights is
    exact when it moves the outputs no further than about this."""
    m = onnx.load(str(lifted_path))
    weights = set()
    for n in m.graph.node:
        if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            weights.update(n.input[1:3])
    eps = np.finfo(np.float32).eps
    for k, t in enumerate(m.graph.initializer):
        if t.name in weights and t.data_type == onnx.TensorProto.FLOAT:
            w = numpy_helper.to_array(t)
            sign = np.where((np.arange(w.size) + k) % 2 == 0, 1.0, -1.0).reshape(w.shape)
            t.CopyFrom(numpy_helper.from_array((w * (1 + sign * eps)).astype(np.float32), t.name))
    onnx.save(m, str(nudged))
    return max_rel_err(outputs(lifted_path, feeds), outputs(nudged, feeds))
