//! The fuzzing campaign of issue 17 (`cargo bench --bench fuzz -- [RUNS] [SPAWN_EVERY] [FIRST_SEED]`).
//!
//! Mutates at least six seed models (the generated ones in `models/`, the
//! fetched suite's smaller models when present, and `fuzz::seeds`), runs
//! each mutant through one of the five commands (`fuse`, `fuse,quant`,
//! `prune-channels`, `svd`, `fuse --verify`) in process, and every
//! SPAWN_EVERY-th mutant also through the real binary, to see signals and
//! exit codes. Written outputs are judged by our own import + verifier +
//! validation, and a sample of them by `onnx.checker` (full check) from
//! `.venv` when it is there. Prints the counts (panics, signals,
//! exit 0 with an invalid model, in-process runs over a minute, ...), the
//! seeds and the time; exits non-zero when a panic, a signal, an invalid
//! written model or such a slow run is found. Failing inputs are kept in
//! `target/fuzz-failures/` (a slow run's while it still runs).

use onnx_opt::fuzz::{self, Cmd, Rng};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Outputs handed to onnx.checker at most (it takes ~20 ms each).
const CHECKER_SAMPLE: usize = 400;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |k: usize, default: u64| args.get(k).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (runs, spawn_every, first) = (arg(0, 10_000) as usize, arg(1, 50) as usize, arg(2, 0));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds = vec![];
    for name in ["cnn", "canon", "subgraph", "transformer", "mlp"] {
        seeds.push((
            name.to_string(),
            read(&repo.join(format!("models/{name}.onnx"))),
        ));
    }
    for name in ["ppocr-cls", "silero-op18-ifless", "magika"] {
        let path = repo.join(format!("models/cache/{name}.onnx"));
        if path.exists() {
            seeds.push((name.to_string(), read(&path)));
        }
    }
    seeds.extend(fuzz::seeds::generated().expect("generated seeds"));
    // Panics inside tract are caught and counted through their errors; the
    // default hook would print each one.
    std::panic::set_hook(Box::new(|_| {}));

    let work = tempfile::tempdir().expect("temp dir");
    let failures = repo.join("target/fuzz-failures");
    std::fs::create_dir_all(&failures).expect("target/fuzz-failures");
    let mut counts = [(); 5].map(|_| fuzz::Counts::default());
    let mut spawned = Spawned::default();
    let mut to_check: Vec<PathBuf> = vec![];
    let start = Instant::now();
    let watchdog = Watchdog::start(failures.clone());
    for i in 0..runs {
        let mut rng = Rng::new(first + i as u64);
        let (name, seed) = &seeds[i % seeds.len()];
        let k = (i / seeds.len()) % Cmd::ALL.len();
        let cmd = Cmd::ALL[k];
        let mutant = fuzz::mutate(seed, &mut rng);
        watchdog.watch(format!("{name}-{}-{cmd:?}", first + i as u64), &mutant);
        let (outcome, written) = fuzz::run_keeping_output(&mutant, cmd);
        watchdog.done();
        counts[k].add(&outcome);
        if outcome.is_failure() {
            let path = failures.join(format!("{name}-{}.onnx", first + i as u64));
            std::fs::write(&path, &mutant).expect("keep failure");
            eprintln!("FAILURE {} {cmd:?}: {outcome:?}", path.display());
        }
        if let (Some(out), true) = (written, to_check.len() < CHECKER_SAMPLE && i % 7 == 0) {
            let path = work.path().join(format!("w{i}.onnx"));
            std::fs::write(&path, out).expect("write output");
            std::fs::write(work.path().join(format!("m{i}.onnx")), &mutant).expect("write");
            to_check.push(path);
        }
        if spawn_every > 0 && i % spawn_every == 0 {
            spawned.run(work.path(), &mutant, cmd, &failures, &format!("{name}-{i}"));
        }
        if (i + 1) % 250 == 0 {
            let sum = |f: fn(&fuzz::Counts) -> usize| counts.iter().map(f).sum::<usize>();
            eprintln!(
                "{} runs, {:.0} s: panics {}, exit 0 invalid {}, binary runs {} (signals {}, \
                 exit 101 {}, invalid {}, timeouts {})",
                i + 1,
                start.elapsed().as_secs_f64(),
                sum(|c| c.panics),
                sum(|c| c.invalid_written),
                spawned.runs,
                spawned.signals,
                spawned.panics,
                spawned.invalid,
                spawned.timeouts
            );
        }
    }
    let elapsed = start.elapsed();
    let checker = onnx_checker(repo, &to_check);
    // Keep what onnx.checker refused, with the mutant it came from.
    for line in checker.iter().flat_map(|(_, bad)| bad) {
        let name = line.split(' ').next().unwrap_or_default();
        let src = work.path().join(name);
        let _ = std::fs::copy(&src, failures.join(format!("checker-{name}")));
        let _ = std::fs::copy(
            work.path().join(name.replacen('w', "m", 1)),
            failures.join(format!("checker-in-{name}")),
        );
    }

    println!(
        "fuzz: {runs} runs from seed {first} in {:.1} s ({:.1} ms/run)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / runs.max(1) as f64
    );
    println!(
        "seeds ({}): {}",
        seeds.len(),
        seeds
            .iter()
            .map(|s| s.0.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{:<16} {:>6} {:>8} {:>8} {:>7} {:>7} {:>14} {:>13}",
        "command", "runs", "refused", "written", "exit2", "panics", "invalid-exit0", "tract-panics"
    );
    let mut total = fuzz::Counts::default();
    for (cmd, c) in Cmd::ALL.iter().zip(&counts) {
        println!(
            "{:<16} {:>6} {:>8} {:>8} {:>7} {:>7} {:>14} {:>13}",
            format!("{cmd:?}"),
            c.runs,
            c.refused,
            c.written,
            c.verify_failed,
            c.panics,
            c.invalid_written,
            c.tract_panics_caught
        );
        total.runs += c.runs;
        total.panics += c.panics;
        total.invalid_written += c.invalid_written;
    }
    println!(
        "binary runs: {} (signals {}, exit 101 {}, exit 0 with an invalid output {}, timeouts {})",
        spawned.runs, spawned.signals, spawned.panics, spawned.invalid, spawned.timeouts
    );
    let slow = watchdog.slow();
    println!("in-process runs over {} s: {slow}", SLOW.as_secs());
    match checker {
        Some((checked, bad)) => println!(
            "onnx.checker(full_check) on {checked} written outputs: {} refused{}",
            bad.len(),
            if bad.is_empty() {
                String::new()
            } else {
                format!(" ({})", bad.join(", "))
            }
        ),
        None => println!("onnx.checker: not run (no .venv)"),
    }
    println!(
        "load: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let bad = total.panics
        + total.invalid_written
        + spawned.signals
        + spawned.panics
        + spawned.invalid
        + slow;
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// An in-process run this long is a finding (a hang cannot be killed in
/// process: the mutant is kept while it still runs).
const SLOW: Duration = Duration::from_secs(60);

/// Keeps the mutant of an in-process run that outlasts [`SLOW`]
/// (`target/fuzz-failures/slow-*.onnx`) and counts it.
struct Watchdog {
    state: std::sync::Arc<std::sync::Mutex<WatchState>>,
}

#[derive(Default)]
struct WatchState {
    /// The run under way: since when, its tag, its mutant.
    current: Option<(Instant, String, Vec<u8>)>,
    slow: usize,
}

impl Watchdog {
    fn start(failures: PathBuf) -> Watchdog {
        let state = std::sync::Arc::new(std::sync::Mutex::new(WatchState::default()));
        let shared = state.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            let mut s = shared.lock().unwrap();
            let Some((since, tag, mutant)) = s.current.take_if(|c| c.0.elapsed() > SLOW) else {
                continue;
            };
            let path = failures.join(format!("slow-{tag}.onnx"));
            let _ = std::fs::write(&path, &mutant);
            eprintln!(
                "SLOW {tag}: still running after {:.0} s (kept as {})",
                since.elapsed().as_secs_f64(),
                path.display()
            );
            s.slow += 1;
        });
        Watchdog { state }
    }

    fn watch(&self, tag: String, mutant: &[u8]) {
        self.state.lock().unwrap().current = Some((Instant::now(), tag, mutant.to_vec()));
    }

    fn done(&self) {
        self.state.lock().unwrap().current = None;
    }

    fn slow(&self) -> usize {
        self.state.lock().unwrap().slow
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Default)]
struct Spawned {
    runs: usize,
    signals: usize,
    panics: usize,
    invalid: usize,
    timeouts: usize,
}

