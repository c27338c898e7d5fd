//! `onnx-opt inspect`: what a model is made of, and where its weights live.

use crate::ir::{text::type_text, Graph, Model, NodeKind, Outlet};
use crate::report::human_bytes;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Default)]
struct Weights {
    initializers: (usize, usize),
    constant_nodes: (usize, usize),
    in_subgraphs: (usize, usize),
}

pub fn inspect(model: &Model, file_bytes: u64, external_tensors: usize) -> String {
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    let mut weights = Weights::default();
    let mut subgraphs = 0;
    walk(&model.graph, true, &mut ops, &mut weights, &mut subgraphs);
    let stats = model.stats();
    let mut out = String::new();
    let opsets: Vec<String> = model
        .opset_import
        .iter()
        .map(|o| format!("{}:{}", o.domain_label(), o.version.unwrap_or(0)))
        .collect();
    let _ = writeln!(
        out,
        "ir_version {}  opsets {}",
        model.ir_version.unwrap_or(0),
        opsets.join(" ")
    );
    if let Some(p) = &model.producer_name {
        let _ = writeln!(
            out,
            "producer {} {}",
            p,
            model.producer_version.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(
        out,
        "file {}  nodes {}  params {}  weight bytes {}",
        human_bytes(file_bytes),
        stats.nodes,
        stats.params,
        human_bytes(stats.bytes as u64)
    );
    let g = &model.graph;
    for i in &g.inputs {
        let _ = writeln!(
            out,
            "input  {}: {}",
            g.outlet_name(Outlet::new(i.node, 0)),
            type_text(i.info.ty.as_ref())
        );
    }
    for o in &g.outputs {
        let _ = writeln!(
            out,
            "output {}: {}",
            g.outlet_name(o.outlet),
            type_text(o.info.ty.as_ref())
        );
    }
    let _ = writeln!(out, "weights:");
    let line = |what: &str, (n, b): (usize, usize)| {
        format!(
            "  {what:<22} {n:>6} tensors {:>12}\n",
            human_bytes(b as u64)
        )
    };
    out.push_str(&line("initializers", weights.initializers));
    out.push_str(&line("Constant nodes", weights.constant_nodes));
    out.push_str(&line("inside subgraphs", weights.in_subgraphs));
    let _ = writeln!(
        out,
        "  {:<22} {external_tensors:>6} tensors",
        "from external data"
    );
    if !model.functions.is_empty() || subgraphs > 0 {
        let _ = writeln!(
            out,
            "subgraphs {subgraphs}  local functions {}",
            model.functions.len()
        );
    }
    let _ = writeln!(out, "operators:");
    let mut hist: Vec<(&String, &usize)> = ops.iter().collect();
    hist.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (op, n) in hist {
        let _ = writeln!(out, "  {op:<28} {n:>6}");
    }
    out
}

fn walk(
    g: &Graph,
    top: bool,
    ops: &mut BTreeMap<String, usize>,
    w: &mut Weights,
    subgraphs: &mut usize,
) {
    for id in g.node_ids() {
        let node = g.node(id);
        let (count, bytes) = match &node.kind {
            NodeKind::Initializer(t) => {
                let slot = if top {
                    &mut w.initializers
                } else {
                    &mut w.in_subgraphs
                };
                slot.0 += 1;
                slot.1 += t.byte_len();
                continue;
            }
            NodeKind::Op(op) => {
                let name = match op.domain.as_deref().filter(|d| !d.is_empty()) {
                    Some(d) => format!("{d}.{}", op.op_type),
                    None => op.op_type.clone(),
                };
                *ops.entry(name).or_default() += 1;
                for sub in op.attributes.iter().flat_map(|a| a.graphs()) {
                    *subgraphs += 1;
                    walk(sub, false, ops, w, subgraphs);
                }
                match crate::passes::constant_value(g, id) {
                    Some(t) => (1, t.byte_len()),
                    None => continue,
                }
            }
            _ => continue,
        };
        let slot = if top {
            &mut w.constant_nodes
        } else {
            &mut w.in_subgraphs
        };
        slot.0 += count;
        slot.1 += bytes;
    }
}
