//! Input samples: one set of named tensors per run, and seeded random ones
//! (files are read by `crate::data`).

use super::load::InputSpec;
use super::tensor::{ElemType, Tensor};
use anyhow::{anyhow, bail, Result};

/// Most elements of one random input (1 GiB as f32): a declared dim of 2^40
/// must give an error, not an allocation that aborts the process.
const MAX_RANDOM_ELEMENTS: usize = 1 << 28;

/// One set of named input tensors (one inference).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    source: String,
    entries: Vec<(String, Tensor)>,
}

impl Sample {
    /// An empty sample; `source` says where it comes from (file name,
    /// "random seed 3", ...) and appears in error messages.
    pub fn new(source: impl Into<String>) -> Sample {
        Sample {
            source: source.into(),
            entries: Vec::new(),
        }
    }

    /// Sets the tensor of input `name` (replacing any previous one).
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        let name = name.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = tensor,
            None => self.entries.push((name, tensor)),
        }
    }

    /// Builder form of [`Sample::insert`].
    pub fn with(mut self, name: impl Into<String>, tensor: Tensor) -> Sample {
        self.insert(name, tensor);
        self
    }

    /// The tensor of input `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// `(name, tensor)` pairs, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Where the sample comes from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Deterministic random inputs for `specs`: floats uniform in [-1, 1),
    /// integers uniform in [0, 10), bools fair coin flips.
    ///
    /// Uses splitmix64 seeded from `seed` and the input's name, so a given
    /// (seed, name, shape, type) always gives the same data, on every
    /// machine and run, whatever the other inputs are.
    pub fn random(specs: &[InputSpec], seed: u64) -> Result<Sample> {
        let mut sample = Sample::new(format!("random (seed {seed})"));
        for spec in specs {
            let mut rng = SplitMix64::new(seed ^ fnv1a(spec.name.as_bytes()));
            let n = spec
                .shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .filter(|&n| n <= MAX_RANDOM_ELEMENTS)
                .ok_or_else(|| {
                    anyhow!(
                        "input {:?} of shape {:?} is too large for random data (at most \
                         {MAX_RANDOM_ELEMENTS} elements): pin its dims with --input-shape \
                         or give --inputs",
                        spec.name,
                        spec.shape
                    )
                })?;
            let shape = &spec.shape;
            let ints =
                |rng: &mut SplitMix64| -> Vec<u8> { (0..n).map(|_| rng.below10()).collect() };
            let t = match spec.elem_type {
                ElemType::F32 => Tensor::from_f32(shape, &rng.floats(n))?,
                ElemType::F64 => {
                    let v: Vec<f64> = (0..n).map(|_| rng.unit_f64() * 2.0 - 1.0).collect();
                    Tensor::from_f64(shape, &v)?
                }
                ElemType::F16 => Tensor::from_f32_as_f16(shape, &rng.floats(n))?,
                ElemType::Bool => {
                    let v: Vec<bool> = (0..n).map(|_| rng.next_u64() >> 63 == 1).collect();
                    Tensor::from_bool(shape, &v)?
                }
                int_type => Tensor::from_u8(shape, &ints(&mut rng))?.cast(int_type)?,
            };
            sample.insert(spec.name.clone(), t);
        }
        Ok(sample)
    }

    /// Checks that the sample holds exactly the inputs of `specs`, with
    /// their element types and pinned shapes.
    pub fn check(&self, specs: &[InputSpec]) -> Result<()> {
        for spec in specs {
            let t = self.get(&spec.name).ok_or_else(|| {
                anyhow!(
                    "input {:?} is missing (the sample has: {})",
                    spec.name,
                    self.names_list()
                )
            })?;
            check_tensor(spec, t)?;
        }
        for (name, _) in self.iter() {
            if !specs.iter().any(|s| s.name == name) {
                bail!(
                    "{name:?} is not an input of the model (inputs: {})",
                    input_names(specs)
                );
            }
        }
        Ok(())
    }

    fn names_list(&self) -> String {
        if self.entries.is_empty() {
            "nothing".to_string()
        } else {
            self.entries
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

fn check_tensor(spec: &InputSpec, t: &Tensor) -> Result<()> {
    if t.elem_type() != spec.elem_type {
        bail!(
            "input {:?}: expected {}, got {}",
            spec.name,
            spec.elem_type,
            t.elem_type()
        );
    }
    if t.shape() != spec.shape.as_slice() {
        bail!(
            "input {:?}: expected shape {:?}, got {:?} (the model was loaded with shape {:?}; \
             to use another one, pin it with --input-shape {}={})",
            spec.name,
            spec.shape,
            t.shape(),
            spec.shape,
            spec.name,
            super::load::spelled(t.shape())
        );
    }
    Ok(())
}

/// The model's input names, for error messages.
fn input_names(specs: &[InputSpec]) -> String {
    specs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, fully deterministic.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `n` floats uniform in [-1, 1).
    fn floats(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)) * 2.0 - 1.0)
            .collect()
    }

    /// Uniform in [0, 10) (the modulo bias is ~1e-18).
    fn below10(&mut self) -> u8 {
        (self.next_u64() % 10) as u8
    }
}

