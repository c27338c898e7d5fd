use crate::ir::build::ModelBuilder;
use crate::ir::{Attribute, DataType, Model, Outlet, Tensor};
use crate::passes::testing::{check_with_data, op_types, rewrite, rewrite_with_data};
use crate::pipeline::{PassContext, Pipeline};

/// Seeded values in [-1, 1), with channel `c` of `[channels, rest]`
/// scaled by 1 + c (uneven channels: per-channel scales matter).
fn weights(seed: u64, channels: usize, rest: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..channels * rest)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            u * 0.2 * (1 + i / rest) as f32
        })
        .collect()
}

fn conv(b: &mut ModelBuilder, x: Outlet, name: &str, o: i64, i: i64, k: i64, group: i64) -> Outlet {
    let w = b.init(
        &format!("{name}.weight"),
        Tensor::from_f32(
            vec![o, i / group, k, k],
            &weights(o as u64, o as usize, (i / group * k * k) as usize),
        ),
    );
    let bias = b.init(
        &format!("{name}.bias"),
        Tensor::from_f32(vec![o], &weights(3, 1, o as usize)),
    );
    let pad = k / 2;
    let attrs = vec![
        Attribute::ints("kernel_shape", &[k, k]),
        Attribute::ints("pads", &[pad, pad, pad, pad]),
        Attribute::int("group", group),
    ];
    b.op("Conv", &[x, w, bias], attrs, name)
}

/// Conv → Relu → depthwise Conv → Relu → Conv, plus a residual Add.
fn cnn() -> Model {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 8, 10, 10]);
    let c1 = conv(&mut b, x, "conv1", 16, 8, 3, 1);
    let r1 = b.op("Relu", &[c1], vec![], "relu1");
    let dw = conv(&mut b, r1, "dw", 16, 16, 3, 16);
    let r2 = b.op("Relu", &[dw], vec![], "relu2");
    let c2 = conv(&mut b, r2, "conv2", 16, 16, 1, 1);
    let y = b.op("Add", &[c2, r1], vec![], "y");
    b.output(y, DataType::FLOAT);
    b.build().unwrap()
}

/// MatMul+Add+Relu, MatMul+Add (an MLP as exported, not fused).
fn mlp() -> Model {
    let mut b = ModelBuilder::new(13);
    let mut h = b.input("x", DataType::FLOAT, &[4, 32]);
    for (i, (k, n)) in [(32, 48), (48, 10)].into_iter().enumerate() {
        let w = b.init(
            &format!("fc{i}.weight"),
            Tensor::from_f32(vec![k, n], &weights(i as u64, k as usize, n as usize)),
        );
        let bias = b.init(
            &format!("fc{i}.bias"),
            Tensor::from_f32(vec![n], &weights(9, 1, n as usize)),
        );
        h = b.op("MatMul", &[h, w], vec![], &format!("fc{i}.matmul"));
        h = b.op("Add", &[h, bias], vec![], &format!("fc{i}.add"));
        if i == 0 {
            h = b.op("Relu", &[h], vec![], "fc0.relu");
        }
    }
    b.output(h, DataType::FLOAT);
    b.build().unwrap()
}

/// A detector's neck: Conv → SiLU (x·Sigmoid(x)) → MaxPool → Resize ×2 (nearest),
/// concatenated with a second branch scaled by a constant, then Reshape →
/// Transpose into a 1×1 Conv.
fn neck() -> Model {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 8, 8, 8]);
    let c1 = conv(&mut b, x, "conv1", 16, 8, 3, 1);
    let s = b.op("Sigmoid", &[c1], vec![], "sig");
    let a = b.op("Mul", &[c1, s], vec![], "silu");
    let p = b.op(
        "MaxPool",
        &[a],
        vec![
            Attribute::ints("kernel_shape", &[2, 2]),
            Attribute::ints("strides", &[2, 2]),
        ],
        "pool",
    );
    let roi = b.init("roi", Tensor::from_f32(vec![0], &[]));
    let scales = b.init("scales", Tensor::from_f32(vec![4], &[1.0, 1.0, 2.0, 2.0]));
    let up = b.op("Resize", &[p, roi, scales], vec![], "up");
    let c2 = conv(&mut b, a, "conv2", 16, 16, 3, 1);
    let half = b.init("half", Tensor::from_f32(vec![], &[0.5]));
    let scaled = b.op("Mul", &[c2, half], vec![], "scaled");
    let cat = b.op(
        "Concat",
        &[up, scaled],
        vec![Attribute::int("axis", 1)],
        "cat",
    );
    let shape = b.init("shape", Tensor::from_i64(vec![4], &[1, 32, 64, 1]));
    let r = b.op("Reshape", &[cat, shape], vec![], "flat");
    let t = b.op(
        "Transpose",
        &[r],
        vec![Attribute::ints("perm", &[0, 1, 3, 2])],
        "t",
    );
    let y = conv(&mut b, t, "head", 8, 32, 1, 1);
    b.output(y, DataType::FLOAT);
    b.build().unwrap()
}

