//! Issue 17, the input side: each hostile model the issue reports, run
//! through the binary as a user would. Every one must end in one `error:`
//! line naming the node (or input, initializer) and the broken rule, exit 1,
//! nothing written, no panic, and never "a bug: please report it".

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// (regression file, what the error must say).
const CASES: &[(&str, &str)] = &[
    (
        "input-dim-2e40",
        "graph input 'x': dims [1099511627776, 4] make more than",
    ),
    (
        "input-dim-2e62",
        "graph input 'x': dims [4611686018427387904, 4]",
    ),
    (
        "flatten-axis-100",
        "node 'y' (Flatten): axis=100 is outside [-4, 4]",
    ),
    (
        "flatten-axis-100-untyped",
        "node 'y' (Flatten): axis=100 is outside [-64, 64]",
    ),
    (
        "flatten-no-input",
        "node 'f' (Flatten): has 0 inputs, ONNX allows 1",
    ),
    (
        "reducemean-axes-2e40",
        "node 'y' (ReduceMean): axes=[1099511627776]",
    ),
    (
        "if-empty-else",
        "node 'y' (If): else_branch produces 0 values",
    ),
    (
        "maxpool-strides-0",
        "node 'y' (MaxPool): strides=[0, 0]: every entry must be > 0",
    ),
    (
        "conv-strides-0",
        "node 'y' (Conv): strides=[0, 0]: every entry must be > 0",
    ),
    (
        "string-initializer-raw-bytes",
        "initializer 'names': a STRING tensor holds raw bytes",
    ),
    (
        "constantofshape-2e31",
        "node 'k' (ConstantOfShape): its shape input: dims [2147483648]",
    ),
    (
        "expand-2e31",
        "node 'y' (Expand): its shape input: dims [2147483648]",
    ),
    (
        "matmul-52-inputs",
        "node 'y' (MatMul): has 52 inputs, ONNX allows 2",
    ),
    (
        "constant-2e31-floats-no-data",
        "node 'k' (Constant): attribute value: dims [2147483648]",
    ),
    // Found by fuzzing: both made tract panic before validation caught them.
    (
        "found-maxpool-omitted-input",
        "node 'p' (MaxPool): input 0 is required but omitted",
    ),
    (
        "found-scan-inputs",
        "node 'scan' (Scan): num_scan_inputs=3 must be in [1, 2]",
    ),
    // What onnx's full checker refuses, by the schema at the model's opset.
    (
        "relu-int64",
        "node 'y' (Relu): input 0 'x' is i64, which Relu-13 does not allow \
         (T is one of: f32 f16 f64 bf16)",
    ),
    (
        "add-float-double",
        "node 'y' (Add): input 1 'half' is f64 but input 0 'x' is f32: both are T",
    ),
    (
        "shape-into-relu",
        "node 'y' (Relu): input 0 's' is i64, which Relu-13 does not allow",
    ),
    (
        "relu-output-declared-int64",
        "node 'y' (Relu): output 0 'y' is declared i64, but Relu-13 makes it f32",
    ),
    (
        "unknown-default-op",
        "node 'y' (RdduceMean): ai.onnx has no operator RdduceMean",
    ),
    (
        "resize-at-opset-7",
        "node 'y' (Resize): Resize does not exist at opset 7: ONNX defines it from opset 10",
    ),
    (
        "upsample-at-opset-10",
        "node 'y' (Upsample): Upsample is deprecated from opset 10",
    ),
    (
        "opset-0",
        "opset_import: ai.onnx version 0: opset versions start at 1",
    ),
    (
        "add-axis-at-opset-13",
        "node 'y' (Add): attribute axis is not one ONNX defines for Add at opset 13",
    ),
    (
        "concat-without-axis",
        "node 'y' (Concat): attribute axis is required",
    ),
    (
        "input-without-element-type",
        "graph input 'x': its tensor type has no element type",
    ),
    (
        "batch-64-declared-1",
        "node 'y' (Gemm): output 0 'y' is declared [1, 5], but its inputs make it [64, 5]",
    ),
    (
        "add-does-not-broadcast",
        "node 'y' (Add): its inputs' dims [2, 3] and [5] do not broadcast",
    ),
];

fn regression(name: &str) -> String {
    let p = repo().join(format!("tests/fuzz/regressions/{name}.onnx"));
    p.to_str().unwrap().to_string()
}

#[test]
fn each_hostile_model_is_refused_naming_the_node_and_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let out = out.to_str().unwrap();
    for (name, expect) in CASES {
        for passes in [
            &["--passes", "fuse", "--verify"][..],
            &["--passes", "fuse,quant"],
        ] {
            let input = regression(name);
            let o = onnx_opt(&[&[input.as_str(), "-o", out][..], passes].concat());
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{name} {passes:?}: {err}");
            let last = err.trim_end().lines().last().unwrap_or_default();
            assert!(
                last.starts_with("error: the input model is not valid ONNX: "),
                "{name}: {err}"
            );
            assert!(
                last.contains(expect),
                "{name}: expected '{expect}' in {err}"
            );
            assert!(
                !err.contains("panicked") && !err.contains("please report"),
                "{err}"
            );
            assert!(!Path::new(out).exists(), "{name}: an output was written");
        }
    }
}

/// `fuse,quant` on a model tract cannot run, without ONNX Runtime to
/// calibrate in instead: quant's own complaint (no calibration samples)
/// carries the first cause, tract's refusal.
#[test]
fn the_final_error_carries_the_first_cause() {
    require_suite();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let input = model_path("silero-vad");
    let o = Command::new(env!("CARGO_BIN_EXE_onnx-opt"))
        .args([
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--passes",
            "fuse,quant",
        ])
        .env("ORT_DYLIB_PATH", dir.path().join("no-onnxruntime.so"))
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let error: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(error.len(), 1, "{err}");
    assert!(
        error[0].contains(
            "pass quant: quant needs calibration samples (the CLI provides --inputs or random \
             ones), because no data could be made: calibration data: tract cannot run this model"
        ),
        "{err}"
    );
    assert!(!out.exists());
}

/// Validation refuses no real model: the generated ones and the fetched suite.
#[test]
fn every_model_of_the_suite_is_valid() {
    require_suite();
    let generated = ["cnn", "mlp", "transformer", "canon", "subgraph"];
    let suite: Vec<String> = suite().into_iter().map(|(name, ..)| name).collect();
    for name in generated.iter().map(|s| s.to_string()).chain(suite) {
        let model = load(&name);
        if let Err(e) = onnx_opt::validate::validate(&model) {
            panic!("{name}: {e}");
        }
    }
}
