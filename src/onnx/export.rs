//! IR → ModelProto: the inverse of `import`. Operators are written in the
//! graph's deterministic topological order, so the output bytes depend only
//! on the IR.

use super::proto as pb;
use super::{decode_opaque, decode_opaques};
use crate::ir::*;
use anyhow::{Context, Result};
use std::collections::HashMap;

pub fn export_model(m: &Model) -> Result<pb::ModelProto> {
    Ok(pb::ModelProto {
        ir_version: m.ir_version,
        opset_import: m
            .opset_import
            .iter()
            .map(|o| pb::OperatorSetIdProto {
                domain: o.domain.clone(),
                version: o.version,
            })
            .collect(),
        producer_name: m.producer_name.clone(),
        producer_version: m.producer_version.clone(),
        domain: m.domain.clone(),
        model_version: m.model_version,
        doc_string: m.doc_string.clone(),
        graph: Some(export_graph(&m.graph, &[]).context("main graph")?),
        metadata_props: decode_opaques(&m.metadata_props)?,
        training_info: decode_opaques(&m.training_info)?,
        functions: decode_opaques(&m.functions)?,
        configuration: decode_opaques(&m.configuration)?,
    })
}

/// `capture_names`: the outer value each of `g.captures` is wired to.
pub fn export_graph(g: &Graph, capture_names: &[String]) -> Result<pb::GraphProto> {
    let captured: HashMap<NodeId, &str> = g
        .captures
        .iter()
        .zip(capture_names)
        .map(|(&id, name)| (id, name.as_str()))
        .collect();
    let name_of = |o: Outlet| -> String {
        match captured.get(&o.node) {
            Some(name) => name.to_string(),
            None => g.outlet_name(o).to_string(),
        }
    };
    let order = g.topo_order()?;

    let mut gp = pb::GraphProto {
        name: g.name.clone(),
        doc_string: g.doc_string.clone(),
        quantization_annotation: decode_opaques(&g.quantization_annotation)?,
        metadata_props: decode_opaques(&g.metadata_props)?,
        ..Default::default()
    };
    gp.input = g
        .inputs
        .iter()
        .map(|i| export_value_info(&name_of(Outlet::new(i.node, 0)), &i.info))
        .collect::<Result<_>>()?;
    gp.output = g
        .outputs
        .iter()
        .map(|o| export_value_info(&name_of(o.outlet), &o.info))
        .collect::<Result<_>>()?;

    // value_info in file order, then new entries in topological order.
    let mut infos: Vec<(u32, usize, String, &ValueInfo)> = vec![];
    for (pos, &id) in order.iter().enumerate() {
        let node = g.node(id);
        for v in &node.outputs {
            if let Some(info) = &v.info {
                let name = captured.get(&id).map_or(v.name.clone(), |n| n.to_string());
                infos.push((v.info_rank, pos, name, info));
            }
        }
    }
    infos.extend(
        g.orphan_value_info
            .iter()
            .map(|(rank, name, info)| (*rank, 0, name.clone(), info)),
    );
    infos.sort_by_key(|(rank, pos, ..)| (*rank, *pos));
    gp.value_info = infos
        .into_iter()
        .map(|(_, _, name, info)| export_value_info(&name, info))
        .collect::<Result<_>>()?;

    // Initializers keep node-index order (file order for an unchanged import).
    for id in g.node_ids() {
        let node = g.node(id);
        match &node.kind {
            NodeKind::Initializer(t) => gp
                .initializer
                .push(export_tensor(&node.outputs[0].name, t)?),
            NodeKind::SparseInitializer(o) => {
                // The value's name is the one the graph uses (a patch may
                // have chosen it); imported tensors already carry it.
                let mut st: pb::SparseTensorProto = decode_opaque(o)?;
                let name = &node.outputs[0].name;
                if let Some(values) = st.values.as_mut() {
                    if values.name.as_deref() != Some(name.as_str()) {
                        values.name = Some(name.clone());
                    }
                }
                gp.sparse_initializer.push(st);
            }
            _ => {}
        }
    }
    for id in order {
        let node = g.node(id);
        let NodeKind::Op(op) = &node.kind else {
            continue;
        };
        let label = || format!("node {}", node.label());
        let input = g
            .inputs(id)
            .into_iter()
            .map(|o| o.map(name_of).unwrap_or_default())
            .collect();
        // Split the implicit inputs among the subgraphs, in attribute order.
        let mut implicit = g.implicit_inputs(id).into_iter().map(name_of);
        let mut attribute = Vec::with_capacity(op.attributes.len());
        for a in &op.attributes {
            let mut sub = |sg: &Graph| {
                let names: Vec<String> = implicit.by_ref().take(sg.captures.len()).collect();
                export_graph(sg, &names)
            };
            attribute.push(export_attribute(a, &mut sub).with_context(label)?);
        }
        gp.node.push(pb::NodeProto {
            input,
            output: node.outputs.iter().map(|v| v.name.clone()).collect(),
            name: node.name.clone(),
            op_type: Some(op.op_type.clone()),
            domain: op.domain.clone(),
            overload: op.overload.clone(),
            attribute,
            doc_string: op.doc_string.clone(),
            metadata_props: decode_opaques(&op.metadata_props)?,
            device_configurations: decode_opaques(&op.device_configurations)?,
        });
    }
    Ok(gp)
}

