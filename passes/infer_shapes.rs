//! # infer-shapes
//!
//! **What:** records the element type and shape of every operator output of
//! the main graph that has no type yet, as tract's analysis infers them from
//! the declared input shapes. Symbolic input dims stay symbolic: a dim is a
//! number only when the model fixes it, the input's `dim_param` when it is
//! one, else unknown. Only annotations change (`value_info`), never a value.
//!
//! **Why:** the other passes only see the types of graph inputs and outputs,
//! initializers and the file's `value_info`. With intermediate types known,
//! `eliminate` removes a `Reshape`/`Cast` that changes nothing and
//! `fold-constants` folds `Shape`/`Size` of values with a static shape.
//!
//! ```text
//! a = Conv(x: f32[1,8,16,16], w)                a = Conv(x, w)       a: f32[1,8,16,16]
//! b = Reshape(a, [1,8,16,16])             →     b = Reshape(a, [1,8,16,16])
//! s = Shape(b)                                  s = Shape(b)         b: f32[1,8,16,16]
//! ```
//! Values that already have a type saying every dim keep it (a type with
//! an unknown dim or rank, recorded when tract could not tell, is replaced
//! when tract now can say every dim: after a Reshape's shape became
//! constant, say);
//! graph outputs keep their declaration, unless it contradicts what the
//! graph computes (another rank, or another number for a dim): exporters
//! write such declarations (a CRNN declaring `[1, seqlen]` for a
//! `[seqlen, 1, 8210]` output) and ONNX Runtime only warns at run time, but
//! onnx's checker refuses the file once the values before it are typed, so
//! the inferred type replaces it and the details name it
//! (`outputs_corrected`); values whose element type tract cannot infer stay
//! untyped.
//! Subgraphs (`If`, `Loop`, `Scan` bodies) are not annotated. When tract's
//! analysis fails on some nodes, the types it did find are recorded and the
//! reason is in the details (`incomplete`); when tract cannot read the model
//! at all, nothing changes (`error`); `tract_panicked` is set when a panic
//! caught inside tract was the reason. Run it again after passes that make new
//! values; a pass that changes what a value computes must drop its type.
//!
//! **Options:** none.

use crate::ir::{text, DimValue, Graph, Model, Outlet, Patch, TypeInfo, TypeKind};
use crate::passes::PassInfo;
use crate::pipeline::{Pass, PassContext};
use crate::runtime::{InferredTypes, ValueType};
use anyhow::Result;
use serde_json::json;
use std::collections::HashMap;

pub const INFO: PassInfo = PassInfo::exact(
    "infer-shapes",
    "record inferred types and shapes of intermediate values (value_info), from tract",
    |_| Ok(Box::new(InferShapes)),
);

struct InferShapes;

impl Pass for InferShapes {
    fn run(&self, model: &mut Model, _: &PassContext) -> Result<serde_json::Value> {
        // Nothing to learn when every value is typed (a second `fuse` round).
        if !has_untyped_value(&model.graph) {
            return Ok(json!({ "annotated": 0 }));
        }
        let inferred = crate::exec::infer_types(model);
        record(model, inferred)
    }
}

/// Types the untyped operator outputs of the main graph that `inferred`
/// names. The model may have been rewritten since the types were inferred:
/// exact rewrites keep what a surviving name denotes, so its type holds.
pub(crate) fn record(
    model: &mut Model,
    inferred: Result<InferredTypes>,
) -> Result<serde_json::Value> {
    let inferred = match inferred {
        Ok(inferred) => inferred,
        Err(e) => {
            let mut details = json!({ "annotated": 0, "error": format!("{e:#}") });
            if crate::runtime::tract_panicked(&e) {
                details["tract_panicked"] = json!(true);
            }
            return Ok(details);
        }
    };
    let types: HashMap<&str, &ValueType> = inferred
        .types
        .iter()
        .map(|(name, ty)| (name.as_str(), ty))
        .collect();
    let (patch, counts) = annotate(&model.graph, &types);
    patch.apply(&mut model.graph)?;
    let mut details = json!({
        "annotated": counts.annotated,
        "static": counts.static_shape,
        "untyped": counts.untyped,
    });
    if !counts.corrected.is_empty() {
        details["outputs_corrected"] = json!(counts.corrected);
    }
    if let Some(why) = inferred.incomplete {
        details["incomplete"] = json!(why);
    }
    // The CLI warns of it (a malformed model, most likely).
    if inferred.tract_panicked {
        details["tract_panicked"] = json!(true);
    }
    Ok(details)
}

/// A type that says each dim (a number or a symbol), or not a tensor's.
fn complete(t: &TypeInfo) -> bool {
    match &t.kind {
        TypeKind::Tensor {
            shape: Some(dims), ..
        } => dims.iter().all(|d| match &d.value {
            DimValue::Known(n) => *n >= 0,
            DimValue::Param(p) => !p.is_empty(),
            DimValue::Unknown => false,
        }),
        TypeKind::Tensor { .. } => false,
        _ => true,
    }
}

