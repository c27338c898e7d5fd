//! A(θ): how good a candidate model is, on samples it was not calibrated on.
//!
//! Every metric is "higher is better". With labels: top-1 or top-5 accuracy
//! (percent). Without: agreement with the original model (percent of output
//! rows whose best class is the original's), cosine similarity with the
//! original's outputs (×100, the worst output), or their SNR (dB, the worst
//! output). `--metric-cmd` runs the user's own judge on a candidate's file.
//! The original's outputs are computed once, in the judging runtime, and
//! every candidate is compared with them sample by sample.

use crate::calibrate::Calibration;
use crate::data::{Accuracy, Dataset};
use crate::exec;
use crate::ir::Model;
use crate::runtime::{self, ort, Engine, InputShapes, Outputs, Runner, Sample};
use anyhow::{bail, ensure, Context, Result};
use std::path::Path;
use std::sync::OnceLock;

/// What "accuracy" means for this model and data.
#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    Top1,
    Top5,
    Agreement,
    Cosine,
    Snr,
    /// A shell command with `{model}` in it; its last stdout line is the
    /// metric: a number, or `K/N` (see [`CommandMetric`]).
    Command(String),
}

/// SNR of identical outputs is infinite; capped so that averages stay finite.
const SNR_CAP_DB: f64 = 150.0;

/// Output rows up to which the scores output is read as class scores (a
/// classifier's `[1, C]`, a recogniser's `[1, T, C]`); a detector's
/// thousands of anchors are not.
const MAX_CLASS_ROWS: usize = 256;

impl Metric {
    /// The metric asked for (`name`, `command`), else the default for this
    /// data: top-1 with labels, agreement when the only float output holds
    /// class scores, cosine otherwise. Returns the metric and why it was chosen.
    pub fn choose(
        name: Option<&str>,
        command: Option<&str>,
        has_labels: bool,
        first: &Outputs,
    ) -> Result<(Metric, String)> {
        if let Some(cmd) = command {
            ensure!(name.is_none(), "give --metric or --metric-cmd, not both");
            ensure!(
                cmd.contains("{model}"),
                "--metric-cmd must contain {{model}}, replaced by a candidate's path"
            );
            return Ok((Metric::Command(cmd.to_string()), "--metric-cmd".into()));
        }
        let metric = match name {
            Some("top1") => Metric::Top1,
            Some("top5") => Metric::Top5,
            Some("agreement") => Metric::Agreement,
            Some("cosine") => Metric::Cosine,
            Some("snr") => Metric::Snr,
            Some(other) => {
                bail!("--metric {other}: expected top1, top5, agreement, cosine or snr")
            }
            None if has_labels => return Ok((Metric::Top1, "labels given".into())),
            // Beside its scores a classifier may return labels (skl2onnx's
            // do), mostly their argmax: agreement on the scores is still
            // the metric of a classifier.
            None => match class_rows(first) {
                Some(rows)
                    if first
                        .iter()
                        .filter(|(_, t)| t.elem_type().is_float())
                        .count()
                        == 1 =>
                {
                    return Ok((
                        Metric::Agreement,
                        format!("no labels; the output holds {rows} row(s) of class scores"),
                    ))
                }
                _ => {
                    return Ok((
                        Metric::Cosine,
                        "no labels; the outputs are not one set of class scores".into(),
                    ))
                }
            },
        };
        ensure!(
            has_labels || !matches!(metric, Metric::Top1 | Metric::Top5),
            "--metric {} needs --labels",
            metric.name()
        );
        // Seen on a convnet: pruning kept a cosine of 0.9998 on the logits
        // and flipped 5% of the predictions.
        if matches!(metric, Metric::Cosine | Metric::Snr) && class_rows(first).is_some() {
            return Ok((
                metric,
                "--metric; note: the output looks like class scores, whose cosine or SNR can stay \
                 high while predictions flip (agreement counts flips)"
                    .into(),
            ));
        }
        Ok((metric, "--metric".into()))
    }

    pub fn name(&self) -> &str {
        match self {
            Metric::Top1 => "top1",
            Metric::Top5 => "top5",
            Metric::Agreement => "agreement",
            Metric::Cosine => "cosine",
            Metric::Snr => "snr",
            Metric::Command(_) => "metric-cmd",
        }
    }

