use crate::ir::build::ModelBuilder;
use crate::ir::{Attribute, DataType, Model, NodeId, Outlet, Tensor};
use crate::passes::testing::check_inexact;
use crate::passes::testing::{init, values};
use crate::pipeline::Pipeline;

fn conv(b: &mut ModelBuilder, x: Outlet, w: (&str, &[i64]), group: i64, out: &str) -> Outlet {
    let seed = out.bytes().map(u64::from).sum::<u64>() * 7 + w.1[1] as u64;
    let wt = init(b, w.0, w.1, seed);
    let bias = init(b, &format!("{}.b", w.0), &[w.1[0]], seed + 1);
    let attrs = vec![
        Attribute::int("group", group),
        Attribute::ints("pads", &[1, 1, 1, 1]),
    ];
    b.op("Conv", &[x, wt, bias], attrs, out)
}

/// Residual Add through a depthwise Conv, BatchNorm, a per-channel Mul,
/// a Concat of two groups, a last Conv reaching the graph output.
pub(super) fn tied() -> Model {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 4, 8, 8]);
    let a = conv(&mut b, x, ("wa", &[8, 4, 3, 3]), 1, "a");
    let p = |b: &mut ModelBuilder, n: &str, k: u64, lo, hi| {
        b.init(n, Tensor::from_f32(vec![8], &values(k, 8, lo, hi)))
    };
    let bn_in = [
        a,
        p(&mut b, "g", 1, 0.5, 2.0),
        p(&mut b, "be", 2, -1.0, 1.0),
        p(&mut b, "mu", 3, -1.0, 1.0),
        p(&mut b, "var", 4, 0.5, 2.0),
    ];
    let n = b.op("BatchNormalization", &bn_in, vec![], "bn");
    let r = b.op("Relu", &[n], vec![], "r");
    let d = conv(&mut b, r, ("wd", &[8, 1, 3, 3]), 8, "dw");
    let c2 = conv(&mut b, r, ("wb", &[8, 8, 3, 3]), 1, "b");
    let s = b.op("Add", &[d, c2], vec![], "s");
    let k = b.init(
        "k",
        Tensor::from_f32(vec![1, 8, 1, 1], &values(5, 8, 0.5, 1.5)),
    );
    let m = b.op("Mul", &[s, k], vec![], "m");
    let c = conv(&mut b, x, ("wc", &[8, 4, 3, 3]), 1, "c");
    let cat = b.op("Concat", &[m, c], vec![Attribute::int("axis", 1)], "cat");
    let e = conv(&mut b, cat, ("we", &[6, 16, 3, 3]), 1, "e");
    b.output(e, DataType::FLOAT);
    b.build().unwrap()
}

fn weight_dims(m: &Model, node: &str) -> Vec<i64> {
    let g = &m.graph;
    let id = g
        .node_ids()
        .find(|&id| g.op(id).is_some() && g.node(id).label() == node)
        .unwrap_or_else(|| panic!("no node {node}"));
    g.const_tensor(g.input(id, 1).unwrap())
        .unwrap()
        .dims
        .clone()
}

fn node(m: &Model, name: &str) -> NodeId {
    let g = &m.graph;
    g.node_ids()
        .find(|&id| g.op(id).is_some() && g.node(id).label() == name)
        .unwrap()
}

#[test]
fn tied_groups_shrink_consistently() {
    let passes = "prune-channels{ratio=0.5,min-channels=4,align=1,measure=false}";
    let (out, _) = check_inexact("prune-channels__tied", &tied(), passes);
    // {a, b} are tied through the residual Add (and dw follows a): 8 -> 4.
    assert_eq!(weight_dims(&out, "a"), [4, 4, 3, 3]);
    assert_eq!(weight_dims(&out, "b"), [4, 4, 3, 3]);
    assert_eq!(weight_dims(&out, "dw"), [4, 1, 3, 3]);
    let dw = out.graph.op(node(&out, "dw")).unwrap().attr_int("group", 0);
    assert_eq!(dw, 4);
    assert_eq!(weight_dims(&out, "c"), [4, 4, 3, 3]);
    // e reads both halves of the Concat: 4 + 4 input channels; its own
    // output is the graph output, left alone.
    assert_eq!(weight_dims(&out, "e"), [6, 8, 3, 3]);
}

