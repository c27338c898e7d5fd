//! Where a graph is cut into pieces, and what each piece reads, keeps
//! and frees.

use std::collections::{HashMap, HashSet};
use tract_onnx::pb;

/// Where a graph is cut: for each piece, its nodes, the values it reads from
/// outside, the initializers it needs, what it writes for later, what it
/// frees.
pub(super) struct Cut<'a> {
    pub nodes: Vec<Vec<&'a pb::NodeProto>>,
    pub reads: Vec<Vec<String>>,
    pub constants: Vec<Vec<String>>,
    pub writes: Vec<Vec<String>>,
    pub frees: Vec<Vec<String>>,
}

impl<'a> Cut<'a> {
    /// `None` when the graph has a single piece, reads a value before it is
    /// computed, or returns a value no node computes and no input is.
    ///
    /// A value computed from constants and shapes alone (a `Constant` node,
    /// a Cast of an initializer, `Shape → Gather → Concat`) is never passed
    /// from piece to piece: the piece that reads it computes it again (and
    /// reads what a Shape there reads), since tract wants some inputs
    /// constant (BatchNorm's parameters, a Reshape's shape).
    pub(super) fn of(
        graph: &'a pb::GraphProto,
        inputs: &[String],
        returned: &[String],
        piece_nodes: usize,
    ) -> Option<Cut<'a>> {
        let all: Vec<&pb::NodeProto> = graph.node.iter().collect();
        let ranges: Vec<std::ops::Range<usize>> = (0..all.len())
            .step_by(piece_nodes)
            .map(|start| start..(start + piece_nodes).min(all.len()))
            .collect();
        if ranges.len() < 2 {
            return None;
        }
        let initializers: HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        // The node computing each value, and which nodes compute constants.
        let mut producer: HashMap<&str, usize> = HashMap::new();
        let mut constant = vec![false; all.len()];
        for (i, node) in all.iter().enumerate() {
            let plain = node
                .attribute
                .iter()
                .all(|a| a.g.is_none() && a.graphs.is_empty());
            // Shape and Size depend on their input's shape only, which
            // every piece knows: tract folds them where they are computed.
            let of_shape = matches!(node.op_type.as_str(), "Shape" | "Size");
            constant[i] = plain
                && !node.op_type.starts_with("Random")
                && (of_shape
                    || node.input.iter().filter(|s| !s.is_empty()).all(|s| {
                        initializers.contains(s.as_str())
                            || producer.get(s.as_str()).is_some_and(|&p| constant[p])
                    }));
            for out in node.output.iter().filter(|o| !o.is_empty()) {
                producer.insert(out, i);
            }
        }
        let piece_of = |i: usize| i / piece_nodes;
        let inputs: HashSet<&str> = inputs.iter().map(|s| s.as_str()).collect();
        let mut last_read: HashMap<&str, usize> = HashMap::new();
        let mut cut = Cut {
            nodes: vec![],
            reads: vec![],
            constants: vec![],
            writes: vec![vec![]; ranges.len()],
            frees: vec![vec![]; ranges.len()],
        };
        for (k, range) in ranges.iter().enumerate() {
            let (mut reads, mut consts, mut pulled) = (Vec::new(), Vec::new(), Vec::new());
            let mut seen = HashSet::new();
            // Nodes to visit: the piece's own, then constants it pulls in.
            let mut todo: Vec<(usize, bool)> = range.clone().rev().map(|i| (i, false)).collect();
            while let Some((i, is_pulled)) = todo.pop() {
                let node = all[i];
                let mut used: Vec<&str> = node.input.iter().map(|s| s.as_str()).collect();
                subgraph_reads(node, &mut used);
                for (ix, name) in used.into_iter().enumerate() {
                    if name.is_empty() || !seen.insert(name) {
                        continue;
                    }
                    match producer.get(name) {
                        Some(&p) if p >= range.start && !is_pulled => {
                            if p >= i {
                                return None; // read before it is computed
                            }
                        }
                        Some(&p) if constant[p] => {
                            pulled.push(p);
                            todo.push((p, true));
                        }
                        Some(&p) if piece_of(p) < k => {
                            last_read.insert(name, k);
                            reads.push(name.to_string());
                        }
                        Some(_) => return None,
                        None if inputs.contains(name) => {
                            last_read.insert(name, k);
                            reads.push(name.to_string());
                        }
                        None if initializers.contains(name) => consts.push(name.to_string()),
                        // A subgraph's own value, not the outer graph's.
                        None if ix >= node.input.len() => {}
                        None => return None,
                    }
                }
            }
            pulled.sort_unstable();
            pulled.dedup();
            let nodes = pulled
                .into_iter()
                .chain(range.clone())
                .map(|i| all[i])
                .collect();
            cut.nodes.push(nodes);
            cut.reads.push(reads);
            cut.constants.push(consts);
        }
        let returned_set: HashSet<&str> = returned.iter().map(|s| s.as_str()).collect();
        for name in returned {
            match producer.get(name.as_str()) {
                Some(&p) => {
                    let at = piece_of(p);
                    if !cut.writes[at].contains(name) {
                        cut.writes[at].push(name.clone());
                    }
                }
                None if inputs.contains(name.as_str()) => {} // there from the start
                None => return None,
            }
        }
        // Read by a later piece: written by its own. In file order, so the
        // pieces' outputs are deterministic.
        for (i, node) in all.iter().enumerate() {
            let k = piece_of(i);
            for name in &node.output {
                let later = last_read.get(name.as_str()).is_some_and(|&at| at > k);
                if later && !cut.writes[k].contains(name) {
                    cut.writes[k].push(name.clone());
                }
            }
        }
        for (k, reads) in cut.reads.iter().enumerate() {
            for name in reads {
                if last_read[name.as_str()] == k && !returned_set.contains(name.as_str()) {
                    cut.frees[k].push(name.clone());
                }
            }
        }
        Some(cut)
    }
}

/// Appends every name the subgraphs of `node` read (their own values too:
/// the caller keeps those of the outer graph).
fn subgraph_reads<'a>(node: &'a pb::NodeProto, used: &mut Vec<&'a str>) {
    for attr in &node.attribute {
        for g in attr.g.iter().chain(&attr.graphs) {
            for inner in &g.node {
                used.extend(inner.input.iter().map(|s| s.as_str()));
                subgraph_reads(inner, used);
            }
            used.extend(g.output.iter().map(|o| o.name.as_str()));
        }
    }
}
