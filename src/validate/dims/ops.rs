//! The dims rules of `infer` that take more than a line: numpy
//! broadcasting, MatMul, convolution and pool windows, Reshape, Concat,
//! reductions, Squeeze/Unsqueeze, Constant.

use super::{show, Dims};
use crate::ir::{AttrValue, Operator};

/// Numpy broadcasting; two known dims other than 1 that differ are refused.
pub(super) fn broadcast(all: &[Dims]) -> Result<Dims, String> {
    let rank = all.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        // Dim i of the result, counted from the right in each input.
        let at = |d: &Dims| (rank - i <= d.len()).then(|| d[d.len() - (rank - i)]);
        let mut known: Option<i64> = None;
        let mut all_ones = true;
        for d in all.iter().filter_map(at) {
            match d {
                Some(1) => {}
                Some(v) => {
                    all_ones = false;
                    if known.is_some_and(|k| k != v) {
                        return Err(format!(
                            "its inputs' dims {} do not broadcast (dim {v} against {})",
                            all.iter()
                                .map(|d| show(d))
                                .collect::<Vec<_>>()
                                .join(" and "),
                            known.unwrap_or_default()
                        ));
                    }
                    known = Some(v);
                }
                None => all_ones = false,
            }
        }
        out.push(known.or(all_ones.then_some(1)));
    }
    Ok(out)
}

/// `[..., M, K] x [..., K, N] -> [..., M, N]`, a 1-D operand promoted and its
/// dim dropped again; inner dims that differ are refused.
pub(super) fn matmul(a: &Dims, b: &Dims) -> Result<Option<Dims>, String> {
    if a.is_empty() || b.is_empty() {
        return Ok(None);
    }
    let k_a = a[a.len() - 1];
    let k_b = if b.len() == 1 { b[0] } else { b[b.len() - 2] };
    if let (Some(x), Some(y)) = (k_a, k_b) {
        if x != y {
            return Err(format!(
                "its inputs {} and {} do not multiply: inner dims {x} and {y} differ",
                show(a),
                show(b)
            ));
        }
    }
    let batch_a = if a.len() > 2 {
        a[..a.len() - 2].to_vec()
    } else {
        vec![]
    };
    let batch_b = if b.len() > 2 {
        b[..b.len() - 2].to_vec()
    } else {
        vec![]
    };
    let mut out = broadcast(&[batch_a, batch_b])?;
    if a.len() >= 2 {
        out.push(a[a.len() - 2]);
    }
    if b.len() >= 2 {
        out.push(b[b.len() - 1]);
    }
    Ok(Some(out))
}

/// The product of dims, when all are known (and it fits).
pub(super) fn product(dims: &[Option<i64>]) -> Option<i64> {
    dims.iter()
        .try_fold(1i64, |acc, d| d.and_then(|d| acc.checked_mul(d)))
}

/// Spatial output dims of a convolution or pool (no `ceil_mode`): per dim
/// `floor((in + pads - dilation·(kernel-1) - 1) / stride) + 1`, or
/// `ceil(in / stride)` under `auto_pad` SAME_*. A window larger than its
/// padded input is refused: no runtime computes it (found by
/// `benches/fuzz.rs`: a dilation of 2^31 - 1).
pub(super) fn window_dims(
    op: &Operator,
    x: &[Option<i64>],
    kernel: &[Option<i64>],
) -> Result<Option<Dims>, String> {
    if op.attr_int("ceil_mode", 0) != 0 {
        return Ok(None);
    }
    let mut larger = None;
    let dims = spatial_dims(op, x, kernel, &mut larger);
    match larger {
        Some((axis, span, room)) => Err(format!(
            "its window spans {span} at spatial axis {axis}, more than its padded input's {room}"
        )),
        None => Ok(dims),
    }
}

/// [`window_dims`]' arithmetic; `larger` is set to (axis, window, padded
/// input) where the window does not fit.
fn spatial_dims(
    op: &Operator,
    x: &[Option<i64>],
    kernel: &[Option<i64>],
    larger: &mut Option<(usize, i128, i128)>,
) -> Option<Dims> {
    let n = x.len();
    let list = |name: &str, default: i64, len: usize| -> Option<Vec<i64>> {
        match op.attr_ints(name) {
            Some(v) if v.len() == len => Some(v.to_vec()),
            Some(_) => None,
            None => Some(vec![default; len]),
        }
    };
    let strides = list("strides", 1, n)?;
    let dilations = list("dilations", 1, n)?;
    let pads = list("pads", 0, 2 * n)?;
    let auto_pad = match op.attr("auto_pad").map(|a| &a.value) {
        Some(AttrValue::String(s)) => String::from_utf8_lossy(s).into_owned(),
        _ => "NOTSET".into(),
    };
    if strides.iter().chain(&dilations).any(|&v| v <= 0) {
        return None;
    }
    let dims = (0..n)
        .map(|i| {
            let d = x[i]?;
            let stride = strides[i] as i128;
            let made = match auto_pad.as_str() {
                "SAME_UPPER" | "SAME_LOWER" => (d as i128 + stride - 1) / stride,
                "NOTSET" | "VALID" | "" => {
                    let k = kernel[i]? as i128;
                    let pad = if auto_pad == "VALID" {
                        0
                    } else {
                        pads[i] as i128 + pads[i + n] as i128
                    };
                    let span = dilations[i] as i128 * (k - 1) + 1;
                    let room = d as i128 + pad - span;
                    if room < 0 {
                        larger.get_or_insert((i, span, d as i128 + pad));
                        return None;
                    }
                    room / stride + 1
                }
                _ => return None,
            };
            i64::try_from(made).ok()
        })
        .collect();
    Some(dims)
}

