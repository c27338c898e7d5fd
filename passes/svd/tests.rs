use crate::ir::build::ModelBuilder;
use crate::ir::{Attribute, DataType, Model, Tensor};
use crate::passes::name_matches;
use crate::passes::testing::{check, max_rel_err, op_types as ops, rewrite};
use crate::passes::testing::{init, values};
use crate::pipeline::Pipeline;

/// Options that split an exactly rank-4 weight at rank 4 (the rest of
/// its spectrum is rounding noise).
const EXACT: &str = "svd{energy=0.9999,align=1,min-params=0}";

/// A `rows × cols` weight of rank 4, stored row-major.
fn rank4(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let u = values(seed, rows * 4, -1.0, 1.0);
    let v = values(seed + 1, cols * 4, -1.0, 1.0);
    (0..rows * cols)
        .map(|at| {
            let (i, j) = (at / cols, at % cols);
            (0..4).map(|t| u[i * 4 + t] * v[j * 4 + t]).sum()
        })
        .collect()
}

fn matmul(x_dims: &[i64], k: i64, n: i64, w: Vec<f32>) -> Model {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, x_dims);
    let w = b.init("w", Tensor::from_f32(vec![k, n], &w));
    let y = b.op("MatMul", &[x, w], vec![], "y");
    b.output(y, DataType::FLOAT);
    b.build().unwrap()
}

fn gemm(trans_a: bool, trans_b: bool) -> Model {
    let (m, k, n) = (3, 40, 24);
    let mut b = ModelBuilder::new(13);
    let x_dims = if trans_a { [k, m] } else { [m, k] };
    let x = b.input("x", DataType::FLOAT, &x_dims);
    let w = rank4(k as usize, n as usize, 7);
    let w = if trans_b {
        // Stored [N, K].
        let (k, n) = (k as usize, n as usize);
        (0..n * k).map(|at| w[(at % k) * n + at / k]).collect()
    } else {
        w
    };
    let w_dims = if trans_b { vec![n, k] } else { vec![k, n] };
    let w = b.init("w", Tensor::from_f32(w_dims, &w));
    let c = init(&mut b, "c", &[n], 9);
    let attrs = vec![
        Attribute::int("transA", trans_a as i64),
        Attribute::int("transB", trans_b as i64),
        Attribute::float("alpha", 0.5),
        Attribute::float("beta", 2.0),
    ];
    let y = b.op("Gemm", &[x, w, c], attrs, "y");
    b.output(y, DataType::FLOAT);
    b.build().unwrap()
}

fn conv() -> Model {
    let (o, i) = (24, 6);
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, i, 9, 9]);
    // [O, I·3·3] of rank 4.
    let w = b.init("w", Tensor::from_f32(vec![o, i, 3, 3], &rank4(24, 54, 11)));
    let bias = init(&mut b, "b", &[o], 12);
    let attrs = vec![
        Attribute::ints("kernel_shape", &[3, 3]),
        Attribute::ints("strides", &[2, 2]),
        Attribute::ints("pads", &[1, 0, 1, 2]),
        Attribute::ints("dilations", &[1, 1]),
    ];
    let y = b.op("Conv", &[x, w, bias], attrs, "y");
    b.output(y, DataType::FLOAT);
    b.build().unwrap()
}

#[test]
fn an_exactly_low_rank_layer_splits_without_changing_outputs() {
    for (name, model, want) in [
        (
            "svd__matmul-rank3-input",
            matmul(&[2, 5, 48], 48, 40, rank4(48, 40, 3)),
            ["MatMul", "MatMul"],
        ),
        ("svd__gemm", gemm(false, false), ["Gemm", "Gemm"]),
        ("svd__gemm-transb", gemm(false, true), ["Gemm", "Gemm"]),
        (
            "svd__gemm-transa-transb",
            gemm(true, true),
            ["Gemm", "Gemm"],
        ),
        ("svd__conv-strided-padded", conv(), ["Conv", "Conv"]),
    ] {
        let out = check(name, &model, EXACT);
        assert_eq!(ops(&out), want, "{name}");
    }
}

