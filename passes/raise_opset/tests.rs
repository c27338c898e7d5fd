use super::table::SCHEMA_CHANGES;
use super::*;
use crate::ir::build::ModelBuilder;
use crate::ir::diff::model_diff;
use crate::ir::TypeInfo;
use crate::passes::testing::{check, op_types};

const PASS: &str = "raise-opset";

fn f32s(dims: &[i64]) -> Tensor {
    let n: i64 = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    Tensor::from_f32(dims.to_vec(), &v)
}

fn raised(m: &Model, to: i64) -> (Model, serde_json::Value) {
    let mut out = m.clone();
    let report = raise(&mut out, to).unwrap_or_else(|e| panic!("{e:#}"));
    (out, report)
}

fn attrs_of(m: &Model, op_type: &str) -> Vec<Vec<String>> {
    let g = &m.graph;
    g.op_order()
        .unwrap()
        .into_iter()
        .filter_map(|id| g.op(id))
        .filter(|op| op.op_type == op_type)
        .map(|op| op.attributes.iter().map(|a| a.name.clone()).collect())
        .collect()
}

fn ints_attr(name: &str, v: &[i64]) -> Attribute {
    Attribute::ints(name, v)
}

/// x[1,3,1,4] → Squeeze{axes=[0,2]} → Unsqueeze{axes=[1]} → Relu, at 12.
#[test]
fn squeeze_and_unsqueeze_axes_become_inputs() {
    let mut b = ModelBuilder::new(12);
    let x = b.input("x", DataType::FLOAT, &[1, 3, 1, 4]);
    let s = b.op("Squeeze", &[x], vec![ints_attr("axes", &[0, 2])], "s");
    let u = b.op("Unsqueeze", &[s], vec![ints_attr("axes", &[1])], "u");
    let y = b.op("Relu", &[u], vec![], "y");
    b.output(y, DataType::FLOAT);
    let m = b.build().unwrap();
    let after = check("raise-opset__squeeze-unsqueeze", &m, PASS);
    assert_eq!(after.opset(""), Some(13));
    assert!(attrs_of(&after, "Squeeze")[0].is_empty());
    assert!(attrs_of(&after, "Unsqueeze")[0].is_empty());
    let (_, report) = raised(&m, 13);
    assert_eq!(report["rewritten"]["Squeeze"], 1);
    assert_eq!(report["rewritten"]["Unsqueeze"], 1);
    assert_eq!(report["from"], 12);
}

/// Split{split=[2,3]} then ReduceSum with and without axes, at 11.
#[test]
fn split_and_reduce_sum_attributes_become_inputs() {
    let mut b = ModelBuilder::new(11);
    let x = b.input("x", DataType::FLOAT, &[2, 5, 3]);
    let parts = b.op_n(
        "Split",
        &[Some(x)],
        vec![Attribute::int("axis", 1), ints_attr("split", &[2, 3])],
        &["p0", "p1"],
    );
    let r0 = b.op(
        "ReduceSum",
        &[parts[0]],
        vec![ints_attr("axes", &[1]), Attribute::int("keepdims", 0)],
        "r0",
    );
    let r1 = b.op("ReduceSum", &[parts[1]], vec![], "r1");
    b.output(r0, DataType::FLOAT);
    b.output(r1, DataType::FLOAT);
    let m = b.build().unwrap();
    let after = check("raise-opset__split-reducesum", &m, PASS);
    assert_eq!(attrs_of(&after, "Split"), [["axis"]]);
    assert_eq!(attrs_of(&after, "ReduceSum"), [vec!["keepdims"], vec![]]);
}

