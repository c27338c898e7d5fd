//! Which layers to quantize, and which activations get a Q→DQ pair (the
//! plan: graph only, an ordered map, so the same model gives the same patch).

use super::*;

impl Quant {
    /// The layers to quantize in graph order, and a report entry for each
    /// operator of a chosen type left in float (and why).
    pub(super) fn candidates(&self, g: &Graph) -> (Vec<Layer>, Vec<serde_json::Value>) {
        select_layers(g, &self.ops, |id, name| self.layer(g, id, name))
    }

    pub(super) fn layer(&self, g: &Graph, id: NodeId, name: &str) -> std::result::Result<Layer, String> {
        let op = g.op(id).expect("an operator");
        let is_float = |o: Outlet| {
            g.known_type(o).is_none_or(|t| match t.kind {
                TypeKind::Tensor { elem, .. } => elem.is_none_or(|e| e == DataType::FLOAT),
                _ => false,
            })
        };
        let float_const = |slot: usize| {
            g.input(id, slot)
                .and_then(|o| g.const_tensor(o).map(|t| (o, t)))
                .filter(|(_, t)| t.dtype == DataType::FLOAT)
        };
        let (x, w) = match (g.input(id, 0), g.input(id, 1)) {
            (Some(x), Some(w)) => (x, w),
            _ => return Err("missing input".into()),
        };
        if g.node(id).outputs.len() != 1 {
            return Err("more than one output".into());
        }
        let wname = g.outlet_name(w);
        if self
            .exclude
            .iter()
            .any(|p| name_matches(p, name) || name_matches(p, wname))
        {
            return Err("excluded (exclude option)".into());
        }
        if g.const_tensor(x).is_some() {
            return Err("first input is a constant".into());
        }
        if !is_float(x) {
            return Err("input is not f32".into());
        }
        let weight = float_const(1);
        let dims: Vec<usize> = weight
            .map(|(_, t)| t.dims.iter().map(|&d| d.max(0) as usize).collect())
            .unwrap_or_default();
        let (axis, k) = match (op.op_type.as_str(), weight) {
            ("Conv", Some(_)) if dims.len() >= 3 => (0, dims[1..].iter().product()),
            ("ConvTranspose", Some(_)) if dims.len() >= 3 => {
                let groups = op.attr_int("group", 1).max(1) as usize;
                (1, dims[0] / groups * dims[2..].iter().product::<usize>())
            }
            ("Gemm", Some(_)) if dims.len() == 2 => {
                if op.attr_int("transA", 0) != 0 && g.known_rank(x).is_none() {
                    return Err("transA on an input of unknown rank".into());
                }
                if op.attr_int("transB", 0) != 0 {
                    (0, dims[1])
                } else {
                    (1, dims[0])
                }
            }
            ("MatMul", Some(_)) if dims.len() >= 2 => (dims.len() - 1, dims[dims.len() - 2]),
            ("MatMul", None) if g.const_tensor(w).is_none() && is_float(w) => {
                // Two activations (attention): both quantized, no weight.
                let k = g
                    .known_dims(w)
                    .and_then(|d| d.iter().rev().nth(1).copied().flatten())
                    .map_or(0, |d| d.max(0) as usize);
                return self.checked(Layer {
                    node: id,
                    name: name.into(),
                    op: op.op_type.clone(),
                    acts: vec![(0, x), (1, w)],
                    weight: None,
                    k,
                });
            }
            (_, Some(_)) => return Err(format!("weight of rank {}", dims.len())),
            (_, None) => return Err("weight is not an f32 constant".into()),
        };
        self.checked(Layer {
            node: id,
            name: name.into(),
            op: op.op_type.clone(),
            acts: vec![(0, x)],
            weight: weight.map(|(o, _)| (1, o, axis)),
            k,
        })
    }

    pub(super) fn checked(&self, layer: Layer) -> std::result::Result<Layer, String> {
        if layer.k > 0 && layer.k < self.min_k {
            return Err(format!(
                "each output sums {} products, under min-k={}: int8 does not pay",
                layer.k, self.min_k
            ));
        }
        Ok(layer)
    }

    /// The activations to quantize for `layers`: their inputs and both
    /// inputs of residual Adds they feed; with `act=u8` also the outputs of
    /// those layers and Adds (after a Relu that is their only reader), graph
    /// outputs included, so that onnxruntime finds whole `DQ → op → Q`
    /// groups to run as QLinear kernels.
    pub(super) fn plan(&self, g: &Graph, layers: &[Layer]) -> ActPlan {
        let mut plan = ActPlan::new();
        if self.weight_only {
            return plan;
        }
        let add = |plan: &mut ActPlan, v: Outlet, reader: Option<(NodeId, usize)>| {
            let entry = plan
                .entry(g.outlet_name(v).to_string())
                .or_insert_with(|| Pair {
                    value: v,
                    readers: vec![],
                    graph_output: false,
                });
            match reader {
                Some(r) if !entry.readers.contains(&r) => {
                    entry.readers.push(r);
                    entry.readers.sort();
                }
                Some(_) => {}
                None => entry.graph_output = true,
            }
        };
        for layer in layers {
            for &(slot, v) in &layer.acts {
                add(&mut plan, v, Some((layer.node, slot)));
            }
        }
        // An operator's output, or the Relu right after it when that is its
        // only reader (a zero point at the bottom of the range is the Relu).
        let output_of = |id: NodeId| {
            let y = Outlet::new(id, 0);
            match g.consumers(y).as_slice() {
                [(r, 0)] if !g.is_graph_output(y) && g.op(*r).is_some_and(|op| op.is("Relu")) => {
                    Outlet::new(*r, 0)
                }
                _ => y,
            }
        };
        let mut int8_ops: Vec<NodeId> = layers.iter().map(|l| l.node).collect();
        if self.residual_add {
            let outputs: Vec<Outlet> = layers.iter().map(|l| output_of(l.node)).collect();
            for id in g.node_ids() {
                let Some(op) = g.op(id) else { continue };
                if !op.is("Add") {
                    continue;
                }
                let (Some(a), Some(b)) = (g.input(id, 0), g.input(id, 1)) else {
                    continue;
                };
                let activation = |v: Outlet| g.const_tensor(v).is_none();
                if activation(a)
                    && activation(b)
                    && (outputs.contains(&a) || outputs.contains(&b))
                    && g.known_dims(a).is_some()
                    && g.known_dims(a) == g.known_dims(b)
                {
                    add(&mut plan, a, Some((id, 0)));
                    add(&mut plan, b, Some((id, 1)));
                    int8_ops.push(id);
                }
            }
        }
        if self.act == Act::U8 {
            // Pooling a quantized value: onnxruntime pools in int8 when the
            // pool's output is quantized too.
            for id in g.op_order().unwrap_or_default() {
                let pool = g.op(id).is_some_and(|op| {
                    ["GlobalAveragePool", "AveragePool", "MaxPool"].contains(&op.op_type.as_str())
                        && g.node(id).outputs.len() == 1
                });
                let quantized_input = g.input(id, 0).filter(|x| {
                    let entry = plan.get(g.outlet_name(*x));
                    entry.is_some() || int8_ops.iter().any(|&op| output_of(op) == *x)
                });
                if let (true, Some(x)) = (pool, quantized_input) {
                    add(&mut plan, x, Some((id, 0)));
                    int8_ops.push(id);
                }
            }
            for id in int8_ops {
                let y = output_of(id);
                for reader in g.consumers(y) {
                    add(&mut plan, y, Some(reader));
                }
                if g.is_graph_output(y) {
                    add(&mut plan, y, None);
                }
            }
        }
        plan
    }
}
