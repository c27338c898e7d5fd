"""How far one model's outputs are from another's."""
import numpy as np


def max_rel_err(ref, out):
    """Worst over outputs of max |a - b| / max |a| (inf when shapes differ,
    or when a is all zero and b is not)."""
    worst = 0.0
    for a, b in zip(ref, out):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            return float("inf")
        scale = np.abs(a).max() if a.size else 0.0
        err = np.abs(a - b).max() if a.size else 0.0
        worst = max(worst, err / scale if scale > 0 else (0.0 if err == 0 else float("inf")))
    return worst


def cosine(ref, got):
    """Worst over outputs of the cosine similarity (1 when both are zero)."""
    worst = 1.0
    for a, b in zip(ref, got):
        a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        worst = min(worst, float(a @ b / (na * nb)) if na > 0 and nb > 0 else float(na == nb))
    return worst


def errors(ref, got):
    """Mean over samples and outputs of the relative L2 error and of the
    cosine; `ref` and `got` are lists (samples) of lists (outputs)."""
    rel, cos = [], []
    for r_outs, g_outs in zip(ref, got):
        for r, g in zip(r_outs, g_outs):
            r, g = np.asarray(r, np.float64).ravel(), np.asarray(g, np.float64).ravel()
            nr = np.linalg.norm(r)
            rel.append(np.linalg.norm(g - r) / nr if nr > 0 else float(np.linalg.norm(g) > 0))
            ng = np.linalg.norm(g)
            cos.append(float(r @ g / (nr * ng)) if nr > 0 and ng > 0 else float(nr == ng))
    return float(np.mean(rel)), float(np.mean(cos))