/// At 18 the other Reduce ops take axes as an input too, and a Split
/// without sizes says how many outputs it makes.
#[test]
fn reduce_axes_and_split_num_outputs_at_18() {
    let mut b = ModelBuilder::new(12);
    let x = b.input("x", DataType::FLOAT, &[2, 6, 3]);
    let parts = b.op_n(
        "Split",
        &[Some(x)],
        vec![Attribute::int("axis", 1)],
        &["p0", "p1"],
    );
    let m0 = b.op(
        "ReduceMean",
        &[parts[0]],
        vec![ints_attr("axes", &[-1])],
        "m0",
    );
    let m1 = b.op(
        "ReduceMax",
        &[parts[1]],
        vec![Attribute::int("keepdims", 0)],
        "m1",
    );
    b.output(m0, DataType::FLOAT);
    b.output(m1, DataType::FLOAT);
    let m = b.build().unwrap();
    let after = check("raise-opset__reduce-split-18", &m, "raise-opset{to=18}");
    assert_eq!(after.opset(""), Some(18));
    assert_eq!(attrs_of(&after, "Split"), [["axis", "num_outputs"]]);
    assert_eq!(attrs_of(&after, "ReduceMean"), [Vec::<String>::new()]);
    // Up to 13 only ReduceSum changed: ReduceMean keeps its attribute.
    let (at13, _) = raised(&m, 13);
    assert_eq!(attrs_of(&at13, "ReduceMean"), [["axes"]]);
    assert_eq!(attrs_of(&at13, "Split"), [["axis"]]);
}

#[test]
fn dropout_ratio_becomes_an_input() {
    let mut b = ModelBuilder::new(11);
    let x = b.input("x", DataType::FLOAT, &[2, 3]);
    let d = b.op("Dropout", &[x], vec![Attribute::float("ratio", 0.3)], "d");
    let y = b.op("Relu", &[d], vec![], "y");
    b.output(y, DataType::FLOAT);
    let m = b.build().unwrap();
    let after = check("raise-opset__dropout", &m, PASS);
    assert!(attrs_of(&after, "Dropout")[0].is_empty());
}

/// Opset 9 (the caffe2 exports in onnx's test data): pools gain
/// `ceil_mode` at 10 with floor as default, and Dropout's mask becomes
/// bool, which matters only when something reads it.
#[test]
fn opset_9_pools_and_dropout_convert_unless_the_mask_is_read() {
    let mut b = ModelBuilder::new(9);
    let x = b.input("x", DataType::FLOAT, &[1, 1, 4, 4]);
    let k = Attribute::ints("kernel_shape", &[2, 2]);
    let m = b.op("MaxPool", &[x], vec![k.clone()], "m");
    let a = b.op("AveragePool", &[m], vec![k], "a");
    let d = b.op_n("Dropout", &[Some(a)], vec![], &["d", "mask"]);
    b.output(d[0], DataType::FLOAT);
    let model = b.build().unwrap();
    let (after, _) = raised(&model, 13);
    assert_eq!(after.opset(""), Some(13));
    assert_eq!(attrs_of(&after, "MaxPool"), [["kernel_shape"]]);

    b = ModelBuilder::new(9);
    let x = b.input("x", DataType::FLOAT, &[2, 3]);
    let d = b.op_n("Dropout", &[Some(x)], vec![], &["d", "mask"]);
    b.output(d[0], DataType::FLOAT);
    b.output(d[1], DataType::FLOAT);
    let model = b.build().unwrap();
    let err = format!("{:#}", raise(&mut model.clone(), 13).unwrap_err());
    assert!(err.contains("Dropout whose mask is read"), "{err}");
}

/// Before 13, Softmax(axis=1) on [2,3,4] normalises over 12 values per
/// row; from 13 over 3. On the last axis both agree.
#[test]
fn softmax_off_the_last_axis_is_wrapped_to_keep_its_meaning() {
    let mut b = ModelBuilder::new(12);
    let x = b.input("x", DataType::FLOAT, &[2, 3, 4]);
    let w = b.init("w", f32s(&[4, 4]));
    let h = b.op("MatMul", &[x, w], vec![], "h");
    let s = b.op("Softmax", &[h], vec![Attribute::int("axis", 1)], "s");
    let l = b.op("LogSoftmax", &[h], vec![Attribute::int("axis", 2)], "l");
    let t = b.op("Softmax", &[h], vec![Attribute::int("axis", -1)], "t");
    b.output(s, DataType::FLOAT);
    b.output(l, DataType::FLOAT);
    b.output(t, DataType::FLOAT);
    let m = b.build().unwrap();
    let after = check("raise-opset__softmax", &m, PASS);
    assert_eq!(
        op_types(&after),
        [
            "MatMul",
            "LogSoftmax",
            "Softmax",
            "Shape",
            "Flatten",
            "Softmax",
            "Reshape"
        ]
    );
    let (_, report) = raised(&m, 13);
    assert_eq!(report["rewritten"], json!({ "Softmax": 1 }));
    // The check has teeth: tract gives Softmax-12 its 2-D meaning, so
    // only relabelling the opset changes the outputs.
    let mut relabelled = m.clone();
    relabelled.opset_import[0].version = Some(13);
    assert!(crate::passes::testing::max_rel_err(&m, &relabelled) > 0.01);
}

