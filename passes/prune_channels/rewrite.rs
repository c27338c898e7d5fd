//! The patch that removes the pruned channels: every weight, bias and
//! constant along a channel axis cut, and the sizes of Splits rewritten.

use super::*;

impl Analysis {
    pub(super) fn rewrite(
        &self,
        g: &Graph,
        kept: &BTreeMap<usize, Vec<usize>>,
        opset: i64,
    ) -> Result<Patch> {
        let mut patch = Patch::new("prune-channels");
        let mut replaced: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (&(node, slot), cuts) in &self.cuts {
            let o = g.input(node, slot).expect("a cut input exists");
            let t = g.const_tensor(o).expect("a cut input is constant");
            let mut values = t.to_f32()?;
            let mut dims = t.dims.clone();
            let mut changed = false;
            for (axis, segs) in cuts {
                let idx = self.indices(segs, kept);
                ensure!(
                    dims[*axis] as usize == self.size(segs),
                    "node {}: input {slot} has {} channels on axis {axis}, the analysis says {}",
                    g.node(node).label(),
                    dims[*axis],
                    self.size(segs)
                );
                if idx.len() == dims[*axis] as usize {
                    continue;
                }
                values = take(&values, &dims, *axis, &idx);
                dims[*axis] = idx.len() as i64;
                changed = true;
            }
            if !changed {
                continue;
            }
            let name = g.outlet_name(o).to_string();
            let uses = g.consumers(o).len();
            let new = if uses == 1 && !g.is_graph_output(o) {
                patch.remove(o.node);
                patch.add_const(&name, Tensor::from_f32(dims, &values))
            } else {
                *replaced.entry(o.node).or_default() += 1;
                if replaced[&o.node] == uses && !g.is_graph_output(o) {
                    patch.remove(o.node);
                }
                patch.add_const(&format!("{name}_pruned"), Tensor::from_f32(dims, &values))
            };
            patch.rewire(node, slot, Some(new));
        }
        for (&node, parts) in &self.splits {
            let old: Vec<usize> = parts.iter().map(|p| self.size(p)).collect();
            let new: Vec<usize> = parts.iter().map(|p| self.indices(p, kept).len()).collect();
            if new == old {
                continue;
            }
            let mut op = g.op(node).expect("an operator").clone();
            let sizes: Vec<i64> = new.iter().map(|&n| n as i64).collect();
            let tensor = || Tensor::from_i64(vec![sizes.len() as i64], &sizes);
            if op.attr_ints("split").is_some() {
                op.set_attr(crate::ir::Attribute::ints("split", &sizes));
                patch.update(node, op);
            } else if let Some(o) = g.input(node, 1) {
                let name = g.outlet_name(o).to_string();
                let uses = g.consumers(o).len();
                *replaced.entry(o.node).or_default() += 1;
                if replaced[&o.node] == uses && !g.is_graph_output(o) {
                    patch.remove(o.node);
                }
                let name = if uses == 1 {
                    name
                } else {
                    format!("{name}_pruned")
                };
                let src = patch.add_const(&name, tensor());
                patch.rewire(node, 1, Some(src));
            } else {
                // No sizes: keep that form when it still gives the new parts.
                let total: usize = new.iter().sum();
                let by_form = match op.attr("num_outputs") {
                    Some(_) => split_sizes_of(total, new.len(), true),
                    None => split_sizes_of(total, new.len(), false),
                };
                if by_form.as_deref() == Some(&new[..]) {
                    continue;
                }
                if opset < 13 {
                    op.set_attr(crate::ir::Attribute::ints("split", &sizes));
                } else {
                    op.attributes.retain(|a| a.name != "num_outputs");
                    op.arity = op.arity.max(2);
                    let name = format!("{}_split", g.node(node).label());
                    let src = patch.add_const(&name, tensor());
                    patch.rewire(node, 1, Some(src));
                }
                patch.update(node, op);
            }
        }
        for (&node, segs) in &self.groups {
            let n = self.indices(segs, kept).len();
            if n != self.size(segs) {
                let mut op = g.op(node).expect("an operator").clone();
                op.set_attr(crate::ir::Attribute::int("group", n as i64));
                patch.update(node, op);
            }
        }
        for (&outlet, l) in &self.layouts {
            let n = self.indices(&l.segs, kept).len();
            if n == self.size(&l.segs) {
                continue;
            }
            let info = g.node(outlet.node).outputs[outlet.slot].info.as_ref();
            let Some(mut ty) = info.and_then(|i| i.ty.clone()) else {
                continue;
            };
            if let TypeKind::Tensor {
                shape: Some(dims), ..
            } = &mut ty.kind
            {
                if let Some(d) = dims.get_mut(l.axis) {
                    if matches!(d.value, DimValue::Known(_)) {
                        d.value = DimValue::Known(n as i64);
                        patch.set_type(outlet, ty);
                    }
                }
            }
        }
        Ok(patch)
    }
}