    pub fn unit(&self) -> &str {
        match self {
            Metric::Snr => "dB",
            Metric::Command(_) => "",
            _ => "%",
        }
    }

    /// Whether the metric compares with the original's outputs (which then
    /// scores its own maximum on every fold).
    fn needs_reference(&self) -> bool {
        matches!(self, Metric::Agreement | Metric::Cosine | Metric::Snr)
    }
}

/// Rows of class scores in the scores output ([`Outputs::scores`]), if it
/// looks like them: float, rank 1 to 3, at least two classes, at most
/// [`MAX_CLASS_ROWS`] rows.
fn class_rows(outputs: &Outputs) -> Option<usize> {
    let (_, t) = outputs.scores()?;
    let shape = t.shape();
    let classes = *shape.last()?;
    let rows = t.len().checked_div(classes)?;
    (t.elem_type().is_float() && (1..=3).contains(&shape.len()) && classes >= 2)
        .then_some(rows)
        .filter(|&r| r <= MAX_CLASS_ROWS)
}

/// A metric's value on some samples and, for the metrics that count rows
/// (top-1, top-5, agreement; a `--metric-cmd` that prints `K/N`), the
/// rows (or units) the candidate lost against the original, net of those
/// it gained, out of how many.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub value: f64,
    pub lost_of: Option<(usize, usize)>,
}

/// Judges models on the samples of one dataset, in one runtime.
pub struct Judge {
    pub metric: Metric,
    engine: Engine,
    options: ort::Options,
    samples: Vec<Sample>,
    labels: Vec<Option<Vec<i64>>>,
    /// Shapes of each group and the group of each sample.
    shapes: Vec<InputShapes>,
    group_of: Vec<usize>,
    /// The original model's outputs, sample by sample.
    reference: Vec<Outputs>,
    /// The units a `--metric-cmd` that counts found right on the original.
    command_original: OnceLock<Option<usize>>,
}

