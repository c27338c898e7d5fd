//! Tests of the graph's topological order.

use super::*;
use crate::pipeline::Pipeline;

/// The shortcut (index order when it is topological) gives the order the
/// heap gives, on every model the repo has, before and after rewrites
/// that reuse node indices.
#[test]
fn topo_order_shortcut_agrees_with_the_heap() {
    let files = crate::onnx::tests::suite_files();
    assert!(!files.is_empty(), "no models found under models/");
    let same = |m: &crate::ir::Model| {
        m.graph.visit_graphs(&mut |g| {
            assert_eq!(g.topo_order().unwrap(), g.topo_order_by_heap().unwrap());
        })
    };
    for path in files {
        let mut m = crate::onnx::load(&path).unwrap();
        same(&m);
        for passes in ["lift-constants", "fuse-bias,fuse-activation,cse,dce"] {
            Pipeline::parse(passes)
                .unwrap()
                .run(&mut m, &Default::default(), &mut |_| {})
                .unwrap();
            same(&m);
        }
    }
}

/// A wire from a higher index to a lower one: the heap decides.
#[test]
fn topo_order_follows_wires_against_index_order() {
    let mut g = Graph::default();
    let op = |name: &str| {
        Node::op(
            None,
            Operator::new("Relu", 1, vec![]),
            vec![Value::named(name)],
        )
    };
    let x = g.add_node(Node {
        name: None,
        kind: NodeKind::Input,
        outputs: vec![Value::named("x")],
    });
    let b = g.add_node(op("b"));
    let a = g.add_node(op("a"));
    let c = g.add_node(op("c"));
    g.connect(Outlet::new(x, 0), a, 0);
    g.connect(Outlet::new(a, 0), b, 0);
    g.connect(Outlet::new(x, 0), c, 0);
    assert_eq!(g.topo_order().unwrap(), [x, a, b, c]);
    assert_eq!(g.topo_order().unwrap(), g.topo_order_by_heap().unwrap());
}
