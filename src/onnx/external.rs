//! External data: tensors stored in side files next to the model
//! (`location`, `offset`, `length` relative to the model's folder).
//!
//! Reading refuses absolute paths, `..` escapes and symlinks that leave the
//! folder. Writing puts every tensor of at least `threshold` bytes into one
//! side file, each aligned to `ALIGN` bytes so runtimes can map them.

use super::output::TempOut;
use super::proto as pb;
use anyhow::{anyhow, bail, ensure, Context, Result};
use bytes::Bytes;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

const ALIGN: u64 = 4096;

#[derive(Clone, Debug)]
pub struct ExternalData {
    /// Side file name (in the output folder); default `<output file name>.data`.
    pub file_name: Option<String>,
    /// Tensors smaller than this stay inline.
    pub threshold: usize,
}

impl Default for ExternalData {
    fn default() -> Self {
        ExternalData {
            file_name: None,
            threshold: 1024,
        }
    }
}

impl ExternalData {
    /// The side file's name for a model written to `model_path`
    /// (`<model file name>.data` unless named).
    pub fn file_name_for(&self, model_path: &Path) -> Result<String> {
        let file_name = match &self.file_name {
            Some(n) => n.clone(),
            None => format!(
                "{}.data",
                model_path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("model.onnx")
            ),
        };
        ensure!(
            Path::new(&file_name).components().count() == 1 && !file_name.starts_with('.'),
            "external data file name '{file_name}' must be a plain file name"
        );
        Ok(file_name)
    }
}

const EXTERNAL: i32 = pb::tensor_proto::DataLocation::External as i32;

/// Every tensor of the model, subgraphs and functions included.
fn for_each_tensor(
    m: &mut pb::ModelProto,
    f: &mut dyn FnMut(&mut pb::TensorProto) -> Result<()>,
) -> Result<()> {
    fn graph(
        g: &mut pb::GraphProto,
        f: &mut dyn FnMut(&mut pb::TensorProto) -> Result<()>,
    ) -> Result<()> {
        for t in &mut g.initializer {
            f(t)?;
        }
        for st in &mut g.sparse_initializer {
            for t in st.values.iter_mut().chain(st.indices.iter_mut()) {
                f(t)?;
            }
        }
        for n in &mut g.node {
            nodes(std::slice::from_mut(n), f)?;
        }
        Ok(())
    }
    fn nodes(
        ns: &mut [pb::NodeProto],
        f: &mut dyn FnMut(&mut pb::TensorProto) -> Result<()>,
    ) -> Result<()> {
        for a in ns.iter_mut().flat_map(|n| n.attribute.iter_mut()) {
            for t in a.t.iter_mut().chain(a.tensors.iter_mut()) {
                f(t)?;
            }
            for g in
                a.g.iter_mut()
                    .map(|g| g as &mut pb::GraphProto)
                    .chain(a.graphs.iter_mut())
            {
                graph(g, f)?;
            }
        }
        Ok(())
    }
    if let Some(g) = &mut m.graph {
        graph(g, f)?;
    }
    for func in &mut m.functions {
        nodes(&mut func.node, f)?;
    }
    Ok(())
}

/// What `resolve` read.
#[derive(Debug, Default)]
pub struct Resolved {
    pub tensors: usize,
    pub bytes: u64,
    /// Every side file read, as `model folder/location`.
    pub files: Vec<PathBuf>,
}

/// Loads every external tensor into `raw_data`.
pub fn resolve(m: &mut pb::ModelProto, model_dir: Option<&Path>) -> Result<Resolved> {
    let mut files: HashMap<PathBuf, Bytes> = HashMap::new();
    let (mut count, mut bytes) = (0usize, 0u64);
    for_each_tensor(m, &mut |t| {
        if t.data_location != Some(EXTERNAL) {
            return Ok(());
        }
        let name = t.name.clone().unwrap_or_default();
        let dir = model_dir.ok_or_else(|| {
            anyhow!("tensor '{name}' uses external data, but the model has no folder")
        })?;
        let entry = |key: &str| {
            t.external_data
                .iter()
                .find(|e| e.key.as_deref() == Some(key))
                .and_then(|e| e.value.clone())
        };
        let location = entry("location")
            .ok_or_else(|| anyhow!("tensor '{name}': external data without a location"))?;
        let number = |key: &str| -> Result<Option<u64>> {
            entry(key)
                .map(|v| {
                    v.parse::<u64>()
                        .with_context(|| format!("tensor '{name}': bad {key} '{v}'"))
                })
                .transpose()
        };
        let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
        let path = dir.join(&location);
        let data = match files.get(&path) {
            Some(d) => d.clone(),
            None => {
                let file =
                    open_inside(dir, &location).with_context(|| format!("tensor '{name}'"))?;
                let d = super::read_open(file).with_context(|| {
                    format!(
                        "tensor '{name}': cannot read external data {}",
                        path.display()
                    )
                })?;
                files.insert(path.clone(), d.clone());
                d
            }
        };
        let end = match length {
            Some(len) => offset.checked_add(len),
            None => Some(data.len() as u64),
        };
        let end = end.filter(|&e| e <= data.len() as u64 && offset <= e).ok_or_else(|| {
            anyhow!("tensor '{name}': external data range {offset}+{length:?} is outside {} ({} bytes)", location, data.len())
        })?;
        t.raw_data = Some(data.slice(offset as usize..end as usize));
        t.external_data.clear();
        t.data_location = None;
        count += 1;
        bytes += end - offset;
        Ok(())
    })?;
    let mut files: Vec<PathBuf> = files.into_keys().collect();
    files.sort();
    Ok(Resolved {
        tensors: count,
        bytes,
        files,
    })
}

