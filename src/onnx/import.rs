//! ModelProto → IR. Names are resolved in two phases (create every node, then
//! wire), so a file whose nodes are not sorted still imports and the verifier
//! reports a real cycle as a cycle.

use super::proto as pb;
use super::{decode_dtype, opaque, opaques};
use crate::ir::*;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;

pub fn import_model(m: pb::ModelProto) -> Result<Model> {
    let graph_proto = m.graph.ok_or_else(|| anyhow!("the model has no graph"))?;
    let graph = import_graph(graph_proto, &|_| false).context("main graph")?;
    Ok(Model {
        ir_version: m.ir_version,
        opset_import: m
            .opset_import
            .into_iter()
            .map(|o| OpsetId {
                domain: o.domain,
                version: o.version,
            })
            .collect(),
        producer_name: m.producer_name,
        producer_version: m.producer_version,
        domain: m.domain,
        model_version: m.model_version,
        doc_string: m.doc_string,
        graph,
        metadata_props: opaques(&m.metadata_props),
        training_info: opaques(&m.training_info),
        functions: opaques(&m.functions),
        configuration: opaques(&m.configuration),
    })
}

/// Names visible in a graph while importing it.
struct Scope<'a> {
    local: HashMap<String, Outlet>,
    /// Is a name defined by an enclosing graph?
    outer: &'a dyn Fn(&str) -> bool,
}

impl Scope<'_> {
    fn define(&mut self, name: &str, outlet: Outlet) -> Result<()> {
        if self.local.insert(name.to_string(), outlet).is_some() {
            bail!("value '{name}' is defined more than once");
        }
        Ok(())
    }

    /// The outlet of `name`, creating a `Capture` node for an outer-scope value.
    fn resolve(&mut self, g: &mut Graph, name: &str) -> Result<Outlet> {
        if let Some(&o) = self.local.get(name) {
            return Ok(o);
        }
        if !(self.outer)(name) {
            bail!("'{name}' is used but never defined");
        }
        let id = g.add_node(Node {
            name: None,
            kind: NodeKind::Capture,
            outputs: vec![Value::named(name)],
        });
        g.captures.push(id);
        let outlet = Outlet::new(id, 0);
        self.local.insert(name.to_string(), outlet);
        Ok(outlet)
    }
}

pub fn import_graph(gp: pb::GraphProto, outer: &dyn Fn(&str) -> bool) -> Result<Graph> {
    let mut g = Graph {
        name: gp.name,
        doc_string: gp.doc_string,
        quantization_annotation: opaques(&gp.quantization_annotation),
        metadata_props: opaques(&gp.metadata_props),
        ..Graph::default()
    };
    let mut scope = Scope {
        local: HashMap::new(),
        outer,
    };

    for t in gp.initializer {
        let (name, mut tensor) = import_tensor(t)?;
        tensor.name = None;
        let id = g.add_node(Node {
            name: None,
            kind: NodeKind::Initializer(tensor),
            outputs: vec![Value::named(&name)],
        });
        scope
            .define(&name, Outlet::new(id, 0))
            .context("initializer")?;
    }
    for st in gp.sparse_initializer {
        let name = st
            .values
            .as_ref()
            .and_then(|v| v.name.clone())
            .unwrap_or_default();
        let id = g.add_node(Node {
            name: None,
            kind: NodeKind::SparseInitializer(opaque(&st)),
            outputs: vec![Value::named(&name)],
        });
        scope
            .define(&name, Outlet::new(id, 0))
            .context("sparse initializer")?;
    }
    for vi in gp.input {
        let name = vi.name.clone().unwrap_or_default();
        let info = import_value_info(vi)?;
        // An input that is also an initializer (IR < 4 style) is the initializer node.
        let node = match scope.local.get(&name) {
            Some(o) => o.node,
            None => {
                let id = g.add_node(Node {
                    name: None,
                    kind: NodeKind::Input,
                    outputs: vec![Value::named(&name)],
                });
                scope.define(&name, Outlet::new(id, 0))?;
                id
            }
        };
        g.inputs.push(GraphInput { node, info });
    }

    // Phase 1: every node, with its outputs and subgraphs.
    let mut pending = Vec::with_capacity(gp.node.len());
    let own_names: std::collections::HashSet<String> = gp
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .chain(scope.local.keys().cloned())
        .collect();
    let visible = |name: &str| own_names.contains(name) || outer(name);
    for (i, n) in gp.node.into_iter().enumerate() {
        let label = n
            .name
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("#{i}"));
        let op_type = n
            .op_type
            .clone()
            .ok_or_else(|| anyhow!("node {label} has no op_type"))?;
        let label = format!("node {label} ({op_type})");
        let attributes = n
            .attribute
            .into_iter()
            .map(|a| import_attribute(a, &visible))
            .collect::<Result<Vec<_>>>()
            .with_context(|| label.clone())?;
        let op = Operator {
            op_type,
            domain: n.domain,
            overload: n.overload,
            attributes,
            arity: n.input.len(),
            doc_string: n.doc_string,
            metadata_props: opaques(&n.metadata_props),
            device_configurations: opaques(&n.device_configurations),
        };
        let outputs = n.output.iter().map(Value::named).collect();
        let id = g.add_node(Node::op(n.name, op, outputs));
        for (slot, name) in n.output.iter().enumerate() {
            if !name.is_empty() {
                scope
                    .define(name, Outlet::new(id, slot))
                    .with_context(|| label.clone())?;
            }
        }
        pending.push((id, n.input, label));
    }

    // Phase 2: wires, declared inputs then implicit (captured) ones.
    for (id, inputs, label) in pending {
        for (slot, name) in inputs.iter().enumerate() {
            if !name.is_empty() {
                let from = scope.resolve(&mut g, name).with_context(|| label.clone())?;
                g.connect(from, id, slot);
            }
        }
        let captured: Vec<String> = {
            let op = g.op(id).expect("an operator node");
            op.attributes
                .iter()
                .flat_map(|a| a.graphs())
                .flat_map(|sub| {
                    sub.captures
                        .iter()
                        .map(|&c| sub.node(c).outputs[0].name.clone())
                })
                .collect()
        };
        for (k, name) in captured.iter().enumerate() {
            let from = scope.resolve(&mut g, name).with_context(|| label.clone())?;
            g.connect(from, id, inputs.len() + k);
        }
    }

    for vi in gp.output {
        let name = vi.name.clone().unwrap_or_default();
        let outlet = scope.resolve(&mut g, &name).context("graph output")?;
        g.outputs.push(GraphOutput {
            outlet,
            info: import_value_info(vi)?,
        });
    }
    for (rank, vi) in gp.value_info.into_iter().enumerate() {
        let name = vi.name.clone().unwrap_or_default();
        let info = import_value_info(vi)?;
        let value = scope
            .local
            .get(&name)
            .map(|o| &mut g.node_mut(o.node).outputs[o.slot]);
        match value {
            Some(v) if v.info.is_none() => {
                v.info = Some(info);
                v.info_rank = rank as u32;
            }
            _ => g.orphan_value_info.push((rank as u32, name, info)),
        }
    }
    Ok(g)
}

