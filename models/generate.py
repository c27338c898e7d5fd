#!/usr/bin/env python3
"""Build the small, committed test models of onnx-opt (models/*.onnx).

Why: the Rust tests need models that exercise specific rewrites (BN folding,
fusion, canonicalisation, subgraphs) and that are small enough to commit.
Everything is deterministic (fixed seeds, fixed names, no timestamps, protobuf
serialised with deterministic=True), so re-running gives byte-identical files;
tests/python/test_models.py checks that.

    .venv/bin/python models/generate.py [--out DIR]
"""
import argparse
import math
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8
F = TensorProto.FLOAT


class G:
    """Tiny graph builder: collects nodes/initializers with predictable names."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []

    def init(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, op_type, inputs, name, outs=None, **attrs):
        """Add a node; its single output is named like the node unless outs is given."""
        outs = outs or [name]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0] if len(outs) == 1 else outs

    def const(self, name, arr):
        """A weight stored as a Constant node (paddle2onnx style)."""
        t = numpy_helper.from_array(np.asarray(arr), name)
        self.nodes.append(helper.make_node("Constant", [], [name], name=name, value=t))
        return name

    def normal(self, shape, std):
        return (self.rng.standard_normal(shape) * std).astype(np.float32)

    def uniform(self, shape, lo, hi):
        return self.rng.uniform(lo, hi, shape).astype(np.float32)

    def graph(self, name, inputs, outputs):
        return helper.make_graph(self.nodes, name, inputs, outputs, self.inits)


def model(graph):
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="onnx-opt/models/generate.py",
        producer_version="1",
    )
    m.ir_version = IR_VERSION
    return m


def conv_bn(g, x, cin, cout, name, k=3, stride=1, group=1):
    """Conv (no bias) + BatchNormalization with realistic running stats."""
    fan_in = cin // group * k * k
    w = g.init(f"{name}.weight", g.normal((cout, cin // group, k, k), math.sqrt(2.0 / fan_in)))
    c = g.op("Conv", [x, w], name=f"{name}.conv", kernel_shape=[k, k],
             pads=[k // 2] * 4, strides=[stride, stride], group=group)
    bn = [g.init(f"{name}.bn.{p}", a) for p, a in [
        ("gamma", g.uniform(cout, 0.7, 1.3)),
        ("beta", g.normal(cout, 0.1)),
        ("mean", g.normal(cout, 0.2)),
        ("var", g.uniform(cout, 0.4, 1.6)),
    ]]
    return g.op("BatchNormalization", [c] + bn, name=f"{name}.bn", epsilon=1e-5)


def cnn():
    """Small ResNet-like CNN: BN folding, Conv+Relu fusion, depthwise conv."""
    g = G(seed=1)
    x = helper.make_tensor_value_info("x", F, ["N", 3, 32, 32])
    h = g.op("Relu", [conv_bn(g, "x", 3, 16, "stem")], name="stem.relu")
    r = g.op("Relu", [conv_bn(g, h, 16, 16, "block.0")], name="block.0.relu")
    r = conv_bn(g, r, 16, 16, "block.1")
    h = g.op("Relu", [g.op("Add", [r, h], name="block.add")], name="block.relu")
    h = conv_bn(g, h, 16, 16, "dw", group=16)
    w = g.init("down.weight", g.normal((32, 16, 3, 3), math.sqrt(2.0 / 144)))
    b = g.init("down.bias", g.normal(32, 0.05))
    h = g.op("Conv", [h, w, b], name="down.conv", kernel_shape=[3, 3], pads=[1] * 4, strides=[2, 2])
    h = g.op("Relu", [h], name="down.relu")
    h = g.op("GlobalAveragePool", [h], name="pool")
    h = g.op("Flatten", [h], name="flatten", axis=1)
    w = g.init("fc.weight", g.normal((10, 32), math.sqrt(1.0 / 32)))
    b = g.init("fc.bias", g.normal(10, 0.05))
    g.op("Gemm", [h, w, b], name="logits", transB=1)
    y = helper.make_tensor_value_info("logits", F, ["N", 10])
    return model(g.graph("cnn", [x], [y]))


def convnet():
    """A VGG-style classifier wide enough for int8 to pay in ONNX Runtime
    (3x3 convolutions of 32 to 128 channels), the README's `tune` example."""
    g = G(seed=6)
    x = helper.make_tensor_value_info("x", F, ["N", 3, 32, 32])
    h = "x"
    for k, (cin, cout, stride) in enumerate([(3, 32, 1), (32, 64, 1), (64, 64, 2), (64, 128, 1), (128, 128, 2)]):
        h = g.op("Relu", [conv_bn(g, h, cin, cout, f"conv{k}", stride=stride)], name=f"conv{k}.relu")
    h = g.op("GlobalAveragePool", [h], name="pool")
    h = g.op("Flatten", [h], name="flatten", axis=1)
    w = g.init("fc.weight", g.normal((10, 128), math.sqrt(1.0 / 128)))
    b = g.init("fc.bias", g.normal(10, 0.05))
    g.op("Gemm", [h, w, b], name="logits", transB=1)
    y = helper.make_tensor_value_info("logits", F, ["N", 10])
    return model(g.graph("convnet", [x], [y]))


