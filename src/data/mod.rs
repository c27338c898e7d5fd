//! Data: the one door through which `--inputs`, `--verify-inputs`,
//! `--labels`, `--preprocess` and `--holdout` come in, for the passes that
//! fit to data, `--verify` and `--bench`.
//!
//! What it accepts (a path, file or folder):
//! * a `.npy` (single-input models) or `.npz` (one array per input name);
//! * a folder of such files, sorted by file name;
//! * a folder of images (png, jpeg, bmp) with a [`Preprocess`] spec.
//!
//! Every array is split along its first axis into samples ([`Layout`]): a
//! `.npy` of shape `[N, 3, 224, 224]` is N samples for a model taking
//! `[1, 3, 224, 224]` or `[batch, 3, 224, 224]`, N/B runs for a fixed batch
//! B. Symbolic dims are pinned by the data: each sample carries its shapes,
//! and samples of different shapes form [`Dataset::groups`], each run with
//! its own pinned model. `.npy` files are memory-mapped and images decoded
//! one by one, so a dataset is never all in memory: [`Dataset::sample`]
//! reads one sample when asked.
//!
//! This module knows nothing of tract or of the IR: it reads files into
//! `runtime::Sample`s, checked against the `runtime::InputSpec`s the model
//! declares.

#[cfg(feature = "images")]
mod image;
#[cfg(not(feature = "images"))]
#[path = "no_image.rs"]
mod image;
mod labels;
pub mod npy;
mod open;
mod preprocess;
mod split;

pub use labels::{Accuracy, TopK};
pub use preprocess::Preprocess;
pub use split::{folds, holdout, spread};

use crate::runtime::{InputShapes, InputSpec, Sample};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use open::{count_runs, open_file, read_npz};

/// A set of samples on disk, read one at a time.
#[derive(Clone)]
pub struct Dataset {
    root: PathBuf,
    files: Vec<File>,
    items: Vec<Item>,
    inputs: Vec<InputSpec>,
    preprocess: Option<Preprocess>,
    /// Which part of the data this is, when split (`--holdout`).
    part: Option<String>,
    /// The arrays of the last `.npz` read (a zip entry cannot be mapped).
    npz_cache: Arc<Mutex<Option<NpzArrays>>>,
}

/// The arrays of one `.npz` (by file index), in the model's input order.
type NpzArrays = (usize, Vec<Vec<u8>>);

/// One file and how each input's array splits into samples.
#[derive(Clone)]
struct File {
    path: PathBuf,
    kind: Kind,
    /// Per model input (in the model's order): where its array is and how it splits.
    layouts: Vec<Layout>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Npy,
    Npz,
    Image,
}

/// How one array yields samples: sample k holds rows `k*rows..(k+1)*rows`
/// of axis 0, shaped `shape` (the array's shape with axis 0 = `rows`, or
/// without axis 0 for a stack of samples).
#[derive(Clone, Debug, PartialEq)]
struct Layout {
    header: Option<npy::Header>,
    rows: usize,
    shape: Vec<usize>,
    /// Split along a symbolic first dim, which may be a batch or not (a
    /// sequence): `open::agree` may read it whole instead.
    flexible: bool,
}

/// One sample: run `run` of file `file`, and its labels when given.
#[derive(Clone)]
struct Item {
    file: usize,
    run: usize,
    labels: Vec<i64>,
}

