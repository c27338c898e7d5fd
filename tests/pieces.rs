//! Long models load and run in pieces (`src/runtime/load/pieces/`). No
//! suite model is long enough to be cut, so each one tract runs is cut here
//! into pieces of 40 nodes and must compute, on its realistic sample, what
//! it computes whole (within 1e-5, or twice the model's rounding floor as
//! `--verify` allows an exact rewrite): the constants, shape computations,
//! subgraphs and skip connections of real exports, across piece boundaries.

mod common;

use common::*;
use onnx_opt::calibrate::Calibration;
use onnx_opt::check::FLOOR_TIMES;
use onnx_opt::runtime::{compare, InputShapes, Model};

/// Nodes a piece: a few pieces for the smallest models, dozens for the largest.
const PIECE: usize = 40;

#[test]
fn every_suite_model_computes_the_same_in_pieces() {
    require_suite();
    let mut checked = 0;
    for (name, tract_runs, shapes) in suite() {
        if !tract_runs {
            continue;
        }
        let model = load(&name);
        let g = &model.graph;
        if g.node_ids().filter(|&id| g.op(id).is_some()).count() <= PIECE {
            continue; // one piece: nothing to cut (silero's main graph)
        }
        let bytes = onnx_opt::exec::tract_bytes(&model).unwrap();
        let shapes = InputShapes::parse(&shapes).unwrap();
        let sample = repo().join(format!("models/cache/inputs/{name}.npz"));
        let data = Calibration::load(&model, &shapes, Some(&sample), 0, 1)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let (group_shapes, members) = &data.groups[0];
        let whole = Model::load(&bytes, group_shapes, &[]).unwrap();
        let pieces = Model::load_in_pieces(&bytes, group_shapes, &[], PIECE)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let sample = &data.samples[members[0]];
        let (want, got) = (whole.run(sample).unwrap(), pieces.run(sample).unwrap());
        let differ = compare(&want, &got).unwrap();
        if differ.iter().any(|m| m.max_rel_err > 1e-5) {
            // Whole and in pieces, tract may choose other kernels (fused
            // across what is now a piece boundary): rounding, judged as
            // `--verify` judges an exact rewrite, against the model's own
            // rounding floor (ppocr-det on an AVX-512 EPYC: 1.26e-5, its
            // floor 2.95e-5).
            let nudged = onnx_opt::check::nudged(&model).unwrap();
            let nudged = onnx_opt::exec::tract_bytes(&nudged).unwrap();
            let nudged = Model::load(&nudged, group_shapes, &[]).unwrap();
            let floor = compare(&want, &nudged.run(sample).unwrap()).unwrap();
            for (m, f) in differ.iter().zip(&floor) {
                let bound = f64::max(1e-5, FLOOR_TIMES * f.max_rel_err);
                assert!(
                    m.max_rel_err <= bound,
                    "{name}: output {} differs in pieces: max_rel_err {:e}, its floor {:e}",
                    m.name,
                    m.max_rel_err,
                    f.max_rel_err
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} suite models checked");
}
