//! Sparse initializers (`SparseTensorProto`). The IR carries them as opaque
//! bytes; these are the two ways the rest of the crate makes and reads them,
//! so protobuf types stay in this module.

use super::export::export_tensor;
use super::import::import_tensor;
use super::{decode_opaque, opaque, proto as pb};
use crate::ir::{DataType, Opaque, Tensor};
use anyhow::{bail, ensure, Context, Result};

/// A sparse initializer named `name` holding the nonzero values of the f32
/// tensor `dense`: values `[nnz]`, int64 linear indices `[nnz]` ascending,
/// and the dense dims (the form ONNX Runtime reads).
pub fn sparse_from_dense(name: &str, dense: &Tensor) -> Result<Opaque> {
    ensure!(
        dense.dtype == DataType::FLOAT,
        "sparse storage is for f32 tensors (got {})",
        dense.dtype.short_name()
    );
    let values = dense.to_f32()?;
    let (mut kept, mut indices) = (vec![], vec![]);
    for (i, &v) in values.iter().enumerate() {
        if v != 0.0 {
            kept.push(v);
            indices.push(i as i64);
        }
    }
    let n = kept.len() as i64;
    Ok(opaque(&pb::SparseTensorProto {
        values: Some(export_tensor(name, &Tensor::from_f32(vec![n], &kept))?),
        indices: Some(export_tensor(
            &format!("{name}_indices"),
            &Tensor::from_i64(vec![n], &indices),
        )?),
        dims: dense.dims.clone(),
    }))
}

/// The dense tensor a sparse initializer stands for (f32 values; linear
/// `[nnz]` or coordinate `[nnz, rank]` indices).
pub fn densify(sparse: &Opaque) -> Result<Tensor> {
    let st: pb::SparseTensorProto = decode_opaque(sparse)?;
    let (Some(values), Some(indices)) = (st.values, st.indices) else {
        bail!("sparse initializer without values or indices");
    };
    let (name, values) = import_tensor(values)?;
    let (_, indices) = import_tensor(indices)?;
    ensure!(
        values.dtype == DataType::FLOAT,
        "sparse initializer {name}: only f32 values are supported (got {})",
        values.dtype.short_name()
    );
    let dims = st.dims;
    ensure!(
        dims.iter().all(|&d| d >= 0),
        "sparse initializer {name}: negative dims {dims:?}"
    );
    let numel = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
        .filter(|&n| n <= crate::validate::MAX_ELEMENTS as usize)
        .with_context(|| {
            format!("sparse initializer {name}: dims {dims:?} hold too many elements")
        })?;
    let (values, indices) = (values.to_f32()?, indices.to_i64()?);
    let rank = dims.len();
    let linear: Vec<i64> = if indices.len() == values.len() {
        indices
    } else {
        ensure!(
            indices.len() == values.len() * rank,
            "sparse initializer {name}: {} indices for {} values",
            indices.len(),
            values.len()
        );
        // Each coordinate within its dim keeps the sum under numel; an
        // unchecked one could wrap back into range and land elsewhere.
        indices
            .chunks_exact(rank.max(1))
            .map(|c| {
                c.iter()
                    .zip(&dims)
                    .try_fold(0, |acc, (&i, &d)| (0..d).contains(&i).then(|| acc * d + i))
                    .with_context(|| {
                        format!("sparse initializer {name}: coordinates {c:?} outside {dims:?}")
                    })
            })
            .collect::<Result<_>>()?
    };
    let mut dense = vec![0.0f32; numel];
    for (&i, &v) in linear.iter().zip(&values) {
        ensure!(
            i >= 0 && (i as usize) < numel,
            "sparse initializer {name}: index {i} outside {dims:?}"
        );
        dense[i as usize] = v;
    }
    Ok(Tensor::from_f32(dims, &dense))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_and_back_is_the_same_tensor() {
        let dense = Tensor::from_f32(vec![2, 3], &[0.0, 1.5, 0.0, -2.0, 0.0, 0.25]);
        let sparse = sparse_from_dense("w", &dense).unwrap();
        let back = densify(&sparse).unwrap();
        assert_eq!(back.dims, vec![2, 3]);
        assert_eq!(back.to_f32().unwrap(), dense.to_f32().unwrap());
        let st: pb::SparseTensorProto = decode_opaque(&sparse).unwrap();
        assert_eq!(st.values.unwrap().name.as_deref(), Some("w"));
        let (_, indices) = import_tensor(st.indices.unwrap()).unwrap();
        assert_eq!(indices.to_i64().unwrap(), vec![1, 3, 5]);
        assert_eq!(st.dims, vec![2, 3]);
    }

    #[test]
    fn coordinates_past_their_dim_are_refused_not_wrapped() {
        let sparse = |indices: Vec<i64>| {
            let n = indices.len() as i64;
            opaque(&pb::SparseTensorProto {
                values: Some(export_tensor("w", &Tensor::from_f32(vec![1], &[1.0])).unwrap()),
                indices: Some(export_tensor("i", &Tensor::from_i64(vec![1, n], &indices)).unwrap()),
                dims: vec![4, 4],
            })
        };
        assert_eq!(
            densify(&sparse(vec![1, 2])).unwrap().to_f32().unwrap()[6],
            1.0
        );
        // 2^62·4 + 6 wraps to 6 in 64 bits: the same element, unchecked.
        let e = densify(&sparse(vec![1 << 62, 6])).unwrap_err();
        assert!(format!("{e:#}").contains("outside [4, 4]"), "{e:#}");
        assert!(densify(&sparse(vec![0, -1])).is_err());
    }
}