fn import_attribute(a: pb::AttributeProto, visible: &dyn Fn(&str) -> bool) -> Result<Attribute> {
    use pb::attribute_proto::AttributeType as T;
    let name = a.name.clone().unwrap_or_default();
    let sub = |g: pb::GraphProto| {
        import_graph(g, visible).with_context(|| format!("subgraph of attribute '{name}'"))
    };
    // The declared type decides; files without one get it inferred from the set field.
    let kind = match a.r#type.and_then(|t| T::try_from(t).ok()) {
        Some(t) => t,
        None => infer_attr_type(&a),
    };
    let value = match kind {
        T::Float => AttrValue::Float(a.f.unwrap_or_default()),
        T::Int => AttrValue::Int(a.i.unwrap_or_default()),
        T::String => AttrValue::String(a.s.clone().unwrap_or_default()),
        T::Tensor => AttrValue::Tensor(import_tensor(a.t.clone().unwrap_or_default())?.1),
        T::Graph => AttrValue::Graph(Box::new(sub(a.g.clone().unwrap_or_default())?)),
        T::SparseTensor => {
            AttrValue::SparseTensor(opaque(&a.sparse_tensor.clone().unwrap_or_default()))
        }
        T::TypeProto => AttrValue::Type(import_type(a.tp.clone().unwrap_or_default())?),
        T::Floats => AttrValue::Floats(a.floats.clone()),
        T::Ints => AttrValue::Ints(a.ints.clone()),
        T::Strings => AttrValue::Strings(a.strings.clone()),
        T::Tensors => AttrValue::Tensors(
            a.tensors
                .iter()
                .cloned()
                .map(|t| Ok(import_tensor(t)?.1))
                .collect::<Result<_>>()?,
        ),
        T::Graphs => AttrValue::Graphs(a.graphs.iter().cloned().map(sub).collect::<Result<_>>()?),
        T::SparseTensors => AttrValue::SparseTensors(opaques(&a.sparse_tensors)),
        T::TypeProtos => AttrValue::Types(
            a.type_protos
                .iter()
                .cloned()
                .map(import_type)
                .collect::<Result<_>>()?,
        ),
        T::Undefined => AttrValue::None,
    };
    Ok(Attribute {
        name,
        value,
        declared_type: a.r#type,
        ref_attr_name: a.ref_attr_name,
        doc_string: a.doc_string,
    })
}

fn infer_attr_type(a: &pb::AttributeProto) -> pb::attribute_proto::AttributeType {
    use pb::attribute_proto::AttributeType as T;
    match () {
        _ if a.f.is_some() => T::Float,
        _ if a.i.is_some() => T::Int,
        _ if a.s.is_some() => T::String,
        _ if a.t.is_some() => T::Tensor,
        _ if a.g.is_some() => T::Graph,
        _ if a.sparse_tensor.is_some() => T::SparseTensor,
        _ if a.tp.is_some() => T::TypeProto,
        _ if !a.floats.is_empty() => T::Floats,
        _ if !a.ints.is_empty() => T::Ints,
        _ if !a.strings.is_empty() => T::Strings,
        _ if !a.tensors.is_empty() => T::Tensors,
        _ if !a.graphs.is_empty() => T::Graphs,
        _ if !a.sparse_tensors.is_empty() => T::SparseTensors,
        _ if !a.type_protos.is_empty() => T::TypeProtos,
        _ => T::Undefined,
    }
}

