//! Tests of `fuse-activation`: each pattern, its variants, and what stops it.

use crate::ir::build::ModelBuilder;
use crate::ir::{Attribute, DataType, Model, Outlet, Tensor};
use crate::passes::testing::{check, rewrite};

const PASS: &str = "fuse-activation";

fn scalar(b: &mut ModelBuilder, name: &str, v: f32) -> Outlet {
    b.init(name, Tensor::from_f32(vec![], &[v]))
}

/// Input `x: f32[2, 3, 4, 4]`, spread to about [-5, 5] (so HardSwish's
/// clipped regions are reached), at `opset`.
fn spread_input(opset: i64) -> (ModelBuilder, Outlet) {
    let mut b = ModelBuilder::new(opset);
    let x = b.input("x", DataType::FLOAT, &[2, 3, 4, 4]);
    let five = scalar(&mut b, "five", 5.0);
    let x = b.op("Mul", &[x, five], vec![], "spread");
    (b, x)
}

/// `Clip(x + 3, 0, 6)` (bounds as inputs, or attributes before opset 11).
fn relu6_shifted(b: &mut ModelBuilder, x: Outlet, opset: i64, three: f32) -> Outlet {
    let three = scalar(b, "three", three);
    let a = b.op("Add", &[x, three], vec![], "add3");
    if opset < 11 {
        let bounds = vec![Attribute::float("min", 0.0), Attribute::float("max", 6.0)];
        b.op("Clip", &[a], bounds, "clip")
    } else {
        let lo = scalar(b, "zero", 0.0);
        let hi = scalar(b, "six", 6.0);
        b.op("Clip", &[a, lo, hi], vec![], "clip")
    }
}

/// PaddlePaddle's HardSwish: `Div(Mul(x, Clip(x + 3, 0, 6)), 6)`.
fn paddle_hardswish(opset: i64, three: f32) -> Model {
    let (mut b, x) = spread_input(opset);
    let c = relu6_shifted(&mut b, x, opset, three);
    let m = b.op("Mul", &[x, c], vec![], "mul");
    let six = scalar(&mut b, "six_div", 6.0);
    let y = b.op("Div", &[m, six], vec![], "y");
    b.output(y, DataType::FLOAT);
    b.build().unwrap()
}

fn ops(model: &Model, op_type: &str) -> usize {
    let g = &model.graph;
    g.node_ids()
        .filter(|&n| g.op(n).is_some_and(|op| op.is(op_type)))
        .count()
}

#[test]
fn paddle_hardswish_fuses_at_opset_14() {
    let after = check(
        "fuse-activation__hardswish_paddle",
        &paddle_hardswish(14, 3.0),
        PASS,
    );
    assert_eq!(ops(&after, "HardSwish"), 1);
    assert_eq!(after.graph.op_count(), 2);
}

#[test]
fn hardswish_variants_fuse() {
    // Mul(x, Clip(x + 3, 0, 6)) · (1/6), and x · (Clip(x + 3, 0, 6) / 6).
    let (mut b, x) = spread_input(14);
    let c = relu6_shifted(&mut b, x, 14, 3.0);
    let m = b.op("Mul", &[c, x], vec![], "mul");
    let sixth = scalar(&mut b, "sixth", 1.0 / 6.0);
    let y1 = b.op("Mul", &[sixth, m], vec![], "y1");
    let three = scalar(&mut b, "three_b", 3.0);
    let a = b.op("Add", &[three, x], vec![], "add3_b");
    let (lo, hi) = (scalar(&mut b, "zero_b", 0.0), scalar(&mut b, "six_b", 6.0));
    let c = b.op("Clip", &[a, lo, hi], vec![], "clip_b");
    let six = scalar(&mut b, "six_div", 6.0);
    let h = b.op("Div", &[c, six], vec![], "hsig_b");
    let y2 = b.op("Mul", &[x, h], vec![], "y2");
    // x · HardSigmoid(x, 1/6, 1/2)
    let hs = b.op(
        "HardSigmoid",
        &[x],
        vec![
            Attribute::float("alpha", 1.0 / 6.0),
            Attribute::float("beta", 0.5),
        ],
        "hsig_c",
    );
    let y3 = b.op("Mul", &[hs, x], vec![], "y3");
    for y in [y1, y2, y3] {
        b.output(y, DataType::FLOAT);
    }
    let model = b.build().unwrap();
    let after = check("fuse-activation__hardswish_variants", &model, PASS);
    assert_eq!(ops(&after, "HardSwish"), 3);
    assert_eq!(after.graph.op_count(), 4);
}