/// A detector's box head: Conv → Split into two halves along channels;
/// one half Softmax (over channels, float: see `QLINEAR`) → 1×1 Conv, the
/// other a 1×1 Conv.
fn head() -> Model {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 8, 6, 6]);
    let c1 = conv(&mut b, x, "conv1", 16, 8, 3, 1);
    let split = b.init("split", Tensor::from_i64(vec![2], &[8, 8]));
    let halves = b.op_n(
        "Split",
        &[Some(c1), Some(split)],
        vec![Attribute::int("axis", 1)],
        &["half0", "half1"],
    );
    let p = b.op(
        "Softmax",
        &[halves[0]],
        vec![Attribute::int("axis", 1)],
        "probs",
    );
    let y = conv(&mut b, p, "dfl", 4, 8, 1, 1);
    let z = conv(&mut b, halves[1], "cls", 4, 8, 1, 1);
    b.output(y, DataType::FLOAT);
    b.output(z, DataType::FLOAT);
    b.build().unwrap()
}

fn gemm(trans_b: bool) -> Model {
    let (k, n) = (24, 12);
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[3, k]);
    let dims = if trans_b { vec![n, k] } else { vec![k, n] };
    let w = b.init(
        "w",
        Tensor::from_f32(dims, &weights(5, 1, (k * n) as usize)),
    );
    let c = b.init("c", Tensor::from_f32(vec![n], &weights(6, 1, n as usize)));
    let y = b.op(
        "Gemm",
        &[x, w, c],
        vec![Attribute::int("transB", trans_b as i64)],
        "y",
    );
    b.output(y, DataType::FLOAT);
    b.build().unwrap()
}

fn conv_transpose() -> Model {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 8, 5, 5]);
    let w = b.init("w", Tensor::from_f32(vec![8, 6, 2, 2], &weights(8, 8, 24)));
    let y = b.op(
        "ConvTranspose",
        &[x, w],
        vec![
            Attribute::ints("kernel_shape", &[2, 2]),
            Attribute::ints("strides", &[2, 2]),
        ],
        "y",
    );
    b.output(y, DataType::FLOAT);
    b.build().unwrap()
}

fn details(model: &Model, passes: &str) -> serde_json::Value {
    let mut m = model.clone();
    let data = crate::calibrate::Calibration::load(model, &Default::default(), None, 7, 4).unwrap();
    let reports = Pipeline::parse(passes)
        .unwrap()
        .run(&mut m, &PassContext { data: Some(data) }, &mut |_| {})
        .unwrap();
    reports.last().unwrap().details.clone()
}

/// The weight DequantizeLinear feeding input 1 of the first `op_type`:
/// (axis, number of scales, int8 values).
fn weight_of(m: &Model, op_type: &str) -> (Option<i64>, usize, Vec<i64>) {
    let g = &m.graph;
    let id = g
        .op_order()
        .unwrap()
        .into_iter()
        .find(|&id| g.op(id).unwrap().is(op_type))
        .unwrap();
    let dq = g.input(id, 1).unwrap().node;
    let op = g.op(dq).expect("weight read through an operator");
    assert!(
        op.is("DequantizeLinear"),
        "{op_type} weight comes from {}",
        op.op_type
    );
    let q = g.const_tensor(g.input(dq, 0).unwrap()).unwrap();
    assert_eq!(q.dtype, DataType::INT8);
    let scales = g.const_tensor(g.input(dq, 1).unwrap()).unwrap().numel();
    (
        op.attr("axis").map(|_| op.attr_int("axis", 1)),
        scales,
        q.to_i64().unwrap(),
    )
}

