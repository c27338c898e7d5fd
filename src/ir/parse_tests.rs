use super::*;
use crate::ir::text::model_to_text;

/// Every construct the printer shows by value: symbolic and unknown dims,
/// an unknown rank, a domain, an omitted input, several outputs, node names,
/// attributes of each printable kind, and an If whose branches capture.
const EVERYTHING: &str = "\
model ir=8 opsets=[ai.onnx=13, com.microsoft=1]
graph main
  input x: f32[N,3,?]
  input c: bool[]
  input s: seq<f32[..]>
  init k: i64[2] = [1, -2]
  init w: f32[3] = [0.5, -1.0, 2.5]
  a = Mul(x, w)  # scale
  b, m = Dropout(a) {ratio=0.25, seed=3}
  Mul(b).out = Mul(b, b)
  d = com.microsoft.FusedThing(Mul(b).out, , k) {activation=\"Relu\\n\", alphas=[1.0, -0.5], dims=[1, 2], names=[\"p\", \"q\"], t=u8[2,1] = [0, 255], ty=f32[N,..], v=f64[] = [0.1]}
  e = If(c)
    else_branch:
    graph no
      capture d
      n = Neg(d)
      output n: ?
    then_branch:
    graph yes
      capture a
      capture k
      r = Reshape(a, k)
      output r: f32[..]
  output e: f32[N,..]
  output m: bool[N,3,?]
  output s: seq<f32[..]>
";

#[test]
fn print_parse_print_is_the_identity() {
    let model = model_from_text(EVERYTHING).unwrap();
    assert_eq!(model_to_text(&model), EVERYTHING);
    let g = &model.graph;
    let e = g.find_value("e").unwrap();
    assert_eq!(g.implicit_inputs(e.node).len(), 3, "captures wired to If");
    let d = g.op(g.find_value("d").unwrap().node).unwrap();
    assert_eq!((d.domain.as_deref(), d.arity), (Some("com.microsoft"), 3));
}

#[test]
fn values_beyond_what_is_printed_are_read() {
    // More than 8 values print as a digest; they may still be written out.
    let text = "model ir=8 opsets=[ai.onnx=13]\ngraph g\n  input x: f32[9]\n  \
                init w: f32[9] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]\n  \
                y = Add(x, w)\n  output y: f32[9]\n";
    let m = model_from_text(text).unwrap();
    let w = m
        .graph
        .const_tensor(m.graph.find_value("w").unwrap())
        .unwrap();
    assert_eq!(w.to_f32().unwrap()[8], 9.0);
    assert!(model_to_text(&m).contains("init w: f32[9] #"));
}

#[test]
fn what_cannot_be_read_is_refused_with_its_line() {
    let err = |text: &str| format!("{:#}", model_from_text(text).unwrap_err());
    let head = "model ir=8 opsets=[ai.onnx=13]\ngraph g\n  input x: f32[2]\n";
    let e = err(&format!("{head}  init w: f32[64] #3f1c9a2e0b7d5c41\n"));
    assert!(
        e.starts_with("line 4: init w") && e.contains("digest"),
        "{e}"
    );
    let e = err(&format!("{head}  y = Relu(z)\n  output y: f32[2]\n"));
    assert!(e.contains("'z' is used before it is defined"), "{e}");
    let e = err(&format!(
        "{head}  y = Relu(x)\n  y = Neg(x)\n  output y: f32[2]\n"
    ));
    assert!(e.contains("defined twice"), "{e}");
    let e = err(&format!("{head}  init w: f32[3] = [1.0]\n"));
    assert!(e.contains("1 values for dims [3]"), "{e}");
}