/// The default axis changed from 1 to -1: it is written out, and on a
/// rank-2 input (whose rank the file gives) nothing else changes.
#[test]
fn softmax_default_axis_is_written_out() {
    let mut b = ModelBuilder::new(11);
    let x = b.input("x", DataType::FLOAT, &[2, 5]);
    let s = b.op("Softmax", &[x], vec![], "s");
    let h = b.op("Hardmax", &[x], vec![], "h");
    b.output(s, DataType::FLOAT);
    b.output(h, DataType::FLOAT);
    let m = b.build().unwrap();
    let (after, report) = raised(&m, 13);
    assert_eq!(op_types(&after), ["Softmax", "Hardmax"]);
    for op in ["Softmax", "Hardmax"] {
        assert_eq!(attrs_of(&after, op), [["axis"]]);
    }
    assert_eq!(report["rewritten"], json!({ "Hardmax": 1, "Softmax": 1 }));
}

/// Pad-2 and Clip-6 (opset 10): attributes become inputs; Clip's
/// defaults are written out.
#[test]
fn pad_and_clip_attributes_become_inputs_from_opset_10() {
    let mut b = ModelBuilder::new(10);
    let x = b.input("x", DataType::FLOAT, &[1, 2, 3, 3]);
    let p = b.op(
        "Pad",
        &[x],
        vec![
            ints_attr("pads", &[0, 0, 1, 1, 0, 0, 1, 1]),
            Attribute::float("value", 0.5),
        ],
        "p",
    );
    let c = b.op("Clip", &[p], vec![Attribute::float("max", 0.25)], "c");
    b.output(c, DataType::FLOAT);
    let mut m = b.build().unwrap();
    // Clip needs its input's type.
    let pad = m.graph.find_value("p").unwrap();
    let mut patch = Patch::new("type");
    patch.set_type(pad, TypeInfo::tensor(DataType::FLOAT, &[1, 2, 5, 5]));
    patch.apply(&mut m.graph).unwrap();
    let after = check("raise-opset__pad-clip-10", &m, PASS);
    assert!(attrs_of(&after, "Pad")[0].is_empty());
    assert!(attrs_of(&after, "Clip")[0].is_empty());
}

/// A branch: Squeeze{axes=[0]} of a [1,3] constant, at `opset`.
fn branch(opset: i64, value: f32) -> Graph {
    let mut b = ModelBuilder::new(opset);
    let c = b.init(
        "c",
        Tensor::from_f32(vec![1, 3], &[value, 2.0 * value, -value]),
    );
    let s = b.op("Squeeze", &[c], vec![ints_attr("axes", &[0])], "s");
    b.output(s, DataType::FLOAT);
    b.build().unwrap().graph
}

