//! Element types against the schemas' type constraints, as onnx's checker
//! judges them (`full_check`): each input whose type is known must be one its
//! formal parameter allows, inputs bound to the same type variable must agree,
//! and an output's declared type must be the one the schema makes it.
//!
//! Types are known from declarations (graph inputs, value_info, initializers)
//! and carried forward in topological order where the schema fixes them: an
//! output bound to an input's variable has that input's type, a parameter
//! that allows one type has it, and a few operators say theirs in an
//! attribute (`Cast`'s `to`, `Constant`'s value, `dtype`). Anything else
//! stays unknown, and an unknown type is never refused.

use super::schema::{self, Schema, TypeCode};
use crate::ir::{AttrValue, Graph, NodeId, Operator, Outlet};
use std::collections::HashMap;

#[derive(Default)]
pub struct Types {
    found: HashMap<Outlet, TypeCode>,
}

impl Types {
    /// Types known before the graph's own nodes: its captures', from the
    /// enclosing graph.
    pub fn with_captures(g: &Graph, outer: &[Option<TypeCode>]) -> Types {
        let found = g
            .captures
            .iter()
            .zip(outer)
            .filter_map(|(&id, &code)| Some((Outlet::new(id, 0), code?)))
            .collect();
        Types { found }
    }

    /// A value's type: declared, else carried forward.
    pub fn of(&self, g: &Graph, outlet: Outlet) -> Option<TypeCode> {
        g.known_type(outlet)
            .as_ref()
            .and_then(schema::type_code)
            .or_else(|| self.found.get(&outlet).copied())
    }

    /// Checks node `id` against its schema and records its outputs' types.
    pub fn check(
        &mut self,
        g: &Graph,
        id: NodeId,
        op: &Operator,
        s: &Schema,
    ) -> Result<(), String> {
        let name = |o: Outlet| g.node(o.node).outputs[o.slot].name.clone();
        // Type variable -> (type, the input that bound it).
        let mut bound: HashMap<&str, (TypeCode, usize)> = HashMap::new();
        for k in 0..op.arity {
            let (Some(from), Some(param)) = (g.input(id, k), s.input(k)) else {
                continue;
            };
            let Some(code) = self.of(g, from) else {
                continue;
            };
            if !param.allows(code) {
                return Err(format!(
                    "input {k} '{}' is {}, which {}-{} does not allow ({} is one of: {})",
                    name(from),
                    schema::type_name(code),
                    s.op,
                    s.since,
                    param.var,
                    schema::set_names(param.types)
                ));
            }
            if !param.homogeneous() {
                continue;
            }
            match bound.get(param.var) {
                Some(&(first, j)) if first != code => {
                    let other = g.input(id, j).map(name).unwrap_or_default();
                    return Err(format!(
                        "input {k} '{}' is {} but input {j} '{other}' is {}: both are {} and \
                         must have one type",
                        name(from),
                        schema::type_name(code),
                        schema::type_name(first),
                        param.var
                    ));
                }
                Some(_) => {}
                None => {
                    bound.insert(param.var, (code, k));
                }
            }
        }
        for (k, value) in g.node(id).outputs.iter().enumerate() {
            let Some(param) = s.output(k).filter(|_| !value.name.is_empty()) else {
                continue;
            };
            let made = param
                .homogeneous()
                .then(|| bound.get(param.var).map(|b| b.0))
                .flatten()
                .or_else(|| param.only_type())
                .or_else(|| self.said_by_attributes(g, id, op, k));
            let outlet = Outlet::new(id, k);
            let declared = g.known_type(outlet).as_ref().and_then(schema::type_code);
            if let (Some(made), Some(declared)) = (made, declared) {
                if made != declared {
                    return Err(format!(
                        "output {k} '{}' is declared {}, but {}-{} makes it {}",
                        value.name,
                        schema::type_name(declared),
                        s.op,
                        s.since,
                        schema::type_name(made)
                    ));
                }
            }
            if let Some(code) = made.or(declared) {
                self.found.insert(outlet, code);
            }
        }
        Ok(())
    }

    /// Output types that an attribute says (ONNX's defaults where absent).
    fn said_by_attributes(
        &self,
        g: &Graph,
        id: NodeId,
        op: &Operator,
        k: usize,
    ) -> Option<TypeCode> {
        if k != 0 {
            return None;
        }
        let input = || g.input(id, 0).and_then(|o| self.of(g, o));
        let dtype = |default: Option<TypeCode>| match op.attr("dtype").map(|a| &a.value) {
            Some(AttrValue::Int(e)) => schema::tensor_code(*e),
            _ => default,
        };
        match op.op_type.as_str() {
            "Cast" => schema::tensor_code(op.attr_int("to", 0)),
            "Constant" => {
                let a = op.attributes.iter().find(|a| a.ref_attr_name.is_none())?;
                match (a.name.as_str(), &a.value) {
                    ("value", AttrValue::Tensor(t)) => schema::tensor_code(t.dtype.0 as i64),
                    ("value_float" | "value_floats", _) => Some(1),
                    ("value_int" | "value_ints", _) => Some(7),
                    ("value_string" | "value_strings", _) => Some(8),
                    _ => None,
                }
            }
            "ConstantOfShape" => match op.attr("value").map(|a| &a.value) {
                Some(AttrValue::Tensor(t)) => schema::tensor_code(t.dtype.0 as i64),
                _ => Some(1),
            },
            "RandomNormal" | "RandomUniform" => dtype(Some(1)),
            "Multinomial" => dtype(Some(6)),
            "EyeLike" | "RandomNormalLike" | "RandomUniformLike" | "Bernoulli" => dtype(input()),
            _ => None,
        }
    }
}
