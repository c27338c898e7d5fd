//! Each rule on a small model that breaks it, and a clean model that passes.

use super::*;
use crate::ir::build::ModelBuilder;
use crate::ir::{Attribute, TypeInfo};

mod subgraphs;

/// x[1,3,8,8] -> `op` with `attrs` (and extra constant inputs) -> y.
fn one_op(op: &str, extra: &[Tensor], attrs: Vec<Attribute>) -> Model {
    one_op_at(13, op, extra, attrs)
}

/// [`one_op`] in a model importing ai.onnx at `opset`.
fn one_op_at(opset: i64, op: &str, extra: &[Tensor], attrs: Vec<Attribute>) -> Model {
    let mut b = ModelBuilder::new(opset);
    let x = b.input("x", DataType::FLOAT, &[1, 3, 8, 8]);
    let mut inputs = vec![x];
    for (k, t) in extra.iter().enumerate() {
        inputs.push(b.init(&format!("c{k}"), t.clone()));
    }
    let y = b.op(op, &inputs, attrs, "y");
    b.output(y, DataType::FLOAT);
    b.build().unwrap()
}

fn error(m: &Model) -> String {
    validate(m).expect_err("should be refused").to_string()
}

fn conv_weight() -> Tensor {
    Tensor::from_f32(vec![4, 3, 3, 3], &[0.5; 108])
}

#[test]
fn a_clean_model_passes() {
    let m = one_op(
        "Conv",
        &[conv_weight()],
        vec![
            Attribute::ints("strides", &[1, 1]),
            Attribute::ints("pads", &[1, 1, 1, 1]),
        ],
    );
    assert_eq!(validate(&m), Ok(()));
}

#[test]
fn arity_comes_from_the_schema_table() {
    let w = Tensor::from_f32(vec![8, 4], &[0.0; 32]);
    let extra: Vec<Tensor> = (0..51).map(|_| w.clone()).collect();
    let e = error(&one_op("MatMul", &extra, vec![]));
    assert!(
        e.contains("node 'y' (MatMul): has 52 inputs, ONNX allows 2"),
        "{e}"
    );
}

/// Padding that alone would make more than 2^28 positions on an axis is
/// refused: a Conv with pads of 2^62 ran in tract for hours (found by
/// fuzzing silero-op18-ifless); the Pad operator's pads likewise.
#[test]
fn padding_is_bounded() {
    let huge = 1i64 << 62;
    let e = error(&one_op(
        "Conv",
        &[conv_weight()],
        vec![Attribute::ints("pads", &[huge, 0, huge, 0])],
    ));
    assert!(
        e.contains("padded positions on axis 0, more than 268435456"),
        "{e}"
    );
    let ok = vec![Attribute::ints("pads", &[1, 1, 1, 1])];
    assert_eq!(validate(&one_op("Conv", &[conv_weight()], ok)), Ok(()));
    let pads = |p: &[i64]| [Tensor::from_i64(vec![8], p)];
    let e = error(&one_op("Pad", &pads(&[0, 0, 0, huge, 0, 0, 0, 1]), vec![]));
    assert!(e.contains("padded positions on axis 3"), "{e}");
    // Negative pads crop: they add no positions.
    let crop = pads(&[0, 0, -1, -1, 0, 0, -1, -1]);
    assert_eq!(validate(&one_op("Pad", &crop, vec![])), Ok(()));
    let e = error(&one_op_at(
        2,
        "Pad",
        &[],
        vec![Attribute::ints("pads", &[0, 0, 0, huge, 0, 0, 0, 0])],
    ));
    assert!(e.contains("padded positions on axis 3"), "{e}");
}

/// Pad's pads hold a begin and an end for every axis of its input, unless
/// opset 18's `axes` input names the padded axes: onnx's inference says
/// "Pads has incorrect number of values" (found by fuzzing: 4 pads for a
/// rank-3 input in an If branch, kept as a checker-* regression).
#[test]
fn pad_has_two_pads_an_axis() {
    let pads = |p: &[i64]| Tensor::from_i64(vec![p.len() as i64], p);
    let e = error(&one_op("Pad", &[pads(&[0, 0, 1, 1])], vec![]));
    assert!(
        e.contains("4 pads for an input of rank 4: 2 × 4 needed"),
        "{e}"
    );
    let all = pads(&[0, 0, 1, 1, 0, 0, 1, 1]);
    assert_eq!(validate(&one_op("Pad", &[all], vec![])), Ok(()));
    let value = Tensor::from_f32(vec![], &[0.0]);
    let axes = Tensor::from_i64(vec![2], &[2, 3]);
    let m = one_op_at(18, "Pad", &[pads(&[1, 1, 1, 1]), value, axes], vec![]);
    assert_eq!(validate(&m), Ok(()));
}