#[test]
fn hardsigmoid_form_fuses_alone_and_before_opset_14() {
    // Clip(x + 3, 0, 6) / 6, Clip bounds as attributes (opset 10), not followed by x·.
    let (mut b, x) = spread_input(10);
    let c = relu6_shifted(&mut b, x, 10, 3.0);
    let six = scalar(&mut b, "six_div", 6.0);
    let y = b.op("Div", &[c, six], vec![], "y");
    b.output(y, DataType::FLOAT);
    let after = check(
        "fuse-activation__hardsigmoid_clip_attributes",
        &b.build().unwrap(),
        PASS,
    );
    assert_eq!(ops(&after, "HardSigmoid"), 1);
    assert_eq!(after.graph.op_count(), 2);
}

#[test]
fn opset_13_leaves_hardswish_but_takes_its_hardsigmoid() {
    // Div(Mul(x, Clip), 6) has no HardSigmoid inside: left whole, and counted.
    let model = paddle_hardswish(13, 3.0);
    let after = rewrite(&model, PASS);
    assert_eq!(after.graph.op_count(), model.graph.op_count());
    let details = details_of(&model);
    assert_eq!(details["hardswish_needs_opset_14"], 1);
    assert_eq!(details["hardswish"], 0);
    // x · (Clip(x + 3, 0, 6) / 6) becomes x · HardSigmoid(x), counted as waiting.
    let (mut b, x) = spread_input(12);
    let c = relu6_shifted(&mut b, x, 12, 3.0);
    let six = scalar(&mut b, "six_div", 6.0);
    let h = b.op("Div", &[c, six], vec![], "hsig");
    let y = b.op("Mul", &[x, h], vec![], "y");
    b.output(y, DataType::FLOAT);
    let model = b.build().unwrap();
    let after = check("fuse-activation__hardswish_opset_12", &model, PASS);
    assert_eq!(ops(&after, "HardSigmoid"), 1);
    assert_eq!(ops(&after, "HardSwish"), 0);
    assert_eq!(details_of(&model)["hardswish_needs_opset_14"], 1);
}

#[test]
fn wrong_constants_and_shared_intermediates_block_hardswish() {
    for three in [3.1, -3.0] {
        let model = paddle_hardswish(14, three);
        let after = rewrite(&model, PASS);
        assert_eq!(ops(&after, "HardSwish"), 0, "Add {three}");
        assert_eq!(after.graph.op_count(), model.graph.op_count());
    }
    // Clip's max 5 instead of 6.
    let (mut b, x) = spread_input(14);
    let three = scalar(&mut b, "three", 3.0);
    let a = b.op("Add", &[x, three], vec![], "add3");
    let (lo, hi) = (scalar(&mut b, "zero", 0.0), scalar(&mut b, "five_b", 5.0));
    let c = b.op("Clip", &[a, lo, hi], vec![], "clip");
    let m = b.op("Mul", &[x, c], vec![], "mul");
    let six = scalar(&mut b, "six_div", 6.0);
    let y = b.op("Div", &[m, six], vec![], "y");
    b.output(y, DataType::FLOAT);
    let model = b.build().unwrap();
    assert_eq!(
        rewrite(&model, PASS).graph.op_count(),
        model.graph.op_count()
    );
    // The Clip output also a graph output: used twice.
    let (mut b, x) = spread_input(14);
    let c = relu6_shifted(&mut b, x, 14, 3.0);
    let m = b.op("Mul", &[x, c], vec![], "mul");
    let six = scalar(&mut b, "six_div", 6.0);
    let y = b.op("Div", &[m, six], vec![], "y");
    b.output(y, DataType::FLOAT);
    b.output(c, DataType::FLOAT);
    let model = b.build().unwrap();
    let after = rewrite(&model, PASS);
    assert_eq!(after.graph.op_count(), model.graph.op_count());
}

