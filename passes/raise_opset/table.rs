//! Which operator schemas changed at which opset, and how each change is
//! handled: types only, compatible, converted, or (absent) refused.

use super::*;

/// How the change of `op`'s schema at opset `v` is handled; `None`: not
/// handled (the pass refuses such a node).
pub(super) fn change(op: &str, v: i64) -> Option<Change> {
    use Change::*;
    Some(match (op, v) {
        // Opset 11: negative axes allowed, or new attributes with the old
        // behaviour as default (DepthToSpace mode=DCR, TopK largest/sorted=1,
        // Constant sparse_value, Gemm's C optional, If/Loop/Scan relaxed).
        (
            "ArgMax" | "ArgMin" | "Compress" | "Concat" | "Constant" | "DepthToSpace" | "Flatten"
            | "Gather" | "Gemm" | "Hardmax" | "If" | "LogSoftmax" | "Loop" | "OneHot" | "ReduceL1"
            | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceMax" | "ReduceMean"
            | "ReduceMin" | "ReduceProd" | "ReduceSum" | "ReduceSumSquare" | "Scan" | "Slice"
            | "Softmax" | "Split" | "Squeeze" | "TopK" | "Unsqueeze",
            11,
        ) => Compatible,
        ("Equal", 11) => Types,
        // Explicit pads unchanged; SAME_* auto_pad re-specified (strides).
        ("Conv" | "ConvTranspose" | "AveragePool" | "MaxPool" | "LpPool", 11) => {
            Convert(auto_pad_11)
        }
        // Opset 10: pools gain `ceil_mode` (default 0: floor, as before).
        ("AveragePool" | "MaxPool", 10) => Compatible,
        ("Dropout", 10) => Convert(dropout_mask_10),
        ("Slice", 10) => Convert(slice_attrs_to_inputs),
        ("Clip", 11) => Convert(clip_attrs_to_inputs),
        ("Pad", 11) => Convert(pad_attrs_to_inputs),
        ("Resize", 11) => return None, // Resize-10 coordinates differ
        // Opset 12.
        ("ArgMax" | "ArgMin", 12) => Compatible, // select_last_index=0
        ("Constant", 12) => Compatible,          // value_float(s)/int(s)/string(s)
        ("GatherND", 12) => Compatible,          // batch_dims=0
        ("Clip" | "Max" | "Min" | "MaxPool" | "Pow" | "ReduceMax" | "ReduceMin", 12) => Types,
        ("Dropout", 12) => Convert(dropout_ratio_to_input),
        // Opset 13.
        ("Squeeze" | "Unsqueeze", 13) => Convert(axes_to_input),
        ("ReduceSum", 13) => Convert(axes_to_input),
        ("Split", 13) => Convert(split_to_input),
        ("Softmax" | "LogSoftmax" | "Hardmax", 13) => Convert(softmax_one_axis),
        ("Resize", 13) => Convert(resize_13),
        ("Erf", 13) => Convert(erf_13),
        ("DequantizeLinear" | "QuantizeLinear", 13) => Compatible, // axis (scale was scalar)
        (
            "Abs"
            | "Add"
            | "ArgMax"
            | "ArgMin"
            | "Cast"
            | "Ceil"
            | "Clip"
            | "Concat"
            | "Constant"
            | "DepthToSpace"
            | "Div"
            | "Dropout"
            | "Equal"
            | "Exp"
            | "Expand"
            | "Flatten"
            | "Floor"
            | "Gather"
            | "GatherElements"
            | "GatherND"
            | "Gemm"
            | "Greater"
            | "Identity"
            | "If"
            | "IsNaN"
            | "LRN"
            | "Less"
            | "Log"
            | "Loop"
            | "MatMul"
            | "Max"
            | "Mean"
            | "MeanVarianceNormalization"
            | "Min"
            | "Mod"
            | "Mul"
            | "Neg"
            | "NegativeLogLikelihoodLoss"
            | "NonZero"
            | "Pad"
            | "Pow"
            | "Reciprocal"
            | "ReduceL1"
            | "ReduceL2"
            | "ReduceLogSum"
            | "ReduceLogSumExp"
            | "ReduceMax"
            | "ReduceMean"
            | "ReduceMin"
            | "ReduceProd"
            | "ReduceSumSquare"
            | "Relu"
            | "Reshape"
            | "ScatterElements"
            | "ScatterND"
            | "Shape"
            | "Sigmoid"
            | "Sign"
            | "Size"
            | "Slice"
            | "SoftmaxCrossEntropyLoss"
            | "SpaceToDepth"
            | "Sqrt"
            | "Sub"
            | "Sum"
            | "Tanh"
            | "Tile"
            | "Transpose",
            13,
        ) => Types,
        // Opset 14.
        ("Add" | "CumSum" | "Div" | "Identity" | "Mul" | "Relu" | "Sub", 14) => Types,
        ("GRU" | "LSTM" | "RNN", 14) => Compatible, // layout=0
        ("Reshape", 14) => Compatible,              // allowzero=0
        ("BatchNormalization", 14) => Convert(batchnorm_14),
        // Opset 15.
        ("BatchNormalization" | "Pow", 15) => Types,
        ("Shape", 15) => Compatible, // start=0, end=rank
        // Opset 16.
        (
            "GreaterOrEqual" | "Identity" | "If" | "LeakyRelu" | "LessOrEqual" | "Loop" | "PRelu"
            | "Scan" | "Where",
            16,
        ) => Types,
        ("ScatterElements" | "ScatterND", 16) => Compatible, // reduction=none
        ("RoiAlign", 16) => Convert(roialign_16),
        // Opset 18.
        (
            "ReduceL1" | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceMax"
            | "ReduceMean" | "ReduceMin" | "ReduceProd" | "ReduceSumSquare",
            18,
        ) => Convert(axes_to_input),
        ("Split", 18) => Convert(split_18),
        ("OptionalGetElement" | "ScatterElements" | "ScatterND", 18) => Types,
        // Pad axes, Resize antialias/axes/keep_aspect_ratio_policy, LpPool
        // ceil_mode/dilations, OptionalHasElement's input optional.
        ("Pad" | "Resize" | "LpPool" | "OptionalHasElement", 18) => Compatible,
        // Opset 19.
        (
            "Constant" | "Equal" | "Identity" | "If" | "Loop" | "Reshape" | "Scan" | "Shape"
            | "Size",
            19,
        ) => Types,
        // AveragePool dilations; Cast saturate (float8 only); DequantizeLinear
        // scale types; Pad mode=wrap; Resize half_pixel_symmetric.
        ("AveragePool" | "Cast" | "CastLike" | "DequantizeLinear" | "Pad" | "Resize", 19) => {
            Compatible
        }
        ("QuantizeLinear", 19) => Convert(quantize_19),
        // Opset 20.
        ("ConstantOfShape" | "IsInf" | "IsNaN" | "ReduceMax" | "ReduceMin", 20) => Types,
        ("GridSample", 20) => Convert(gridsample_20),
        // Opset 21.
        (
            "Cast" | "CastLike" | "Constant" | "ConstantOfShape" | "Flatten" | "Identity" | "If"
            | "Loop" | "Pad" | "Reshape" | "Scan" | "Shape" | "Size" | "Squeeze" | "Transpose"
            | "Unsqueeze",
            21,
        ) => Types,
        // block_size=0, output_dtype=0, wider scale types.
        ("DequantizeLinear" | "QuantizeLinear" | "QLinearMatMul", 21) => Compatible,
        _ => return None,
    })
}

