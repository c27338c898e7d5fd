//! A compact table of what ONNX's operator schemas say about arity and
//! attribute types, for the default domain. Each row is the union over every
//! opset (Clip took 1 input before opset 11 and up to 3 since, so its row
//! says 1..=3): the table refuses what no version allows, never what one
//! version allows. Operators not listed (newer ones, other domains) are
//! skipped, not refused.

/// Any number.
const N: usize = usize::MAX;

/// (op, inputs min, inputs max, outputs min, outputs max). Omitted optional
/// inputs and outputs (empty names) count: ONNX counts them too.
#[rustfmt::skip]
const ARITY: &[(&str, usize, usize, usize, usize)] = &[
    ("Abs", 1, 1, 1, 1), ("Acos", 1, 1, 1, 1), ("Acosh", 1, 1, 1, 1), ("Add", 2, 2, 1, 1),
    ("AffineGrid", 2, 2, 1, 1), ("And", 2, 2, 1, 1), ("ArgMax", 1, 1, 1, 1), ("ArgMin", 1, 1, 1, 1),
    ("Asin", 1, 1, 1, 1), ("Asinh", 1, 1, 1, 1), ("Atan", 1, 1, 1, 1), ("Atanh", 1, 1, 1, 1),
    ("AveragePool", 1, 1, 1, 1), ("BatchNormalization", 5, 5, 1, 5), ("Bernoulli", 1, 1, 1, 1),
    ("BitShift", 2, 2, 1, 1), ("BitwiseAnd", 2, 2, 1, 1), ("BitwiseNot", 1, 1, 1, 1),
    ("BitwiseOr", 2, 2, 1, 1), ("BitwiseXor", 2, 2, 1, 1), ("BlackmanWindow", 1, 1, 1, 1),
    ("Cast", 1, 1, 1, 1), ("CastLike", 2, 2, 1, 1), ("Ceil", 1, 1, 1, 1), ("Celu", 1, 1, 1, 1),
    ("CenterCropPad", 2, 2, 1, 1), ("Clip", 1, 3, 1, 1), ("Col2Im", 3, 3, 1, 1),
    ("Compress", 2, 2, 1, 1), ("Concat", 1, N, 1, 1), ("ConcatFromSequence", 1, 1, 1, 1),
    ("Constant", 0, 0, 1, 1), ("ConstantOfShape", 1, 1, 1, 1), ("Conv", 2, 3, 1, 1),
    ("ConvInteger", 2, 4, 1, 1), ("ConvTranspose", 2, 3, 1, 1), ("Cos", 1, 1, 1, 1),
    ("Cosh", 1, 1, 1, 1), ("CumSum", 2, 2, 1, 1), ("DFT", 1, 3, 1, 1), ("DeformConv", 3, 5, 1, 1),
    ("DepthToSpace", 1, 1, 1, 1), ("DequantizeLinear", 2, 3, 1, 1), ("Det", 1, 1, 1, 1),
    ("Div", 2, 2, 1, 1), ("Dropout", 1, 3, 1, 2), ("DynamicQuantizeLinear", 1, 1, 3, 3),
    ("Einsum", 1, N, 1, 1), ("Elu", 1, 1, 1, 1), ("Equal", 2, 2, 1, 1), ("Erf", 1, 1, 1, 1),
    ("Exp", 1, 1, 1, 1), ("Expand", 2, 2, 1, 1), ("EyeLike", 1, 1, 1, 1), ("Flatten", 1, 1, 1, 1),
    ("Floor", 1, 1, 1, 1), ("GRU", 3, 6, 0, 2), ("Gather", 2, 2, 1, 1),
    ("GatherElements", 2, 2, 1, 1), ("GatherND", 2, 2, 1, 1), ("Gelu", 1, 1, 1, 1),
    ("Gemm", 2, 3, 1, 1), ("GlobalAveragePool", 1, 1, 1, 1), ("GlobalLpPool", 1, 1, 1, 1),
    ("GlobalMaxPool", 1, 1, 1, 1), ("Greater", 2, 2, 1, 1), ("GreaterOrEqual", 2, 2, 1, 1),
    ("GridSample", 2, 2, 1, 1), ("GroupNormalization", 3, 3, 1, 1), ("HammingWindow", 1, 1, 1, 1),
    ("HannWindow", 1, 1, 1, 1), ("HardSigmoid", 1, 1, 1, 1), ("HardSwish", 1, 1, 1, 1),
    ("Hardmax", 1, 1, 1, 1), ("Identity", 1, 1, 1, 1), ("If", 1, 1, 1, N),
    ("InstanceNormalization", 3, 3, 1, 1), ("IsInf", 1, 1, 1, 1), ("IsNaN", 1, 1, 1, 1),
    ("LRN", 1, 1, 1, 1), ("LSTM", 3, 8, 0, 3), ("LayerNormalization", 2, 3, 1, 3),
    ("LeakyRelu", 1, 1, 1, 1), ("Less", 2, 2, 1, 1), ("LessOrEqual", 2, 2, 1, 1),
    ("Log", 1, 1, 1, 1), ("LogSoftmax", 1, 1, 1, 1), ("Loop", 2, N, 1, N),
    ("LpNormalization", 1, 1, 1, 1), ("LpPool", 1, 1, 1, 1), ("MatMul", 2, 2, 1, 1),
    ("MatMulInteger", 2, 4, 1, 1), ("Max", 1, N, 1, 1), ("MaxPool", 1, 1, 1, 2),
    ("MaxRoiPool", 2, 2, 1, 1), ("MaxUnpool", 2, 3, 1, 1), ("Mean", 1, N, 1, 1),
    ("MeanVarianceNormalization", 1, 1, 1, 1), ("MelWeightMatrix", 5, 5, 1, 1),
    ("Min", 1, N, 1, 1), ("Mish", 1, 1, 1, 1), ("Mod", 2, 2, 1, 1), ("Mul", 2, 2, 1, 1),
    ("Multinomial", 1, 1, 1, 1), ("Neg", 1, 1, 1, 1), ("NegativeLogLikelihoodLoss", 2, 3, 1, 1),
    ("NonMaxSuppression", 2, 5, 1, 1), ("NonZero", 1, 1, 1, 1), ("Not", 1, 1, 1, 1),
    ("OneHot", 3, 3, 1, 1), ("Or", 2, 2, 1, 1), ("PRelu", 2, 2, 1, 1), ("Pad", 1, 4, 1, 1),
    ("Pow", 2, 2, 1, 1), ("QLinearConv", 8, 9, 1, 1), ("QLinearMatMul", 8, 8, 1, 1),
    ("QuantizeLinear", 2, 3, 1, 1), ("RNN", 3, 6, 0, 2), ("RandomNormal", 0, 0, 1, 1),
    ("RandomNormalLike", 1, 1, 1, 1), ("RandomUniform", 0, 0, 1, 1),
    ("RandomUniformLike", 1, 1, 1, 1), ("Range", 3, 3, 1, 1), ("Reciprocal", 1, 1, 1, 1),
    ("ReduceL1", 1, 2, 1, 1), ("ReduceL2", 1, 2, 1, 1), ("ReduceLogSum", 1, 2, 1, 1),
    ("ReduceLogSumExp", 1, 2, 1, 1), ("ReduceMax", 1, 2, 1, 1), ("ReduceMean", 1, 2, 1, 1),
    ("ReduceMin", 1, 2, 1, 1), ("ReduceProd", 1, 2, 1, 1), ("ReduceSum", 1, 2, 1, 1),
    ("ReduceSumSquare", 1, 2, 1, 1), ("Relu", 1, 1, 1, 1), ("Reshape", 1, 2, 1, 1),
    ("Resize", 1, 4, 1, 1), ("ReverseSequence", 2, 2, 1, 1), ("RoiAlign", 3, 3, 1, 1),
    ("Round", 1, 1, 1, 1), ("STFT", 2, 4, 1, 1), ("Scan", 1, N, 1, N), ("Scatter", 3, 3, 1, 1),
    ("ScatterElements", 3, 3, 1, 1), ("ScatterND", 3, 3, 1, 1), ("Selu", 1, 1, 1, 1),
    ("SequenceAt", 2, 2, 1, 1), ("SequenceConstruct", 1, N, 1, 1), ("SequenceEmpty", 0, 0, 1, 1),
    ("SequenceErase", 1, 2, 1, 1), ("SequenceInsert", 2, 3, 1, 1), ("SequenceLength", 1, 1, 1, 1),
    ("Shape", 1, 1, 1, 1), ("Shrink", 1, 1, 1, 1), ("Sigmoid", 1, 1, 1, 1), ("Sign", 1, 1, 1, 1),
    ("Sin", 1, 1, 1, 1), ("Sinh", 1, 1, 1, 1), ("Size", 1, 1, 1, 1), ("Slice", 1, 5, 1, 1),
    ("Softmax", 1, 1, 1, 1), ("SoftmaxCrossEntropyLoss", 2, 3, 1, 2), ("Softplus", 1, 1, 1, 1),
    ("Softsign", 1, 1, 1, 1), ("SpaceToDepth", 1, 1, 1, 1), ("Split", 1, 2, 1, N),
    ("SplitToSequence", 1, 2, 1, 1), ("Sqrt", 1, 1, 1, 1), ("Squeeze", 1, 2, 1, 1),
    ("StringNormalizer", 1, 1, 1, 1), ("Sub", 2, 2, 1, 1), ("Sum", 1, N, 1, 1),
    ("Tan", 1, 1, 1, 1), ("Tanh", 1, 1, 1, 1), ("TfIdfVectorizer", 1, 1, 1, 1),
    ("ThresholdedRelu", 1, 1, 1, 1), ("Tile", 2, 3, 1, 1), ("TopK", 1, 2, 2, 2),
    ("Transpose", 1, 1, 1, 1), ("Trilu", 1, 2, 1, 1), ("Unique", 1, 1, 1, 4),
    ("Unsqueeze", 1, 2, 1, 1), ("Upsample", 1, 2, 1, 1), ("Where", 3, 3, 1, 1), ("Xor", 2, 2, 1, 1),
];

