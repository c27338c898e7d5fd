//! `--labels FILE`: the true class of every sample, and the task accuracy
//! (top-1, top-5) a classifier reaches on them.
//!
//! * `.npy` of integers: one per batch row, in sample order;
//! * `.txt`: one integer per line, in sample order;
//! * `.csv`: `file,label` lines matched by file name (image folders); a
//!   first line whose label is not an integer is a header.

use super::npy;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// Reads labels for samples from files `names` holding `rows[i]` batch rows
/// each; returns each sample's labels.
pub fn read(path: &Path, names: &[String], rows: &[usize]) -> Result<Vec<Vec<i64>>> {
    let at = || path.display().to_string();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    let total: usize = rows.iter().sum();
    let flat: Vec<i64> = match ext.as_deref() {
        Some("npy") => {
            let bytes = std::fs::read(path).with_context(at)?;
            let t = npy::parse(&bytes).with_context(|| format!("{}: bad .npy file", at()))?;
            if t.elem_type().is_float() || t.shape().iter().filter(|&&d| d > 1).count() > 1 {
                bail!(
                    "{}: expected a 1-D array of integer labels, got {} {:?}",
                    at(),
                    t.elem_type(),
                    t.shape()
                );
            }
            t.to_f64_vec()?.into_iter().map(|x| x as i64).collect()
        }
        Some("txt") => {
            let text = std::fs::read_to_string(path).with_context(at)?;
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    l.trim().parse::<i64>().with_context(|| {
                        format!(
                            "{} line {}: expected an integer label, got {l:?}",
                            at(),
                            i + 1
                        )
                    })
                })
                .collect::<Result<_>>()?
        }
        Some("csv") => return read_csv(path, names, rows),
        _ => bail!("{}: labels must be a .npy, .txt or .csv file", at()),
    };
    if flat.len() != total {
        bail!(
            "{}: {} labels for {total} samples in the data",
            at(),
            flat.len()
        );
    }
    let mut out = Vec::with_capacity(rows.len());
    let mut at_row = 0;
    for &r in rows {
        out.push(flat[at_row..at_row + r].to_vec());
        at_row += r;
    }
    Ok(out)
}

fn read_csv(path: &Path, names: &[String], rows: &[usize]) -> Result<Vec<Vec<i64>>> {
    let at = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| at.clone())?;
    let mut by_name: HashMap<String, i64> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((file, label)) = line.rsplit_once(',') else {
            bail!("{at} line {}: expected `file,label`, got {line:?}", i + 1);
        };
        let label = match label.trim().parse::<i64>() {
            Ok(l) => l,
            Err(_) if i == 0 => continue,
            Err(_) => bail!(
                "{at} line {}: expected an integer label, got {label:?}",
                i + 1
            ),
        };
        let file = file.trim().trim_matches('"');
        let file = Path::new(file)
            .file_name()
            .map_or(file.to_string(), |f| f.to_string_lossy().into_owned());
        by_name.insert(file, label);
    }
    if rows.iter().any(|&r| r != 1) {
        bail!("{at}: a .csv labels one sample per file; this data has batches of several rows: use .npy or .txt labels");
    }
    if by_name.len() != names.len() {
        bail!(
            "{at}: {} labels for {} samples in the data",
            by_name.len(),
            names.len()
        );
    }
    names
        .iter()
        .map(|n| {
            by_name
                .get(n)
                .map(|&l| vec![l])
                .with_context(|| format!("{at}: no label for {n}"))
        })
        .collect()
}

/// Top-1 and top-5 accuracy of the original and the result.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TopK {
    pub labels: usize,
    pub top1: f64,
    /// Only for outputs of more than 5 classes.
    pub top5: Option<f64>,
}

/// Counts of correct predictions of one model, sample by sample.
#[derive(Default)]
pub struct Accuracy {
    rows: usize,
    top1: usize,
    top5: usize,
    min_classes: Option<usize>,
}