/// Gelu in three arrangements: `(x·(1+erf(x/√2)))·0.5`, `(x·0.5)·(1+erf(x·(1/√2)))`,
/// `x·((1+erf(x/√2))·0.5)`.
fn gelus(opset: i64, sqrt2: f32) -> Model {
    let (mut b, x) = spread_input(opset);
    let one = scalar(&mut b, "one", 1.0);
    let half = scalar(&mut b, "half", 0.5);
    let root2 = scalar(&mut b, "sqrt2", sqrt2);
    let inv_root2 = scalar(&mut b, "inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2);
    let one_plus_erf = |b: &mut ModelBuilder, k: &str, by_mul: bool| {
        let s = if by_mul {
            b.op("Mul", &[x, inv_root2], vec![], &format!("{k}.scale"))
        } else {
            b.op("Div", &[x, root2], vec![], &format!("{k}.scale"))
        };
        let e = b.op("Erf", &[s], vec![], &format!("{k}.erf"));
        b.op("Add", &[one, e], vec![], &format!("{k}.add"))
    };
    let a = one_plus_erf(&mut b, "a", false);
    let m = b.op("Mul", &[x, a], vec![], "a.mul");
    let ya = b.op("Mul", &[m, half], vec![], "ya");
    let bb = one_plus_erf(&mut b, "b", true);
    let h = b.op("Mul", &[half, x], vec![], "b.half");
    let yb = b.op("Mul", &[h, bb], vec![], "yb");
    let c = one_plus_erf(&mut b, "c", false);
    let h = b.op("Mul", &[c, half], vec![], "c.half");
    let yc = b.op("Mul", &[h, x], vec![], "yc");
    for y in [ya, yb, yc] {
        b.output(y, DataType::FLOAT);
    }
    b.build().unwrap()
}

#[test]
fn gelu_fuses_at_opset_20() {
    let after = check(
        "fuse-activation__gelu",
        &gelus(20, std::f32::consts::SQRT_2),
        PASS,
    );
    assert_eq!(ops(&after, "Gelu"), 3);
    assert_eq!(after.graph.op_count(), 4);
}

#[test]
fn gelu_needs_opset_20_and_exact_constants() {
    let model = gelus(19, std::f32::consts::SQRT_2);
    assert_eq!(
        rewrite(&model, PASS).graph.op_count(),
        model.graph.op_count()
    );
    assert_eq!(details_of(&model)["gelu_needs_opset_20"], 3);
    // √2 written as 1.41: only the arrangement scaling by 1/√2 fuses.
    let after = rewrite(&gelus(20, 1.41), PASS);
    assert_eq!(ops(&after, "Gelu"), 1);
}

#[test]
fn target_opset_keeps_newer_ops_out() {
    let model = gelus(20, std::f32::consts::SQRT_2);
    for passes in ["fuse-activation{target-opset=19}", "fuse{target-opset=19}"] {
        let after = rewrite(&model, passes);
        assert_eq!(ops(&after, "Gelu"), 0, "{passes}");
    }
    // Under `fuse`, CSE first merges what the three arrangements share.
    assert!(ops(&rewrite(&model, "fuse{target-opset=20}"), "Gelu") >= 1);
}

#[test]
fn transformer_at_opset_13_is_left_alone() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/transformer.onnx");
    let model = crate::onnx::load(std::path::Path::new(path)).unwrap();
    let model = rewrite(&model, "lift-constants");
    let after = rewrite(&model, PASS);
    assert_eq!(after.graph.op_count(), model.graph.op_count());
    let details = details_of(&model);
    assert_eq!(details["gelu_needs_opset_20"], 1);
    assert_eq!(details["layer_norm_needs_opset_17"], 2);
}