/// A value whose type is [`complete`]: nothing more to learn.
pub(crate) fn typed(v: &crate::ir::Value) -> bool {
    v.info
        .as_ref()
        .and_then(|i| i.ty.as_ref())
        .is_some_and(complete)
}

pub(crate) fn has_untyped_value(g: &Graph) -> bool {
    g.node_ids().filter(|&id| g.op(id).is_some()).any(|id| {
        g.node(id).outputs.iter().enumerate().any(|(slot, v)| {
            let typed = typed(v);
            !v.name.is_empty() && !typed && !g.is_graph_output(Outlet::new(id, slot))
        })
    })
}

#[derive(Default, Debug, PartialEq)]
struct Counts {
    /// Values given a type.
    annotated: usize,
    /// Of those, values whose every dim is a number.
    static_shape: usize,
    /// Untyped values tract knows no element type of.
    untyped: usize,
    /// Graph outputs whose declaration contradicted the inferred type.
    corrected: Vec<serde_json::Value>,
}

/// A patch typing every untyped operator output of `g` found in `types`.
fn annotate(g: &Graph, types: &HashMap<&str, &ValueType>) -> (Patch, Counts) {
    let mut patch = Patch::new("infer-shapes");
    let mut counts = Counts::default();
    for id in g.node_ids().filter(|&id| g.op(id).is_some()) {
        for (slot, v) in g.node(id).outputs.iter().enumerate() {
            let outlet = Outlet::new(id, slot);
            let had_type = v.info.as_ref().is_some_and(|i| i.ty.is_some());
            if v.name.is_empty() || typed(v) || g.is_graph_output(outlet) {
                continue;
            }
            let Some(ty) = types.get(v.name.as_str()) else {
                counts.untyped += usize::from(!had_type);
                continue;
            };
            let ty = crate::exec::type_info(ty);
            // An old type stays unless the new one says every dim.
            if had_type && !complete(&ty) {
                continue;
            }
            counts.annotated += 1;
            if ty.static_dims().is_some() {
                counts.static_shape += 1;
            }
            patch.set_type(outlet, ty);
        }
    }
    for (index, output) in g.outputs.iter().enumerate() {
        let name = g.outlet_name(output.outlet);
        let Some(ty) = types.get(name) else { continue };
        let ty = crate::exec::type_info(ty);
        let Some(declared) = output.info.ty.as_ref().filter(|d| contradicts(d, &ty)) else {
            continue;
        };
        counts.corrected.push(json!({
            "output": name,
            "declared": text::type_text(Some(declared)),
            "computes": text::type_text(Some(&ty)),
        }));
        patch.declare_output(index, ty);
    }
    (patch, counts)
}

