//! The rules of If, Loop and Scan bodies, and of graph outputs, in the
//! main graph and in subgraphs.

use super::*;
use crate::ir::Value;

#[test]
fn if_needs_both_branches_producing_its_outputs() {
    let mut b = ModelBuilder::new(13);
    let c = b.input("c", DataType::BOOL, &[]);
    let mut then = ModelBuilder::new(13);
    let k = then.init("k", Tensor::from_f32(vec![1], &[1.0]));
    then.output(k, DataType::FLOAT);
    let then = then.build().unwrap().graph;
    let empty = Graph::default();
    let y = b.op(
        "If",
        &[c],
        vec![
            Attribute::new("then_branch", AttrValue::Graph(Box::new(then))),
            Attribute::new("else_branch", AttrValue::Graph(Box::new(empty))),
        ],
        "y",
    );
    b.output(y, DataType::FLOAT);
    let e = error(&b.build().unwrap());
    assert!(
        e.contains("(If): else_branch produces 0 values, the node has 1 outputs"),
        "{e}"
    );
}

/// A branch graph: `prefix`x[2,2] -> Flatten(axis) -> `prefix`f.
fn flatten_branch(prefix: &str, axis: i64) -> Graph {
    let mut inner = ModelBuilder::new(13);
    let x = inner.input(&format!("{prefix}x"), DataType::FLOAT, &[2, 2]);
    let name = format!("{prefix}f");
    let f = inner.op("Flatten", &[x], vec![Attribute::int("axis", axis)], &name);
    inner.output(f, DataType::FLOAT);
    inner.build().unwrap().graph
}

#[test]
fn subgraph_errors_name_the_path() {
    let mut b = ModelBuilder::new(13);
    let c = b.input("c", DataType::BOOL, &[]);
    let y = b.op(
        "If",
        &[c],
        vec![
            Attribute::new(
                "then_branch",
                AttrValue::Graph(Box::new(flatten_branch("t", 1))),
            ),
            Attribute::new(
                "else_branch",
                AttrValue::Graph(Box::new(flatten_branch("e", 7))),
            ),
        ],
        "y",
    );
    b.output(y, DataType::FLOAT);
    let e = error(&b.build().unwrap());
    assert!(
        e.contains("node 'y' (If) > node 'ef' (Flatten): axis=7"),
        "{e}"
    );
}

/// s[2], x[3,2] -> Scan(body, num_scan_inputs=1, `attrs`) -> y; the body
/// takes `body_inputs` values [2] and returns their sum once.
fn scan(body_inputs: usize, attrs: Vec<Attribute>) -> Model {
    scan_of(1, body_inputs, attrs)
}

/// A Scan of `states` [2] states and one scanned [3, 2] input whose body
/// takes `body_inputs` values and gives their sum.
fn scan_of(states: usize, body_inputs: usize, attrs: Vec<Attribute>) -> Model {
    let mut body = ModelBuilder::new(13);
    let ins: Vec<_> = (0..body_inputs)
        .map(|k| body.input(&format!("b{k}"), DataType::FLOAT, &[2]))
        .collect();
    let sum = body.op("Sum", &ins, vec![], "bsum");
    body.output(sum, DataType::FLOAT);
    let body = body.build().unwrap().graph;
    let mut b = ModelBuilder::new(13);
    let mut inputs: Vec<_> = (0..states)
        .map(|k| b.input(&format!("s{k}"), DataType::FLOAT, &[2]))
        .collect();
    inputs.push(b.input("x", DataType::FLOAT, &[3, 2]));
    let mut attrs = attrs;
    attrs.push(Attribute::int("num_scan_inputs", 1));
    attrs.push(Attribute::new("body", AttrValue::Graph(Box::new(body))));
    let y = b.op("Scan", &inputs, attrs, "y");
    b.output(y, DataType::FLOAT);
    b.build().unwrap()
}

/// tract computes the body's state count as inputs − num_scan_inputs and
/// its scanned outputs as outputs − states, unchecked: a body with fewer
/// outputs than states wrapped around and allocated until the process was
/// killed (found by `benches/fuzz.rs`).
#[test]
fn scan_bodies_match_their_state_and_scan_counts() {
    validate(&scan(2, vec![])).expect("1 state, 1 scanned input, 1 state out");
    let e = error(&scan_of(2, 3, vec![]));
    assert!(
        e.contains("(Scan): its body has 1 outputs, fewer than its 2 state inputs"),
        "{e}"
    );
    // The node's inputs are the body's (found by fuzzing: 52 inputs to a
    // body of 2, written, then refused by onnx's checker).
    let e = error(&scan(3, vec![]));
    assert!(
        e.contains("(Scan): the node has 2 inputs, its body 3"),
        "{e}"
    );
    let e = error(&scan_of(51, 2, vec![]));
    assert!(
        e.contains("(Scan): the node has 52 inputs, its body 2"),
        "{e}"
    );
    let axes = Attribute::ints("scan_input_axes", &[0, 0]);
    let e = error(&scan(2, vec![axes]));
    assert!(e.contains("scan_input_axes has 2 entries, not 1"), "{e}");
}