/// A Reshape whose constant shape cannot hold its input's known element
/// count is refused, as onnx's inference refuses it (found by fuzzing: 6
/// elements into `[4, -1]`).
#[test]
fn a_reshape_keeps_the_element_count() {
    let shape = |s: &[i64]| [Tensor::from_i64(vec![s.len() as i64], s)];
    for (s, ok) in [
        (&[4, -1][..], true),
        (&[192][..], true),
        (&[0, 3, -1][..], true),
        (&[5, -1][..], false),
        (&[7, 8][..], false),
    ] {
        let r = validate(&one_op("Reshape", &shape(s), vec![]));
        match r {
            Err(e) if !ok => assert!(
                e.to_string()
                    .contains("its input's 192 elements do not fit the shape"),
                "{s:?}: {e}"
            ),
            r => assert_eq!(r.is_ok(), ok, "{s:?}: {r:?}"),
        }
    }
}

/// A Conv's weight has the input's rank (found by fuzzing: an Add turned
/// Conv, its rank-1 bias as the weight, written, then refused by onnx's
/// checker).
#[test]
fn a_conv_weight_has_its_inputs_rank() {
    let bias = Tensor::from_f32(vec![4], &[0.5; 4]);
    let e = error(&one_op("Conv", &[bias], vec![]));
    assert!(
        e.contains("(Conv): its weight has rank 1, its input rank 4"),
        "{e}"
    );
}

/// A declared dim below -1 is refused; -1 is how some exporters say
/// "unknown" (found by fuzzing: an input of [1, 3, -2, 8], written, then
/// refused by onnx's checker).
#[test]
fn declared_dims_are_not_negative() {
    for (dim, ok) in [(-2, false), (-1, true)] {
        let mut m = one_op("Relu", &[], vec![]);
        m.graph.inputs[0].info.ty = Some(TypeInfo::tensor(DataType::FLOAT, &[1, 3, dim, 8]));
        match validate(&m) {
            Err(e) if !ok => assert!(e.to_string().contains("dim -2: a dim is >= 0"), "{e}"),
            r => assert_eq!(r.is_ok(), ok, "{dim}: {r:?}"),
        }
    }
}

#[test]
fn windows_need_positive_strides_and_consistent_lengths() {
    let e = error(&one_op(
        "MaxPool",
        &[],
        vec![
            Attribute::ints("kernel_shape", &[2, 2]),
            Attribute::ints("strides", &[0, 0]),
        ],
    ));
    assert!(e.contains("strides=[0, 0]: every entry must be > 0"), "{e}");
    let e = error(&one_op(
        "Conv",
        &[conv_weight()],
        vec![Attribute::ints("pads", &[1, 1])],
    ));
    assert!(e.contains("pads has 2 entries"), "{e}");
    let e = error(&one_op("MaxPool", &[], vec![]));
    assert!(e.contains("kernel_shape is required"), "{e}");
    // A window wider than the padded input (x is 8x8; found by fuzzing).
    let dilated = vec![Attribute::ints("dilations", &[i32::MAX as i64, 1])];
    let e = error(&one_op("Conv", &[conv_weight()], dilated));
    assert!(
        e.contains("its window spans 4294967295 at spatial axis 0, more than its padded input's 8"),
        "{e}"
    );
    let whole = vec![Attribute::ints("kernel_shape", &[8, 8])];
    assert_eq!(validate(&one_op("AveragePool", &[], whole)), Ok(()));
}

#[test]
fn axes_within_rank() {
    let e = error(&one_op("Flatten", &[], vec![Attribute::int("axis", 100)]));
    assert!(
        e.contains("axis=100 is outside [-4, 4] for its input's rank 4"),
        "{e}"
    );
    let flat_ok = one_op("Flatten", &[], vec![Attribute::int("axis", 4)]);
    assert_eq!(validate(&flat_ok), Ok(()));
    let e = error(&one_op(
        "ReduceMean",
        &[],
        vec![Attribute::ints("axes", &[1 << 40])],
    ));
    assert!(e.contains("axes=[1099511627776]"), "{e}");
    let e = error(&one_op(
        "ReduceMean",
        &[],
        vec![Attribute::ints("axes", &[1, -3])],
    ));
    assert!(e.contains("names an axis twice"), "{e}");
    let e = error(&one_op(
        "Transpose",
        &[],
        vec![Attribute::ints("perm", &[0, 1, 1, 2])],
    ));
    assert!(e.contains("not a permutation"), "{e}");
}

