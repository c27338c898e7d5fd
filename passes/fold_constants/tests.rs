//! fold-constants' tests: folding gives what tract gives, size limits, regions.

use super::*;
use crate::ir::build::ModelBuilder;
use crate::ir::{Attribute, TensorData};
use crate::pipeline::PassContext;

/// The integer casts folded without tract give what tract gives, bit
/// for bit (storage included), for every integer type and edge values.
#[test]
fn integer_casts_to_i64_match_tract() {
    let cases: Vec<(DataType, Vec<i64>, Vec<u8>)> = vec![
        (DataType(2), vec![3], vec![0, 7, 255]),
        (DataType(3), vec![3], vec![0x80, 0x7f, 0xff]),
        (DataType(4), vec![2], vec![0xff, 0xff, 1, 0]),
        (DataType(5), vec![2], vec![0x00, 0x80, 0xff, 0x7f]),
        (DataType(6), vec![], (-5i32).to_le_bytes().to_vec()),
        (
            DataType(6),
            vec![2],
            [i32::MIN, i32::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
    ];
    for (dtype, dims, raw) in cases {
        for data in [TensorData::Raw(raw.clone().into()), typed(dtype, &raw)] {
            let t = Tensor::new(dtype, dims.clone(), data);
            let mut b = ModelBuilder::new(13);
            let c = b.init("c", t.clone());
            let y = b.op("Cast", &[c], vec![Attribute::int("to", 7)], "y");
            b.output(y, DataType::INT64);
            let m = b.build().unwrap();
            let op = m.graph.op(y.node).unwrap();
            let ours = cast_to_i64(op, &[Some(&t)]).expect("folded natively");
            let tract = crate::exec::evaluate_node(&m, &m.graph, y.node, &[Some(&t)]).unwrap();
            assert_eq!(Some(ours), tract[0], "{dtype:?} {dims:?} {raw:?}");
        }
    }
    for dtype in [DataType(7), DataType(12), DataType(9), DataType(1)] {
        let t = Tensor::new(dtype, vec![], TensorData::Raw(vec![0; 8].into()));
        let op = Operator::new("Cast", 1, vec![Attribute::int("to", 7)]);
        assert_eq!(cast_to_i64(&op, &[Some(&t)]), None, "{dtype:?}");
    }
}

/// The size an `Expand` or `Tile` is refused by before it is evaluated
/// is the size of what tract computes, for broadcasts of every kind.
#[test]
fn spread_bytes_are_what_tract_computes() {
    let cases: [(&str, DataType, Vec<i64>, Vec<i64>); 7] = [
        ("Expand", DataType::FLOAT, vec![3, 1], vec![2, 1, 4]),
        ("Expand", DataType::FLOAT, vec![1, 4], vec![3, 1]),
        ("Expand", DataType::INT64, vec![2], vec![5, 1, 1]),
        ("Expand", DataType(10), vec![1], vec![]),
        ("Expand", DataType::UINT8, vec![1, 3], vec![0, 3]),
        ("Tile", DataType::FLOAT, vec![2, 3], vec![4, 1]),
        ("Tile", DataType::INT64, vec![2], vec![0]),
    ];
    for (op_type, dtype, dims, by) in cases {
        let n: i64 = dims.iter().product();
        let raw = vec![1u8; n as usize * dtype.size_of().unwrap()];
        let x = Tensor::new(dtype, dims.clone(), TensorData::Raw(raw.into()));
        let by = Tensor::from_i64(vec![by.len() as i64], &by);
        let mut b = ModelBuilder::new(13);
        let (xo, bo) = (b.init("x", x.clone()), b.init("by", by.clone()));
        let y = b.op(op_type, &[xo, bo], vec![], "y");
        b.output(y, dtype);
        let m = b.build().unwrap();
        let op = m.graph.op(y.node).unwrap();
        let args = [Some(&x), Some(&by)];
        let tract = crate::exec::evaluate_node(&m, &m.graph, y.node, &args).unwrap();
        let tract = tract[0].as_ref().unwrap();
        assert_eq!(
            filled_bytes(op, &args),
            Some(tract.byte_len()),
            "{op_type} {dims:?}"
        );
    }
    // Dims that do not broadcast: left to tract, which refuses them.
    let x = Tensor::from_f32(vec![3], &[1.0; 3]);
    let by = Tensor::from_i64(vec![1], &[2]);
    let expand = Operator::new("Expand", 2, vec![]);
    assert_eq!(spread_bytes(&expand, &[Some(&x), Some(&by)]), None);
}

/// A `ConstantOfShape` that would write 256 KiB into the file from an
/// 16-byte shape stays computed; a small one folds, and so does what
/// is computed from it.
#[test]
fn results_much_larger_than_their_sources_stay_computed() {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[256, 256]);
    let big_shape = b.init("big_shape", Tensor::from_i64(vec![2], &[256, 256]));
    let small_shape = b.init("small_shape", Tensor::from_i64(vec![1], &[256]));
    let one = Tensor::from_f32(vec![1], &[1.0]);
    let fill = vec![Attribute::new("value", crate::ir::AttrValue::Tensor(one))];
    let big = b.op("ConstantOfShape", &[big_shape], fill.clone(), "big");
    let small = b.op("ConstantOfShape", &[small_shape], fill, "small");
    let two = b.op("Add", &[small, small], vec![], "two");
    let y = b.op("Mul", &[x, big], vec![], "y");
    let z = b.op("Mul", &[y, two], vec![], "z");
    b.output(z, DataType::FLOAT);
    let m = b.build().unwrap();
    let after = crate::passes::testing::check("fold-constants__growth", &m, "fold-constants");
    let ops: Vec<_> = after
        .graph
        .node_ids()
        .filter_map(|id| after.graph.op(id))
        .map(|o| o.op_type.as_str())
        .collect();
    assert_eq!(
        ops.iter().filter(|&&o| o == "ConstantOfShape").count(),
        1,
        "{ops:?}"
    );
    assert!(!ops.contains(&"Add"), "{ops:?}");
    // The limit is an option.
    let all = crate::passes::testing::rewrite(&m, "fold-constants{max-growth-kb=256}");
    assert!(all
        .graph
        .node_ids()
        .filter_map(|id| all.graph.op(id))
        .all(|o| o.op_type != "ConstantOfShape"));
}

/// The pass with its default limits, run directly: its details and the
/// operator types it leaves.
fn fold_defaults(m: &Model) -> (serde_json::Value, Vec<String>) {
    let mut m = m.clone();
    let pass = FoldConstants {
        max_bytes: 64 << 20,
        max_growth: 1024,
    };
    let details = pass.run(&mut m, &PassContext::default()).unwrap();
    (details, crate::passes::testing::op_types(&m))
}

/// A region tract cannot evaluate as a whole is evaluated node by node:
/// only the node tract refuses stays, and the report names it.
#[test]
fn a_refused_region_folds_node_by_node() {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[2]);
    let c1 = b.init("c1", Tensor::from_f32(vec![2], &[1.0, 2.0]));
    let c2 = b.init("c2", Tensor::from_f32(vec![2], &[3.0, 4.0]));
    let c3 = b.init("c3", Tensor::from_f32(vec![6], &[0.0; 6]));
    let seven = b.init("seven", Tensor::from_i64(vec![1], &[7]));
    let a = b.op("Add", &[c1, c2], vec![], "a");
    let bad = b.op("Reshape", &[c3, seven], vec![], "bad");
    let y = b.op("Add", &[x, a], vec![], "y");
    b.output(y, DataType::FLOAT);
    b.output(bad, DataType::FLOAT);
    let (details, ops) = fold_defaults(&b.build().unwrap());
    assert_eq!(details["folded_values"], 1, "{details}");
    assert_eq!(details["not_evaluable"], json!(["Reshape"]), "{details}");
    assert_eq!(ops, ["Reshape", "Add"]);
}