#[test]
fn qdq_rewrites_are_pinned_and_close_to_the_float_model() {
    for (name, model, passes, tolerance) in [
        (
            "quant__cnn-s8",
            cnn(),
            "quant{measure=false,target=trt,min-k=0}",
            0.05,
        ),
        (
            "quant__cnn-u8",
            cnn(),
            "quant{measure=false,target=ort,min-k=16}",
            0.05,
        ),
        (
            "quant__cnn-u8-depthwise",
            cnn(),
            "quant{measure=false,target=ort,min-k=0}",
            0.05,
        ),
        // 0.101 with flow=false too: the error is the layers', not the flow's.
        (
            "quant__neck-ort",
            neck(),
            "quant{measure=false,min-k=0}",
            0.12,
        ),
        // 0.138 with flow=false too.
        (
            "quant__head-ort",
            head(),
            "quant{measure=false,min-k=0}",
            0.15,
        ),
        (
            "quant__cnn-bias-corrected",
            cnn(),
            "quant{measure=false,target=ort,min-k=0,flow=false,bias-correction=true}",
            0.05,
        ),
        (
            "quant__mlp-s8",
            mlp(),
            "quant{measure=false,target=trt,min-k=0}",
            0.05,
        ),
        (
            "quant__gemm-transb",
            gemm(true),
            "quant{measure=false,target=trt,min-k=0}",
            0.05,
        ),
        (
            "quant__conv-transpose",
            conv_transpose(),
            "quant{measure=false,target=trt,min-k=0}",
            0.05,
        ),
        (
            "quant__mlp-qop",
            mlp(),
            "quant{measure=false,target=tract,min-k=0}",
            0.08,
        ),
        (
            "quant__cnn-qop",
            cnn(),
            "quant{measure=false,target=tract,min-k=0}",
            0.08,
        ),
    ] {
        let (_, err) = check_with_data(name, &model, passes, 4);
        assert!(err < tolerance, "{name}: max_rel_err {err}");
    }
}

#[test]
fn weights_are_int8_per_output_channel_on_the_consumers_axis() {
    for (model, op, axis, channels) in [
        (cnn(), "Conv", 0, 16),
        (conv_transpose(), "ConvTranspose", 1, 6),
        (gemm(true), "Gemm", 0, 12),
        (gemm(false), "Gemm", 1, 12),
        (mlp(), "MatMul", 1, 48),
    ] {
        let out = rewrite_with_data(&model, "quant{measure=false,min-k=0}", 2);
        let (got_axis, scales, q) = weight_of(&out, op);
        assert_eq!((got_axis, scales), (Some(axis), channels), "{op}");
        assert!(
            q.iter().all(|&v| (-127..=127).contains(&v)),
            "{op}: TensorRT's range"
        );
        assert!(
            q.iter().any(|&v| v.abs() == 127),
            "{op}: each channel's largest weight maps to ±127"
        );
    }
    let out = rewrite_with_data(
        &gemm(false),
        "quant{measure=false,per-channel=false,min-k=0}",
        2,
    );
    assert_eq!(weight_of(&out, "Gemm").0..=Some(0), None..=Some(0));
    assert_eq!(weight_of(&out, "Gemm").1, 1);
}

#[test]
fn trt_is_symmetric_s8_and_ort_quantizes_outputs_in_u8() {
    let zero_points = |m: &Model, op: &str| -> Vec<(DataType, i64)> {
        let g = &m.graph;
        g.op_order()
            .unwrap()
            .into_iter()
            .filter(|&id| g.op(id).unwrap().is(op))
            .map(|id| {
                let z = g.const_tensor(g.input(id, 2).unwrap()).unwrap();
                (z.dtype, z.to_i64().unwrap()[0])
            })
            .collect()
    };
    let s8 = rewrite_with_data(&cnn(), "quant{measure=false,target=trt,min-k=0}", 2);
    let zs = zero_points(&s8, "QuantizeLinear");
    assert!(!zs.is_empty());
    assert!(zs.iter().all(|&z| z == (DataType::INT8, 0)), "{zs:?}");
    // u8: the Relu outputs (which layers read) have zero point 0, and
    // the layers' outputs and the residual Add's output are quantized too.
    let u8 = rewrite_with_data(&cnn(), "quant{measure=false,target=ort,min-k=16}", 2);
    let zs = zero_points(&u8, "QuantizeLinear");
    assert!(zs.iter().all(|&(t, _)| t == DataType::UINT8));
    assert!(zs.iter().filter(|&&(_, z)| z == 0).count() >= 2, "{zs:?}");
    let pairs = |m: &Model| {
        op_types(m)
            .iter()
            .filter(|o| *o == "QuantizeLinear")
            .count()
    };
    assert!(pairs(&u8) > pairs(&s8), "u8 quantizes outputs too");
    let g = &u8.graph;
    let y = g.outputs[0].outlet;
    assert!(
        g.op(y.node).unwrap().is("DequantizeLinear"),
        "the graph output is quantized"
    );
    assert_eq!(g.outlet_name(y), "y", "and keeps its name");
}

