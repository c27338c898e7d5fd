//! Test helpers shared by the pass files: run a pipeline on a fixture, check
//! in tract that outputs did not change beyond rounding, and pin the graph
//! diff as a snapshot in `snapshots/` (review with `cargo insta review`);
//! fixtures: seeded values and weight initializers.

use crate::exec;
use crate::ir::build::ModelBuilder;
use crate::ir::{diff::model_diff, Model, Outlet, Tensor};
use crate::pipeline::Pipeline;
use crate::runtime::{self, InputShapes, Sample};

/// The operator types of the main graph, in execution order.
pub fn op_types(m: &Model) -> Vec<String> {
    let g = &m.graph;
    g.op_order()
        .unwrap()
        .into_iter()
        .map(|id| g.op(id).unwrap().op_type.clone())
        .collect()
}

/// Runs `passes` on a copy of `model`.
pub fn rewrite(model: &Model, passes: &str) -> Model {
    let mut out = model.clone();
    Pipeline::parse(passes)
        .unwrap()
        .run(&mut out, &Default::default(), &mut |_| {})
        .unwrap_or_else(|e| panic!("{passes}: {e:#}"));
    out
}

/// The error of running `passes` on a copy of `model` (which must fail).
pub fn rewrite_err(model: &Model, passes: &str) -> String {
    let mut out = model.clone();
    match Pipeline::parse(passes)
        .unwrap()
        .run(&mut out, &Default::default(), &mut |_| {})
    {
        Ok(_) => panic!("{passes}: no error"),
        Err(e) => format!("{e:#}"),
    }
}

/// Runs `passes` on a copy of `model` with `samples` seeded random
/// calibration samples (for the passes that fit to data).
pub fn rewrite_with_data(model: &Model, passes: &str, samples: usize) -> Model {
    let mut out = model.clone();
    let data = crate::calibrate::Calibration::load(model, &InputShapes::new(), None, 7, samples)
        .unwrap_or_else(|e| panic!("calibration samples: {e:#}"));
    let cx = crate::pipeline::PassContext { data: Some(data) };
    Pipeline::parse(passes)
        .unwrap()
        .run(&mut out, &cx, &mut |_| {})
        .unwrap_or_else(|e| panic!("{passes}: {e:#}"));
    out
}

/// [`check_inexact`] for passes that calibrate: `samples` seeded random
/// calibration samples (seed 7, apart from the seeds outputs are compared on).
pub fn check_with_data(name: &str, model: &Model, passes: &str, samples: usize) -> (Model, f64) {
    let after = rewrite_with_data(model, passes, samples);
    let err = max_rel_err(model, &after);
    assert!(err.is_finite(), "{name}: {passes} gave non-finite outputs");
    snapshot(name, model, &after, passes);
    (after, err)
}

/// Largest max_rel_err over all outputs, on three seeded random samples.
pub fn max_rel_err(before: &Model, after: &Model) -> f64 {
    let shapes = InputShapes::new();
    let a = exec::load(before, &shapes, &[]).unwrap_or_else(|e| panic!("original: {e:#}"));
    let b = exec::load(after, &shapes, &[]).unwrap_or_else(|e| panic!("rewritten: {e:#}"));
    let mut worst: f64 = 0.0;
    for seed in 0..3 {
        let sample = Sample::random(a.inputs(), seed).unwrap();
        let metrics = runtime::compare(&a.run(&sample).unwrap(), &b.run(&sample).unwrap()).unwrap();
        worst = metrics.iter().map(|m| m.max_rel_err).fold(worst, f64::max);
    }
    worst
}

/// Runs `passes`, asserts outputs stay within 1e-5 relative in tract, pins
/// the diff as snapshot `name`, and returns the rewritten model.
pub fn check(name: &str, model: &Model, passes: &str) -> Model {
    let after = rewrite(model, passes);
    let err = max_rel_err(model, &after);
    assert!(
        err <= 1e-5,
        "{name}: {passes} changed outputs: max_rel_err {err:e}"
    );
    snapshot(name, model, &after, passes);
    after
}

/// For passes that are not exact (pruning): runs `passes`, asserts the
/// result still loads and runs in tract with finite outputs, pins the diff
/// as snapshot `name`, and returns the rewritten model and its max_rel_err.
pub fn check_inexact(name: &str, model: &Model, passes: &str) -> (Model, f64) {
    let after = rewrite(model, passes);
    let err = max_rel_err(model, &after);
    assert!(err.is_finite(), "{name}: {passes} gave non-finite outputs");
    snapshot(name, model, &after, passes);
    (after, err)
}

fn snapshot(name: &str, model: &Model, after: &Model, passes: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots");
    insta::with_settings!({
        snapshot_path => path,
        prepend_module_to_snapshot => false,
        description => format!("{passes} on {name}"),
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, model_diff(model, after));
    });
}

/// Deterministic values in [lo, hi) (splitmix64).
pub(crate) fn values(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            lo + (hi - lo) * ((z >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

pub(crate) fn init(b: &mut ModelBuilder, name: &str, dims: &[i64], seed: u64) -> Outlet {
    let n = dims.iter().product::<i64>() as usize;
    b.init(
        name,
        Tensor::from_f32(dims.to_vec(), &values(seed, n, -1.0, 1.0)),
    )
}