#[test]
fn ranks_propagate_through_plain_operators() {
    // x -> Relu -> Flatten(axis=9): the Relu's rank is not declared.
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 3, 8, 8]);
    let r = b.op("Relu", &[x], vec![], "r");
    let y = b.op("Flatten", &[r], vec![Attribute::int("axis", 9)], "y");
    b.output(y, DataType::FLOAT);
    let e = error(&b.build().unwrap());
    assert!(e.contains("node 'y' (Flatten): axis=9"), "{e}");
}

#[test]
fn attribute_kinds_and_names_follow_the_schema() {
    let e = error(&one_op("Flatten", &[], vec![Attribute::float("axis", 1.0)]));
    assert!(e.contains("attribute axis must be Int, not Float"), "{e}");
    let e = error(&one_op("Relu", &[], vec![Attribute::int("group", 2)]));
    assert!(
        e.contains("attribute group is not one ONNX defines for Relu"),
        "{e}"
    );
}

#[test]
fn tensors_hold_what_their_type_and_dims_say() {
    let strings = Tensor::new(
        DataType::STRING,
        vec![2],
        TensorData::Raw(vec![1u8, 2, 3].into()),
    );
    assert!(tensor(&strings).unwrap_err().contains("raw bytes"));
    let claims = Tensor::new(DataType::FLOAT, vec![1 << 31], TensorData::Float(vec![]));
    assert!(tensor(&claims)
        .unwrap_err()
        .contains("more than 2147483647 elements"));
    let short = Tensor::new(DataType::FLOAT, vec![4], TensorData::Float(vec![1.0]));
    assert!(tensor(&short).unwrap_err().contains("holds 1 entries"));
    let raw = Tensor::new(
        DataType::INT64,
        vec![2],
        TensorData::Raw(vec![0u8; 12].into()),
    );
    assert!(tensor(&raw).unwrap_err().contains("holds 12 bytes"));
    let unknown = Tensor::new(DataType(99), vec![], TensorData::Raw(vec![].into()));
    assert!(tensor(&unknown)
        .unwrap_err()
        .contains("unknown element type"));
    assert_eq!(tensor(&Tensor::from_i64(vec![2], &[1, 2])), Ok(()));
}

#[test]
fn constant_shapes_that_size_an_allocation_are_bounded() {
    let shape = Tensor::from_i64(vec![1], &[1 << 31]);
    let mut b = ModelBuilder::new(13);
    let s = b.init("s", shape);
    let y = b.op("ConstantOfShape", &[s], vec![], "y");
    b.output(y, DataType::FLOAT);
    let e = error(&b.build().unwrap());
    assert!(e.contains("(ConstantOfShape): its shape input"), "{e}");
    let e = error(&one_op(
        "Expand",
        &[Tensor::from_i64(vec![2], &[1 << 20, 1 << 20])],
        vec![],
    ));
    assert!(e.contains("(Expand): its shape input"), "{e}");
}

#[test]
fn graph_input_dims_are_bounded() {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1 << 40, 4]);
    let y = b.op("Relu", &[x], vec![], "y");
    b.output(y, DataType::FLOAT);
    let e = error(&b.build().unwrap());
    assert!(e.contains("graph input 'x': dims"), "{e}");
}

/// A fed input needs an element type, and a declared one must exist.
#[test]
fn declared_element_types_are_ones_onnx_defines() {
    for (elem, expect) in [
        (0, "graph input 'x': its tensor type has no element type"),
        (
            30,
            "graph input 'x': element type 30 is not one ONNX defines",
        ),
    ] {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType(elem), &[2, 3]);
        let y = b.op("Identity", &[x], vec![], "y");
        b.output(y, DataType::FLOAT);
        let e = error(&b.build().unwrap());
        assert!(e.contains(expect), "{e}");
    }
}