/// Reshape to a constant shape: 0 copies the input's dim (unless
/// `allowzero`), one -1 takes what is left.
/// Reshape to a constant shape; an input whose known element count the
/// shape cannot hold is refused, as onnx's inference refuses it (found by
/// fuzzing: 6 elements into `[4, -1]`).
pub(super) fn reshape(
    x: Option<Dims>,
    shape: &[i64],
    op: &Operator,
) -> Result<Option<Dims>, String> {
    let allowzero = op.attr_int("allowzero", 0) != 0;
    let mut out: Dims = shape
        .iter()
        .enumerate()
        .map(|(i, &v)| match v {
            0 if !allowzero => x.as_ref().and_then(|x| x.get(i).copied().flatten()),
            v if v >= 0 => Some(v),
            _ => None,
        })
        .collect();
    let total = x.as_ref().and_then(|x| product(x));
    let hole = shape.iter().position(|&v| v == -1);
    let rest = product(
        &out.iter()
            .enumerate()
            .filter(|&(i, _)| Some(i) != hole)
            .map(|(_, d)| *d)
            .collect::<Vec<_>>(),
    );
    if let (Some(t), Some(r)) = (total, rest) {
        let fits = match hole {
            Some(_) => (r > 0 && t % r == 0) || (r == 0 && t == 0),
            None => r == t,
        };
        if !fits {
            return Err(format!(
                "its input's {t} elements do not fit the shape {shape:?}"
            ));
        }
    }
    if let Some(hole) = hole {
        out[hole] = match (total, rest) {
            (Some(t), Some(r)) if r > 0 => Some(t / r),
            _ => None,
        };
    }
    Ok(Some(out))
}

pub(super) fn concat(all: &[Dims], axis: i64) -> Option<Dims> {
    let first = all.first()?;
    let r = first.len();
    if all.iter().any(|d| d.len() != r) {
        return None;
    }
    let axis = if axis < 0 { axis + r as i64 } else { axis };
    let axis = usize::try_from(axis).ok().filter(|&a| a < r)?;
    Some(
        (0..r)
            .map(|i| {
                if i == axis {
                    all.iter()
                        .try_fold(0i64, |acc, d| d[i].and_then(|v| acc.checked_add(v)))
                } else {
                    all.iter().find_map(|d| d[i])
                }
            })
            .collect(),
    )
}

/// Reductions (`axes` attribute or constant input; none: every axis, or
/// none with `noop_with_empty_axes`) and ArgMax/ArgMin (`axis`).
pub(super) fn reduce(
    op: &Operator,
    x: &Dims,
    axes_input: Option<Vec<i64>>,
    has_axes_input: bool,
) -> Option<Dims> {
    let r = x.len() as i64;
    let keep = op.attr_int("keepdims", 1) != 0;
    let axes: Vec<i64> = if matches!(op.op_type.as_str(), "ArgMax" | "ArgMin") {
        vec![op.attr_int("axis", 0)]
    } else if let Some(a) = op.attr_ints("axes") {
        a.to_vec()
    } else if has_axes_input {
        axes_input?
    } else {
        vec![]
    };
    if axes.is_empty() && op.attr_int("noop_with_empty_axes", 0) != 0 {
        return Some(x.clone());
    }
    let mut reduced = vec![axes.is_empty(); x.len()];
    for a in axes {
        let a = if a < 0 { a + r } else { a };
        *reduced.get_mut(usize::try_from(a).ok()?)? = true;
    }
    Some(
        x.iter()
            .zip(reduced)
            .filter_map(|(&d, red)| match (red, keep) {
                (true, true) => Some(Some(1)),
                (true, false) => None,
                (false, _) => Some(d),
            })
            .collect(),
    )
}

pub(super) fn squeeze(
    unsqueeze: bool,
    x: &Dims,
    axes: Option<Vec<i64>>,
    has_axes_input: bool,
) -> Option<Dims> {
    if unsqueeze {
        let axes = axes?;
        let r = (x.len() + axes.len()) as i64;
        let mut at = vec![false; r as usize];
        for a in axes {
            let a = if a < 0 { a + r } else { a };
            *at.get_mut(usize::try_from(a).ok()?)? = true;
        }
        let mut rest = x.iter();
        return at
            .into_iter()
            .map(|new| {
                if new {
                    Some(Some(1))
                } else {
                    rest.next().copied()
                }
            })
            .collect();
    }
    match axes {
        Some(axes) => {
            let r = x.len() as i64;
            let mut drop = vec![false; x.len()];
            for a in axes {
                let a = if a < 0 { a + r } else { a };
                *drop.get_mut(usize::try_from(a).ok()?)? = true;
            }
            Some(
                x.iter()
                    .zip(drop)
                    .filter(|(_, d)| !d)
                    .map(|(&v, _)| v)
                    .collect(),
            )
        }
        // Without axes every dim of 1 goes: known only when every dim is.
        None if !has_axes_input && x.iter().all(Option::is_some) => {
            Some(x.iter().filter(|d| **d != Some(1)).copied().collect())
        }
        None => None,
    }
}

pub(super) fn constant_dims(op: &Operator) -> Option<Dims> {
    let a = op.attributes.iter().find(|a| a.ref_attr_name.is_none())?;
    match &a.value {
        AttrValue::Tensor(t) => Some(t.dims.iter().map(|&d| Some(d)).collect()),
        AttrValue::Float(_) | AttrValue::Int(_) | AttrValue::String(_) => Some(vec![]),
        AttrValue::Floats(v) => Some(vec![Some(v.len() as i64)]),
        AttrValue::Ints(v) => Some(vec![Some(v.len() as i64)]),
        AttrValue::Strings(v) => Some(vec![Some(v.len() as i64)]),
        _ => None,
    }
}