/// Whether two tensor types cannot describe the same value: their ranks,
/// or a dim both give as a number, differ (a symbol may be any number).
fn contradicts(declared: &TypeInfo, inferred: &TypeInfo) -> bool {
    let shape = |t: &TypeInfo| match &t.kind {
        TypeKind::Tensor { shape, .. } => shape.clone(),
        _ => None,
    };
    let (Some(a), Some(b)) = (shape(declared), shape(inferred)) else {
        return false;
    };
    a.len() != b.len()
        || a.iter().zip(&b).any(|(x, y)| match (&x.value, &y.value) {
            (DimValue::Known(x), DimValue::Known(y)) => x != y,
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use crate::ir::build::{f32_type, ModelBuilder};
    use crate::ir::{DataType, Model, Tensor, TypeInfo, TypeKind, ValueInfo};
    use crate::pipeline::Pipeline;

    /// x: f32[batch, 4]; a = MatMul(x, W); s = Shape(a); b = Relu(a) (typed
    /// in the file as f32 of unknown rank); y = Identity(b), a graph output.
    fn model() -> Model {
        let mut b = ModelBuilder::new(17);
        let x = b.input("x", DataType::FLOAT, &[1, 4]);
        let w = b.init("W", Tensor::from_f32(vec![4, 4], &[0.5; 16]));
        let a = b.op("MatMul", &[x, w], vec![], "a");
        b.op("Shape", &[a], vec![], "s");
        let r = b.op("Relu", &[a], vec![], "b");
        let y = b.op("Identity", &[r], vec![], "y");
        b.output(y, DataType::FLOAT);
        let mut m = b.build().unwrap();
        m.graph.inputs[0].info.ty = Some(f32_type(&["batch", "4"]));
        let declared = TypeInfo {
            kind: TypeKind::Tensor {
                elem: Some(DataType::FLOAT),
                shape: None,
            },
            denotation: None,
        };
        m.graph.node_mut(r.node).outputs[0].info = Some(ValueInfo {
            ty: Some(declared),
            doc_string: Some("from the file".into()),
            ..Default::default()
        });
        m
    }

    fn run(m: &mut Model, passes: &str) -> serde_json::Value {
        let reports = Pipeline::parse(passes)
            .unwrap()
            .run(m, &Default::default(), &mut |_| {})
            .unwrap();
        reports[0].details.clone()
    }

    fn info_of<'a>(m: &'a Model, name: &str) -> Option<&'a ValueInfo> {
        let o = m.graph.find_value(name).unwrap();
        m.graph.node(o.node).outputs[o.slot].info.as_ref()
    }

    #[test]
    fn annotates_untyped_operator_outputs_only() {
        let mut m = model();
        let before = m.clone();
        let d = run(&mut m, "infer-shapes");
        assert_eq!(d["annotated"], 3, "{d}");
        assert_eq!(d["static"], 1, "{d}");
        assert_eq!(d["untyped"], 0, "{d}");
        assert!(d.get("incomplete").is_none(), "{d}");
        // The batch stays symbolic; Shape's output is int64[2].
        let a = info_of(&m, "a").and_then(|i| i.ty.clone());
        assert_eq!(a, Some(f32_type(&["batch", "4"])));
        let s = info_of(&m, "s").and_then(|i| i.ty.clone());
        assert_eq!(s, Some(TypeInfo::tensor(DataType::INT64, &[2])));
        // The file's type without a shape gets one, its doc string kept; a
        // graph output keeps its declaration.
        let b = info_of(&m, "b").unwrap();
        assert_eq!(b.ty, Some(f32_type(&["batch", "4"])));
        assert_eq!(b.doc_string, info_of(&before, "b").unwrap().doc_string);
        assert!(info_of(&m, "y").is_none());
        // Nothing but annotations changed.
        let text = |m: &Model| {
            let mut m = m.clone();
            for id in m.graph.node_ids().collect::<Vec<_>>() {
                for v in &mut m.graph.node_mut(id).outputs {
                    v.info = None;
                }
            }
            crate::ir::text::model_to_text(&m)
        };
        assert_eq!(text(&m), text(&before));
    }

    #[test]
    fn an_output_declaration_the_graph_contradicts_is_replaced() {
        let cases = [
            // Another rank; another number for a dim: replaced.
            (&["batch", "4", "1"][..], Some("f32[batch,4]")),
            (&["batch", "5"][..], Some("f32[batch,4]")),
            // Another symbol is no contradiction: kept.
            (&["n", "4"][..], None),
        ];
        for (declared, corrected) in cases {
            let mut m = model();
            m.graph.outputs[0].info.ty = Some(f32_type(declared));
            let d = run(&mut m, "infer-shapes");
            let now = crate::ir::text::type_text(m.graph.outputs[0].info.ty.as_ref());
            match corrected {
                Some(want) => {
                    assert_eq!(now, want, "{declared:?}");
                    assert_eq!(d["outputs_corrected"][0]["output"], "y", "{d}");
                    assert_eq!(d["outputs_corrected"][0]["computes"], want, "{d}");
                }
                None => {
                    assert_eq!(m.graph.outputs[0].info.ty, Some(f32_type(declared)));
                    assert!(d.get("outputs_corrected").is_none(), "{d}");
                }
            }
        }
    }

    #[test]
    fn symbolic_shapes_are_not_folded() {
        let mut m = model();
        run(&mut m, "infer-shapes,fold-constants");
        let s = m.graph.find_value("s").unwrap();
        assert!(m.graph.op(s.node).is_some_and(|op| op.is("Shape")));
    }

    #[test]
    fn a_model_tract_cannot_read_is_left_alone() {
        let mut m = model();
        // A Cast with no `to`: tract refuses to build the node.
        let s = m.graph.find_value("s").unwrap();
        m.graph.node_mut(s.node).as_op_mut().unwrap().op_type = "Cast".into();
        let d = run(&mut m, "infer-shapes");
        assert_eq!(d["annotated"], 0, "{d}");
        assert!(
            d["error"].as_str().is_some_and(|e| e.contains("Cast")),
            "{d}"
        );
        assert!(info_of(&m, "a").is_none());
    }

    #[test]
    fn canon_loses_its_no_ops_and_shape_arithmetic() {
        let ops_after = |passes: &str| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/canon.onnx");
            let mut m = crate::onnx::load(&path).unwrap();
            run(&mut m, passes);
            let mut ops: Vec<String> = m
                .graph
                .op_order()
                .unwrap()
                .into_iter()
                .map(|id| m.graph.op(id).unwrap().op_type.clone())
                .collect();
            ops.sort();
            ops
        };
        let with = ops_after("lift-constants,infer-shapes,fold-constants,eliminate,dce");
        assert_eq!(with, ["Conv", "MatMul", "Mul", "Relu", "Reshape"]);
        // Without the types, the no-op Reshape and Cast and the shape
        // arithmetic stay.
        let without = ops_after("lift-constants,fold-constants,eliminate,dce");
        for op in ["Cast", "Shape", "Gather", "Concat"] {
            assert!(without.iter().any(|o| o == op), "{op}: {without:?}");
        }
    }
}
