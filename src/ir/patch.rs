//! The one way passes change a graph. A pass *matches* on `&Graph` and returns
//! a `Patch` describing the change; `Patch::apply` is the only code that
//! mutates, and it checks what it is asked to do (no removal of a node still
//! in use, unique names, graph output names kept).

use super::*;
use anyhow::{bail, ensure, Context, Result};
use std::collections::{HashMap, HashSet};

/// An input for a node a patch adds: an existing outlet, or output `slot` of
/// the `index`-th node added by the same patch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Src {
    Old(Outlet),
    New { index: usize, slot: usize },
}

impl From<Outlet> for Src {
    fn from(o: Outlet) -> Src {
        Src::Old(o)
    }
}

#[derive(Debug)]
pub struct Patch {
    /// `rule` or `rule: node`, shown when a patch fails.
    pub label: String,
    added: Vec<(Node, Vec<Option<Src>>)>,
    updates: Vec<(NodeId, Operator)>,
    rewires: Vec<(NodeId, usize, Option<Src>)>,
    shunts: Vec<(Outlet, Src)>,
    handovers: Vec<(Outlet, Src)>,
    removals: Vec<NodeId>,
    types: Vec<(Outlet, TypeInfo)>,
    declarations: Vec<(usize, TypeInfo)>,
    constants: Vec<NodeId>,
}

impl Patch {
    pub fn new(label: impl Into<String>) -> Patch {
        Patch {
            label: label.into(),
            added: vec![],
            updates: vec![],
            rewires: vec![],
            shunts: vec![],
            handovers: vec![],
            removals: vec![],
            types: vec![],
            declarations: vec![],
            constants: vec![],
        }
    }

    /// `node` computes nothing: every use of its output 0 reads `input`
    /// instead, and it goes. `None` when another of its outputs is used, or
    /// when output 0 is a graph output whose name `input` cannot take over
    /// (a graph input, say).
    pub fn bypass(g: &Graph, node: NodeId, input: Outlet) -> Option<Patch> {
        let out = Outlet::new(node, 0);
        if (1..g.node(node).outputs.len()).any(|slot| g.is_used(Outlet::new(node, slot))) {
            return None;
        }
        if g.is_graph_output(out) && !g.can_take_name(input) {
            return None;
        }
        let mut patch = Patch::new("");
        patch.shunt(out, input);
        patch.remove(node);
        Some(patch)
    }

    /// `outer(inner(x)) = x`, where `mid` is the inner node's output that
    /// `outer` reads: `outer` goes, and so does the inner node when nothing
    /// else reads it. When `outer`'s output is a graph output that `x`
    /// cannot take over, an Identity would carry the name: only worth it
    /// when the inner node goes too, so `None` otherwise.
    pub fn collapse_pair(g: &Graph, outer: NodeId, mid: Outlet, x: Outlet) -> Option<Patch> {
        let out = Outlet::new(outer, 0);
        let inner_dies = g.sole_user(mid).is_some();
        if g.is_graph_output(out) && !g.can_take_name(x) && !inner_dies {
            return None;
        }
        let mut patch = Patch::new("");
        patch.shunt(out, x);
        patch.remove(outer);
        if inner_dies {
            patch.remove(mid.node);
        }
        Some(patch)
    }

    /// `outer(inner(x)) = outer'(x)`: input 0 of `outer` (which reads `mid`)
    /// reads `x` instead, and the inner node goes when nothing else reads it.
    pub fn skip_inner(&mut self, g: &Graph, outer: NodeId, mid: Outlet, x: Outlet) {
        self.rewire(outer, 0, Some(x.into()));
        if g.sole_user(mid).is_some() {
            self.remove(mid.node);
        }
    }

    /// Adds an operator node; its outputs get unique names derived from `outputs`.
    pub fn add_op(
        &mut self,
        name: Option<String>,
        op: Operator,
        inputs: Vec<Option<Src>>,
        outputs: &[&str],
    ) -> usize {
        let outputs = outputs.iter().map(|n| Value::named(*n)).collect();
        self.added.push((Node::op(name, op, outputs), inputs));
        self.added.len() - 1
    }

    /// Adds an initializer named (uniquely) after `name`.
    pub fn add_const(&mut self, name: &str, tensor: Tensor) -> Src {
        self.add_source(name, NodeKind::Initializer(tensor))
    }

    /// Adds a sparse initializer (see `onnx::sparse_from_dense`) named
    /// (uniquely) after `name`.
    pub fn add_sparse_const(&mut self, name: &str, sparse: Opaque) -> Src {
        self.add_source(name, NodeKind::SparseInitializer(sparse))
    }

