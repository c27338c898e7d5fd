use super::*;
use crate::ir::verify::verify;

/// Every model the repo has: generated ones, and the real-model suite once fetched.
fn suite_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut files: Vec<PathBuf> = ["", "cache"]
        .iter()
        .filter_map(|d| std::fs::read_dir(root.join(d)).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    files.sort();
    files
}

#[test]
fn round_trip_is_lossless_on_every_model() {
    let files = suite_files();
    assert!(!files.is_empty(), "no models found under models/");
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let model = decode(Bytes::from(bytes.clone()), path.parent()).unwrap();
        verify(&model).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        let out = encode(&model).unwrap();
        let diff = first_difference(&decode_proto(&bytes).unwrap(), &decode_proto(&out).unwrap());
        assert!(diff.is_none(), "{}: {}", path.display(), diff.unwrap());
        // Deterministic: encoding again gives the same bytes.
        assert_eq!(
            out,
            encode(&decode(Bytes::from(out.clone()), None).unwrap()).unwrap(),
            "{}",
            path.display()
        );
    }
}

fn tiny_model_bytes(mutate: impl FnOnce(&mut proto::ModelProto)) -> Vec<u8> {
    use proto::*;
    let f32_type = |dims: &[i64]| TypeProto {
        denotation: None,
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(1),
            shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|&d| tensor_shape_proto::Dimension {
                        denotation: None,
                        value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                    })
                    .collect(),
            }),
        })),
    };
    let vi = |name: &str| ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(f32_type(&[2])),
        ..Default::default()
    };
    let mut m = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(GraphProto {
            name: Some("g".into()),
            node: vec![NodeProto {
                input: vec!["x".into(), "w".into()],
                output: vec!["y".into()],
                op_type: Some("Add".into()),
                ..Default::default()
            }],
            initializer: vec![TensorProto {
                name: Some("w".into()),
                dims: vec![2],
                data_type: Some(1),
                float_data: vec![1.0, 2.0],
                ..Default::default()
            }],
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    mutate(&mut m);
    m.encode_to_vec()
}

fn load_err(bytes: Vec<u8>) -> String {
    format!(
        "{:#}",
        decode(Bytes::from(bytes), None)
            .and_then(|m| verify(&m).map(|_| m))
            .unwrap_err()
    )
}

#[test]
fn rejects_corrupt_and_dangling_and_cyclic_models() {
    let good = tiny_model_bytes(|_| {});
    assert!(decode(Bytes::from(good.clone()), None).is_ok());
    assert!(load_err(good[..good.len() / 2].to_vec()).contains("not a valid ONNX protobuf"));
    let dangling =
        tiny_model_bytes(|m| m.graph.as_mut().unwrap().node[0].input[1] = "nowhere".into());
    assert!(load_err(dangling).contains("'nowhere' is used but never defined"));
    let cyclic = tiny_model_bytes(|m| {
        let g = m.graph.as_mut().unwrap();
        g.node[0].input[0] = "z".into();
        g.node.push(proto::NodeProto {
            input: vec!["y".into()],
            output: vec!["z".into()],
            op_type: Some("Relu".into()),
            ..Default::default()
        });
    });
    assert!(load_err(cyclic).contains("cycle"));
    let twice = tiny_model_bytes(|m| m.graph.as_mut().unwrap().node[0].output[0] = "w".into());
    assert!(load_err(twice).contains("defined more than once"));
}

#[test]
fn external_data_round_trip_and_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let model = decode(Bytes::from(tiny_model_bytes(|_| {})), None).unwrap();
    let path = dir.path().join("m.onnx");
    let saved = save(
        &model,
        &path,
        &SaveOptions {
            external: Some(ExternalData {
                file_name: None,
                threshold: 1,
            }),
        },
    )
    .unwrap();
    assert_eq!(
        saved.external_file.as_deref(),
        Some(dir.path().join("m.onnx.data").as_path())
    );
    let back = load(&path).unwrap();
    let w = back.graph.find_value("w").unwrap();
    assert_eq!(
        back.graph.const_tensor(w).unwrap().to_f32().unwrap(),
        vec![1.0, 2.0]
    );

    for (location, expect) in [
        ("/etc/passwd", "absolute"),
        ("../x.data", "leaves the model's folder"),
    ] {
        let bytes = tiny_model_bytes(|m| {
            let t = &mut m.graph.as_mut().unwrap().initializer[0];
            t.float_data.clear();
            t.data_location = Some(1);
            t.external_data = vec![proto::StringStringEntryProto {
                key: Some("location".into()),
                value: Some(location.into()),
            }];
        });
        let err = format!(
            "{:#}",
            decode(Bytes::from(bytes), Some(dir.path())).unwrap_err()
        );
        assert!(err.contains(expect), "{location}: {err}");
    }
    std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link.data")).unwrap();
    let bytes = tiny_model_bytes(|m| {
        let t = &mut m.graph.as_mut().unwrap().initializer[0];
        t.float_data.clear();
        t.data_location = Some(1);
        t.external_data = vec![proto::StringStringEntryProto {
            key: Some("location".into()),
            value: Some("link.data".into()),
        }];
    });
    let err = format!(
        "{:#}",
        decode(Bytes::from(bytes), Some(dir.path())).unwrap_err()
    );
    assert!(err.contains("links outside"), "{err}");
}

/// First differing node / field between two protos, for readable failures.
pub(crate) fn first_difference(a: &proto::ModelProto, b: &proto::ModelProto) -> Option<String> {
    if a == b {
        return None;
    }
    graph_difference(a.graph.as_ref()?, b.graph.as_ref()?, "graph")
        .or(Some("model-level fields".into()))
}

fn graph_difference(ga: &proto::GraphProto, gb: &proto::GraphProto, path: &str) -> Option<String> {
    for (i, (na, nb)) in ga.node.iter().zip(&gb.node).enumerate() {
        if na == nb {
            continue;
        }
        for (x, y) in na.attribute.iter().zip(&nb.attribute) {
            if let (Some(sa), Some(sb)) = (&x.g, &y.g) {
                let sub = format!("{path}.node[{i}].{}", x.name.as_deref().unwrap_or(""));
                if let Some(d) = graph_difference(sa, sb, &sub) {
                    return Some(d);
                }
            }
        }
        return Some(format!("{path}.node[{i}]:\n  {na:?}\nvs\n  {nb:?}"));
    }
    if ga.node.len() != gb.node.len() {
        return Some(format!(
            "{path}: node count {} vs {}",
            ga.node.len(),
            gb.node.len()
        ));
    }
    for (field, eq) in [
        ("initializer", ga.initializer == gb.initializer),
        ("input", ga.input == gb.input),
        ("output", ga.output == gb.output),
        ("value_info", ga.value_info == gb.value_info),
    ] {
        if !eq {
            return Some(format!("{path}.{field}"));
        }
    }
    (ga != gb).then(|| format!("{path}: graph-level fields"))
}
