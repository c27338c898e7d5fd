//! Least-squares refit of the layers after pruned ones (see the module doc).

use super::Layer;
use crate::calibrate::Calibration;
use crate::ir::{Graph, Model, NodeId, Operator, Patch, Tensor};
use crate::runtime;
use anyhow::{bail, ensure, Context, Result};
use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use serde_json::json;

/// Rows kept for one fit (output positions over all samples), taken
/// evenly: enough to fit a layer, bounded in time and memory.
const MAX_ROWS: usize = 8192;

/// The fit problem of one layer: features A (rows × d), targets Y
/// (rows × m), the current weights W0 (d × m) that the ridge pulls toward.
struct Problem {
    a: Mat<f64>,
    y: Mat<f64>,
    w0: Mat<f64>,
}

/// Refits each layer in `layers` (in graph order) so that, on `data`, its
/// output in `model` reproduces its output in `teacher` (the unpruned
/// model), restricted to the output channels it keeps. Returns one report
/// entry per layer.
pub(super) fn refit(
    teacher: &Model,
    model: &mut Model,
    data: &Calibration,
    layers: &[Layer],
    ridge: f64,
) -> Result<Vec<serde_json::Value>> {
    let outputs: Vec<String> = layers
        .iter()
        .map(|l| {
            teacher
                .graph
                .outlet_name(crate::ir::Outlet::new(l.node, 0))
                .to_string()
        })
        .collect();
    let targets = data.capture(teacher, &outputs).context(
        "capturing the unpruned model's layer outputs (refit=false prunes without refitting)",
    )?;
    // faer uses rayon's current pool: one thread keeps every sum in one
    // order, so the bytes do not depend on the machine's core count.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let mut report = vec![];
    for (layer, target) in layers.iter().zip(&targets) {
        let g = &model.graph;
        let label = g.node(layer.node).label();
        let x_name = g
            .outlet_name(g.input(layer.node, 0).context("no input")?)
            .to_string();
        let inputs = data
            .capture(model, std::slice::from_ref(&x_name))
            .with_context(|| format!("node {label}: capturing its input"))?;
        let problem = match problem(g, layer, &inputs[0], target) {
            Ok(p) if p.a.nrows() < 2 * p.a.ncols() => {
                let why = format!(
                    "{} data rows for {} weights per output: too few to fit (give more --inputs samples)",
                    p.a.nrows(),
                    p.a.ncols()
                );
                report.push(json!({ "layer": label, "refit": false, "reason": why }));
                continue;
            }
            Ok(p) => p,
            Err(e) => {
                report.push(json!({ "layer": label, "refit": false, "reason": format!("{e:#}") }));
                continue;
            }
        };
        let w = pool
            .install(|| solve(&problem, ridge))
            .with_context(|| format!("node {label}: least squares"))?;
        let err = |w: &Mat<f64>| {
            let r = &problem.a * w - &problem.y;
            r.norm_l2() / problem.y.norm_l2().max(f64::MIN_POSITIVE)
        };
        let (before, after) = pool.install(|| (err(&problem.w0), err(&w)));
        if !(after.is_finite() && after < before) {
            report.push(json!({ "layer": label, "refit": false,
                "reason": "the fit is no better than the pruned weights", "rel_err": before }));
            continue;
        }
        let patch = write(g, layer, &w)?;
        patch.apply(&mut model.graph)?;
        report.push(json!({
            "layer": label,
            "refit": true,
            "rows": problem.a.nrows(),
            "features": problem.a.ncols(),
            "rel_err_before": before,
            "rel_err_after": after,
        }));
    }
    Ok(report)
}

/// (G + λI)·W = Aᵀ·Y + λ·W0, G = AᵀA, λ = ridge · trace(G) / d.
fn solve(p: &Problem, ridge: f64) -> Result<Mat<f64>> {
    let at = p.a.transpose();
    let mut gram = at * &p.a;
    let d = gram.nrows();
    let trace: f64 = (0..d).map(|i| gram[(i, i)]).sum();
    let lambda = (ridge * trace / d.max(1) as f64).max(1e-12);
    for i in 0..d {
        gram[(i, i)] += lambda;
    }
    let mut rhs = at * &p.y;
    for j in 0..rhs.ncols() {
        for i in 0..d {
            rhs[(i, j)] += lambda * p.w0[(i, j)];
        }
    }
    let llt = gram
        .llt(Side::Lower)
        .map_err(|e| anyhow::anyhow!("not positive definite: {e:?}"))?;
    Ok(llt.solve(&rhs))
}

fn f32s(g: &Graph, node: NodeId, slot: usize) -> Result<Option<(Vec<i64>, Vec<f32>)>> {
    let Some(o) = g.input(node, slot) else {
        return Ok(None);
    };
    let t = g.const_tensor(o).context("weights are not constant")?;
    Ok(Some((t.dims.clone(), t.to_f32()?)))
}

