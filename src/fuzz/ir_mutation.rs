//! IR-level mutations: import the model, edit an operator or a constant as a
//! buggy exporter would (the edits bypass `Patch`, on purpose), encode it
//! with our exporter. `None` when the input does not import or the result
//! does not encode.

use super::{Rng, INTERESTING};
use crate::ir::{AttrValue, Attribute, DataType, Graph, NodeKind, Outlet};

pub fn mutate(input: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
    let mut model = crate::onnx::decode(::bytes::Bytes::copy_from_slice(input), None).ok()?;
    let mut graphs = 0;
    model.graph.visit_graphs(&mut |_| graphs += 1);
    let target = rng.below(graphs);
    let mut k = 0;
    let _ = model.graph.visit_graphs_mut(&mut |g| {
        if k == target {
            edit(g, rng);
        }
        k += 1;
        Ok(())
    });
    crate::onnx::encode(&model).ok()
}

fn edit(g: &mut Graph, rng: &mut Rng) {
    let ids: Vec<_> = g.node_ids().collect();
    if ids.is_empty() {
        return;
    }
    let id = *rng.pick(&ids);
    let choice = rng.below(5);
    let node = g.node_mut(id);
    match (&mut node.kind, choice) {
        (NodeKind::Initializer(t), 0 | 1) if !t.dims.is_empty() => {
            let j = rng.below(t.dims.len());
            t.dims[j] = *rng.pick(INTERESTING);
        }
        (NodeKind::Initializer(t), _) => t.dtype = DataType(rng.below(25) as i32),
        (NodeKind::Op(op), 0) => {
            // More inputs, all reading an existing value.
            let from = Outlet::new(*rng.pick(&ids), 0);
            let extra = 1 + rng.below(4);
            let first = op.arity;
            op.arity += extra;
            if g.node(from.node).outputs.is_empty() {
                return;
            }
            for slot in first..first + extra {
                g.connect(from, id, slot);
            }
        }
        (NodeKind::Op(op), 1) => {
            let name = rng.pick(&["axis", "axes", "strides", "kernel_shape", "perm", "pads"]);
            let v = *rng.pick(INTERESTING);
            let attr = if name.ends_with('s') {
                Attribute::ints(name, &[v, v])
            } else {
                Attribute::int(name, v)
            };
            op.set_attr(attr);
        }
        (NodeKind::Op(op), 2) => {
            op.op_type = rng
                .pick(&[
                    "Flatten",
                    "ReduceMean",
                    "MaxPool",
                    "Conv",
                    "Gemm",
                    "If",
                    "Expand",
                ])
                .to_string();
        }
        (NodeKind::Op(op), 3) => {
            for a in &mut op.attributes {
                if let AttrValue::Ints(v) = &mut a.value {
                    v.iter_mut().for_each(|x| *x = 0);
                }
            }
        }
        (NodeKind::Op(op), _) => {
            // An empty branch or body.
            for a in &mut op.attributes {
                if let AttrValue::Graph(sub) = &mut a.value {
                    **sub = Graph::default();
                }
            }
        }
        _ => {}
    }
}