impl Judge {
    /// Reads every sample of `data` and runs `original` on them in `engine`.
    pub fn new(engine: Engine, threads: usize, data: &Dataset, original: &Model) -> Result<Judge> {
        let samples = (0..data.len())
            .map(|i| data.sample(i))
            .collect::<Result<Vec<_>>>()?;
        let labels = (0..data.len())
            .map(|i| data.labels(i).map(<[i64]>::to_vec))
            .collect();
        let mut shapes = vec![];
        let mut group_of = vec![0; data.len()];
        for (k, (s, members)) in data.groups().into_iter().enumerate() {
            shapes.push(s);
            for i in members {
                group_of[i] = k;
            }
        }
        let mut judge = Judge {
            metric: Metric::Cosine,
            engine,
            options: ort::Options {
                threads,
                profile: None,
            },
            samples,
            labels,
            shapes,
            group_of,
            reference: vec![],
            command_original: OnceLock::new(),
        };
        let all: Vec<usize> = (0..judge.samples.len()).collect();
        judge.reference = judge
            .run(original, &all)
            .with_context(|| format!("running the original model in {engine}"))?;
        Ok(judge)
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The original's outputs on the first sample (to choose a metric).
    pub fn first_reference(&self) -> Option<&Outputs> {
        self.reference.first()
    }

    /// Output rows the metric counts in samples `idx` (a resolution:
    /// one row changes a percentage by 100/rows).
    pub fn rows(&self, idx: &[usize]) -> usize {
        match self.metric {
            Metric::Top1 | Metric::Top5 => idx
                .iter()
                .map(|&i| self.labels[i].as_ref().map_or(0, Vec::len))
                .sum(),
            Metric::Agreement => idx
                .iter()
                .map(|&i| class_rows(&self.reference[i]).unwrap_or(1))
                .sum(),
            _ => idx.len(),
        }
    }

    /// `model` loaded in the judging runtime for samples of `shapes`.
    pub fn load(&self, model: &Model, shapes: &InputShapes) -> Result<Runner> {
        exec::load_in(self.engine, model, shapes, &[], &self.options)
    }

    /// The shapes of the largest group, and up to `n` of its samples (for timing).
    pub fn timing_samples(&self, n: usize) -> (&InputShapes, Vec<Sample>) {
        let largest = (0..self.shapes.len())
            .max_by_key(|&k| self.group_of.iter().filter(|&&g| g == k).count())
            .unwrap_or(0);
        let samples = (0..self.samples.len())
            .filter(|&i| self.group_of[i] == largest)
            .take(n)
            .map(|i| self.samples[i].clone())
            .collect();
        (&self.shapes[largest], samples)
    }

    /// The samples `idx`, in memory (to calibrate on).
    pub fn samples(&self, idx: &[usize]) -> Vec<Sample> {
        idx.iter().map(|&i| self.samples[i].clone()).collect()
    }

    /// Samples `idx` as calibration data, in their shape groups.
    pub fn calibration(&self, idx: &[usize], source: String) -> Calibration {
        let groups = self
            .by_group(idx)
            .into_iter()
            .map(|(k, members)| (self.shapes[k].clone(), members))
            .collect();
        Calibration {
            samples: self.samples(idx),
            groups,
            source,
            random: false,
            engine: OnceLock::new(),
        }
    }

    /// Positions in `idx` grouped by the shape group of their sample
    /// (groups without a sample left out).
    fn by_group(&self, idx: &[usize]) -> Vec<(usize, Vec<usize>)> {
        (0..self.shapes.len())
            .map(|k| {
                (
                    k,
                    (0..idx.len())
                        .filter(|&j| self.group_of[idx[j]] == k)
                        .collect(),
                )
            })
            .filter(|(_, members): &(usize, Vec<usize>)| !members.is_empty())
            .collect()
    }

    /// Runs `model` on samples `idx`, one load per shape group; outputs in
    /// the order of `idx`.
    fn run(&self, model: &Model, idx: &[usize]) -> Result<Vec<Outputs>> {
        let mut out: Vec<Option<Outputs>> = vec![None; idx.len()];
        for (k, members) in self.by_group(idx) {
            let rt = self.load(model, &self.shapes[k])?;
            for j in members {
                out[j] = Some(rt.run(&self.samples[idx[j]])?);
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.expect("every group ran"))
            .collect())
    }

    /// The original model's metric on samples `idx`.
    pub fn original(&self, idx: &[usize], original_file: &Path) -> Result<f64> {
        match &self.metric {
            Metric::Command(cmd) => {
                let m = run_command(cmd, original_file)?;
                // The command judges its own data: the same on every call.
                self.command_original
                    .get_or_init(|| m.counts.map(|(k, _)| k));
                Ok(m.value)
            }
            m if m.needs_reference() => Ok(self.best()),
            _ => self.score(&self.reference_of(idx), idx),
        }
    }

    /// The metric of `model` on samples `idx`; `file` is where a
    /// `--metric-cmd` finds it (written by the caller).
    pub fn evaluate(&self, model: &Model, idx: &[usize], file: Option<&Path>) -> Result<Score> {
        if let Metric::Command(cmd) = &self.metric {
            let file = file.context("--metric-cmd needs the candidate written to a file")?;
            let m = run_command(cmd, file)?;
            let original = self.command_original.get().copied().flatten();
            return Ok(Score {
                value: m.value,
                lost_of: m
                    .counts
                    .zip(original)
                    .map(|((k, n), k0)| (k0.saturating_sub(k), n)),
            });
        }
        let outputs = self.run(model, idx)?;
        let value = self.score(&outputs.iter().collect::<Vec<_>>(), idx)?;
        let lost_of = match self.metric {
            Metric::Top1 | Metric::Top5 | Metric::Agreement => {
                let rows = self.rows(idx);
                let original = self.score(&self.reference_of(idx), idx)?;
                let lost = ((original - value) / 100.0 * rows as f64).round().max(0.0);
                Some((lost as usize, rows))
            }
            _ => None,
        };
        Ok(Score { value, lost_of })
    }

    /// The metric's value for outputs identical to the original's.
    fn best(&self) -> f64 {
        match self.metric {
            Metric::Snr => SNR_CAP_DB,
            _ => 100.0,
        }
    }

    fn reference_of(&self, idx: &[usize]) -> Vec<&Outputs> {
        idx.iter().map(|&i| &self.reference[i]).collect()
    }

    fn score(&self, outputs: &[&Outputs], idx: &[usize]) -> Result<f64> {
        ensure!(!idx.is_empty(), "no samples to judge on");
        let pairs = || idx.iter().zip(outputs).map(|(&i, &o)| (i, o));
        match self.metric {
            Metric::Top1 | Metric::Top5 => {
                let mut acc = Accuracy::default();
                for (i, o) in pairs() {
                    let labels = self.labels[i]
                        .as_deref()
                        .with_context(|| format!("sample {i} has no label"))?;
                    acc.add(&scores_f32(o)?, labels)?;
                }
                let r = acc.result().context("no labelled samples")?;
                if self.metric == Metric::Top1 {
                    Ok(100.0 * r.top1)
                } else {
                    let top5 = r
                        .top5
                        .context("top5 needs outputs of more than 5 classes")?;
                    Ok(100.0 * top5)
                }
            }
            Metric::Agreement => {
                let (mut same, mut rows) = (0usize, 0usize);
                for (i, o) in pairs() {
                    let (a, b) = (scores_f32(&self.reference[i])?, scores_f32(o)?);
                    let classes = self.reference[i]
                        .scores()
                        .and_then(|(_, t)| t.shape().last().copied())
                        .filter(|&c| c > 0 && a.len() == b.len())
                        .context("the outputs differ in shape from the original's")?;
                    for (ra, rb) in a.chunks(classes).zip(b.chunks(classes)) {
                        same += usize::from(argmax(ra) == argmax(rb));
                        rows += 1;
                    }
                }
                Ok(100.0 * same as f64 / rows.max(1) as f64)
            }
            Metric::Cosine | Metric::Snr => {
                let mut worst = f64::INFINITY;
                let per_sample = pairs()
                    .map(|(i, o)| runtime::compare(&self.reference[i], o))
                    .collect::<Result<Vec<_>>>()?;
                let outputs = per_sample.first().map_or(0, Vec::len);
                for k in 0..outputs {
                    let mean = per_sample
                        .iter()
                        .map(|m| match self.metric {
                            Metric::Cosine if m[k].cosine.is_nan() => 0.0,
                            Metric::Cosine => 100.0 * m[k].cosine,
                            _ => m[k].snr_db.clamp(-SNR_CAP_DB, SNR_CAP_DB),
                        })
                        .sum::<f64>()
                        / per_sample.len() as f64;
                    worst = worst.min(mean);
                }
                Ok(worst)
            }
            Metric::Command(_) => unreachable!("handled by the callers"),
        }
    }
}

fn scores_f32(o: &Outputs) -> Result<Vec<f32>> {
    let (name, t) = o.scores().context("the model has no output")?;
    t.to_f32_vec()
        .with_context(|| format!("output {name} is not numeric"))
}

/// Index of the largest score (the first of equals; NaN never wins).
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, &x) in row.iter().enumerate() {
        if x > row[best] || row[best].is_nan() && !x.is_nan() {
            best = j;
        }
    }
    best
}