    /// Adds a node with no inputs and one output named after `name`.
    fn add_source(&mut self, name: &str, kind: NodeKind) -> Src {
        self.added.push((
            Node {
                name: None,
                kind,
                outputs: vec![Value::named(name)],
            },
            vec![],
        ));
        Patch::out(self.added.len() - 1, 0)
    }

    /// Output `slot` of the `index`-th added node.
    pub fn out(index: usize, slot: usize) -> Src {
        Src::New { index, slot }
    }

    /// Replaces the operator (attributes, type) of an existing node, keeping its wires.
    pub fn update(&mut self, node: NodeId, op: Operator) {
        self.updates.push((node, op));
    }

    /// Feeds input `slot` of an existing node from `src` (`None`: leave it empty).
    pub fn rewire(&mut self, node: NodeId, slot: usize, src: Option<Src>) {
        self.rewires.push((node, slot, src));
    }

    /// Moves every use of `old` (consumers and graph outputs) to `new`.
    pub fn shunt(&mut self, old: Outlet, new: impl Into<Src>) {
        self.shunts.push((old, new.into()));
    }

    /// Makes `new` the graph output(s) `old` is, under the same name(s);
    /// unlike [`Patch::shunt`], `old`'s consumers keep reading `old` (so
    /// `new` may be computed from it).
    pub fn hand_over_output(&mut self, old: Outlet, new: impl Into<Src>) {
        self.handovers.push((old, new.into()));
    }

    /// Deletes a node; it must be unused once the patch's shunts are done.
    pub fn remove(&mut self, node: NodeId) {
        self.removals.push(node);
    }

    /// Records the type of an existing value (its `value_info`), keeping the
    /// rest of its info. Changes no computation.
    pub fn set_type(&mut self, outlet: Outlet, ty: TypeInfo) {
        self.types.push((outlet, ty));
    }

    /// Declares graph output `index` (in `g.outputs`) as of type `ty`.
    pub fn declare_output(&mut self, index: usize, ty: TypeInfo) {
        self.declarations.push((index, ty));
    }

    /// Stops declaring an initializer as a graph input, so that nothing can
    /// override it: it becomes a constant. Changes no computation of a model
    /// whose users never fed that input (IR < 4 says they cannot).
    pub fn make_constant(&mut self, initializer: NodeId) {
        self.constants.push(initializer);
    }

    pub fn is_empty(&self) -> bool {
        self.constants.is_empty()
            && self.added.is_empty()
            && self.updates.is_empty()
            && self.rewires.is_empty()
            && self.shunts.is_empty()
            && self.handovers.is_empty()
            && self.removals.is_empty()
            && self.types.is_empty()
            && self.declarations.is_empty()
    }

    pub fn apply(self, g: &mut Graph) -> Result<()> {
        if !self.is_empty() {
            g.touch();
        }
        let label = self.label.clone();
        self.apply_inner(g)
            .with_context(|| format!("patch {label}"))
    }

