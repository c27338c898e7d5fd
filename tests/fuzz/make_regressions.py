"""Writes the hostile models of issue 17 into tests/fuzz/regressions/, one
failure class each, made with the onnx Python API as the issue's reporter
made them. The files are committed; run this again only to add a class:

    .venv/bin/python tests/fuzz/make_regressions.py

Inputs found by fuzzing are kept beside them as they were found (see
tests/fuzz.rs), not regenerated here.
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "regressions")


def model(nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def vi(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def save(name, m):
    onnx.save(m, os.path.join(OUT, name + ".onnx"))


def x4():
    return vi("x", [1, 3, 8, 8])


def weight():
    return numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")


def main():
    os.makedirs(OUT, exist_ok=True)
    y = vi("y", None)
    for exp in (40, 62):
        save(f"input-dim-2e{exp}", model(
            [helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2**exp, 4])], [y]))
    save("flatten-axis-100", model(
        [helper.make_node("Flatten", ["x"], ["y"], axis=100)], [x4()], [y]))
    # The axis is out of range whatever the rank: the Relu output has no declared type.
    save("flatten-axis-100-untyped", model(
        [helper.make_node("Relu", ["x"], ["r"]),
         helper.make_node("Flatten", ["r"], ["y"], axis=100)], [vi("x", None)], [y]))
    save("flatten-no-input", model(
        [helper.make_node("Relu", ["x"], ["r"]),
         helper.make_node("Flatten", [], ["f"], axis=1),
         helper.make_node("Add", ["r", "f"], ["y"])], [x4()], [y]))
    save("reducemean-axes-2e40", model(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2**40])], [x4()], [y]))
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"])], "then", [], [vi("t", None)])
    else_g = helper.make_graph([], "else", [], [])
    save("if-empty-else", model(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
         helper.make_node("Greater", ["s", "zero"], ["c"]),
         helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
        [x4()], [y], [numpy_helper.from_array(np.zeros((), np.float32), "zero")]))
    save("maxpool-strides-0", model(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[0, 0])],
        [x4()], [y]))
    save("conv-strides-0", model(
        [helper.make_node("Conv", ["x", "w"], ["y"], strides=[0, 0])],
        [x4()], [y], [weight()]))
    bad = TensorProto(name="names", data_type=TensorProto.STRING, dims=[2])
    bad.raw_data = b"\x01\x02\x03\x04"
    save("string-initializer-raw-bytes", model(
        [helper.make_node("Identity", ["names"], ["n"]),
         helper.make_node("Relu", ["x"], ["y"])],
        [x4()], [y, vi("n", None, TensorProto.STRING)], [bad]))
    big = numpy_helper.from_array(np.array([2**31], np.int64), "shape")
    save("constantofshape-2e31", model(
        [helper.make_node("ConstantOfShape", ["shape"], ["k"]),
         helper.make_node("Add", ["x", "k"], ["y"])], [vi("x", [1])], [y], [big]))
    save("expand-2e31", model(
        [helper.make_node("Expand", ["x", "shape"], ["y"])], [vi("x", [1])], [y], [big]))
    mm = numpy_helper.from_array(np.ones((8, 8), np.float32), "m")
    save("matmul-52-inputs", model(
        [helper.make_node("MatMul", ["x"] + ["m"] * 51, ["y"])], [vi("x", [2, 8])], [y], [mm]))
    claims = TensorProto(name="v", data_type=TensorProto.FLOAT, dims=[2**31])
    save("constant-2e31-floats-no-data", model(
        [helper.make_node("Constant", [], ["k"], value=claims),
         helper.make_node("Add", ["x", "k"], ["y"])], [vi("x", [1])], [y]))

    # What onnx's full checker refuses (issue 17, the checker's side): each
    # is refused on import naming the node and the schema's rule.
    y2 = vi("y", [2, 3])
    save("relu-int64", model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [vi("x", [2, 3], TensorProto.INT64)], [vi("y", [2, 3], TensorProto.INT64)]))
    half = numpy_helper.from_array(np.full((3,), 0.5, np.float64), "half")
    save("add-float-double", model(
        [helper.make_node("Add", ["x", "half"], ["y"])], [vi("x", [2, 3])], [y2], [half]))
    save("shape-into-relu", model(
        [helper.make_node("Shape", ["x"], ["s"]),
         helper.make_node("Relu", ["s"], ["y"])],
        [vi("x", [2, 3])], [vi("y", [2], TensorProto.INT64)]))
    save("relu-output-declared-int64", model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [vi("x", [2, 3])], [vi("y", [2, 3], TensorProto.INT64)]))
    save("unknown-default-op", model(
        [helper.make_node("RdduceMean", ["x"], ["y"])], [vi("x", [2, 3])], [y2]))
    save("resize-at-opset-7", model(
        [helper.make_node("Resize", ["x", "scales"], ["y"])], [vi("x", [2, 3])], [y2],
        [numpy_helper.from_array(np.ones(2, np.float32), "scales")], opset=7))
    save("upsample-at-opset-10", model(
        [helper.make_node("Upsample", ["x", "scales"], ["y"])], [vi("x", [2, 3])], [y2],
        [numpy_helper.from_array(np.ones(2, np.float32), "scales")], opset=10))
    save("opset-0", model(
        [helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2, 3])], [y2], opset=0))
    save("add-axis-at-opset-13", model(
        [helper.make_node("Add", ["x", "x"], ["y"], axis=1)], [vi("x", [2, 3])], [y2]))
    save("concat-without-axis", model(
        [helper.make_node("Concat", ["x", "x"], ["y"])], [vi("x", [2, 3])], [vi("y", [4, 3])]))
    save("input-without-element-type", model(
        [helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2, 3], TensorProto.UNDEFINED)], [y2]))
    save("batch-64-declared-1", model(
        [helper.make_node("Flatten", ["x"], ["f"]),
         helper.make_node("Gemm", ["f", "w"], ["y"])],
        [vi("x", [64, 3, 2, 2])], [vi("y", [1, 5])],
        [numpy_helper.from_array(np.ones((12, 5), np.float32), "w")]))
    save("add-does-not-broadcast", model(
        [helper.make_node("Add", ["x", "b"], ["y"])], [vi("x", [2, 3])], [y2],
        [numpy_helper.from_array(np.ones(5, np.float32), "b")]))


if __name__ == "__main__":
    main()
