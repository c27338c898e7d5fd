//! Symbolic values of small integer tensors computed from shapes.
//!
//! Exporters compute Reshape/Expand shapes at run time: `Concat(Slice(
//! Shape(x), [0], [1]), [512], [256])`. This module says what such a value
//! holds, element by element, without running it: a known integer, or a
//! dimension of some value ([`SymInt`]). It follows `Shape` (with
//! `start`/`end`), `Slice` and `Gather` with constant indices, `Concat`,
//! `Cast` between 32/64-bit integer types, `Unsqueeze`/`Squeeze` of a scalar,
//! `Identity`, integer constants, and element-wise `Mul`/`Add`/`Sub` (one
//! operand of one element broadcasts) where the result is certain: two known
//! numbers whose result fits 32 bits (so that it is the same in an int32
//! computation), or a dim times 1, plus or minus 0.
//!
//! Dims compare equal only when they are certainly the same number: the same
//! known integer; the same `dim_param` (one symbol per model, whichever value
//! names it: ONNX's rule); or the same (value, index) when the dim is unknown
//! or unnamed. An unknown dim of one value never equals one of another value.
//!
//! Assumption: a `Cast` of a dim to a 32-bit type keeps its value, i.e. no
//! dim of a tensor reaches 2^31 elements.

use super::{DataType, DimValue, Graph, Outlet, TypeKind};

/// One element of a shape-like integer value.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SymInt {
    Known(i64),
    /// The model-wide dimension symbol (`dim_param`).
    Param(String),
    /// Dim `index` of `value`, a dim nothing names.
    DimOf {
        value: Outlet,
        index: usize,
    },
}

/// What a 0-D or 1-D integer value holds.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ShapeValue {
    /// True for a 0-D value (then `elems` has one element).
    pub scalar: bool,
    pub elems: Vec<SymInt>,
}

/// How far producers are followed.
const MAX_DEPTH: usize = 32;

/// The dims of a value as far as its known type says (`None`: rank unknown).
pub fn dims(g: &Graph, v: Outlet) -> Option<Vec<SymInt>> {
    match g.known_type(v)?.kind {
        TypeKind::Tensor {
            shape: Some(dims), ..
        } => Some(
            dims.iter()
                .enumerate()
                .map(|(index, d)| match &d.value {
                    DimValue::Known(n) if *n >= 0 => SymInt::Known(*n),
                    DimValue::Param(p) if !p.is_empty() => SymInt::Param(p.clone()),
                    _ => SymInt::DimOf { value: v, index },
                })
                .collect(),
        ),
        _ => None,
    }
}

/// What the integer value `v` holds, if it is 0-D or 1-D and every element is
/// known or a dim.
pub fn shape_value(g: &Graph, v: Outlet) -> Option<ShapeValue> {
    eval(g, v, MAX_DEPTH)
}

fn is_int(dt: DataType) -> bool {
    matches!(
        dt,
        DataType::INT32 | DataType::INT64 | DataType::UINT32 | DataType::UINT64
    )
}

fn const_ints(g: &Graph, v: Option<Outlet>) -> Option<Vec<i64>> {
    let t = g.const_tensor(v?)?;
    (t.dims.len() <= 1 && is_int(t.dtype)).then(|| t.to_i64().ok())?
}

/// A Slice bound (negative: from the end) on a dim of length `len`, as an
/// offset in `[0, len]` (ONNX's rule for positive steps).
pub fn clamp(bound: i64, len: i64) -> i64 {
    let b = if bound < 0 {
        bound.saturating_add(len)
    } else {
        bound
    };
    b.clamp(0, len)
}