/// The opsets (after the first) at which each ai.onnx operator's schema
/// changed, up to 21, from onnx 1.23.2:
/// `{s.name: sorted(since_versions)[1:]}` over
/// `onnx.defs.get_all_schemas_with_history()` in the default domain
/// (deprecations included: Upsample-10, Scatter-11).
pub(super) fn schema_changes(op: &str) -> &'static [i64] {
    SCHEMA_CHANGES
        .binary_search_by(|(name, _)| (*name).cmp(op))
        .map_or(&[], |i| SCHEMA_CHANGES[i].1)
}

pub(super) const SCHEMA_CHANGES: &[(&str, &[i64])] = &[
    ("Abs", &[6, 13]),
    ("Add", &[6, 7, 13, 14]),
    ("And", &[7]),
    ("ArgMax", &[11, 12, 13]),
    ("ArgMin", &[11, 12, 13]),
    ("AveragePool", &[7, 10, 11, 19]),
    ("BatchNormalization", &[6, 7, 9, 14, 15]),
    ("Cast", &[6, 9, 13, 19, 21]),
    ("CastLike", &[19, 21]),
    ("Ceil", &[6, 13]),
    ("Clip", &[6, 11, 12, 13]),
    ("Compress", &[11]),
    ("Concat", &[4, 11, 13]),
    ("Constant", &[9, 11, 12, 13, 19, 21]),
    ("ConstantOfShape", &[20, 21]),
    ("Conv", &[11]),
    ("ConvTranspose", &[11]),
    ("CumSum", &[14]),
    ("DFT", &[20]),
    ("DepthToSpace", &[11, 13]),
    ("DequantizeLinear", &[13, 19, 21]),
    ("Div", &[6, 7, 13, 14]),
    ("Dropout", &[6, 7, 10, 12, 13]),
    ("Elu", &[6]),
    ("Equal", &[7, 11, 13, 19]),
    ("Erf", &[13]),
    ("Exp", &[6, 13]),
    ("Expand", &[13]),
    ("Flatten", &[9, 11, 13, 21]),
    ("Floor", &[6, 13]),
    ("GRU", &[3, 7, 14]),
    ("Gather", &[11, 13]),
    ("GatherElements", &[13]),
    ("GatherND", &[12, 13]),
    ("Gemm", &[6, 7, 9, 11, 13]),
    ("GlobalLpPool", &[2]),
    ("Greater", &[7, 9, 13]),
    ("GreaterOrEqual", &[16]),
    ("GridSample", &[20]),
    ("GroupNormalization", &[21]),
    ("HardSigmoid", &[6]),
    ("Hardmax", &[11, 13]),
    ("Identity", &[13, 14, 16, 19, 21]),
    ("If", &[11, 13, 16, 19, 21]),
    ("InstanceNormalization", &[6]),
    ("IsInf", &[20]),
    ("IsNaN", &[13, 20]),
    ("LRN", &[13]),
    ("LSTM", &[7, 14]),
    ("LeakyRelu", &[6, 16]),
    ("Less", &[7, 9, 13]),
    ("LessOrEqual", &[16]),
    ("Log", &[6, 13]),
    ("LogSoftmax", &[11, 13]),
    ("Loop", &[11, 13, 16, 19, 21]),
    ("LpPool", &[2, 11, 18]),
    ("MatMul", &[9, 13]),
    ("Max", &[6, 8, 12, 13]),
    ("MaxPool", &[8, 10, 11, 12]),
    ("MaxUnpool", &[11]),
    ("Mean", &[6, 8, 13]),
    ("MeanVarianceNormalization", &[13]),
    ("Min", &[6, 8, 12, 13]),
    ("Mod", &[13]),
    ("Mul", &[6, 7, 13, 14]),
    ("Neg", &[6, 13]),
    ("NegativeLogLikelihoodLoss", &[13]),
    ("NonMaxSuppression", &[11]),
    ("NonZero", &[13]),
    ("OneHot", &[11]),
    ("OptionalGetElement", &[18]),
    ("OptionalHasElement", &[18]),
    ("Or", &[7]),
    ("PRelu", &[6, 7, 9, 16]),
    ("Pad", &[2, 11, 13, 18, 19, 21]),
    ("Pow", &[7, 12, 13, 15]),
    ("QLinearMatMul", &[21]),
    ("QuantizeLinear", &[13, 19, 21]),
    ("RNN", &[7, 14]),
    ("Reciprocal", &[6, 13]),
    ("ReduceL1", &[11, 13, 18]),
    ("ReduceL2", &[11, 13, 18]),
    ("ReduceLogSum", &[11, 13, 18]),
    ("ReduceLogSumExp", &[11, 13, 18]),
    ("ReduceMax", &[11, 12, 13, 18, 20]),
    ("ReduceMean", &[11, 13, 18]),
    ("ReduceMin", &[11, 12, 13, 18, 20]),
    ("ReduceProd", &[11, 13, 18]),
    ("ReduceSum", &[11, 13]),
    ("ReduceSumSquare", &[11, 13, 18]),
    ("Relu", &[6, 13, 14]),
    ("Reshape", &[5, 13, 14, 19, 21]),
    ("Resize", &[11, 13, 18, 19]),
    ("RoiAlign", &[16]),
    ("Scan", &[9, 11, 16, 19, 21]),
    ("Scatter", &[11]),
    ("ScatterElements", &[13, 16, 18]),
    ("ScatterND", &[13, 16, 18]),
    ("Selu", &[6]),
    ("Shape", &[13, 15, 19, 21]),
    ("Sigmoid", &[6, 13]),
    ("Sign", &[13]),
    ("Size", &[13, 19, 21]),
    ("Slice", &[10, 11, 13]),
    ("Softmax", &[11, 13]),
    ("SoftmaxCrossEntropyLoss", &[13]),
    ("SpaceToDepth", &[13]),
    ("Split", &[2, 11, 13, 18]),
    ("Sqrt", &[6, 13]),
    ("Squeeze", &[11, 13, 21]),
    ("Sub", &[6, 7, 13, 14]),
    ("Sum", &[6, 8, 13]),
    ("Tanh", &[6, 13]),
    ("Tile", &[6, 13]),
    ("TopK", &[10, 11]),
    ("Transpose", &[13, 21]),
    ("Unsqueeze", &[11, 13, 21]),
    ("Upsample", &[7, 9, 10]),
    ("Where", &[16]),
    ("Xor", &[7]),
];