/// LayerNorm over the last axis of `x: f32[2, 4, 8]`, spelt out, with
/// ReduceMean axes as attribute (opset < 18) or input.
fn layer_norm_model(opset: i64, gamma: bool, beta: bool, exponent: f32) -> Model {
    let mut b = ModelBuilder::new(opset);
    let x = b.input("x", DataType::FLOAT, &[2, 4, 8]);
    let mean = |b: &mut ModelBuilder, v: Outlet, name: &str| {
        if opset < 18 {
            b.op(
                "ReduceMean",
                &[v],
                vec![Attribute::ints("axes", &[-1])],
                name,
            )
        } else {
            let axes = b.init(&format!("{name}.axes"), Tensor::from_i64(vec![1], &[-1]));
            b.op("ReduceMean", &[v, axes], vec![], name)
        }
    };
    let mu = mean(&mut b, x, "mean");
    let d = b.op("Sub", &[x, mu], vec![], "sub");
    let two = scalar(&mut b, "two", exponent);
    let sq = b.op("Pow", &[d, two], vec![], "pow");
    let var = mean(&mut b, sq, "var");
    let eps = scalar(&mut b, "eps", 1e-5);
    let ve = b.op("Add", &[var, eps], vec![], "add_eps");
    let sd = b.op("Sqrt", &[ve], vec![], "sqrt");
    let mut y = b.op("Div", &[d, sd], vec![], "div");
    let values: Vec<f32> = (0..8).map(|i| 0.5 + i as f32 * 0.25).collect();
    if gamma {
        let g = b.init("gamma", Tensor::from_f32(vec![8], &values));
        y = b.op("Mul", &[y, g], vec![], "mul_gamma");
    }
    if beta {
        let bias: Vec<f32> = values.iter().map(|v| v - 1.0).collect();
        let bt = b.init("beta", Tensor::from_f32(vec![1, 8], &bias));
        y = b.op("Add", &[bt, y], vec![], "y");
    }
    b.output(y, DataType::FLOAT);
    b.build().unwrap()
}

#[test]
fn layer_norm_fuses_at_opset_17_and_18() {
    let after = check(
        "fuse-activation__layer_norm_opset_17",
        &layer_norm_model(17, true, true, 2.0),
        PASS,
    );
    assert_eq!(ops(&after, "LayerNormalization"), 1);
    assert_eq!(after.graph.op_count(), 1);
    let after = check(
        "fuse-activation__layer_norm_opset_18_no_affine",
        &layer_norm_model(18, false, false, 2.0),
        PASS,
    );
    assert_eq!(ops(&after, "LayerNormalization"), 1);
    assert_eq!(after.graph.op_count(), 1);
}

#[test]
fn layer_norm_needs_opset_17_and_square() {
    let model = layer_norm_model(16, true, true, 2.0);
    assert_eq!(
        rewrite(&model, PASS).graph.op_count(),
        model.graph.op_count()
    );
    assert_eq!(details_of(&model)["layer_norm_needs_opset_17"], 1);
    let model = layer_norm_model(17, true, true, 3.0);
    assert_eq!(
        rewrite(&model, PASS).graph.op_count(),
        model.graph.op_count()
    );
    // x - mean also a graph output: used three times.
    let mut model = layer_norm_model(17, true, true, 2.0);
    let sub = model.graph.find_value("sub").unwrap();
    let info = model.graph.outputs[0].info.clone();
    model
        .graph
        .outputs
        .push(crate::ir::GraphOutput { outlet: sub, info });
    assert_eq!(
        rewrite(&model, PASS).graph.op_count(),
        model.graph.op_count()
    );
}

/// The pass's report on a copy of `model`.
fn details_of(model: &Model) -> serde_json::Value {
    let mut m = model.clone();
    let pipeline = crate::pipeline::Pipeline::parse(PASS).unwrap();
    let reports = pipeline
        .run(&mut m, &Default::default(), &mut |_| {})
        .unwrap();
    reports[0].details.clone()
}