/// A Scan or Loop whose body gives a different number of values than the
/// node has outputs (found by `benches/fuzz.rs`: a Scan with three outputs
/// and a two-output body, accepted, then refused by onnx's checker).
#[test]
fn control_flow_bodies_give_the_nodes_outputs() {
    let mut m = scan(2, vec![]);
    let id = m.graph.op_order().unwrap()[0];
    m.graph.node_mut(id).outputs.push(Value::named("extra"));
    let e = error(&m);
    assert!(
        e.contains("(Scan): its body has 1 outputs, the node has 2"),
        "{e}"
    );

    // Loop: body (i, cond, v) -> (cond, v); the node has one output.
    let mut body = ModelBuilder::new(13);
    let _i = body.input("i", DataType::INT64, &[]);
    let cond = body.input("cond", DataType::BOOL, &[]);
    let v = body.input("v", DataType::FLOAT, &[2]);
    let cond_out = body.op("Identity", &[cond], vec![], "cond_out");
    let v_out = body.op("Identity", &[v], vec![], "v_out");
    body.output(cond_out, DataType::BOOL);
    body.output(v_out, DataType::FLOAT);
    let body = body.build().unwrap().graph;
    let looped = |outputs: &[&str]| {
        let mut b = ModelBuilder::new(13);
        let n = b.init("n", Tensor::from_i64(vec![], &[3]));
        let go = b.input("go", DataType::BOOL, &[]);
        let v0 = b.input("v0", DataType::FLOAT, &[2]);
        let attrs = vec![Attribute::new(
            "body",
            AttrValue::Graph(Box::new(body.clone())),
        )];
        let ys = b.op_n("Loop", &[Some(n), Some(go), Some(v0)], attrs, outputs);
        b.output(ys[0], DataType::FLOAT);
        b.build().unwrap()
    };
    validate(&looped(&["y"])).expect("one loop-carried value");
    let e = error(&looped(&["y", "z"]));
    assert!(
        e.contains("(Loop): its body has 2 outputs; the node's 2 outputs need 3"),
        "{e}"
    );
}

/// A graph output that is an initializer or a graph input is declared with
/// that value's type, in subgraphs too (found by `benches/fuzz.rs`: an If
/// branch returning an int32 initializer declared float, which onnx's
/// checker refuses).
#[test]
fn graph_outputs_are_declared_as_their_values_are() {
    let mut b = ModelBuilder::new(13);
    let k = b.init("k", Tensor::from_i64(vec![1], &[1]));
    b.output(k, DataType::FLOAT);
    let e = error(&b.build().unwrap());
    assert!(
        e.contains("graph output 'k': declared f32, but the value is i64"),
        "{e}"
    );

    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[2]);
    b.output(x, DataType::INT64);
    let e = error(&b.build().unwrap());
    assert!(
        e.contains("graph output 'x': declared i64, but the value is f32"),
        "{e}"
    );

    let mut then = ModelBuilder::new(13);
    let tk = then.init("tk", Tensor::from_f32(vec![1], &[1.0]));
    then.output(tk, DataType::FLOAT);
    let mut other = ModelBuilder::new(13);
    let ek = other.init("ek", Tensor::from_i64(vec![1], &[1]));
    other.output(ek, DataType::FLOAT);
    let mut b = ModelBuilder::new(13);
    let c = b.input("c", DataType::BOOL, &[]);
    let branch = |m: ModelBuilder| AttrValue::Graph(Box::new(m.build().unwrap().graph));
    let y = b.op(
        "If",
        &[c],
        vec![
            Attribute::new("then_branch", branch(then)),
            Attribute::new("else_branch", branch(other)),
        ],
        "y",
    );
    b.output(y, DataType::FLOAT);
    let e = error(&b.build().unwrap());
    assert!(e.contains("node 'y' (If) > graph output 'ek'"), "{e}");
}

/// A branch sees a captured value with the dims it has outside: a branch
/// adding to a [2, 8] capture while declaring [4, 8] is refused, as onnx's
/// checker refuses it (found by fuzzing: models/subgraph.onnx with its
/// input's batch changed).
#[test]
fn captured_values_keep_their_dims_in_a_branch() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/subgraph.onnx");
    let mut m = crate::onnx::load(std::path::Path::new(path)).unwrap();
    assert_eq!(validate(&m), Ok(()));
    m.graph.inputs[0].info.ty = Some(TypeInfo::tensor(DataType::FLOAT, &[2, 8]));
    let e = error(&m);
    assert!(
        e.contains(
            "node 'branch' (If) > node 'else.out' (Mul): output 0 'else.out' is declared \
             [4, 8], but its inputs make it [2, 8]"
        ),
        "{e}"
    );
}