#[test]
fn on_ort_int8_flows_through_what_onnxruntime_runs_in_int8() {
    let out = rewrite_with_data(&neck(), "quant{measure=false,min-k=0}", 4);
    let g = &out.graph;
    let find = |name: &str| {
        g.node_ids()
            .find(|&id| g.node(id).name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no node {name}"))
    };
    let reads_dq = |id, slot| {
        g.input(id, slot)
            .is_some_and(|v| g.op(v.node).is_some_and(|op| op.is("DequantizeLinear")))
    };
    // Every input of the element-wise operators and of Concat is int8,
    // the constant ½ included (stored as uint8).
    for (name, slots) in [("sig", 1), ("silu", 2), ("scaled", 2), ("cat", 2)] {
        let id = find(name);
        for slot in 0..slots {
            assert!(reads_dq(id, slot), "{name} input {slot}");
        }
    }
    // Operators that only move values read and pass on the same grid.
    let grid = |q_or_dq| {
        let value = |slot| {
            g.const_tensor(g.input(q_or_dq, slot).unwrap())
                .unwrap()
                .clone()
        };
        (value(1).to_f32().unwrap(), value(2).to_i64().unwrap())
    };
    for name in ["pool", "up", "flat", "t"] {
        let id = find(name);
        assert!(reads_dq(id, 0), "{name} reads int8");
        let q = g.consumers(Outlet::new(id, 0))[0].0;
        assert!(
            g.op(q).unwrap().is("QuantizeLinear"),
            "{name} output quantized"
        );
        assert_eq!(
            grid(q),
            grid(g.input(id, 0).unwrap().node),
            "{name} keeps its input's grid"
        );
    }
    let d = details(&neck(), "quant{measure=false,min-k=0}");
    assert_eq!(d["target"], "ort (ONNX Runtime)");
    assert_eq!(
        d["int8_also"],
        serde_json::json!({
            "Concat": 1, "MaxPool": 1, "Mul": 2, "Reshape": 1, "Resize": 1,
            "Sigmoid": 1, "Transpose": 1
        })
    );
    // Without flow, only the layers and their outputs.
    let d = details(&neck(), "quant{measure=false,min-k=0,flow=false}");
    assert_eq!(d["int8_also"], serde_json::json!({}));
}

#[test]
fn on_ort_int8_flows_through_split() {
    let out = rewrite_with_data(&head(), "quant{measure=false,min-k=0}", 4);
    let g = &out.graph;
    let split = g
        .node_ids()
        .find(|&id| g.op(id).is_some_and(|op| op.is("Split")))
        .unwrap();
    let dq = g.input(split, 0).unwrap().node;
    assert!(g.op(dq).unwrap().is("DequantizeLinear"), "Split reads int8");
    let grid = |id| g.input(id, 1).unwrap();
    // The half a Conv reads is quantized on the Split's input's grid.
    let q = g.consumers(Outlet::new(split, 1))[0].0;
    assert!(g.op(q).unwrap().is("QuantizeLinear"));
    assert_eq!(
        g.const_tensor(grid(q)).unwrap().to_f32().unwrap(),
        g.const_tensor(grid(dq)).unwrap().to_f32().unwrap(),
    );
    // The half the Softmax reads stays float (see `QLINEAR`).
    let readers = g.consumers(Outlet::new(split, 0));
    assert_eq!(readers.len(), 1);
    assert!(g.op(readers[0].0).unwrap().is("Softmax"));
    let d = details(&head(), "quant{measure=false,min-k=0}");
    assert_eq!(d["int8_also"], serde_json::json!({ "Split": 1 }));
}

#[test]
fn first_layers_are_those_no_layer_feeds() {
    // conv1 reads the model's input; dw and conv2 read what conv1 computes.
    let d = details(&cnn(), "quant{measure=false,min-k=0,bits=first-7}");
    let bits: Vec<(String, serde_json::Value)> = d["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["layer"].as_str().unwrap().to_string(),
                l["weight"]["bits"].clone(),
            )
        })
        .collect();
    assert_eq!(
        bits,
        [
            ("conv1".to_string(), serde_json::json!(7)),
            ("dw".to_string(), serde_json::Value::Null),
            ("conv2".to_string(), serde_json::Value::Null),
        ]
    );
    let seven = |m: &Model| weight_of(m, "Conv").2.iter().all(|&q| q.abs() <= 63);
    let out = rewrite_with_data(&cnn(), "quant{measure=false,min-k=0,bits=first-7}", 4);
    assert!(seven(&out), "conv1's weights on a 7-bit grid");
    let out = rewrite_with_data(&cnn(), "quant{measure=false,min-k=0}", 4);
    assert!(!seven(&out), "8 bits by default");
}