/// A Conv whose output channels in `zero` have zero weights and bias.
fn zeroed_conv(
    b: &mut ModelBuilder,
    x: Outlet,
    dims: &[i64],
    group: i64,
    zero: &[usize],
    out: &str,
) -> Outlet {
    let n = dims.iter().product::<i64>() as usize;
    let per = n / dims[0] as usize;
    let mut w = values(dims[1] as u64 + n as u64, n, -1.0, 1.0);
    let mut bias = values(n as u64, dims[0] as usize, -1.0, 1.0);
    for &c in zero {
        w[c * per..(c + 1) * per].iter_mut().for_each(|v| *v = 0.0);
        bias[c] = 0.0;
    }
    let w = b.init(&format!("{out}.w"), Tensor::from_f32(dims.to_vec(), &w));
    let bias = b.init(&format!("{out}.b"), Tensor::from_f32(vec![dims[0]], &bias));
    let attrs = vec![
        Attribute::int("group", group),
        Attribute::ints("pads", &[1, 1, 1, 1]),
    ];
    b.op("Conv", &[x, w, bias], attrs, out)
}

#[test]
fn removing_dead_channels_changes_nothing() {
    // Channels whose weights and bias are zero are the ones pruned, and
    // they are dead (Relu(0) = 0, depthwise of 0 with bias 0 = 0): the
    // output must not move, which checks every index through residual
    // Add, depthwise Conv, Concat offsets and the consumer's input slices.
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 3, 8, 8]);
    let dead = [1, 3, 4, 6];
    let a = zeroed_conv(&mut b, x, &[8, 3, 3, 3], 1, &dead, "a");
    let r = b.op("Relu", &[a], vec![], "r");
    let d = zeroed_conv(&mut b, r, &[8, 1, 3, 3], 8, &dead, "dw");
    let c2 = zeroed_conv(&mut b, r, &[8, 8, 3, 3], 1, &dead, "b");
    let s = b.op("Add", &[d, c2], vec![], "s");
    let c = zeroed_conv(&mut b, x, &[8, 3, 3, 3], 1, &[0, 2, 5, 7], "c");
    let cat = b.op("Concat", &[c, s], vec![Attribute::int("axis", 1)], "cat");
    let e = zeroed_conv(&mut b, cat, &[4, 16, 3, 3], 1, &[], "e");
    b.output(e, DataType::FLOAT);
    let model = b.build().unwrap();
    let passes = "prune-channels{ratio=0.5,min-channels=4,align=1,measure=false}";
    let (out, err) = check_inexact("prune-channels__dead-channels", &model, passes);
    assert!(err <= 1e-5, "max_rel_err {err:e}");
    assert_eq!(weight_dims(&out, "e"), [4, 8, 3, 3]);
}

#[test]
fn unfollowed_uses_leave_the_group_alone() {
    // a's output is reshaped: its channels cannot be followed; b is free.
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 4, 8, 8]);
    let a = conv(&mut b, x, ("wa", &[8, 4, 3, 3]), 1, "a");
    let shape = b.init("shape", Tensor::from_i64(vec![2], &[1, -1]));
    let flat = b.op("Reshape", &[a, shape], vec![], "flat");
    let c = conv(&mut b, a, ("wb", &[8, 8, 3, 3]), 1, "b");
    let r = b.op("Relu", &[c], vec![], "r");
    let e = conv(&mut b, r, ("we", &[2, 8, 3, 3]), 1, "e");
    b.output(flat, DataType::FLOAT);
    b.output(e, DataType::FLOAT);
    let model = b.build().unwrap();
    let passes = "prune-channels{ratio=0.25,min-channels=4,align=1}";
    let (out, _) = check_inexact("prune-channels__reshape-blocks", &model, passes);
    assert_eq!(weight_dims(&out, "a"), [8, 4, 3, 3]);
    assert_eq!(weight_dims(&out, "b"), [6, 8, 3, 3]);
    assert_eq!(weight_dims(&out, "e"), [2, 6, 3, 3]);
    let mut m = model.clone();
    let report = Pipeline::parse(passes)
        .unwrap()
        .run(&mut m, &Default::default(), &mut |_| {})
        .unwrap();
    let left = report[0].details["left_alone"].to_string();
    assert!(left.contains("Reshape flat"), "{left}");
}

