//! The `--passes` language: a comma-separated list of pass names, each with
//! optional `{key=value,...}` options, e.g. `lift-constants,fold-constants,prune{sparsity=0.5}`.
//! An empty string is the empty pipeline (a pure round trip).

use anyhow::{bail, Result};
use std::collections::BTreeMap;

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PassSpec {
    pub name: String,
    pub options: BTreeMap<String, String>,
}

impl std::fmt::Display for PassSpec {
    /// The spec as the language writes it, options in name order:
    /// `quant{flow=false,measure=false}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if !self.options.is_empty() {
            let items: Vec<String> = self
                .options
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(f, "{{{}}}", items.join(","))?;
        }
        Ok(())
    }
}

/// A pass list as the language writes it; `parse_pipeline` reads it back.
pub fn format_pipeline(specs: &[PassSpec]) -> String {
    specs
        .iter()
        .map(PassSpec::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub fn parse_pipeline(text: &str) -> Result<Vec<PassSpec>> {
    let mut specs = vec![];
    let mut rest = text.trim();
    while !rest.is_empty() {
        let end = rest.find([',', '{']).unwrap_or(rest.len());
        let name = rest[..end].trim();
        if name.is_empty() {
            bail!("pass list '{text}': expected a pass name at '{rest}'");
        }
        rest = &rest[end..];
        let mut options = BTreeMap::new();
        if let Some(body) = rest.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                bail!("pass '{name}': missing '}}'")
            };
            for item in body[..close]
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                let Some((k, v)) = item.split_once('=') else {
                    bail!("pass '{name}': option '{item}' is not of the form key=value")
                };
                let k = k.trim().to_string();
                if options.insert(k.clone(), v.trim().to_string()).is_some() {
                    bail!("pass '{name}': option '{k}' is given twice");
                }
            }
            rest = body[close + 1..].trim_start();
        }
        specs.push(PassSpec {
            name: name.to_string(),
            options,
        });
        rest = match rest.strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if rest.is_empty() => rest,
            None => bail!("pass list '{text}': expected ',' before '{rest}'"),
        };
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_options() {
        let specs = parse_pipeline(" dce, prune{sparsity=0.5, skip=a} ,eliminate").unwrap();
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["dce", "prune", "eliminate"]);
        assert_eq!(specs[1].options["sparsity"], "0.5");
        assert_eq!(specs[1].options["skip"], "a");
        assert!(parse_pipeline("").unwrap().is_empty());
    }

    #[test]
    fn explains_syntax_errors() {
        for (text, expect) in [
            ("prune{sparsity=0.5", "missing '}'"),
            ("prune{sparsity}", "key=value"),
            ("a,,b", "expected a pass name"),
            ("prune{a=1,a=2}", "given twice"),
            ("prune{a=1} dce", "expected ','"),
        ] {
            let err = parse_pipeline(text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }

    #[test]
    fn formatting_reads_back() {
        let text = "fuse,quant{exclude=a|b*,measure=false},dce";
        let specs = parse_pipeline(text).unwrap();
        assert_eq!(format_pipeline(&specs), text);
        assert_eq!(parse_pipeline(&format_pipeline(&specs)).unwrap(), specs);
    }
}
