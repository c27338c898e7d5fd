//! Opening one data file: its headers read (never its data), and how each
//! input's array splits into samples worked out and checked against the
//! model's inputs ([`Layout`]); the arrays of a `.npz` read in input order.

use crate::runtime::{Dim, ElemType, InputShapes, InputSpec};
use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::path::Path;

use super::*;

/// Reads one file's headers and works out how each input's array splits.
pub(super) fn open_file(
    path: &Path,
    inputs: &[InputSpec],
    user: &InputShapes,
    preprocess: Option<&Preprocess>,
) -> Result<File> {
    let kind = kind_of(path).context("expected a .npy, .npz or image file")?;
    let single = || -> Result<&InputSpec> {
        match inputs {
            [spec] => Ok(spec),
            _ => bail!(
                "a {} feeds single-input models only, this one has {} inputs ({}); \
                 use a .npz keyed by input name",
                if kind == Kind::Image {
                    "image"
                } else {
                    "bare .npy"
                },
                inputs.len(),
                names(inputs)
            ),
        }
    };
    let layouts = match kind {
        Kind::Image => {
            let spec = single()?;
            let p = preprocess.context("an image needs --preprocess")?;
            if spec.elem_type != ElemType::F32 {
                bail!(
                    "images feed float32 inputs; input {:?} is {}",
                    spec.name,
                    spec.elem_type
                );
            }
            let shape = image::shape(path, p)?;
            vec![fit(spec, user, shape, None)?]
        }
        Kind::Npy => {
            let spec = single()?;
            let mut head = vec![0u8; 4096];
            let mut f = std::fs::File::open(path).context("cannot open")?;
            let n = read_up_to(&mut f, &mut head)?;
            let header = npy::Header::parse(&head[..n]).context("bad .npy file")?;
            vec![fit(spec, user, header.shape.clone(), Some(header))?]
        }
        Kind::Npz => {
            let mut archive = npyz::npz::NpzArchive::open(path).context("cannot open as .npz")?;
            let keys: Vec<String> = archive.array_names().map(|s| s.to_string()).collect();
            if let Some(k) = keys.iter().find(|k| !inputs.iter().any(|s| &s.name == *k)) {
                bail!(
                    "array {k:?} is not an input of the model (inputs: {})",
                    names(inputs)
                );
            }
            let mut layouts = Vec::new();
            for spec in inputs {
                if !keys.contains(&spec.name) {
                    bail!(
                        "no array for input {:?} (the file has: {})",
                        spec.name,
                        if keys.is_empty() {
                            "nothing".into()
                        } else {
                            keys.join(", ")
                        }
                    );
                }
                let mut head = vec![0u8; 4096];
                let entry = npyz::npz::file_name_from_array_name(&spec.name);
                let n = archive
                    .zip_archive()
                    .by_name(&entry)
                    .map_err(|e| anyhow!("{e}"))
                    .and_then(|mut e| read_up_to(&mut e, &mut head))
                    .with_context(|| format!("reading array {:?}", spec.name))?;
                let header = npy::Header::parse(&head[..n])
                    .with_context(|| format!("bad array {:?}", spec.name))?;
                layouts.push(fit(spec, user, header.shape.clone(), Some(header))?);
            }
            agree(&mut layouts);
            layouts
        }
    };
    Ok(File {
        path: path.to_path_buf(),
        kind,
        layouts,
    })
}

