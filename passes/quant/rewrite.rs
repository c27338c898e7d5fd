//! The QDQ form: int8 weights read through DequantizeLinear, and the Q→DQ
//! pairs on activations.

use super::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Weights quantized once a run, for every form built from the model:
/// the forms (flowing or not, the bits probe's) quantize a weight alike and
/// share one int8 copy of it, where each used to compute and hold its own
/// (50 MB a form on a 201 MB MLP). Keyed by the weight's name, axis and
/// bits: every form of a run is built from the one model, so a name is one
/// tensor.
#[derive(Default)]
pub(super) struct QuantizedWeights(Mutex<HashMap<WeightKey, Arc<Quantized>>>);

/// A weight's name, its axis (`None`: per tensor) and bits.
type WeightKey = (String, Option<usize>, u32);

/// A weight quantized, as its int8 initializer holds it.
pub(super) struct Quantized {
    pub(super) q: bytes::Bytes,
    pub(super) scales: Vec<f32>,
    rel_err: f64,
}

impl QuantizedWeights {
    /// The weight `name` (`t`) quantized on `axis` to `bits`, computed the
    /// first time only.
    pub(super) fn get(
        &self,
        name: &str,
        t: &Tensor,
        axis: Option<usize>,
        bits: u32,
    ) -> Result<Arc<Quantized>> {
        let key = (name.to_string(), axis, bits);
        if let Some(kept) = self.0.lock().expect("weights lock").get(&key) {
            return Ok(kept.clone());
        }
        // Quantized without the lock: layers of other threads go on.
        let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        let q = quantize::quantize_weight(&t.to_f32()?, &dims, axis, bits)
            .with_context(|| format!("weight {name}"))?;
        let quantized = Arc::new(Quantized {
            q: q.q.iter().map(|&v| v as u8).collect::<Vec<u8>>().into(),
            scales: q.scales,
            rel_err: q.rel_err,
        });
        let mut kept = self.0.lock().expect("weights lock");
        Ok(kept.entry(key).or_insert(quantized).clone())
    }
}

impl Quant {
    /// How each weight `layers` read is quantized: its axis (`None`: per
    /// tensor), its bits and its readers. A weight shared by several
    /// layers is quantized once (per tensor if their axes differ, with the
    /// fewest bits any of them asks for).
    pub(super) fn weight_plan(
        &self,
        layers: &[Layer],
        bits: Bits,
    ) -> BTreeMap<Outlet, (Option<usize>, u32, Readers)> {
        let mut shared: BTreeMap<Outlet, (Option<usize>, u32, Readers)> = BTreeMap::new();
        for layer in layers {
            if let Some((slot, w, axis)) = layer.weight {
                let axis = self.per_channel.then_some(axis);
                let e = shared.entry(w).or_insert((axis, 8, vec![]));
                if e.0 != axis {
                    e.0 = None;
                }
                e.1 = e.1.min(bits.of(layer));
                e.2.push((layer.node, slot));
            }
        }
        shared
    }

