//! # lift-constants
//!
//! **What:** turns every `Constant` node into an initializer with the same
//! name, in subgraphs too.
//!
//! **Why:** some exporters (paddle2onnx: every PP-OCR weight) keep weights in
//! `Constant` nodes. The rewrite passes find weights among initializers, so
//! they see none until the constants are lifted.
//!
//! ```text
//! w = Constant() {value=f32[16,3,3,3]}          init w: f32[16,3,3,3]
//! y = Conv(x, w)                          →     y = Conv(x, w)
//! ```
//! `sparse_value` constants stay as they are (no dense initializer holds them).
//!
//! Below IR version 4 every initializer had to be declared as a graph input
//! too, and nothing could feed it (caffe2-era exports, onnx's own test
//! models): such initializers are constants, so they stop being declared
//! inputs and the IR version becomes 4, which says the same thing explicitly.
//! From IR 4 an initializer declared as an input is a default the user may
//! override, and stays as it is.
//!
//! ```text
//! ir_version 3                                  ir_version 4
//! input  w: f32[64]                      →      (w no longer an input)
//! init   w: f32[64]                             init w: f32[64]
//! ```
//!
//! **Options:** declared once in `Opts` below: `keep-inputs=true` leaves
//! IR-3 initializers declared as inputs (overridable, as ONNX Runtime lets
//! them be).

use crate::ir::{constant_value, Graph, Model, NodeId, NodeKind, Outlet, Patch};
use crate::passes::PassInfo;
use crate::pipeline::{Options, Pass, PassContext};
use anyhow::Result;
use serde_json::json;

pub const INFO: PassInfo = PassInfo::exact(
    "lift-constants",
    "Constant nodes become initializers (weights become visible to the other passes)",
    build,
)
.with_options(Opts::TABLE);

crate::pass_options! {
    /// Shared with `fuse`, which passes it on.
    pub(crate) struct Opts {
        keep_inputs: bool = "keep-inputs", "false",
            "below IR 4, keep initializers declared as graph inputs overridable instead of constant";
    }
}

fn build(options: &Options) -> Result<Box<dyn Pass>> {
    let Opts { keep_inputs } = Opts::parse(options)?;
    Ok(Box::new(LiftConstants { keep_inputs }))
}

/// The IR version from which an initializer may be left out of the graph
/// inputs, and one declared there is an overridable default.
const OVERRIDABLE_FROM_IR: i64 = 4;

struct LiftConstants {
    keep_inputs: bool,
}

impl Pass for LiftConstants {
    fn run(&self, model: &mut Model, _: &PassContext) -> Result<serde_json::Value> {
        let mut lifted = 0;
        model.graph.visit_graphs_mut(&mut |g| {
            let patch = lift(g);
            lifted += patch.1;
            patch.0.apply(g)
        })?;
        let constant = if self.keep_inputs {
            0
        } else {
            constant_inputs(model)?
        };
        Ok(json!({ "lifted": lifted, "inputs_made_constant": constant }))
    }
}

/// Below IR 4, stops declaring initializers as graph inputs (they are
/// constants) and raises the IR version to 4; returns how many.
pub fn constant_inputs(model: &mut Model) -> Result<usize> {
    if model.ir_version.is_none_or(|v| v >= OVERRIDABLE_FROM_IR) {
        return Ok(0);
    }
    let mut patch = Patch::new("lift-constants: IR-3 inputs");
    let mut count = 0;
    for input in &model.graph.inputs {
        if matches!(model.graph.node(input.node).kind, NodeKind::Initializer(_)) {
            patch.make_constant(input.node);
            count += 1;
        }
    }
    if count > 0 {
        patch.apply(&mut model.graph)?;
        model.ir_version = Some(OVERRIDABLE_FROM_IR);
    }
    Ok(count)
}

/// For `fuse`, which starts tract before `lift-constants` runs: the model with every `Constant` of its main graph that `lift-constants`
/// lifts turned into an initializer in place, and IR-3 initializer inputs
/// made constants as it makes them: to type inference (main graph
/// only) the same model as after `lift-constants`, without naming new nodes
/// (a test compares what tract infers from each).
pub(crate) fn lifted_in_place(mut m: Model) -> Result<Model> {
    constant_inputs(&mut m)?;
    let g = &mut m.graph;
    let ids: Vec<NodeId> = g.node_ids().collect();
    for id in ids {
        if let Some(t) = constant_value(g, id) {
            g.node_mut(id).kind = NodeKind::Initializer(t);
        }
    }
    Ok(m)
}

