"""ONNX Runtime sessions, on one thread, and timing them."""
import time

import numpy as np
import onnxruntime as ort


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