/// onnx's checker finds no schema for these: an operator ONNX does not
/// define, one that does not exist yet at the model's opset, a deprecated
/// one, and an opset that does not exist.
#[test]
fn operators_must_exist_at_the_models_opset() {
    let e = error(&one_op("NoSuchOp", &[], vec![]));
    assert!(
        e.contains("node 'y' (NoSuchOp): ai.onnx has no operator NoSuchOp"),
        "{e}"
    );
    let e = error(&one_op_at(7, "Resize", &[], vec![]));
    assert!(
        e.contains("(Resize): Resize does not exist at opset 7: ONNX defines it from opset 10"),
        "{e}"
    );
    let scales = Tensor::from_f32(vec![4], &[1.0, 1.0, 2.0, 2.0]);
    let e = error(&one_op_at(
        10,
        "Upsample",
        std::slice::from_ref(&scales),
        vec![],
    ));
    assert!(
        e.contains("Upsample is deprecated from opset 10 (the model's is 10)"),
        "{e}"
    );
    assert_eq!(
        validate(&one_op_at(9, "Upsample", &[scales], vec![])),
        Ok(())
    );
    let e = error(&one_op_at(0, "Relu", &[], vec![]));
    assert!(
        e.contains("opset_import: ai.onnx version 0: opset versions start at 1"),
        "{e}"
    );
    // Past the newest opset the schemas know, the newest schema judges (as
    // in onnx's checker).
    assert_eq!(validate(&one_op_at(99, "Relu", &[], vec![])), Ok(()));
    // No opset at all: refused from IR 3, ai.onnx 1 before (found by
    // fuzzing: an IR-8 model whose opset_import was emptied).
    let mut m = one_op("Relu", &[], vec![]);
    m.opset_import.clear();
    let e = error(&m);
    assert!(e.contains("opset_import: it is empty"), "{e}");
    m.ir_version = Some(2);
    assert_eq!(validate(&m), Ok(()));
}

/// BatchNormalization's optional outputs come all or none: 1 or 5 from
/// opset 6, 1 or 3 from 14 (found by fuzzing: 2 outputs at opset 13).
#[test]
fn batch_norm_outputs_come_all_or_none() {
    for (opset, outputs, ok) in [
        (13, 2, false),
        (13, 1, true),
        (13, 5, true),
        (14, 3, true),
        (14, 5, false),
    ] {
        let mut b = ModelBuilder::new(opset);
        let x = b.input("x", DataType::FLOAT, &[1, 3, 4, 4]);
        let p: Vec<_> = ["scale", "bias", "mean", "var"]
            .iter()
            .map(|n| Some(b.init(n, Tensor::from_f32(vec![3], &[1.0; 3]))))
            .collect();
        let names: Vec<String> = (0..outputs).map(|k| format!("y{k}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut inputs = vec![Some(x)];
        inputs.extend(p);
        let attrs = if opset >= 14 && outputs > 1 {
            vec![Attribute::int("training_mode", 1)]
        } else {
            vec![]
        };
        let y = b.op_n("BatchNormalization", &inputs, attrs, &names);
        b.output(y[0], DataType::FLOAT);
        let m = b.build().unwrap();
        match validate(&m) {
            // (5 at opset 14 is over the schema's count already.)
            Err(e) if !ok => assert!(
                e.to_string().contains(&format!("has {outputs} outputs")),
                "opset {opset}, {outputs}: {e}"
            ),
            r => assert_eq!(r.is_ok(), ok, "opset {opset}, {outputs} outputs: {r:?}"),
        }
    }
}

#[test]
fn attributes_follow_the_schema_at_the_models_opset() {
    let b = Tensor::from_f32(vec![8], &[1.0; 8]);
    let axis = || vec![Attribute::int("axis", 3), Attribute::int("broadcast", 1)];
    assert_eq!(
        validate(&one_op_at(6, "Add", std::slice::from_ref(&b), axis())),
        Ok(())
    );
    let e = error(&one_op_at(13, "Add", &[b], axis()));
    assert!(
        e.contains("attribute axis is not one ONNX defines for Add at opset 13"),
        "{e}"
    );
    let e = error(&one_op("Concat", &[], vec![]));
    assert!(e.contains("(Concat): attribute axis is required"), "{e}");
    // Names starting with two underscores are implementation details.
    let internal = vec![Attribute::int("__exporter_hint", 1)];
    assert_eq!(validate(&one_op("Relu", &[], internal)), Ok(()));
}

#[test]
fn element_types_follow_the_type_constraints() {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::INT64, &[2, 3]);
    let y = b.op("Relu", &[x], vec![], "y");
    b.output(y, DataType::INT64);
    let e = error(&b.build().unwrap());
    assert!(
        e.contains(
            "node 'y' (Relu): input 0 'x' is i64, which Relu-13 does not allow \
             (T is one of: f32 f16 f64 bf16)"
        ),
        "{e}"
    );
    // Both inputs of Add are T: one type.
    let e = error(&one_op("Add", &[Tensor::from_i64(vec![1], &[1])], vec![]));
    assert!(
        e.contains("input 1 'c0' is i64 but input 0 'x' is f32: both are T"),
        "{e}"
    );
    // The output's declared type is the one the schema makes.
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[2, 3]);
    let y = b.op("Relu", &[x], vec![], "y");
    b.output(y, DataType::INT64);
    let e = error(&b.build().unwrap());
    assert!(
        e.contains("output 0 'y' is declared i64, but Relu-13 makes it f32"),
        "{e}"
    );
}