    /// Replaces each layer's weight by values of its `bits` (stored in
    /// int8) read through a DequantizeLinear; returns a report entry per
    /// layer.
    pub(super) fn quantize_weights(
        &self,
        g: &Graph,
        layers: &[Layer],
        bits: Bits,
        patch: &mut Patch,
        quantized: &QuantizedWeights,
    ) -> Result<BTreeMap<NodeId, serde_json::Value>> {
        let mut out = BTreeMap::new();
        for (w, (axis, bits, readers)) in self.weight_plan(layers, bits) {
            let t = g.const_tensor(w).expect("a constant weight");
            let name = g.outlet_name(w).to_string();
            let q = quantized.get(&name, t, axis, bits)?;
            let channels = q.scales.len() as i64;
            let shape = if axis.is_some() {
                vec![channels]
            } else {
                vec![]
            };
            let wq = patch.add_const(
                &format!("{name}_quantized"),
                Tensor::new(DataType::INT8, t.dims.clone(), TensorData::Raw(q.q.clone())),
            );
            let scale = patch.add_const(
                &format!("{name}_scale"),
                Tensor::from_f32(shape.clone(), &q.scales),
            );
            let zero = patch.add_const(
                &format!("{name}_zero_point"),
                Tensor::new(
                    DataType::INT8,
                    shape,
                    TensorData::Raw(vec![0u8; q.scales.len()].into()),
                ),
            );
            let mut dq = Operator::new("DequantizeLinear", 3, vec![]);
            if let Some(a) = axis {
                dq.set_attr(Attribute::int("axis", a as i64));
            }
            let dq = patch.add_op(
                Some(format!("{name}_DequantizeLinear")),
                dq,
                vec![Some(wq), Some(scale), Some(zero)],
                &[&format!("{name}_dequantized")],
            );
            for &(node, slot) in &readers {
                patch.rewire(node, slot, Some(Patch::out(dq, 0)));
            }
            // Other readers (a Loop carrying the weight into its body, a
            // Gather of tied embeddings) keep the float copy: reading the
            // DequantizeLinear instead would shrink the file but dequantize
            // the whole weight on every run, and ONNX Runtime could no longer
            // prepack it (nakdimon, its LSTM weights also fed to a Loop:
            // 5.3 MiB instead of 24.9, but 43.1 ms a run instead of 33.9,
            // float 33.4; 30 alternated runs).
            let float_readers: Vec<String> = g
                .consumers(w)
                .into_iter()
                .filter(|c| !readers.contains(c))
                .map(|(node, _)| g.node(node).label())
                .collect();
            if float_readers.is_empty() && !g.is_graph_output(w) {
                patch.remove(w.node);
            }
            let (lo, hi) = q
                .scales
                .iter()
                .fold((f32::INFINITY, 0f32), |(lo, hi), &s| (lo.min(s), hi.max(s)));
            let mut entry = json!({
                "name": name, "axis": axis, "channels": channels,
                "scale_range": [lo, hi], "rel_err": q.rel_err,
            });
            if bits != 8 {
                entry["bits"] = json!(bits);
            }
            if !float_readers.is_empty() {
                entry["float_copy_kept_for"] = json!(float_readers);
            }
            for (node, _) in readers {
                out.insert(node, entry.clone());
            }
        }
        Ok(out)
    }

    /// `x → QuantizeLinear → DequantizeLinear → readers`; a constant is
    /// stored quantized instead and read through a DequantizeLinear.
    pub(super) fn add_pair(
        &self,
        g: &Graph,
        patch: &mut Patch,
        name: &str,
        pair: &Pair,
        grid: &Grid,
    ) -> Result<()> {
        let x = pair.value;
        let scale = patch.add_const(
            &format!("{name}_scale"),
            Tensor::from_f32(vec![], &[grid.scale]),
        );
        let dtype = match self.act {
            Act::S8 => DataType::INT8,
            Act::U8 => DataType::UINT8,
        };
        // Two's complement: an i8 zero point or value is its low byte.
        let byte = |q: i32| q as u8;
        let zero = patch.add_const(
            &format!("{name}_zero_point"),
            Tensor::new(
                dtype,
                vec![],
                TensorData::Raw(vec![byte(grid.zero_point)].into()),
            ),
        );
        let quantized = if pair.grid == GridFrom::Constant {
            let t = g
                .const_tensor(x)
                .with_context(|| format!("{name} is not a constant"))?;
            let q: Vec<u8> = t
                .to_f32()?
                .iter()
                .map(|&v| byte(grid.quantize(v)))
                .collect();
            let q = patch.add_const(
                &format!("{name}_quantized"),
                Tensor::new(dtype, t.dims.clone(), TensorData::Raw(q.into())),
            );
            if g.consumers(x).len() == pair.readers.len() && !g.is_graph_output(x) {
                patch.remove(x.node);
            }
            q
        } else {
            let q = patch.add_op(
                Some(format!("{name}_QuantizeLinear")),
                Operator::new("QuantizeLinear", 3, vec![]),
                vec![Some(Src::from(x)), Some(scale), Some(zero)],
                &[&format!("{name}_quantized")],
            );
            Patch::out(q, 0)
        };
        let dq = patch.add_op(
            Some(format!("{name}_DequantizeLinear")),
            Operator::new("DequantizeLinear", 3, vec![]),
            vec![Some(quantized), Some(scale), Some(zero)],
            &[&format!("{name}_dequantized")],
        );
        for &(node, slot) in &pair.readers {
            patch.rewire(node, slot, Some(Patch::out(dq, 0)));
        }
        if pair.graph_output {
            patch.hand_over_output(x, Patch::out(dq, 0));
        }
        Ok(())
    }
}
