//! The channel groups: a union-find over channel spaces (a layer's output
//! channels, or parts of them once a Split cuts them), with why a group must
//! be left alone, and the importance score of each channel.

use super::*;

impl Analysis {
    pub(super) fn find(&self, mut s: usize) -> usize {
        while self.parent[s] != s {
            s = self.parent[s];
        }
        s
    }

    pub(super) fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        let (root, child) = (ra.min(rb), ra.max(rb));
        self.parent[child] = root;
        if self.blocked[root].is_none() {
            self.blocked[root] = self.blocked[child].take();
        }
    }

    pub(super) fn size(&self, segs: &[usize]) -> usize {
        segs.iter().map(|&s| self.spaces[s].size).sum()
    }

    pub(super) fn new_space(&mut self, space: Space) -> usize {
        let s = self.spaces.len();
        self.spaces.push(space);
        self.parent.push(s);
        self.blocked.push(None);
        s
    }

    /// The leaf spaces of `segs`, side by side.
    pub(super) fn leaves(&self, segs: &[usize]) -> Vec<usize> {
        let mut out = vec![];
        for &s in segs {
            if self.spaces[s].parts.is_empty() {
                out.push(s);
            } else {
                out.extend(self.leaves(&self.spaces[s].parts));
            }
        }
        out
    }

    /// The offsets between the leaves of `segs` (their inner boundaries).
    pub(super) fn boundaries(&self, segs: &[usize]) -> Vec<usize> {
        let mut out = vec![];
        let mut offset = 0;
        for s in self.leaves(segs) {
            if offset > 0 {
                out.push(offset);
            }
            offset += self.spaces[s].size;
        }
        out
    }

    /// Cuts every leaf of the group of leaf `leaf` in two, at `at` channels:
    /// the group becomes two groups (channel i of a member is still tied to
    /// channel i of the others), which inherit its reason to be left alone.
    pub(super) fn cut_group(&mut self, leaf: usize, at: usize) {
        let root = self.find(leaf);
        let members: Vec<usize> = (0..self.spaces.len())
            .filter(|&s| self.spaces[s].parts.is_empty() && self.find(s) == root)
            .collect();
        let blocked = self.blocked[root].clone();
        let mut firsts = vec![];
        let mut seconds = vec![];
        for m in members {
            let sp = &self.spaces[m];
            let (size, source, weight_axis, start, whole) =
                (sp.size, sp.source, sp.weight_axis, sp.start, sp.whole);
            let part = |start, size| Space {
                size,
                source,
                weight_axis,
                start,
                whole,
                parts: vec![],
            };
            let a = part(start, at);
            let b = part(start + at, size - at);
            let (a, b) = (self.new_space(a), self.new_space(b));
            self.spaces[m].parts = vec![a, b];
            firsts.push(a);
            seconds.push(b);
        }
        for half in [firsts, seconds] {
            for &x in &half[1..] {
                self.union(half[0], x);
            }
            let r = self.find(half[0]);
            self.blocked[r] = blocked.clone();
        }
    }

    /// Cuts leaves (with their groups) until each of `offsets` is a
    /// boundary between two leaves of `segs`.
    pub(super) fn refine(&mut self, segs: &[usize], offsets: &[usize]) {
        for &o in offsets {
            loop {
                let mut start = 0;
                let mut inside = None;
                for s in self.leaves(segs) {
                    let size = self.spaces[s].size;
                    if start < o && o < start + size {
                        inside = Some((s, o - start));
                        break;
                    }
                    start += size;
                }
                match inside {
                    Some((s, at)) => self.cut_group(s, at),
                    None => break,
                }
            }
        }
    }

    /// The leaves of `segs` covering channels `from..to` (boundaries, after `refine`).
    pub(super) fn range(&self, segs: &[usize], from: usize, to: usize) -> Vec<usize> {
        let mut out = vec![];
        let mut start = 0;
        for s in self.leaves(segs) {
            let end = start + self.spaces[s].size;
            if from <= start && end <= to {
                out.push(s);
            }
            start = end;
        }
        out
    }

    /// Ties two layouts of the same size channel by channel: both are cut
    /// at each other's boundaries, then their leaves are tied pairwise.
    pub(super) fn tie(&mut self, a: &[usize], b: &[usize]) {
        debug_assert_eq!(self.size(a), self.size(b));
        loop {
            let (ba, bb) = (self.boundaries(a), self.boundaries(b));
            if ba == bb {
                break;
            }
            let mut all: Vec<usize> = ba.into_iter().chain(bb).collect();
            all.sort_unstable();
            all.dedup();
            self.refine(a, &all);
            self.refine(b, &all);
        }
        for (x, y) in self.leaves(a).into_iter().zip(self.leaves(b)) {
            self.union(x, y);
        }
    }

    pub(super) fn block_layout(&mut self, l: &Layout, reason: &str) {
        for s in self.leaves(&l.segs) {
            let r = self.find(s);
            if self.blocked[r].is_none() {
                self.blocked[r] = Some(reason.to_string());
            }
        }
    }

    pub(super) fn visit(&mut self, g: &Graph, id: NodeId) {
        let laden: Vec<Layout> = g
            .inputs(id)
            .into_iter()
            .flatten()
            .chain(g.implicit_inputs(id))
            .filter_map(|o| self.layouts.get(&o).cloned())
            .collect();
        let op = g.op(id).expect("an operator");
        match self.follow(g, id) {
            Ok(f) => {
                for (a, b) in f.unions {
                    self.tie(&a, &b);
                }
                let mut outputs = f.outputs;
                if let Some((segs, n)) = f.consumer {
                    self.consumers.push(Consumer {
                        node: id,
                        segs,
                        out_space: f.new_space.map(|_| self.spaces.len()),
                        outputs: n,
                    });
                }
                if let Some((size, weight_axis)) = f.new_space {
                    let s = self.new_space(Space {
                        size,
                        source: id,
                        weight_axis,
                        start: 0,
                        whole: size,
                        parts: vec![],
                    });
                    for (_, l) in outputs.iter_mut() {
                        l.segs = vec![s];
                    }
                }
                for (slot, axis, segs) in f.cuts {
                    let segs = if segs.is_empty() {
                        vec![self.spaces.len() - 1]
                    } else {
                        segs
                    };
                    self.cuts.entry((id, slot)).or_default().push((axis, segs));
                }
                if let Some(segs) = f.group {
                    self.groups.insert(id, segs);
                }
                if let Some((l, sizes)) = f.split {
                    // Output i is the range of channels from offset o_i.
                    let ends: Vec<usize> = sizes
                        .iter()
                        .scan(0, |end, &n| {
                            *end += n;
                            Some(*end)
                        })
                        .collect();
                    self.refine(&l.segs, &ends[..ends.len() - 1]);
                    let mut parts = vec![];
                    for (i, &end) in ends.iter().enumerate() {
                        let segs = self.range(&l.segs, end - sizes[i], end);
                        let layout = Layout {
                            segs: segs.clone(),
                            ..l.clone()
                        };
                        outputs.push((i, layout));
                        parts.push(segs);
                    }
                    self.splits.insert(id, parts);
                }
                for (slot, l) in outputs {
                    self.layouts.insert(Outlet::new(id, slot), l);
                }
            }
            Err(e) => {
                let reason = format!("{} {}: {e}", op.op_type, g.node(id).label());
                for l in &laden {
                    self.block_layout(l, &reason);
                }
            }
        }
    }

    /// Two layouts tied channel by channel must have as many channels (their
    /// spaces may differ: `tie` cuts them to match).
    pub(super) fn check_same(&self, a: &Layout, b: &Layout) -> Result<()> {
        ensure!(
            self.size(&a.segs) == self.size(&b.segs),
            "operands have different channel counts"
        );
        Ok(())
    }

    /// A space's layer, with the range of its output channels when a part.
    pub(super) fn label(&self, g: &Graph, s: usize) -> String {
        let sp = &self.spaces[s];
        let name = g.node(sp.source).label();
        if sp.size == sp.whole {
            name
        } else {
            format!("{name}[{}:{}]", sp.start, sp.start + sp.size)
        }
    }

    /// Per-channel importance of a group: Σ over its layers of norm / mean norm.
    pub(super) fn scores(&self, g: &Graph, members: &[usize], norm: Norm) -> Result<Vec<f64>> {
        let size = self.spaces[members[0]].size;
        let mut total = vec![0.0; size];
        for &s in members {
            let sp = &self.spaces[s];
            let w = g
                .input(sp.source, 1)
                .and_then(|o| g.const_tensor(o))
                .context("a weight vanished")?;
            let n = channel_norms(&w.to_f32()?, &w.dims, sp.weight_axis, norm);
            let mean = n.iter().sum::<f64>() / n.len().max(1) as f64;
            for (t, v) in total.iter_mut().zip(&n[sp.start..sp.start + sp.size]) {
                *t += if mean > 0.0 { v / mean } else { 0.0 };
            }
        }
        Ok(total)
    }

    /// The indices kept along an axis made of `segs` side by side.
    pub(super) fn indices(&self, segs: &[usize], kept: &BTreeMap<usize, Vec<usize>>) -> Vec<usize> {
        let mut out = vec![];
        let mut offset = 0;
        for s in self.leaves(segs) {
            let size = self.spaces[s].size;
            match kept.get(&self.find(s)) {
                Some(k) => out.extend(k.iter().map(|&i| offset + i)),
                None => out.extend(offset..offset + size),
            }
            offset += size;
        }
        out
    }
}
