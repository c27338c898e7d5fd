//! Tests of loading and running models in tract.

use super::super::testutil::*;
use super::*;
use crate::runtime::tensor::ElemType;
use std::fmt;

fn shapes(specs: &[&str]) -> InputShapes {
    InputShapes::parse(specs).unwrap()
}

fn err_of<T: fmt::Debug>(r: Result<T>) -> String {
    format!("{:#}", r.unwrap_err())
}

#[test]
fn parse_input_shapes() {
    let s = shapes(&["x=1,3,224,224", "input:0 = 2, 5"]);
    assert_eq!(s.get("x"), Some(&[1, 3, 224, 224][..]));
    assert_eq!(s.get("input:0"), Some(&[2, 5][..]));
    assert_eq!(
        InputShapes::parse_one("a=b=4").unwrap(),
        ("a=b".to_string(), vec![4])
    );
    for bad in ["x", "x=", "=1,2", "x=1,,2", "x=1,-2", "x=1x2", "x=a"] {
        let e = err_of(InputShapes::parse_one(bad));
        assert!(
            e.contains("bad input shape") && e.contains("NAME=DIM"),
            "{bad}: {e}"
        );
    }
    assert!(err_of(InputShapes::parse(&["x=1", "x=2"])).contains("twice"));
    let s: InputShapes = "x=1,2;y=3".parse().unwrap();
    assert_eq!(s.iter().count(), 2);
}

#[test]
fn load_and_run_mlp() {
    let m = Model::load(&mlp(), &InputShapes::new(), &[]).unwrap();
    assert_eq!(
        m.inputs(),
        &[InputSpec {
            name: "x".into(),
            elem_type: ElemType::F32,
            shape: vec![1, 4],
            declared: vec![Dim::Symbolic("batch".into()), Dim::Fixed(4)],
        }]
    );
    assert_eq!(m.output_names(), &["y".to_string()]);
    assert_eq!(m.defaulted_dims(), &["x[0] (batch)".to_string()]);
    let s = Sample::random(m.inputs(), 7).unwrap();
    let out = m.run(&s).unwrap();
    let x = s.get("x").unwrap().to_f32_vec().unwrap();
    let y = out.get("y").unwrap();
    assert_eq!(y.shape(), &[1, 3]);
    let want = mlp_row(&x);
    for (g, w) in y.to_f32_vec().unwrap().iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
}

#[test]
fn pinned_batch_and_extra_outputs() {
    let extra = vec![
        "mm".to_string(),
        "y".to_string(),
        "mm".to_string(),
        "W".to_string(),
    ];
    let m = Model::load(&mlp(), &shapes(&["x=5,4"]), &extra).unwrap();
    assert_eq!(m.inputs()[0].shape, vec![5, 4]);
    assert!(m.defaulted_dims().is_empty());
    assert_eq!(m.output_names(), &["y", "mm", "W"]);
    assert_eq!(m.model_output_names(), &["y"]);
    let s = Sample::random(m.inputs(), 1).unwrap();
    let out = m.run(&s).unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out.get("y").unwrap().shape(), &[5, 3]);
    assert_eq!(out.get("mm").unwrap().shape(), &[5, 3]);
    assert_eq!(out.get("W").unwrap().shape(), &[4, 3]);
    let x = s.get("x").unwrap().to_f32_vec().unwrap();
    let y = out.get("y").unwrap().to_f32_vec().unwrap();
    for r in 0..5 {
        let want = mlp_row(&x[r * 4..r * 4 + 4]);
        for j in 0..3 {
            assert!((y[r * 3 + j] - want[j]).abs() < 1e-5);
        }
    }
    // several samples in parallel give the same as one by one
    let samples: Vec<Sample> = (0..4)
        .map(|i| Sample::random(m.inputs(), i).unwrap())
        .collect();
    let many = m.run_many(&samples).unwrap();
    for (s, o) in samples.iter().zip(&many) {
        assert_eq!(&m.run(s).unwrap(), o);
    }
}