#[test]
fn layers_where_int8_does_not_pay_stay_float_and_are_reported() {
    let d = details(&cnn(), "quant{measure=false,min-k=16}");
    let layers = d["layers"].as_array().unwrap();
    let dw = layers.iter().find(|l| l["layer"] == "dw").unwrap();
    assert!(dw["kept"].as_str().unwrap().contains("min-k=16"), "{dw}");
    assert_eq!(d["layers_quantized"], 2);
    // By default K ≥ 64 (conv1 sums 8·3·3 = 72 products, conv2 16).
    assert_eq!(
        details(&cnn(), "quant{measure=false,min-k=0}")["layers_quantized"],
        3
    );
    assert_eq!(
        details(&cnn(), "quant{measure=false}")["layers_quantized"],
        1
    );
    assert_eq!(
        details(&cnn(), "quant{measure=false,target=ort}")["layers_quantized"],
        1
    );
    let d = details(&cnn(), "quant{measure=false,min-k=0,exclude=conv2}");
    let c2 = d["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == "conv2")
        .unwrap()
        .clone();
    assert!(c2["kept"].as_str().unwrap().contains("exclude"), "{c2}");
    assert_eq!(d["layers_quantized"], 2);
}

#[test]
fn fallback_keeps_the_most_sensitive_layer_in_float() {
    // conv2 sees the widest weights (scaled by 1 + channel): per-tensor
    // quantization of it hurts most.
    let passes = "quant{measure=false,fallback=1,per-channel=false,min-k=0}";
    let d = details(&cnn(), passes);
    let layers = d["layers"].as_array().unwrap();
    let sens: Vec<(String, f64)> = layers
        .iter()
        .filter_map(|l| Some((l["layer"].as_str()?.to_string(), l["sensitivity"].as_f64()?)))
        .collect();
    assert_eq!(sens.len(), 3, "every layer measured: {sens:?}");
    let worst = sens.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    let kept = layers.iter().find(|l| l["kept"].is_string()).unwrap();
    assert_eq!(kept["layer"], worst.0.as_str());
    assert_eq!(d["layers_quantized"], 2);
}

#[test]
fn qop_keeps_activations_in_int8_between_layers() {
    let out = rewrite_with_data(&mlp(), "quant{measure=false,target=tract,min-k=0}", 4);
    assert_eq!(
        op_types(&out),
        [
            "Transpose",
            "Unsqueeze",
            "QuantizeLinear",
            "QLinearConv",
            "QLinearConv",
            "DequantizeLinear",
            "Squeeze",
            "Transpose"
        ]
    );
    let out = rewrite_with_data(&cnn(), "quant{measure=false,target=tract,min-k=0}", 4);
    let ops = op_types(&out);
    assert_eq!(
        ops.iter().filter(|o| *o == "QLinearConv").count(),
        3,
        "{ops:?}"
    );
    assert!(
        !ops.contains(&"Relu".to_string()),
        "Relus fold into zero points: {ops:?}"
    );
}

#[test]
fn the_same_input_gives_the_same_bytes() {
    for passes in [
        "quant{measure=false,method=entropy,min-k=0}",
        "quant{measure=false,target=ort,method=percentile,min-k=0}",
        "quant{measure=false,target=tract,min-k=0}",
    ] {
        let a = crate::onnx::encode(&rewrite_with_data(&mlp(), passes, 3)).unwrap();
        let b = crate::onnx::encode(&rewrite_with_data(&mlp(), passes, 3)).unwrap();
        assert!(a == b, "{passes}");
    }
}

#[test]
fn samples_caps_the_calibration_at_an_even_spread() {
    let model = mlp();
    let data = crate::calibrate::Calibration::random(&model, &Default::default(), 5, 12).unwrap();
    let run = |passes: &str, data: crate::calibrate::Calibration| {
        let mut m = model.clone();
        let r = Pipeline::parse(passes)
            .unwrap()
            .run(&mut m, &PassContext { data: Some(data) }, &mut |_| {})
            .unwrap();
        (
            crate::onnx::encode(&m).unwrap(),
            r[0].details["calibration"].clone(),
        )
    };
    let q = "quant{measure=false,min-k=0";
    let (capped, said) = run(&format!("{q},samples=4}}"), data.clone());
    let (spread, _) = run(&format!("{q},samples=0}}"), data.subset(&[0, 3, 6, 9]));
    let (all, _) = run(&format!("{q},samples=0}}"), data);
    assert!(capped == spread, "samples=4 of 12 is samples 0, 3, 6, 9");
    assert!(capped != all, "calibrated on all 12, the ranges differ");
    assert!(
        said.as_str().unwrap().contains("4 of its 12 samples"),
        "{said}"
    );
}

#[test]
fn a_lossy_value_can_leave_a_moved_value_on_a_grid_of_its_own() {
    // conv1 → Sigmoid (`s`) → MaxPool → Resize (`up`) share s's grid; Add
    // reads `up` and conv2's output. With s's range lossy (left float),
    // the Add still reads `up` in int8, now on a grid of its own, which the
    // first calibration round did not capture: quant calibrates until its
    // plans read only calibrated values (PP-OCR det with method=entropy
    // failed with "value ... was not calibrated").
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 8, 8, 8]);
    let c1 = conv(&mut b, x, "conv1", 8, 8, 3, 1);
    let s = b.op("Sigmoid", &[c1], vec![], "s");
    let pool = vec![
        Attribute::ints("kernel_shape", &[2, 2]),
        Attribute::ints("strides", &[2, 2]),
    ];
    let p = b.op("MaxPool", &[s], pool, "pool");
    let roi = b.init("roi", Tensor::from_f32(vec![0], &[]));
    let scales = b.init("scales", Tensor::from_f32(vec![4], &[1.0, 1.0, 2.0, 2.0]));
    let up = b.op("Resize", &[p, roi, scales], vec![], "up");
    let c2 = conv(&mut b, x, "conv2", 8, 8, 3, 1);
    let sum = b.op("Add", &[up, c2], vec![], "sum");
    let y = conv(&mut b, sum, "head", 8, 8, 1, 1);
    b.output(y, DataType::FLOAT);
    let mut model = b.build().unwrap();
    let cx = PassContext { data: None };
    Pipeline::parse("infer-shapes")
        .unwrap()
        .run(&mut model, &cx, &mut |_| {})
        .unwrap();
    let given = std::collections::BTreeMap::from([("min-k".to_string(), "0".to_string())]);
    let options = crate::pipeline::Options::new(super::Opts::TABLE, &given).unwrap();
    let q = super::Quant::new(&options).unwrap();
    let g = &model.graph;
    let forms = q.forms(g, true, 0);
    let every = q.candidates(g, 0).0;
    let plans = |lossy: &[&str]| {
        let lossy = lossy.iter().map(|n| n.to_string()).collect();
        q.calibrated_by_plans(g, &forms, &every, &every, &lossy)
    };
    let (first, then) = (plans(&[]), plans(&["s"]));
    let has = |names: &[String], n: &str| names.iter().any(|m| m == n);
    assert!(has(&first, "s") && !has(&first, "up"), "{first:?}");
    assert!(has(&then, "up"), "{then:?}");
}

