//! The way out: the input is never touched, and an interrupted write leaves
//! nothing behind.

mod common;

use common::*;
use onnx_opt::onnx::{self, proto as pb, ExternalData, SaveOptions};
use prost::Message;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_output_or_side_file_that_is_an_input_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The input keeps its weights in `out.onnx.data`: exactly the side file
    // `-o out.onnx --external-data` would write.
    let input = d.join("in.onnx");
    let external = ExternalData {
        file_name: Some("out.onnx.data".into()),
        threshold: 1,
    };
    let options = SaveOptions {
        external: Some(external),
        ..SaveOptions::default()
    };
    onnx::save(&load("mlp"), &input, &options).unwrap();
    std::fs::hard_link(&input, d.join("hard.onnx")).unwrap();
    std::os::unix::fs::symlink(&input, d.join("soft.onnx")).unwrap();
    let before: Vec<_> = ["in.onnx", "out.onnx.data"]
        .iter()
        .map(|n| std::fs::read(d.join(n)).unwrap())
        .collect();
    let files = names_in(d);

    for (output, extra, blamed) in [
        ("out.onnx", &["--external-data"][..], "out.onnx.data"),
        ("hard.onnx", &[][..], "hard.onnx"),
        ("soft.onnx", &[][..], "soft.onnx"),
        ("in.onnx", &[][..], "in.onnx"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_onnx-opt"))
            .arg(&input)
            .arg("-o")
            .arg(d.join(output))
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{output}: {err}");
        assert!(err.starts_with("error: ") && err.contains(blamed), "{err}");
        assert!(
            err.contains("the input") && !err.contains("panicked"),
            "{err}"
        );
        let after: Vec<_> = ["in.onnx", "out.onnx.data"]
            .iter()
            .map(|n| std::fs::read(d.join(n)).unwrap())
            .collect();
        assert!(before == after, "{output}: the input's files changed");
        assert_eq!(names_in(d), files, "{output}: files appeared");
    }
}

/// A model of about 32 MB: `y = x + w` with one large weight.
fn large_model(path: &Path) {
    const N: i64 = 8 << 20;
    let value = |name: &str| pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(pb::TensorShapeProto {
                    dim: vec![pb::tensor_shape_proto::Dimension {
                        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(N)),
                        ..Default::default()
                    }],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: Some(8),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(pb::GraphProto {
            name: Some("large".into()),
            node: vec![pb::NodeProto {
                op_type: Some("Add".into()),
                input: vec!["x".into(), "w".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            initializer: vec![pb::TensorProto {
                name: Some("w".into()),
                dims: vec![N],
                data_type: Some(1),
                raw_data: Some(vec![0x3f; 4 * N as usize].into()),
                ..Default::default()
            }],
            input: vec![value("x")],
            output: vec![value("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

#[test]
fn sigint_or_sigterm_mid_write_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.onnx");
    large_model(&input);
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        // The writer pauses once a temporary file is fully written (see
        // ONNX_OPT_TEST_PAUSE_AFTER_TEMP_MS in src/onnx/output.rs), so the
        // signal lands mid-write every time.
        let mut child = Command::new(env!("CARGO_BIN_EXE_onnx-opt"))
            .arg(&input)
            .arg("-o")
            .arg(d.join("out.onnx"))
            .arg("--external-data")
            .env("ONNX_OPT_TEST_PAUSE_AFTER_TEMP_MS", "60000")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("paused with") {
            line.clear();
            let n = stderr.read_line(&mut line).unwrap();
            assert!(n > 0, "the writer ended before pausing");
        }
        let temps: Vec<String> = names_in(d)
            .into_iter()
            .filter(|n| n.contains(".onnx-opt-"))
            .collect();
        assert_eq!(temps.len(), 2, "model and side file temps: {temps:?}");
        let big = temps
            .iter()
            .map(|n| std::fs::metadata(d.join(n)).unwrap().len())
            .max()
            .unwrap();
        assert!(big > 30 << 20, "a full-size temp file: {big} bytes");

        // SAFETY: signalling our own child, which has not been waited for.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code));
        assert_eq!(names_in(d), vec!["in.onnx".to_string()]);
    }
}
