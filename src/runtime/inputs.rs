//! Input samples: random ones, and ones read from .npz / .npy files.

use super::load::InputShapes;
use super::load::InputSpec;
use super::tensor::{ElemType, Tensor};
use anyhow::{anyhow, bail, ensure, Context, Result};
use npyz::{DType, Endianness, NpyHeader, Order, TypeChar};
use std::io::Read;
use std::path::{Path, PathBuf};
use tract_onnx::prelude::f16;

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
            let n: usize = spec.shape.iter().product();
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
            t.shape()
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    Ok(())
}

/// Reads input samples from `path`, checked against `specs`:
///
/// * a `.npz` file: one sample, one array per input (keys = input names);
/// * a `.npy` file: one sample, only for single-input models;
/// * a directory: one sample per `.npz` / `.npy` file in it, sorted by file
///   name (other files are ignored; subdirectories are not searched).
///
/// Each array must have exactly the input's element type and pinned shape.
pub fn load_samples(path: &Path, specs: &[InputSpec]) -> Result<Vec<Sample>> {
    if file_or_dir(path)? {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("listing {path:?}"))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("listing {path:?}"))?
            .into_iter()
            .filter(|p| p.is_file() && sample_kind(p).is_some())
            .collect();
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        if files.is_empty() {
            bail!("no .npz or .npy file in directory {path:?}");
        }
        files.iter().map(|f| load_sample_file(f, specs)).collect()
    } else {
        Ok(vec![load_sample_file(path, specs)?])
    }
}

/// The array shapes of the first `.npz` sample under `path` (a file or a
/// folder), keyed by input name: pins symbolic dims to the data's shapes.
/// Bare `.npy` files name no input and contribute nothing.
pub fn sample_shapes(path: &Path) -> Result<InputShapes> {
    let mut shapes = InputShapes::new();
    let first = if file_or_dir(path)? {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("listing {path:?}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && sample_kind(p) == Some(Kind::Npz))
            .collect();
        files.sort();
        files.into_iter().next()
    } else {
        (sample_kind(path) == Some(Kind::Npz)).then(|| path.to_path_buf())
    };
    let Some(file) = first else { return Ok(shapes) };
    let source = file.display().to_string();
    let mut archive = npyz::npz::NpzArchive::open(&file)
        .with_context(|| format!("{source}: cannot open as .npz"))?;
    let names: Vec<String> = archive.array_names().map(|s| s.to_string()).collect();
    for name in names {
        let t = read_npz_array(&mut archive, &name, &source)?;
        shapes.insert(name, t.shape().to_vec());
    }
    Ok(shapes)
}

/// Whether `path` is a folder; refuses what is neither a folder nor a
/// regular file (reading a FIFO would block forever).
fn file_or_dir(path: &Path) -> Result<bool> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading samples from {path:?}"))?;
    ensure!(
        meta.is_dir() || meta.is_file(),
        "{path:?} is neither a regular file nor a folder"
    );
    Ok(meta.is_dir())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Npz,
    Npy,
}

fn sample_kind(path: &Path) -> Option<Kind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "npz" => Some(Kind::Npz),
        "npy" => Some(Kind::Npy),
        _ => None,
    }
}

fn load_sample_file(path: &Path, specs: &[InputSpec]) -> Result<Sample> {
    let source = path.display().to_string();
    let kind = sample_kind(path)
        .ok_or_else(|| anyhow!("{source}: sample files must end in .npz or .npy"))?;
    let mut sample = Sample::new(source.clone());
    match kind {
        Kind::Npy => {
            let [spec] = specs else {
                bail!(
                    "{source}: a bare .npy file can only feed a single-input model, \
                     this one has {} inputs ({}); use a .npz keyed by input name",
                    specs.len(),
                    input_names(specs)
                );
            };
            let bytes = std::fs::read(path).with_context(|| format!("reading {source}"))?;
            let t = parse_npy(&bytes).with_context(|| format!("{source}: bad .npy file"))?;
            check_tensor(spec, &t).with_context(|| source.clone())?;
            sample.insert(spec.name.clone(), t);
        }
        Kind::Npz => {
            let mut archive = npyz::npz::NpzArchive::open(path)
                .with_context(|| format!("{source}: cannot open as .npz"))?;
            let names: Vec<String> = archive.array_names().map(|s| s.to_string()).collect();
            for name in &names {
                if !specs.iter().any(|s| &s.name == name) {
                    bail!(
                        "{source}: array {name:?} is not an input of the model (inputs: {})",
                        input_names(specs)
                    );
                }
            }
            for spec in specs {
                if !names.contains(&spec.name) {
                    bail!(
                        "{source}: no array for input {:?} (the file has: {})",
                        spec.name,
                        if names.is_empty() {
                            "nothing".to_string()
                        } else {
                            names.join(", ")
                        }
                    );
                }
                let t = read_npz_array(&mut archive, &spec.name, &source)?;
                check_tensor(spec, &t).with_context(|| source.clone())?;
                sample.insert(spec.name.clone(), t);
            }
        }
    }
    Ok(sample)
}