#[test]
fn subgraphs_are_converted() {
    let mut b = ModelBuilder::new(12);
    let cond = b.input("cond", DataType::BOOL, &[]);
    let mut then_branch = branch(12, 1.0);
    let mut else_branch = branch(12, -3.0);
    // Names are unique across the model.
    for (g, suffix) in [(&mut then_branch, "then"), (&mut else_branch, "else")] {
        for id in g.node_ids().collect::<Vec<_>>() {
            for v in &mut g.node_mut(id).outputs {
                v.name = format!("{}_{suffix}", v.name);
            }
        }
    }
    let branches = vec![
        Attribute::new("then_branch", AttrValue::Graph(Box::new(then_branch))),
        Attribute::new("else_branch", AttrValue::Graph(Box::new(else_branch))),
    ];
    // The name the then-branch's new constant would take is taken
    // outside it: the constant must not shadow it.
    let y = b.op("If", &[cond], branches, "s_then_axes");
    b.output(y, DataType::FLOAT);
    let m = b.build().unwrap();
    let (after, report) = raised(&m, 13);
    assert_eq!(report["rewritten"], json!({ "Squeeze": 2 }));
    let mut squeezes = 0;
    after.graph.visit_graphs(&mut |g| {
        for id in g.node_ids() {
            if let Some(op) = g.op(id).filter(|op| op.is("Squeeze")) {
                assert!(op.attributes.is_empty() && op.arity == 2);
                assert!(g.input(id, 1).and_then(|o| g.const_tensor(o)).is_some());
                squeezes += 1;
            }
        }
    });
    assert_eq!(squeezes, 2);
    check("raise-opset__if-branches", &m, PASS);
}

/// Anything the table does not cover stops the pass, naming the
/// operator and versions, and leaves the model as it was.
#[test]
fn refuses_what_it_cannot_convert() {
    let mut b = ModelBuilder::new(9);
    let x = b.input("x", DataType::FLOAT, &[1, 1, 2, 2]);
    let s = b.init("scales", Tensor::from_f32(vec![4], &[1.0, 1.0, 2.0, 2.0]));
    let u = b.op("Upsample", &[x, s], vec![], "u");
    b.output(u, DataType::FLOAT);
    let m = b.build().unwrap();
    let mut out = m.clone();
    let err = format!("{:#}", raise(&mut out, 13).unwrap_err());
    assert!(
        err == "raise-opset: cannot raise opset 9 to 13: Upsample (changed at opset 10) has no conversion",
        "{err}"
    );
    assert_eq!(model_diff(&m, &out), "no change\n");

    let mut b = ModelBuilder::new(11);
    let x = b.input("x", DataType::FLOAT, &[1, 1, 2, 2]);
    let roi = b.init("roi", Tensor::from_f32(vec![0], &[]));
    let s = b.init("scales", Tensor::from_f32(vec![4], &[1.0, 1.0, 2.0, 2.0]));
    let mode = Attribute::new(
        "coordinate_transformation_mode",
        AttrValue::String(bytes::Bytes::from_static(b"tf_half_pixel_for_nn")),
    );
    let r = b.op("Resize", &[x, roi, s], vec![mode], "r");
    b.output(r, DataType::FLOAT);
    let m = b.build().unwrap();
    let err = format!("{:#}", raise(&mut m.clone(), 13).unwrap_err());
    assert!(err.contains("tf_half_pixel_for_nn"), "{err}");
    assert!(
        err.starts_with("raise-opset: cannot raise opset 11 to 13"),
        "{err}"
    );
    // The pass (through the pipeline) fails the same way.
    let e = crate::pipeline::Pipeline::parse(PASS)
        .unwrap()
        .run(&mut m.clone(), &Default::default(), &mut |_| {})
        .unwrap_err();
    assert!(format!("{e:#}").contains("tf_half_pixel_for_nn"), "{e:#}");
    assert!(crate::pipeline::Pipeline::parse("raise-opset{to=12}").is_err());
    assert!(crate::pipeline::Pipeline::parse("raise-opset{to=22}").is_err());
}

#[test]
fn a_model_at_or_above_the_target_is_left_alone() {
    for opset in [13, 15] {
        let mut b = ModelBuilder::new(opset);
        let x = b.input("x", DataType::FLOAT, &[1, 3]);
        let y = b.op("Softmax", &[x], vec![], "y");
        b.output(y, DataType::FLOAT);
        let m = b.build().unwrap();
        let (after, report) = raised(&m, 13);
        assert_eq!(model_diff(&m, &after), "no change\n");
        assert_eq!(report["changed"], false, "{report}");
        assert!(report["note"]
            .as_str()
            .unwrap()
            .contains("already at opset"));
    }
}

