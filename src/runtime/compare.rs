//! Numerical comparison of two sets of outputs.

use super::load::Outputs;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// `snr_db` reported when the candidate equals the reference exactly (the
/// true value, +inf, is capped so that reports stay plain numbers). Any SNR
/// above the cap is capped too.
pub const SNR_CAP_DB: f64 = 200.0;

/// How far a candidate output is from the reference output.
///
/// All errors are computed in f64 from the outputs converted to f64.
/// Positions where both sides are NaN, or the same infinity, count as equal.
/// If any other position holds a NaN or infinity on either side
/// (`nonfinite_mismatches > 0`), `max_abs_err` and `max_rel_err` are +inf,
/// `snr_db` is -inf and `cosine` is NaN, so that every threshold fails.
///
/// In JSON, finite values are numbers and non-finite ones are the strings
/// `"inf"`, `"-inf"` and `"nan"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputMetrics {
    /// Output name.
    pub name: String,
    /// Output shape.
    pub shape: Vec<usize>,
    /// Number of samples these metrics cover (1 for [`compare`]).
    pub samples: usize,
    /// max |ref - cand|.
    #[serde(with = "nonfinite")]
    pub max_abs_err: f64,
    /// max_abs_err / max |ref|. 0 when both are all zeros, +inf when the
    /// reference is all zeros and the candidate is not.
    #[serde(with = "nonfinite")]
    pub max_rel_err: f64,
    /// Cosine similarity of the flattened outputs (1 when both are all
    /// zeros, 0 when only one is).
    #[serde(with = "nonfinite")]
    pub cosine: f64,
    /// 10·log10(Σref² / Σ(ref−cand)²), capped at [`SNR_CAP_DB`]
    /// (-inf when the reference is all zeros and the candidate is not).
    #[serde(with = "nonfinite")]
    pub snr_db: f64,
    /// Fraction of rows (all axes but the last) whose argmax over the last
    /// axis agrees (first maximum wins, NaN counts as lowest). `None` for
    /// scalars, empty outputs, and a last axis of length 1.
    pub top1_agreement: Option<f64>,
    /// Number of rows behind `top1_agreement` (0 when it is `None`).
    pub top1_rows: usize,
    /// Positions where a NaN or infinity appears on one side and differs.
    pub nonfinite_mismatches: usize,
}

/// Compares every output of `reference` with the candidate output of the
/// same name. Candidate outputs the reference lacks are ignored; a missing
/// output or a shape mismatch is an error.
pub fn compare(reference: &Outputs, candidate: &Outputs) -> Result<Vec<OutputMetrics>> {
    reference
        .iter()
        .map(|(name, r)| {
            let c = candidate
                .get(name)
                .ok_or_else(|| anyhow!("the candidate has no output {name:?}"))?;
            if r.shape() != c.shape() {
                bail!(
                    "output {name:?}: reference shape {:?}, candidate shape {:?}",
                    r.shape(),
                    c.shape()
                );
            }
            let a = r
                .to_f64_vec()
                .with_context(|| format!("reference output {name:?}"))?;
            let b = c
                .to_f64_vec()
                .with_context(|| format!("candidate output {name:?}"))?;
            Ok(metrics(name, r.shape(), &a, &b))
        })
        .collect()
}

