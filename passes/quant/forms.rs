//! The quantized forms of the model `quant` builds (int8 flowing between
//! layers or not, small layers in int8 or not): which forms to build for
//! the options, and one form built as a [`Candidate`] for the accuracy
//! guard and the timing (`measure.rs`) to choose from.

use super::*;

/// A quantized form: which layers, whether int8 flows between them, the
/// weights' bits, and whether the layers' biases are corrected (`bias.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Form {
    pub(super) flow: bool,
    pub(super) min_k: usize,
    pub(super) bits: Bits,
    pub(super) corrected: bool,
}

/// The weights' bits: `first` in the model's first layers (see
/// [`Layer::first`]), `rest` in the others. The first layers read the
/// model's inputs, which fill their u8 grid (an image in [0, 1]) where
/// later activations mostly sit near their zero point: int8 kernels that
/// sum pairs of u8×s8 products in 16 bits (CPUs without VNNI) overflow
/// there first (NNCF's overflow fix for the first layer only). On
/// nudenet-320n, 8-bit weights in its first Conv alone took the held-out
/// error from 0.016 to 0.030; 7-bit weights there, 0.014.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Bits {
    pub(super) first: u32,
    pub(super) rest: u32,
}

impl Bits {
    pub(super) const fn all(bits: u32) -> Bits {
        Bits {
            first: bits,
            rest: bits,
        }
    }

    /// `N` (every layer), or `first-N` (N in the first layers, 8 in the
    /// others), N in 2..=8.
    pub(super) fn parse(s: &str) -> Option<Bits> {
        let n = |s: &str| s.parse().ok().filter(|b| (2..=8).contains(b));
        match s.strip_prefix("first-") {
            Some(first) => Some(Bits {
                first: n(first)?,
                rest: 8,
            }),
            None => n(s).map(Bits::all),
        }
    }

    /// The bits of a layer's weight.
    pub(super) fn of(&self, layer: &Layer) -> u32 {
        if layer.first {
            self.first
        } else {
            self.rest
        }
    }
}

/// As the `bits` option spells it.
impl std::fmt::Display for Bits {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.first == self.rest {
            write!(f, "{}", self.rest)
        } else {
            write!(f, "first-{}", self.first)
        }
    }
}

/// One quantized form of the model.
pub(super) struct Candidate {
    pub(super) form: Form,
    /// Relative error of its outputs against the float model's on the
    /// calibration samples (measured by the accuracy guard).
    pub(super) err: Option<f64>,
    pub(super) layers: Vec<Layer>,
    pub(super) model: Model,
    /// The activations quantized.
    pub(super) acts: ActPlan,
    /// The report entry of each layer's weight.
    pub(super) weights: BTreeMap<NodeId, serde_json::Value>,
    /// The operators int8 flows through, by type.
    pub(super) flows: BTreeMap<String, usize>,
    /// The layers whose bias was corrected.
    pub(super) corrected: usize,
}

impl Quant {
    /// The forms to build: the options' own; for target=ort with flow=auto,
    /// int8 in the layers only (the accuracy guard's reference, and a form
    /// to time),
    /// and, when they are to be timed in ONNX Runtime, every layer in int8
    /// (a small layer between int8 neighbours can cost more in float, with
    /// a round trip around it, than in int8).
    pub(super) fn forms(&self, g: &Graph, data: bool, layers: usize) -> Vec<Form> {
        let own = Form {
            flow: self.flows(),
            min_k: self.min_k,
            bits: self.weight_bits(),
            corrected: self.correction == Some(true),
        };
        let mut forms = vec![own];
        if self.target != Target::Ort || !data || self.weight_only {
            return forms;
        }
        let more_layers = self.candidates(g, 0).0.len() > layers;
        if self.measure && self.fallback == 0 && self.min_k > 0 && more_layers {
            forms.push(Form { min_k: 0, ..own });
        }
        // The accuracy guard compares flowing forms with this one.
        if self.flow == Flow::Auto && layers > 0 {
            forms.push(Form { flow: false, ..own });
        }
        forms
    }

    /// `model` with `layers` quantized on `grids` in `form` (biases
    /// corrected with `means` if the form says so).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn quantized(
        &self,
        model: &Model,
        layers: &[Layer],
        grids: &Grids,
        lossy: &BTreeSet<String>,
        form: Form,
        quantized: &QuantizedWeights,
        means: &bias::Means,
    ) -> Result<Candidate> {
        let mut m = model.clone();
        let corrected = match form.corrected {
            true => self.correct_biases(&mut m, layers, form.bits, quantized, means)?,
            false => BTreeSet::new(),
        };
        let acts = self.plan(&m.graph, layers, form.flow, lossy);
        let mut patch = Patch::new("quant");
        let mut weights =
            self.quantize_weights(&m.graph, layers, form.bits, &mut patch, quantized)?;
        for node in &corrected {
            if let Some(entry) = weights.get_mut(node) {
                entry["bias_corrected"] = json!(true);
            }
        }
        for (name, pair) in &acts {
            let grid = self.grid_of(&m.graph, name, pair, grids)?;
            self.add_pair(&m.graph, &mut patch, name, pair, &grid)?;
        }
        let flows = flows_through(&m.graph, layers, &acts);
        patch.apply(&mut m.graph).context("applying quantization")?;
        Ok(Candidate {
            form,
            err: None,
            layers: layers.to_vec(),
            model: m,
            acts,
            weights,
            flows,
            corrected: corrected.len(),
        })
    }
}

/// The operators other than the layers that int8 flows through, by type:
/// those that read every input in int8 and whose output (one of them, for
/// a Split) is quantized.
fn flows_through(g: &Graph, layers: &[Layer], acts: &ActPlan) -> BTreeMap<String, usize> {
    let read: std::collections::HashSet<(NodeId, usize)> = acts
        .values()
        .flat_map(|p| p.readers.iter().copied())
        .collect();
    let quantized: std::collections::HashSet<Outlet> = acts.values().map(|p| p.value).collect();
    let mut by_type = BTreeMap::new();
    for id in g.node_ids() {
        let Some(op) = g.op(id).filter(|op| analysis::flows_through(&op.op_type)) else {
            continue;
        };
        let inputs = g.inputs(id);
        let flows = !layers.iter().any(|l| l.node == id)
            && inputs
                .iter()
                .enumerate()
                .any(|(s, v)| v.is_some() && read.contains(&(id, s)))
            && inputs
                .iter()
                .enumerate()
                .all(|(s, v)| v.is_none() || read.contains(&(id, s)) || !analysis::is_data(op, s))
            && (quantized.contains(&analysis::output_of(g, id))
                || (1..g.node(id).outputs.len()).any(|i| quantized.contains(&Outlet::new(id, i))));
        if flows {
            *by_type.entry(op.op_type.clone()).or_insert(0) += 1;
        }
    }
    by_type
}
