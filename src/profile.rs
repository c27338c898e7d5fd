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
    let layers = layer_names(&named);
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

/// Names of the main graph's operators, longest first (for prefix matching).
fn layer_names(model: &Model) -> Vec<String> {
    let g = &model.graph;
    let mut names: Vec<String> = g
        .node_ids()
        .filter(|&id| matches!(g.node(id).kind, NodeKind::Op(_)))
        .filter_map(|id| g.node(id).name.clone())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    names.dedup();
    names
}

fn layer_of(node: &str, layers: &[String]) -> Option<String> {
    layers
        .iter()
        .find(|l| node == l.as_str() || node.starts_with(l.as_str()))
        .cloned()
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
        let layers = vec!["conv1_bn".to_string(), "conv1".to_string()];
        assert_eq!(layer_of("conv1", &layers).as_deref(), Some("conv1"));
        assert_eq!(layer_of("conv1_nchwc", &layers).as_deref(), Some("conv1"));
        assert_eq!(
            layer_of("conv1_bn_fused", &layers).as_deref(),
            Some("conv1_bn")
        );
        assert_eq!(layer_of("reorder_input", &layers), None);
    }
}