/// Other domains keep their operators; the opset import of the default
/// domain alone changes, and IR is raised to what the opset needs.
#[test]
fn other_domains_stay_and_ir_version_follows() {
    let mut b = ModelBuilder::new(11);
    let x = b.input("x", DataType::FLOAT, &[1, 3]);
    let y = b.op("Squeeze", &[x], vec![ints_attr("axes", &[0])], "y");
    b.output(y, DataType::FLOAT);
    let mut m = b.build().unwrap();
    let id = y.node;
    m.graph.node_mut(id).as_op_mut().unwrap().domain = Some("com.example".into());
    m.opset_import.push(crate::ir::OpsetId {
        domain: Some("com.example".into()),
        version: Some(1),
    });
    m.ir_version = Some(6);
    let (after, report) = raised(&m, 13);
    assert_eq!(report["rewritten"], json!({}));
    assert_eq!(attrs_of(&after, "Squeeze"), [["axes"]]);
    assert_eq!(after.opset("com.example"), Some(1));
    assert_eq!(after.opset(""), Some(13));
    assert_eq!(after.ir_version, Some(7));
    assert_eq!(raised(&m, 19).0.ir_version, Some(9));
    assert_eq!(raised(&m, 21).0.ir_version, Some(10));
}

/// The table is sorted (binary search) and lists what the conversions
/// rely on.
#[test]
fn schema_table() {
    assert!(SCHEMA_CHANGES.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(schema_changes("Squeeze"), [11, 13, 21]);
    assert_eq!(schema_changes("Softmax"), [11, 13]);
    assert_eq!(schema_changes("Dropout"), [6, 7, 10, 12, 13]);
    assert!(schema_changes("Conv").contains(&11));
    assert!(schema_changes("NoSuchOp").is_empty());
    // Every change from 11 to 21 of an operator the PP-OCR and silero
    // models use is covered.
    for op in [
        "Add",
        "Clip",
        "Concat",
        "Conv",
        "Squeeze",
        "ReduceMean",
        "Softmax",
        "Resize",
    ] {
        for &v in schema_changes(op)
            .iter()
            .filter(|&&v| v > 11 && op != "Conv")
        {
            assert!(change(op, v).is_some(), "{op}-{v}");
        }
    }
}

/// Opset 10 → 13 through the opset-11 re-specification of auto_pad:
/// explicit pads and stride-1 SAME carry over; strided SAME is refused.
#[test]
fn conv_and_pools_from_opset_10() {
    let conv = |b: &mut ModelBuilder, x, w, auto_pad: &'static [u8], strides: &[i64], out| {
        let attrs = vec![
            Attribute::new(
                "auto_pad",
                AttrValue::String(bytes::Bytes::from_static(auto_pad)),
            ),
            ints_attr("strides", strides),
        ];
        b.op("Conv", &[x, w], attrs, out)
    };
    let mut b = ModelBuilder::new(10);
    let x = b.input("x", DataType::FLOAT, &[1, 2, 6, 6]);
    let w = b.init("w", f32s(&[2, 2, 3, 3]));
    let c = conv(&mut b, x, w, b"SAME_UPPER", &[1, 1], "c");
    let p = b.op(
        "MaxPool",
        &[c],
        vec![
            ints_attr("kernel_shape", &[2, 2]),
            ints_attr("strides", &[2, 2]),
        ],
        "p",
    );
    b.output(p, DataType::FLOAT);
    let m = b.build().unwrap();
    let after = check("raise-opset__conv-pool-10", &m, PASS);
    assert_eq!(op_types(&after), ["Conv", "MaxPool"]);

    let mut b = ModelBuilder::new(10);
    let x = b.input("x", DataType::FLOAT, &[1, 2, 6, 6]);
    let w = b.init("w", f32s(&[2, 2, 3, 3]));
    let c = conv(&mut b, x, w, b"SAME_LOWER", &[2, 2], "c");
    b.output(c, DataType::FLOAT);
    let m = b.build().unwrap();
    let err = format!("{:#}", raise(&mut m.clone(), 13).unwrap_err());
    assert!(err.contains("Conv with auto_pad=SAME_*"), "{err}");
}