impl Spawned {
    /// The real binary on one mutant, with a 120 s limit.
    fn run(&mut self, dir: &Path, mutant: &[u8], cmd: Cmd, failures: &Path, tag: &str) {
        use std::os::unix::process::ExitStatusExt;
        let (input, output) = (dir.join("in.onnx"), dir.join("out.onnx"));
        std::fs::write(&input, mutant).expect("write mutant");
        let _ = std::fs::remove_file(&output);
        let mut child = Command::new(env!("CARGO_BIN_EXE_onnx-opt"))
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .args(cmd.args())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn onnx-opt");
        self.runs += 1;
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let keep = |why: &str| {
            let path = failures.join(format!("{tag}-bin.onnx"));
            std::fs::write(&path, mutant).expect("keep failure");
            eprintln!("FAILURE (binary) {} {cmd:?}: {why}", path.display());
        };
        match status {
            None => {
                self.timeouts += 1;
                keep("timeout");
            }
            Some(s) if s.signal().is_some() => {
                self.signals += 1;
                keep(&format!("signal {:?}", s.signal()));
            }
            Some(s) if s.code() == Some(101) => {
                self.panics += 1;
                keep("exit 101 (panic)");
            }
            Some(s) if s.code() == Some(0) && output.exists() => {
                if let Err(e) = fuzz::judge(&read(&output)) {
                    self.invalid += 1;
                    keep(&format!("exit 0, invalid output: {e}"));
                }
            }
            Some(_) => {}
        }
    }
}

/// Runs onnx.checker (full check) on each file: (checked, names refused).
fn onnx_checker(repo: &Path, files: &[PathBuf]) -> Option<(usize, Vec<String>)> {
    let python = repo.join(".venv/bin/python");
    if !python.exists() || files.is_empty() {
        return None;
    }
    let script = "import sys, onnx\n\
        for p in sys.argv[1:]:\n\
        \x20   try:\n\
        \x20       onnx.checker.check_model(onnx.load(p), full_check=True)\n\
        \x20   except Exception as e:\n\
        \x20       print(p.rsplit('/', 1)[-1], str(e).splitlines()[0][:160] if str(e) else type(e).__name__)\n";
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(files)
        .output()
        .ok()?;
    let bad = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    Some((files.len(), bad))
}