/// What a `--metric-cmd` printed last: a number, or `K/N`, K units of N
/// right (characters, words, boxes), whose value is 100·K/N and whose
/// counts let tune bound the loss as it does for labelled rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CommandMetric {
    pub value: f64,
    pub counts: Option<(usize, usize)>,
}

impl Judge {
    /// Whether every fold is judged on the same data (a `--metric-cmd`
    /// judges its own): their counts are then not independent.
    pub fn same_data_every_fold(&self) -> bool {
        matches!(self.metric, Metric::Command(_))
    }
}

/// Runs `--metric-cmd` with `{model}` replaced by `file`; its last stdout
/// line is the metric. A failing command's stderr tail is the error.
pub fn run_command(cmd: &str, file: &Path) -> Result<CommandMetric> {
    let quoted = format!("'{}'", file.display().to_string().replace('\'', r"'\''"));
    let line = cmd.replace("{model}", &quoted);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&line)
        .output()
        .with_context(|| format!("--metric-cmd: cannot run sh -c {line:?}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("--metric-cmd failed ({}): {}", out.status, tail.join(" | "));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let last = last.trim();
    let counts = last.split_once('/').and_then(|(k, n)| {
        let (k, n) = (
            k.trim().parse::<usize>().ok()?,
            n.trim().parse::<usize>().ok()?,
        );
        (n > 0 && k <= n).then_some((k, n))
    });
    let value = match counts {
        Some((k, n)) => Some(100.0 * k as f64 / n as f64),
        None => last.parse::<f64>().ok().filter(|x| x.is_finite()),
    };
    let value = value.with_context(|| {
        format!("--metric-cmd: its last output line {last:?} is not a number or K/N")
    })?;
    Ok(CommandMetric { value, counts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Tensor;

    fn outputs(shape: &[usize], data: &[f32]) -> Outputs {
        Outputs::new(vec![("y".into(), Tensor::from_f32(shape, data).unwrap())])
    }

    #[test]
    fn default_metric_follows_labels_and_output_shape() {
        let scores = outputs(&[1, 3], &[0.1, 0.7, 0.2]);
        let chosen = |labels, o: &Outputs| Metric::choose(None, None, labels, o).unwrap().0;
        assert_eq!(chosen(true, &scores), Metric::Top1);
        assert_eq!(chosen(false, &scores), Metric::Agreement);
        // a detector's map is not class scores
        let map = outputs(&[1, 1, 4, 4], &[0.0; 16]);
        assert_eq!(chosen(false, &map), Metric::Cosine);
        let anchors = outputs(&[1, 300, 6], &[0.0; 1800]);
        assert_eq!(chosen(false, &anchors), Metric::Cosine);
        assert!(Metric::choose(Some("top1"), None, false, &scores).is_err());
        assert!(Metric::choose(None, Some("judge.sh"), false, &scores).is_err());
        assert!(Metric::choose(Some("f1"), None, false, &scores).is_err());
        let (_, why) = Metric::choose(Some("cosine"), None, false, &scores).unwrap();
        assert!(why.contains("predictions flip"), "{why}");
        let (_, why) = Metric::choose(Some("cosine"), None, false, &map).unwrap();
        assert_eq!(why, "--metric");
    }

    #[test]
    fn labels_beside_the_scores_leave_them_the_scores() {
        // skl2onnx's classifiers: labels first (int64, or hashed strings), then
        // the probabilities; two rows of three classes.
        let labels = Tensor::from_i64(&[2], &[1, 0]).unwrap();
        let probabilities = Tensor::from_f32(&[2, 3], &[0.2, 0.7, 0.1, 0.6, 0.3, 0.1]).unwrap();
        let o = Outputs::new(vec![
            ("label".into(), labels),
            ("probabilities".into(), probabilities),
        ]);
        assert_eq!(o.scores().unwrap().0, "probabilities");
        let chosen = Metric::choose(None, None, false, &o).unwrap().0;
        assert_eq!(chosen, Metric::Agreement);
        let mut acc = Accuracy::default();
        acc.add(&scores_f32(&o).unwrap(), &[1, 2]).unwrap();
        assert_eq!(acc.result().unwrap().top1, 0.5);
        // Two float outputs are not one set of scores; labels alone are all there is.
        let two = Outputs::new(vec![
            ("a".into(), Tensor::from_f32(&[1, 3], &[0.0; 3]).unwrap()),
            ("b".into(), Tensor::from_f32(&[1, 3], &[0.0; 3]).unwrap()),
        ]);
        assert_eq!(
            Metric::choose(None, None, false, &two).unwrap().0,
            Metric::Cosine
        );
        let only = Outputs::new(vec![(
            "label".into(),
            Tensor::from_i64(&[2], &[1, 0]).unwrap(),
        )]);
        assert_eq!(only.scores().unwrap().0, "label");
    }

    #[test]
    fn argmax_takes_the_first_of_equals_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.2]), 1);
    }

    #[test]
    fn a_command_metric_is_its_last_line() {
        let file = Path::new("/tmp/some model's.onnx");
        let m = run_command("echo x; echo {model} >/dev/null; echo 0.75", file).unwrap();
        assert_eq!((m.value, m.counts), (0.75, None));
        // K/N: 423 of 428 characters right.
        let m = run_command("echo 423/428", file).unwrap();
        assert_eq!(m.counts, Some((423, 428)));
        assert!((m.value - 98.8317757).abs() < 1e-6, "{}", m.value);
        let e = run_command("echo bad >&2; exit 3", file).unwrap_err();
        assert!(format!("{e:#}").contains("bad"), "{e:#}");
        for bad in ["12abc", "5/4", "1/0", "a/3", "inf"] {
            assert!(run_command(&format!("echo {bad}"), file).is_err(), "{bad}");
        }
    }
}
