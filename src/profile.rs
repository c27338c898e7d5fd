//! `onnx-opt profile`: where a model spends its time in ONNX Runtime.
//!
//! The model runs `warmup + runs` times in a profiling session (the
//! deployment settings of `runtime::ort`); the kernel times of the runs
//! after warm-up are summed per node ONNX Runtime ran, per op type, and per
//! layer, a layer being the model's own node the runtime's node came from:
//! the node of that name, else the longest node name it starts with
//! (ONNX Runtime names the nodes it adds after the ones they replace, e.g.
//! `conv1_nchwc`), else none (a node ONNX Runtime added, e.g. a layout
//! reorder). Node names survive onnx-opt's passes, so a profile of an
//! optimised model maps onto the layers of the original. Unnamed nodes are
//! named `<op_type>_<k>` (in graph order) for the profile.

use crate::calibrate::Calibration;
use crate::exec;
use crate::ir::{Model, NodeKind};
use crate::runtime::{self, ort, Engine, Runner};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// How to profile.
pub struct Settings {
    pub threads: usize,
    pub warmup: usize,
    pub runs: usize,
}

/// A profile, as printed and as JSON (`--report`).
#[derive(Serialize, Debug)]
pub struct ProfileReport {
    pub runtime: Engine,
    pub threads: usize,
    pub warmup: usize,
    pub runs: usize,
    pub inputs: String,
    /// Wall time of a whole run (mean over the profiled runs, as the kernel
    /// times are, so that a slow run cannot put the kernels above it).
    pub run_ms: f64,
    /// Sum of all kernel times per run (≤ run_ms; the rest is the executor).
    pub kernels_ms: f64,
    /// Per op type as ONNX Runtime ran it (fused ops under their own name), slowest first.
    pub op_types: Vec<Row>,
    /// Per layer of the model, slowest first.
    pub layers: Vec<Row>,
    /// Per node ONNX Runtime ran, slowest first.
    pub nodes: Vec<NodeRow>,
}

#[derive(Serialize, Debug)]
pub struct Row {
    pub name: String,
    /// Kernel milliseconds per run.
    pub ms: f64,
    /// Fraction of all kernel time.
    pub share: f64,
    /// Nodes ONNX Runtime ran for it.
    pub nodes: usize,
}

#[derive(Serialize, Debug)]
pub struct NodeRow {
    pub node: String,
    pub op_type: String,
    /// The model's node it comes from, `None` when ONNX Runtime added it.
    pub layer: Option<String>,
    pub ms: f64,
    pub share: f64,
}

