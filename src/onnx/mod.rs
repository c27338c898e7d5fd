//! ONNX files ⇄ IR. The only module that sees protobuf types.
//!
//! Invariants: the input file is only read; output is written to a temporary
//! file in the destination folder and renamed into place, so a failure never
//! leaves a partial file; the same IR always encodes to the same bytes.

mod export;
mod external;
mod import;
mod mutate;
mod output;
mod sparse;
#[allow(clippy::all)]
#[rustfmt::skip]
pub mod proto;

use crate::ir::{DataType, Model, Opaque};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use prost::Message;
use std::path::{Path, PathBuf};

pub use external::ExternalData;
pub use mutate::mutate_proto;
pub use output::{
    check_output, defer_first_interrupt, folder_of, interrupted, refuse_overwriting,
    remove_temps_on_signals, write_atomic,
};
pub use sparse::{densify, sparse_from_dense};

/// Protobuf cannot encode a message of 2 GiB or more.
const PROTOBUF_LIMIT: usize = (1 << 31) - 1;

/// What loading a file found besides the model.
#[derive(Clone, Debug, Default)]
pub struct LoadInfo {
    /// Bytes of the model file plus its external data.
    pub file_bytes: u64,
    pub external_tensors: usize,
    /// Every file read: the model file, then its external-data files.
    pub files: Vec<PathBuf>,
}

/// Decodes a model from bytes; external data is resolved against `model_dir`.
pub fn decode(bytes: Bytes, model_dir: Option<&Path>) -> Result<Model> {
    Ok(decode_with_info(bytes, model_dir)?.0)
}

fn decode_with_info(bytes: Bytes, model_dir: Option<&Path>) -> Result<(Model, LoadInfo)> {
    let len = bytes.len() as u64;
    let mut proto = proto::ModelProto::decode(bytes)
        .context("not a valid ONNX protobuf (truncated or corrupt?)")?;
    let resolved = external::resolve(&mut proto, model_dir)?;
    let model = import::import_model(proto)?;
    Ok((
        model,
        LoadInfo {
            file_bytes: len + resolved.bytes,
            external_tensors: resolved.tensors,
            files: resolved.files,
        },
    ))
}

/// Reads and imports an ONNX file.
pub fn load(path: &Path) -> Result<Model> {
    Ok(load_with_info(path)?.0)
}

pub fn load_with_info(path: &Path) -> Result<(Model, LoadInfo)> {
    let bytes = read_file(path).with_context(|| format!("cannot read {}", path.display()))?;
    remember_mapped(path, &bytes);
    let (model, mut info) = decode_with_info(bytes, Some(folder_of(path)))
        .with_context(|| format!("cannot load {}", path.display()))?;
    info.files.insert(0, path.to_path_buf());
    Ok((model, info))
}

/// Files above this size are memory-mapped rather than read: the weights
/// then alias the page cache instead of a 1x copy (a 100 MB model loads in ~0 ms).
const MAP_ABOVE: u64 = 1 << 20;

fn read_file(path: &Path) -> Result<Bytes> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    read_open(file)
}

/// The contents of an open file, which must be a regular file.
fn read_open(mut file: std::fs::File) -> Result<Bytes> {
    let meta = file.metadata()?;
    anyhow::ensure!(meta.is_file(), "not a regular file");
    if meta.len() <= MAP_ABOVE {
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        std::io::Read::read_to_end(&mut file, &mut bytes)?;
        return Ok(Bytes::from(bytes));
    }
    // SAFETY: the mapping is read-only and private to this process. Another
    // process truncating the file while we run would fault, as with any
    // mapped model (ONNX Runtime and tract map models the same way).
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(Bytes::from_owner(map))
}

/// Large files `load` mapped, by real path, with what identified them then:
/// a runtime can be pointed at their bytes instead of handed a copy
/// ([`encode_for_runtime`]).
static MAPPED: std::sync::Mutex<Vec<Mapped>> = std::sync::Mutex::new(Vec::new());

#[derive(Clone)]
struct Mapped {
    path: PathBuf,
    bytes: Bytes,
    identity: Option<FileIdentity>,
}

/// Device, inode, size and modification time: a file replaced or rewritten
/// since it was mapped no longer holds the bytes a reference would name.
#[derive(Clone, PartialEq)]
struct FileIdentity(u64, u64, u64, Option<std::time::SystemTime>);

fn identity(path: &Path) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileIdentity(m.dev(), m.ino(), m.len(), m.modified().ok()))
}

fn remember_mapped(path: &Path, bytes: &Bytes) {
    if bytes.len() as u64 <= MAP_ABOVE {
        return; // read, not mapped: small, copying it costs nothing
    }
    let (Ok(real), Ok(mut mapped)) = (path.canonicalize(), MAPPED.lock()) else {
        return; // then it is copied, as any tensor
    };
    let identity = identity(&real);
    mapped.push(Mapped {
        path: real,
        bytes: bytes.clone(),
        identity,
    });
}

/// Tensors below this size are copied into the encoding even when they lie
/// in a mapped file: a reference would cost more than it saves.
const REFERENCE_ABOVE: usize = 64 << 10;

