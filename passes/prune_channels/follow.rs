//! How channels flow through one node: which outputs carry which channel
//! spaces, what constants must be cut, which spaces are tied together.

use super::*;

const UNARY: &[&str] = &[
    "Relu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Clip",
    "Identity",
    "Abs",
    "Neg",
    "Exp",
    "Log",
    "Sqrt",
    "Erf",
    "Gelu",
    "Mish",
    "Cast",
    "Floor",
    "Ceil",
    "Round",
    "Reciprocal",
    "ThresholdedRelu",
    "Dropout",
];
const POOLS: &[&str] = &[
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "LpPool",
];
const BINARY: &[&str] = &[
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu",
];

impl Analysis {
    /// How channels flow through node `id`. An error means: not followed
    /// (the caller leaves the spaces of its inputs alone).
    pub(super) fn follow(&self, g: &Graph, id: NodeId) -> Result<Follow> {
        let op = g.op(id).expect("an operator");
        let ins = g.inputs(id);
        let lay = |slot: usize| {
            ins.get(slot)
                .copied()
                .flatten()
                .and_then(|o| self.layouts.get(&o))
        };
        let any_laden = ins.iter().flatten().any(|o| self.layouts.contains_key(o));
        ensure!(
            g.implicit_inputs(id)
                .iter()
                .all(|o| !self.layouts.contains_key(o)),
            "used inside a subgraph"
        );
        if !op.is_default_domain() {
            ensure!(!any_laden, "operator of another domain");
            return Ok(Follow::default());
        }
        let konst = |slot: usize| {
            ins.get(slot)
                .copied()
                .flatten()
                .and_then(|o| g.const_tensor(o))
        };
        let f32_const = |slot: usize| -> Result<&Tensor> {
            let t = konst(slot).context("weights are not a constant")?;
            ensure!(t.dtype == DataType::FLOAT, "weights are not f32");
            Ok(t)
        };
        let only_output = || -> Result<()> {
            ensure!(
                (1..g.node(id).outputs.len()).all(|s| !g.is_used(Outlet::new(id, s))),
                "a second output is used"
            );
            Ok(())
        };
        // Channels reach the first input only, not the parameters after it.
        let only_first_laden = || -> Result<()> {
            ensure!(
                ins.iter()
                    .skip(1)
                    .all(|o| o.is_none_or(|o| !self.layouts.contains_key(&o))),
                "channels reach a parameter"
            );
            Ok(())
        };
        let mut f = Follow::default();
        let t = op.op_type.as_str();
        match t {
            "Conv" | "ConvTranspose" => {
                only_output()?;
                let w = f32_const(1)?;
                ensure!(w.dims.len() >= 3, "weight rank below 3");
                if let Some(b) = ins.get(2).copied().flatten() {
                    ensure!(
                        g.const_tensor(b)
                            .is_some_and(|b| b.dtype == DataType::FLOAT),
                        "bias is not an f32 constant"
                    );
                }
                let group = op.attr_int("group", 1);
                let (w_in, w_out) = if t == "Conv" { (1, 0) } else { (0, 1) };
                let c_in = if t == "Conv" {
                    // `group` is from the file, unbounded.
                    w.dims[1]
                        .checked_mul(group)
                        .with_context(|| format!("group={group} overflows the input channels"))?
                } else {
                    w.dims[0]
                };
                if let Some(l) = lay(0) {
                    ensure!(l.axis == 1, "channels not on axis 1");
                    ensure!(self.size(&l.segs) as i64 == c_in, "input channels mismatch");
                }
                if group == 1 {
                    let m = w.dims[w_out] as usize;
                    if let Some(l) = lay(0) {
                        f.cuts.push((1, w_in, l.segs.clone()));
                        if t == "Conv" {
                            f.consumer = Some((l.segs.clone(), m));
                        }
                    }
                    f.new_space = Some((m, w_out));
                    f.cuts.push((1, w_out, vec![]));
                    if ins.get(2).copied().flatten().is_some() {
                        f.cuts.push((2, 0, vec![]));
                    }
                    let rank = w.dims.len();
                    f.outputs.push((
                        0,
                        Layout {
                            rank,
                            axis: 1,
                            segs: vec![],
                        },
                    ));
                } else if t == "Conv" && w.dims[1] == 1 && w.dims[0] == group {
                    // Depthwise: output channel c is input channel c.
                    if let Some(l) = lay(0) {
                        f.cuts.push((1, 0, l.segs.clone()));
                        if ins.get(2).copied().flatten().is_some() {
                            f.cuts.push((2, 0, l.segs.clone()));
                        }
                        f.group = Some(l.segs.clone());
                        f.outputs.push((0, l.clone()));
                    }
                } else {
                    ensure!(lay(0).is_none(), "grouped (not depthwise) convolution");
                }
            }
            "Gemm" => {
                let b = konst(1);
                let Some(b) = b.filter(|b| b.dtype == DataType::FLOAT && b.dims.len() == 2) else {
                    ensure!(!any_laden, "B is not an f32 2-D constant");
                    return Ok(f);
                };
                ensure!(lay(1).is_none(), "channels reach B");
                let trans_b = op.attr_int("transB", 0) != 0;
                let (k_axis, n_axis) = if trans_b { (1, 0) } else { (0, 1) };
                if let Some(l) = lay(0) {
                    ensure!(op.attr_int("transA", 0) == 0, "transA=1");
                    ensure!(l.rank == 2 && l.axis == 1, "input channels not on axis 1");
                    ensure!(
                        self.size(&l.segs) as i64 == b.dims[k_axis],
                        "input channels mismatch"
                    );
                    f.cuts.push((1, k_axis, l.segs.clone()));
                    f.consumer = Some((l.segs.clone(), b.dims[n_axis] as usize));
                }
                let n = b.dims[n_axis];
                if let Some(c) = ins.get(2).copied().flatten() {
                    ensure!(lay(2).is_none(), "channels reach C");
                    let c = g.const_tensor(c).context("C is not a constant")?;
                    ensure!(c.dtype == DataType::FLOAT, "C is not f32");
                    match c.dims.last() {
                        Some(&d) if d == n => f.cuts.push((2, c.dims.len() - 1, vec![])),
                        Some(&1) | None => {}
                        _ => bail!("C does not broadcast per column"),
                    }
                }
                f.new_space = Some((n as usize, n_axis));
                f.cuts.push((1, n_axis, vec![]));
                f.outputs.push((
                    0,
                    Layout {
                        rank: 2,
                        axis: 1,
                        segs: vec![],
                    },
                ));
            }
            "MatMul" => {
                let b = konst(1).filter(|b| b.dtype == DataType::FLOAT && b.dims.len() == 2);
                let Some(b) = b else {
                    ensure!(!any_laden, "B is not an f32 2-D constant");
                    return Ok(f);
                };
                let rank = match lay(0) {
                    Some(l) => {
                        ensure!(l.axis + 1 == l.rank, "channels not on the last axis");
                        ensure!(
                            self.size(&l.segs) as i64 == b.dims[0],
                            "input channels mismatch"
                        );
                        f.cuts.push((1, 0, l.segs.clone()));
                        f.consumer = Some((l.segs.clone(), b.dims[1] as usize));
                        Some(l.rank)
                    }
                    None => ins[0].and_then(|a| g.known_rank(a)),
                };
                if let Some(rank) = rank.filter(|&r| r >= 2) {
                    f.new_space = Some((b.dims[1] as usize, 1));
                    f.cuts.push((1, 1, vec![]));
                    let layout = Layout {
                        rank,
                        axis: rank - 1,
                        segs: vec![],
                    };
                    f.outputs.push((0, layout));
                }
            }
            "BatchNormalization" => {
                only_output()?;
                if let Some(l) = lay(0) {
                    ensure!(l.axis == 1, "channels not on axis 1");
                    for slot in 1..5 {
                        let p = f32_const(slot)?;
                        ensure!(p.numel() == self.size(&l.segs), "parameter size mismatch");
                        f.cuts.push((slot, 0, l.segs.clone()));
                    }
                    f.outputs.push((0, l.clone()));
                }
            }
            _ if UNARY.contains(&t) || POOLS.contains(&t) => {
                only_output()?;
                for o in ins.iter().skip(1).flatten() {
                    ensure!(!self.layouts.contains_key(o), "channels reach a parameter");
                    let scalar = g
                        .known_dims(*o)
                        .is_some_and(|d| d.iter().all(|&x| x == Some(1)));
                    ensure!(scalar, "a parameter is not a scalar");
                }
                if let Some(l) = lay(0) {
                    ensure!(!POOLS.contains(&t) || l.axis == 1, "channels not on axis 1");
                    f.outputs.push((0, l.clone()));
                }
            }
            "Resize" | "Upsample" => {
                if let Some(l) = lay(0) {
                    only_first_laden()?;
                    ensure!(ins.get(3).copied().flatten().is_none(), "Resize by sizes");
                    let slot = if t == "Upsample" || ins.len() == 2 {
                        1
                    } else {
                        2
                    };
                    let scales = konst(slot).context("scales are not a constant")?.to_f32()?;
                    ensure!(scales.get(l.axis) == Some(&1.0), "scales the channel axis");
                    f.outputs.push((0, l.clone()));
                }
            }
            "Pad" => {
                if let Some(l) = lay(0) {
                    only_first_laden()?;
                    ensure!(ins.get(3).copied().flatten().is_none(), "Pad with axes");
                    let pads = match op.attr_ints("pads") {
                        Some(p) => p.to_vec(),
                        None => konst(1).context("pads are not a constant")?.to_i64()?,
                    };
                    ensure!(
                        pads.len() == 2 * l.rank && pads[l.axis] == 0 && pads[l.axis + l.rank] == 0,
                        "pads the channel axis"
                    );
                    f.outputs.push((0, l.clone()));
                }
            }
            "Flatten" => {
                if let Some(l) = lay(0) {
                    ensure!(
                        op.attr_int("axis", 1) == 1 && l.axis == 1,
                        "flattens the channel axis with others"
                    );
                    let dims = ins[0]
                        .and_then(|o| g.known_dims(o))
                        .context("unknown input dims")?;
                    ensure!(
                        dims.len() == l.rank && dims[2..].iter().all(|&d| d == Some(1)),
                        "flattens the channel axis with spatial dims"
                    );
                    f.outputs.push((
                        0,
                        Layout {
                            rank: 2,
                            axis: 1,
                            segs: l.segs.clone(),
                        },
                    ));
                }
            }
            "Concat" => {
                if any_laden {
                    let ls: Vec<&Layout> = ins
                        .iter()
                        .map(|o| o.and_then(|o| self.layouts.get(&o)))
                        .collect::<Option<_>>()
                        .context("an input has no channel map")?;
                    let first = ls[0];
                    let axis = op.attr_int("axis", 0);
                    let axis = if axis < 0 {
                        axis + first.rank as i64
                    } else {
                        axis
                    } as usize;
                    ensure!(
                        ls.iter()
                            .all(|l| l.rank == first.rank && l.axis == first.axis),
                        "inputs differ in channel axis"
                    );
                    if axis == first.axis {
                        let segs = ls.iter().flat_map(|l| l.segs.iter().copied()).collect();
                        f.outputs.push((
                            0,
                            Layout {
                                rank: first.rank,
                                axis,
                                segs,
                            },
                        ));
                    } else {
                        for l in &ls[1..] {
                            self.check_same(first, l)?;
                            f.unions.push((first.segs.clone(), l.segs.clone()));
                        }
                        f.outputs.push((0, first.clone()));
                    }
                }
            }
            "Split" => {
                if let Some(l) = lay(0) {
                    only_first_laden()?;
                    let axis = op.attr_int("axis", 0);
                    let axis = if axis < 0 { axis + l.rank as i64 } else { axis };
                    let n = g.node(id).outputs.len();
                    if axis != l.axis as i64 {
                        // Along another axis: every part keeps all the channels.
                        f.outputs.extend((0..n).map(|i| (i, l.clone())));
                    } else {
                        let sizes = split_sizes(g, id, self.size(&l.segs))?;
                        f.split = Some((l.clone(), sizes));
                    }
                }
            }
            _ if BINARY.contains(&t) => {
                if !any_laden {
                    return Ok(f);
                }
                let first = ins
                    .iter()
                    .flatten()
                    .find_map(|o| self.layouts.get(o))
                    .expect("laden");
                let from_end = first.rank - first.axis;
                let mut rank = 0;
                for o in ins.iter().flatten() {
                    let r = match self.layouts.get(o) {
                        Some(l) => l.rank,
                        None => g.known_rank(*o).context("an operand of unknown rank")?,
                    };
                    rank = rank.max(r);
                }
                for (slot, o) in ins.iter().enumerate() {
                    let Some(o) = *o else { continue };
                    if let Some(l) = self.layouts.get(&o) {
                        ensure!(
                            l.rank - l.axis == from_end,
                            "operands differ in channel axis"
                        );
                        self.check_same(first, l)?;
                        f.unions.push((first.segs.clone(), l.segs.clone()));
                        continue;
                    }
                    let dims = g.known_dims(o).context("an operand of unknown shape")?;
                    let Some(p) = dims.len().checked_sub(from_end) else {
                        continue;
                    };
                    match dims[p] {
                        Some(1) => {}
                        Some(d)
                            if d as usize == self.size(&first.segs)
                                && g.const_tensor(o)
                                    .is_some_and(|c| c.dtype == DataType::FLOAT) =>
                        {
                            f.cuts.push((slot, p, first.segs.clone()));
                        }
                        _ => {
                            bail!("an operand along the channels is not a per-channel f32 constant")
                        }
                    }
                }
                f.outputs.push((
                    0,
                    Layout {
                        rank,
                        axis: rank - from_end,
                        segs: first.segs.clone(),
                    },
                ));
            }
            _ => {
                ensure!(!any_laden, "not followed by this pass");
            }
        }
        Ok(f)
    }
}
