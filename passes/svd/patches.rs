//! A Conv's input windows (its im2col) and the rows of calibration inputs a
//! layer is fitted to.

use super::*;

/// The window a Conv (group 1, 1-D or 2-D, explicit pads) reads for each
/// output position, as 2-D (a 1-D Conv has height 1): its im2col, for
/// fitting to the data it sees.
#[derive(Clone, Debug)]
pub(super) struct Patches {
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pads_begin: [usize; 2],
    pads_end: [usize; 2],
}

impl Patches {
    pub(super) fn of(op: &Operator, kernel: &[usize]) -> std::result::Result<Patches, String> {
        let spatial = kernel.len();
        if spatial > 2 {
            return Err(format!("{spatial}-D Conv"));
        }
        if kernel.contains(&0) {
            return Err(format!("kernel {kernel:?}"));
        }
        let auto_pad = op.attr("auto_pad").and_then(|a| match &a.value {
            crate::ir::AttrValue::String(s) => Some(String::from_utf8_lossy(s).to_string()),
            _ => None,
        });
        if auto_pad.is_some_and(|p| p != "NOTSET") {
            return Err("auto_pad".into());
        }
        let ints =
            |name: &str, len: usize, default: i64| -> std::result::Result<Vec<usize>, String> {
                let v = op
                    .attr_ints(name)
                    .map_or(vec![default; len], <[i64]>::to_vec);
                // No dim exceeds MAX_ELEMENTS, so neither does a meaningful
                // amount; the bound keeps the window arithmetic in range.
                let max = crate::validate::MAX_ELEMENTS as i64;
                if v.len() != len || v.iter().any(|&d| !(0..=max).contains(&d)) {
                    return Err(format!("{name} {v:?}"));
                }
                Ok(v.into_iter().map(|d| d as usize).collect())
            };
        let (strides, dilations) = (ints("strides", spatial, 1)?, ints("dilations", spatial, 1)?);
        let pads = ints("pads", 2 * spatial, 0)?;
        // As 2-D: a 1-D Conv is a 1×k one.
        let two = |v: &[usize], fill: usize| {
            if v.len() == 2 {
                [v[0], v[1]]
            } else {
                [fill, v[0]]
            }
        };
        Ok(Patches {
            kernel: two(kernel, 1),
            strides: two(&strides, 1),
            dilations: two(&dilations, 1),
            pads_begin: two(&pads[..spatial], 0),
            pads_end: two(&pads[spatial..], 0),
        })
    }

    /// The rows `[C·kh·kw]` a Conv multiplies by its weights, for every
    /// output position of an input `[N, C, H, W]` (or `[N, C, W]`) whose
    /// global index (counting from `first`) is a multiple of `step`.
    pub(super) fn rows(
        &self,
        x: &[f32],
        shape: &[usize],
        first: usize,
        step: usize,
        out: &mut Vec<f32>,
    ) -> Result<usize> {
        let ([n, c, h, w], [oh, ow]) = self.geometry(shape)?;
        ensure!(
            x.len() == n * c * h * w,
            "input of {} values for shape {shape:?}",
            x.len()
        );
        let [kh, kw] = self.kernel;
        let mut index = first;
        for b in 0..n {
            for y in 0..oh {
                for xo in 0..ow {
                    index += 1;
                    if (index - 1) % step != 0 {
                        continue;
                    }
                    for ch in 0..c {
                        for i in 0..kh {
                            let row = (y * self.strides[0] + i * self.dilations[0]) as isize
                                - self.pads_begin[0] as isize;
                            for j in 0..kw {
                                let col = (xo * self.strides[1] + j * self.dilations[1]) as isize
                                    - self.pads_begin[1] as isize;
                                let inside = row >= 0
                                    && col >= 0
                                    && (row as usize) < h
                                    && (col as usize) < w;
                                out.push(if inside {
                                    x[((b * c + ch) * h + row as usize) * w + col as usize]
                                } else {
                                    0.0
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(n * oh * ow)
    }

    /// `[N, C, H, W]` of an input of `shape` and the output's `[H, W]`.
    pub(super) fn geometry(&self, shape: &[usize]) -> Result<([usize; 4], [usize; 2])> {
        let dims = match *shape {
            [n, c, h, w] => [n, c, h, w],
            [n, c, w] => [n, c, 1, w],
            _ => bail!("input shape {shape:?}"),
        };
        let size = |axis: usize, len: usize| {
            let span = self.dilations[axis] * (self.kernel[axis] - 1) + 1;
            let padded = len + self.pads_begin[axis] + self.pads_end[axis];
            if padded < span || self.strides[axis] == 0 {
                0
            } else {
                (padded - span) / self.strides[axis] + 1
            }
        };
        Ok((dims, [size(0, dims[2]), size(1, dims[3])]))
    }

    /// Output positions of an input of `shape` (for the sampling step).
    pub(super) fn positions(&self, shape: &[usize]) -> usize {
        self.geometry(shape)
            .map_or(0, |([n, ..], [oh, ow])| n * oh * ow)
    }
}

/// Most rows of calibration inputs used for a fit: past a few thousand,
/// more rows change a K×K covariance little and cost time.
const MAX_ROWS: usize = 8192;

/// A layer's captured inputs (one tensor per sample) as rows of the K
/// features its weights multiply (a Conv's input windows), at most
/// `MAX_ROWS` of them, evenly spaced (the same every run).
pub(super) fn activation_rows(
    samples: &[crate::runtime::Tensor],
    layer: &Layer,
) -> Result<Mat<f64>> {
    let k = layer.k;
    let mut flat: Vec<f32> = vec![];
    if let Some(Ok(patches)) = &layer.patches {
        let total: usize = samples.iter().map(|t| patches.positions(t.shape())).sum();
        let step = total.div_ceil(MAX_ROWS).max(1);
        let mut first = 0;
        for t in samples {
            first += patches.rows(&t.to_f32_vec()?, t.shape(), first, step, &mut flat)?;
        }
    } else {
        let mut all: Vec<f32> = vec![];
        for t in samples {
            let values = t.to_f32_vec()?;
            let shape = t.shape();
            if let Kind::Gemm(true, _) = layer.kind {
                // x is [K, M]: column j is row j.
                ensure!(shape.len() == 2 && shape[0] == k, "input shape {shape:?}");
                let m = shape[1];
                all.extend(
                    (0..m)
                        .flat_map(|j| (0..k).map(move |i| (i, j)))
                        .map(|(i, j)| values[i * m + j]),
                );
            } else {
                ensure!(
                    shape.last() == Some(&k),
                    "input shape {shape:?}, expected a last axis of {k}"
                );
                all.extend_from_slice(&values);
            }
        }
        let step = (all.len() / k).div_ceil(MAX_ROWS).max(1);
        flat = all
            .chunks_exact(k)
            .step_by(step)
            .flatten()
            .copied()
            .collect();
    }
    let rows = flat.len() / k;
    ensure!(rows > 0, "no rows");
    Ok(linalg::from_rows(rows, k, &flat))
}
