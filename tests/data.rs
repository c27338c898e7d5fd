//! Data in the forms users keep it, through the command: batched arrays,
//! folders of arrays of different shapes (no `--input-shape`), folders of
//! images with a preprocessing spec, labels, `--holdout`; and every kind
//! of bad data refused with one line, exit 1, nothing written.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn npz(path: &Path, arrays: &[(&str, Vec<u8>)]) {
    use std::io::Write;
    let mut w = npyz::npz::NpzWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in arrays {
        let zw = w.zip_writer();
        zw.start_file(format!("{name}.npy"), Default::default())
            .unwrap();
        zw.write_all(bytes).unwrap();
    }
    w.zip_writer().finish().unwrap();
}

/// Runs `model` round trip (or `passes`) with --verify and a report;
/// returns the report.
fn run_ok(model: &str, dir: &Path, passes: &str, extra: &[&str]) -> Value {
    run_reported(model, dir, passes, &[&["--verify"], extra].concat()).1
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_batched_npy_is_n_samples_read_memory_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("batch.npy");
    f32_npy(&data, &[6, 3, 32, 32], 1);
    let r = run_ok("cnn", dir.path(), "fuse", &["--inputs", s(&data)]);
    assert_eq!(r["verify"]["samples"], 6);
    assert_eq!(r["verify"]["ok"], true);
    let how = r["verify"]["inputs"].as_str().unwrap();
    assert!(how.contains("batched .npy, memory-mapped"), "{how}");
}

#[test]
fn a_batched_npz_is_n_samples_and_a_fixed_batch_takes_n_over_b_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("batch.npz");
    npz(
        &data,
        &[("x", npy("<f4", &[4, 256], &floats(&[4, 256], 2)))],
    );
    let r = run_ok("mlp", dir.path(), "", &["--inputs", s(&data)]);
    assert_eq!(r["verify"]["samples"], 4);
    // subgraph.onnx takes x[4, 8]: 12 rows are 3 runs
    let rows = dir.path().join("rows.npy");
    f32_npy(&rows, &[12, 8], 3);
    let r = run_ok("subgraph", dir.path(), "", &["--inputs", s(&rows)]);
    assert_eq!(r["verify"]["samples"], 3);
}

/// The suite's symbolic-dim models with a folder of `.npy` of different
/// sizes and no --input-shape: each shape is a group, each group runs.
#[test]
fn ppocr_takes_its_shapes_from_a_folder_of_npy() {
    for (model, shapes) in [
        (
            "ppocr-rec",
            [[1, 3, 48, 160], [1, 3, 48, 320], [1, 3, 48, 160]],
        ),
        (
            "ppocr-det",
            [[1, 3, 64, 64], [1, 3, 96, 64], [1, 3, 64, 64]],
        ),
    ] {
        if !model_path(model).exists() {
            panic!("{model} is missing: run scripts/test (it fetches the suite)");
        }
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("calib");
        std::fs::create_dir(&folder).unwrap();
        for (k, shape) in shapes.iter().enumerate() {
            f32_npy(&folder.join(format!("line{k}.npy")), shape, k as u64);
        }
        let r = run_ok(
            model,
            dir.path(),
            "",
            &["--inputs", s(&folder), "--bench", "--runs", "2"],
        );
        assert_eq!(r["verify"]["samples"], 3, "{model}");
        assert_eq!(r["verify"]["groups"], 2, "{model}");
        assert!(r["bench"]["speedup"].as_f64().is_some(), "{model}");
        let how = r["verify"]["inputs"].as_str().unwrap();
        assert!(how.contains("2 shapes"), "{how}");
    }
}

/// Tiny images: a horizontal gradient in red, written by the `image` crate.
#[cfg(feature = "images")]
fn images(folder: &Path, names: &[&str]) {
    std::fs::create_dir_all(folder).unwrap();
    for (k, name) in names.iter().enumerate() {
        let img = image::RgbImage::from_fn(48, 40, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 6) as u8, (k * 60) as u8])
        });
        img.save(folder.join(name)).unwrap();
    }
}

const IMAGENET: &str = "resize=36,crop=32,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,scale=1/255,layout=nchw,channels=rgb";

#[cfg(feature = "images")]
#[test]
fn a_folder_of_images_with_a_spec_and_csv_labels() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("imgs");
    images(&folder, &["b.png", "a.jpg", "c.png"]);
    std::fs::write(folder.join("notes.txt"), "not an image").unwrap();
    let labels = dir.path().join("labels.csv");
    std::fs::write(&labels, "file,label\nc.png,2\na.jpg,0\nb.png,7\n").unwrap();
    let r = run_ok(
        "cnn",
        dir.path(),
        "fuse",
        &[
            "--inputs",
            s(&folder),
            "--preprocess",
            IMAGENET,
            "--labels",
            s(&labels),
        ],
    );
    assert_eq!(r["verify"]["samples"], 3);
    let spec = r["data"]["preprocess"].as_str().unwrap();
    assert!(
        spec.contains("crop=32x32") && spec.contains("mean=0.485:0.456:0.406"),
        "{spec}"
    );
    let acc = &r["verify"]["accuracy"];
    assert_eq!(acc["before"]["labels"], 3);
    // fuse is exact: the result classifies as the original does
    assert_eq!(acc["before"]["top1"], acc["after"]["top1"]);
    assert!(
        acc["before"]["top5"].as_f64().is_some(),
        "10 classes: top-5 too"
    );
}