/// Rows `0, step, 2·step, …` of `total`, at most MAX_ROWS.
/// Each captured tensor's values as f32.
fn f32_values(tensors: &[runtime::Tensor]) -> Result<Vec<Vec<f32>>> {
    tensors.iter().map(|t| t.to_f32_vec()).collect()
}

fn rows(total: usize) -> Vec<usize> {
    let step = total.div_ceil(MAX_ROWS).max(1);
    (0..total).step_by(step).collect()
}

/// A 2-D Conv's pads, strides and dilations. They are from the file,
/// unbounded: past any dim (MAX_ELEMENTS) they mean nothing, and within it
/// the window arithmetic of [`problem`] stays inside i64.
fn window(op: &Operator) -> Result<(Vec<i64>, Vec<i64>, Vec<i64>)> {
    let pads = op.attr_ints("pads").map_or(vec![0; 4], <[i64]>::to_vec);
    let st = op.attr_ints("strides").map_or(vec![1; 2], <[i64]>::to_vec);
    let dl = op
        .attr_ints("dilations")
        .map_or(vec![1; 2], <[i64]>::to_vec);
    ensure!(
        pads.len() == 4 && st.len() == 2 && dl.len() == 2,
        "unexpected attributes"
    );
    let max = crate::validate::MAX_ELEMENTS as i64;
    ensure!(
        [&pads, &st, &dl]
            .iter()
            .all(|v| v.iter().all(|&x| (0..=max).contains(&x))),
        "pads {pads:?}, strides {st:?} or dilations {dl:?} out of range"
    );
    Ok((pads, st, dl))
}

fn problem(
    g: &Graph,
    layer: &Layer,
    inputs: &[runtime::Tensor],
    targets: &[runtime::Tensor],
) -> Result<Problem> {
    let op = g.op(layer.node).expect("an operator");
    let (wd, w) = f32s(g, layer.node, 1)?.context("no weight")?;
    let bias = f32s(g, layer.node, 2)?;
    let keep = &layer.kept_out;
    match op.op_type.as_str() {
        "Conv" => {
            ensure!(wd.len() == 4, "only 2-D convolutions are refitted");
            let auto = op.attr("auto_pad").map(|a| format!("{:?}", a.value));
            ensure!(
                auto.is_none_or(|s| s.contains("NOTSET")),
                "auto_pad is not refitted"
            );
            let (m, c, kh, kw) = (
                wd[0] as usize,
                wd[1] as usize,
                wd[2] as usize,
                wd[3] as usize,
            );
            let (pads, st, dl) = window(op)?;
            let nb = usize::from(bias.is_some());
            let d = c * kh * kw + nb;
            // Positions (sample, n, oh, ow) over all samples.
            let mut pos = vec![];
            for (s, (x, y)) in inputs.iter().zip(targets).enumerate() {
                let (xs, ys) = (x.shape(), y.shape());
                ensure!(
                    xs.len() == 4 && ys.len() == 4 && xs[1] == c,
                    "unexpected shapes"
                );
                for n in 0..ys[0] {
                    for oh in 0..ys[2] {
                        for ow in 0..ys[3] {
                            pos.push((s, n, oh, ow));
                        }
                    }
                }
            }
            let pick = rows(pos.len());
            let (xv, yv) = (f32_values(inputs)?, f32_values(targets)?);
            let mut a = Mat::<f64>::zeros(pick.len(), d);
            let mut yt = Mat::<f64>::zeros(pick.len(), keep.len());
            for (r, &p) in pick.iter().enumerate() {
                let (s, n, oh, ow) = pos[p];
                let (xs, ys) = (inputs[s].shape(), targets[s].shape());
                let (h, wi) = (xs[2] as i64, xs[3] as i64);
                for ci in 0..c {
                    for i in 0..kh {
                        for j in 0..kw {
                            let ih = oh as i64 * st[0] - pads[0] + i as i64 * dl[0];
                            let iw = ow as i64 * st[1] - pads[1] + j as i64 * dl[1];
                            if ih >= 0 && ih < h && iw >= 0 && iw < wi {
                                let at =
                                    ((n * xs[1] + ci) * xs[2] + ih as usize) * xs[3] + iw as usize;
                                a[(r, (ci * kh + i) * kw + j)] = f64::from(xv[s][at]);
                            }
                        }
                    }
                }
                if nb == 1 {
                    a[(r, d - 1)] = 1.0;
                }
                for (k, &o) in keep.iter().enumerate() {
                    let at = ((n * ys[1] + o) * ys[2] + oh) * ys[3] + ow;
                    yt[(r, k)] = f64::from(yv[s][at]);
                }
            }
            let per = c * kh * kw;
            let w0 = Mat::from_fn(d, m, |f, mo| {
                if f < per {
                    f64::from(w[mo * per + f])
                } else {
                    f64::from(bias.as_ref().expect("nb = 1").1[mo])
                }
            });
            Ok(Problem { a, y: yt, w0 })
        }
        "Gemm" | "MatMul" => {
            let gemm = op.op_type == "Gemm";
            let trans_b = gemm && op.attr_int("transB", 0) != 0;
            if gemm {
                ensure!(
                    op.attr_float("alpha", 1.0) == 1.0 && op.attr_float("beta", 1.0) == 1.0,
                    "alpha or beta is not 1"
                );
            }
            let (k, m) = if trans_b {
                (wd[1] as usize, wd[0] as usize)
            } else {
                (wd[0] as usize, wd[1] as usize)
            };
            let bias = if gemm { bias } else { None };
            if let Some((bd, _)) = &bias {
                ensure!(
                    bd.iter().product::<i64>() as usize == m,
                    "C is not one value per column"
                );
            }
            let nb = usize::from(bias.is_some());
            let d = k + nb;
            let mut pos = vec![];
            for (s, (x, y)) in inputs.iter().zip(targets).enumerate() {
                ensure!(x.shape().last() == Some(&k), "unexpected shapes");
                let n = x.shape().iter().product::<usize>() / k.max(1);
                ensure!(
                    y.shape().iter().product::<usize>() / n.max(1)
                        == *y.shape().last().unwrap_or(&0),
                    "unexpected shapes"
                );
                pos.extend((0..n).map(|r| (s, r)));
            }
            let pick = rows(pos.len());
            let (xv, yv) = (f32_values(inputs)?, f32_values(targets)?);
            let mut a = Mat::<f64>::zeros(pick.len(), d);
            let mut yt = Mat::<f64>::zeros(pick.len(), keep.len());
            for (r, &p) in pick.iter().enumerate() {
                let (s, row) = pos[p];
                let ycols = *targets[s].shape().last().expect("rank checked");
                for f in 0..k {
                    a[(r, f)] = f64::from(xv[s][row * k + f]);
                }
                if nb == 1 {
                    a[(r, d - 1)] = 1.0;
                }
                for (j, &o) in keep.iter().enumerate() {
                    yt[(r, j)] = f64::from(yv[s][row * ycols + o]);
                }
            }
            let w0 = Mat::from_fn(d, m, |f, mo| {
                if f < k {
                    f64::from(if trans_b {
                        w[mo * k + f]
                    } else {
                        w[f * m + mo]
                    })
                } else {
                    f64::from(bias.as_ref().expect("nb = 1").1[mo])
                }
            });
            Ok(Problem { a, y: yt, w0 })
        }
        other => bail!("{other} is not refitted"),
    }
}

