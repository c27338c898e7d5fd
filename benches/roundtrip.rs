//! Speed and memory targets of the ONNX foundation (`cargo bench --bench roundtrip`).
//!
//! A round trip (`--passes ''`) is the floor every optimisation pays, so it must
//! cost little more than protobuf itself and never hold many copies of the weights:
//!
//! 1. On a generated ~100 MB MLP (6 × MatMul+Add(+Relu), 2048×2048 f32 weights
//!    as `raw_data` initializers, opset 13, input `x` [N,2048]), the library
//!    round trip as the CLI runs it (load file + verify + empty pipeline + save
//!    file) takes ≤ 2× a bare prost decode + encode of the same bytes in memory.
//!    The real binary's wall time is printed for information.
//! 2. The real binary's peak RSS over that round trip is < 2.5× the file size
//!    (the mapped input, which the weights share, plus the mapped output is 2×).
//! 3. Every model in `models/` and `models/cache/` round-trips in < 1 s.
//!
//! Files are kept in /dev/shm when the machine has it, so that (b) measures
//! onnx-opt rather than the disk. Times are medians of 7 runs after a warm-up. The model is written by a child
//! process and the binary runs before anything big is loaded here, because on
//! Linux a child's peak RSS includes its parent's at spawn time.
//! Prints each figure with its target and PASS/FAIL; exits non-zero on a FAIL.

use bytes::Bytes;
use onnx_opt::ir::verify::verify;
use onnx_opt::onnx::{self, proto as pb, SaveOptions};
use onnx_opt::pipeline::Pipeline;
use prost::Message;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

const RUNS: usize = 7;
const WIDTH: usize = 2048;
const LAYERS: usize = 6;
const MB: f64 = 1e6;

/// Set on the child that writes the model, so this process never holds it.
const WRITE_MODEL: &str = "ROUNDTRIP_BENCH_WRITE_MODEL";

fn main() -> ExitCode {
    if let Some(path) = std::env::var_os(WRITE_MODEL) {
        std::fs::write(path, mlp(LAYERS, WIDTH).encode_to_vec()).expect("write the model");
        return ExitCode::SUCCESS;
    }
    // Files live in RAM (/dev/shm) where there is one: the target is about
    // onnx-opt's cost against protobuf's, and (a) touches no disk. On this
    // project's machines a plain 100 MB write to disk takes ~280 ms, several
    // times all of (a), which would make the ratio measure the disk.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("temp dir");
    let (big, out) = (dir.path().join("mlp.onnx"), dir.path().join("out.onnx"));
    let status = Command::new(std::env::current_exe().expect("own path"))
        .env(WRITE_MODEL, &big)
        .status()
        .expect("run the model writer");
    assert!(status.success(), "writing the model failed");
    let size = std::fs::metadata(&big).expect("model file").len() as f64;
    println!(
        "model: {LAYERS} x MatMul+Add(+Relu) {WIDTH}x{WIDTH} f32, {:.1} MB, in {}",
        size / MB,
        dir.path().display()
    );
    let mut report = Report::default();

    // The real binary first: a child inherits this process's peak RSS through
    // exec on Linux, so it must run while this process is still small.
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_onnx-opt"));
    if exe.exists() {
        let cli = || run_cli(&exe, &big, &out);
        cli();
        let runs: Vec<(f64, f64)> = (0..RUNS).map(|_| cli()).collect();
        let wall = median(runs.iter().map(|r| r.0).collect());
        let peak = runs.iter().map(|r| r.1).fold(0.0, f64::max);
        report.info("onnx-opt binary, end to end (info)", ms(wall));
        report.check(
            "onnx-opt peak RSS / file size",
            format!("{:.0} MB = {:.2}x", peak / MB, peak / size),
            "< 2.5x",
            peak < 2.5 * size,
        );
    } else {
        let build = "build it with `cargo build --release`";
        println!("{} is missing: {build}", exe.display());
        report.failed = true;
    }

    // The library round trip against bare prost, runs interleaved.
    let bytes = Bytes::from(std::fs::read(&big).expect("read the model"));
    let prost_rt = || {
        let m = pb::ModelProto::decode(bytes.clone()).expect("decode");
        black_box(m.encode_to_vec());
    };
    let ours = || round_trip(&big, &out).expect("round trip");
    prost_rt();
    ours();
    let (mut a, mut b) = (vec![], vec![]);
    for _ in 0..RUNS {
        a.push(seconds(prost_rt));
        b.push(seconds(ours));
    }
    let (a, b) = (median(a), median(b));
    report.info("(a) prost decode + encode, in memory", ms(a));
    report.info("(b) load + verify + pipeline + save", ms(b));
    report.check("(b) / (a)", format!("{:.2}x", b / a), "<= 2x", b <= 2.0 * a);

    // Every stored model.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for folder in [root.clone(), root.join("cache")] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .collect();
        files.sort();
        if files.is_empty() {
            println!(
                "{}: no models (not fetched? run models/fetch.py): skipped",
                folder.display()
            );
        }
        for file in files {
            let name = file
                .strip_prefix(&root)
                .unwrap_or(&file)
                .display()
                .to_string();
            let mb = std::fs::metadata(&file).map_or(0.0, |m| m.len() as f64 / MB);
            let label = format!("{name} ({mb:.1} MB)");
            // The first run is the warm-up and catches errors.
            match round_trip(&file, &out) {
                Ok(()) => {
                    let t = median(
                        (0..RUNS)
                            .map(|_| seconds(|| round_trip(&file, &out).expect("round trip")))
                            .collect(),
                    );
                    report.check(&label, ms(t), "< 1 s", t < 1.0);
                }
                Err(e) => report.check(&label, format!("error: {e:#}"), "< 1 s", false),
            }
        }
    }

    if report.failed {
        println!("FAIL");
        ExitCode::FAILURE
    } else {
        println!("all targets met");
        ExitCode::SUCCESS
    }
}

