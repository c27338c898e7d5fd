//! The pieces against the whole model, and where the cut falls.

use super::super::super::testutil::*;
use super::*;
use crate::runtime::load::compile;
use crate::runtime::{ElemType, Tensor};
use tract_onnx::prelude::IntoTensor;

/// y = a chain of `blocks` (MatMul 4×4, Add, Relu) on x: [1, 4], with a
/// skip connection from the first block's output into the last Add and
/// an If whose branch reads a value of the outer graph.
fn long_model(blocks: usize) -> pb::ModelProto {
    let (mut nodes, mut inits) = (vec![], vec![]);
    let mut x = "x".to_string();
    for b in 0..blocks {
        let w: Vec<f32> = (0..16)
            .map(|i| ((i * 7 + b * 3) % 11) as f32 / 11.0 - 0.4)
            .collect();
        inits.push(f32_tensor(&format!("w{b}"), &[4, 4], &w));
        inits.push(f32_tensor(&format!("b{b}"), &[4], &[0.1, -0.2, 0.05, 0.0]));
        let (m, a, r) = (format!("m{b}"), format!("a{b}"), format!("r{b}"));
        nodes.push(node("MatMul", &[&x, &format!("w{b}")], &[&m]));
        let bias = if b + 1 == blocks {
            "r0".to_string()
        } else {
            format!("b{b}")
        };
        nodes.push(node("Add", &[&m, &bias], &[&a]));
        nodes.push(node("Relu", &[&a], &[&r]));
        x = r;
    }
    // If(cond) then Neg(r1) else r1 (the branches read r1 from outside).
    let branch = |op: &str, out: &str| pb::GraphProto {
        name: out.into(),
        node: vec![node(op, &["r1"], &[out])],
        output: vec![value_info(out, FLOAT, None)],
        ..Default::default()
    };
    inits.push(pb::TensorProto {
        name: "cond".into(),
        data_type: 9,
        dims: vec![],
        raw_data: vec![1],
        ..Default::default()
    });
    nodes.push(pb::NodeProto {
        attribute: vec![
            pb::AttributeProto {
                name: "then_branch".into(),
                r#type: 5,
                g: Some(branch("Neg", "t")),
                ..Default::default()
            },
            pb::AttributeProto {
                name: "else_branch".into(),
                r#type: 5,
                g: Some(branch("Identity", "e")),
                ..Default::default()
            },
        ],
        ..node("If", &["cond"], &["branched"])
    });
    nodes.push(node("Add", &[&x, "branched"], &["y"]));
    model_proto(graph(
        nodes,
        vec![value_info("x", FLOAT, Some(&["1", "4"]))],
        vec![value_info("y", FLOAT, None)],
        inits,
    ))
}

fn pinned() -> (Vec<String>, Vec<InferenceFact>) {
    let fact = InferenceFact::dt_shape(ElemType::F32.to_datum(), vec![1, 4]);
    (vec!["x".to_string()], vec![fact])
}

fn whole(proto: &pb::ModelProto, extra: &[String]) -> Arc<TypedRunnableModel> {
    let (names, facts) = pinned();
    let parsed = tract_onnx::onnx().parse(proto, None).unwrap();
    compile(parsed, &names, &facts, &["y".to_string()], extra, true).unwrap()
}

fn input() -> TVec<TValue> {
    let x = Tensor::from_f32(&[1, 4], &[0.5, -1.0, 2.0, 0.25]).unwrap();
    std::iter::once(x.tvalue()).collect()
}

fn floats(v: &TValue) -> Vec<f32> {
    let t = Tensor::from_tract(v.clone().into_tensor()).unwrap();
    t.to_f32_vec().unwrap()
}

#[test]
fn pieces_compute_what_the_whole_model_does() {
    let proto = long_model(12);
    let extra = ["a5".to_string(), "x".to_string(), "m0".to_string()];
    let (names, facts) = pinned();
    for piece_nodes in [1, 5, 7, 20] {
        let pieces = Pieces::load(&proto, None, &names, &facts, &extra, piece_nodes)
            .unwrap()
            .unwrap_or_else(|| panic!("{piece_nodes} nodes a piece: not cut"));
        assert_eq!(pieces.outputs(), 4);
        let got = pieces.run(input()).unwrap();
        let want = whole(&proto, &extra).run(input()).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            let (g, w) = (floats(g), floats(w));
            for (a, b) in g.iter().zip(&w) {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{g:?} vs {w:?}");
            }
        }
        // The reusable states give the same.
        let mut states = pieces.spawn().unwrap();
        let again = pieces.run_in(&mut states, input()).unwrap();
        assert_eq!(again.len(), got.len());
        for (a, b) in again.iter().zip(&got) {
            assert_eq!(floats(a), floats(b));
        }
    }
}

#[test]
fn what_cannot_be_cut_is_not() {
    let (names, facts) = pinned();
    let y = ["y".to_string()];
    // One piece only.
    let proto = long_model(2);
    assert!(Cut::of(proto.graph.as_ref().unwrap(), &names, &y, 100).is_none());
    // A node reading a value computed after it.
    let mut proto = long_model(4);
    proto.graph.as_mut().unwrap().node.swap(0, 3);
    assert!(Cut::of(proto.graph.as_ref().unwrap(), &names, &y, 2).is_none());
    // An initializer asked for as an output.
    let proto = long_model(4);
    let extra = ["w1".to_string()];
    assert!(Pieces::load(&proto, None, &names, &facts, &extra, 2)
        .unwrap()
        .is_none());
}

#[test]
fn values_are_freed_after_their_last_read() {
    let proto = long_model(6);
    let (names, _) = pinned();
    let cut = Cut::of(proto.graph.as_ref().unwrap(), &names, &["y".to_string()], 3).unwrap();
    // Each block's Relu output is read by the next block only, except
    // r0 (read by the last block's Add, node 16 of 20: piece 5 of 7) and
    // r1 (the If's branches).
    let freed: Vec<&String> = cut.frees.iter().flatten().collect();
    assert!(freed.iter().any(|n| *n == "r2"), "{freed:?}");
    let r0_freed_in = cut.frees.iter().position(|f| f.iter().any(|n| n == "r0"));
    assert_eq!(r0_freed_in, Some(16 / 3));
    // The last piece (the If, then y's Add) reads r1 for the If's
    // branches, and writes only y.
    assert!(cut.reads.last().unwrap().contains(&"r1".to_string()));
    assert_eq!(cut.writes.last().unwrap(), &["y".to_string()]);
}
