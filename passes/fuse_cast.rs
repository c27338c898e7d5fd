//! # fuse-cast
//!
//! **What:** merges chains of two `Cast`s whose first step loses nothing:
//! `Cast(Cast(x: T, to=U), to=T)` becomes `x`, and `Cast(Cast(x: T, to=U),
//! to=V)` becomes `Cast(x, to=V)`. Needs the type of `x` (from the file, or
//! `infer-shapes`). Subgraphs included.
//!
//! **Why:** mixed-precision exports and framework glue round-trip values
//! through wider types (`f16 → f32 → f16` around an op, `i32 → i64 → i32`
//! around shape arithmetic); each Cast is a kernel and a copy.
//!
//! ```text
//! a = Cast(x: f16) {to=f32}                     (uses of y use x)
//! y = Cast(a) {to=f16}                     →
//! ```
//! Never rewritten: a chain whose first step rounds, truncates or overflows,
//! such as `f32 → i32 → f32` (drops fractions) or `f32 → f16 → f32` (drops
//! mantissa bits): the chain is then not the identity. See [`lossless`] for
//! the table of exact widenings. When the inner Cast has other consumers it
//! stays, and only the outer one is rewired.
//!
//! **Examples that run:** `passes/testdata/fuse-cast/` (file tests: before →
//! after in the text form).
//!
//! **Options:** none.

use crate::ir::patch::{Rule, RuleContext};
use crate::ir::{AttrValue, DataType, Graph, NodeId, Operator, Patch};
use crate::passes::toolkit::{pair, Pair};
use crate::passes::{PassInfo, RulePass};
use anyhow::Result;

pub const INFO: PassInfo = PassInfo::exact(
    "fuse-cast",
    "merge Cast chains whose first Cast is a lossless widening",
    |_| RulePass::boxed(RULES, "fused"),
);

pub const RULES: &[Rule] = &[Rule::on("Cast", "cast-cast", cast_cast)];

/// What an element type can hold, for deciding exactness.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Num {
    Bool,
    /// Integers in [-2^bits, 2^bits) when signed, [0, 2^bits) when not:
    /// `bits` counts value bits, the sign excluded.
    Int {
        signed: bool,
        bits: u32,
    },
    /// `digits`: significand bits, the implicit one included (every integer
    /// of magnitude ≤ 2^digits is exact); `max_exp`: largest binary exponent.
    Float {
        digits: u32,
        max_exp: i32,
        min_exp: i32,
    },
}

fn num(t: DataType) -> Option<Num> {
    let int = |signed, bits| Num::Int { signed, bits };
    Some(match t {
        DataType::BOOL => Num::Bool,
        DataType::UINT8 => int(false, 8),
        DataType::INT8 => int(true, 7),
        DataType::UINT16 => int(false, 16),
        DataType::INT16 => int(true, 15),
        DataType::UINT32 => int(false, 32),
        DataType::INT32 => int(true, 31),
        DataType::UINT64 => int(false, 64),
        DataType::INT64 => int(true, 63),
        // min_exp: the exponent of the smallest subnormal.
        DataType::FLOAT16 => Num::Float {
            digits: 11,
            max_exp: 15,
            min_exp: -24,
        },
        DataType::BFLOAT16 => Num::Float {
            digits: 8,
            max_exp: 127,
            min_exp: -133,
        },
        DataType::FLOAT => Num::Float {
            digits: 24,
            max_exp: 127,
            min_exp: -149,
        },
        DataType::DOUBLE => Num::Float {
            digits: 53,
            max_exp: 1023,
            min_exp: -1074,
        },
        // Strings, complex and the float8 types (whose casts saturate) are
        // left alone.
        _ => return None,
    })
}

/// Does every value of `from` convert to `to` exactly (so `to` can convert
/// it back)? The lossless widenings, derived from what each type holds:
///
/// | from | exactly into |
/// |---|---|
/// | bool | every numeric type (0 and 1) |
/// | u8 | u16 i16 u32 i32 u64 i64 f16 bf16 f32 f64 |
/// | i8 | i16 i32 i64 f16 bf16 f32 f64 |
/// | u16 | u32 i32 u64 i64 f32 f64 |
/// | i16 | i32 i64 f32 f64 |
/// | u32 | u64 i64 f64 |
/// | i32 | i64 f64 |
/// | u64, i64 | — |
/// | f16, bf16 | f32 f64 |
/// | f32 | f64 |
/// | f64 | — |
///
/// An integer type fits another with at least as many value bits, which is
/// signed if it is; it fits a float whose significand covers its magnitude
/// (`2^bits ≤ 2^digits`: u8 and i8 fit f16 and bf16, i16 does not fit f16).
/// A float fits a float with no fewer significand digits and no narrower
/// exponent range (NaN, ±∞ and -0 carry over); `f16 → bf16` loses digits,
/// `bf16 → f16` loses range. No float fits an integer (fractions).
fn lossless(from: DataType, to: DataType) -> bool {
    match (num(from), num(to)) {
        (Some(Num::Bool), Some(_)) => true,
        (
            Some(Num::Int {
                signed: s1,
                bits: b1,
            }),
            Some(Num::Int {
                signed: s2,
                bits: b2,
            }),
        ) => (s2 || !s1) && b1 <= b2,
        (Some(Num::Int { bits, .. }), Some(Num::Float { digits, .. })) => bits <= digits,
        (
            Some(Num::Float {
                digits: d1,
                max_exp: e1,
                min_exp: m1,
            }),
            Some(Num::Float {
                digits: d2,
                max_exp: e2,
                min_exp: m2,
            }),
        ) => d1 <= d2 && e1 <= e2 && m1 >= m2,
        _ => false,
    }
}

