//! The value a `Constant` node holds, read without running anything.

use super::{AttrValue, Graph, NodeId, Tensor};

/// The value of a dense `Constant` node, in any of its attribute forms.
pub fn constant_value(g: &Graph, id: NodeId) -> Option<Tensor> {
    let op = g.op(id).filter(|op| op.is("Constant"))?;
    let attr = op.attributes.first().filter(|_| op.attributes.len() == 1)?;
    let mut t = match (&attr.name[..], &attr.value) {
        ("value", AttrValue::Tensor(t)) => t.clone(),
        ("value_float", AttrValue::Float(v)) => Tensor::from_f32(vec![], &[*v]),
        ("value_floats", AttrValue::Floats(v)) => Tensor::from_f32(vec![v.len() as i64], v),
        ("value_int", AttrValue::Int(v)) => Tensor::from_i64(vec![], &[*v]),
        ("value_ints", AttrValue::Ints(v)) => Tensor::from_i64(vec![v.len() as i64], v),
        _ => return None,
    };
    t.name = None;
    Some(t)
}