#[test]
fn the_rank_follows_the_energy_ratio_or_fixed_rule() {
    // Singular values 1, 1/2, 1/4, ... on a 64×64 identity-like basis.
    let n = 64usize;
    let w: Vec<f32> = (0..n * n)
        .map(|at| {
            if at / n == at % n {
                0.5f32.powi((at / n) as i32)
            } else {
                0.0
            }
        })
        .collect();
    let model = matmul(&[1, 64], 64, 64, w);
    let rank_of = |passes: &str| {
        let out = rewrite(&model, passes);
        let g = &out.graph;
        let a = g.find_value("w_svd_a").expect("split");
        g.const_tensor(a).unwrap().dims[1]
    };
    // Energies 3/4, 15/16, 63/64, ...: 0.99 needs 4 values.
    assert_eq!(rank_of("svd{energy=0.99,align=1,min-params=0}"), 4);
    assert_eq!(rank_of("svd{energy=0.99,align=8,min-params=0}"), 8);
    assert_eq!(rank_of("svd{ratio=0.25,min-params=0}"), 16);
    assert_eq!(rank_of("svd{rank=3,align=1,min-params=0}"), 3);
    // Small errors for what is kept: rank 8 keeps all but 4^-8.
    let out = rewrite(&model, "svd{energy=0.99,min-params=0}");
    assert!(max_rel_err(&model, &out) < 1e-2);
}

#[test]
fn a_layer_is_kept_when_the_split_would_not_pay_or_is_excluded() {
    // A full-rank (random) weight: energy 0.9 needs most of the rank.
    let random = matmul(&[1, 64], 64, 64, values(5, 64 * 64, -1.0, 1.0));
    for passes in [
        "svd{min-params=0}",
        "svd{energy=0.9999,align=1}",
        "svd{energy=0.9999,align=1,min-params=0,skip=w}",
        "svd{energy=0.9999,align=1,min-params=0,skip=y*}",
        "svd{energy=0.9999,align=1,min-params=0,ops=Conv}",
    ] {
        let model = if passes == "svd{min-params=0}" {
            random.clone()
        } else {
            matmul(&[1, 64], 64, 64, rank4(64, 64, 1))
        };
        let out = rewrite(&model, passes);
        assert_eq!(ops(&out), ["MatMul"], "{passes}");
    }
}

#[test]
fn the_report_says_why_each_layer_was_kept_or_split() {
    let mut model = matmul(&[1, 64], 64, 64, values(5, 64 * 64, -1.0, 1.0));
    let reports = Pipeline::parse("svd{min-params=0}")
        .unwrap()
        .run(&mut model, &Default::default(), &mut |_| {})
        .unwrap();
    let layer = &reports[0].details["layers"][0];
    assert_eq!(layer["layer"], "y");
    assert!(
        layer["kept"].as_str().unwrap().contains("does not pay"),
        "{layer}"
    );
    let mut model = matmul(&[1, 64], 64, 64, rank4(64, 64, 1));
    let reports = Pipeline::parse(EXACT)
        .unwrap()
        .run(&mut model, &Default::default(), &mut |_| {})
        .unwrap();
    let layer = &reports[0].details["layers"][0];
    assert_eq!(layer["r"], 4);
    assert_eq!(layer["params_after"], 4 * 128);
    assert!(layer["weight_rel_err"].as_f64().unwrap() < 1e-6, "{layer}");
    assert_eq!(layer["fitted_to"], "weights (no --inputs)");
}