/// Is `Cast(Cast(x: T, U), V) = Cast(x: T, V)`, given `T → U` is lossless?
/// The U value equals the T value, and a conversion depends only on the
/// value and on the kinds of the two types: int → int wraps, any → float
/// rounds to nearest, any → bool tests for zero, float → int truncates
/// toward zero. The one kind change that matters is `int → float → int`
/// versus `int → int`: out of V's range the first saturates (tract) or is
/// undefined (C++ runtimes) while the second wraps; safe only when V holds
/// every T value. Never both ways float → int vs int → int otherwise, since
/// T is float only when U is float too.
fn same_conversion(t: DataType, u: DataType, v: DataType) -> bool {
    let is_int = |d| matches!(num(d), Some(Num::Int { .. }));
    let is_float = |d| matches!(num(d), Some(Num::Float { .. }));
    if num(v).is_none() || !lossless(t, u) {
        return false;
    }
    !(is_int(t) && is_float(u) && is_int(v)) || lossless(t, v)
}

fn cast_to(op: &Operator) -> Option<DataType> {
    match op.attr("to").map(|a| &a.value) {
        Some(AttrValue::Int(to)) => i32::try_from(*to).ok().map(DataType),
        _ => None,
    }
}

/// `Cast(Cast(x: T, U), T) = x` when `T → U` is lossless (`U → T` undoes it);
/// `Cast(Cast(x: T, U), V) = Cast(x, V)` when `T → U` is lossless and
/// converting from U gives what converting from T does (`same_conversion`).
fn cast_cast(_: &RuleContext, g: &Graph, id: NodeId, op: &Operator) -> Result<Option<Patch>> {
    let Some(Pair { mid, inner, x }) = pair(g, id, "Cast") else {
        return Ok(None);
    };
    let (Some(u), Some(v)) = (cast_to(inner), cast_to(op)) else {
        return Ok(None);
    };
    let Some(t) = g.known_type(x).and_then(|ty| ty.tensor_elem()) else {
        return Ok(None);
    };
    if !same_conversion(t, u, v) {
        return Ok(None);
    }
    if v == t {
        return Ok(Patch::collapse_pair(g, id, mid, x));
    }
    let mut patch = Patch::new("");
    patch.skip_inner(g, id, mid, x);
    Ok(Some(patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::build::ModelBuilder;
    use crate::ir::{Attribute, Model};
    use crate::passes::testing::check;

    const PASS: &str = "fuse-cast";

    fn to(t: DataType) -> Vec<Attribute> {
        vec![Attribute::int("to", t.0 as i64)]
    }

    /// x: T[2,3] → Cast(U) → Cast(V) → y.
    fn chain(t: DataType, u: DataType, v: DataType) -> Model {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", t, &[2, 3]);
        let a = b.op("Cast", &[x], to(u), "a");
        let c = b.op("Cast", &[a], to(v), "c");
        let y = b.op("Identity", &[c], vec![], "y");
        b.output(y, v);
        b.build().unwrap()
    }

    #[test]
    fn table() {
        use DataType as D;
        for (from, to) in [
            (D::FLOAT16, D::FLOAT),
            (D::FLOAT, D::DOUBLE),
            (D::BFLOAT16, D::FLOAT),
            (D::INT32, D::INT64),
            (D::INT32, D::DOUBLE),
            (D::UINT8, D::INT32),
            (D::UINT8, D::FLOAT16),
            (D::INT8, D::BFLOAT16),
            (D::UINT32, D::INT64),
            (D::BOOL, D::FLOAT16),
        ] {
            assert!(lossless(from, to), "{from} -> {to}");
        }
        for (from, to) in [
            (D::FLOAT, D::INT32),
            (D::FLOAT, D::FLOAT16),
            (D::FLOAT16, D::BFLOAT16),
            (D::BFLOAT16, D::FLOAT16),
            (D::INT16, D::FLOAT16),
            (D::INT32, D::FLOAT),
            (D::INT64, D::DOUBLE),
            (D::INT8, D::UINT16),
            (D::UINT32, D::INT32),
            (D::INT32, D::BOOL),
            (D::STRING, D::STRING),
        ] {
            assert!(!lossless(from, to), "{from} -> {to}");
        }
        // i16 → f32 → i8 saturates in tract where i16 → i8 wraps.
        assert!(!same_conversion(D::INT16, D::FLOAT, D::INT8));
        assert!(same_conversion(D::UINT8, D::FLOAT, D::INT32));
        assert!(same_conversion(D::INT32, D::INT64, D::FLOAT));
    }

    #[test]
    fn round_trips_vanish() {
        use DataType as D;
        let after = check(
            "fuse-cast__f16-f32-f16",
            &chain(D::FLOAT16, D::FLOAT, D::FLOAT16),
            PASS,
        );
        assert_eq!(after.graph.op_count(), 1);
    }

    #[test]
    fn widening_then_cast_is_one_cast() {
        use DataType as D;
        let after = check(
            "fuse-cast__i32-i64-f32",
            &chain(D::INT32, D::INT64, D::FLOAT),
            PASS,
        );
        assert_eq!(after.graph.op_count(), 2);
    }

    #[test]
    fn inner_cast_used_elsewhere_stays() {
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT16, &[2, 3]);
        let a = b.op("Cast", &[x], to(DataType::FLOAT), "a");
        let c = b.op("Cast", &[a], to(DataType::FLOAT16), "c");
        let r = b.op("Relu", &[a], vec![], "r");
        let y = b.op("Neg", &[c], vec![], "y");
        b.output(y, DataType::FLOAT16);
        b.output(r, DataType::FLOAT);
        let m = b.build().unwrap();
        let after = check("fuse-cast__inner-shared", &m, PASS);
        assert_eq!(after.graph.op_count(), 3);
    }
}