/// Types carried forward: Shape makes i64, Cast says its type, neither declared.
#[test]
fn element_types_are_carried_through_the_graph() {
    for (op, attrs) in [
        ("Shape", vec![]),
        ("Cast", vec![Attribute::int("to", DataType::INT64.0 as i64)]),
    ] {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 3]);
        let s = b.op(op, &[x], attrs, "s");
        let y = b.op("Relu", &[s], vec![], "y");
        b.output(y, DataType::INT64);
        let e = error(&b.build().unwrap());
        assert!(
            e.contains("node 'y' (Relu): input 0 's' is i64"),
            "{op}: {e}"
        );
    }
    // A clean chain through the same operators passes.
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[2, 3]);
    let s = b.op("Shape", &[x], vec![], "s");
    let f = b.op("Cast", &[s], vec![Attribute::int("to", 1)], "f");
    let y = b.op("Relu", &[f], vec![], "y");
    b.output(y, DataType::FLOAT);
    assert_eq!(validate(&b.build().unwrap()), Ok(()));
}

/// A declared shape the inputs contradict: the batch of `x` changed to 64
/// while the output still says 1 (found by benches/fuzz.rs), through Conv,
/// Flatten and Gemm.
#[test]
fn declared_dims_agree_with_what_the_inputs_make() {
    let build = |batch: i64| {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[batch, 3, 8, 8]);
        let w = b.init("w", conv_weight());
        let c = b.op(
            "Conv",
            &[x, w],
            vec![Attribute::ints("pads", &[1, 1, 1, 1])],
            "c",
        );
        let f = b.op("Flatten", &[c], vec![], "f");
        let gw = b.init("gw", Tensor::from_f32(vec![256, 5], &[0.5; 1280]));
        let y = b.op("Gemm", &[f, gw], vec![], "y");
        b.output(y, DataType::FLOAT);
        let mut m = b.build().unwrap();
        m.graph.outputs[0].info.ty = Some(TypeInfo::tensor(DataType::FLOAT, &[1, 5]));
        m
    };
    assert_eq!(validate(&build(1)), Ok(()));
    let e = error(&build(64));
    assert!(
        e.contains(
            "node 'y' (Gemm): output 0 'y' is declared [1, 5], but its inputs make it [64, 5]"
        ),
        "{e}"
    );
}

#[test]
fn dims_that_do_not_broadcast_or_multiply_are_refused() {
    let e = error(&one_op(
        "Add",
        &[Tensor::from_f32(vec![5], &[1.0; 5])],
        vec![],
    ));
    assert!(
        e.contains("(Add): its inputs' dims [1, 3, 8, 8] and [5] do not broadcast"),
        "{e}"
    );
    assert_eq!(
        validate(&one_op(
            "Add",
            &[Tensor::from_f32(vec![8], &[1.0; 8])],
            vec![]
        )),
        Ok(())
    );
    let e = error(&one_op(
        "MatMul",
        &[Tensor::from_f32(vec![4, 2], &[1.0; 8])],
        vec![],
    ));
    assert!(e.contains("inner dims 8 and 4 differ"), "{e}");
    // Gemm's inner dims, with transB (found by fuzzing: a Flatten of 12
    // into a 16-row weight).
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 12]);
    let w = b.init("w", Tensor::from_f32(vec![5, 16], &[0.5; 80]));
    let y = b.op("Gemm", &[x, w], vec![Attribute::int("transB", 1)], "y");
    b.output(y, DataType::FLOAT);
    let e = error(&b.build().unwrap());
    assert!(
        e.contains(
            "(Gemm): its inputs [1, 12] and [5, 16] do not multiply: inner dims 12 and 16 differ"
        ),
        "{e}"
    );
}

