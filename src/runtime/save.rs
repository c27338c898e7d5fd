//! Outputs written as a .npz (one array per output, keys = output names),
//! the form numpy, Polygraphy and the Python judges read.

use super::load::Outputs;
use super::tensor::{ElemType, Tensor};
use anyhow::{bail, Context, Result};
use npyz::WriterBuilder;
use std::path::Path;

/// One line about a tensor: name, type, shape and range.
pub fn describe(name: &str, t: &Tensor) -> String {
    let range = t.to_f64_vec().ok().filter(|v| !v.is_empty()).map(|v| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        format!(" min {min:.6} max {max:.6} mean {mean:.6}")
    });
    format!(
        "{name}: {} {:?}{}",
        t.elem_type(),
        t.shape(),
        range.unwrap_or_default()
    )
}

/// Writes `outputs` to `path` (a temp file renamed into place).
pub fn save_npz(path: &Path, outputs: &Outputs) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    {
        let mut npz = npyz::npz::NpzWriter::new(std::io::BufWriter::new(tmp.as_file()));
        for (name, t) in outputs.iter() {
            write_array(&mut npz, name, t).with_context(|| format!("saving output {name:?}"))?;
        }
        npz.zip_writer().finish()?;
    }
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn write_array<W: std::io::Write + std::io::Seek>(
    npz: &mut npyz::npz::NpzWriter<W>,
    name: &str,
    t: &Tensor,
) -> Result<()> {
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    macro_rules! put {
        ($t:ty) => {{
            let mut w = npz
                .array::<$t>(name, Default::default())?
                .default_dtype()
                .shape(&shape)
                .begin_nd()?;
            w.extend(t.to_vec::<$t>()?)?;
            w.finish()?;
        }};
    }
    match t.elem_type() {
        ElemType::F32 => put!(f32),
        ElemType::F64 => put!(f64),
        ElemType::I8 => put!(i8),
        ElemType::U8 => put!(u8),
        ElemType::I16 => put!(i16),
        ElemType::U16 => put!(u16),
        ElemType::I32 => put!(i32),
        ElemType::U32 => put!(u32),
        ElemType::I64 => put!(i64),
        ElemType::U64 => put!(u64),
        ElemType::Bool => put!(bool),
        ElemType::F16 => bail!("float16 outputs cannot be saved yet"),
    }
    Ok(())
}