/// The patch writing the fitted weights (and bias) back in the layer's layout.
fn write(g: &Graph, layer: &Layer, w: &Mat<f64>) -> Result<Patch> {
    let op = g.op(layer.node).expect("an operator");
    let (wd, _) = f32s(g, layer.node, 1)?.context("no weight")?;
    let bias = if op.op_type == "MatMul" {
        None
    } else {
        f32s(g, layer.node, 2)?
    };
    let m = w.ncols();
    let d = w.nrows() - usize::from(bias.is_some());
    let values: Vec<f32> = match op.op_type.as_str() {
        "Gemm" if op.attr_int("transB", 0) == 0 => {
            (0..d * m).map(|i| w[(i / m, i % m)] as f32).collect()
        }
        "MatMul" => (0..d * m).map(|i| w[(i / m, i % m)] as f32).collect(),
        // Conv [M, C, kh, kw] and Gemm transB [N, K]: row o is column o of w.
        _ => (0..d * m).map(|i| w[(i % d, i / d)] as f32).collect(),
    };
    let mut patch = Patch::new("prune-channels refit");
    super::replace_input(g, &mut patch, layer.node, 1, Tensor::from_f32(wd, &values));
    if let Some((bd, _)) = bias {
        let b: Vec<f32> = (0..m).map(|o| w[(d, o)] as f32).collect();
        super::replace_input(g, &mut patch, layer.node, 2, Tensor::from_f32(bd, &b));
    }
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::window;
    use crate::ir::{Attribute, Operator};

    #[test]
    fn conv_windows_past_any_dim_are_not_refitted() {
        let conv = |name, v: &[i64]| Operator::new("Conv", 2, vec![Attribute::ints(name, v)]);
        // i·2^62 for a 3-tall kernel overflows i64.
        let e = window(&conv("dilations", &[1 << 62, 1])).unwrap_err();
        assert!(format!("{e}").contains("out of range"), "{e}");
        assert!(window(&conv("pads", &[0, 0, i64::MAX, 0])).is_err());
        assert!(window(&conv("strides", &[-1, 1])).is_err());
        let (pads, st, dl) = window(&conv("strides", &[2, 2])).unwrap();
        assert_eq!((pads, st, dl), (vec![0; 4], vec![2, 2], vec![1, 1]));
    }
}