/// How a Split gives its sizes.
#[derive(Clone, Copy, Debug)]
enum Sizes {
    /// The `split` attribute (before opset 13).
    Attr,
    /// The `split` input (from opset 13).
    Input,
    /// None: equal parts.
    Equal,
    /// `num_outputs` (opset 18).
    NumOutputs,
}

/// Split (along the channels) of `x` into `sizes`, in the given form.
fn split(b: &mut ModelBuilder, x: Outlet, sizes: &[i64], form: Sizes, out: &str) -> Vec<Outlet> {
    let names: Vec<String> = (0..sizes.len()).map(|i| format!("{out}{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let axis = Attribute::int("axis", 1);
    let (inputs, attrs) = match form {
        Sizes::Attr => (vec![Some(x)], vec![axis, Attribute::ints("split", sizes)]),
        Sizes::Input => {
            let s = b.init(
                &format!("{out}_sizes"),
                Tensor::from_i64(vec![sizes.len() as i64], sizes),
            );
            (vec![Some(x), Some(s)], vec![axis])
        }
        Sizes::Equal => (vec![Some(x)], vec![axis]),
        Sizes::NumOutputs => {
            let n = Attribute::int("num_outputs", sizes.len() as i64);
            (vec![Some(x)], vec![axis, n])
        }
    };
    b.op_n("Split", &inputs, attrs, &names)
}

/// What a Split says of its sizes: `attr [..]`, `input [..]`, `equal`, `num_outputs n`.
fn split_form(m: &Model) -> String {
    let g = &m.graph;
    let id = g
        .node_ids()
        .find(|&id| g.op(id).is_some_and(|op| op.op_type == "Split"))
        .expect("a Split");
    let op = g.op(id).unwrap();
    if let Some(s) = op.attr_ints("split") {
        return format!("attr {s:?}");
    }
    if let Some(o) = g.input(id, 1) {
        return format!("input {:?}", g.const_tensor(o).unwrap().to_i64().unwrap());
    }
    match op.attr("num_outputs") {
        Some(_) => format!("num_outputs {}", op.attr_int("num_outputs", 0)),
        None => "equal".to_string(),
    }
}

/// Conv a (16 channels) → Relu → Split along the channels into `sizes`;
/// part 0 is added to Conv d's output (a tie with part of a's channels),
/// each part feeds a Conv; with `exposed`, the last part is also a graph
/// output (its channels must stay).
fn split_model(opset: i64, sizes: &[i64], form: Sizes, exposed: bool) -> Model {
    let mut b = ModelBuilder::new(opset);
    let x = b.input("x", DataType::FLOAT, &[1, 4, 8, 8]);
    let a = conv(&mut b, x, ("wa", &[16, 4, 3, 3]), 1, "a");
    let r = b.op("Relu", &[a], vec![], "r");
    let parts = split(&mut b, r, sizes, form, "part");
    let d = conv(&mut b, x, ("wd", &[sizes[0], 4, 3, 3]), 1, "d");
    let s = b.op("Add", &[parts[0], d], vec![], "s");
    let mut ins = vec![s];
    ins.extend(&parts[1..]);
    for (i, p) in ins.into_iter().enumerate() {
        let c = sizes[i];
        let name = format!("c{i}");
        let y = conv(&mut b, p, (&format!("w{name}"), &[3, c, 3, 3]), 1, &name);
        b.output(y, DataType::FLOAT);
    }
    if exposed {
        b.output(*parts.last().unwrap(), DataType::FLOAT);
    }
    b.build().unwrap()
}

/// (snapshot, opset, sizes, form, last part exposed, the Split after,
/// a's and d's filters after).
type SplitRow = (
    &'static str,
    i64,
    &'static [i64],
    Sizes,
    bool,
    &'static str,
    i64,
    i64,
);

#[test]
fn split_parts_shrink_and_sizes_follow_the_opset() {
    let rows: &[SplitRow] = &[
        (
            "split-attr-opset12",
            12,
            &[6, 10],
            Sizes::Attr,
            false,
            "attr [3, 5]",
            8,
            3,
        ),
        (
            "split-input-opset13",
            13,
            &[6, 10],
            Sizes::Input,
            false,
            "input [3, 5]",
            8,
            3,
        ),
        (
            "split-equal-stays-equal",
            13,
            &[8, 8],
            Sizes::Equal,
            false,
            "equal",
            8,
            4,
        ),
        (
            "split-equal-attr-opset12",
            12,
            &[8, 8],
            Sizes::Equal,
            true,
            "attr [4, 8]",
            12,
            4,
        ),
        (
            "split-equal-input-opset13",
            13,
            &[8, 8],
            Sizes::Equal,
            true,
            "input [4, 8]",
            12,
            4,
        ),
        (
            "split-num-outputs-opset18",
            18,
            &[8, 8],
            Sizes::NumOutputs,
            true,
            "input [4, 8]",
            12,
            4,
        ),
        (
            "split-three-parts",
            13,
            &[4, 4, 8],
            Sizes::Input,
            true,
            "input [2, 2, 8]",
            12,
            2,
        ),
    ];
    let passes = "prune-channels{ratio=0.5,min-channels=2,align=1}";
    for &(name, opset, sizes, form, exposed, want, a_out, d_out) in rows {
        let model = split_model(opset, sizes, form, exposed);
        let (out, _) = check_inexact(&format!("prune-channels__{name}"), &model, passes);
        assert_eq!(split_form(&out), want, "{name}");
        assert_eq!(weight_dims(&out, "a")[0], a_out, "{name}");
        assert_eq!(weight_dims(&out, "d")[0], d_out, "{name}");
        for (i, &c) in sizes.iter().enumerate() {
            let kept = if exposed && i + 1 == sizes.len() {
                c
            } else {
                c / 2
            };
            assert_eq!(weight_dims(&out, &format!("c{i}"))[1], kept, "{name} c{i}");
        }
        // Never an op form the opset lacks.
        let op = out.graph.op(node(&out, "part0")).unwrap();
        assert_eq!(
            op.attr("split").is_some(),
            opset < 13 && want.starts_with("attr"),
            "{name}"
        );
        assert_eq!(
            op.attr("num_outputs").is_some(),
            want.starts_with("num_outputs"),
            "{name}"
        );
    }
}

#[test]
fn split_dead_channels_are_removed_exactly() {
    // Concat(a, e) is cut by the Split inside a: part 0 is a[0:6], tied
    // to d by an Add; part 1 is a[6:8] then e. The zero (dead) channels
    // are the ones pruned: outputs must not move, in either form.
    for (opset, form) in [(12, Sizes::Attr), (13, Sizes::Input)] {
        let mut b = ModelBuilder::new(opset);
        let x = b.input("x", DataType::FLOAT, &[1, 3, 8, 8]);
        let a = zeroed_conv(&mut b, x, &[8, 3, 3, 3], 1, &[1, 3, 4, 7], "a");
        let e = zeroed_conv(&mut b, x, &[8, 3, 3, 3], 1, &[0, 2, 5, 6], "e");
        let cat = b.op("Concat", &[a, e], vec![Attribute::int("axis", 1)], "cat");
        let parts = split(&mut b, cat, &[6, 10], form, "part");
        let d = zeroed_conv(&mut b, x, &[6, 3, 3, 3], 1, &[1, 3, 4], "d");
        let s = b.op("Add", &[parts[0], d], vec![], "s");
        let c0 = zeroed_conv(&mut b, s, &[4, 6, 3, 3], 1, &[], "c0");
        let c1 = zeroed_conv(&mut b, parts[1], &[4, 10, 3, 3], 1, &[], "c1");
        b.output(c0, DataType::FLOAT);
        b.output(c1, DataType::FLOAT);
        let model = b.build().unwrap();
        let passes = "prune-channels{ratio=0.5,min-channels=2,align=1}";
        let out = crate::passes::testing::rewrite(&model, passes);
        let err = crate::passes::testing::max_rel_err(&model, &out);
        assert!(err <= 1e-5, "opset {opset}: max_rel_err {err:e}");
        // a[0:6] with d: 6 -> 3; a[6:8]: 2 -> 1; e: 8 -> 4.
        assert_eq!(weight_dims(&out, "a")[0], 4, "opset {opset}");
        assert_eq!(weight_dims(&out, "d")[0], 3, "opset {opset}");
        assert_eq!(weight_dims(&out, "e")[0], 4, "opset {opset}");
        assert_eq!(weight_dims(&out, "c0")[1], 3, "opset {opset}");
        assert_eq!(weight_dims(&out, "c1")[1], 5, "opset {opset}");
        let want = if opset < 13 {
            "attr [3, 5]"
        } else {
            "input [3, 5]"
        };
        assert_eq!(split_form(&out), want);
    }
}

#[test]
fn a_tie_cuts_the_other_side_to_match() {
    // Add(Concat(a, b), c): c is cut in two parts, tied to a and to b.
    // The dead channels are the ones pruned: outputs must not move.
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 3, 8, 8]);
    let a = zeroed_conv(&mut b, x, &[4, 3, 3, 3], 1, &[1, 3], "a");
    let bb = zeroed_conv(&mut b, x, &[4, 3, 3, 3], 1, &[0, 2], "b");
    let c = zeroed_conv(&mut b, x, &[8, 3, 3, 3], 1, &[1, 3, 4, 6], "c");
    let cat = b.op("Concat", &[a, bb], vec![Attribute::int("axis", 1)], "cat");
    let s = b.op("Add", &[cat, c], vec![], "s");
    let e = zeroed_conv(&mut b, s, &[4, 8, 3, 3], 1, &[], "e");
    b.output(e, DataType::FLOAT);
    let model = b.build().unwrap();
    let mut out = model.clone();
    let report = Pipeline::parse("prune-channels{ratio=0.5,min-channels=2,align=1}")
        .unwrap()
        .run(&mut out, &Default::default(), &mut |_| {})
        .unwrap();
    let err = crate::passes::testing::max_rel_err(&model, &out);
    assert!(err <= 1e-5, "max_rel_err {err:e}");
    assert_eq!(weight_dims(&out, "c")[0], 4);
    assert_eq!(weight_dims(&out, "e")[1], 4);
    let pruned = report[0].details["pruned"].to_string();
    assert!(
        pruned.contains("c[0:4]") && pruned.contains("c[4:8]"),
        "{pruned}"
    );
}