/// The channels of each output of Split `id` along an axis of `total`
/// channels: the `split` attribute (before opset 13), the `split` input (an
/// int64 constant, from opset 13), `num_outputs` (opset 18: parts of
/// ⌈total / n⌉, the last one smaller), or equal parts.
pub(super) fn split_sizes(g: &Graph, id: NodeId, total: usize) -> Result<Vec<usize>> {
    let op = g.op(id).expect("an operator");
    let n = g.node(id).outputs.len();
    let sizes: Vec<i64> = if let Some(s) = op.attr_ints("split") {
        s.to_vec()
    } else if let Some(o) = g.input(id, 1) {
        let t = g
            .const_tensor(o)
            .context("split sizes are not a constant")?;
        t.to_i64()?
    } else {
        let num_outputs = op.attr("num_outputs").is_some();
        if num_outputs {
            let parts = op.attr_int("num_outputs", 0);
            ensure!(parts as usize == n, "num_outputs differs from the outputs");
        }
        let sizes = split_sizes_of(total, n, num_outputs)
            .with_context(|| format!("{total} channels do not split in {n} parts"))?;
        sizes.into_iter().map(|x| x as i64).collect()
    };
    ensure!(sizes.len() == n, "split sizes differ from the outputs");
    ensure!(sizes.iter().all(|&x| x > 0), "an empty part");
    // Sizes from the file: a sum that wraps could pass for `total`.
    let sum = sizes.iter().try_fold(0i64, |n, &x| n.checked_add(x));
    ensure!(
        sum == Some(total as i64),
        "split sizes {sizes:?} do not add up to the {total} channels"
    );
    Ok(sizes.into_iter().map(|x| x as usize).collect())
}

/// The parts a Split without sizes makes of `total` channels in `n`: equal
/// parts, or with `num_outputs` (opset 18) parts of ⌈total / n⌉ and a smaller
/// last one. None when that form cannot make `n` non-empty parts.
pub(super) fn split_sizes_of(total: usize, n: usize, num_outputs: bool) -> Option<Vec<usize>> {
    if n == 0 {
        return None;
    }
    if !num_outputs {
        return (total % n == 0).then(|| vec![total / n; n]);
    }
    let chunk = total.div_ceil(n);
    let last = total.checked_sub(chunk * (n - 1)).filter(|&l| l > 0)?;
    Some(
        (0..n)
            .map(|i| if i + 1 < n { chunk } else { last })
            .collect(),
    )
}

/// The norm of each slice along `axis` of a tensor of `dims`.
pub(crate) fn channel_norms(values: &[f32], dims: &[i64], axis: usize, norm: Norm) -> Vec<f64> {
    let d = dims[axis] as usize;
    let inner: usize = dims[axis + 1..].iter().product::<i64>() as usize;
    let mut out = vec![0.0f64; d];
    for (i, &v) in values.iter().enumerate() {
        let c = (i / inner.max(1)) % d;
        let v = f64::from(v);
        out[c] += match norm {
            Norm::L1 => v.abs(),
            Norm::L2 => v * v,
        };
    }
    if norm == Norm::L2 {
        out.iter_mut().for_each(|x| *x = x.sqrt());
    }
    out
}

/// The slices `idx` (in order) along `axis` of a tensor of `dims`.
pub(crate) fn take(values: &[f32], dims: &[i64], axis: usize, idx: &[usize]) -> Vec<f32> {
    let d = dims[axis] as usize;
    let inner: usize = dims[axis + 1..].iter().product::<i64>() as usize;
    let outer: usize = dims[..axis].iter().product::<i64>() as usize;
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in idx {
            let start = (o * d + i) * inner;
            out.extend_from_slice(&values[start..start + inner]);
        }
    }
    out
}
