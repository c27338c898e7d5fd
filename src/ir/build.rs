//! Building small models in code: test fixtures, and the small models passes
//! evaluate. Names are given by the caller; `build` runs the verifier.
//!
//! ```ignore
//! let mut b = ModelBuilder::new(13);
//! let x = b.input("x", DataType::FLOAT, &[1, 3, 8, 8]);
//! let w = b.init("w", Tensor::from_f32(vec![4, 3, 3, 3], &weights));
//! let y = b.op("Conv", &[x, w], vec![Attribute::ints("pads", &[1, 1, 1, 1])], "y");
//! b.output(y, DataType::FLOAT);
//! let model = b.build()?;
//! ```

use super::*;
use anyhow::Result;

pub struct ModelBuilder {
    model: Model,
}

impl ModelBuilder {
    /// An empty model importing the default ONNX domain at `opset`.
    pub fn new(opset: i64) -> ModelBuilder {
        let model = Model {
            ir_version: Some(8),
            opset_import: vec![OpsetId {
                domain: Some(String::new()),
                version: Some(opset),
            }],
            graph: Graph {
                name: Some("g".into()),
                ..Graph::default()
            },
            ..Model::default()
        };
        ModelBuilder { model }
    }

    pub fn input(&mut self, name: &str, dtype: DataType, dims: &[i64]) -> Outlet {
        let g = &mut self.model.graph;
        let id = g.add_node(Node {
            name: None,
            kind: NodeKind::Input,
            outputs: vec![Value::named(name)],
        });
        let info = ValueInfo {
            ty: Some(TypeInfo::tensor(dtype, dims)),
            ..ValueInfo::default()
        };
        g.inputs.push(GraphInput { node: id, info });
        Outlet::new(id, 0)
    }

    pub fn init(&mut self, name: &str, tensor: Tensor) -> Outlet {
        let id = self.model.graph.add_node(Node {
            name: None,
            kind: NodeKind::Initializer(tensor),
            outputs: vec![Value::named(name)],
        });
        Outlet::new(id, 0)
    }

    /// Adds a single-output operator (named after its output) and returns its output.
    pub fn op(
        &mut self,
        op_type: &str,
        inputs: &[Outlet],
        attrs: Vec<Attribute>,
        output: &str,
    ) -> Outlet {
        let g = &mut self.model.graph;
        let op = Operator::new(op_type, inputs.len(), attrs);
        let id = g.add_node(Node::op(
            Some(output.to_string()),
            op,
            vec![Value::named(output)],
        ));
        for (slot, &from) in inputs.iter().enumerate() {
            g.connect(from, id, slot);
        }
        Outlet::new(id, 0)
    }

    /// Adds an operator with several outputs (named after the first) and
    /// returns them; `None` leaves an input slot empty.
    pub fn op_n(
        &mut self,
        op_type: &str,
        inputs: &[Option<Outlet>],
        attrs: Vec<Attribute>,
        outputs: &[&str],
    ) -> Vec<Outlet> {
        let g = &mut self.model.graph;
        let op = Operator::new(op_type, inputs.len(), attrs);
        let values = outputs.iter().map(|&n| Value::named(n)).collect();
        let id = g.add_node(Node::op(Some(outputs[0].to_string()), op, values));
        for (slot, from) in inputs.iter().enumerate() {
            if let Some(from) = *from {
                g.connect(from, id, slot);
            }
        }
        (0..outputs.len()).map(|i| Outlet::new(id, i)).collect()
    }

    /// Declares a graph output of element type `dtype` (shape left unknown).
    pub fn output(&mut self, outlet: Outlet, dtype: DataType) {
        let ty = TypeInfo {
            kind: TypeKind::Tensor {
                elem: Some(dtype),
                shape: None,
            },
            denotation: None,
        };
        self.model.graph.outputs.push(GraphOutput {
            outlet,
            info: ValueInfo {
                ty: Some(ty),
                ..ValueInfo::default()
            },
        });
    }

    pub fn build(self) -> Result<Model> {
        verify::verify(&self.model)?;
        Ok(self.model)
    }
}

/// A float tensor type with dims as a fixture writes them: numbers,
/// `dim_param` names, or `?` for unknown.
pub fn f32_type(dims: &[&str]) -> TypeInfo {
    let dim = |d: &&str| Dim {
        value: match (d.parse(), *d) {
            (Ok(n), _) => DimValue::Known(n),
            (_, "?") => DimValue::Unknown,
            _ => DimValue::Param(d.to_string()),
        },
        denotation: None,
    };
    TypeInfo {
        kind: TypeKind::Tensor {
            elem: Some(DataType::FLOAT),
            shape: Some(dims.iter().map(dim).collect()),
        },
        denotation: None,
    }
}