#[test]
fn split_sizes_that_are_not_constant_leave_the_group_alone() {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 4, 8, 8]);
    let sizes = b.input("sizes", DataType::INT64, &[2]);
    let a = conv(&mut b, x, ("wa", &[16, 4, 3, 3]), 1, "a");
    let parts = b.op_n(
        "Split",
        &[Some(a), Some(sizes)],
        vec![Attribute::int("axis", 1)],
        &["p0", "p1"],
    );
    for (i, p) in parts.into_iter().enumerate() {
        let y = conv(
            &mut b,
            p,
            (&format!("w{i}"), &[3, 8, 3, 3]),
            1,
            &format!("c{i}"),
        );
        b.output(y, DataType::FLOAT);
    }
    let mut m = b.build().unwrap();
    let report = Pipeline::parse("prune-channels{ratio=0.5,min-channels=2,align=1}")
        .unwrap()
        .run(&mut m, &Default::default(), &mut |_| {})
        .unwrap();
    let left = report[0].details["left_alone"].to_string();
    assert!(
        left.contains("Split p0: split sizes are not a constant"),
        "{left}"
    );
    assert_eq!(weight_dims(&m, "a"), [16, 4, 3, 3]);
}

#[test]
fn same_input_same_output() {
    let passes = "prune-channels{ratio=0.4,min-channels=2,norm=l2,align=1}";
    let a = crate::passes::testing::rewrite(&tied(), passes);
    let b = crate::passes::testing::rewrite(&tied(), passes);
    assert_eq!(
        crate::onnx::encode(&a).unwrap(),
        crate::onnx::encode(&b).unwrap()
    );
}

