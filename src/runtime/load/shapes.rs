//! A model's inputs: the shapes the user gives ([`InputShapes`]), the dims
//! the file declares ([`Dim`]), and the concrete shape each input is pinned
//! to ([`InputSpec`], symbolic dims at 1 unless given).

use crate::runtime::tensor::ElemType;
use crate::runtime::Refusal;
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use tract_onnx::pb;

/// Concrete input shapes given by the user, by input name.
///
/// Parsed from command-line strings of the form `NAME=1,3,224,224`
/// (see [`InputShapes::parse_one`]). The last `=` separates the name from
/// the dims, so names containing `=` still work.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputShapes(BTreeMap<String, Vec<usize>>);

impl InputShapes {
    /// No shape given.
    pub fn new() -> InputShapes {
        InputShapes::default()
    }

    /// Parses one `NAME=d1,d2,...` string. Dims are non-negative integers;
    /// spaces around them are allowed. A scalar input needs no pinning, so an
    /// empty dim list is rejected as a likely mistake.
    pub fn parse_one(s: &str) -> Result<(String, Vec<usize>)> {
        let usage = "expected NAME=DIM,DIM,... (for example input=1,3,224,224)";
        let (name, dims) = s
            .rsplit_once('=')
            .ok_or_else(|| anyhow!("bad input shape {s:?}: no '='; {usage}"))?;
        let name = name.trim();
        if name.is_empty() {
            bail!("bad input shape {s:?}: empty input name; {usage}");
        }
        if dims.trim().is_empty() {
            bail!("bad input shape {s:?}: no dims after '='; {usage}");
        }
        let dims = dims
            .split(',')
            .map(|d| {
                let d = d.trim();
                d.parse::<usize>().map_err(|_| {
                    anyhow!("bad input shape {s:?}: {d:?} is not a non-negative integer; {usage}")
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        Ok((name.to_string(), dims))
    }

    /// Parses several `NAME=d1,d2,...` strings; giving a name twice is an error.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<InputShapes> {
        let mut shapes = InputShapes::new();
        for s in specs {
            let (name, dims) = InputShapes::parse_one(s.as_ref())?;
            if shapes.0.contains_key(&name) {
                bail!("input shape for {name:?} given twice");
            }
            shapes.0.insert(name, dims);
        }
        Ok(shapes)
    }

    /// Sets (or replaces) the shape of one input.
    pub fn insert(&mut self, name: impl Into<String>, dims: Vec<usize>) {
        self.0.insert(name.into(), dims);
    }

    /// The shape given for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&[usize]> {
        self.0.get(name).map(|v| v.as_slice())
    }

    /// Whether no shape is given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(name, dims)` pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}

/// `dims` as `--input-shape` spells them: `1,3,224,224`.
pub fn spelled(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl std::str::FromStr for InputShapes {
    type Err = anyhow::Error;
    /// One `NAME=dims` pair; several separated by `;` are accepted too.
    fn from_str(s: &str) -> Result<InputShapes> {
        let parts: Vec<&str> = s.split(';').filter(|p| !p.trim().is_empty()).collect();
        InputShapes::parse(&parts)
    }
}

/// A dimension as the ONNX file declares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named symbolic size (`dim_param`, e.g. `batch`).
    Symbolic(String),
    /// Neither value nor name.
    Unknown,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// One input of a loaded model: name, element type and the concrete shape
/// it was pinned to (plus the shape the file declares).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    pub name: String,
    pub elem_type: ElemType,
    /// The concrete shape the model was loaded with; samples must match it.
    pub shape: Vec<usize>,
    /// The shape declared in the ONNX file, possibly symbolic.
    pub declared: Vec<Dim>,
}

/// The inputs an ONNX model declares, without loading it into tract: name,
/// element type, declared dims, and the shape it would be pinned to with
/// `shapes` (symbolic dims at 1). Lets the data pin symbolic dims before
/// the model is loaded.
pub fn declared_inputs(bytes: &[u8], shapes: &InputShapes) -> Result<Vec<InputSpec>> {
    let edges = decode_edges(bytes)?;
    Ok(input_specs(&edges.input, &edges.initializer_names(), shapes)?.0)
}

/// A model's graph at its edges: what it declares as inputs and outputs,
/// and its initializers' names. Decoded without the rest: prost copies
/// every field it decodes, and a 200 MB model's weights would be copied
/// only to be dropped.
#[derive(Clone, PartialEq, prost::Message)]
pub(in crate::runtime) struct Edges {
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<Named>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<pb::ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<pb::ValueInfoProto>,
}

/// A `TensorProto` reduced to its name (field 8).
#[derive(Clone, PartialEq, prost::Message)]
struct Named {
    #[prost(string, tag = "8")]
    name: String,
}

/// A `ModelProto` reduced to its graph's [`Edges`] (field 7). Encoded and
/// appended to a model's bytes, it adds outputs: protobuf merges a message
/// read twice, appending to repeated fields.
#[derive(Clone, PartialEq, prost::Message)]
pub(in crate::runtime) struct ModelEdges {
    #[prost(message, optional, tag = "7")]
    graph: Option<Edges>,
}

impl ModelEdges {
    /// The bytes that, appended to a model's, add `outputs` to its graph.
    pub(in crate::runtime) fn adding_outputs(outputs: Vec<pb::ValueInfoProto>) -> Vec<u8> {
        use prost::Message;
        let graph = Edges {
            output: outputs,
            ..Default::default()
        };
        ModelEdges { graph: Some(graph) }.encode_to_vec()
    }
}

impl Edges {
    pub(in crate::runtime) fn initializer_names(&self) -> HashSet<&str> {
        self.initializer.iter().map(|t| t.name.as_str()).collect()
    }
}

/// The [`Edges`] of an ONNX file, refused as [`decode_model`] refuses.
pub(in crate::runtime) fn decode_edges(bytes: &[u8]) -> Result<Edges> {
    decode_as::<ModelEdges>(bytes)?
        .graph
        .ok_or_else(|| anyhow!(NO_GRAPH))
}

/// An ONNX file decoded into tract's protobuf types, refused when it has no
/// graph (so [`graph_of`] and [`graph_of_mut`] always find one). Decodes the
/// bytes where they are: tract's `proto_model_for_read` first copies them
/// into a buffer of its own.
pub(in crate::runtime) fn decode_model(bytes: &[u8]) -> Result<pb::ModelProto> {
    let proto: pb::ModelProto = decode_as(bytes)?;
    if proto.graph.is_none() {
        bail!(NO_GRAPH);
    }
    Ok(proto)
}

/// What a model without a graph is refused with.
const NO_GRAPH: &str = "not a valid ONNX model: it has no graph";

/// `bytes` decoded as `M` (a model, or the part of one `M` reads), refused
/// as not ONNX when protobuf cannot read them.
fn decode_as<M: prost::Message + Default>(bytes: &[u8]) -> Result<M> {
    M::decode(bytes)
        .map_err(|e| anyhow!("not a valid ONNX model (protobuf decoding failed): {e:#}"))
}

/// The graph of a model from [`decode_model`].
pub(in crate::runtime) fn graph_of(proto: &pb::ModelProto) -> &pb::GraphProto {
    proto
        .graph
        .as_ref()
        .expect("decode_model refuses a model without a graph")
}

/// The graph of a model from [`decode_model`], to edit.
pub(in crate::runtime) fn graph_of_mut(proto: &mut pb::ModelProto) -> &mut pb::GraphProto {
    proto
        .graph
        .as_mut()
        .expect("decode_model refuses a model without a graph")
}

/// The graph inputs (`inputs`) that are not `initializers`, with their pinned shapes,
/// and notes on which symbolic dims were set to 1.
pub(in crate::runtime) fn input_specs(
    inputs: &[pb::ValueInfoProto],
    initializers: &HashSet<&str>,
    shapes: &InputShapes,
) -> Result<(Vec<InputSpec>, Vec<String>)> {
    let mut specs = Vec::new();
    let mut notes = Vec::new();
    for input in inputs
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
    {
        let name = &input.name;
        let tensor_type = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(pb::type_proto::Value::TensorType(t)) => t,
            None => {
                return Err(Refusal::TractCannotRun.because(anyhow!(
                    "input {name:?} has no tensor type \
                     (sequence, map and optional inputs are not supported)"
                )))
            }
        };
        let elem_type = ElemType::from_onnx(tensor_type.elem_type)
            .map_err(|e| Refusal::TractCannotRun.because(e.context(format!("input {name:?}"))))?;
        let declared: Option<Vec<Dim>> = tensor_type.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => {
                        usize::try_from(*v).map(Dim::Fixed).unwrap_or(Dim::Unknown)
                    }
                    Some(pb::tensor_shape_proto::dimension::Value::DimParam(p))
                        if !p.is_empty() && p != "?" =>
                    {
                        Dim::Symbolic(p.clone())
                    }
                    _ => Dim::Unknown,
                })
                .collect()
        });
        let shape = match (shapes.get(name), &declared) {
            (Some(given), Some(declared)) => {
                if given.len() != declared.len() {
                    bail!(
                        "input shape for {name:?} has {} dims, the model declares {} ({})",
                        given.len(),
                        declared.len(),
                        fmt_dims(declared)
                    );
                }
                for (ix, (g, d)) in given.iter().zip(declared).enumerate() {
                    if let Dim::Fixed(d) = d {
                        if g != d {
                            bail!(
                                "input shape for {name:?} sets dim {ix} to {g}, \
                                 the model fixes it to {d} ({})",
                                fmt_dims(declared)
                            );
                        }
                    }
                }
                given.to_vec()
            }
            (Some(given), None) => given.to_vec(),
            (None, Some(declared)) => declared
                .iter()
                .enumerate()
                .map(|(ix, d)| match d {
                    Dim::Fixed(n) => *n,
                    other => {
                        notes.push(format!("{name}[{ix}] ({other})"));
                        1
                    }
                })
                .collect(),
            (None, None) => bail!(
                "input {name:?} has no declared shape; give it with --input-shape {name}=DIM,..."
            ),
        };
        specs.push(InputSpec {
            name: name.clone(),
            elem_type,
            shape,
            declared: declared.unwrap_or_default(),
        });
    }
    let known: HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for (name, _) in shapes.iter() {
        if !known.contains(name) {
            bail!(
                "input shape given for {name:?}, which is not an input of the model (inputs: {})",
                specs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok((specs, notes))
}

fn fmt_dims(dims: &[Dim]) -> String {
    format!(
        "[{}]",
        dims.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
