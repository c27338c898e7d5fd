//! Declared pass options. Each pass declares its options once, with
//! [`pass_options!`](crate::pass_options): name, type, default and help in
//! one line, MLIR's `Option<"name", type, "default", "help">`. From that
//! declaration come the typed struct the pass reads, the parser (so a
//! misspelt option is a compile error, not a panic), `onnx-opt passes`,
//! `--help` and the README's pass table (`tests/readme.rs` keeps it fresh).

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::str::FromStr;

pub struct OptionInfo {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// Declares a pass's options as a struct and its [`OptionInfo`] table:
///
/// ```ignore
/// pass_options! {
///     pub(crate) struct Opts {
///         ratio: f64 = "ratio", "0.3", "fraction of output channels to remove, in [0, 1)";
///         skip: List = "skip", "", "layers whose names contain one of these (a|b)";
///     }
/// }
/// ```
///
/// gives `Opts { ratio: f64, skip: List }`, `Opts::TABLE` (for
/// [`PassInfo::options`](crate::passes::PassInfo)) and `Opts::parse`, which
/// reads each given value (or the default) with `FromStr`.
#[macro_export]
macro_rules! pass_options {
    ($(#[$meta:meta])* $vis:vis struct $name:ident {
        $($field:ident : $ty:ty = $opt:expr, $default:expr, $help:expr;)*
    }) => {
        $(#[$meta])*
        $vis struct $name {
            $(pub $field: $ty,)*
        }

        impl $name {
            /// The declared options, in declaration order.
            pub const TABLE: &'static [$crate::pipeline::OptionInfo] = &[
                $($crate::pipeline::OptionInfo { name: $opt, default: $default, help: $help },)*
            ];

            /// The given options, each parsed, or its default.
            #[allow(dead_code)]
            pub fn parse(o: &$crate::pipeline::Options) -> anyhow::Result<$name> {
                Ok($name { $($field: o.get($opt)?,)* })
            }
        }
    };
}

/// A list option: `a|b|c` (commas separate options), empty when unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct List(pub Vec<String>);

impl FromStr for List {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<List, Self::Err> {
        Ok(List(
            text.split('|')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        ))
    }
}

impl std::ops::Deref for List {
    type Target = Vec<String>;
    fn deref(&self) -> &Vec<String> {
        &self.0
    }
}

/// Options given to one pass, checked against its declaration.
pub struct Options<'a> {
    declared: &'a [OptionInfo],
    given: &'a BTreeMap<String, String>,
}

impl<'a> Options<'a> {
    /// Refuses an option the pass does not declare. Errors name no pass:
    /// the pipeline says which.
    pub fn new(
        declared: &'a [OptionInfo],
        given: &'a BTreeMap<String, String>,
    ) -> Result<Options<'a>> {
        for key in given.keys() {
            if !declared.iter().any(|d| d.name == key) {
                let valid: Vec<&str> = declared.iter().map(|d| d.name).collect();
                if valid.is_empty() {
                    bail!("takes no options (got '{key}')");
                }
                bail!("no option '{key}'; valid options: {}", valid.join(", "));
            }
        }
        Ok(Options { declared, given })
    }

    /// The value of a declared option, parsed, or its default.
    pub fn get<T: FromStr>(&self, name: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let Some(info) = self.declared.iter().find(|d| d.name == name) else {
            bail!("option '{name}' is not declared (a bug: please report it)");
        };
        let text = self.given.get(name).map_or(info.default, String::as_str);
        text.parse::<T>()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("option {name}='{text}' is not valid ({})", info.help))
    }
}