/// What `onnx-opt IN -o OUT --passes ''` does, minus argument parsing and the report.
fn round_trip(input: &Path, output: &Path) -> anyhow::Result<()> {
    let mut model = onnx::load(input)?;
    verify(&model)?;
    Pipeline::parse("")?.run(&mut model, &Default::default(), &mut |_| {})?;
    onnx::save(&model, output, &SaveOptions::default())?;
    Ok(())
}

/// The MLP `x` [N,WIDTH] -> `y` [N,WIDTH]; weights from a fixed-seed xorshift.
fn mlp(layers: usize, width: usize) -> pb::ModelProto {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let scale = 1.0 / (width as f32).sqrt();
    let mut tensor = |name: String, dims: Vec<i64>| {
        let n: i64 = dims.iter().product();
        let raw: Vec<u8> = (0..n)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let unit = (state >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
                ((unit * 2.0 - 1.0) * scale).to_le_bytes()
            })
            .collect();
        pb::TensorProto {
            name: Some(name),
            dims,
            data_type: Some(pb::tensor_proto::DataType::Float as i32),
            raw_data: Some(Bytes::from(raw)),
            ..Default::default()
        }
    };
    let node = |op: &str, inputs: [&str; 2], output: &str| pb::NodeProto {
        op_type: Some(op.into()),
        name: Some(output.into()),
        input: inputs
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string())
            .collect(),
        output: vec![output.into()],
        ..Default::default()
    };
    let mut graph = pb::GraphProto {
        name: Some("mlp".into()),
        input: vec![value_info("x")],
        output: vec![value_info("y")],
        ..Default::default()
    };
    let mut x = "x".to_string();
    for l in 0..layers {
        let (w, b) = (format!("w{l}"), format!("b{l}"));
        graph
            .initializer
            .push(tensor(w.clone(), vec![width as i64; 2]));
        graph
            .initializer
            .push(tensor(b.clone(), vec![width as i64]));
        let last = l + 1 == layers;
        let (mm, add) = (
            format!("mm{l}"),
            if last { "y".into() } else { format!("add{l}") },
        );
        graph.node.push(node("MatMul", [&x, &w], &mm));
        graph.node.push(node("Add", [&mm, &b], &add));
        x = add;
        if !last {
            let relu = format!("relu{l}");
            graph.node.push(node("Relu", [&x, ""], &relu));
            x = relu;
        }
    }
    pb::ModelProto {
        ir_version: Some(8),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        producer_name: Some("onnx-opt bench".into()),
        graph: Some(graph),
        ..Default::default()
    }
}

/// A float tensor [N, WIDTH].
fn value_info(name: &str) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = |v| Dimension {
        value: Some(v),
        ..Default::default()
    };
    pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: Some(pb::tensor_proto::DataType::Float as i32),
                shape: Some(pb::TensorShapeProto {
                    dim: vec![
                        dim(Value::DimParam("N".into())),
                        dim(Value::DimValue(WIDTH as i64)),
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs `onnx-opt IN -o OUT --passes ''`; returns its wall time (s) and peak RSS (bytes).
fn run_cli(exe: &Path, input: &Path, output: &Path) -> (f64, f64) {
    let start = Instant::now();
    #[allow(clippy::zombie_processes)] // reaped by wait4 below, for its rusage
    let child = Command::new(exe)
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["--passes", ""])
        .stdout(Stdio::null())
        .spawn()
        .expect("run onnx-opt");
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: wait4 reaps our own child and writes into the two locals.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = start.elapsed().as_secs_f64();
    assert!(
        pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "onnx-opt failed"
    );
    (wall, usage.ru_maxrss as f64 * 1024.0) // ru_maxrss is in KiB on Linux
}

fn seconds(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1e3)
}

#[derive(Default)]
struct Report {
    failed: bool,
}

impl Report {
    fn info(&self, what: &str, value: String) {
        println!("{what:<44} {value:>22}");
    }

    fn check(&mut self, what: &str, value: String, target: &str, ok: bool) {
        self.failed |= !ok;
        let verdict = if ok { "PASS" } else { "FAIL" };
        println!("{what:<44} {value:>22}  target {target:<6} {verdict}");
    }
}