    fn apply_inner(self, g: &mut Graph) -> Result<()> {
        for &id in &self.constants {
            ensure!(
                g.contains(id) && matches!(g.node(id).kind, NodeKind::Initializer(_)),
                "makes a constant of {}, which is not an initializer",
                if g.contains(id) {
                    g.node(id).label()
                } else {
                    "a removed node".into()
                }
            );
            g.inputs.retain(|i| i.node != id);
        }
        for (outlet, ty) in self.types {
            ensure!(
                g.contains(outlet.node) && outlet.slot < g.node(outlet.node).outputs.len(),
                "sets the type of a value that does not exist"
            );
            ensure!(
                !g.outlet_name(outlet).is_empty(),
                "sets the type of an omitted output of {}",
                g.node(outlet.node).label()
            );
            let v = &mut g.node_mut(outlet.node).outputs[outlet.slot];
            v.info.get_or_insert_with(ValueInfo::default).ty = Some(ty);
        }
        for (index, ty) in self.declarations {
            let output = g.outputs.get_mut(index);
            output
                .context("declares a graph output that does not exist")?
                .info
                .ty = Some(ty);
        }
        // Names are chosen before anything changes, against the graph's names
        // (borrowed); the names of nodes this patch removes are free, so a
        // Constant lifted to an initializer keeps its name.
        let (added_names, mut spares) = {
            let freed: HashSet<&str> = self
                .removals
                .iter()
                .filter(|&&id| g.contains(id))
                .flat_map(|&id| g.node(id).outputs.iter().map(|v| v.name.as_str()))
                .collect();
            // One scan per name is cheaper than collecting every name for a
            // patch adding a few values; lift-constants adds hundreds.
            let wanted: usize = self.added.iter().map(|(n, _)| n.outputs.len()).sum();
            let all = (wanted > 8).then(|| g.all_names());
            let taken = |name: &str| {
                let defined = match &all {
                    Some(all) => all.contains(name),
                    None => g.has_name(name),
                };
                defined && !freed.contains(name)
            };
            let mut fresh: HashSet<String> = HashSet::new();
            let mut pick = |base: &str| {
                let mut name = base.to_string();
                let mut k = 1;
                while fresh.contains(&name) || taken(&name) {
                    name = format!("{base}_{k}");
                    k += 1;
                }
                fresh.insert(name.clone());
                name
            };
            let added_names: Vec<Vec<String>> = self
                .added
                .iter()
                .map(|(node, _)| {
                    node.outputs
                        .iter()
                        .map(|v| {
                            if v.name.is_empty() {
                                String::new()
                            } else {
                                pick(&v.name)
                            }
                        })
                        .collect()
                })
                .collect();
            // A graph output's old producer gives up the name: its spare one.
            let spares: HashMap<Outlet, String> = self
                .shunts
                .iter()
                .chain(&self.handovers)
                .filter(|(old, _)| g.is_graph_output(*old))
                .map(|(old, _)| (*old, pick(&format!("{}_replaced", g.outlet_name(*old)))))
                .collect();
            (added_names, spares)
        };
        let mut ids = Vec::with_capacity(self.added.len());
        let mut added_inputs = Vec::with_capacity(self.added.len());
        for ((mut node, inputs), names) in self.added.into_iter().zip(added_names) {
            for (v, name) in node.outputs.iter_mut().zip(names) {
                v.name = name;
            }
            ids.push(g.add_node(node));
            added_inputs.push(inputs);
        }
        let resolve = |src: Src| -> Result<Outlet> {
            match src {
                Src::Old(o) => Ok(o),
                Src::New { index, slot } => {
                    ensure!(
                        index < ids.len(),
                        "refers to added node #{index}, which does not exist"
                    );
                    Ok(Outlet::new(ids[index], slot))
                }
            }
        };
        for (i, inputs) in added_inputs.iter().enumerate() {
            for (slot, src) in inputs.iter().enumerate() {
                if let Some(src) = src {
                    g.connect(resolve(*src)?, ids[i], slot);
                }
            }
        }
        for (node, op) in self.updates {
            ensure!(
                g.op(node).is_some(),
                "updates a node that is not an operator"
            );
            *g.node_mut(node).as_op_mut().expect("checked") = op;
        }
        for (node, slot, src) in self.rewires {
            match src {
                Some(src) => g.connect(resolve(src)?, node, slot),
                None => g.disconnect(node, slot),
            }
        }
        for (old, new) in self.shunts {
            let new = resolve(new)?;
            shunt(g, old, new, spares.remove(&old), true)?;
        }
        for (old, new) in self.handovers {
            let new = resolve(new)?;
            shunt(g, old, new, spares.remove(&old), false)?;
        }
        let removed: HashSet<NodeId> = self.removals.iter().copied().collect();
        for &id in &self.removals {
            ensure!(g.contains(id), "removes a node twice");
            for slot in 0..g.node(id).outputs.len() {
                let o = Outlet::new(id, slot);
                ensure!(
                    !g.is_graph_output(o),
                    "removes {} which is still a graph output",
                    g.outlet_name(o)
                );
                if let Some((user, _)) = g
                    .consumers(o)
                    .into_iter()
                    .find(|(u, _)| !removed.contains(u))
                {
                    bail!(
                        "removes {} which {} still uses",
                        g.outlet_name(o),
                        g.node(user).label()
                    );
                }
            }
            g.inputs.retain(|i| i.node != id);
        }
        for id in self.removals {
            g.remove_node(id);
        }
        Ok(())
    }
}

/// Moves every use of `old` to `new` (its consumers too when `consumers`).
/// A graph output keeps its name: `new` takes it over when it is free to,
/// else an Identity carries it; `old` then takes the `spare` name chosen
/// for it.
fn shunt(
    g: &mut Graph,
    old: Outlet,
    new: Outlet,
    spare: Option<String>,
    consumers: bool,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    if consumers {
        for (user, slot) in g.consumers(old) {
            g.connect(new, user, slot);
        }
    }
    let outputs: Vec<usize> = (0..g.outputs.len())
        .filter(|&i| g.outputs[i].outlet == old)
        .collect();
    let Some(spare) = spare.filter(|_| !outputs.is_empty()) else {
        return Ok(());
    };
    let old_name = std::mem::replace(&mut g.node_mut(old.node).outputs[old.slot].name, spare);
    let target = if g.can_take_name(new) {
        let v = &mut g.node_mut(new.node).outputs[new.slot];
        v.name = old_name;
        v.info = None;
        new
    } else {
        let id = g.add_node(Node::op(
            None,
            Operator::new("Identity", 1, vec![]),
            vec![Value::named(old_name)],
        ));
        g.connect(new, id, 0);
        Outlet::new(id, 0)
    };
    for i in outputs {
        g.outputs[i].outlet = target;
    }
    Ok(())
}

