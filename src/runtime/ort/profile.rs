//! Reading ONNX Runtime's profile: the JSON trace a session writes when
//! profiling is on (`SessionOptions.enable_profiling`), one event per kernel
//! run (`cat: "Node"`, `name: "<node>_kernel_time"`, `args.op_name`) and one
//! per model run (`cat: "Session"`, `name: "model_run"`), times in µs.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Time spent in one node of the graph ONNX Runtime ran (after its own
/// fusions: a fused node carries its op type, e.g. `FusedConv`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeTime {
    pub node: String,
    pub op_type: String,
    /// Summed over the profiled runs.
    pub total_us: u64,
    pub calls: usize,
}

/// Per-node times of the runs after warm-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Wall time of each profiled run, µs.
    pub run_us: Vec<u64>,
    /// In order of first execution.
    pub nodes: Vec<NodeTime>,
}

struct Event {
    cat: String,
    name: String,
    ts: u64,
    dur: u64,
    op: String,
}

fn events(json: &str) -> Result<Vec<Event>> {
    let v: serde_json::Value =
        serde_json::from_str(json).context("ONNX Runtime's profile is not JSON")?;
    let Some(list) = v.as_array() else {
        bail!("ONNX Runtime's profile is not a list of events");
    };
    Ok(list
        .iter()
        .filter_map(|e| {
            Some(Event {
                cat: e.get("cat")?.as_str()?.to_string(),
                name: e.get("name")?.as_str()?.to_string(),
                ts: e.get("ts")?.as_u64()?,
                dur: e.get("dur")?.as_u64()?,
                op: e
                    .get("args")
                    .and_then(|a| a.get("op_name"))
                    .and_then(|o| o.as_str())
                    .unwrap_or("")
                    .to_string(),
            })
        })
        .collect())
}

/// Parses a profile, dropping the first `warmup` model runs and the kernels
/// they ran.
pub fn parse(json: &str, warmup: usize) -> Result<Profile> {
    let events = events(json)?;
    let mut runs: Vec<&Event> = events
        .iter()
        .filter(|e| e.cat == "Session" && e.name == "model_run")
        .collect();
    runs.sort_by_key(|e| e.ts);
    if runs.len() <= warmup {
        bail!(
            "ONNX Runtime's profile holds {} runs, fewer than the {} warm-up runs plus one",
            runs.len(),
            warmup
        );
    }
    let start = runs[warmup].ts;
    let mut nodes: Vec<NodeTime> = vec![];
    for e in events.iter().filter(|e| e.cat == "Node" && e.ts >= start) {
        let Some(node) = e.name.strip_suffix("_kernel_time") else {
            continue;
        };
        match nodes.iter_mut().find(|n| n.node == node) {
            Some(n) => {
                n.total_us += e.dur;
                n.calls += 1;
            }
            None => nodes.push(NodeTime {
                node: node.to_string(),
                op_type: e.op.clone(),
                total_us: e.dur,
                calls: 1,
            }),
        }
    }
    Ok(Profile {
        run_us: runs[warmup..].iter().map(|e| e.dur).collect(),
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = r#"[
        {"cat":"Session","name":"session_initialization","ts":1,"dur":50,"args":{}},
        {"cat":"Session","name":"model_run","ts":100,"dur":40,"args":{}},
        {"cat":"Node","name":"conv_kernel_time","ts":105,"dur":30,"args":{"op_name":"Conv"}},
        {"cat":"Session","name":"model_run","ts":200,"dur":20,"args":{}},
        {"cat":"Node","name":"conv_fence_before","ts":201,"dur":0,"args":{"op_name":"Conv"}},
        {"cat":"Node","name":"conv_kernel_time","ts":202,"dur":12,"args":{"op_name":"Conv"}},
        {"cat":"Node","name":"relu_kernel_time","ts":215,"dur":3,"args":{"op_name":"Relu"}},
        {"cat":"Session","name":"model_run","ts":300,"dur":18,"args":{}},
        {"cat":"Node","name":"conv_kernel_time","ts":302,"dur":10,"args":{"op_name":"Conv"}},
        {"cat":"Node","name":"relu_kernel_time","ts":313,"dur":4,"args":{"op_name":"Relu"}}
    ]"#;

    #[test]
    fn warmup_runs_are_dropped_and_kernels_summed() {
        let p = parse(TRACE, 1).unwrap();
        assert_eq!(p.run_us, vec![20, 18]);
        assert_eq!(
            p.nodes,
            vec![
                NodeTime {
                    node: "conv".into(),
                    op_type: "Conv".into(),
                    total_us: 22,
                    calls: 2
                },
                NodeTime {
                    node: "relu".into(),
                    op_type: "Relu".into(),
                    total_us: 7,
                    calls: 2
                },
            ]
        );
    }

    #[test]
    fn too_few_runs_or_not_a_trace_is_an_error() {
        assert!(parse(TRACE, 3).is_err());
        assert!(parse("{}", 0).is_err());
        assert!(parse("not json", 0).is_err());
    }
}