#[test]
fn weight_only_needs_no_data() {
    let out = rewrite(&mlp(), "quant{measure=false,weight-only=true,min-k=0}");
    let ops = op_types(&out);
    assert_eq!(ops.iter().filter(|o| *o == "DequantizeLinear").count(), 2);
    assert!(!ops.contains(&"QuantizeLinear".to_string()));
}

#[test]
fn bad_options_are_refused_with_the_reason() {
    for (passes, want) in [
        ("quant{act=s16}", "act=s16 must be auto, s8 or u8"),
        ("quant{method=mse}", "method=mse must be"),
        (
            "quant{bits=9}",
            "bits=9 must be auto, N or first-N, N in 2..=8",
        ),
        ("quant{bits=first-1}", "bits=first-1 must be"),
        ("quant{bits=last-7}", "bits=last-7 must be"),
        (
            "quant{method=percentile,percentile=20}",
            "percentile=20 must be in (50, 100]",
        ),
        (
            "quant{target=int4}",
            "target=int4 must be ort, trt or tract",
        ),
        ("quant{target=tract,fallback=2}", "not with target=tract"),
        ("quant{ops=Add}", "ops may hold"),
        ("quant{bias-correction=yes}", "bias-correction=yes must be"),
        (
            "quant{target=tract,bias-correction=true}",
            "not with target=tract",
        ),
        ("quant{min-k=some}", "min-k"),
    ] {
        let err = Pipeline::parse(passes)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains(want), "{passes}: {err}");
    }
}

#[test]
fn on_ort_int8_is_kept_only_where_it_pays_in_onnxruntime() {
    let d = details(&cnn(), "quant{min-k=0}");
    let measured = &d["measured"];
    if crate::runtime::ort::environment().is_err() {
        assert!(measured["cost_model"]
            .as_str()
            .unwrap()
            .starts_with("static"));
        return;
    }
    let forms = measured["forms"].as_array().unwrap();
    assert_eq!(forms.len(), 2, "with and without flow: {measured}");
    let best = forms
        .iter()
        .map(|f| f["speedup"].as_f64().unwrap())
        .fold(0f64, f64::max);
    // Whatever the timing says, the result is the fastest form within the
    // margin, and int8 only when it is clearly faster than float.
    if best < 1.03 {
        assert_eq!(measured["kept"], "float");
        assert_eq!(d["layers_quantized"], 0);
    } else {
        let kept = forms
            .iter()
            .find(|f| f["form"] == measured["kept"])
            .unwrap();
        assert!(kept["speedup"].as_f64().unwrap() >= 1.03, "{measured}");
        assert!(
            kept["speedup"].as_f64().unwrap() * 1.03 >= best,
            "{measured}"
        );
    }
}