/// Metrics of two flattened tensors of shape `shape`.
pub(crate) fn metrics(name: &str, shape: &[usize], a: &[f64], b: &[f64]) -> OutputMetrics {
    let mut max_abs = 0f64;
    let mut max_ref = 0f64;
    let (mut dot, mut na, mut nb, mut noise) = (0f64, 0f64, 0f64, 0f64);
    let mut nonfinite = 0usize;
    for (&x, &y) in a.iter().zip(b) {
        let same = x == y || (x.is_nan() && y.is_nan());
        if !(same || x.is_finite() && y.is_finite()) {
            nonfinite += 1;
            continue;
        }
        if !x.is_finite() {
            continue; // equal non-finite values on both sides
        }
        let d = (x - y).abs();
        max_abs = max_abs.max(d);
        max_ref = max_ref.max(x.abs());
        dot += x * y;
        na += x * x;
        nb += y * y;
        noise += d * d;
    }
    let (max_abs_err, max_rel_err, cosine, snr_db) = if nonfinite > 0 {
        (f64::INFINITY, f64::INFINITY, f64::NAN, f64::NEG_INFINITY)
    } else {
        let rel = if max_abs == 0.0 {
            0.0
        } else if max_ref == 0.0 {
            f64::INFINITY
        } else {
            max_abs / max_ref
        };
        let cos = if noise == 0.0 {
            1.0 // identical (including both all zeros)
        } else if na == 0.0 || nb == 0.0 {
            0.0
        } else {
            let norms = (na * nb).sqrt();
            let norms = if norms.is_finite() && norms > 0.0 {
                norms
            } else {
                na.sqrt() * nb.sqrt()
            };
            (dot / norms).clamp(-1.0, 1.0)
        };
        let snr = if noise == 0.0 {
            SNR_CAP_DB
        } else {
            (10.0 * (na / noise).log10()).min(SNR_CAP_DB)
        };
        (max_abs, rel, cos, snr)
    };
    let (top1_agreement, top1_rows) = top1(shape, a, b);
    OutputMetrics {
        name: name.to_string(),
        shape: shape.to_vec(),
        samples: 1,
        max_abs_err,
        max_rel_err,
        cosine,
        snr_db,
        top1_agreement,
        top1_rows,
        nonfinite_mismatches: nonfinite,
    }
}

fn top1(shape: &[usize], a: &[f64], b: &[f64]) -> (Option<f64>, usize) {
    let Some(&last) = shape.last() else {
        return (None, 0);
    };
    if last <= 1 || a.is_empty() || a.len() != b.len() {
        return (None, 0);
    }
    let rows = a.len() / last;
    let agree = a
        .chunks_exact(last)
        .zip(b.chunks_exact(last))
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count();
    (Some(agree as f64 / rows as f64), rows)
}

fn argmax(row: &[f64]) -> usize {
    let key = |x: f64| if x.is_nan() { f64::NEG_INFINITY } else { x };
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if key(x) > key(row[best]) {
            best = i;
        }
    }
    best
}

/// Worst case per output over several samples' metrics (each the result of
/// [`compare`] or of an earlier `aggregate`): largest errors, smallest
/// cosine and SNR (NaN wins), summed `samples` and `nonfinite_mismatches`.
///
/// `top1_agreement` is the exception: it is pooled over all rows of all
/// samples (a worst case of a batch-1 classifier would just be 0 or 1).
///
/// Outputs are matched by name and listed in first-seen order; an output
/// whose shape changes between samples is an error.
pub fn aggregate(per_sample: &[Vec<OutputMetrics>]) -> Result<Vec<OutputMetrics>> {
    let mut out: Vec<OutputMetrics> = Vec::new();
    // agreeing rows so far, per entry of `out`
    let mut agree: Vec<f64> = Vec::new();
    for m in per_sample.iter().flatten() {
        let m_agree = m
            .top1_agreement
            .map_or(0.0, |t| (t * m.top1_rows as f64).round());
        let Some(ix) = out.iter().position(|o| o.name == m.name) else {
            out.push(m.clone());
            agree.push(m_agree);
            continue;
        };
        let o = &mut out[ix];
        if o.shape != m.shape {
            bail!(
                "output {:?} has shape {:?} in one sample and {:?} in another",
                m.name,
                o.shape,
                m.shape
            );
        }
        o.samples += m.samples;
        o.max_abs_err = worst_max(o.max_abs_err, m.max_abs_err);
        o.max_rel_err = worst_max(o.max_rel_err, m.max_rel_err);
        o.cosine = worst_min(o.cosine, m.cosine);
        o.snr_db = worst_min(o.snr_db, m.snr_db);
        o.nonfinite_mismatches += m.nonfinite_mismatches;
        agree[ix] += m_agree;
        o.top1_rows += m.top1_rows;
        o.top1_agreement = match (o.top1_agreement, m.top1_agreement) {
            (None, None) => None,
            _ if o.top1_rows == 0 => None,
            _ => Some(agree[ix] / o.top1_rows as f64),
        };
    }
    Ok(out)
}