#[test]
fn bad_loads_give_clear_errors() {
    let e = err_of(Model::load(b"not a model at all", &InputShapes::new(), &[]));
    assert!(e.contains("not a valid ONNX model"), "{e}");
    let e = err_of(Model::load(
        &mlp(),
        &InputShapes::new(),
        &["nope".to_string()],
    ));
    assert!(
        e.contains("unknown tensor name") && e.contains("\"nope\""),
        "{e}"
    );
    let e = err_of(Model::load(&mlp(), &shapes(&["z=1,4"]), &[]));
    assert!(e.contains("\"z\"") && e.contains("inputs: x"), "{e}");
    let e = err_of(Model::load(&mlp(), &shapes(&["x=1,4,1"]), &[]));
    assert!(e.contains("has 3 dims") && e.contains("[batch, 4]"), "{e}");
    let e = err_of(Model::load(&mlp(), &shapes(&["x=1,5"]), &[]));
    assert!(e.contains("fixes it to 4"), "{e}");
}

#[test]
fn unsupported_operator() {
    let g = graph(
        vec![node("FrobnicateX", &["x"], &["y"])],
        vec![value_info("x", FLOAT, Some(&["2"]))],
        vec![value_info("y", FLOAT, None)],
        vec![],
    );
    let e = err_of(Model::load(
        &encode(&model_proto(g)),
        &InputShapes::new(),
        &[],
    ));
    assert!(
        e.starts_with("tract cannot run this model") && e.contains("FrobnicateX"),
        "{e}"
    );
}

#[test]
fn local_function_is_refused() {
    let g = graph(
        vec![pb::NodeProto {
            domain: "local".into(),
            ..node("MyFn", &["x"], &["y"])
        }],
        vec![value_info("x", FLOAT, Some(&["2"]))],
        vec![value_info("y", FLOAT, None)],
        vec![],
    );
    let mut p = model_proto(g);
    p.functions.push(pb::FunctionProto {
        name: Some("MyFn".into()),
        domain: Some("local".into()),
        input: vec!["a".into()],
        output: vec!["b".into()],
        node: vec![node("Relu", &["a"], &["b"])],
        ..Default::default()
    });
    let e = err_of(Model::load(&encode(&p), &InputShapes::new(), &[]));
    assert!(
        e.contains("local functions (MyFn)") && e.contains("inline"),
        "{e}"
    );
}