#[test]
fn bad_options_are_clear_errors() {
    for (passes, want) in [
        ("prune-channels{ratio=1}", "outside [0, 1)"),
        ("prune-channels{ratio=-0.1}", "outside [0, 1)"),
        ("prune-channels{ratio=half}", "ratio='half' is not valid"),
        ("prune-channels{norm=l3}", "norm='l3' is not valid"),
        ("prune-channels{min-channels=-1}", "min-channels='-1'"),
        ("prune-channels{align=0}", "align='0' is not valid"),
        ("prune-channels{align=16|x}", "align='x' is not valid"),
    ] {
        let err = Pipeline::parse(passes).err().expect(passes);
        let msg = format!("{err:#}");
        assert!(msg.contains(want), "{passes}: {msg}");
    }
}

mod refit_tests {
    use crate::calibrate::Calibration;
    use crate::passes::testing::max_rel_err;
    use crate::pipeline::{PassContext, Pipeline};
    use crate::runtime::InputShapes;

    #[test]
    fn refit_brings_outputs_closer_to_the_unpruned_model() {
        let model = super::tied();
        // The samples max_rel_err compares on (seeds 0, 1, 2), as if given by --inputs.
        let mut data = Calibration::load(&model, &InputShapes::new(), None, 0, 3).unwrap();
        data.random = false;
        let cx = PassContext { data: Some(data) };
        let run = |passes: &str, cx: &PassContext| {
            let mut m = model.clone();
            let r = Pipeline::parse(passes)
                .unwrap()
                .run(&mut m, cx, &mut |_| {})
                .unwrap();
            (m, r[0].details.clone())
        };
        let passes = "prune-channels{ratio=0.5,min-channels=4,align=1,measure=false}";
        let (plain, d) = run(passes, &PassContext::default());
        assert_eq!(d["refit"], false);
        assert!(
            d["refit_reason"].as_str().unwrap().contains("no --inputs"),
            "{d}"
        );
        let (refit, d) = run(passes, &cx);
        assert_eq!(d["refit"], true, "{d}");
        let (again, _) = run(passes, &cx);
        let bytes = |m: &crate::ir::Model| crate::onnx::encode(m).unwrap();
        assert_eq!(bytes(&refit), bytes(&again), "same data, same bytes");
        let (e0, e1) = (max_rel_err(&model, &plain), max_rel_err(&model, &refit));
        assert!(e1 < e0, "refit {e1:e} vs unrefitted {e0:e}");
    }
}

