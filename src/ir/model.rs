//! The model: the main graph plus the model-level fields, carried losslessly.

use super::{Graph, Opaque};

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OpsetId {
    pub domain: Option<String>,
    pub version: Option<i64>,
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub ir_version: Option<i64>,
    pub opset_import: Vec<OpsetId>,
    pub producer_name: Option<String>,
    pub producer_version: Option<String>,
    pub domain: Option<String>,
    pub model_version: Option<i64>,
    pub doc_string: Option<String>,
    pub graph: Graph,
    pub metadata_props: Vec<Opaque>,
    pub training_info: Vec<Opaque>,
    pub functions: Vec<Opaque>,
    pub configuration: Vec<Opaque>,
}

impl OpsetId {
    /// The domain as people write it: `ai.onnx` for the default one.
    pub fn domain_label(&self) -> &str {
        self.domain
            .as_deref()
            .filter(|d| !d.is_empty())
            .unwrap_or("ai.onnx")
    }
}

/// Size figures reported before and after each pass.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, serde::Serialize)]
pub struct ModelStats {
    pub nodes: usize,
    pub params: usize,
    pub bytes: usize,
}

impl Model {
    /// The opset version imported for `domain` (`""` = the default ONNX domain).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let is_default = |d: &str| d.is_empty() || d == "ai.onnx";
        self.opset_import
            .iter()
            .find(|o| {
                let d = o.domain.as_deref().unwrap_or("");
                d == domain || (is_default(d) && is_default(domain))
            })
            .and_then(|o| o.version)
    }

    /// The model-level fields with an empty graph, for building small models
    /// (a node to evaluate) that share this model's opsets and functions.
    pub fn clone_header(&self) -> Model {
        Model {
            ir_version: self.ir_version,
            opset_import: self.opset_import.clone(),
            producer_name: self.producer_name.clone(),
            producer_version: self.producer_version.clone(),
            domain: self.domain.clone(),
            model_version: self.model_version,
            doc_string: None,
            graph: Graph::default(),
            metadata_props: vec![],
            training_info: vec![],
            functions: self.functions.clone(),
            configuration: vec![],
        }
    }

    pub fn stats(&self) -> ModelStats {
        let (nodes, params, bytes) = self.graph.stats();
        ModelStats {
            nodes,
            params,
            bytes,
        }
    }
}