/// Opens `dir/location` for reading, refusing anything that would leave
/// `dir` and anything but a regular file (a FIFO would block forever).
///
/// Links inside the folder are allowed: the path is resolved first, checked to
/// lie inside the folder, then opened one component at a time from the
/// folder with `O_NOFOLLOW`, so a component swapped for a link between the
/// check and the open fails instead of being followed.
fn open_inside(dir: &Path, location: &str) -> Result<File> {
    use rustix::fs::{openat, Mode, OFlags};
    let rel = Path::new(location);
    ensure!(
        !rel.is_absolute(),
        "external data location '{location}' is an absolute path"
    );
    ensure!(
        rel.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
        "external data location '{location}' leaves the model's folder"
    );
    let path = dir.join(rel);
    let cannot_open = || format!("cannot open external data {}", path.display());
    let real = path.canonicalize().with_context(cannot_open)?;
    let real_dir = dir
        .canonicalize()
        .with_context(|| format!("cannot open folder {}", dir.display()))?;
    let Ok(inside) = real.strip_prefix(&real_dir) else {
        bail!("external data location '{location}' links outside the model's folder");
    };
    let names: Vec<_> = inside.components().collect();
    let Some((last, parents)) = names.split_last() else {
        bail!("external data location '{location}' is the model's folder");
    };
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let mut at: OwnedFd = File::open(&real_dir)
        .with_context(|| format!("cannot open folder {}", dir.display()))?
        .into();
    for name in parents {
        at = openat(
            &at,
            name.as_os_str(),
            flags | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)
        .with_context(cannot_open)?;
    }
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    let fd = openat(
        &at,
        last.as_os_str(),
        flags | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)
    .with_context(cannot_open)?;
    let file = File::from(fd);
    let meta = file.metadata().with_context(cannot_open)?;
    ensure!(
        meta.is_file(),
        "external data {} is not a regular file",
        path.display()
    );
    Ok(file)
}

/// Moves large tensors of `m` into a temporary side file in `dir`; returns
/// its final file name and the temporary file to persist.
pub fn write(
    m: &mut pb::ModelProto,
    model_path: &Path,
    dir: &Path,
    options: &ExternalData,
) -> Result<(String, TempOut)> {
    let file_name = options.file_name_for(model_path)?;
    let tmp = TempOut::new(&dir.join(&file_name))?;
    let mut out = std::io::BufWriter::new(tmp.as_file());
    let mut offset = 0u64;
    for_each_tensor(m, &mut |t| {
        let Some(raw) = t.raw_data.as_ref().filter(|r| r.len() >= options.threshold) else {
            return Ok(());
        };
        let pad = (ALIGN - offset % ALIGN) % ALIGN;
        out.write_all(&vec![0u8; pad as usize])?;
        offset += pad;
        out.write_all(raw)?;
        let length = raw.len();
        refer(t, &file_name, offset, length);
        offset += length as u64;
        Ok(())
    })
    .context("cannot write external data")?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .context("cannot write external data")?;
    Ok((file_name, tmp))
}

/// Makes `t` a reference to `length` bytes at `offset` of the file
/// `location` (relative to the model's folder) instead of holding them.
pub(super) fn refer(t: &mut pb::TensorProto, location: &str, offset: u64, length: usize) {
    let entry = |k: &str, v: String| pb::StringStringEntryProto {
        key: Some(k.to_string()),
        value: Some(v),
    };
    t.external_data = vec![
        entry("location", location.to_string()),
        entry("offset", offset.to_string()),
        entry("length", length.to_string()),
    ];
    t.raw_data = None;
    t.data_location = Some(EXTERNAL);
}