def mlp():
    """Three MatMul+Add(+Relu) layers 256->512->512->10: fusion, low-rank, pruning."""
    g = G(seed=2)
    h, dims = "x", [256, 512, 512, 10]
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        w = g.init(f"fc{i}.weight", g.normal((a, b), math.sqrt(2.0 / a)))
        bias = g.init(f"fc{i}.bias", g.normal(b, 0.05))
        h = g.op("MatMul", [h, w], name=f"fc{i}.matmul")
        last = i == len(dims) - 2
        h = g.op("Add", [h, bias], name="logits" if last else f"fc{i}.add")
        if not last:
            h = g.op("Relu", [h], name=f"fc{i}.relu")
    x = helper.make_tensor_value_info("x", F, ["N", 256])
    y = helper.make_tensor_value_info("logits", F, ["N", 10])
    return model(g.graph("mlp", [x], [y]))


def lowrank_weight(rng, n, scale):
    """An n×n weight with the heavy-tailed spectrum of trained layers,
    sigma_i ~ (1 + i/16)^-1.2 on random orthogonal bases (random weights have
    a flat spectrum, where no rank cut pays). Energy 0.9 needs rank 64, 0.95
    rank 112, 0.99 rank 335."""
    sigma = (1.0 + np.arange(n) / 16.0) ** -1.2
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    w = (u * sigma) @ v.T
    return (w * scale / np.sqrt(np.mean(w**2) * n)).astype(np.float32)


def mlp_lowrank():
    """Four 1024-wide MatMul+Add+Relu layers and a 1024->10 head, weights with
    a decaying spectrum: the SVD pass's speed target (16 MB, not committed;
    written to models/cache by benches/svd.py)."""
    g = G(seed=6)
    h, width = "x", 1024
    for i in range(4):
        w = g.init(f"fc{i}.weight", lowrank_weight(g.rng, width, math.sqrt(2.0)))
        bias = g.init(f"fc{i}.bias", g.normal(width, 0.05))
        h = g.op("MatMul", [h, w], name=f"fc{i}.matmul")
        h = g.op("Add", [h, bias], name=f"fc{i}.add")
        h = g.op("Relu", [h], name=f"fc{i}.relu")
    w = g.init("head.weight", g.normal((width, 10), math.sqrt(1.0 / width)))
    h = g.op("MatMul", [h, w], name="logits")
    x = helper.make_tensor_value_info("x", F, ["N", width])
    y = helper.make_tensor_value_info("logits", F, ["N", 10])
    return model(g.graph("mlp_lowrank", [x], [y]))


def layer_norm(g, x, d, name):
    """LayerNorm over the last axis written out as opset-13 primitives."""
    mean = g.op("ReduceMean", [x], name=f"{name}.mean", axes=[-1], keepdims=1)
    diff = g.op("Sub", [x, mean], name=f"{name}.sub")
    sq = g.op("Pow", [diff, g.init(f"{name}.two", np.array(2.0, np.float32))], name=f"{name}.pow")
    var = g.op("ReduceMean", [sq], name=f"{name}.var", axes=[-1], keepdims=1)
    var = g.op("Add", [var, g.init(f"{name}.eps", np.array(1e-5, np.float32))], name=f"{name}.add_eps")
    std = g.op("Sqrt", [var], name=f"{name}.sqrt")
    n = g.op("Div", [diff, std], name=f"{name}.div")
    n = g.op("Mul", [n, g.init(f"{name}.gamma", 1.0 + g.normal(d, 0.1))], name=f"{name}.mul")
    return g.op("Add", [n, g.init(f"{name}.beta", g.normal(d, 0.05))], name=f"{name}.add")


