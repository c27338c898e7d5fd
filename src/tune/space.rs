//! The search space: the pipelines `tune` tries, in the order it tries them.
//!
//! First the whole-model forms (`fuse` alone, then every quantization form
//! and calibration method, then channel pruning and low rank, alone and
//! with int8), each one `--passes` string; then, per layer, the fastest
//! form that lost too much with its most sensitive layers kept in float
//! (`quant{exclude=...}`), so that the answer is always a plain pass list.
//! Timing is tune's job: every quant and prune-channels form is written
//! with `measure=false`, which also makes the string reproduce the same
//! bytes without timing.

use crate::pipeline::{format_pipeline, parse_pipeline, PassReport, PassSpec};
use crate::runtime::Engine;
use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// The passes `--space` lets tune use (`fuse` always).
#[derive(Clone, Debug, PartialEq)]
pub struct Space {
    pub quant: bool,
    pub prune_channels: bool,
    pub svd: bool,
}

impl Space {
    pub fn parse(list: &str) -> Result<Space> {
        let mut space = Space {
            quant: false,
            prune_channels: false,
            svd: false,
        };
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "fuse" => {}
                "quant" => space.quant = true,
                "prune-channels" => space.prune_channels = true,
                "svd" => space.svd = true,
                other => bail!(
                    "--space: unknown pass '{other}'; tune searches fuse, quant, prune-channels and svd"
                ),
            }
        }
        Ok(space)
    }
}

/// Channel-pruning ratios and low-rank energies tried: mild first, since
/// both lose accuracy fast on real models.
const PRUNE_RATIOS: [&str; 2] = ["0.1", "0.25"];
const SVD_ENERGIES: [&str; 2] = ["0.99", "0.95"];