#[test]
fn external_data_needs_a_directory() {
    let g = graph(
        vec![node("Add", &["x", "W"], &["y"])],
        vec![value_info("x", FLOAT, Some(&["2"]))],
        vec![value_info("y", FLOAT, None)],
        vec![pb::TensorProto {
            name: "W".into(),
            dims: vec![2],
            data_type: FLOAT,
            data_location: Some(pb::tensor_proto::DataLocation::External as i32),
            external_data: vec![pb::StringStringEntryProto {
                key: "location".into(),
                value: "w.bin".into(),
            }],
            ..Default::default()
        }],
    );
    let bytes = encode(&model_proto(g));
    let e = err_of(Model::load(&bytes, &InputShapes::new(), &[]));
    assert!(e.contains("external data"), "{e}");
    // with a directory, the data is read from it
    let dir = std::env::temp_dir().join(format!("rt-ext-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let w: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(dir.join("w.bin"), w).unwrap();
    let m = Model::load_with_dir(&bytes, Some(&dir), &InputShapes::new(), &[]).unwrap();
    let s = Sample::new("t").with("x", Tensor::from_f32(&[2], &[1.0, 1.0]).unwrap());
    let y = m.run(&s).unwrap().get("y").unwrap().to_f32_vec().unwrap();
    assert_eq!(y, vec![2.5, -1.0]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn symbolic_dim_set_to_one_is_reported_when_typing_fails() {
    // Reshape [batch, 4] -> [2, 4]: only batch = 2 works.
    let g = graph(
        vec![node("Reshape", &["x", "s"], &["y"])],
        vec![value_info("x", FLOAT, Some(&["batch", "4"]))],
        vec![value_info("y", FLOAT, Some(&["2", "4"]))],
        vec![i64_tensor("s", &[2], &[2, 4])],
    );
    let bytes = encode(&model_proto(g));
    let e = err_of(Model::load(&bytes, &InputShapes::new(), &[]));
    assert!(e.starts_with("tract cannot run this model"), "{e}");
    assert!(
        e.contains("x[0] (batch)") && e.contains("--input-shape"),
        "{e}"
    );
    let m = Model::load(&bytes, &shapes(&["x=2,4"]), &[]).unwrap();
    assert_eq!(m.inputs()[0].shape, vec![2, 4]);
}

#[test]
fn if_with_branches_of_different_shapes() {
    let branch = |name: &str, data: &[f32]| pb::GraphProto {
        name: name.into(),
        node: vec![pb::NodeProto {
            attribute: vec![pb::AttributeProto {
                name: "value".into(),
                r#type: 4,
                t: Some(f32_tensor("", &[data.len() as i64], data)),
                ..Default::default()
            }],
            ..node("Constant", &[], &[&format!("{name}_out")])
        }],
        output: vec![value_info(&format!("{name}_out"), FLOAT, None)],
        ..Default::default()
    };
    let g = graph(
        vec![pb::NodeProto {
            attribute: vec![
                pb::AttributeProto {
                    name: "then_branch".into(),
                    r#type: 5,
                    g: Some(branch("then", &[1.0, 2.0])),
                    ..Default::default()
                },
                pb::AttributeProto {
                    name: "else_branch".into(),
                    r#type: 5,
                    g: Some(branch("else", &[1.0, 2.0, 3.0])),
                    ..Default::default()
                },
            ],
            ..node("If", &["c"], &["y"])
        }],
        vec![value_info("c", BOOL, Some(&[]))],
        vec![value_info("y", FLOAT, None)],
        vec![],
    );
    let r = Model::load(&encode(&model_proto(g)), &InputShapes::new(), &[]);
    match r {
        Err(e) => {
            assert_eq!(refusal(&e), Some(Refusal::TractCannotRun), "{e:#}");
            eprintln!("If with different branch shapes: {e:#}");
        }
        Ok(m) => {
            // if tract ever learns this, both branches must at least run
            for seed in 0..4 {
                m.run(&Sample::random(m.inputs(), seed).unwrap()).unwrap();
            }
        }
    }
}

#[test]
fn int_inputs_and_gather() {
    // embedding lookup: y = E[ids], ids: [1, 6] int64 in [0, 10)
    let e: Vec<f32> = (0..20).map(|i| i as f32).collect();
    let g = graph(
        vec![node("Gather", &["E", "ids"], &["y"])],
        vec![value_info("ids", INT64, Some(&["1", "6"]))],
        vec![value_info("y", FLOAT, Some(&["1", "6", "2"]))],
        vec![f32_tensor("E", &[10, 2], &e)],
    );
    let m = Model::load(&encode(&model_proto(g)), &InputShapes::new(), &[]).unwrap();
    assert_eq!(m.inputs()[0].elem_type, ElemType::I64);
    let s = Sample::random(m.inputs(), 3).unwrap();
    let ids = s.get("ids").unwrap().to_f32_vec().unwrap();
    assert!(ids
        .iter()
        .all(|&i| (0.0..10.0).contains(&i) && i.fract() == 0.0));
    let y = m.run(&s).unwrap().get("y").unwrap().to_f32_vec().unwrap();
    for (k, id) in ids.iter().enumerate() {
        assert_eq!(y[2 * k], 2.0 * id);
        assert_eq!(y[2 * k + 1], 2.0 * id + 1.0);
    }
}

#[test]
fn run_checks_the_sample() {
    let m = Model::load(&mlp(), &InputShapes::new(), &[]).unwrap();
    let e = err_of(m.run(&Sample::new("empty")));
    assert!(e.contains("\"x\" is missing"), "{e}");
    let s = Sample::new("wrong-type").with("x", Tensor::from_i64(&[1, 4], &[1; 4]).unwrap());
    let e = err_of(m.run(&s));
    assert!(
        e.contains("expected float32, got int64") && e.contains("wrong-type"),
        "{e}"
    );
    let s = Sample::new("wrong-shape").with("x", Tensor::from_f32(&[2, 4], &[0.0; 8]).unwrap());
    let e = err_of(m.run(&s));
    assert!(e.contains("expected shape [1, 4], got [2, 4]"), "{e}");
    assert!(e.contains("--input-shape x=2,4"), "{e}");
    let s = Sample::random(m.inputs(), 0)
        .unwrap()
        .with("extra", Tensor::from_f32(&[1], &[0.0]).unwrap());
    let e = err_of(m.run(&s));
    assert!(e.contains("\"extra\" is not an input"), "{e}");
}

#[test]
fn model_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Model>();
    check::<Sample>();
    check::<Outputs>();
}