/// FNV-1a, to derive a per-input stream from the input name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[cfg(test)]
mod tests {
    use super::super::load::Dim;
    use super::*;

    fn spec(name: &str, elem_type: ElemType, shape: &[usize]) -> InputSpec {
        InputSpec {
            name: name.into(),
            elem_type,
            shape: shape.to_vec(),
            declared: shape.iter().map(|&d| Dim::Fixed(d)).collect(),
        }
    }

    fn err_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn random_inputs_of_absurd_size_are_an_error_not_an_abort() {
        let huge = spec("x", ElemType::F32, &[1 << 40, 3136]);
        let e = err_of(Sample::random(&[huge], 0));
        assert!(e.contains("too large for random data"), "{e}");
        let overflow = spec("x", ElemType::F32, &[1 << 62, 1 << 62]);
        assert!(err_of(Sample::random(&[overflow], 0)).contains("too large"));
    }

    #[test]
    fn random_is_deterministic_and_in_range() {
        let specs = vec![
            spec("f", ElemType::F32, &[1000]),
            spec("i", ElemType::I64, &[1000]),
            spec("b", ElemType::Bool, &[1000]),
            spec("h", ElemType::F16, &[10]),
            spec("d", ElemType::F64, &[10]),
            spec("u", ElemType::U8, &[10]),
        ];
        let a = Sample::random(&specs, 42).unwrap();
        assert_eq!(a, Sample::random(&specs, 42).unwrap());
        assert_ne!(a, Sample::random(&specs, 43).unwrap());
        let f = a.get("f").unwrap().to_f32_vec().unwrap();
        assert!(f.iter().all(|x| (-1.0..1.0).contains(x)));
        assert!(f.iter().any(|&x| x < -0.9) && f.iter().any(|&x| x > 0.9));
        let i = a.get("i").unwrap().to_f32_vec().unwrap();
        assert!(i.iter().all(|x| (0.0..10.0).contains(x)));
        assert!((0..10).all(|k| i.contains(&(k as f32))));
        let b = a.get("b").unwrap().to_f32_vec().unwrap();
        let trues = b.iter().filter(|&&x| x == 1.0).count();
        assert!((400..600).contains(&trues), "{trues}");
        for (name, t) in a.iter() {
            let s = specs.iter().find(|s| s.name == name).unwrap();
            assert_eq!(t.elem_type(), s.elem_type);
            assert_eq!(t.shape(), s.shape.as_slice());
        }
        // the data of one input does not depend on the other inputs
        let alone = Sample::random(&specs[..1], 42).unwrap();
        assert_eq!(alone.get("f"), a.get("f"));
        // pinned values: the generator must never change silently
        assert_eq!(&f[..3], &golden_first_floats());
    }

    /// First three floats of input "f" at seed 42 (computed independently in Python).
    fn golden_first_floats() -> [f32; 3] {
        [0.709_642_05, 0.211_837_17, -0.275_022_03]
    }

    #[test]
    fn splitmix_reference_values() {
        // reference values of splitmix64 seeded with 1234567
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(r.next_u64(), 9817491932198370423);
    }
}