impl Accuracy {
    /// Adds one sample: `scores` is the output of class scores
    /// (`runtime::Outputs::scores`; rows × classes,
    /// row-major), `labels` one per row.
    pub fn add(&mut self, scores: &[f32], labels: &[i64]) -> Result<()> {
        if labels.is_empty() || scores.len() % labels.len() != 0 {
            bail!(
                "the output of class scores has {} values, which do not split into one row per label ({} labels)",
                scores.len(),
                labels.len()
            );
        }
        let classes = scores.len() / labels.len();
        for (row, &label) in scores.chunks(classes).zip(labels) {
            let target = usize::try_from(label)
                .ok()
                .filter(|&l| l < classes)
                .with_context(|| {
                    format!("label {label} is not a class of an output of {classes}")
                })?;
            // Rank of the true class: how many classes score higher (ties
            // count against it, so a constant output is never "right").
            let better = row
                .iter()
                .enumerate()
                .filter(|&(j, &s)| j != target && s >= row[target])
                .count();
            self.rows += 1;
            self.top1 += usize::from(better == 0);
            self.top5 += usize::from(better < 5);
        }
        self.min_classes = Some(self.min_classes.map_or(classes, |c| c.min(classes)));
        Ok(())
    }

    pub fn result(&self) -> Option<TopK> {
        let n = self.rows.max(1) as f64;
        (self.rows > 0).then(|| TopK {
            labels: self.rows,
            top1: self.top1 as f64 / n,
            top5: self
                .min_classes
                .filter(|&c| c > 5)
                .map(|_| self.top5 as f64 / n),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_ranks() {
        let mut a = Accuracy::default();
        // two rows of 6 classes: row 0 right at top-1, row 1 third best
        let scores = [0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0];
        a.add(&scores, &[0, 2]).unwrap();
        let r = a.result().unwrap();
        assert_eq!((r.labels, r.top1, r.top5), (2, 0.5, Some(1.0)));
        // ties do not count as right
        let mut t = Accuracy::default();
        t.add(&[1.0, 1.0], &[0]).unwrap();
        assert_eq!(t.result().unwrap().top1, 0.0);
        assert_eq!(t.result().unwrap().top5, None);
        assert!(Accuracy::default().add(&[1.0, 2.0, 3.0], &[0, 1]).is_err());
        assert!(Accuracy::default().add(&[1.0, 2.0], &[7]).is_err());
    }

    #[test]
    fn label_files() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = ["a.png", "b.png"].map(String::from).to_vec();
        let txt = dir.path().join("l.txt");
        std::fs::write(&txt, "3\n4\n").unwrap();
        assert_eq!(read(&txt, &names, &[1, 1]).unwrap(), vec![vec![3], vec![4]]);
        let e = format!("{:#}", read(&txt, &names, &[1, 2]).unwrap_err());
        assert!(e.contains("2 labels for 3 samples"), "{e}");
        let csv = dir.path().join("l.csv");
        std::fs::write(&csv, "file,label\nimgs/b.png,1\na.png,0\n").unwrap();
        assert_eq!(read(&csv, &names, &[1, 1]).unwrap(), vec![vec![0], vec![1]]);
        std::fs::write(&csv, "a.png,0\nc.png,1\n").unwrap();
        let e = format!("{:#}", read(&csv, &names, &[1, 1]).unwrap_err());
        assert!(e.contains("no label for b.png"), "{e}");
        let n = dir.path().join("l.npy");
        let ints: Vec<u8> = [5i64, 6].iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(&n, npy::write("<i8", false, &[2], &ints)).unwrap();
        assert_eq!(read(&n, &names, &[2]).unwrap(), vec![vec![5, 6]]);
        std::fs::write(
            &n,
            npy::write("<f4", false, &[2], &npy::f32_le(&[1.0, 2.0])),
        )
        .unwrap();
        let e = format!("{:#}", read(&n, &names, &[2]).unwrap_err());
        assert!(e.contains("integer labels"), "{e}");
    }
}