/// Profiles `model` on the first of `data`'s samples.
pub fn profile(model: &Model, data: &Calibration, settings: &Settings) -> Result<ProfileReport> {
    // The first sample, with its group's shapes pinned.
    let Some((shapes, sample)) = data
        .groups
        .iter()
        .find_map(|(shapes, members)| Some((shapes, data.samples.get(*members.first()?)?)))
    else {
        bail!("no input sample to profile on");
    };
    let named = with_node_names(model);
    let layers = layer_keys(&named);
    let dir = tempfile::tempdir().context("a folder for ONNX Runtime's profile")?;
    let options = ort::Options {
        threads: settings.threads,
        profile: Some(dir.path().join("profile")),
    };
    let rt = exec::load_in(Engine::Ort, &named, shapes, &[], &options)?;
    let Runner::Ort(session) = &rt else {
        bail!("profiling needs ONNX Runtime");
    };
    for _ in 0..settings.warmup + settings.runs {
        session.run(sample)?;
    }
    let file = session.end_profiling()?;
    let json = std::fs::read_to_string(&file)
        .with_context(|| format!("reading ONNX Runtime's profile {}", file.display()))?;
    let trace = runtime::ort::parse_profile(&json, settings.warmup)?;

    let runs = trace.run_us.len() as f64;
    let per_run_ms = |us: u64| us as f64 / 1e3 / runs;
    let total_us: u64 = trace.nodes.iter().map(|n| n.total_us).sum();
    let share = |us: u64| {
        if total_us == 0 {
            0.0
        } else {
            us as f64 / total_us as f64
        }
    };
    let mut nodes: Vec<NodeRow> = trace
        .nodes
        .iter()
        .map(|n| NodeRow {
            node: n.node.clone(),
            op_type: n.op_type.clone(),
            layer: layer_of(&n.node, &layers),
            ms: per_run_ms(n.total_us),
            share: share(n.total_us),
        })
        .collect();
    let group = |key: &dyn Fn(&runtime::ort::NodeTime) -> String| -> Vec<Row> {
        let mut sums: BTreeMap<String, (u64, usize)> = BTreeMap::new();
        for n in &trace.nodes {
            let e = sums.entry(key(n)).or_default();
            e.0 += n.total_us;
            e.1 += 1;
        }
        let mut rows: Vec<Row> = sums
            .into_iter()
            .map(|(name, (us, count))| Row {
                name,
                ms: per_run_ms(us),
                share: share(us),
                nodes: count,
            })
            .collect();
        rows.sort_by(|a, b| b.ms.total_cmp(&a.ms).then(a.name.cmp(&b.name)));
        rows
    };
    let op_types = group(&|n| n.op_type.clone());
    let layers = group(&|n| {
        layer_of(&n.node, &layers).unwrap_or_else(|| "(added by ONNX Runtime)".to_string())
    });
    nodes.sort_by(|a, b| b.ms.total_cmp(&a.ms).then(a.node.cmp(&b.node)));
    Ok(ProfileReport {
        runtime: Engine::Ort,
        threads: settings.threads,
        warmup: settings.warmup,
        runs: trace.run_us.len(),
        inputs: sample.source().to_string(),
        run_ms: per_run_ms(trace.run_us.iter().sum()),
        kernels_ms: per_run_ms(total_us),
        op_types,
        layers,
        nodes,
    })
}

/// A copy of `model` whose unnamed main-graph operators are named
/// `<op_type>_<k>`, so that every kernel in the profile has a layer.
fn with_node_names(model: &Model) -> Model {
    let mut m = model.clone();
    let g = &mut m.graph;
    let taken: std::collections::HashSet<String> = g
        .node_ids()
        .filter_map(|id| g.node(id).name.clone())
        .collect();
    let ids: Vec<_> = g.node_ids().collect();
    let mut k = 0;
    for id in ids {
        let node = g.node_mut(id);
        let NodeKind::Op(op) = &node.kind else {
            continue;
        };
        if node.name.as_deref().is_none_or(str::is_empty) {
            let name = loop {
                let n = format!("{}_{k}", op.op_type);
                k += 1;
                if !taken.contains(&n) {
                    break n;
                }
            };
            node.name = Some(name);
        }
    }
    m
}

/// Producers ONNX Runtime fuses a following activation into.
const FUSES_ACTIVATION: &[&str] = &["Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv"];
const ACTIVATIONS: &[&str] = &[
    "Relu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "LeakyRelu",
    "Tanh",
    "HardSwish",
];

/// Kernel-name keys and the layer each names, longest key first (for
/// prefix matching). ONNX Runtime names a kernel it keeps after the node,
/// and one it makes after the node or an output (`relu_0.tmp_0_nchwc` is a
/// Conv fused with the Relu that made `relu_0.tmp_0`), so node names and
/// output names are both keys; an activation's output names the layer it
/// was fused into, where the work is.
fn layer_keys(model: &Model) -> Vec<(String, String)> {
    let g = &model.graph;
    let name = |id| g.node(id).name.clone().filter(|n: &String| !n.is_empty());
    let mut keys = vec![];
    for id in g.node_ids() {
        let (NodeKind::Op(op), Some(layer)) = (&g.node(id).kind, name(id)) else {
            continue;
        };
        let fused_into = g
            .input(id, 0)
            .filter(|_| ACTIVATIONS.contains(&op.op_type.as_str()))
            .filter(|&x| g.sole_user(x) == Some(id))
            .filter(|x| {
                g.op(x.node)
                    .is_some_and(|p| FUSES_ACTIVATION.contains(&p.op_type.as_str()))
            })
            .and_then(|x| name(x.node));
        let owner = fused_into.unwrap_or_else(|| layer.clone());
        for v in &g.node(id).outputs {
            if !v.name.is_empty() {
                keys.push((v.name.clone(), owner.clone()));
            }
        }
        keys.push((layer.clone(), layer));
    }
    // Node names first among equal keys: a node named like another's output
    // is that node.
    keys.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    keys.dedup_by(|a, b| a.0 == b.0);
    keys
}