/// The model's input names, for error messages.
fn input_names(specs: &[InputSpec]) -> String {
    specs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads and decodes the array `name` of an open .npz archive.
fn read_npz_array(
    archive: &mut npyz::npz::NpzArchive<std::io::BufReader<std::fs::File>>,
    name: &str,
    source: &str,
) -> Result<Tensor> {
    let entry = npyz::npz::file_name_from_array_name(name);
    let mut bytes = Vec::new();
    archive
        .zip_archive()
        .by_name(&entry)
        .map_err(|e| anyhow!("{e}"))
        .and_then(|mut f| Ok(f.read_to_end(&mut bytes)?))
        .with_context(|| format!("{source}: reading array {name:?}"))?;
    parse_npy(&bytes).with_context(|| format!("{source}: bad array {name:?}"))
}

/// Decodes a whole .npy file (header + data) into a tensor.
fn parse_npy(bytes: &[u8]) -> Result<Tensor> {
    let mut data = bytes;
    let header = NpyHeader::from_reader(&mut data)?;
    let DType::Plain(ts) = header.dtype() else {
        bail!("structured or sub-array dtypes are not supported");
    };
    let size = ts.size_field();
    let elem_type = match (ts.type_char(), size) {
        (TypeChar::Bool, 1) => ElemType::Bool,
        (TypeChar::Int, 1) => ElemType::I8,
        (TypeChar::Int, 2) => ElemType::I16,
        (TypeChar::Int, 4) => ElemType::I32,
        (TypeChar::Int, 8) => ElemType::I64,
        (TypeChar::Uint, 1) => ElemType::U8,
        (TypeChar::Uint, 2) => ElemType::U16,
        (TypeChar::Uint, 4) => ElemType::U32,
        (TypeChar::Uint, 8) => ElemType::U64,
        (TypeChar::Float, 2) => ElemType::F16,
        (TypeChar::Float, 4) => ElemType::F32,
        (TypeChar::Float, 8) => ElemType::F64,
        _ => bail!("numpy dtype {ts} is not supported"),
    };
    let big = ts.endianness() == Endianness::Big;
    let shape: Vec<usize> = header
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .context("array dimension too large")?;
    let n: usize = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .context("array too large")?;
    let nbytes = n
        .checked_mul(elem_type.size_of())
        .context("array too large")?;
    if data.len() < nbytes {
        bail!(
            "truncated data: {} bytes for {n} elements of {elem_type}, need {nbytes}",
            data.len()
        );
    }
    let data = &data[..nbytes];
    // A Fortran-order array is the C-order array of the reversed shape, transposed.
    let fortran = header.order() == Order::Fortran && shape.len() > 1;
    let storage_shape: Vec<usize> = if fortran {
        shape.iter().rev().copied().collect()
    } else {
        shape.clone()
    };
    let t = decode(elem_type, &storage_shape, data, big)?;
    if fortran {
        let axes: Vec<usize> = (0..shape.len()).rev().collect();
        t.permuted(&axes)
    } else {
        Ok(t)
    }
}

macro_rules! chunks {
    ($data:expr, $t:ty, $big:expr) => {{
        const N: usize = std::mem::size_of::<$t>();
        $data
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                if $big {
                    <$t>::from_be_bytes(a)
                } else {
                    <$t>::from_le_bytes(a)
                }
            })
            .collect::<Vec<$t>>()
    }};
}