fn worst_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn worst_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Serde for f64 that keeps non-finite values: numbers, or the strings
/// "inf", "-inf", "nan".
mod nonfinite {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f64(*x)
        } else if x.is_nan() {
            s.serialize_str("nan")
        } else if *x > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(f64),
        Str(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(x) => Ok(x),
            NumOrStr::Str(s) => match s.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                other => Err(serde::de::Error::custom(format!(
                    "expected a number, \"inf\", \"-inf\" or \"nan\", got {other:?}"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::{InputShapes, Model};
    use super::super::tensor::Tensor;
    use super::super::testutil::mlp;
    use super::super::Sample;
    use super::*;

    fn outs(name: &str, shape: &[usize], v: &[f32]) -> Outputs {
        Outputs::new(vec![(name.into(), Tensor::from_f32(shape, v).unwrap())])
    }

    #[test]
    fn identical_outputs() {
        let a = outs("y", &[2, 3], &[1.0, -2.0, 3.0, 0.0, 5.0, -6.0]);
        let m = &compare(&a, &a).unwrap()[0];
        assert_eq!(m.name, "y");
        assert_eq!((m.max_abs_err, m.max_rel_err), (0.0, 0.0));
        assert_eq!((m.cosine, m.snr_db), (1.0, SNR_CAP_DB));
        assert_eq!((m.top1_agreement, m.top1_rows), (Some(1.0), 2));
        assert_eq!(m.nonfinite_mismatches, 0);
    }

    #[test]
    fn known_differences() {
        let a = outs("y", &[2, 2], &[1.0, 2.0, 4.0, 3.0]);
        let b = outs("y", &[2, 2], &[1.0, 2.5, 3.0, 3.0]);
        let m = &compare(&a, &b).unwrap()[0];
        assert_eq!(m.max_abs_err, 1.0);
        assert_eq!(m.max_rel_err, 0.25);
        // signal 1+4+16+9 = 30, noise 0.25+1 = 1.25
        assert!((m.snr_db - 10.0 * (30.0f64 / 1.25).log10()).abs() < 1e-12);
        let dot = 1.0 + 5.0 + 12.0 + 9.0;
        let cos = dot / (30.0f64.sqrt() * (1.0f64 + 6.25 + 9.0 + 9.0).sqrt());
        assert!((m.cosine - cos).abs() < 1e-12);
        // row 0: argmax 1 vs 1; row 1: argmax 0 vs 0 (3.0 == 3.0: first wins)
        assert_eq!(m.top1_agreement, Some(1.0));
        let c = outs("y", &[2, 2], &[1.0, 2.0, 2.0, 3.0]);
        assert_eq!(compare(&a, &c).unwrap()[0].top1_agreement, Some(0.5));
    }

    #[test]
    fn edge_cases() {
        // scalars and last axis of 1 have no top-1
        let s = outs("s", &[], &[1.0]);
        assert_eq!(compare(&s, &s).unwrap()[0].top1_agreement, None);
        let col = outs("c", &[3, 1], &[1.0, 2.0, 3.0]);
        assert_eq!(compare(&col, &col).unwrap()[0].top1_agreement, None);
        // all-zero reference
        let z = outs("z", &[2], &[0.0, 0.0]);
        let m = &compare(&z, &z).unwrap()[0];
        assert_eq!((m.max_rel_err, m.cosine, m.snr_db), (0.0, 1.0, SNR_CAP_DB));
        let m = &compare(&z, &outs("z", &[2], &[0.0, 1.0])).unwrap()[0];
        assert_eq!((m.max_abs_err, m.max_rel_err), (1.0, f64::INFINITY));
        assert_eq!((m.cosine, m.snr_db), (0.0, f64::NEG_INFINITY));
        // NaN on both sides at the same place is equal; elsewhere it fails
        let n = outs("n", &[3], &[1.0, f32::NAN, f32::INFINITY]);
        let m = &compare(&n, &n).unwrap()[0];
        assert_eq!((m.max_abs_err, m.nonfinite_mismatches), (0.0, 0));
        let m = &compare(&n, &outs("n", &[3], &[f32::NAN, f32::NAN, f32::INFINITY])).unwrap()[0];
        assert_eq!(m.nonfinite_mismatches, 1);
        assert_eq!(m.max_abs_err, f64::INFINITY);
        assert!(m.cosine.is_nan());
        // JSON keeps non-finite values as strings and reads them back
        let json = serde_json::to_string(m).unwrap();
        assert!(json.contains("\"max_abs_err\":\"inf\"") && json.contains("\"cosine\":\"nan\""));
        let back: OutputMetrics = serde_json::from_str(&json).unwrap();
        assert!(back.cosine.is_nan() && back.snr_db == f64::NEG_INFINITY);
        // mismatches are errors, not panics
        let e = compare(&n, &outs("m", &[3], &[0.0; 3]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no output \"n\""), "{e}");
        let e = compare(&n, &outs("n", &[1, 3], &[0.0; 3]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[3]") && e.contains("[1, 3]"), "{e}");
        // integer outputs compare too
        let i = Outputs::new(vec![("i".into(), Tensor::from_i64(&[2], &[3, 4]).unwrap())]);
        assert_eq!(compare(&i, &i).unwrap()[0].max_abs_err, 0.0);
    }

    #[test]
    fn aggregate_worst_case() {
        let a = outs("y", &[1, 2], &[1.0, 2.0]);
        let m1 = compare(&a, &outs("y", &[1, 2], &[1.0, 2.1])).unwrap();
        let m2 = compare(&a, &outs("y", &[1, 2], &[1.5, 1.0])).unwrap();
        let m3 = compare(&a, &a).unwrap();
        let agg = aggregate(&[m1.clone(), m2.clone(), m3]).unwrap();
        assert_eq!(agg.len(), 1);
        let g = &agg[0];
        assert_eq!(g.samples, 3);
        assert_eq!(g.max_abs_err, m2[0].max_abs_err);
        assert_eq!(g.snr_db, m2[0].snr_db);
        assert_eq!(g.cosine, m2[0].cosine);
        assert_eq!(g.top1_rows, 3);
        assert!((g.top1_agreement.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // aggregating aggregates is the same as aggregating everything
        let again = aggregate(&[agg.clone(), m1.clone()]).unwrap();
        assert_eq!(again[0].samples, 4);
        assert!((again[0].top1_agreement.unwrap() - 0.75).abs() < 1e-12);
        let bad = compare(&outs("y", &[2], &[1.0, 2.0]), &outs("y", &[2], &[1.0, 2.0])).unwrap();
        assert!(aggregate(&[m1, bad]).is_err());
        assert!(aggregate(&[]).unwrap().is_empty());
    }

    #[test]
    fn compare_two_loads_of_a_model() {
        let a = Model::load(&mlp(), &InputShapes::new(), &[]).unwrap();
        let b = Model::load(&mlp(), &InputShapes::new(), &[]).unwrap();
        let s = Sample::random(a.inputs(), 5).unwrap();
        let m = compare(&a.run(&s).unwrap(), &b.run(&s).unwrap()).unwrap();
        assert_eq!(m[0].max_abs_err, 0.0);
    }
}