/// Before opset 7 a binary operator broadcasts only with `broadcast=1`,
/// and ONNX then gives the output the first input's dims, where tract
/// broadcasts both ways: a model relying on numpy broadcasting there was
/// accepted and written with dims onnx's checker refuses (found by
/// `benches/fuzz.rs`: a mutant moved to opset 1).
#[test]
fn legacy_binary_operators_broadcast_only_when_told() {
    let bias = || vec![Tensor::from_f32(vec![8], &[1.0; 8])];
    let e = error(&one_op_at(6, "Add", &bias(), vec![]));
    assert!(
        e.contains("(Add): its inputs' dims [1, 3, 8, 8] and [8] differ: before opset 7"),
        "{e}"
    );
    let told = vec![Attribute::int("broadcast", 1)];
    assert_eq!(validate(&one_op_at(6, "Add", &bias(), told)), Ok(()));
    assert_eq!(validate(&one_op_at(7, "Add", &bias(), vec![])), Ok(()));
    // From opset 7 (Add-7 serves 7 to 12) dims must broadcast.
    let five = [Tensor::from_f32(vec![5], &[1.0; 5])];
    for opset in [7, 11, 13] {
        let e = error(&one_op_at(opset, "Add", &five, vec![]));
        assert!(e.contains("do not broadcast"), "opset {opset}: {e}");
    }
    let same = [Tensor::from_f32(vec![1, 3, 8, 8], &[1.0; 192])];
    assert_eq!(validate(&one_op_at(6, "Add", &same, vec![])), Ok(()));
}

/// A shape computed at run time still fixes the rank when its length is
/// known: an Expand to `Cast(Shape(x))` is rank 3, which Gemm refuses
/// (found by fuzzing: a magika Mul turned Gemm, fed through such an
/// Expand). Not a Reshape's: onnx's inference leaves its rank unknown, and
/// real models declare it wrongly (ddddocr's CRNN, accepted as it is).
#[test]
fn a_computed_shape_of_known_length_fixes_the_rank() {
    for (op, shape_input) in [("Expand", 1), ("ConstantOfShape", 0)] {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 3, 4]);
        let s = b.op("Shape", &[x], vec![], "s");
        let s = b.op("Cast", &[s], vec![Attribute::int("to", 7)], "cast");
        let r = match shape_input {
            0 => b.op(op, &[s], vec![], "r"),
            _ => b.op(op, &[x, s], vec![], "r"),
        };
        let w = b.init("w", Tensor::from_f32(vec![4, 5], &[0.5; 20]));
        let y = b.op("Gemm", &[r, w], vec![], "y");
        b.output(y, DataType::FLOAT);
        let e = error(&b.build().unwrap());
        assert!(
            e.contains("node 'y' (Gemm): input 0 has rank 3, Gemm takes rank 2"),
            "{op}: {e}"
        );
    }
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[6, 4]);
    let s = b.input("s", DataType::FLOAT, &[2, 3, 4]);
    let shape = b.op("Shape", &[s], vec![], "shape");
    let r = b.op("Reshape", &[x, shape], vec![], "r");
    b.output(r, DataType::FLOAT);
    let mut m = b.build().unwrap();
    m.graph.outputs[0].info.ty = Some(TypeInfo::tensor(DataType::FLOAT, &[1, 24]));
    assert_eq!(validate(&m), Ok(()), "a Reshape's declared rank stands");
}

/// Ranks learnt from carried dims reach the rules: a Transpose of a
/// ConstantOfShape-sized sum whose perm is one too long (found by fuzzing).
#[test]
fn ranks_follow_carried_dims() {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[2, 3]);
    let shape = b.init("shape", Tensor::from_i64(vec![2], &[2, 3]));
    let k = b.op("ConstantOfShape", &[shape], vec![], "k");
    let a = b.op("Add", &[x, k], vec![], "a");
    let t = b.op(
        "Transpose",
        &[a],
        vec![Attribute::ints("perm", &[0, 2, 1])],
        "t",
    );
    b.output(t, DataType::FLOAT);
    let e = error(&b.build().unwrap());
    assert!(
        e.contains("node 't' (Transpose): perm=[0, 2, 1] has 3 entries, its input has rank 2"),
        "{e}"
    );
}
