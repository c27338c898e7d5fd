//! The model's own rounding floor: how far the original's outputs move when
//! every weight of its layers moves by about one ulp. A fixed tolerance
//! cannot tell an exact rewrite from a wrong one on every model: a deep
//! detector run on 1×1 noise outputs values near 1e-5 whose relative error
//! after folding BatchNorm is 1e-2 (PP-OCRv5 det, max_abs 1.2e-7), and a
//! 501-step GRU amplifies any rounding (SLANet). A rewrite that moves the
//! outputs no further than [`FLOOR_TIMES`] × this floor did nothing rounding
//! alone would not do. The same measure judges exactness in
//! `benches/vs_onnxsim.py`.

use super::{options, same_shapes, Check, Original};
use crate::exec;
use crate::ir::{DataType, Graph, Model, NodeKind};
use crate::pipeline::{PassContext, Pipeline};
use crate::runtime::{self, InputShapes, OutputMetrics};
use anyhow::{Context, Result};
use std::collections::BTreeSet;

/// An output within this many times its floor passes an exact check.
pub const FLOOR_TIMES: f64 = 2.0;

/// Samples the floor is measured on, at most (spread over the groups in
/// order): a second opinion, not a second verification.
const FLOOR_SAMPLES: usize = 8;

/// The layers whose weights and biases are nudged.
const LAYERS: [&str; 4] = ["Conv", "ConvTranspose", "Gemm", "MatMul"];

/// Each output's floor (its `max_rel_err` between the original and the
/// nudged original), on the first [`FLOOR_SAMPLES`] samples of `groups`.
pub(super) fn rounding_floor(
    check: Check,
    groups: &[(InputShapes, Vec<usize>)],
) -> Result<Vec<OutputMetrics>> {
    let nudged = nudged(check.original).context("nudging the original's weights")?;
    let mut per_group = vec![];
    let mut left = FLOOR_SAMPLES;
    for (shapes, members) in groups {
        if left == 0 {
            break;
        }
        let take: Vec<usize> = members.iter().copied().take(left).collect();
        left -= take.len();
        let samples = take
            .iter()
            .map(|&i| check.data.sample(i))
            .collect::<Result<Vec<_>>>()?;
        // One model at a time, as the check runs them.
        let references = {
            let original = Original::load(check, shapes)?;
            samples
                .iter()
                .map(|s| original.runner().run(s).context("original model"))
                .collect::<Result<Vec<_>>>()?
        };
        let nudged = exec::load_in(check.engine, &nudged, shapes, &[], &options(check))
            .context("the original with its weights nudged")?;
        let mut per_sample = vec![];
        for (s, reference) in samples.iter().zip(&references) {
            let got = nudged
                .run(s)
                .context("the original with its weights nudged")?;
            per_sample.push(runtime::compare(reference, &got)?);
        }
        per_group.push(runtime::aggregate(&per_sample)?);
    }
    runtime::aggregate(&same_shapes(per_group))
}

/// `model` with every f32 weight and bias of its layers scaled by 1 ± ε
/// (ε = 2⁻²³; the sign alternating along the tensor), in every graph: how
/// far this moves the outputs is the model's rounding floor.
pub fn nudged(model: &Model) -> Result<Model> {
    let mut m = model.clone();
    // Weights held by Constant nodes (PP-OCR's) become initializers first.
    Pipeline::parse("lift-constants")?.run(&mut m, &PassContext::default(), &mut |_| {})?;
    m.graph.visit_graphs_mut(&mut |g| nudge(g))?;
    Ok(m)
}

fn nudge(g: &mut Graph) -> Result<()> {
    let mut weights = BTreeSet::new();
    for id in g.node_ids().collect::<Vec<_>>() {
        let Some(op) = g.op(id) else { continue };
        if !op.is_default_domain() || !LAYERS.contains(&op.op_type.as_str()) {
            continue;
        }
        for slot in 1..=2 {
            if let Some(o) = g.input(id, slot) {
                if g.const_tensor(o)
                    .is_some_and(|t| t.dtype == DataType::FLOAT)
                {
                    weights.insert(o.node);
                }
            }
        }
    }
    for (k, id) in weights.into_iter().enumerate() {
        let NodeKind::Initializer(t) = &mut g.node_mut(id).kind else {
            continue;
        };
        let values: Vec<f32> = t
            .to_f32()?
            .into_iter()
            .enumerate()
            .map(|(i, w)| match (i + k) % 2 {
                0 => w * (1.0 + f32::EPSILON),
                _ => w * (1.0 - f32::EPSILON),
            })
            .collect();
        t.data = crate::ir::Tensor::from_f32_vec(t.dims.clone(), values).data;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every f32 weight and bias of a layer moves by ε relative (one or
    /// two ulps, by where it lies in its binade); nothing else moves.
    #[test]
    fn nudges_the_layers_weights_by_epsilon_and_nothing_else() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cnn.onnx");
        let model = crate::onnx::load(&path).unwrap();
        let nudged = nudged(&model).unwrap();
        let constants = |m: &Model| -> Vec<(String, Vec<f32>)> {
            let g = &m.graph;
            let mut out: Vec<(String, Vec<f32>)> = g
                .node_ids()
                .filter_map(|id| match &g.node(id).kind {
                    NodeKind::Initializer(t) if t.dtype == DataType::FLOAT => {
                        Some((g.node(id).label(), t.to_f32().unwrap()))
                    }
                    _ => None,
                })
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        };
        let (before, after) = (constants(&model), constants(&nudged));
        assert_eq!(before.len(), after.len());
        let (mut moved, mut kept) = (0, 0);
        for ((name, a), (_, b)) in before.iter().zip(&after) {
            for (x, y) in a.iter().zip(b) {
                let ulps = (x.to_bits() as i64 - y.to_bits() as i64).abs();
                assert!(ulps <= 2, "{name}: {x} -> {y}");
                if x != y {
                    moved += 1;
                } else {
                    kept += 1;
                }
            }
        }
        // cnn's Conv and Gemm weights and biases move (10,154 values); its
        // BatchNorm parameters (4 × 64) stay.
        assert_eq!((moved, kept), (10_154, 256));
    }
}