impl Dataset {
    /// Opens `path` for a model with `inputs` (declared dims; `user` holds
    /// the `--input-shape` overrides). Reads headers only; checks every
    /// file's element types and shapes against the model.
    pub fn open(
        path: &Path,
        inputs: &[InputSpec],
        user: &InputShapes,
        preprocess: Option<&Preprocess>,
    ) -> Result<Dataset> {
        let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
        // Reading a FIFO or a device would block or never end.
        ensure!(
            meta.is_dir() || meta.is_file(),
            "{}: neither a regular file nor a folder",
            path.display()
        );
        let paths = if meta.is_dir() {
            list_folder(path, preprocess.is_some())?
        } else {
            vec![path.to_path_buf()]
        };
        let mut files = Vec::new();
        let mut items = Vec::new();
        for p in paths {
            let f =
                open_file(&p, inputs, user, preprocess).with_context(|| p.display().to_string())?;
            let runs = count_runs(&f).with_context(|| p.display().to_string())?;
            let file = files.len();
            items.extend((0..runs).map(|run| Item {
                file,
                run,
                labels: vec![],
            }));
            files.push(f);
        }
        if items.is_empty() {
            bail!(
                "{}: holds no samples (its arrays have 0 rows)",
                path.display()
            );
        }
        Ok(Dataset {
            root: path.to_path_buf(),
            files,
            items,
            inputs: inputs.to_vec(),
            preprocess: preprocess.cloned(),
            part: None,
            npz_cache: Arc::default(),
        })
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The input shapes sample `i` pins, by input name.
    pub fn shapes(&self, i: usize) -> InputShapes {
        let file = &self.files[self.items[i].file];
        let mut shapes = InputShapes::new();
        for (spec, layout) in self.inputs.iter().zip(&file.layouts) {
            shapes.insert(spec.name.clone(), layout.shape.clone());
        }
        shapes
    }

    /// Samples grouped by the shapes they pin (groups sorted by shape,
    /// samples in dataset order): tract runs one pinned model per group.
    pub fn groups(&self) -> Vec<(InputShapes, Vec<usize>)> {
        let mut groups: BTreeMap<Vec<Vec<usize>>, (InputShapes, Vec<usize>)> = BTreeMap::new();
        for i in 0..self.len() {
            let shapes = self.shapes(i);
            let key = shapes.iter().map(|(_, d)| d.to_vec()).collect();
            groups.entry(key).or_insert((shapes, vec![])).1.push(i);
        }
        groups.into_values().collect()
    }

    /// Reads sample `i`.
    pub fn sample(&self, i: usize) -> Result<Sample> {
        let item = &self.items[i];
        let file = &self.files[item.file];
        let source = self.source_of(i);
        let mut sample = Sample::new(source.clone());
        match file.kind {
            Kind::Image => {
                let spec = self
                    .preprocess
                    .as_ref()
                    .context("images need --preprocess")?;
                let t = image::load(&file.path, spec).with_context(|| source.clone())?;
                sample.insert(self.inputs[0].name.clone(), t);
            }
            Kind::Npy => {
                let mapped = npy::NpyFile::open(&file.path).with_context(|| source.clone())?;
                let l = &file.layouts[0];
                let t = mapped
                    .rows(item.run * l.rows, l.rows, &l.shape)
                    .with_context(|| source.clone())?;
                sample.insert(self.inputs[0].name.clone(), t);
            }
            Kind::Npz => {
                let mut cache = self.npz_cache.lock().map_err(|_| anyhow!("npz cache"))?;
                if cache.as_ref().is_none_or(|(f, _)| *f != item.file) {
                    let arrays =
                        read_npz(&file.path, &self.inputs).with_context(|| source.clone())?;
                    *cache = Some((item.file, arrays));
                }
                let (_, arrays) = cache.as_ref().expect("filled above");
                for ((spec, l), bytes) in self.inputs.iter().zip(&file.layouts).zip(arrays) {
                    let h = l.header.as_ref().expect("npz arrays have headers");
                    let t = h
                        .rows(bytes, item.run * l.rows, l.rows, &l.shape)
                        .with_context(|| format!("{source}: array {:?}", spec.name))?;
                    sample.insert(spec.name.clone(), t);
                }
            }
        }
        Ok(sample)
    }

    /// The labels of sample `i` (one per row of its batch), if any were given.
    pub fn labels(&self, i: usize) -> Option<&[i64]> {
        let l = &self.items[i].labels;
        (!l.is_empty()).then_some(l.as_slice())
    }

    /// Whether labels were attached.
    pub fn has_labels(&self) -> bool {
        self.items.first().is_some_and(|i| !i.labels.is_empty())
    }

    /// Attaches the labels in `path` (see `labels::read`), one per batch row.
    pub fn attach_labels(&mut self, path: &Path) -> Result<()> {
        let names: Vec<String> = self
            .items
            .iter()
            .map(|it| file_name(&self.files[it.file].path))
            .collect();
        let rows: Vec<usize> = (0..self.len()).map(|i| self.rows(i)).collect();
        let by_item = labels::read(path, &names, &rows)?;
        for (item, l) in self.items.iter_mut().zip(by_item) {
            item.labels = l;
        }
        Ok(())
    }

    /// Rows (batch entries) in sample `i`: axis 0 of its first input when
    /// the model's input has a batch axis (rank 2 or more), else 1.
    fn rows(&self, i: usize) -> usize {
        let file = &self.files[self.items[i].file];
        match (self.inputs.first(), file.layouts.first()) {
            (Some(spec), Some(l)) if spec.declared.len() >= 2 => l.shape[0],
            _ => 1,
        }
    }

    /// The samples at `indices` (in that order), as a dataset of their
    /// own; `part` says which part it is in the summary.
    pub fn subset(&self, indices: &[usize], part: &str) -> Dataset {
        Dataset {
            items: indices.iter().map(|&i| self.items[i].clone()).collect(),
            part: Some(part.to_string()),
            ..self.clone()
        }
    }

    /// Where sample `i` comes from: the file, and its index in it when the
    /// file holds several.
    pub fn source_of(&self, i: usize) -> String {
        let item = &self.items[i];
        let file = &self.files[item.file];
        let runs = count_runs(file).unwrap_or(1);
        if runs > 1 {
            format!("{}[{}]", file.path.display(), item.run)
        } else {
            file.path.display().to_string()
        }
    }

    /// One line for the summary: path, how it was read, sample count, shape groups.
    pub fn describe(&self) -> String {
        let n = self.len();
        let reading = match (self.files.len(), self.files.first().map(|f| f.kind)) {
            (_, Some(Kind::Image)) => format!(
                "{} images, decoded one at a time, preprocess {}",
                self.files.len(),
                self.preprocess
                    .as_ref()
                    .map_or(String::new(), |p| p.to_string())
            ),
            (1, Some(Kind::Npy)) => "batched .npy, memory-mapped".to_string(),
            (1, Some(Kind::Npz)) => "batched .npz, each array read whole".to_string(),
            (k, _) => format!("folder of {k} .npy/.npz files, .npy memory-mapped"),
        };
        let groups = self.groups().len();
        let shapes = if groups > 1 {
            format!(", {groups} shapes")
        } else {
            String::new()
        };
        let part = self
            .part
            .as_ref()
            .map_or(String::new(), |p| format!(", {p}"));
        format!(
            "{} ({reading}; {n} sample{}{shapes}{part})",
            self.root.display(),
            if n == 1 { "" } else { "s" }
        )
    }

    /// The preprocessing spec, when the data are images.
    pub fn preprocess(&self) -> Option<&Preprocess> {
        self.preprocess.as_ref()
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn kind_of(path: &Path) -> Option<Kind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "npy" => Some(Kind::Npy),
        "npz" => Some(Kind::Npz),
        "png" | "jpg" | "jpeg" | "bmp" => Some(Kind::Image),
        _ => None,
    }
}

/// The sample files of a folder, sorted by name: arrays, or images when a
/// preprocessing spec is given. Other files are ignored.
fn list_folder(dir: &Path, images: bool) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .and_then(|it| it.map(|e| e.map(|e| e.path())).collect())
        .with_context(|| format!("listing {}", dir.display()))?;
    files.retain(|p| p.is_file());
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let (wanted, other): (Vec<PathBuf>, Vec<PathBuf>) = files
        .into_iter()
        .filter(|p| kind_of(p).is_some())
        .partition(|p| (kind_of(p) == Some(Kind::Image)) == images);
    if wanted.is_empty() {
        match (images, other.first()) {
            (false, Some(img)) => bail!(
                "{}: holds images ({} ...) but no .npy/.npz: give --preprocess to read images",
                dir.display(),
                file_name(img)
            ),
            (true, _) => bail!("{}: no .png, .jpg or .bmp image in it", dir.display()),
            (false, None) => bail!(
                "{}: no .npy or .npz file in it (expected one sample, or a batch, per file)",
                dir.display()
            ),
        }
    }
    Ok(wanted)
}