/// What rules may assume of the model they rewrite, and what their caller
/// lends them.
#[derive(Clone, Debug)]
pub struct RuleContext {
    /// Highest default-domain opset a rule may emit operators from: the
    /// model's opset, or lower when the user targets an older runtime.
    pub opset: i64,
    /// Results computed earlier by the caller that owns this memo (`fuse`
    /// for `fuse-bn`); `None` for a pass run alone.
    pub memo: Option<std::sync::Arc<super::memo::TensorMemo>>,
}

impl RuleContext {
    /// The context for rewriting `model`: the default-domain opset it
    /// imports, lowered to `target` when the user targets an older runtime.
    pub fn for_model(model: &Model, target: Option<i64>) -> RuleContext {
        let opset = model.opset("").unwrap_or(1);
        RuleContext {
            opset: target.map_or(opset, |t| t.min(opset)),
            memo: None,
        }
    }
}

/// Applies `rules` to a fixpoint in the main graph and every subgraph;
/// returns how many patches were applied.
pub fn rewrite_model(model: &mut Model, ctx: &RuleContext, rules: &[Rule]) -> Result<usize> {
    let mut applied = 0;
    model.graph.visit_graphs_mut(&mut |g| {
        applied += rewrite_to_fixpoint(ctx, g, rules)?;
        Ok(())
    })?;
    Ok(applied)
}

/// What a rule is: it looks at one operator, read-only, and may propose a
/// patch. `Ok(None)` is "does not apply".
pub type RuleFn = fn(&RuleContext, &Graph, NodeId, &Operator) -> Result<Option<Patch>>;

/// A rewrite rule, registered for the operator type it starts from (as
/// tract's `with_rule_for::<Op>`), so that its body is the match alone.
#[derive(Clone, Copy)]
pub struct Rule {
    pub name: &'static str,
    /// The default-domain operator type it is tried on; `None`: every operator.
    pub op: Option<&'static str>,
    pub apply: RuleFn,
}

impl Rule {
    /// A rule tried on the default-domain operators of type `op` only.
    pub const fn on(op: &'static str, name: &'static str, apply: RuleFn) -> Rule {
        Rule {
            name,
            op: Some(op),
            apply,
        }
    }

    /// A rule tried on every operator (a pattern with several possible roots).
    pub const fn any(name: &'static str, apply: RuleFn) -> Rule {
        Rule {
            name,
            op: None,
            apply,
        }
    }

    /// The patch this rule proposes at `id`, labelled `rule: node` unless
    /// the rule labelled it.
    fn propose(&self, ctx: &RuleContext, g: &Graph, id: NodeId) -> Result<Option<Patch>> {
        let Some(op) = g.op(id) else { return Ok(None) };
        if self.op.is_some_and(|t| !op.is(t)) {
            return Ok(None);
        }
        let label = || format!("{}: {}", self.name, g.node(id).label());
        let patch = (self.apply)(ctx, g, id, op).with_context(label)?;
        Ok(patch.map(|mut p| {
            if p.label.is_empty() {
                p.label = label();
            }
            p
        }))
    }
}

/// Applies `rules` over the graph's operators until none applies; returns
/// how many patches were applied. Subgraphs are not visited (callers walk them).
pub fn rewrite_to_fixpoint(ctx: &RuleContext, g: &mut Graph, rules: &[Rule]) -> Result<usize> {
    const MAX_SWEEPS: usize = 64;
    let mut applied = 0;
    for _ in 0..MAX_SWEEPS {
        let before = applied;
        for id in g.op_order()? {
            if !g.contains(id) {
                continue;
            }
            for rule in rules {
                if let Some(patch) = rule.propose(ctx, g, id)? {
                    patch.apply(g)?;
                    #[cfg(debug_assertions)]
                    super::verify::verify_graph(g).context("after a patch")?;
                    applied += 1;
                    break;
                }
            }
        }
        if applied == before {
            return Ok(applied);
        }
    }
    bail!("rewriting did not settle after {MAX_SWEEPS} sweeps")
}