fn eval(g: &Graph, v: Outlet, depth: usize) -> Option<ShapeValue> {
    let depth = depth.checked_sub(1)?;
    if let Some(t) = g.const_tensor(v) {
        if t.dims.len() > 1 || !is_int(t.dtype) {
            return None;
        }
        let elems = t.to_i64().ok()?.into_iter().map(SymInt::Known).collect();
        return Some(ShapeValue {
            scalar: t.dims.is_empty(),
            elems,
        });
    }
    let op = g.op(v.node)?;
    if v.slot != 0 || !op.is_default_domain() {
        return None;
    }
    let input = |slot| g.input(v.node, slot);
    let vector = |elems| {
        Some(ShapeValue {
            scalar: false,
            elems,
        })
    };
    match op.op_type.as_str() {
        "Identity" => eval(g, input(0)?, depth),
        "Shape" => {
            let d = dims(g, input(0)?)?;
            let rank = d.len() as i64;
            let start = clamp(op.attr_int("start", 0), rank) as usize;
            let end = clamp(op.attr_int("end", rank), rank) as usize;
            vector(d[start..end.max(start)].to_vec())
        }
        "Cast" => {
            let to = DataType(op.attr_int("to", 0) as i32);
            let x = eval(g, input(0)?, depth)?;
            let fits = |e: &SymInt| match (e, to) {
                (SymInt::Known(n), DataType::INT32) => i32::try_from(*n).is_ok(),
                (SymInt::Known(n), DataType::UINT32) => u32::try_from(*n).is_ok(),
                (SymInt::Known(n), DataType::UINT64) => *n >= 0,
                (SymInt::Known(_), _) => true,
                // Dims are non-negative and (assumed) below 2^31.
                _ => true,
            };
            (is_int(to) && x.elems.iter().all(fits)).then_some(x)
        }
        "Concat" => {
            let inputs = g.inputs(v.node);
            let mut elems = vec![];
            for i in inputs {
                let x = eval(g, i?, depth)?;
                if x.scalar {
                    return None;
                }
                elems.extend(x.elems);
            }
            let axis = op.attr_int("axis", 0);
            (axis == 0 || axis == -1).then_some(())?;
            vector(elems)
        }
        "Slice" => {
            let x = eval(g, input(0)?, depth)?;
            let (starts, ends, axes, steps) = if op.attr_ints("starts").is_some() {
                let a = |n: &str| op.attr_ints(n).map(<[i64]>::to_vec);
                (a("starts")?, a("ends")?, a("axes"), None)
            } else {
                let opt = |slot| match input(slot) {
                    None => Some(None),
                    Some(o) => const_ints(g, Some(o)).map(Some),
                };
                (
                    const_ints(g, input(1))?,
                    const_ints(g, input(2))?,
                    opt(3)?,
                    opt(4)?,
                )
            };
            if x.scalar || starts.len() != 1 || ends.len() != 1 {
                return None;
            }
            if axes.is_some_and(|a| a != [0] && a != [-1]) || steps.is_some_and(|s| s != [1]) {
                return None;
            }
            let len = x.elems.len() as i64;
            let (s, e) = (clamp(starts[0], len) as usize, clamp(ends[0], len) as usize);
            vector(x.elems[s..e.max(s)].to_vec())
        }
        "Gather" => {
            let x = eval(g, input(0)?, depth)?;
            let idx = g.const_tensor(input(1)?)?;
            if x.scalar || !matches!(op.attr_int("axis", 0), 0 | -1) || idx.dims.len() > 1 {
                return None;
            }
            let len = x.elems.len() as i64;
            let elems = idx
                .to_i64()
                .ok()?
                .into_iter()
                .map(|i| {
                    let i = if i < 0 { i + len } else { i };
                    (0..len).contains(&i).then(|| x.elems[i as usize].clone())
                })
                .collect::<Option<Vec<_>>>()?;
            Some(ShapeValue {
                scalar: idx.dims.is_empty(),
                elems,
            })
        }
        "Unsqueeze" => {
            let x = eval(g, input(0)?, depth)?;
            let axes = match op.attr_ints("axes") {
                Some(a) => a.to_vec(),
                None => const_ints(g, input(1))?,
            };
            (x.scalar && matches!(axes[..], [0] | [-1])).then_some(ShapeValue {
                scalar: false,
                elems: x.elems,
            })
        }
        "Mul" | "Add" | "Sub" => {
            let (a, b) = (eval(g, input(0)?, depth)?, eval(g, input(1)?, depth)?);
            arithmetic(&op.op_type, &a, &b)
        }
        "Squeeze" => {
            let x = eval(g, input(0)?, depth)?;
            let axes = match op.attr_ints("axes") {
                Some(a) => Some(a.to_vec()),
                None => match input(1) {
                    None => None,
                    Some(o) => Some(const_ints(g, Some(o))?),
                },
            };
            let ok =
                !x.scalar && x.elems.len() == 1 && axes.is_none_or(|a| matches!(a[..], [0] | [-1]));
            ok.then_some(ShapeValue {
                scalar: true,
                elems: x.elems,
            })
        }
        _ => None,
    }
}