/// Inputs and outputs a default-domain operator may have, when listed.
pub fn arity(op: &str) -> Option<(usize, usize, usize, usize)> {
    ARITY
        .binary_search_by(|row| row.0.cmp(op))
        .ok()
        .map(|i| (ARITY[i].1, ARITY[i].2, ARITY[i].3, ARITY[i].4))
}

/// The kind of value an attribute holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Int,
    Ints,
    Float,
    String,
    Graph,
}

/// Attribute names that hold the same kind in every default-domain operator
/// that has them (`value` is not here: a tensor in Constant, a float in the
/// old Pad).
#[rustfmt::skip]
const ATTR_KINDS: &[(&str, Kind)] = &[
    ("alpha", Kind::Float), ("auto_pad", Kind::String), ("axes", Kind::Ints), ("axis", Kind::Int),
    ("beta", Kind::Float), ("blocksize", Kind::Int), ("body", Kind::Graph),
    ("ceil_mode", Kind::Int), ("count_include_pad", Kind::Int), ("dilations", Kind::Ints),
    ("else_branch", Kind::Graph), ("epsilon", Kind::Float), ("gamma", Kind::Float),
    ("group", Kind::Int), ("keepdims", Kind::Int), ("kernel_shape", Kind::Ints),
    ("mode", Kind::String), ("momentum", Kind::Float), ("noop_with_empty_axes", Kind::Int),
    ("output_padding", Kind::Ints), ("output_shape", Kind::Ints), ("pads", Kind::Ints),
    ("perm", Kind::Ints), ("storage_order", Kind::Int), ("strides", Kind::Ints),
    ("then_branch", Kind::Graph), ("to", Kind::Int), ("transA", Kind::Int), ("transB", Kind::Int),
];

/// The kind an attribute of this name must hold, when the table knows it.
pub fn attr_kind(name: &str) -> Option<Kind> {
    ATTR_KINDS.iter().find(|(n, _)| *n == name).map(|&(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_rows_consistent() {
        assert!(
            ARITY.windows(2).all(|w| w[0].0 < w[1].0),
            "ARITY not sorted"
        );
        assert!(ARITY.iter().all(|r| r.1 <= r.2 && r.3 <= r.4), "min > max");
        assert_eq!(arity("MatMul"), Some((2, 2, 1, 1)));
        assert_eq!(arity("NoSuchOp"), None);
        assert_eq!(attr_kind("axis"), Some(Kind::Int));
    }
}
