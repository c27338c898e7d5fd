//! Declared pass options: every pass lists its options with a default and a
//! help line, so `--passes` is checked before anything runs and `onnx-opt
//! passes` documents them.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::str::FromStr;

pub struct OptionInfo {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// Options given to one pass, checked against its declaration.
pub struct Options<'a> {
    pass: &'a str,
    declared: &'a [OptionInfo],
    given: &'a BTreeMap<String, String>,
}

impl<'a> Options<'a> {
    pub fn new(
        pass: &'a str,
        declared: &'a [OptionInfo],
        given: &'a BTreeMap<String, String>,
    ) -> Result<Options<'a>> {
        for key in given.keys() {
            if !declared.iter().any(|d| d.name == key) {
                let valid: Vec<&str> = declared.iter().map(|d| d.name).collect();
                if valid.is_empty() {
                    bail!("pass '{pass}' takes no options (got '{key}')");
                }
                bail!(
                    "pass '{pass}' has no option '{key}'; valid options: {}",
                    valid.join(", ")
                );
            }
        }
        Ok(Options {
            pass,
            declared,
            given,
        })
    }

    /// The value of a declared option, parsed, or its default.
    pub fn get<T: FromStr>(&self, name: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let info = self
            .declared
            .iter()
            .find(|d| d.name == name)
            .expect("options are declared before use");
        let text = self.given.get(name).map_or(info.default, String::as_str);
        text.parse::<T>()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| {
                format!(
                    "pass '{}': option {name}='{text}' is not valid ({})",
                    self.pass, info.help
                )
            })
    }

    /// A comma-free list option (`a|b|c`), empty when unset.
    pub fn list(&self, name: &str) -> Result<Vec<String>> {
        let text: String = self.get(name)?;
        Ok(text
            .split('|')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect())
    }
}
