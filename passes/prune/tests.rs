//! Tests of `prune`: the sparsity reached (per layer, global, by threshold),
//! the N:M validator, sparse storage, option errors, determinism.

use super::{nm_mask, nm_violations};
use crate::ir::build::ModelBuilder;
use crate::ir::{Attribute, DataType, Model};
use crate::passes::testing::init;
use crate::passes::testing::{check_inexact, max_rel_err, rewrite};
use crate::pipeline::Pipeline;

/// Conv → Relu → Conv → Relu → Conv → Flatten → Gemm, weights of every size.
fn model() -> Model {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 4, 8, 8]);
    let pads = || vec![Attribute::ints("pads", &[1, 1, 1, 1])];
    let w0 = init(&mut b, "w0", &[8, 4, 3, 3], 1);
    let c0 = b.op("Conv", &[x, w0], pads(), "c0");
    let r0 = b.op("Relu", &[c0], vec![], "r0");
    let w1 = init(&mut b, "w1", &[16, 8, 3, 3], 2);
    let c1 = b.op("Conv", &[r0, w1], pads(), "c1");
    let r1 = b.op("Relu", &[c1], vec![], "r1");
    let w2 = init(&mut b, "w2", &[16, 16, 3, 3], 3);
    let c2 = b.op("Conv", &[r1, w2], pads(), "c2");
    let p = b.op("GlobalAveragePool", &[c2], vec![], "p");
    let f = b.op("Flatten", &[p], vec![], "f");
    let w3 = init(&mut b, "w3", &[16, 8], 4);
    let y = b.op("Gemm", &[f, w3], vec![], "y");
    b.output(y, DataType::FLOAT);
    b.build().unwrap()
}

fn weight(m: &Model, name: &str) -> Vec<f32> {
    let g = &m.graph;
    let o = g.find_value(name).unwrap();
    g.const_tensor(o).unwrap().to_f32().unwrap()
}

fn sparsity(v: &[f32]) -> f64 {
    v.iter().filter(|x| **x == 0.0).count() as f64 / v.len() as f64
}

#[test]
fn per_layer_sparsity_is_reached() {
    let passes = "prune{sparsity=0.6,min-params=500}";
    let (out, _) = check_inexact("prune__layer-0.6", &model(), passes);
    // First (w0) and last (w3) layers are skipped by default.
    assert_eq!(sparsity(&weight(&out, "w0")), 0.0);
    assert_eq!(sparsity(&weight(&out, "w3")), 0.0);
    for w in ["w1", "w2"] {
        let s = sparsity(&weight(&out, w));
        assert!((s - 0.6).abs() < 1e-3, "{w}: {s}");
    }
}

#[test]
fn global_sparsity_is_reached_overall() {
    let passes = "prune{sparsity=0.5,scope=global,skip-first-last=false,min-params=0}";
    let (out, _) = check_inexact("prune__global-0.5", &model(), passes);
    let all: Vec<f32> = ["w0", "w1", "w2", "w3"]
        .iter()
        .flat_map(|w| weight(&out, w))
        .collect();
    assert!((sparsity(&all) - 0.5).abs() < 1e-3);
}

#[test]
fn threshold_zeroes_small_weights_only() {
    let passes = "prune{threshold=0.25,min-params=0,skip=c2}";
    let m = model();
    let (out, _) = check_inexact("prune__threshold", &m, passes);
    let (before, after) = (weight(&m, "w1"), weight(&out, "w1"));
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(*b, if a.abs() <= 0.25 { 0.0 } else { *a });
    }
    assert_eq!(weight(&m, "w2"), weight(&out, "w2"), "skipped by name");
}

#[test]
fn two_four_pattern_passes_the_validator() {
    let passes = "prune{pattern=2:4,min-params=0,skip-first-last=false}";
    let (out, _) = check_inexact("prune__2-4", &model(), passes);
    // w0 has 4 input channels, w1 8, w2 16; w3 (Gemm K=16) too.
    for (w, dims, axis) in [
        ("w0", vec![8, 4, 3, 3], 1),
        ("w1", vec![16, 8, 3, 3], 1),
        ("w2", vec![16, 16, 3, 3], 1),
        ("w3", vec![16, 8], 0),
    ] {
        let v = weight(&out, w);
        assert_eq!(nm_violations(&v, &dims, axis, 2, 4), 0, "{w}");
        assert!((sparsity(&v) - 0.5).abs() < 1e-9, "{w}");
    }
}

