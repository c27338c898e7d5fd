//! Fuzzing in CI: a small fixed budget of seeded mutants (the same mutants
//! on every run, so a failure reproduces) through the five commands of
//! issue 17, and the replay of every input that ever failed
//! (`tests/fuzz/regressions/`). The long campaign is `benches/fuzz.rs`.

mod common;

use common::*;
use onnx_opt::fuzz::{self, Cmd, Outcome, Rng};
use std::path::PathBuf;

/// Mutants per CI run: 200 took 2.6 s in a debug build on a loaded 2-core
/// machine (most mutants are refused on import, which is cheap).
const BUDGET: usize = 2000;

fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = ["cnn", "canon", "subgraph", "transformer"]
        .iter()
        .map(|name| {
            let bytes = std::fs::read(model_path(name)).expect("generated model");
            (name.to_string(), bytes)
        })
        .collect();
    seeds.extend(fuzz::seeds::generated().expect("generated seeds"));
    seeds
}

fn regressions() -> Vec<PathBuf> {
    let dir = repo().join("tests/fuzz/regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fuzz/regressions")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    files
}

/// Keeps a failing input where a developer can copy it into the regressions.
fn keep(bytes: &[u8], tag: &str) -> PathBuf {
    let dir = repo().join("target/fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{tag}.onnx"));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn seeded_mutants_never_panic_nor_write_an_invalid_model() {
    let seeds = seeds();
    let mut counts = fuzz::Counts::default();
    let mut failures = vec![];
    for i in 0..BUDGET {
        let mut rng = Rng::new(0x17 + i as u64);
        let (name, seed) = &seeds[i % seeds.len()];
        let mutant = fuzz::mutate(seed, &mut rng);
        let cmd = Cmd::ALL[(i / seeds.len()) % Cmd::ALL.len()];
        let outcome = fuzz::run(&mutant, cmd);
        counts.add(&outcome);
        if outcome.is_failure() {
            let path = keep(&mutant, &format!("{name}-{i}"));
            failures.push(format!("{} {cmd:?}: {outcome:?}", path.display()));
        }
        // Not a failure (the panic was caught and reported), but worth a look.
        if matches!(
            &outcome,
            Outcome::Refused {
                tract_panicked: true,
                ..
            }
        ) {
            keep(&mutant, &format!("tract-panic-{name}-{i}-{cmd:?}"));
        }
    }
    eprintln!("{counts:?}");
    assert!(failures.is_empty(), "{counts:?}\n{}", failures.join("\n"));
    // The budget must reach past validation, or it tests little.
    assert!(counts.written > BUDGET / 10, "{counts:?}");
    assert!(counts.refused > BUDGET / 10, "{counts:?}");
}

#[test]
fn every_kept_regression_is_refused_or_handled() {
    let files = regressions();
    assert!(files.len() >= 10, "regressions missing: {files:?}");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for cmd in Cmd::ALL {
            let outcome = fuzz::run(&bytes, cmd);
            assert!(
                !outcome.is_failure(),
                "{} {cmd:?}: {outcome:?}",
                file.display()
            );
            if let Outcome::Refused { message, .. } = &outcome {
                assert!(!message.contains("a bug: please report it"), "{message}");
            }
            // Found by onnx's checker refusing what we wrote: now refused
            // on import, as the user's model at fault.
            let name = file.file_name().unwrap().to_string_lossy();
            if name.starts_with("checker-") {
                assert!(
                    matches!(&outcome, Outcome::Refused { message, .. }
                        if message.contains("the input model is not valid ONNX")),
                    "{name} {cmd:?}: {outcome:?}"
                );
            }
        }
    }
}

#[test]
fn mutants_are_deterministic() {
    let (_, seed) = &seeds()[0];
    let a = fuzz::mutate(seed, &mut Rng::new(42));
    let b = fuzz::mutate(seed, &mut Rng::new(42));
    assert_eq!(a, b);
    assert_ne!(&a, seed);
}
