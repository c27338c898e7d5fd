//! Generated seed models: small, valid, and full of the attributes the
//! mutations target (windows, axes, perms, If branches, constant shapes).

use crate::ir::build::ModelBuilder;
use crate::ir::{AttrValue, Attribute, DataType, Graph, Model, Tensor, TypeInfo};
use anyhow::Result;

/// (name, model bytes) of every generated seed.
pub fn generated() -> Result<Vec<(String, Vec<u8>)>> {
    let seeds = [
        ("gen-cnn", cnn()?, [1, 5].as_slice()),
        ("gen-shapes", shapes()?, &[4, 12]),
        ("gen-if", branches()?, &[2]),
    ];
    seeds
        .into_iter()
        .map(|(name, mut model, dims)| {
            // onnx.checker wants graph outputs shaped; the builder leaves them unknown.
            let out = &mut model.graph.outputs[0].info;
            out.ty = Some(TypeInfo::tensor(DataType::FLOAT, dims));
            Ok((name.to_string(), crate::onnx::encode(&model)?))
        })
        .collect()
}

fn floats(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0).collect()
}

/// Conv → MaxPool → ReduceMean → Flatten → Gemm → Softmax.
fn cnn() -> Result<Model> {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[1, 3, 8, 8]);
    let w = b.init("w", Tensor::from_f32(vec![4, 3, 3, 3], &floats(108)));
    let c = b.op(
        "Conv",
        &[x, w],
        vec![
            Attribute::ints("kernel_shape", &[3, 3]),
            Attribute::ints("strides", &[1, 1]),
            Attribute::ints("pads", &[1, 1, 1, 1]),
            Attribute::ints("dilations", &[1, 1]),
        ],
        "c",
    );
    let p = b.op(
        "MaxPool",
        &[c],
        vec![
            Attribute::ints("kernel_shape", &[2, 2]),
            Attribute::ints("strides", &[2, 2]),
        ],
        "p",
    );
    let r = b.op(
        "ReduceMean",
        &[p],
        vec![Attribute::ints("axes", &[3]), Attribute::int("keepdims", 1)],
        "r",
    );
    let f = b.op("Flatten", &[r], vec![Attribute::int("axis", 1)], "f");
    let gw = b.init("gw", Tensor::from_f32(vec![16, 5], &floats(80)));
    let gb = b.init("gb", Tensor::from_f32(vec![5], &floats(5)));
    let g = b.op("Gemm", &[f, gw, gb], vec![], "g");
    let s = b.op("Softmax", &[g], vec![Attribute::int("axis", -1)], "s");
    b.output(s, DataType::FLOAT);
    b.build()
}

/// ConstantOfShape, Expand, Transpose, Concat, Reshape on constant shapes.
fn shapes() -> Result<Model> {
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[2, 3]);
    let shape = b.init("shape", Tensor::from_i64(vec![2], &[2, 3]));
    let k = b.op("ConstantOfShape", &[shape], vec![], "k");
    let a = b.op("Add", &[x, k], vec![], "a");
    let to = b.init("to", Tensor::from_i64(vec![3], &[4, 2, 3]));
    let e = b.op("Expand", &[a, to], vec![], "e");
    let t = b.op(
        "Transpose",
        &[e],
        vec![Attribute::ints("perm", &[0, 2, 1])],
        "t",
    );
    let c = b.op("Concat", &[t, t], vec![Attribute::int("axis", 1)], "cat");
    let rs = b.init("rs", Tensor::from_i64(vec![2], &[4, -1]));
    let y = b.op("Reshape", &[c, rs], vec![], "y");
    b.output(y, DataType::FLOAT);
    b.build()
}

/// An If choosing between two constant-free branches on an input flag.
fn branches() -> Result<Model> {
    let branch = |prefix: &str, v: f32| -> Result<Graph> {
        let mut g = ModelBuilder::new(13);
        let k = g.init(&format!("{prefix}k"), Tensor::from_f32(vec![2], &[v, v]));
        g.output(k, DataType::FLOAT);
        Ok(g.build()?.graph)
    };
    let mut b = ModelBuilder::new(13);
    let x = b.input("x", DataType::FLOAT, &[2]);
    let zero = b.init("zero", Tensor::from_f32(vec![1], &[0.0]));
    let s = b.op("ReduceSum", &[x], vec![Attribute::int("keepdims", 0)], "s");
    let c = b.op("Greater", &[s, zero], vec![], "c");
    let i = b.op(
        "If",
        &[c],
        vec![
            Attribute::new("then_branch", AttrValue::Graph(Box::new(branch("t", 1.0)?))),
            Attribute::new(
                "else_branch",
                AttrValue::Graph(Box::new(branch("e", -1.0)?)),
            ),
        ],
        "i",
    );
    let y = b.op("Mul", &[x, i], vec![], "y");
    b.output(y, DataType::FLOAT);
    b.build()
}
