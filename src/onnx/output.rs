//! Writing files safely: a temporary file beside the target, synced and
//! renamed into place, never over a file the input model reads.
//!
//! Why each step:
//! - The temporary file (`.<target name>.onnx-opt-XXXXXX.tmp`) makes a failed
//!   run leave no partial output. Its path is registered while it exists, so
//!   that SIGINT/SIGTERM (see `remove_temps_on_signals`) delete it before the
//!   process exits with 130/143. SIGKILL cannot be caught: a killed run can
//!   leave that file, and its name says what it is.
//! - `sync_all` on the file before the rename and on the folder after it, so a
//!   crash of the machine leaves either the old file or the whole new one.
//! - A replaced file keeps its mode; a new one gets the usual `0666 & !umask`
//!   (tempfile alone would create 0600).
//! - `refuse_overwriting` compares device and inode, so a target that is, or
//!   links to (symbolic or hard link), a file the input reads is refused.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Paths of the temporary files that exist now. Held across each rename, so
/// the signal handler never deletes a file that is being moved into place.
static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Tests only: when set, a writer sleeps this many milliseconds once its
/// temporary file is written, before the rename, so a test can signal the
/// process mid-write.
const PAUSE_ENV: &str = "ONNX_OPT_TEST_PAUSE_AFTER_TEMP_MS";

/// A temporary file that becomes `target` on `persist`, and is deleted when
/// dropped or when the process gets SIGINT/SIGTERM.
pub struct TempOut {
    file: Option<tempfile::NamedTempFile>,
    target: PathBuf,
}

impl TempOut {
    /// A fresh temporary file in `target`'s folder.
    pub fn new(target: &Path) -> Result<TempOut> {
        let dir = folder_of(target);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut registry = lock();
        let file = tempfile::Builder::new()
            .prefix(&format!(".{name}.onnx-opt-"))
            .suffix(".tmp")
            .permissions(default_permissions())
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a file in {}", dir.display()))?;
        registry.push(file.path().to_path_buf());
        drop(registry);
        Ok(TempOut {
            file: Some(file),
            target: target.to_path_buf(),
        })
    }

    pub fn as_file(&self) -> &File {
        self.file
            .as_ref()
            .expect("present until persisted")
            .as_file()
    }

    pub fn as_file_mut(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("present until persisted")
            .as_file_mut()
    }

    /// Syncs the file, gives it the mode of the file it replaces (if any),
    /// renames it over the target and syncs the folder.
    pub fn persist(mut self) -> Result<()> {
        let file = self.file.take().expect("persisted once");
        let target = self.target.clone();
        let fail = || format!("cannot write {}", target.display());
        if let Some(ms) = std::env::var(PAUSE_ENV).ok().and_then(|v| v.parse().ok()) {
            eprintln!("paused with {} written", file.path().display());
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        if let Ok(meta) = std::fs::metadata(&target) {
            file.as_file()
                .set_permissions(meta.permissions())
                .with_context(fail)?;
        }
        file.as_file().sync_all().with_context(fail)?;
        let mut registry = lock();
        let temp = file.path().to_path_buf();
        file.persist(&target)
            .map_err(|e| e.error)
            .with_context(fail)?;
        registry.retain(|p| p != &temp);
        drop(registry);
        sync_folder(folder_of(&target)).with_context(fail)
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            let mut registry = lock();
            registry.retain(|p| p != file.path());
            drop(file); // deletes it
        }
    }
}

/// A `BufMut` that writes to a file through a fixed buffer, flushed
/// whenever it fills, so encoding a model costs one small buffer rather than
/// a copy of the file. `BufMut` cannot fail, so the first write error is kept
/// and returned by `finish`; nothing is written after it.
pub struct ChunkedWriter<'f> {
    file: &'f File,
    buf: Vec<u8>,
    /// Bytes the encoder may still put (what it announced, less what it put).
    room: usize,
    written: u64,
    error: Option<std::io::Error>,
}