/// A tensor and its name. External data must already be resolved.
pub fn import_tensor(t: pb::TensorProto) -> Result<(String, Tensor)> {
    let file_name = t.name;
    let name = file_name.clone().unwrap_or_default();
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
        bail!("tensor '{name}': external data was not resolved");
    }
    let dtype = DataType(t.data_type.unwrap_or(0));
    let typed = [
        !t.float_data.is_empty(),
        !t.int32_data.is_empty(),
        !t.int64_data.is_empty(),
        !t.double_data.is_empty(),
        !t.uint64_data.is_empty(),
        !t.string_data.is_empty(),
    ];
    let filled = typed.iter().filter(|&&x| x).count() + t.raw_data.is_some() as usize;
    if filled > 1 {
        bail!("tensor '{name}' stores its data in {filled} different fields");
    }
    let data = if let Some(raw) = t.raw_data {
        TensorData::Raw(raw)
    } else if typed[0] {
        TensorData::Float(t.float_data)
    } else if typed[1] {
        TensorData::Int32(t.int32_data)
    } else if typed[2] {
        TensorData::Int64(t.int64_data)
    } else if typed[3] {
        TensorData::Double(t.double_data)
    } else if typed[4] {
        TensorData::Uint64(t.uint64_data)
    } else if typed[5] {
        TensorData::String(t.string_data)
    } else {
        empty_data(dtype)
    };
    if t.dims.iter().any(|&d| d < 0) {
        bail!("tensor '{name}' has a negative dimension in {:?}", t.dims);
    }
    let tensor = Tensor {
        name: file_name,
        dtype,
        dims: t.dims,
        data,
        doc_string: t.doc_string,
        segment: t.segment.as_ref().map(opaque),
        data_location: t.data_location,
        metadata_props: opaques(&t.metadata_props),
    };
    Ok((name, tensor))
}

/// The storage an empty tensor of `dtype` would use (nothing is written either way).
fn empty_data(dtype: DataType) -> TensorData {
    match dtype {
        DataType::FLOAT | DataType::COMPLEX64 => TensorData::Float(vec![]),
        DataType::INT64 => TensorData::Int64(vec![]),
        DataType::DOUBLE | DataType::COMPLEX128 => TensorData::Double(vec![]),
        DataType::UINT32 | DataType::UINT64 => TensorData::Uint64(vec![]),
        DataType::STRING => TensorData::String(vec![]),
        _ => TensorData::Int32(vec![]),
    }
}

fn import_value_info(vi: pb::ValueInfoProto) -> Result<ValueInfo> {
    Ok(ValueInfo {
        ty: vi.r#type.map(import_type).transpose()?,
        doc_string: vi.doc_string,
        metadata_props: opaques(&vi.metadata_props),
    })
}

fn import_type(t: pb::TypeProto) -> Result<TypeInfo> {
    use pb::type_proto::Value as V;
    let boxed = |t: Option<Box<pb::TypeProto>>| -> Result<Option<Box<TypeInfo>>> {
        t.map(|t| import_type(*t).map(Box::new)).transpose()
    };
    let kind = match t.value {
        None => TypeKind::Unset,
        Some(V::TensorType(tt)) => TypeKind::Tensor {
            elem: tt.elem_type.map(decode_dtype),
            shape: tt.shape.map(import_shape),
        },
        Some(V::SparseTensorType(tt)) => TypeKind::SparseTensor {
            elem: tt.elem_type.map(decode_dtype),
            shape: tt.shape.map(import_shape),
        },
        Some(V::SequenceType(s)) => TypeKind::Sequence(boxed(s.elem_type)?),
        Some(V::MapType(m)) => TypeKind::Map {
            key: m.key_type.map(decode_dtype),
            value: boxed(m.value_type)?,
        },
        Some(V::OptionalType(o)) => TypeKind::Optional(boxed(o.elem_type)?),
        Some(V::OpaqueType(o)) => TypeKind::Opaque {
            domain: o.domain,
            name: o.name,
        },
    };
    Ok(TypeInfo {
        kind,
        denotation: t.denotation,
    })
}

fn import_shape(s: pb::TensorShapeProto) -> Vec<Dim> {
    use pb::tensor_shape_proto::dimension::Value as V;
    s.dim
        .into_iter()
        .map(|d| Dim {
            value: match d.value {
                Some(V::DimValue(v)) => DimValue::Known(v),
                Some(V::DimParam(p)) => DimValue::Param(p),
                None => DimValue::Unknown,
            },
            denotation: d.denotation,
        })
        .collect()
}