fn decode(elem_type: ElemType, shape: &[usize], data: &[u8], big: bool) -> Result<Tensor> {
    match elem_type {
        ElemType::Bool => {
            let v = data
                .iter()
                .map(|&b| match b {
                    0 => Ok(false),
                    1 => Ok(true),
                    other => Err(anyhow!("invalid bool byte {other}")),
                })
                .collect::<Result<Vec<bool>>>()?;
            Tensor::from_bool(shape, &v)
        }
        ElemType::I8 => Tensor::from_i8(shape, &chunks!(data, i8, big)),
        ElemType::U8 => Tensor::from_u8(shape, data),
        ElemType::I16 => Tensor::from_i16(shape, &chunks!(data, i16, big)),
        ElemType::U16 => Tensor::from_u16(shape, &chunks!(data, u16, big)),
        ElemType::I32 => Tensor::from_i32(shape, &chunks!(data, i32, big)),
        ElemType::U32 => Tensor::from_u32(shape, &chunks!(data, u32, big)),
        ElemType::I64 => Tensor::from_i64(shape, &chunks!(data, i64, big)),
        ElemType::U64 => Tensor::from_u64(shape, &chunks!(data, u64, big)),
        ElemType::F32 => Tensor::from_f32(shape, &chunks!(data, f32, big)),
        ElemType::F64 => Tensor::from_f64(shape, &chunks!(data, f64, big)),
        ElemType::F16 => {
            let v: Vec<f16> = chunks!(data, u16, big)
                .into_iter()
                .map(f16::from_bits)
                .collect();
            Tensor::from_f16(shape, &v)
        }
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, fully deterministic.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
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
    use std::io::Write;

    fn spec(name: &str, elem_type: ElemType, shape: &[usize]) -> InputSpec {
        InputSpec {
            name: name.into(),
            elem_type,
            shape: shape.to_vec(),
            declared: shape.iter().map(|&d| Dim::Fixed(d)).collect(),
        }
    }

    /// A .npy file, written by hand (version 1.0).
    fn npy(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let shape_str = match shape {
            [] => "()".to_string(),
            [d] => format!("({d},)"),
            _ => format!(
                "({})",
                shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let fo = if fortran { "True" } else { "False" };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': {fo}, 'shape': {shape_str}, }}");
        let pad = (64 - (10 + header.len() + 1) % 64) % 64;
        header.push_str(&" ".repeat(pad));
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    fn f32_le(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn npz(path: &Path, arrays: &[(&str, Vec<u8>)]) {
        let file = std::fs::File::create(path).unwrap();
        let mut w = npyz::npz::NpzWriter::new(file);
        for (name, bytes) in arrays {
            let zw = w.zip_writer();
            zw.start_file(format!("{name}.npy"), Default::default())
                .unwrap();
            zw.write_all(bytes).unwrap();
        }
        w.zip_writer().finish().unwrap();
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn err_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        format!("{:#}", r.unwrap_err())
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

    #[test]
    fn npy_decoding() {
        let t = parse_npy(&npy("<f4", false, &[2, 2], &f32_le(&[1.0, 2.0, 3.0, 4.0]))).unwrap();
        assert_eq!(t.shape(), &[2, 2]);
        assert_eq!(t.to_f32_vec().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        // Fortran order: memory holds columns
        let t = parse_npy(&npy(
            "<f4",
            true,
            &[2, 3],
            &f32_le(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]),
        ))
        .unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.to_f32_vec().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // big endian
        let be: Vec<u8> = [1i64, -2].iter().flat_map(|x| x.to_be_bytes()).collect();
        let t = parse_npy(&npy(">i8", false, &[2], &be)).unwrap();
        assert_eq!(t.elem_type(), ElemType::I64);
        assert_eq!(t.to_f32_vec().unwrap(), vec![1.0, -2.0]);
        // f16, bool, scalar
        let h: Vec<u8> = [0x3c00u16, 0xc000]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let t = parse_npy(&npy("<f2", false, &[2], &h)).unwrap();
        assert_eq!(
            (t.elem_type(), t.to_f32_vec().unwrap()),
            (ElemType::F16, vec![1.0, -2.0])
        );
        let t = parse_npy(&npy("|b1", false, &[3], &[1, 0, 1])).unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), vec![1.0, 0.0, 1.0]);
        assert!(err_of(parse_npy(&npy("|b1", false, &[1], &[7]))).contains("invalid bool"));
        let t = parse_npy(&npy("<f8", false, &[], &2.5f64.to_le_bytes())).unwrap();
        assert_eq!((t.shape().len(), t.to_f64_vec().unwrap()), (0, vec![2.5]));
        // errors
        assert!(err_of(parse_npy(&npy("<f4", false, &[4], &[0; 8]))).contains("truncated"));
        assert!(err_of(parse_npy(&npy("<c8", false, &[1], &[0; 8]))).contains("not supported"));
        assert!(parse_npy(b"garbage").is_err());
    }

    #[test]
    fn a_fifo_is_refused_not_read() {
        let dir = tmpdir("fifo");
        let fifo = dir.join("x.npz");
        let made = rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        );
        made.unwrap();
        for err in [
            format!("{:#}", sample_shapes(&fifo).unwrap_err()),
            format!("{:#}", load_samples(&fifo, &[]).unwrap_err()),
        ] {
            assert!(err.contains("neither a regular file nor a folder"), "{err}");
        }
    }

    #[test]
    fn load_npz_npy_and_folders() {
        let dir = tmpdir("samples");
        let specs = vec![
            spec("x", ElemType::F32, &[1, 2]),
            spec("ids", ElemType::I64, &[3]),
        ];
        let ids: Vec<u8> = [1i64, 2, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
        let good = |v: f32| {
            vec![
                ("x", npy("<f4", false, &[1, 2], &f32_le(&[v, v]))),
                ("ids", npy("<i8", false, &[3], &ids)),
            ]
        };
        npz(&dir.join("b.npz"), &good(2.0));
        npz(&dir.join("a.npz"), &good(1.0));
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let one = load_samples(&dir.join("a.npz"), &specs).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(
            one[0].get("x").unwrap().to_f32_vec().unwrap(),
            vec![1.0, 1.0]
        );
        assert_eq!(
            one[0].get("ids").unwrap().to_f32_vec().unwrap(),
            vec![1.0, 2.0, 3.0]
        );
        let all = load_samples(&dir, &specs).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all[0].source().ends_with("a.npz") && all[1].source().ends_with("b.npz"));
        assert_eq!(
            all[1].get("x").unwrap().to_f32_vec().unwrap(),
            vec![2.0, 2.0]
        );

        // errors name the file, the input, what was expected and what came
        let bad = dir.join("bad");
        std::fs::create_dir_all(&bad).unwrap();
        npz(&bad.join("missing.npz"), &good(1.0)[..1]);
        let e = err_of(load_samples(&bad.join("missing.npz"), &specs));
        assert!(
            e.contains("missing.npz") && e.contains("no array for input \"ids\""),
            "{e}"
        );
        let mut extra = good(1.0);
        extra.push(("label", npy("<i8", false, &[1], &[0; 8])));
        npz(&bad.join("extra.npz"), &extra);
        let e = err_of(load_samples(&bad.join("extra.npz"), &specs));
        assert!(e.contains("\"label\" is not an input"), "{e}");
        let mut shape = good(1.0);
        shape[0].1 = npy("<f4", false, &[2, 1], &f32_le(&[1.0, 1.0]));
        npz(&bad.join("shape.npz"), &shape);
        let e = err_of(load_samples(&bad.join("shape.npz"), &specs));
        assert!(
            e.contains("shape.npz")
                && e.contains("\"x\"")
                && e.contains("expected shape [1, 2], got [2, 1]"),
            "{e}"
        );
        let mut dtype = good(1.0);
        dtype[0].1 = npy("<f8", false, &[1, 2], &[0; 16]);
        npz(&bad.join("dtype.npz"), &dtype);
        let e = err_of(load_samples(&bad.join("dtype.npz"), &specs));
        assert!(e.contains("expected float32, got float64"), "{e}");
        std::fs::write(
            bad.join("x.npy"),
            npy("<f4", false, &[1, 2], &f32_le(&[1.0, 1.0])),
        )
        .unwrap();
        let e = err_of(load_samples(&bad.join("x.npy"), &specs));
        assert!(e.contains("single-input") && e.contains("x, ids"), "{e}");
        let e = err_of(load_samples(&dir.join("nothing-here"), &specs));
        assert!(e.contains("nothing-here"), "{e}");
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(err_of(load_samples(&empty, &specs)).contains("no .npz or .npy"));
        std::fs::write(empty.join("junk.npz"), "junk").unwrap();
        assert!(err_of(load_samples(&empty, &specs)).contains("junk.npz"));

        // bare .npy files for a single-input model, in a folder
        let npys = dir.join("npys");
        std::fs::create_dir_all(&npys).unwrap();
        for (i, name) in ["s10.npy", "s02.npy"].iter().enumerate() {
            let v = i as f32;
            std::fs::write(
                npys.join(name),
                npy("<f4", false, &[1, 2], &f32_le(&[v, v])),
            )
            .unwrap();
        }
        let s = load_samples(&npys, &specs[..1]).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].get("x").unwrap().to_f32_vec().unwrap(), vec![1.0, 1.0]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