/// Encodes a model for a runtime that reads external data relative to a
/// folder (tract, ONNX Runtime): main-graph initializers whose bytes still
/// lie in the file `load` mapped become references into it (location,
/// offset, length), so the runtime reads the weights from the page cache
/// instead of from a second copy in memory (a 201 MB MLP's `fuse,quant`:
/// one copy fewer).
/// Returns the bytes and the folder the references are relative to
/// (`None`: every tensor is inline, as [`encode`] writes it).
pub fn encode_for_runtime(model: &Model) -> Result<(Vec<u8>, Option<PathBuf>)> {
    let mut proto = export::export_model(model)?;
    let mut mapped = MAPPED.lock().map(|m| m.clone()).unwrap_or_default();
    mapped.retain(|m| m.identity.is_some() && identity(&m.path) == m.identity);
    let mut folder = None;
    if let Some(graph) = proto.graph.as_mut() {
        for t in &mut graph.initializer {
            let Some(data) = t.raw_data.as_ref().filter(|d| d.len() > REFERENCE_ABOVE) else {
                continue;
            };
            let Some((path, offset)) = mapped
                .iter()
                .find_map(|m| offset_within(&m.bytes, data).map(|offset| (&m.path, offset)))
            else {
                continue;
            };
            // Runtimes take the folder and the name as UTF-8.
            let (Some(dir), Some(name)) = (
                path.parent().filter(|d| d.to_str().is_some()),
                path.file_name().and_then(|n| n.to_str()),
            ) else {
                continue;
            };
            // One folder for every reference: the runtime reads them all there.
            if *folder.get_or_insert_with(|| dir.to_path_buf()) != dir {
                continue;
            }
            let length = data.len();
            external::refer(t, name, offset as u64, length);
        }
    }
    let len = proto.encoded_len();
    if len > PROTOBUF_LIMIT {
        bail!("the model is {len} bytes, over protobuf's 2 GiB limit");
    }
    Ok((proto.encode_to_vec(), folder))
}

/// Where `part` starts within `whole`, when it is a slice of it.
fn offset_within(whole: &Bytes, part: &Bytes) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (start + part.len() <= whole.len()).then_some(start)
}

/// Encodes a model to ONNX bytes, all tensors inline.
pub fn encode(model: &Model) -> Result<Vec<u8>> {
    let proto = export::export_model(model)?;
    let len = proto.encoded_len();
    if len > PROTOBUF_LIMIT {
        bail!("the model is {len} bytes, over protobuf's 2 GiB limit: save it with external data");
    }
    Ok(proto.encode_to_vec())
}

#[derive(Clone, Debug, Default)]
pub struct SaveOptions {
    /// Write tensors to a side file; automatic when the model would pass 2 GiB.
    pub external: Option<ExternalData>,
    /// Files that must not be replaced (those the input model was read from).
    pub protect: Vec<PathBuf>,
}

/// What `save` wrote.
#[derive(Clone, Debug)]
pub struct Saved {
    pub bytes: u64,
    pub external_file: Option<PathBuf>,
}

/// Exports and writes a model atomically (temporary file, then rename).
pub fn save(model: &Model, path: &Path, options: &SaveOptions) -> Result<Saved> {
    let mut proto = export::export_model(model)?;
    let mut external = options.external.clone();
    if external.is_none() && proto.encoded_len() > PROTOBUF_LIMIT {
        external = Some(ExternalData::default());
    }
    let dir = folder_of(path);
    let mut external_file = None;
    let mut pending_data = None;
    if let Some(ext) = external {
        let (file_name, tmp) = external::write(&mut proto, path, dir, &ext)?;
        external_file = Some(dir.join(&file_name));
        pending_data = Some(tmp);
    }
    // Checked again here, as late as possible: the side file may have become
    // necessary only now (past 2 GiB).
    let targets: Vec<PathBuf> = std::iter::once(path.to_path_buf())
        .chain(external_file.clone())
        .collect();
    refuse_overwriting(&options.protect, &targets)?;
    let (tmp, len) = encode_to_temp(path, &proto)?;
    if let Some(data_tmp) = pending_data {
        data_tmp.persist()?;
    }
    tmp.persist()?;
    Ok(Saved {
        bytes: len,
        external_file,
    })
}

/// Encodes into a temporary file that becomes `path`, through a small
/// buffer written out as it fills: a large model is never copied into a
/// second buffer. (A memory map of the whole file was slower: every page
/// faulted in and zeroed before it was written; ddddocr-crnn, 52 MB, `fuse`
/// end to end 166 ms with it, 140 ms without.)
fn encode_to_temp(path: &Path, proto: &proto::ModelProto) -> Result<(output::TempOut, u64)> {
    let len = proto.encoded_len();
    let tmp = output::TempOut::new(path)?;
    let write_err = || format!("cannot write {}", path.display());
    let mut out = output::ChunkedWriter::new(tmp.as_file(), len);
    proto.encode(&mut out).context("protobuf encoding")?;
    let written = out.finish().with_context(write_err)?;
    anyhow::ensure!(
        written == len as u64,
        "protobuf encoding wrote {written} bytes, not the {len} announced"
    );
    Ok((tmp, written))
}

/// The size `save` would write inline, without encoding.
pub fn encoded_len(model: &Model) -> Result<u64> {
    Ok(export::export_model(model)?.encoded_len() as u64)
}

fn decode_dtype(v: i32) -> DataType {
    DataType(v)
}

fn opaque<M: Message>(m: &M) -> Opaque {
    Opaque(Bytes::from(m.encode_to_vec()))
}

fn opaques<M: Message>(ms: &[M]) -> Vec<Opaque> {
    ms.iter().map(opaque).collect()
}

fn decode_opaque<M: Message + Default>(o: &Opaque) -> Result<M> {
    Ok(M::decode(o.0.clone())?)
}

fn decode_opaques<M: Message + Default>(os: &[Opaque]) -> Result<Vec<M>> {
    os.iter().map(decode_opaque).collect()
}

/// Decoded model protos, for tests that check the round trip field by field.
pub fn decode_proto(bytes: &[u8]) -> Result<proto::ModelProto> {
    Ok(proto::ModelProto::decode(bytes)?)
}

#[cfg(test)]
pub(crate) mod tests;
