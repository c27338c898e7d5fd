use super::*;
use crate::ir::verify::verify;

/// Every model the repo has: generated ones, and the real-model suite once fetched.
pub(crate) fn suite_files() -> Vec<PathBuf> {
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
            ..SaveOptions::default()
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

    // A FIFO would block the read forever: refused as not a regular file.
    let fifo = dir.path().join("fifo.data");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let bytes = tiny_model_bytes(|m| {
        let t = &mut m.graph.as_mut().unwrap().initializer[0];
        t.float_data.clear();
        t.data_location = Some(1);
        t.external_data = vec![proto::StringStringEntryProto {
            key: Some("location".into()),
            value: Some("fifo.data".into()),
        }];
    });
    let err = format!(
        "{:#}",
        decode(Bytes::from(bytes), Some(dir.path())).unwrap_err()
    );
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn save_refuses_to_replace_a_protected_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = decode(Bytes::from(tiny_model_bytes(|_| {})), None).unwrap();
    let input_data = dir.path().join("out.onnx.data");
    std::fs::write(&input_data, b"the input's weights").unwrap();
    let options = SaveOptions {
        external: Some(ExternalData {
            file_name: None,
            threshold: 1,
        }),
        protect: vec![input_data.clone()],
    };
    let err = format!(
        "{:#}",
        save(&model, &dir.path().join("out.onnx"), &options).unwrap_err()
    );
    assert!(err.contains("which the input model reads"), "{err}");
    assert_eq!(std::fs::read(&input_data).unwrap(), b"the input's weights");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("out.onnx.data")]);
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