/// `op` (`Mul`, `Add`, `Sub`) of two shape values, element-wise with
/// ONNX's broadcasting of 0-D and 1-D values: equal lengths, or one side of
/// one element. `None` when an element is not certain.
fn arithmetic(op: &str, a: &ShapeValue, b: &ShapeValue) -> Option<ShapeValue> {
    let n = match (a.elems.len(), b.elems.len()) {
        (x, y) if x == y => x,
        (1, y) => y,
        (x, 1) => x,
        _ => return None,
    };
    let at = |v: &ShapeValue, i: usize| v.elems[if v.elems.len() == 1 { 0 } else { i }].clone();
    let elems = (0..n)
        .map(|i| {
            use SymInt::Known;
            let fits = |v: Option<i64>| v.filter(|v| i32::try_from(*v).is_ok()).map(Known);
            match (op, at(a, i), at(b, i)) {
                ("Mul", Known(x), Known(y)) => fits(x.checked_mul(y)),
                ("Add", Known(x), Known(y)) => fits(x.checked_add(y)),
                ("Sub", Known(x), Known(y)) => fits(x.checked_sub(y)),
                ("Mul", d, Known(1)) | ("Mul", Known(1), d) => Some(d),
                ("Add", d, Known(0)) | ("Add", Known(0), d) | ("Sub", d, Known(0)) => Some(d),
                _ => None,
            }
        })
        .collect::<Option<Vec<_>>>()?;
    Some(ShapeValue {
        scalar: a.scalar && b.scalar,
        elems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::build::{f32_type, ModelBuilder};
    use crate::ir::{Attribute, Model, Tensor};

    fn ints(b: &mut ModelBuilder, name: &str, v: &[i64]) -> Outlet {
        b.init(name, Tensor::from_i64(vec![v.len() as i64], v))
    }

    /// a: f32[N, ?, 4], b: f32[N, 3]; returns the model and a few computed values.
    fn model() -> (Model, Vec<Outlet>) {
        let mut b = ModelBuilder::new(15);
        let a = b.input("a", DataType::FLOAT, &[1, 1, 4]);
        let bb = b.input("b", DataType::FLOAT, &[1, 3]);
        let sa = b.op("Shape", &[a], vec![], "sa");
        let sb = b.op("Shape", &[bb], vec![Attribute::int("start", -2)], "sb");
        let c32 = b.op("Cast", &[sa], vec![Attribute::int("to", 6)], "c32");
        let (s0, s1, ax) = (
            ints(&mut b, "s0", &[0]),
            ints(&mut b, "s1", &[1]),
            ints(&mut b, "ax", &[0]),
        );
        let sl = b.op("Slice", &[c32, s0, s1, ax], vec![], "sl");
        let k = ints(&mut b, "k", &[512]);
        let cat = b.op("Concat", &[sl, k], vec![Attribute::int("axis", 0)], "cat");
        let c64 = b.op("Cast", &[cat], vec![Attribute::int("to", 7)], "c64");
        let i1 = b.init("i1", Tensor::from_i64(vec![], &[-2]));
        let ga = b.op("Gather", &[sa, i1], vec![], "ga");
        let un = b.op("Unsqueeze", &[ga, ax], vec![], "un");
        let gb = b.op("Gather", &[sb, i1], vec![], "gb");
        let mut m = b.build().unwrap();
        m.graph.inputs[0].info.ty = Some(f32_type(&["N", "?", "4"]));
        m.graph.inputs[1].info.ty = Some(f32_type(&["N", "3"]));
        (m, vec![sa, sb, c64, un, gb])
    }

    #[test]
    fn follows_shape_computations() {
        let (m, v) = model();
        let g = &m.graph;
        let a = g.find_value("a").unwrap();
        let n = SymInt::Param("N".into());
        let q = SymInt::DimOf { value: a, index: 1 };
        let sv = |o| shape_value(g, o).unwrap();
        assert_eq!(sv(v[0]).elems, [n.clone(), q.clone(), SymInt::Known(4)]);
        // Shape(b, start=-2) = both dims; the same symbol N as a's.
        assert_eq!(sv(v[1]).elems, [n.clone(), SymInt::Known(3)]);
        assert_eq!(sv(v[2]).elems, [n.clone(), SymInt::Known(512)]);
        assert_eq!(
            sv(v[3]),
            ShapeValue {
                scalar: false,
                elems: vec![q]
            }
        );
        assert_eq!(
            sv(v[4]),
            ShapeValue {
                scalar: true,
                elems: vec![n]
            }
        );
    }

    #[test]
    fn unknown_dims_of_different_values_differ() {
        let (mut m, _) = model();
        m.graph.inputs[1].info.ty = Some(f32_type(&["?", "3"]));
        let g = &m.graph;
        let a = dims(g, g.find_value("a").unwrap()).unwrap();
        let b = dims(g, g.find_value("b").unwrap()).unwrap();
        assert_ne!(a[1], b[0]);
        // An empty dim_param is no symbol.
        m.graph.inputs[1].info.ty = Some(f32_type(&["", "3"]));
        let g = &m.graph;
        assert!(matches!(
            dims(g, g.find_value("b").unwrap()).unwrap()[0],
            SymInt::DimOf { .. }
        ));
    }

    #[test]
    fn follows_certain_arithmetic() {
        // a: f32[N, ?, 4]; dims multiplied, added, subtracted.
        let mut b = ModelBuilder::new(15);
        let a = b.input("a", DataType::FLOAT, &[1, 1, 4]);
        let s = b.op("Shape", &[a], vec![], "s");
        let idx =
            |b: &mut ModelBuilder, name: &str, i: i64| b.init(name, Tensor::from_i64(vec![], &[i]));
        let (i0, i1, i2) = (
            idx(&mut b, "i0", 0),
            idx(&mut b, "i1", 1),
            idx(&mut b, "i2", 2),
        );
        let n = b.op("Gather", &[s, i0], vec![], "n");
        let q = b.op("Gather", &[s, i1], vec![], "q");
        let four = b.op("Gather", &[s, i2], vec![], "four");
        let one = b.init("one", Tensor::from_i64(vec![1], &[1]));
        let zero = b.init("zero", Tensor::from_i64(vec![], &[0]));
        let sixteen = b.op("Mul", &[four, four], vec![], "sixteen");
        let n1 = b.op("Mul", &[n, one], vec![], "n1");
        let n0 = b.op("Sub", &[n, zero], vec![], "n0");
        let nq = b.op("Mul", &[n, q], vec![], "nq");
        let s2 = b.op("Add", &[s, one], vec![], "s2");
        let big = b.init("big", Tensor::from_i64(vec![], &[1 << 31]));
        let over = b.op("Mul", &[four, big], vec![], "over");
        let mut m = b.build().unwrap();
        m.graph.inputs[0].info.ty = Some(f32_type(&["N", "?", "4"]));
        let g = &m.graph;
        let sv = |o| shape_value(g, o);
        let big_n = SymInt::Param("N".into());
        let sv16 = sv(sixteen).unwrap();
        assert_eq!((sv16.scalar, sv16.elems), (true, vec![SymInt::Known(16)]));
        // A 0-D dim times a 1-D [1]: a 1-D [N].
        assert_eq!(
            sv(n1),
            Some(ShapeValue {
                scalar: false,
                elems: vec![big_n.clone()]
            })
        );
        assert_eq!(sv(n0).unwrap().elems, [big_n]);
        // N·q and dims + 1 are not certain; nor a product past 32 bits.
        assert_eq!(sv(nq), None);
        assert_eq!(sv(s2), None);
        assert_eq!(sv(over), None);
    }

    #[test]
    fn refuses_what_it_cannot_follow() {
        let mut b = ModelBuilder::new(15);
        let x = b.input("x", DataType::FLOAT, &[2, 3]);
        let s = b.op("Shape", &[x], vec![], "s");
        let big = ints(&mut b, "big", &[1 << 40]);
        let cat = b.op("Concat", &[s, big], vec![Attribute::int("axis", 0)], "cat");
        let c32 = b.op("Cast", &[cat], vec![Attribute::int("to", 6)], "c32");
        let f = b.op("Cast", &[s], vec![Attribute::int("to", 1)], "f");
        let st = ints(&mut b, "st", &[2]);
        let (z, e) = (ints(&mut b, "z", &[0]), ints(&mut b, "e", &[2]));
        let stepped = b.op("Slice", &[s, z, e, z, st], vec![], "stepped");
        let rel = b.op("Relu", &[s], vec![], "rel");
        let m = b.build().unwrap();
        for o in [c32, f, stepped, rel] {
            assert_eq!(shape_value(&m.graph, o), None);
        }
        assert_eq!(shape_value(&m.graph, cat).unwrap().elems.len(), 3);
    }
}