def linear(g, x, a, b, name):
    w = g.init(f"{name}.weight", g.normal((a, b), 1.0 / math.sqrt(a)))
    h = g.op("MatMul", [x, w], name=f"{name}.matmul")
    return g.op("Add", [h, g.init(f"{name}.bias", g.normal(b, 0.02))], name=f"{name}.add")


def transformer():
    """One pre-norm encoder block, opset 13: LayerNorm/GELU/attention fusion patterns."""
    g = G(seed=3)
    seq, d, heads = 16, 64, 4
    hd = d // heads
    h = layer_norm(g, "x", d, "ln1")
    split = g.init("attn.split_shape", np.array([0, seq, heads, hd], np.int64))
    merge = g.init("attn.merge_shape", np.array([0, seq, d], np.int64))
    qkv = {}
    for p, perm in [("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])]:
        t = linear(g, h, d, d, f"attn.{p}")
        t = g.op("Reshape", [t, split], name=f"attn.{p}.reshape")
        qkv[p] = g.op("Transpose", [t], name=f"attn.{p}.transpose", perm=perm)
    s = g.op("MatMul", [qkv["q"], qkv["k"]], name="attn.scores")
    s = g.op("Div", [s, g.init("attn.scale", np.array(math.sqrt(hd), np.float32))], name="attn.scaled")
    p = g.op("Softmax", [s], name="attn.softmax", axis=-1)
    c = g.op("MatMul", [p, qkv["v"]], name="attn.context")
    c = g.op("Transpose", [c], name="attn.context.transpose", perm=[0, 2, 1, 3])
    c = g.op("Reshape", [c, merge], name="attn.context.reshape")
    c = linear(g, c, d, d, "attn.out")
    h1 = g.op("Add", ["x", c], name="residual1")
    m = layer_norm(g, h1, d, "ln2")
    m = linear(g, m, d, 4 * d, "mlp.fc1")
    e = g.op("Div", [m, g.init("gelu.sqrt2", np.array(math.sqrt(2.0), np.float32))], name="gelu.div")
    e = g.op("Erf", [e], name="gelu.erf")
    e = g.op("Add", [e, g.init("gelu.one", np.array(1.0, np.float32))], name="gelu.add")
    e = g.op("Mul", [m, e], name="gelu.mul")
    e = g.op("Mul", [e, g.init("gelu.half", np.array(0.5, np.float32))], name="gelu.mul_half")
    m = linear(g, e, 4 * d, d, "mlp.fc2")
    g.op("Add", [h1, m], name="y")
    x = helper.make_tensor_value_info("x", F, ["N", seq, d])
    y = helper.make_tensor_value_info("y", F, ["N", seq, d])
    return model(g.graph("transformer", [x], [y]))


def canon():
    """Canonicalisation fodder: Constant-node weights, no-op ops, shape math, dead nodes."""
    g = G(seed=4)
    shape = [1, 8, 16, 16]
    h = g.op("Identity", ["x"], name="identity")
    h = g.op("Dropout", [h], name="dropout")
    w = g.const("conv.weight", g.normal((8, 8, 3, 3), math.sqrt(2.0 / 72)))
    b = g.const("conv.bias", g.normal(8, 0.05))
    h = g.op("Conv", [h, w, b], name="conv", kernel_shape=[3, 3], pads=[1] * 4)
    h = g.op("Reshape", [h, g.const("noop.shape", np.array(shape, np.int64))], name="noop_reshape")
    h = g.op("Transpose", [h], name="noop_transpose", perm=[0, 1, 2, 3])
    h = g.op("Cast", [h], name="noop_cast", to=F)
    ones = g.op("ConstantOfShape", [g.const("scale.shape", np.array([1, 8, 1, 1], np.int64))],
                name="scale.ones", value=numpy_helper.from_array(np.array([1.0], np.float32)))
    s = g.op("Mul", [ones, g.const("scale.values", g.uniform((1, 8, 1, 1), 0.5, 1.5))], name="scale")
    h = g.op("Mul", [h, s], name="scaled")
    dims = g.op("Shape", [h], name="shape")
    nc = g.op("Gather", [dims, g.const("nc.indices", np.array([0, 1], np.int64))], name="nc", axis=0)
    tgt = g.op("Concat", [nc, g.const("hw", np.array([256], np.int64))], name="flat_shape", axis=0)
    h = g.op("Reshape", [h, tgt], name="flatten")
    h = g.op("Relu", [h], name="relu")
    h = g.op("MatMul", [h, g.const("proj.weight", g.normal((256, 16), 1.0 / 16))], name="y")
    # Dead branch: reaches no graph output.
    dead = g.op("Sigmoid", ["x"], name="dead.sigmoid")
    g.op("Mul", [dead, g.const("dead.scale", np.array(3.0, np.float32))], name="dead.mul")
    x = helper.make_tensor_value_info("x", F, shape)
    y = helper.make_tensor_value_info("y", F, [1, 8, 16])
    return model(g.graph("canon", [x], [y]))


def subgraph():
    """If (branches with Constant nodes + outer-scope capture) and a Scan running sum.

    Scan rather than Loop: tract 0.23.9 implements If and Scan but not Loop,
    and the tests need tract to run this model.
    """
    g = G(seed=5)
    n, d = 4, 8
    h = linear(g, "x", d, d, "fc")
    total = g.op("ReduceSum", ["x"], name="sum", keepdims=0)
    cond = g.op("Greater", [total, g.init("zero", np.array(0.0, np.float32))], name="cond")

    def branch(name, op, values):
        c = helper.make_node("Constant", [], [f"{name}.c"], name=f"{name}.c",
                             value=numpy_helper.from_array(values, f"{name}.c"))
        o = helper.make_node(op, ["fc.add", f"{name}.c"], [f"{name}.out"], name=f"{name}.out")
        out = helper.make_tensor_value_info(f"{name}.out", F, [n, d])
        return helper.make_graph([c, o], name, [], [out])

    then_g = branch("then", "Add", g.normal(d, 1.0))
    else_g = branch("else", "Mul", g.uniform(d, 0.5, 1.5))
    br = g.op("If", [cond], name="branch", then_branch=then_g, else_branch=else_g)
    assert h == "fc.add"

    # Scan body: acc += row * scale_in * gain_outer ; emits the running sum.
    gain = g.init("gain", g.uniform(d, 0.5, 1.5))  # captured from the outer scope
    bnodes = [
        helper.make_node("Constant", [], ["body.scale"], name="body.scale",
                         value=numpy_helper.from_array(np.array(0.5, np.float32), "body.scale")),
        helper.make_node("Mul", ["row", "body.scale"], ["body.scaled"], name="body.scaled"),
        helper.make_node("Mul", ["body.scaled", gain], ["body.gained"], name="body.gained"),
        helper.make_node("Add", ["acc_in", "body.gained"], ["acc_out"], name="body.acc"),
        helper.make_node("Identity", ["acc_out"], ["running"], name="body.running"),
    ]
    vi = helper.make_tensor_value_info
    body = helper.make_graph(bnodes, "scan_body", [vi("acc_in", F, [d]), vi("row", F, [d])],
                             [vi("acc_out", F, [d]), vi("running", F, [d])])
    acc0 = g.init("acc0", np.zeros(d, np.float32))
    g.op("Scan", [acc0, br], name="scan", outs=["total", "cumsum"], body=body, num_scan_inputs=1)
    x = vi("x", F, [n, d])
    outs = [vi("branch", F, [n, d]), vi("total", F, [d]), vi("cumsum", F, [n, d])]
    return model(g.graph("subgraph", [x], outs))


MODELS = {"cnn": cnn, "convnet": convnet, "mlp": mlp, "transformer": transformer, "canon": canon, "subgraph": subgraph}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, build in MODELS.items():
        m = build()
        onnx.checker.check_model(m, full_check=True)
        path = os.path.join(args.out, f"{name}.onnx")
        with open(path, "wb") as f:
            f.write(m.SerializeToString(deterministic=True))
        print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
