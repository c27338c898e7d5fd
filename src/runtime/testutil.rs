//! Tiny ONNX models built in code, for the tests of this module.

use prost::Message;
use tract_onnx::pb;

pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;
pub const BOOL: i32 = 9;

/// A dim: a number, or a symbolic name if it parses as no number.
pub fn dims(d: &[&str]) -> Vec<pb::tensor_shape_proto::Dimension> {
    d.iter()
        .map(|s| pb::tensor_shape_proto::Dimension {
            value: Some(match s.parse::<i64>() {
                Ok(n) => pb::tensor_shape_proto::dimension::Value::DimValue(n),
                Err(_) => pb::tensor_shape_proto::dimension::Value::DimParam(s.to_string()),
            }),
            ..Default::default()
        })
        .collect()
}

pub fn value_info(name: &str, elem_type: i32, shape: Option<&[&str]>) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type,
                shape: shape.map(|s| pb::TensorShapeProto { dim: dims(s) }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn f32_tensor(name: &str, shape: &[i64], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: shape.to_vec(),
        data_type: FLOAT,
        float_data: data.to_vec(),
        ..Default::default()
    }
}

pub fn i64_tensor(name: &str, shape: &[i64], data: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: shape.to_vec(),
        data_type: INT64,
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

pub fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: format!("{op}_{}", outputs.first().copied().unwrap_or("")),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn graph(
    nodes: Vec<pb::NodeProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
    initializers: Vec<pb::TensorProto>,
) -> pb::GraphProto {
    pb::GraphProto {
        name: "g".into(),
        node: nodes,
        input: inputs,
        output: outputs,
        initializer: initializers,
        ..Default::default()
    }
}

pub fn model_proto(graph: pb::GraphProto) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "rt-tests".into(),
        graph: Some(graph),
        ..Default::default()
    }
}

pub fn encode(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// y = relu(x @ W + b), x: [batch, 4] (batch symbolic), W: 4x3, b: 3.
/// Intermediate tensors: "mm" (x @ W), "pre" (mm + b).
pub fn mlp() -> Vec<u8> {
    let w: Vec<f32> = (0..12).map(|i| (i as f32 - 6.0) / 4.0).collect();
    let g = graph(
        vec![
            node("MatMul", &["x", "W"], &["mm"]),
            node("Add", &["mm", "b"], &["pre"]),
            node("Relu", &["pre"], &["y"]),
        ],
        vec![value_info("x", FLOAT, Some(&["batch", "4"]))],
        vec![value_info("y", FLOAT, Some(&["batch", "3"]))],
        vec![
            f32_tensor("W", &[4, 3], &w),
            f32_tensor("b", &[3], &[0.5, -0.5, 0.0]),
        ],
    );
    encode(&model_proto(g))
}

/// The reference computation of [`mlp`] for one row.
pub fn mlp_row(x: &[f32]) -> Vec<f32> {
    let w: Vec<f32> = (0..12).map(|i| (i as f32 - 6.0) / 4.0).collect();
    let b = [0.5, -0.5, 0.0];
    (0..3)
        .map(|j| {
            let s: f32 = (0..4).map(|k| x[k] * w[k * 3 + j]).sum::<f32>() + b[j];
            s.max(0.0)
        })
        .collect()
}