fn spec(name: &str, options: &[(&str, &str)]) -> PassSpec {
    PassSpec {
        name: name.into(),
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// The quant pass for `engine`, with `extra` options. Bias correction is
/// a form of its own, chosen by the task metric, not by quant's measure of
/// it (the outputs' relative L2): on PP-OCR rec it lowers that error
/// (benches/bias_correction.py: 0.122 → 0.095 held out) and cost
/// characters on 4 of 5 folds (3, 7, 12, 0 and 40 lost of 1872, against
/// 0, 2, 0, 0 and 25 uncorrected; benches/tune.py, 2026-12-08 02:35).
fn quant(engine: Engine, extra: &[(&str, &str)]) -> PassSpec {
    let mut options = vec![("measure", "false")];
    if engine == Engine::Tract {
        options.push(("target", "tract"));
    } else if !extra.iter().any(|(k, _)| *k == "bias-correction") {
        options.push(("bias-correction", "false"));
    }
    options.extend_from_slice(extra);
    spec("quant", &options)
}

/// The whole-model forms, in the order they are tried.
pub fn forms(space: &Space, engine: Engine) -> Vec<String> {
    let fuse = spec("fuse", &[]);
    let mut out = vec![format_pipeline(std::slice::from_ref(&fuse))];
    if space.quant {
        let mut variants: Vec<Vec<(&str, &str)>> = vec![
            vec![],
            vec![("method", "percentile")],
            vec![("method", "entropy")],
            vec![("min-k", "0")],
        ];
        if engine == Engine::Ort {
            // Both structures by name, so the task metric chooses between
            // them: quant's accuracy guard (flow=auto) judges them by the
            // outputs' relative L2, which can rank them the other way
            // (PP-OCR rec: flowing 1.1-1.7x the error of int8 in the
            // layers only on nine calibrations, eight of them on 160 of
            // its 200 lines, and 1.4 points of character accuracy better
            // on 200 lines judged).
            variants[0] = vec![("flow", "true")];
            variants.insert(1, vec![("flow", "false")]);
            // ONNX Runtime's u8×s8 kernels without VNNI saturate with 8-bit
            // weights, in the first layers most (held-out error, 8 → 7 in
            // the first layers → 7 everywhere: ddddocr-crnn 0.76 → 0.14 →
            // 0.16, silero 0.84 → 0.12 → 0.17, ppocr-cls 0.43 → 0.22 →
            // 0.09); quant's own probe of it is a measurement, off with
            // measure=false.
            variants.insert(2, vec![("bits", "first-7")]);
            variants.insert(3, vec![("bits", "7")]);
            // Bias correction (its flow pinned from the search fold).
            variants.insert(4, vec![("bias-correction", "true")]);
        }
        for v in variants {
            out.push(format_pipeline(&[fuse.clone(), quant(engine, &v)]));
        }
    }
    let mut lossy = vec![];
    if space.prune_channels {
        lossy.extend(
            PRUNE_RATIOS.map(|r| spec("prune-channels", &[("measure", "false"), ("ratio", r)])),
        );
    }
    if space.svd {
        lossy.extend(SVD_ENERGIES.map(|e| spec("svd", &[("energy", e), ("measure", "false")])));
    }
    for pass in lossy {
        out.push(format_pipeline(&[fuse.clone(), pass.clone()]));
        if space.quant {
            out.push(format_pipeline(&[fuse.clone(), pass, quant(engine, &[])]));
        }
    }
    out
}

/// `passes` with what its quant step chose by measuring on the search
/// fold's data pinned, where it left the choice to quant: the flow
/// (`flow=auto`: the accuracy guard's, its report's `flowing`) and bias
/// correction (`bias-correction=auto`: its report's `bias_correction.kept`).
/// Measured on other folds' data, either can go the other way (PP-OCR rec:
/// 2 of 8 calibrations on 160 of its 200 lines dropped the flowing form),
/// and the folds must judge one model structure. `None`: nothing to pin.
pub fn pin_measured(passes: &str, reports: &[PassReport]) -> Option<String> {
    let specs = parse_pipeline(passes).ok()?;
    let quant = specs.iter().find(|s| s.name == "quant")?;
    let report = reports.iter().find(|r| r.name == "quant")?;
    let auto = |key: &str| quant.options.get(key).is_none_or(|v| v == "auto");
    let mut pinned = None;
    if let Some(flowing) = report.details.get("flowing").and_then(|f| f.as_bool()) {
        if auto("flow") {
            pinned = with_quant_option(passes, "flow", &flowing.to_string());
        }
    }
    let kept = report
        .details
        .get("bias_correction")
        .and_then(|b| b["kept"].as_bool());
    if let Some(kept) = kept.filter(|_| auto("bias-correction")) {
        let base = pinned.as_deref().unwrap_or(passes);
        pinned = with_quant_option(base, "bias-correction", &kept.to_string());
    }
    pinned
}

/// `passes` with option `key=value` set on its quant step, or `None` when
/// it has no quant step.
pub fn with_quant_option(passes: &str, key: &str, value: &str) -> Option<String> {
    let mut specs = parse_pipeline(passes).ok()?;
    let q = specs.iter_mut().find(|s| s.name == "quant")?;
    q.options.insert(key.into(), value.into());
    Some(format_pipeline(&specs))
}

/// Whether `passes` quantizes and changes nothing else but exactly.
pub fn only_lossy_step_is_quant(passes: &str) -> bool {
    let Ok(specs) = parse_pipeline(passes) else {
        return false;
    };
    specs.iter().any(|s| s.name == "quant")
        && specs.iter().all(|s| {
            s.name == "quant" || crate::pipeline::find_pass(&s.name).is_ok_and(|p| p.exact)
        })
}

/// An `exclude` pattern naming `layers` exactly where the pass language
/// allows: characters it reserves (`,{}=|*` and spaces) become `*`, which
/// matches any run, so the pattern may also name a few more layers; the
/// pipeline string then still gives the model that was measured.
pub fn exclude_pattern(layers: &[String]) -> String {
    let safe = |name: &str| -> String {
        let mut out = String::new();
        for c in name.chars() {
            let c = if c.is_alphanumeric() || "_-./:;#@[]()<>+~^$%!?&'\"".contains(c) {
                c
            } else {
                '*'
            };
            if !(c == '*' && out.ends_with('*')) {
                out.push(c);
            }
        }
        out
    };
    layers.iter().map(|l| safe(l)).collect::<Vec<_>>().join("|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;

    #[test]
    fn every_form_is_a_valid_pipeline() {
        let all = Space::parse("fuse,quant,prune-channels,svd").unwrap();
        for engine in [Engine::Ort, Engine::Tract] {
            let forms = forms(&all, engine);
            assert_eq!(forms[0], "fuse");
            assert!(forms.len() > 8, "{forms:?}");
            for f in &forms {
                Pipeline::parse(f).unwrap_or_else(|e| panic!("{f}: {e:#}"));
            }
        }
        assert_eq!(forms(&Space::parse("fuse").unwrap(), Engine::Ort), ["fuse"]);
        // 7-bit weights where ONNX Runtime runs the model, not in tract.
        for bits in ["bits=7", "bits=first-7"] {
            let has = |e| forms(&all, e).iter().any(|f| f.contains(bits));
            assert!(has(Engine::Ort) && !has(Engine::Tract), "{bits}");
        }
        assert!(Space::parse("fuse,prune").is_err());
    }

    #[test]
    fn exclusions_stay_in_the_language() {
        let p = exclude_pattern(&["conv 1".into(), "a,b{c}".into(), "x|y=z".into()]);
        assert_eq!(p, "conv*1|a*b*c*|x*y*z");
        let passes = with_quant_option("fuse,quant{measure=false}", "exclude", &p).unwrap();
        let specs = parse_pipeline(&passes).unwrap();
        assert_eq!(specs[1].options["exclude"], p);
        Pipeline::parse(&passes).unwrap();
        assert_eq!(with_quant_option("fuse", "exclude", "a"), None);
        assert!(only_lossy_step_is_quant("fuse,quant{method=entropy}"));
        assert!(!only_lossy_step_is_quant("fuse,svd{energy=0.9},quant"));
        assert!(!only_lossy_step_is_quant("fuse"));
    }

    #[test]
    fn what_quant_measured_is_pinned_to_what_the_search_fold_built() {
        let report = |details: serde_json::Value| PassReport {
            name: "quant".into(),
            options: Default::default(),
            ms: 0.0,
            nodes_before: 0,
            nodes_after: 0,
            params_before: 0,
            params_after: 0,
            bytes_before: 0,
            bytes_after: 0,
            details,
        };
        let pin = |passes: &str, flowing: bool| {
            pin_measured(passes, &[report(serde_json::json!({ "flowing": flowing }))])
        };
        assert_eq!(
            pin("fuse,quant{bits=7,measure=false}", false).as_deref(),
            Some("fuse,quant{bits=7,flow=false,measure=false}")
        );
        assert_eq!(
            pin("fuse,quant{flow=auto}", true).as_deref(),
            Some("fuse,quant{flow=true}")
        );
        // Chosen by name already, or no quant step: nothing to pin.
        assert_eq!(pin("fuse,quant{flow=false}", true), None);
        assert_eq!(pin("fuse", true), None);
        assert_eq!(pin_measured("fuse,quant", &[]), None);
        // Bias correction as measured, with the flow or alone.
        let both = serde_json::json!({ "flowing": true, "bias_correction": { "kept": true } });
        assert_eq!(
            pin_measured("fuse,quant{measure=false}", &[report(both.clone())]).as_deref(),
            Some("fuse,quant{bias-correction=true,flow=true,measure=false}")
        );
        assert_eq!(
            pin_measured("fuse,quant{flow=false}", &[report(both)]).as_deref(),
            Some("fuse,quant{bias-correction=true,flow=false}")
        );
        // Not measured (no layer to correct): nothing to pin.
        let off = serde_json::json!({ "flowing": false, "bias_correction": "off: no quantized Conv, Gemm or MatMul whose input was measured" });
        assert_eq!(pin_measured("fuse,quant{flow=false}", &[report(off)]), None);
        // The search names both structures itself.
        let forms = forms(&Space::parse("quant").unwrap(), Engine::Ort);
        let has = |f: &str| forms.contains(&f.to_string());
        assert!(has(
            "fuse,quant{bias-correction=false,flow=true,measure=false}"
        ));
        assert!(has(
            "fuse,quant{bias-correction=false,flow=false,measure=false}"
        ));
        // Bias correction by name too: the task metric judges it.
        assert!(has("fuse,quant{bias-correction=true,measure=false}"));
    }
}