/// Slice-1 (opset 9): starts, ends and axes become inputs.
#[test]
fn slice_attributes_become_inputs_from_opset_9() {
    let mut b = ModelBuilder::new(9);
    let x = b.input("x", DataType::FLOAT, &[2, 5, 4]);
    let attrs = vec![
        ints_attr("starts", &[1, -3]),
        ints_attr("ends", &[100, -1]),
        ints_attr("axes", &[1, 2]),
    ];
    let s = b.op("Slice", &[x], attrs, "s");
    let t = b.op(
        "Slice",
        &[s],
        vec![
            ints_attr("starts", &[0, 0, 1]),
            ints_attr("ends", &[1, 9, 9]),
        ],
        "t",
    );
    b.output(t, DataType::FLOAT);
    let m = b.build().unwrap();
    let after = check("raise-opset__slice-9", &m, PASS);
    assert!(attrs_of(&after, "Slice").iter().all(|a| a.is_empty()));
}

fn string(name: &str, v: &'static [u8]) -> Attribute {
    Attribute::new(name, AttrValue::String(bytes::Bytes::from_static(v)))
}

/// The conversions past 13 that write an attribute out, and the
/// refusals that depend on the node.
#[test]
fn later_opsets_write_out_old_defaults_or_refuse() {
    let mut b = ModelBuilder::new(15);
    let x = b.input("x", DataType::FLOAT, &[1, 2, 8, 8]);
    let rois = b.input("rois", DataType::FLOAT, &[3, 4]);
    let idx = b.input("idx", DataType::INT64, &[3]);
    let r = b.op("RoiAlign", &[x, rois, idx], vec![], "r");
    b.output(r, DataType::FLOAT);
    let m = b.build().unwrap();
    let (at16, _) = raised(&m, 16);
    assert_eq!(
        attrs_of(&at16, "RoiAlign"),
        [["coordinate_transformation_mode"]]
    );

    let mut b = ModelBuilder::new(16);
    let x2 = b.input("x", DataType::FLOAT, &[1, 2, 8, 8]);
    let g = b.input("grid", DataType::FLOAT, &[1, 4, 4, 2]);
    let s = b.op(
        "GridSample",
        &[x2, g],
        vec![string("mode", b"bicubic")],
        "s",
    );
    b.output(s, DataType::FLOAT);
    let gm = b.build().unwrap();
    let (at20, _) = raised(&gm, 20);
    let op = at20.graph.op(s.node).unwrap();
    assert!(
        matches!(&op.attr("mode").unwrap().value, AttrValue::String(v) if v.as_ref() == b"cubic")
    );

    // QuantizeLinear-19 wants y_scale of x's type: known float only.
    let mut b = ModelBuilder::new(13);
    let x3 = b.input("x", DataType::FLOAT, &[4]);
    let sc = b.init("scale", Tensor::from_f32(vec![], &[0.1]));
    let q = b.op("QuantizeLinear", &[x3, sc], vec![], "q");
    b.output(q, DataType::UINT8);
    let qm = b.build().unwrap();
    assert_eq!(raised(&qm, 19).1["rewritten"], json!({}));
    let mut unknown = qm.clone();
    unknown.graph.inputs[0].info.ty = None;
    let err = format!("{:#}", raise(&mut unknown, 19).unwrap_err());
    assert!(
        err.contains("QuantizeLinear (changed at opset 19)"),
        "{err}"
    );

    // BatchNormalization-9 with its training outputs named.
    let mut b = ModelBuilder::new(9);
    let x4 = b.input("x", DataType::FLOAT, &[1, 2, 3, 3]);
    let p: Vec<_> = ["g", "b", "m", "v"]
        .iter()
        .map(|n| b.init(n, Tensor::from_f32(vec![2], &[1.0, 1.0])))
        .collect();
    let outs = b.op_n(
        "BatchNormalization",
        &[Some(x4), Some(p[0]), Some(p[1]), Some(p[2]), Some(p[3])],
        vec![],
        &["y", "mean"],
    );
    b.output(outs[0], DataType::FLOAT);
    b.output(outs[1], DataType::FLOAT);
    let bn = b.build().unwrap();
    let err = format!("{:#}", raise(&mut bn.clone(), 14).unwrap_err());
    assert!(
        err.contains("BatchNormalization with training outputs"),
        "{err}"
    );
    assert!(raise(&mut bn.clone(), 13).is_ok());
}