impl<'f> ChunkedWriter<'f> {
    const CHUNK: usize = 1 << 20;

    /// A writer for `len` bytes to `file`.
    pub fn new(file: &'f File, len: usize) -> ChunkedWriter<'f> {
        ChunkedWriter {
            file,
            buf: Vec::with_capacity(Self::CHUNK.min(len.max(1))),
            room: len,
            written: 0,
            error: None,
        }
    }

    fn flush(&mut self) {
        use std::io::Write;
        if self.error.is_none() && !self.buf.is_empty() {
            match (&mut &*self.file).write_all(&self.buf) {
                Ok(()) => self.written += self.buf.len() as u64,
                Err(e) => self.error = Some(e),
            }
        }
        self.buf.clear();
    }

    /// Writes what is buffered; the bytes written, or the first error.
    pub fn finish(mut self) -> std::io::Result<u64> {
        self.flush();
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(self.written),
        }
    }
}

// SAFETY: `chunk_mut` hands out only the buffer's spare capacity, and
// `advance_mut` never moves past what `chunk_mut` handed out.
unsafe impl bytes::BufMut for ChunkedWriter<'_> {
    fn remaining_mut(&self) -> usize {
        self.room
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        let len = self.buf.len() + cnt;
        assert!(len <= self.buf.capacity(), "advance_mut past the chunk");
        // SAFETY: the caller initialised these `cnt` bytes of spare capacity.
        unsafe { self.buf.set_len(len) };
        self.room = self.room.saturating_sub(cnt);
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        if self.buf.len() == self.buf.capacity() {
            self.flush();
        }
        bytes::buf::UninitSlice::uninit(self.buf.spare_capacity_mut())
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    TEMPS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The folder a target lives in (`.` for a bare file name).
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn default_permissions() -> std::fs::Permissions {
    // The kernel applies the umask to this creation mode.
    std::fs::Permissions::from_mode(0o666)
}

fn sync_folder(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` through a synced temporary file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut tmp = TempOut::new(path)?;
    tmp.as_file_mut()
        .write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist()
}

/// Set by a command that can stop early with what it has (`tune`): the
/// first SIGINT then only sets [`interrupted`].
static FIRST_INTERRUPT_STOPS: AtomicBool = AtomicBool::new(false);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// From now on the first Ctrl-C asks the work to stop and finish with what
/// it has ([`interrupted`]); a second one exits as before.
pub fn defer_first_interrupt() {
    FIRST_INTERRUPT_STOPS.store(true, Ordering::SeqCst);
}

/// Whether Ctrl-C asked the work to stop (see [`defer_first_interrupt`]).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// On SIGINT or SIGTERM, deletes the temporary files that exist, then exits
/// with 128 + the signal number (130, 143) as a shell would report it.
/// Call once, early in `main`.
pub fn remove_temps_on_signals() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install the signal handler")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGINT
                    && FIRST_INTERRUPT_STOPS.load(Ordering::SeqCst)
                    && !INTERRUPTED.swap(true, Ordering::SeqCst)
                {
                    eprintln!(
                        "\ninterrupted: finishing with the best so far (Ctrl-C again to quit)"
                    );
                    continue;
                }
                // Keep the lock until exit: no rename may follow the cleanup.
                let registry = lock();
                for path in registry.iter() {
                    let _ = std::fs::remove_file(path);
                }
                std::process::exit(128 + signal);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// Refuses to overwrite the input and checks the output folder is writable,
/// before any work is done.
pub fn check_output(input: &Path, output: &Path) -> Result<()> {
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    anyhow::ensure!(
        dir.is_dir(),
        "output folder {} does not exist",
        dir.display()
    );
    let same = match (input.canonicalize(), dir.canonicalize()) {
        (Ok(i), Ok(d)) => output.file_name().is_some_and(|f| d.join(f) == i),
        _ => false,
    };
    anyhow::ensure!(
        !same,
        "the output path is the input file ({}): choose another output",
        input.display()
    );
    tempfile::tempfile_in(dir)
        .with_context(|| format!("output folder {} is not writable", dir.display()))?;
    Ok(())
}

/// Refuses every target (output, its side file, the report) that is, or
/// links to, one of the files the input model was read from.
pub fn refuse_overwriting(reads: &[PathBuf], targets: &[PathBuf]) -> Result<()> {
    let read_ids: Vec<(FileId, &PathBuf)> = reads
        .iter()
        .filter_map(|p| Some((FileId::of(std::fs::metadata(p).ok()?), p)))
        .collect();
    for target in targets {
        // The target itself (a symlink or a hard link) and what it points to.
        let ids = [std::fs::symlink_metadata(target), std::fs::metadata(target)];
        for id in ids.into_iter().flatten().map(FileId::of) {
            if let Some((_, read)) = read_ids.iter().find(|(r, _)| *r == id) {
                bail!(
                    "{} would replace {}, which the input model reads: choose another output",
                    target.display(),
                    read.display()
                );
            }
        }
    }
    Ok(())
}

/// What makes a file the same file whatever its path.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

impl FileId {
    fn of(meta: std::fs::Metadata) -> FileId {
        FileId(meta.dev(), meta.ino())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Writes that straddle chunk boundaries, one larger than a chunk, and
    /// single bytes come out in order and complete.
    #[test]
    fn chunked_writes_are_the_bytes_put() {
        use bytes::BufMut;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let file = File::create(&path).unwrap();
        let big: Vec<u8> = (0..3 * ChunkedWriter::CHUNK + 17)
            .map(|i| (i * 7) as u8)
            .collect();
        let mut expected = Vec::new();
        let mut w = ChunkedWriter::new(&file, usize::MAX);
        for piece in [&big[..1000], &big[..], &big[5..ChunkedWriter::CHUNK + 3]] {
            w.put_slice(piece);
            expected.extend_from_slice(piece);
        }
        w.put_u8(42);
        expected.push(42);
        assert_eq!(w.finish().unwrap(), expected.len() as u64);
        assert!(std::fs::read(&path).unwrap() == expected);
    }

    #[test]
    fn links_to_a_read_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.data");
        std::fs::write(&input, b"x").unwrap();
        let (hard, soft, other) = (
            dir.path().join("hard"),
            dir.path().join("soft"),
            dir.path().join("other"),
        );
        std::fs::hard_link(&input, &hard).unwrap();
        std::os::unix::fs::symlink(&input, &soft).unwrap();
        let reads = [input.clone()];
        for target in [&input, &hard, &soft] {
            let err = refuse_overwriting(&reads, std::slice::from_ref(target)).unwrap_err();
            assert!(err.to_string().contains("which the input model reads"));
        }
        refuse_overwriting(&reads, &[other]).unwrap();
    }

    #[test]
    fn a_replaced_file_keeps_its_mode_and_a_new_one_follows_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        // What the umask makes of 0666 here, seen through a plain create.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"").unwrap();
        let fresh = dir.path().join("fresh");
        write_atomic(&fresh, b"new").unwrap();
        assert_eq!(mode(&fresh), mode(&plain));

        let old = dir.path().join("old");
        std::fs::write(&old, b"old").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&old, b"new").unwrap();
        assert_eq!(mode(&old), 0o640);
        assert_eq!(std::fs::read(&old).unwrap(), b"new");
    }

    #[test]
    fn a_dropped_temp_file_is_deleted_and_unregistered() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = TempOut::new(&dir.path().join("out.onnx")).unwrap();
        let path = tmp.file.as_ref().unwrap().path().to_path_buf();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".out.onnx.onnx-opt-") && name.ends_with(".tmp"));
        assert!(lock().contains(&path));
        drop(tmp);
        assert!(!path.exists());
        assert!(!lock().contains(&path));
    }
}