fn layer_of(node: &str, keys: &[(String, String)]) -> Option<String> {
    keys.iter()
        .find(|(k, _)| node == k.as_str() || node.starts_with(k.as_str()))
        .map(|(_, layer)| layer.clone())
}

impl ProfileReport {
    /// The table printed on stdout: `top` rows per section.
    pub fn table(&self, top: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "profile ({}, {} thread(s), {} runs after {} warm-up, inputs {}): run {:.3} ms, kernels {:.3} ms",
            self.runtime, self.threads, self.runs, self.warmup, self.inputs, self.run_ms, self.kernels_ms
        );
        for (title, rows) in [("op type", &self.op_types), ("layer", &self.layers)] {
            let _ = writeln!(
                out,
                "{:<40} {:>10} {:>7} {:>6}",
                title, "ms/run", "share", "nodes"
            );
            for r in rows.iter().take(top) {
                let _ = writeln!(
                    out,
                    "{:<40} {:>10.4} {:>6.1}% {:>6}",
                    r.name,
                    r.ms,
                    r.share * 100.0,
                    r.nodes
                );
            }
            if rows.len() > top {
                let _ = writeln!(out, "  ({} more in --report)", rows.len() - top);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_nodes_map_to_the_longest_layer_name_they_start_with() {
        let keys: Vec<(String, String)> = [("conv1_bn", "conv1_bn"), ("conv1", "conv1")]
            .map(|(k, l)| (k.to_string(), l.to_string()))
            .into();
        assert_eq!(layer_of("conv1", &keys).as_deref(), Some("conv1"));
        assert_eq!(layer_of("conv1_nchwc", &keys).as_deref(), Some("conv1"));
        assert_eq!(
            layer_of("conv1_bn_fused", &keys).as_deref(),
            Some("conv1_bn")
        );
        assert_eq!(layer_of("reorder_input", &keys), None);
    }

    #[test]
    fn a_kernel_named_after_an_output_is_its_layer_and_a_fused_activation_its_producer() {
        use crate::ir::build::ModelBuilder;
        use crate::ir::{DataType, Tensor};
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, 3, 8, 8]);
        let w = b.init("w", Tensor::from_f32(vec![4, 3, 1, 1], &[0.5; 12]));
        let c = b.op("Conv", &[x, w], vec![], "c_out");
        let r = b.op("Relu", &[c], vec![], "r_out");
        let s = b.op("Sigmoid", &[r], vec![], "s_out");
        b.output(s, DataType::FLOAT);
        let mut model = b.build().unwrap();
        // Node names unlike their outputs', as exporters write them.
        for (out, name) in [(c, "conv"), (r, "relu"), (s, "sig")] {
            model.graph.node_mut(out.node).name = Some(name.to_string());
        }
        let keys = layer_keys(&model);
        // ONNX Runtime's NCHWc Conv+Relu kernel is named after the Relu's output.
        assert_eq!(layer_of("r_out_nchwc", &keys).as_deref(), Some("conv"));
        assert_eq!(layer_of("c_out", &keys).as_deref(), Some("conv"));
        // Sigmoid follows a Relu, which fuses nothing: its own layer.
        assert_eq!(layer_of("s_out_token_3", &keys).as_deref(), Some("sig"));
        assert_eq!(layer_of("relu", &keys).as_deref(), Some("relu"));
    }
}