#[test]
fn flow_auto_is_the_form_its_guard_kept_named() {
    // With data on target=ort, flow=auto lets the accuracy guard choose
    // between int8 flowing and int8 in the layers only; the report names
    // the choice, and flow=<it> builds the same bytes with no guard.
    let run = |passes: &str| {
        let mut m = neck();
        let data =
            crate::calibrate::Calibration::load(&m, &Default::default(), None, 7, 4).unwrap();
        let reports = Pipeline::parse(passes)
            .unwrap()
            .run(&mut m, &PassContext { data: Some(data) }, &mut |_| {})
            .unwrap();
        let details = reports.last().unwrap().details.clone();
        (crate::onnx::encode(&m).unwrap(), details)
    };
    let (auto, d) = run("quant{measure=false,min-k=0}");
    let guard = &d["accuracy_guard"]["outputs_rel_err"];
    assert_eq!(guard.as_array().map(Vec::len), Some(2), "{d}");
    let flowing = d["flowing"].as_bool().expect("the report names the form");
    let (pinned, p) = run(&format!("quant{{measure=false,min-k=0,flow={flowing}}}"));
    assert_eq!(auto, pinned);
    assert!(p["accuracy_guard"].is_null(), "no guard when pinned: {p}");
    // And both forms are reachable by name.
    let (other, o) = run(&format!("quant{{measure=false,min-k=0,flow={}}}", !flowing));
    assert_ne!(auto, other);
    assert_eq!(o["flowing"], !flowing);
    assert!(Pipeline::parse("quant{flow=maybe}").is_err());
}

#[test]
fn fallback_measures_a_layer_alone_on_grids_of_its_own() {
    // Flowing, the head's input (a Transpose's output) shares the grid of
    // what int8 flowed from; measured alone, the head reads that value on
    // a grid of its own, which must be calibrated too (PP-OCR rec with
    // flow=true: "value transpose_45.tmp_0 was not calibrated").
    let d = details(&neck(), "quant{fallback=1,flow=true,measure=false,min-k=0}");
    let mut measured: Vec<&str> = d["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["sensitivity"].as_f64().is_some_and(|s| s > 0.0))
        .filter_map(|l| l["layer"].as_str())
        .collect();
    measured.sort_unstable();
    assert_eq!(measured, ["conv1", "conv2", "head"], "{d}");
}

/// A weight that a layer and a reader left in float share (tied
/// embeddings: the same table gathered and multiplied) keeps its float
/// copy for that reader, and the report says for whom and at what cost.
#[test]
fn a_weight_also_read_in_float_keeps_its_float_copy_and_says_so() {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[4, 32]);
    let table = Tensor::from_f32(vec![32, 48], &weights(5, 32, 48));
    let w = b.init("table", table.clone());
    let rows = b.init("rows", Tensor::from_i64(vec![2], &[0, 7]));
    let y = b.op("MatMul", &[x, w], vec![], "head");
    let e = b.op("Gather", &[w, rows], vec![], "embed");
    b.output(y, DataType::FLOAT);
    b.output(e, DataType::FLOAT);
    let model = b.build().unwrap();

    let passes = "quant{measure=false,min-k=0}";
    let out = rewrite_with_data(&model, passes, 2);
    assert_eq!(weight_of(&out, "MatMul").1, 48, "the MatMul reads int8");
    let g = &out.graph;
    let gather = g
        .node_ids()
        .find(|&id| g.op(id).is_some_and(|op| op.is("Gather")))
        .unwrap();
    let read = g.const_tensor(g.input(gather, 0).unwrap()).unwrap();
    assert_eq!(read.to_f32().unwrap(), table.to_f32().unwrap());

    let d = details(&model, passes);
    assert_eq!(d["weight_bytes"]["float_copies_kept"], 32 * 48 * 4);
    let head = d["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == "head")
        .unwrap();
    assert_eq!(
        head["weight"]["float_copy_kept_for"],
        serde_json::json!(["embed"])
    );
}

/// Relu → Conv 3×3, Relu → Gemm and Relu → MatMul → Add (a bias as
/// exported): inputs with positive channel means, so that rounding the
/// weights shifts the outputs' means.
fn relu_layers() -> Model {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 8, 6, 6]);
    let r = b.op("Relu", &[x], vec![], "relu");
    let y = conv(&mut b, r, "conv", 6, 8, 3, 1);
    b.output(y, DataType::FLOAT);
    let v = b.input("v", DataType::FLOAT, &[64, 24]);
    let r = b.op("Relu", &[v], vec![], "relu_v");
    let w = b.init("w", Tensor::from_f32(vec![24, 12], &weights(5, 1, 24 * 12)));
    let c = b.init("c", Tensor::from_f32(vec![12], &weights(6, 1, 12)));
    let z = b.op("Gemm", &[r, w, c], vec![], "gemm");
    b.output(z, DataType::FLOAT);
    let u = b.input("u", DataType::FLOAT, &[4, 16, 24]);
    let r = b.op("Relu", &[u], vec![], "relu_u");
    let w = b.init(
        "mw",
        Tensor::from_f32(vec![24, 12], &weights(7, 1, 24 * 12)),
    );
    let m = b.op("MatMul", &[r, w], vec![], "matmul");
    let c = b.init("mc", Tensor::from_f32(vec![12], &weights(8, 1, 12)));
    let y = b.op("Add", &[m, c], vec![], "bias");
    b.output(y, DataType::FLOAT);
    b.build().unwrap()
}

