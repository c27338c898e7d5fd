//! onnx-opt: a graph-rewriting compiler for ONNX models.
//!
//! `onnx` reads and writes files (the only module that sees protobuf),
//! `ir` is the graph and its rewrite API, `passes` the rewrites, `pipeline`
//! runs them in order with the verifier in between, and `runtime` runs
//! models in tract to check and time the result (the only module that sees tract).

pub mod calibrate;
pub mod check;
pub mod data;
pub mod exec;
pub mod fuzz;
pub mod inspect;
pub mod ir;
pub mod linalg;
pub mod onnx;
#[path = "../passes/mod.rs"]
pub mod passes;
pub mod pipeline;
pub mod profile;
pub mod quantize;
pub mod report;
pub mod runtime;
pub mod tune;
pub mod validate;
