//! A stable, readable text form of a model: the same IR always prints the same
//! text. Snapshot tests and `onnx-opt diff` compare these texts.
//!
//! ```text
//! graph main
//!   input x: f32[N,3,32,32]
//!   init w: f32[16,3,3,3] #3f1c9a2e0b7d5c41
//!   y = Conv(x, w) {kernel_shape=[3,3]}  # conv1
//!   output y: f32[N,16,32,32]
//! ```
//! Operators print in topological order; initializers by name. Small
//! constants show their values, larger ones a digest of their bytes.

use super::*;
use std::fmt::Write;

const SHOW_VALUES_UP_TO: usize = 8;

pub fn model_to_text(m: &Model) -> String {
    let mut out = String::new();
    let opsets: Vec<String> = m
        .opset_import
        .iter()
        .map(|o| format!("{}={}", o.domain_label(), o.version.unwrap_or(0)))
        .collect();
    let _ = writeln!(
        out,
        "model ir={} opsets=[{}]",
        m.ir_version.unwrap_or(0),
        opsets.join(", ")
    );
    if !m.functions.is_empty() {
        let _ = writeln!(out, "  functions: {}", m.functions.len());
    }
    graph_to_text(&m.graph, 1, &mut out);
    out
}

pub fn graph_to_text(g: &Graph, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    let _ = writeln!(
        out,
        "{}graph {}",
        "  ".repeat(depth - 1),
        g.name.as_deref().unwrap_or("")
    );
    let name = |o: Outlet| g.outlet_name(o).to_string();
    for &c in &g.captures {
        let _ = writeln!(out, "{pad}capture {}", g.node(c).outputs[0].name);
    }
    for i in &g.inputs {
        let _ = writeln!(
            out,
            "{pad}input {}: {}",
            name(Outlet::new(i.node, 0)),
            type_text(i.info.ty.as_ref())
        );
    }
    let mut inits: Vec<(&str, &Tensor)> = g
        .node_ids()
        .filter_map(|id| match &g.node(id).kind {
            NodeKind::Initializer(t) if !g.is_graph_input(id) => {
                Some((g.node(id).outputs[0].name.as_str(), t))
            }
            _ => None,
        })
        .collect();
    inits.sort_by_key(|(n, _)| *n);
    for (n, t) in inits {
        let _ = writeln!(out, "{pad}init {n}: {}", tensor_text(t));
    }
    for id in g.node_ids() {
        if let NodeKind::SparseInitializer(sparse) = &g.node(id).kind {
            let name = &g.node(id).outputs[0].name;
            let _ = writeln!(out, "{pad}sparse-init {name} #{:016x}", sparse.digest());
        }
    }
    // A cyclic graph cannot be ordered; print index order so it can still be shown.
    let order = g
        .op_order()
        .unwrap_or_else(|_| g.node_ids().filter(|&n| g.op(n).is_some()).collect());
    for id in order {
        let node = g.node(id);
        let op = node.as_op().expect("an operator");
        let outs: Vec<&str> = node.outputs.iter().map(|v| v.name.as_str()).collect();
        let ins: Vec<String> = g
            .inputs(id)
            .into_iter()
            .map(|o| o.map(name).unwrap_or_default())
            .collect();
        let domain = op
            .domain
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(|d| format!("{d}."))
            .unwrap_or_default();
        let _ = write!(
            out,
            "{pad}{} = {domain}{}({})",
            outs.join(", "),
            op.op_type,
            ins.join(", ")
        );
        let plain: Vec<String> = op
            .attributes
            .iter()
            .filter(|a| a.graphs().is_empty())
            .map(|a| format!("{}={}", a.name, attr_text(&a.value)))
            .collect();
        if !plain.is_empty() {
            let _ = write!(out, " {{{}}}", plain.join(", "));
        }
        if let Some(n) = node.name.as_deref().filter(|n| !n.is_empty()) {
            let _ = write!(out, "  # {n}");
        }
        out.push('\n');
        for a in op.attributes.iter().filter(|a| !a.graphs().is_empty()) {
            let _ = writeln!(out, "{pad}  {}:", a.name);
            for sub in a.graphs() {
                graph_to_text(sub, depth + 2, out);
            }
        }
    }
    for o in &g.outputs {
        let _ = writeln!(
            out,
            "{pad}output {}: {}",
            name(o.outlet),
            type_text(o.info.ty.as_ref())
        );
    }
}

pub fn type_text(t: Option<&TypeInfo>) -> String {
    let Some(t) = t else { return "?".into() };
    let elem = |e: &Option<DataType>| e.map_or("?".to_string(), |d| d.to_string());
    match &t.kind {
        TypeKind::Tensor { elem: e, shape } => format!("{}{}", elem(e), shape_text(shape)),
        TypeKind::SparseTensor { elem: e, shape } => {
            format!("sparse {}{}", elem(e), shape_text(shape))
        }
        TypeKind::Sequence(e) => format!("seq<{}>", type_text(e.as_deref())),
        TypeKind::Map { key, value } => {
            format!("map<{}, {}>", elem(key), type_text(value.as_deref()))
        }
        TypeKind::Optional(e) => format!("optional<{}>", type_text(e.as_deref())),
        TypeKind::Opaque { domain, name } => {
            format!(
                "opaque<{}.{}>",
                domain.as_deref().unwrap_or(""),
                name.as_deref().unwrap_or("")
            )
        }
        TypeKind::Unset => "?".into(),
    }
}

fn shape_text(shape: &Shape) -> String {
    match shape {
        None => "[..]".into(),
        Some(dims) => {
            let dims: Vec<String> = dims
                .iter()
                .map(|d| match &d.value {
                    DimValue::Known(v) => v.to_string(),
                    DimValue::Param(p) => p.clone(),
                    DimValue::Unknown => "?".into(),
                })
                .collect();
            format!("[{}]", dims.join(","))
        }
    }
}

pub fn tensor_text(t: &Tensor) -> String {
    let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
    let head = format!("{}[{}]", t.dtype, dims.join(","));
    if t.numel() <= SHOW_VALUES_UP_TO {
        if let Ok(v) = t.to_f32() {
            return format!("{head} = {v:?}");
        }
        if let Ok(v) = t.to_i64() {
            return format!("{head} = {v:?}");
        }
    }
    format!("{head} #{:016x}", t.digest())
}

fn attr_text(v: &AttrValue) -> String {
    match v {
        AttrValue::Float(f) => format!("{f:?}"),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::String(s) => format!("{:?}", String::from_utf8_lossy(s)),
        AttrValue::Tensor(t) => tensor_text(t),
        AttrValue::Floats(v) => format!("{v:?}"),
        AttrValue::Ints(v) => format!("{v:?}"),
        AttrValue::Strings(v) => {
            format!(
                "[{}]",
                v.iter()
                    .map(|s| format!("{:?}", String::from_utf8_lossy(s)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        AttrValue::Tensors(v) => format!(
            "[{}]",
            v.iter().map(tensor_text).collect::<Vec<_>>().join(", ")
        ),
        AttrValue::Type(t) => type_text(Some(t)),
        AttrValue::Types(v) => format!(
            "[{}]",
            v.iter()
                .map(|t| type_text(Some(t)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        AttrValue::SparseTensor(_) => "sparse-tensor".into(),
        AttrValue::SparseTensors(v) => format!("[{} sparse tensors]", v.len()),
        AttrValue::Graph(_) | AttrValue::Graphs(_) => "graph".into(),
        AttrValue::None => "ref".into(),
    }
}