#[test]
fn holdout_splits_inputs_so_calibration_and_judgement_share_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("batch.npy");
    f32_npy(&data, &[8, 256], 4);
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "1\n2\n3\n4\n5\n6\n7\n8\n").unwrap();
    let r = run_ok(
        "mlp",
        dir.path(),
        "svd{rank=32,min-params=0}",
        &[
            "--inputs",
            s(&data),
            "--holdout",
            "0.25",
            "--seed",
            "3",
            "--labels",
            s(&labels),
        ],
    );
    assert_eq!(r["verify"]["samples"], 2);
    assert_eq!(r["verify"]["accuracy"]["before"]["labels"], 2);
    let calib = r["data"]["calibration"].as_str().unwrap();
    assert!(
        calib.contains("6 samples") && calib.contains("the rest after --holdout 0.25 seed 3"),
        "{calib}"
    );
    let judged = r["verify"]["inputs"].as_str().unwrap();
    assert!(judged.contains("held out"), "{judged}");
}

/// Each bad input: exit 1, one `error:` line naming the file and what was
/// expected, nothing written.
#[test]
fn bad_data_gets_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out").join("o.onnx");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let f64s = d.join("f64.npy");
    std::fs::write(&f64s, npy("<f8", &[1, 256], &[0; 8 * 256])).unwrap();
    let rank = d.join("rank.npy");
    f32_npy(&rank, &[256], 0);
    let width = d.join("width.npy");
    f32_npy(&width, &[2, 3, 16, 16], 0);
    let key = d.join("key.npz");
    npz(
        &key,
        &[
            ("x", npy("<f4", &[1, 256], &floats(&[1, 256], 0))),
            ("y", npy("<f4", &[1], &[0; 4])),
        ],
    );
    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let broken = d.join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("a.png"), b"not a png at all").unwrap();
    let imgs = d.join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for name in ["a.png", "b.jpg"] {
        std::fs::write(imgs.join(name), b"only the name matters here").unwrap();
    }
    let undecodable = if cfg!(feature = "images") {
        "cannot decode"
    } else {
        "built without image support"
    };
    let batch = d.join("batch.npy");
    f32_npy(&batch, &[4, 256], 0);
    let short = d.join("short.txt");
    std::fs::write(&short, "1\n2\n3\n").unwrap();
    let rows = d.join("rows.npy");
    f32_npy(&rows, &[6, 8], 0);
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "mlp",
            vec!["--inputs", s(&f64s)],
            vec!["f64.npy", "expected float32 [N, 256], got float64"],
        ),
        (
            "mlp",
            vec!["--inputs", s(&rank)],
            vec!["rank.npy", "expected rank 2"],
        ),
        (
            "cnn",
            vec!["--inputs", s(&width)],
            vec![
                "width.npy",
                "expected shape [N, 3, 32, 32], got [1, 3, 16, 16]",
            ],
        ),
        (
            "mlp",
            vec!["--inputs", s(&key)],
            vec!["key.npz", "array \"y\" is not an input"],
        ),
        (
            "mlp",
            vec!["--inputs", s(&empty)],
            vec!["empty", "no .npy or .npz file"],
        ),
        (
            "cnn",
            vec!["--inputs", s(&broken), "--preprocess", IMAGENET],
            vec!["a.png", undecodable],
        ),
        (
            "cnn",
            vec!["--inputs", s(&imgs)],
            vec!["imgs", "give --preprocess"],
        ),
        (
            "cnn",
            vec!["--inputs", s(&imgs), "--preprocess", "resize=x"],
            vec!["--preprocess resize"],
        ),
        (
            "mlp",
            vec!["--inputs", s(&batch), "--labels", s(&short)],
            vec!["short.txt", "3 labels for 4 samples"],
        ),
        (
            "mlp",
            vec!["--inputs", s(&batch), "--holdout", "1.5"],
            vec!["--holdout must be between 0 and 1"],
        ),
        (
            "subgraph",
            vec!["--inputs", s(&rows)],
            vec![
                "rows.npy",
                "6 rows along axis 0 is not a multiple of the model's batch 4",
            ],
        ),
    ];
    for (model, extra, expect) in cases {
        let input = model_path(model);
        let mut args = vec![input.to_str().unwrap(), "-o", s(&out), "--verify"];
        args.extend(extra);
        let o = onnx_opt(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.trim_end().lines().count() == 1,
            "{args:?}: {err}"
        );
        for e in expect {
            assert!(err.contains(e), "{args:?}: expected {e:?} in {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        let left: Vec<PathBuf> = std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
}
