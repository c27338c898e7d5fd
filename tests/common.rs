//! Shared helpers of the integration tests.
#![allow(dead_code)]

use onnx_opt::ir::Model;
use onnx_opt::pipeline::Pipeline;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn model_path(name: &str) -> PathBuf {
    let generated = repo().join("models").join(format!("{name}.onnx"));
    if generated.exists() {
        generated
    } else {
        repo().join("models/cache").join(format!("{name}.onnx"))
    }
}

pub fn load(name: &str) -> Model {
    onnx_opt::onnx::load(&model_path(name)).unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

pub fn run(model: &mut Model, passes: &str) {
    Pipeline::parse(passes)
        .unwrap()
        .run(model, &Default::default(), &mut |_| {})
        .unwrap_or_else(|e| panic!("{passes}: {e:#}"));
}

/// The real-model suite but its held-out models: (name, tract can run it,
/// input shapes to pin).
pub fn suite() -> Vec<(String, bool, Vec<String>)> {
    let text =
        std::fs::read_to_string(repo().join("models/suite.json")).expect("models/suite.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("suite.json parses");
    let models = json["models"].as_array().expect("suite.json has models[]");
    models
        .iter()
        // Held-out models are for a final check, never for tests.
        .filter(|m| !m["holdout"].as_bool().unwrap_or(false))
        .map(|m| {
            let shapes = m["input_shapes"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            let dims: Vec<String> = v
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|d| d.to_string())
                                .collect();
                            format!("{k}={}", dims.join(","))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                m["name"].as_str().unwrap().to_string(),
                m["tract_runs"].as_bool().unwrap_or(false),
                shapes,
            )
        })
        .collect()
}

/// Fails loudly when the suite has not been fetched: `scripts/test` fetches it.
pub fn require_suite() {
    for (name, ..) in suite() {
        assert!(
            model_path(&name).exists(),
            "suite model {name} missing: run `python models/fetch.py` (scripts/test does)"
        );
    }
}

/// Runs the onnx-opt binary with `args`.
pub fn onnx_opt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onnx-opt"))
        .args(args)
        .output()
        .expect("runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the onnx-opt binary on the model `model` with `passes` and `extra`
/// arguments, writing `out.onnx` and the report `r.json` into `dir`, which
/// must succeed: the run and its report.
pub fn run_reported(
    model: &str,
    dir: &Path,
    passes: &str,
    extra: &[&str],
) -> (Output, serde_json::Value) {
    let (out, report) = (dir.join("out.onnx"), dir.join("r.json"));
    let input = model_path(model);
    let mut args = vec![
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--passes",
        passes,
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend(extra);
    let o = onnx_opt(&args);
    assert!(o.status.success(), "{model} {extra:?}: {}", stderr(&o));
    assert!(out.exists());
    let r = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    (o, r)
}

/// A `.npy` (version 1.0, C order) of `descr` ('<f4', '<i8', ...) holding `data`.
pub fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    onnx_opt::data::npy::write(descr, false, shape, data)
}

/// Seeded floats in [-1, 1) as little-endian f32 bytes (a tiny LCG: the
/// values only need to be varied and reproducible).
pub fn floats(shape: &[usize], seed: u64) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .flat_map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0).to_le_bytes()
        })
        .collect()
}

pub fn f32_npy(path: &Path, shape: &[usize], seed: u64) {
    std::fs::write(path, npy("<f4", shape, &floats(shape, seed))).unwrap();
}