#[test]
fn a_grouped_conv_splits_group_by_group_and_a_depthwise_one_never_pays() {
    // Two groups of 8 filters over 4 input channels, each of rank 4.
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 8, 6, 6]);
    let mut w = rank4(8, 36, 21);
    w.extend(rank4(8, 36, 23));
    let w = b.init("w", Tensor::from_f32(vec![16, 4, 3, 3], &w));
    let attrs = vec![
        Attribute::int("group", 2),
        Attribute::ints("pads", &[1, 1, 1, 1]),
    ];
    let y = b.op("Conv", &[x, w], attrs, "y");
    b.output(y, DataType::FLOAT);
    let out = check("svd__conv-grouped", &b.build().unwrap(), EXACT);
    assert_eq!(ops(&out), ["Conv", "Conv"]);

    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 8, 5, 5]);
    let w = init(&mut b, "w", &[8, 1, 3, 3], 3);
    let y = b.op("Conv", &[x, w], vec![Attribute::int("group", 8)], "y");
    b.output(y, DataType::FLOAT);
    let mut model = b.build().unwrap();
    let reports = Pipeline::parse("svd{rank=1,align=1,min-params=0}")
        .unwrap()
        .run(&mut model, &Default::default(), &mut |_| {})
        .unwrap();
    assert_eq!(ops(&model), ["Conv"]);
    let layer = &reports[0].details["layers"][0];
    assert!(
        layer["kept"].as_str().unwrap().contains("too small to pay"),
        "{layer}"
    );
}

/// The rows a Conv's fit uses, times its weight matrix, are the Conv's
/// outputs: the im2col window matches ONNX's (pads, strides, dilations).
#[test]
fn conv_input_windows_times_the_weights_are_the_conv_outputs() {
    use super::{activation_rows, weight_matrices, RankRule, Svd};
    use crate::calibrate::Calibration;
    use crate::runtime::{self, InputShapes, Sample};
    for (x_dims, w_dims, attrs) in [
        (
            vec![2, 3, 7, 9],
            vec![5, 3, 3, 2],
            vec![
                Attribute::ints("pads", &[1, 0, 2, 1]),
                Attribute::ints("strides", &[2, 1]),
                Attribute::ints("dilations", &[1, 2]),
            ],
        ),
        (
            vec![1, 4, 11],
            vec![6, 4, 3],
            vec![Attribute::ints("pads", &[1, 1])],
        ),
    ] {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &x_dims);
        let w = init(&mut b, "w", &w_dims, 4);
        let y = b.op("Conv", &[x, w], attrs, "y");
        b.output(y, DataType::FLOAT);
        let model = b.build().unwrap();
        let dims: Vec<usize> = x_dims.iter().map(|&d| d as usize).collect();
        let n: usize = dims.iter().product();
        let sample = Sample::new("test").with(
            "x",
            runtime::Tensor::from_f32(&dims, &values(8, n, -1.0, 1.0)).unwrap(),
        );
        let data = Calibration::of(vec![sample], InputShapes::new(), "test");
        let picker = Svd {
            rule: RankRule::Energy(0.9),
            min_gain: 1.0,
            align: 1,
            ops: vec!["Conv".into()],
            skip: vec![],
            min_params: 0,
            fit_data: true,
            measure: false,
            lift: Pipeline::parse("").unwrap(),
        };
        let (layers, _) = picker.candidates(&model.graph);
        let captured = data.capture(&model, &["x".into(), "y".into()]).unwrap();
        let rows = activation_rows(&captured[0], &layers[0]).unwrap();
        let m = &weight_matrices(&model.graph, &layers[0]).unwrap()[0];
        let got = crate::linalg::mul(rows.as_ref(), m.as_ref());
        let y = captured[1][0].to_f32_vec().unwrap();
        let shape = captured[1][0].shape().to_vec();
        let (o, spatial): (usize, usize) = (shape[1], shape[2..].iter().product());
        assert_eq!(got.nrows(), shape[0] * spatial, "{shape:?}");
        for p in 0..got.nrows() {
            let (batch, at) = (p / spatial, p % spatial);
            for c in 0..o {
                let want = f64::from(y[(batch * o + c) * spatial + at]);
                assert!(
                    (got[(p, c)] - want).abs() < 1e-4,
                    "{p} {c}: {} vs {want}",
                    got[(p, c)]
                );
            }
        }
    }
}