/// A model with every field the IR carries opaquely or that tract_onnx::pb
/// drops: node metadata/overload/device configurations, local functions with
/// attribute protos, training info, configuration, non-tensor types,
/// sparse initializers, tensor metadata and segments.
#[test]
fn every_field_survives_the_round_trip() {
    use proto::*;
    let prop = |k: &str, v: &str| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    let float_tensor = |dims: &[i64]| TypeProto {
        denotation: Some("TENSOR".into()),
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(1),
            shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|&d| tensor_shape_proto::Dimension {
                        denotation: Some("DATA_BATCH".into()),
                        value: Some(if d < 0 {
                            tensor_shape_proto::dimension::Value::DimParam("N".into())
                        } else {
                            tensor_shape_proto::dimension::Value::DimValue(d)
                        }),
                    })
                    .collect(),
            }),
        })),
    };
    let seq = TypeProto {
        denotation: None,
        value: Some(type_proto::Value::SequenceType(Box::new(
            type_proto::Sequence {
                elem_type: Some(Box::new(float_tensor(&[-1, 2]))),
            },
        ))),
    };
    let map = TypeProto {
        denotation: None,
        value: Some(type_proto::Value::MapType(Box::new(type_proto::Map {
            key_type: Some(7),
            value_type: Some(Box::new(TypeProto {
                denotation: None,
                value: Some(type_proto::Value::OptionalType(Box::new(
                    type_proto::Optional {
                        elem_type: Some(Box::new(float_tensor(&[3]))),
                    },
                ))),
            })),
        }))),
    };
    let vi = |name: &str, t: TypeProto| ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(t),
        doc_string: Some(format!("doc of {name}")),
        metadata_props: vec![prop("origin", name)],
    };
    let node = NodeProto {
        input: vec!["x".into(), "w".into(), "".into()],
        output: vec!["y".into()],
        name: Some("f".into()),
        op_type: Some("MyFunc".into()),
        domain: Some("local".into()),
        overload: Some("v2".into()),
        attribute: vec![AttributeProto {
            name: Some("alpha".into()),
            r#type: Some(attribute_proto::AttributeType::Float as i32),
            f: Some(0.5),
            doc_string: Some("scale".into()),
            ..Default::default()
        }],
        doc_string: Some("a call".into()),
        metadata_props: vec![prop("pass", "none")],
        device_configurations: vec![NodeDeviceConfigurationProto {
            configuration_id: Some("cfg".into()),
            sharding_spec: vec![],
            pipeline_stage: Some(1),
        }],
    };
    let function = FunctionProto {
        name: Some("MyFunc".into()),
        input: vec!["a".into(), "b".into(), "c".into()],
        output: vec!["o".into()],
        attribute: vec![],
        attribute_proto: vec![AttributeProto {
            name: Some("alpha".into()),
            r#type: Some(attribute_proto::AttributeType::Float as i32),
            f: Some(1.0),
            ..Default::default()
        }],
        node: vec![NodeProto {
            input: vec!["a".into(), "b".into()],
            output: vec!["o".into()],
            op_type: Some("Add".into()),
            ..Default::default()
        }],
        doc_string: Some("fn".into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(18),
        }],
        domain: Some("local".into()),
        overload: Some("v2".into()),
        value_info: vec![vi("o", float_tensor(&[2]))],
        metadata_props: vec![prop("k", "v")],
    };
    let weights = TensorProto {
        dims: vec![2],
        data_type: Some(1),
        segment: Some(tensor_proto::Segment {
            begin: Some(0),
            end: Some(2),
        }),
        raw_data: Some(Bytes::from_static(&[0, 0, 128, 63, 0, 0, 0, 64])),
        name: Some("w".into()),
        doc_string: Some("weights".into()),
        metadata_props: vec![prop("unit", "none")],
        ..Default::default()
    };
    let sparse = SparseTensorProto {
        values: Some(TensorProto {
            dims: vec![1],
            data_type: Some(1),
            float_data: vec![3.0],
            name: Some("sp".into()),
            ..Default::default()
        }),
        indices: Some(TensorProto {
            dims: vec![1],
            data_type: Some(7),
            int64_data: vec![1],
            ..Default::default()
        }),
        dims: vec![4],
    };
    let m = ModelProto {
        ir_version: Some(11),
        opset_import: vec![
            OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(18),
            },
            OperatorSetIdProto {
                domain: Some("local".into()),
                version: Some(1),
            },
        ],
        producer_name: Some("test".into()),
        producer_version: Some("1".into()),
        domain: Some("org.test".into()),
        model_version: Some(3),
        doc_string: Some("all fields".into()),
        graph: Some(GraphProto {
            node: vec![node],
            name: Some("g".into()),
            initializer: vec![weights],
            sparse_initializer: vec![sparse],
            doc_string: Some("graph doc".into()),
            input: vec![
                vi("x", float_tensor(&[-1, 2])),
                vi("s", seq.clone()),
                vi("mp", map),
            ],
            output: vec![vi("y", float_tensor(&[-1, 2])), vi("s", seq)],
            value_info: vec![vi("unrelated", float_tensor(&[1]))],
            quantization_annotation: vec![TensorAnnotation {
                tensor_name: Some("y".into()),
                quant_parameter_tensor_names: vec![prop("SCALE_TENSOR", "w")],
            }],
            metadata_props: vec![prop("graph", "meta")],
        }),
        metadata_props: vec![prop("author", "onnx-opt")],
        training_info: vec![TrainingInfoProto {
            initialization: Some(GraphProto {
                name: Some("init".into()),
                ..Default::default()
            }),
            algorithm: None,
            initialization_binding: vec![prop("w", "w")],
            update_binding: vec![],
        }],
        functions: vec![function],
        configuration: vec![DeviceConfigurationProto {
            name: Some("cfg".into()),
            num_devices: Some(2),
            device: vec!["cpu0".into(), "cpu1".into()],
        }],
    };
    let bytes = m.encode_to_vec();
    let model = decode(Bytes::from(bytes.clone()), None).unwrap();
    verify(&model).unwrap();
    let back = decode_proto(&encode(&model).unwrap()).unwrap();
    assert_eq!(first_difference(&m, &back), None);
    assert_eq!(m, back);
}