fn export_attribute(
    a: &Attribute,
    sub: &mut dyn FnMut(&Graph) -> Result<pb::GraphProto>,
) -> Result<pb::AttributeProto> {
    use pb::attribute_proto::AttributeType as T;
    let mut p = pb::AttributeProto {
        name: Some(a.name.clone()),
        ref_attr_name: a.ref_attr_name.clone(),
        doc_string: a.doc_string.clone(),
        r#type: a.declared_type,
        ..Default::default()
    };
    let kind = match &a.value {
        AttrValue::Float(v) => (p.f = Some(*v), T::Float).1,
        AttrValue::Int(v) => (p.i = Some(*v), T::Int).1,
        AttrValue::String(v) => (p.s = Some(v.clone()), T::String).1,
        AttrValue::Tensor(t) => (p.t = Some(export_tensor_unnamed(t)?), T::Tensor).1,
        AttrValue::Graph(g) => (p.g = Some(sub(g)?), T::Graph).1,
        AttrValue::SparseTensor(o) => {
            (p.sparse_tensor = Some(decode_opaque(o)?), T::SparseTensor).1
        }
        AttrValue::Type(t) => (p.tp = Some(export_type(t)), T::TypeProto).1,
        AttrValue::Floats(v) => (p.floats = v.clone(), T::Floats).1,
        AttrValue::Ints(v) => (p.ints = v.clone(), T::Ints).1,
        AttrValue::Strings(v) => (p.strings = v.clone(), T::Strings).1,
        AttrValue::Tensors(v) => {
            (
                p.tensors = v.iter().map(export_tensor_unnamed).collect::<Result<_>>()?,
                T::Tensors,
            )
                .1
        }
        AttrValue::Graphs(v) => {
            (
                p.graphs = v.iter().map(&mut *sub).collect::<Result<_>>()?,
                T::Graphs,
            )
                .1
        }
        AttrValue::SparseTensors(v) => (p.sparse_tensors = decode_opaques(v)?, T::SparseTensors).1,
        AttrValue::Types(v) => {
            (
                p.type_protos = v.iter().map(export_type).collect(),
                T::TypeProtos,
            )
                .1
        }
        AttrValue::None => T::Undefined,
    };
    // Attributes made by passes carry no declared type: write the one ONNX requires.
    if p.r#type.is_none() && kind != T::Undefined {
        p.r#type = Some(kind as i32);
    }
    Ok(p)
}

fn export_tensor_unnamed(t: &Tensor) -> Result<pb::TensorProto> {
    export_tensor_with_name(t.name.clone(), t)
}

pub fn export_tensor(name: &str, t: &Tensor) -> Result<pb::TensorProto> {
    export_tensor_with_name(Some(name.to_string()), t)
}

fn export_tensor_with_name(name: Option<String>, t: &Tensor) -> Result<pb::TensorProto> {
    let mut p = pb::TensorProto {
        dims: t.dims.clone(),
        data_type: Some(t.dtype.0),
        segment: t.segment.as_ref().map(decode_opaque).transpose()?,
        name,
        doc_string: t.doc_string.clone(),
        data_location: t.data_location,
        metadata_props: decode_opaques(&t.metadata_props)?,
        ..Default::default()
    };
    match &t.data {
        TensorData::Raw(b) => p.raw_data = Some(b.clone()),
        TensorData::Float(v) => p.float_data = v.clone(),
        TensorData::Int32(v) => p.int32_data = v.clone(),
        TensorData::Int64(v) => p.int64_data = v.clone(),
        TensorData::Double(v) => p.double_data = v.clone(),
        TensorData::Uint64(v) => p.uint64_data = v.clone(),
        TensorData::String(v) => p.string_data = v.clone(),
    }
    Ok(p)
}

fn export_value_info(name: &str, info: &ValueInfo) -> Result<pb::ValueInfoProto> {
    Ok(pb::ValueInfoProto {
        name: Some(name.to_string()),
        r#type: info.ty.as_ref().map(export_type),
        doc_string: info.doc_string.clone(),
        metadata_props: decode_opaques(&info.metadata_props)?,
    })
}

pub fn export_type(t: &TypeInfo) -> pb::TypeProto {
    use pb::type_proto as tp;
    let boxed = |t: &Option<Box<TypeInfo>>| t.as_ref().map(|t| Box::new(export_type(t)));
    let value = match &t.kind {
        TypeKind::Unset => None,
        TypeKind::Tensor { elem, shape } => Some(tp::Value::TensorType(tp::Tensor {
            elem_type: elem.map(|d| d.0),
            shape: shape.as_deref().map(export_shape),
        })),
        TypeKind::SparseTensor { elem, shape } => {
            Some(tp::Value::SparseTensorType(tp::SparseTensor {
                elem_type: elem.map(|d| d.0),
                shape: shape.as_deref().map(export_shape),
            }))
        }
        TypeKind::Sequence(e) => Some(tp::Value::SequenceType(Box::new(tp::Sequence {
            elem_type: boxed(e),
        }))),
        TypeKind::Map { key, value } => Some(tp::Value::MapType(Box::new(tp::Map {
            key_type: key.map(|d| d.0),
            value_type: boxed(value),
        }))),
        TypeKind::Optional(e) => Some(tp::Value::OptionalType(Box::new(tp::Optional {
            elem_type: boxed(e),
        }))),
        TypeKind::Opaque { domain, name } => Some(tp::Value::OpaqueType(tp::Opaque {
            domain: domain.clone(),
            name: name.clone(),
        })),
    };
    pb::TypeProto {
        denotation: t.denotation.clone(),
        value,
    }
}

fn export_shape(dims: &[Dim]) -> pb::TensorShapeProto {
    use pb::tensor_shape_proto::{dimension::Value as V, Dimension};
    pb::TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                denotation: d.denotation.clone(),
                value: match &d.value {
                    DimValue::Known(v) => Some(V::DimValue(*v)),
                    DimValue::Param(p) => Some(V::DimParam(p.clone())),
                    DimValue::Unknown => None,
                },
            })
            .collect(),
    }
}