/// An `Expand` to a shape computed in the region waits for the shape, so
/// its size is checked before it is evaluated: the small one folds in
/// the next sweep, the large one stays computed (and counted).
#[test]
fn expand_of_a_computed_shape_is_checked_before_it_is_evaluated() {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 4]);
    let x2 = b.input("x2", DataType::FLOAT, &[256, 256]);
    let zero = b.init("zero", Tensor::from_i64(vec![2], &[0, 0]));
    let s1 = b.init("s1", Tensor::from_i64(vec![2], &[1, 4]));
    let s2 = b.init("s2", Tensor::from_i64(vec![2], &[256, 256]));
    let c = b.init("c", Tensor::from_f32(vec![1], &[2.0]));
    let small_shape = b.op("Add", &[s1, zero], vec![], "small_shape");
    let big_shape = b.op("Add", &[s2, zero], vec![], "big_shape");
    let small = b.op("Expand", &[c, small_shape], vec![], "small");
    let big = b.op("Expand", &[c, big_shape], vec![], "big");
    let y = b.op("Mul", &[x, small], vec![], "y");
    let z = b.op("Mul", &[x2, big], vec![], "z");
    b.output(y, DataType::FLOAT);
    b.output(z, DataType::FLOAT);
    let m = b.build().unwrap();
    let (details, ops) = fold_defaults(&m);
    assert_eq!(ops, ["Expand", "Mul", "Mul"], "{details}");
    assert_eq!(details["left_to_grow"]["nodes"], 1, "{details}");
    // Folded: the small Expand and the large one's shape.
    assert_eq!(details["folded_values"], 2, "{details}");
    let after = crate::passes::testing::rewrite(&m, "fold-constants");
    assert!(crate::passes::testing::max_rel_err(&m, &after) == 0.0);
}

/// The typed storage ONNX uses for the same elements.
fn typed(dtype: DataType, raw: &[u8]) -> TensorData {
    let t = Tensor::new(dtype, vec![], TensorData::Raw(raw.to_vec().into()));
    let n = match dtype.0 {
        2 | 3 => 1,
        4 | 5 => 2,
        _ => 4,
    };
    let v: Vec<i64> = Tensor {
        dims: vec![(raw.len() / n) as i64],
        ..t
    }
    .to_i64()
    .unwrap();
    TensorData::Int32(v.iter().map(|&x| x as i32).collect())
}