#[test]
fn bad_options_are_refused_with_the_reason() {
    for (passes, says) in [
        ("svd{energy=1.5}", "energy"),
        ("svd{energy=0}", "energy"),
        ("svd{ratio=2}", "ratio"),
        ("svd{min-gain=0.5}", "min-gain"),
        ("svd{ops=Relu}", "ops"),
        ("svd{fit=maybe}", "fit"),
        ("svd{align=0}", "align"),
    ] {
        let err = Pipeline::parse(passes).err().unwrap();
        assert!(format!("{err:#}").contains(says), "{passes}: {err:#}");
    }
}

#[test]
fn skip_patterns_match_whole_names_with_wildcards() {
    assert!(name_matches("conv1", "conv1"));
    assert!(!name_matches("conv1", "conv12"));
    assert!(name_matches("conv*", "conv12"));
    assert!(name_matches("*head", "rec_head"));
    assert!(name_matches("a*b*c", "a_x_b_y_c"));
    assert!(!name_matches("a*b*c", "a_x_c"));
    assert!(!name_matches("ab*ba", "aba"));
}

#[test]
fn conv_windows_past_any_dim_are_refused_before_their_arithmetic() {
    use super::Patches;
    use crate::ir::Operator;
    let conv = |attrs| Operator::new("Conv", 2, attrs);
    // A dilation of 2^62 on a 3-wide kernel spans 2^63: past usize and isize.
    let huge = conv(vec![Attribute::ints("dilations", &[1, 1 << 62])]);
    assert!(Patches::of(&huge, &[3, 3])
        .unwrap_err()
        .contains("dilations"));
    let pads = conv(vec![Attribute::ints("pads", &[0, i64::MAX, 0, i64::MAX])]);
    assert!(Patches::of(&pads, &[3, 3]).unwrap_err().contains("pads"));
    assert!(Patches::of(&conv(vec![]), &[0, 3])
        .unwrap_err()
        .contains("kernel"));
    // In range, the geometry holds.
    let ok = Patches::of(&conv(vec![Attribute::ints("strides", &[2, 2])]), &[3, 3]).unwrap();
    assert_eq!(ok.geometry(&[1, 1, 7, 7]).unwrap().1, [3, 3]);
}

#[test]
fn a_group_past_any_dim_is_skipped_not_multiplied() {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 4, 5, 5]);
    // No filters divide into any group; 2^62 groups of 36 weights overflow.
    let w = b.init("w", Tensor::from_f32(vec![0, 4, 3, 3], &[]));
    let y = b.op("Conv", &[x, w], vec![Attribute::int("group", 1 << 62)], "y");
    b.output(y, DataType::FLOAT);
    let m = b.build().unwrap();
    assert_eq!(ops(&rewrite(&m, "svd{min-params=0}")), ops(&m));
}

#[test]
fn a_layer_fed_by_a_split_layer_reads_its_new_output() {
    // x → MatMul w1 → MatMul w2: splitting the first rewires the second's
    // input and frees node ids the second's patch reuses. The second once
    // read its own weight factor where its input should be (PP-OCR det's
    // split model failed in ONNX Runtime: "Input channels C is not equal to
    // kernel channels * group").
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[2, 48]);
    let w1 = b.init("w1", Tensor::from_f32(vec![48, 40], &rank4(48, 40, 3)));
    let h = b.op("MatMul", &[x, w1], vec![], "h");
    let w2 = b.init("w2", Tensor::from_f32(vec![40, 32], &rank4(40, 32, 5)));
    let y = b.op("MatMul", &[h, w2], vec![], "y");
    b.output(y, DataType::FLOAT);
    let model = b.build().unwrap();
    let out = rewrite(&model, EXACT);
    assert_eq!(ops(&out), ["MatMul"; 4]);
    let g = &out.graph;
    for id in g.op_order().unwrap() {
        let x = g.input(id, 0).unwrap();
        assert!(
            g.const_tensor(x).is_none(),
            "{} reads a constant",
            g.outlet_name(x)
        );
    }
    let err = max_rel_err(&model, &out);
    assert!(err <= 1e-5, "max_rel_err {err:e}");
}