/// `infer_shapes::has_untyped_value` of the graph `lift-constants` would
/// make of `g`: lifted constants are initializers, not operators.
pub(crate) fn has_untyped_value_once_lifted(g: &Graph) -> bool {
    g.node_ids()
        .filter(|&id| g.op(id).is_some() && constant_value(g, id).is_none())
        .any(|id| {
            g.node(id).outputs.iter().enumerate().any(|(slot, v)| {
                let typed = crate::passes::infer_shapes::typed(v);
                !v.name.is_empty() && !typed && !g.is_graph_output(Outlet::new(id, slot))
            })
        })
}

fn lift(g: &Graph) -> (Patch, usize) {
    let mut patch = Patch::new("lift-constants");
    let mut count = 0;
    for id in g.node_ids() {
        if let Some(tensor) = constant_value(g, id) {
            let name = g.node(id).outputs[0].name.clone();
            let init = patch.add_const(&name, tensor);
            patch.shunt(Outlet::new(id, 0), init);
            patch.remove(id);
            count += 1;
        }
    }
    (patch, count)
}

#[cfg(test)]
mod tests {
    use super::{has_untyped_value_once_lifted, lifted_in_place};
    use crate::exec::infer_types;
    use crate::ir::build::ModelBuilder;
    use crate::ir::{DataType, GraphInput, Model, Tensor, ValueInfo};
    use crate::passes::testing::rewrite;

    /// `fuse` starts tract on constants lifted in place while
    /// `lift-constants` runs: tract infers the same type for every value of
    /// the lifted model, and `fuse` decides alike whether to ask it.
    #[test]
    fn constants_lifted_in_place_infer_as_lifted() {
        for path in crate::onnx::tests::suite_files() {
            let original = crate::onnx::load(&path).unwrap();
            let lifted = rewrite(&original, "lift-constants");
            assert_eq!(
                has_untyped_value_once_lifted(&original.graph),
                crate::passes::infer_shapes::has_untyped_value(&lifted.graph),
                "{}",
                path.display()
            );
            let ours = infer_types(&lifted_in_place(original).unwrap()).map(|r| r.types);
            let theirs = infer_types(&lifted).map(|r| r.types);
            match (ours, theirs) {
                (Ok(ours), Ok(theirs)) => {
                    let ours: std::collections::HashMap<_, _> = ours.into_iter().collect();
                    for (name, ty) in theirs {
                        assert_eq!(ours.get(&name), Some(&ty), "{}: {name}", path.display());
                    }
                }
                (Err(a), Err(b)) => assert_eq!(format!("{a:#}"), format!("{b:#}")),
                (a, b) => panic!("{}: {:?} vs {:?}", path.display(), a.is_ok(), b.is_ok()),
            }
        }
    }

    /// An IR-3 model as caffe2 wrote them: the weight is an initializer and
    /// a declared graph input.
    fn ir3_model() -> Model {
        let mut b = ModelBuilder::new(9);
        let x = b.input("x", DataType::FLOAT, &[1, 4]);
        let w = b.init("w", Tensor::from_f32(vec![4], &[1.0, 2.0, 3.0, 4.0]));
        let y = b.op("Mul", &[x, w], vec![], "y");
        b.output(y, DataType::FLOAT);
        let mut m = b.build().unwrap();
        m.ir_version = Some(3);
        let info = ValueInfo::default();
        m.graph.inputs.push(GraphInput { node: w.node, info });
        m
    }

    #[test]
    fn ir3_initializers_declared_as_inputs_become_constants() {
        let m = ir3_model();
        assert!(m
            .graph
            .const_tensor(m.graph.find_value("w").unwrap())
            .is_none());
        let after = rewrite(&m, "lift-constants");
        assert_eq!(after.ir_version, Some(4));
        assert_eq!(after.graph.inputs.len(), 1);
        assert!(after
            .graph
            .const_tensor(after.graph.find_value("w").unwrap())
            .is_some());

        let kept = rewrite(&m, "lift-constants{keep-inputs=true}");
        assert_eq!(kept.ir_version, Some(3));
        assert_eq!(kept.graph.inputs.len(), 2);
    }

    /// From IR 4 an initializer declared as an input is an overridable default.
    #[test]
    fn ir4_initializers_declared_as_inputs_stay_overridable() {
        let mut m = ir3_model();
        m.ir_version = Some(4);
        let after = rewrite(&m, "lift-constants");
        assert_eq!(after.graph.inputs.len(), 2);
        assert_eq!(after.ir_version, Some(4));
    }
}