#[test]
fn split_sizes_whose_sum_wraps_are_refused() {
    // i64::MAX + i64::MAX + 18 wraps to 16, the channel count, in release.
    let mut b = ModelBuilder::new(12);
    let x = b.input("x", DataType::FLOAT, &[1, 16, 8, 8]);
    for p in split(&mut b, x, &[i64::MAX, i64::MAX, 18], Sizes::Attr, "p") {
        b.output(p, DataType::FLOAT);
    }
    let m = b.build().unwrap();
    let g = &m.graph;
    let id = g.node_ids().find(|&id| g.op(id).is_some()).unwrap();
    let e = super::rewrite::split_sizes(g, id, 16).unwrap_err();
    assert!(format!("{e:#}").contains("do not add up"), "{e:#}");
}

#[test]
fn a_group_that_overflows_the_channels_leaves_the_group_alone() {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 4, 8, 8]);
    let a = conv(&mut b, x, ("wa", &[16, 4, 3, 3]), 1, "a");
    // 4 · 2^62 input channels: past i64.
    let y = conv(&mut b, a, ("wc", &[3, 4, 3, 3]), 1 << 62, "c");
    b.output(y, DataType::FLOAT);
    let mut m = b.build().unwrap();
    let report = Pipeline::parse("prune-channels{ratio=0.5,min-channels=2,align=1}")
        .unwrap()
        .run(&mut m, &Default::default(), &mut |_| {})
        .unwrap();
    let left = report[0].details["left_alone"].to_string();
    assert!(left.contains("overflows the input channels"), "{left}");
    assert_eq!(weight_dims(&m, "a"), [16, 4, 3, 3]);
}