/// Each output's mean difference from `before`'s per channel (axis 1 of
/// an image, else the last), over the seeded random samples 0..8.
fn channel_shifts(before: &Model, after: &Model) -> Vec<Vec<f64>> {
    use crate::runtime::{InputShapes, Sample};
    let shapes = InputShapes::new();
    let a = crate::exec::load(before, &shapes, &[]).unwrap();
    let b = crate::exec::load(after, &shapes, &[]).unwrap();
    let mut sums: Vec<Vec<f64>> = vec![];
    for seed in 0..8 {
        let sample = Sample::random(a.inputs(), seed).unwrap();
        let (ya, yb) = (a.run(&sample).unwrap(), b.run(&sample).unwrap());
        for (k, ((_, ta), (_, tb))) in ya.iter().zip(yb.iter()).enumerate() {
            let rank = ta.shape().len();
            let axis = if rank == 4 { 1 } else { rank - 1 };
            let channels = ta.shape()[axis];
            let inner: usize = ta.shape()[axis + 1..].iter().product();
            if sums.len() <= k {
                sums.push(vec![0.0; channels]);
            }
            let (va, vb) = (ta.f32s().unwrap(), tb.f32s().unwrap());
            for (j, (p, q)) in va.iter().zip(vb.iter()).enumerate() {
                sums[k][j / inner % channels] += (*q - *p) as f64;
            }
        }
    }
    sums
}

#[test]
fn bias_correction_takes_the_weights_mean_shift_out() {
    let model = relu_layers();
    // 4-bit weights: their rounding, not the activations', dominates.
    let passes = |on: bool, flow: bool| {
        format!("quant{{measure=false,flow={flow},min-k=0,bits=4,bias-correction={on}}}")
    };
    let size = |s: &[f64]| s.iter().map(|v| v * v).sum::<f64>().sqrt();
    // Flowing, the Add after the MatMul is quantized with its corrected
    // constant.
    for flow in [false, true] {
        let (plain, corrected) = (
            rewrite_with_data(&model, &passes(false, flow), 8),
            rewrite_with_data(&model, &passes(true, flow), 8),
        );
        let (plain, corrected) = (
            channel_shifts(&model, &plain),
            channel_shifts(&model, &corrected),
        );
        for (k, (p, c)) in plain.iter().zip(&corrected).enumerate() {
            assert!(
                size(c) < 0.5 * size(p),
                "flow={flow}, output {k}: mean shift {} corrected, {} not",
                size(c),
                size(p)
            );
        }
        let d = details(&model, &passes(true, flow));
        assert_eq!(d["bias_correction_layers"], 3, "{d}");
    }
    // auto measures it on the calibration samples and says what it kept.
    let d = details(&model, "quant{measure=false,flow=false,min-k=0,bits=4}");
    let b = &d["bias_correction"];
    let errs = &b["outputs_rel_err"];
    let (given, fixed) = (errs["as_given"].as_f64(), errs["corrected"].as_f64());
    let (given, fixed) = (given.unwrap(), fixed.unwrap());
    assert_eq!(b["kept"], fixed <= 0.95 * given, "{b}");
    let layers = if fixed <= 0.95 * given { 3 } else { 0 };
    assert_eq!(d["bias_correction_layers"], layers, "{d}");
}
