//! The two low-rank layers that replace a split one.

use super::*;

impl Svd {
    /// The two layers replacing `layer`.
    pub(super) fn patch(
        &self,
        g: &Graph,
        layer: &Layer,
        factors: &[(Mat<f64>, Mat<f64>)],
    ) -> Patch {
        let id = layer.node;
        let op = g.op(id).expect("an operator");
        // Read from the graph as it is now, not from the analysis: a layer
        // split before this one has rewired x, and the node ids its patch
        // freed may hold new nodes (PP-OCR det: a Conv read the weight
        // factor of the next split through its predecessor's old id).
        let (x, weight) = (
            g.input(id, 0).expect("checked: x"),
            g.input(id, 1).expect("checked: weight"),
        );
        let (a, b) = (factors[0].0.as_ref(), factors[0].1.as_ref());
        let r = a.ncols() as i64;
        let (k, n) = (layer.k as i64, layer.n as i64);
        let wname = g.outlet_name(weight).to_string();
        let y = Outlet::new(id, 0);
        let yname = g.outlet_name(y).to_string();
        let mut patch = Patch::new(format!("svd: {}", layer.name));
        let (first, second, wa, wb) = match layer.kind {
            Kind::MatMul => (
                Operator::new("MatMul", 2, vec![]),
                Operator::new("MatMul", 2, vec![]),
                Tensor::from_f32(vec![k, r], &linalg::to_rows(a)),
                Tensor::from_f32(vec![r, n], &linalg::to_rows(b)),
            ),
            Kind::Gemm(ta, tb) => {
                // The first Gemm keeps transA and the weight layout (transB);
                // the second carries alpha, beta and the bias.
                let mut first = Operator::new("Gemm", 2, vec![]);
                if ta {
                    first.set_attr(Attribute::int("transA", 1));
                }
                let mut second = op.clone();
                second
                    .attributes
                    .retain(|attr| ["alpha", "beta", "transB"].contains(&attr.name.as_str()));
                let (wa, wb) = if tb {
                    first.set_attr(Attribute::int("transB", 1));
                    (
                        Tensor::from_f32(vec![r, k], &linalg::to_rows(a.transpose())),
                        Tensor::from_f32(vec![n, r], &linalg::to_rows(b.transpose())),
                    )
                } else {
                    (
                        Tensor::from_f32(vec![k, r], &linalg::to_rows(a)),
                        Tensor::from_f32(vec![r, n], &linalg::to_rows(b)),
                    )
                };
                (first, second, wa, wb)
            }
            Kind::Conv(spatial, groups) => {
                let w = g.const_tensor(weight).expect("checked");
                let mut dims_a = w.dims.clone();
                dims_a[0] = r * groups as i64;
                let mut dims_b = vec![n * groups as i64, r];
                dims_b.extend(std::iter::repeat_n(1, spatial));
                let mut first = op.clone();
                first.arity = 2;
                let mut second = Operator::new("Conv", op.arity, vec![]);
                if op.attr_ints("kernel_shape").is_some() {
                    second.set_attr(Attribute::ints("kernel_shape", &vec![1; spatial]));
                }
                if groups > 1 {
                    second.set_attr(Attribute::int("group", groups as i64));
                }
                // Group j's A [K, r] holds its filter i in column i, so its
                // filters are the rows of Aᵀ; its 1×1 weight is Bᵀ [N, r]
                // (output o reads B[:, o]). Groups follow one another.
                let (mut wa, mut wb) = (vec![], vec![]);
                for (a, b) in factors {
                    wa.extend(linalg::to_rows(a.transpose()));
                    wb.extend(linalg::to_rows(b.transpose()));
                }
                (
                    first,
                    second,
                    Tensor::from_f32(dims_a, &wa),
                    Tensor::from_f32(dims_b, &wb),
                )
            }
        };
        let wa = patch.add_const(&format!("{wname}_svd_a"), wa);
        let wb = patch.add_const(&format!("{wname}_svd_b"), wb);
        let t = patch.add_op(
            Some(format!("{}_svd_a", layer.name)),
            first,
            vec![Some(x.into()), Some(wa)],
            &[&format!("{yname}_low_rank")],
        );
        let mut inputs = vec![Some(Patch::out(t, 0)), Some(wb)];
        if let Some(bias) = g.input(id, 2) {
            inputs.push(Some(bias.into()));
        }
        let out = patch.add_op(
            Some(format!("{}_svd_b", layer.name)),
            second,
            inputs,
            &[&yname],
        );
        patch.shunt(y, Patch::out(out, 0));
        patch.remove(id);
        // The old weight goes unless something else uses it (the bias stays).
        let w = weight;
        if !g.is_graph_output(w) && g.consumers(w).iter().all(|&(user, _)| user == id) {
            patch.remove(w.node);
        }
        patch
    }
}

/// The layer's weight as `M [K, N]` (`y = x·M`), one per group.
pub(super) fn weight_matrices(g: &Graph, layer: &Layer) -> Result<Vec<Mat<f64>>> {
    let w = g.const_tensor(layer.weight).context("weight")?.to_f32()?;
    let (k, n) = (layer.k, layer.n);
    Ok(match layer.kind {
        Kind::MatMul | Kind::Gemm(_, false) => vec![linalg::from_rows(k, n, &w)],
        Kind::Gemm(_, true) => vec![linalg::from_rows(n, k, &w).transpose().to_owned()],
        // [O, I/g·kh·kw]: group j owns filters j·N .. (j+1)·N.
        Kind::Conv(..) => w
            .chunks_exact(n * k)
            .map(|group| linalg::from_rows(n, k, group).transpose().to_owned())
            .collect(),
    })
}
