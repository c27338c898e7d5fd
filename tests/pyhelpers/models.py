"""The models the tests and benches use, and inputs for them."""
import json
import os

import numpy as np
import onnx

from models.make_inputs import make_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, "models")
# Made by models/generate.py, kept in the repo; the suite is fetched to models/cache.
GENERATED = ["cnn", "convnet", "mlp", "transformer", "canon", "subgraph"]

with open(os.path.join(MODELS, "suite.json")) as f:
    SUITE = {m["name"]: m for m in json.load(f)["models"] if not m.get("holdout")}


def model_path(name):
    """A generated model in models/, or a fetched one in models/cache."""
    if name in GENERATED:
        return os.path.join(MODELS, f"{name}.onnx")
    return os.path.join(MODELS, "cache", f"{name}.onnx")


def feeds(name, seed):
    """Inputs for `name`: seeded standard normal ones for a generated model
    (symbolic dims 1), a realistic sample (models/make_inputs.py) otherwise."""
    if name not in GENERATED:
        return make_inputs(name, seed=seed)
    m = onnx.load(model_path(name))
    rng = np.random.default_rng(seed)
    out = {}
    for i in m.graph.input:
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in i.type.tensor_type.shape.dim]
        out[i.name] = rng.standard_normal(dims).astype(np.float32)
    return out