#[test]
fn kept_counts_are_the_nearest_multiple_of_align() {
    // (size, ratio, align) -> kept
    for (size, ratio, align, want) in [
        (512, 0.3, 8, 360), // 358.4 -> 360
        (256, 0.3, 8, 176), // 179.2 -> 176
        (128, 0.3, 8, 88),  // 89.6 -> 88
        (64, 0.3, 8, 48),   // 44.8 -> 48
        (90, 0.3, 8, 64),   // 63 -> 64
        (12, 0.5, 8, 8),    // 6 -> at least one multiple
        (24, 0.5, 8, 16),   // 12: a tie keeps more
        (90, 0.0, 8, 90),   // ratio 0 removes nothing, aligned or not
        (45, 0.2, 1, 36),   // align=1: the ratio itself
        (512, 0.3, 16, 352),
    ] {
        assert_eq!(
            super::kept_count(size, ratio, align),
            want,
            "{size} {ratio} {align}"
        );
    }
}

#[test]
fn small_groups_take_the_finer_multiple() {
    let align = [16, 8];
    for (size, want) in [(512, 16), (64, 16), (63, 8), (32, 8), (16, 8), (4, 8)] {
        assert_eq!(super::alignment(size, &align), want, "{size}");
    }
    assert_eq!(super::alignment(16, &[1]), 1);
}

#[test]
fn kept_channels_are_aligned_and_a_group_rounding_back_to_its_size_is_reported() {
    // a: 24 channels at ratio 0.3 keep 16 (16.8, rounded to a multiple of
    // 8); e: 8 channels (5.6 -> 8) keep all of them, and the report says why.
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 4, 8, 8]);
    let a = conv(&mut b, x, ("wa", &[24, 4, 3, 3]), 1, "a");
    let ya = conv(&mut b, a, ("wya", &[3, 24, 3, 3]), 1, "ya");
    b.output(ya, DataType::FLOAT);
    let e = conv(&mut b, x, ("we", &[8, 4, 3, 3]), 1, "e");
    let ye = conv(&mut b, e, ("wye", &[3, 8, 3, 3]), 1, "ye");
    b.output(ye, DataType::FLOAT);
    let mut m = b.build().unwrap();
    let report = Pipeline::parse("prune-channels{ratio=0.3,align=8}")
        .unwrap()
        .run(&mut m, &Default::default(), &mut |_| {})
        .unwrap();
    assert_eq!(weight_dims(&m, "a"), [16, 4, 3, 3]);
    assert_eq!(weight_dims(&m, "ya"), [3, 16, 3, 3]);
    assert_eq!(weight_dims(&m, "e"), [8, 4, 3, 3]);
    let left = report[0].details["left_alone"].to_string();
    assert!(
        left.contains("ratio removes no channel once rounded to a multiple of 8"),
        "{left}"
    );
}

#[test]
fn a_group_its_multiple_moves_far_from_the_ratio_is_left_alone() {
    // 32 channels at 0.3 want 22.4: in multiples of 16 that is 16, more
    // than an eighth of the group (4) away, so the group stays whole; at
    // 0.5 it keeps 16 exactly. (size, ratio, keep) -> strays
    for (size, ratio, keep, want) in [
        (32, 0.3, 16, true),
        (32, 0.5, 16, false),
        (16, 0.3, 8, true), // 11.2 -> 8
        (48, 0.3, 32, false),
        (512, 0.3, 352, false),
    ] {
        assert_eq!(
            super::strays(size, ratio, keep),
            want,
            "{size} {ratio} {keep}"
        );
    }
    let build = || {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 4, 8, 8]);
        let a = conv(&mut b, x, ("wa", &[32, 4, 3, 3]), 1, "a");
        let ya = conv(&mut b, a, ("wya", &[3, 32, 3, 3]), 1, "ya");
        b.output(ya, DataType::FLOAT);
        b.build().unwrap()
    };
    let mut m = build();
    let report = Pipeline::parse("prune-channels{ratio=0.3,align=16}")
        .unwrap()
        .run(&mut m, &Default::default(), &mut |_| {})
        .unwrap();
    assert_eq!(weight_dims(&m, "a"), [32, 4, 3, 3]);
    let left = report[0].details["left_alone"].to_string();
    assert!(left.contains("strays more than an eighth"), "{left}");
    let mut m = build();
    Pipeline::parse("prune-channels{ratio=0.5,align=16}")
        .unwrap()
        .run(&mut m, &Default::default(), &mut |_| {})
        .unwrap();
    assert_eq!(weight_dims(&m, "a"), [16, 4, 3, 3]);
}