/// `store=sparse` writes the weights past 2/3 zeros as sparse
/// initializers, the others dense; the model computes exactly what the
/// dense pruned one does, and survives a file round trip.
#[test]
fn sparse_storage_holds_the_same_weights() {
    use crate::ir::NodeKind;
    let opts = "sparsity=0.8,min-params=0,skip-first-last=false";
    let dense = rewrite(&model(), &format!("prune{{{opts}}}"));
    let (sparse, _) = check_inexact(
        "prune__store-sparse",
        &model(),
        &format!("prune{{{opts},store=sparse}}"),
    );
    let g = &sparse.graph;
    let count = g
        .node_ids()
        .filter(|&id| matches!(g.node(id).kind, NodeKind::SparseInitializer(_)))
        .count();
    assert_eq!(count, 4, "all four weights are 80% zeros");
    assert_eq!(max_rel_err(&dense, &sparse), 0.0);
    let bytes = crate::onnx::encode(&sparse).unwrap();
    let back = crate::onnx::decode(bytes.clone().into(), None).unwrap();
    assert_eq!(crate::onnx::encode(&back).unwrap(), bytes);
    assert!(bytes.len() < crate::onnx::encode(&dense).unwrap().len());
    // At 50% zeros the sparse form would be larger: weights stay dense.
    let half = rewrite(&model(), "prune{sparsity=0.5,min-params=0,store=sparse}");
    assert!(half
        .graph
        .node_ids()
        .all(|id| !matches!(half.graph.node(id).kind, NodeKind::SparseInitializer(_))));
}

#[test]
fn validator_catches_a_broken_group() {
    let dims = [2, 4];
    let mut v = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    assert_eq!(nm_violations(&v, &dims, 1, 2, 4), 2);
    nm_mask(&mut v, &dims, 1, 2, 4);
    assert_eq!(v, [0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 7.0, 8.0]);
    assert_eq!(nm_violations(&v, &dims, 1, 2, 4), 0);
    // Along axis 0: groups are columns.
    let mut v = vec![1.0, -9.0, 2.0, 1.0];
    nm_mask(&mut v, &[2, 2], 0, 1, 2);
    assert_eq!(v, [0.0, -9.0, 2.0, 0.0]);
}

#[test]
fn bad_options_are_clear_errors() {
    for (passes, want) in [
        ("prune{sparsity=1}", "outside [0, 1)"),
        ("prune{sparsity=1.5}", "outside [0, 1)"),
        ("prune{sparsity=-0.1}", "outside [0, 1)"),
        ("prune{pattern=4:2}", "not N:M with 0 < N < M"),
        ("prune{pattern=2:2}", "not N:M with 0 < N < M"),
        ("prune{pattern=0:4}", "not N:M with 0 < N < M"),
        ("prune{pattern=24}", "not N:M with 0 < N < M"),
        ("prune{pattern=a:b}", "not N:M with 0 < N < M"),
        ("prune{threshold=-1}", "threshold='-1' is not a number >= 0"),
        ("prune{scope=model}", "scope='model' is not valid"),
        ("prune{ops=Conv|LSTM}", "'LSTM' is not one of"),
    ] {
        let err = Pipeline::parse(passes).err().expect(passes);
        let msg = format!("{err:#}");
        assert!(msg.contains(want), "{passes}: {msg}");
    }
}

#[test]
fn same_input_same_output() {
    let passes = "prune{sparsity=0.3,scope=global,min-params=0}";
    let a = crate::passes::testing::rewrite(&model(), passes);
    let b = crate::passes::testing::rewrite(&model(), passes);
    assert_eq!(
        crate::onnx::encode(&a).unwrap(),
        crate::onnx::encode(&b).unwrap()
    );
}