/// Reads as much of `r` as fits in `buf` (headers are short).
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// How an array of `shape` feeds input `spec`: checks its element type and
/// rank, splits axis 0 into samples, and checks each sample's shape against
/// the model's fixed dims (or the `--input-shape` override).
///
/// * one more axis than the input: a stack of samples, one per index;
/// * as many axes, input with a fixed first dim B: N/B runs of B rows;
/// * as many axes, a symbolic first dim on an input of rank 2 or more (a
///   batch): N samples of one row;
/// * otherwise (rank-1 symbolic, scalars): the whole array is one sample.
fn fit(
    spec: &InputSpec,
    user: &InputShapes,
    shape: Vec<usize>,
    header: Option<npy::Header>,
) -> Result<Layout> {
    let want = expected(spec, user);
    if let Some(h) = &header {
        if h.elem_type != spec.elem_type {
            bail!(
                "input {:?}: expected {} {want}, got {} {:?}",
                spec.name,
                spec.elem_type,
                h.elem_type,
                h.shape
            );
        }
    }
    let declared = &spec.declared;
    let rank = declared.len();
    let (rows, sample_shape) = if shape.len() == rank + 1 {
        (1, shape[1..].to_vec())
    } else if shape.len() == rank && rank > 0 {
        match (user.get(&spec.name), &declared[0]) {
            (Some(&[b, ..]), _) if b > 0 => (b, shape.clone()),
            (_, Dim::Fixed(b)) if *b > 0 => (*b, shape.clone()),
            (_, _) if rank >= 2 => (1, shape.clone()),
            _ => (shape[0], shape.clone()),
        }
    } else if shape.len() == rank {
        (1, shape.clone())
    } else {
        bail!(
            "input {:?}: expected rank {rank} {want} (or a stack of them, rank {}), got shape {shape:?}",
            spec.name,
            rank + 1
        );
    };
    let mut sample_shape = sample_shape;
    if shape.len() == rank && rank > 0 {
        let n = shape[0];
        if n % rows != 0 {
            bail!(
                "input {:?}: {n} rows along axis 0 is not a multiple of the model's batch {rows} ({want})",
                spec.name
            );
        }
        sample_shape[0] = rows;
    }
    let fits = match user.get(&spec.name) {
        Some(u) => u == sample_shape.as_slice(),
        None => declared.iter().zip(&sample_shape).all(|(d, &s)| match d {
            Dim::Fixed(f) => *f == s,
            _ => true,
        }),
    };
    if !fits {
        bail!(
            "input {:?}: expected shape {want}, got {sample_shape:?}{}",
            spec.name,
            if shape != sample_shape {
                format!(" (from an array of {shape:?})")
            } else {
                String::new()
            }
        );
    }
    let flexible = shape.len() == rank
        && rank >= 2
        && user.get(&spec.name).is_none()
        && !matches!(declared[0], Dim::Fixed(_));
    Ok(Layout {
        header,
        rows,
        shape: sample_shape,
        flexible,
    })
}

/// Makes the arrays of one file agree on the number of samples. An array
/// split along a symbolic first dim is read whole instead when the
/// others (fixed batch, stacks) say the file is one sample: a
/// `[sequence, 576]` beside a `[1, 1, 128]` state is one sample.
fn agree(layouts: &mut [Layout]) {
    let definite: Vec<usize> = layouts
        .iter()
        .filter(|l| !l.flexible)
        .map(runs_of)
        .collect();
    let flexible: Vec<usize> = layouts.iter().filter(|l| l.flexible).map(runs_of).collect();
    let whole = match definite.first() {
        Some(&k) => flexible.iter().any(|&n| n != k),
        None => flexible.windows(2).any(|w| w[0] != w[1]),
    };
    if whole {
        for l in layouts.iter_mut().filter(|l| l.flexible) {
            if let Some(h) = &l.header {
                l.rows = h.shape[0];
                l.shape = h.shape.clone();
            }
        }
    }
}

/// Samples one array yields.
fn runs_of(l: &Layout) -> usize {
    match &l.header {
        None => 1,
        Some(h) if h.shape.len() > l.shape.len() => h.shape[0],
        Some(h) if !h.shape.is_empty() => h.shape[0] / l.rows.max(1),
        Some(_) => 1,
    }
}

/// The shape an input expects, symbolic dims by name: `[1, 3, h, w]`.
fn expected(spec: &InputSpec, user: &InputShapes) -> String {
    match user.get(&spec.name) {
        Some(u) => format!("{u:?}"),
        None => format!(
            "[{}]",
            spec.declared
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Samples in a file: the same for every input, else an error naming both counts.
pub(super) fn count_runs(f: &File) -> Result<usize> {
    let mut count: Option<(usize, usize)> = None;
    for (ix, l) in f.layouts.iter().enumerate() {
        let n = runs_of(l);
        match count {
            Some((c, first)) if c != n => bail!(
                "its arrays hold different numbers of samples: {c} for input #{first}, {n} for input #{ix}"
            ),
            _ => count = Some((n, ix)),
        }
    }
    Ok(count.map_or(0, |(c, _)| c))
}

/// The arrays of a `.npz`, in the order of `inputs`.
pub(super) fn read_npz(path: &Path, inputs: &[InputSpec]) -> Result<Vec<Vec<u8>>> {
    let mut archive = npyz::npz::NpzArchive::open(path).context("cannot open as .npz")?;
    inputs
        .iter()
        .map(|spec| {
            let entry = npyz::npz::file_name_from_array_name(&spec.name);
            let mut bytes = Vec::new();
            archive
                .zip_archive()
                .by_name(&entry)
                .map_err(|e| anyhow!("{e}"))
                .and_then(|mut f| Ok(f.read_to_end(&mut bytes)?))
                .with_context(|| format!("reading array {:?}", spec.name))?;
            Ok(bytes)
        })
        .collect()
}

fn names(inputs: &[InputSpec]) -> String {
    inputs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
