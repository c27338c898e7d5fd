//! Reads the text form `text.rs` prints back into a model, so rule fixtures
//! can be text files (`passes/testdata/`). Printing what this parses gives
//! the same text back: `parse(print(m))` prints as `m` does.
//!
//! What the printer leaves out cannot come back, and is refused with the
//! line it is on: a tensor shown by its digest (`#3f1c…`; write its values
//! instead, any number of them), sparse initializers and tensors, opaque
//! types, local functions. Value types other than those of graph inputs and
//! outputs are not printed, so none are read. A graph attribute holding one
//! graph reads as `Graph`, an empty list as `Ints`.

use super::*;
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::{HashMap, HashSet};

/// The model `text` describes (the form `text::model_to_text` prints), verified.
pub fn model_from_text(text: &str) -> Result<Model> {
    let lines: Vec<Line> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| Line {
            number: i + 1,
            indent: l.len() - l.trim_start().len(),
            text: l.trim(),
        })
        .collect();
    let mut p = Parser { lines, pos: 0 };
    let model = p.model().map_err(|e| match p.lines.get(p.pos) {
        Some(l) => e.context(format!("line {}: {}", l.number, l.text)),
        None => e.context("at the end of the text"),
    })?;
    verify::verify(&model)?;
    Ok(model)
}

struct Line<'a> {
    number: usize,
    indent: usize,
    text: &'a str,
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self, indent: usize) -> Option<&'a str> {
        let l = self.lines.get(self.pos)?;
        (l.indent == indent).then_some(l.text)
    }

    fn model(&mut self) -> Result<Model> {
        let head = self.peek(0).context("expected `model ir=N opsets=[...]`")?;
        let rest = head
            .strip_prefix("model ir=")
            .context("expected `model ir=N`")?;
        let (ir, opsets) = rest
            .split_once(" opsets=[")
            .context("expected `opsets=[...]`")?;
        let opsets = opsets.strip_suffix(']').context("expected `]`")?;
        let mut opset_import = vec![];
        for o in opsets.split(", ").filter(|o| !o.is_empty()) {
            let (domain, version) = o.rsplit_once('=').context("expected `domain=version`")?;
            opset_import.push(OpsetId {
                domain: Some(if domain == "ai.onnx" { "" } else { domain }.to_string()),
                version: Some(version.parse()?),
            });
        }
        let ir_version = Some(ir.parse()?);
        self.pos += 1;
        ensure!(
            self.peek(2).is_none_or(|l| !l.starts_with("functions:")),
            "local functions cannot be read back from the text form"
        );
        let graph = self.graph(1, &HashSet::new())?;
        if self.pos < self.lines.len() {
            bail!("unexpected line");
        }
        Ok(Model {
            ir_version,
            opset_import,
            graph,
            ..Model::default()
        })
    }

    /// A graph whose header is at `depth` (as `graph_to_text` prints it);
    /// `outer` holds the names the enclosing graphs define.
    fn graph(&mut self, depth: usize, outer: &HashSet<String>) -> Result<Graph> {
        let head = self
            .peek(2 * (depth - 1))
            .context("expected `graph NAME`")?;
        let name = head
            .strip_prefix("graph")
            .context("expected `graph NAME`")?;
        let name = name.trim();
        let mut g = Graph {
            name: (!name.is_empty()).then(|| name.to_string()),
            ..Graph::default()
        };
        self.pos += 1;
        let indent = 2 * depth;
        let mut scope: HashMap<String, Outlet> = HashMap::new();
        let source = |g: &mut Graph, kind: NodeKind, name: &str| {
            let id = g.add_node(Node {
                name: None,
                kind,
                outputs: vec![Value::named(name)],
            });
            (id, Outlet::new(id, 0))
        };
        while let Some(line) = self.peek(indent) {
            if let Some(name) = line.strip_prefix("capture ") {
                ensure!(outer.contains(name), "'{name}' is not defined outside");
                let (id, o) = source(&mut g, NodeKind::Capture, name);
                g.captures.push(id);
                scope.insert(name.to_string(), o);
            } else if let Some(rest) = line.strip_prefix("input ") {
                let (name, ty) = rest
                    .split_once(": ")
                    .context("expected `input NAME: TYPE`")?;
                let (id, o) = source(&mut g, NodeKind::Input, name);
                let info = ValueInfo {
                    ty: parse_type(ty)?,
                    ..ValueInfo::default()
                };
                g.inputs.push(GraphInput { node: id, info });
                scope.insert(name.to_string(), o);
            } else if let Some(rest) = line.strip_prefix("init ") {
                let (name, t) = rest
                    .split_once(": ")
                    .context("expected `init NAME: TENSOR`")?;
                let (_, o) = source(&mut g, NodeKind::Initializer(parse_tensor(t)?), name);
                scope.insert(name.to_string(), o);
            } else if line.starts_with("sparse-init ") {
                bail!("sparse initializers cannot be read back from the text form");
            } else if let Some(rest) = line.strip_prefix("output ") {
                let (name, ty) = rest
                    .split_once(": ")
                    .context("expected `output NAME: TYPE`")?;
                let outlet = *scope
                    .get(name)
                    .with_context(|| format!("'{name}' is not defined"))?;
                let info = ValueInfo {
                    ty: parse_type(ty)?,
                    ..ValueInfo::default()
                };
                g.outputs.push(GraphOutput { outlet, info });
            } else {
                self.op(&mut g, &mut scope, outer, depth)?;
                continue;
            }
            self.pos += 1;
        }
        Ok(g)
    }

    /// `outs = [domain.]Op(ins) {attrs}  # name`, then its graph attributes.
    fn op(
        &mut self,
        g: &mut Graph,
        scope: &mut HashMap<String, Outlet>,
        outer: &HashSet<String>,
        depth: usize,
    ) -> Result<()> {
        let line = self.lines[self.pos].text;
        let (outs, rest) = line
            .split_once(" = ")
            .context("expected `outputs = Op(inputs)`")?;
        let (op_name, rest) = rest.split_once('(').context("expected `Op(`")?;
        // Value names may hold balanced parentheses (`Conv(c).bias`).
        let mut open = 0;
        let close = rest
            .char_indices()
            .find(|&(_, c)| {
                open += i32::from(c == '(') - i32::from(c == ')');
                open < 0
            })
            .context("expected `)`")?
            .0;
        let (ins, rest) = (&rest[..close], &rest[close + 1..]);
        let (attrs, node_name) = match rest.split_once("  # ") {
            Some((attrs, name)) => (attrs, Some(name.to_string())),
            None => (rest, None),
        };
        let attrs = attrs.trim();
        let mut attributes = vec![];
        if !attrs.is_empty() {
            let inner = attrs
                .strip_prefix('{')
                .and_then(|a| a.strip_suffix('}'))
                .context("expected `{attributes}`")?;
            for item in split_top(inner) {
                let (name, value) = item.split_once('=').context("expected `name=value`")?;
                attributes.push(Attribute::new(name, parse_attr(value)?));
            }
        }
        let (domain, op_type) = match op_name.rsplit_once('.') {
            Some((d, t)) => (Some(d.to_string()), t),
            None => (None, op_name),
        };
        let inputs: Vec<&str> = if ins.is_empty() {
            vec![]
        } else {
            ins.split(", ").collect()
        };
        let mut op = Operator::new(op_type, inputs.len(), vec![]);
        op.domain = domain;
        self.pos += 1;
        // Graph attributes: `name:` one level in, each followed by its graphs.
        let mut graphs = vec![];
        while let Some(attr) = self.peek(2 * depth + 2).and_then(|l| l.strip_suffix(':')) {
            self.pos += 1;
            let mut names = outer.clone();
            names.extend(scope.keys().cloned());
            let mut subs = vec![];
            while self
                .peek(2 * depth + 2)
                .is_some_and(|l| l.starts_with("graph"))
            {
                subs.push(self.graph(depth + 2, &names)?);
            }
            graphs.push((attr.to_string(), subs));
        }
        let mut captured = vec![];
        for (name, mut subs) in graphs {
            for sub in &subs {
                captured.extend(
                    sub.captures
                        .iter()
                        .map(|&c| sub.node(c).outputs[0].name.clone()),
                );
            }
            let value = match subs.len() {
                1 => AttrValue::Graph(Box::new(subs.pop().expect("one graph"))),
                _ => AttrValue::Graphs(subs),
            };
            attributes.push(Attribute::new(&name, value));
        }
        op.attributes = attributes;
        let values: Vec<Value> = outs.split(", ").map(Value::named).collect();
        let count = values.len();
        let id = g.add_node(Node::op(node_name, op, values));
        let resolve = |name: &str| {
            scope
                .get(name)
                .copied()
                .ok_or_else(|| anyhow!("'{name}' is used before it is defined"))
        };
        for (slot, name) in inputs.iter().enumerate() {
            if !name.is_empty() {
                g.connect(resolve(name)?, id, slot);
            }
        }
        for (k, name) in captured.iter().enumerate() {
            g.connect(resolve(name)?, id, inputs.len() + k);
        }
        for (slot, name) in outs.split(", ").take(count).enumerate() {
            if !name.is_empty()
                && scope
                    .insert(name.to_string(), Outlet::new(id, slot))
                    .is_some()
            {
                bail!("'{name}' is defined twice");
            }
        }
        Ok(())
    }
}

/// Splits at the top-level `", "`: not inside brackets, `<>` or quotes.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut quoted, mut escaped, mut start) = (vec![], 0i32, false, false, 0);
    let bytes = s.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'[' | b'<' | b'{' if !quoted => depth += 1,
            b']' | b'>' | b'}' if !quoted => depth -= 1,
            b',' if !quoted && depth == 0 && bytes.get(i + 1) == Some(&b' ') => {
                out.push(&s[start..i]);
                start = i + 2;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_dtype(s: &str) -> Result<DataType> {
    if let Some(n) = s.strip_prefix("dtype") {
        return Ok(DataType(n.parse()?));
    }
    (0..=28)
        .map(DataType)
        .find(|d| d.short_name() == s)
        .ok_or_else(|| anyhow!("unknown element type '{s}'"))
}

/// `None` for `?` (no type, or a type with nothing set).
fn parse_type(s: &str) -> Result<Option<TypeInfo>> {
    let kind = if s == "?" {
        return Ok(None);
    } else if let Some(inner) = s.strip_prefix("seq<").and_then(|s| s.strip_suffix('>')) {
        TypeKind::Sequence(parse_type(inner)?.map(Box::new))
    } else if let Some(inner) = s
        .strip_prefix("optional<")
        .and_then(|s| s.strip_suffix('>'))
    {
        TypeKind::Optional(parse_type(inner)?.map(Box::new))
    } else if let Some(inner) = s.strip_prefix("map<").and_then(|s| s.strip_suffix('>')) {
        let (key, value) = inner.split_once(", ").context("expected `map<K, V>`")?;
        TypeKind::Map {
            key: parse_elem(key)?,
            value: parse_type(value)?.map(Box::new),
        }
    } else if s.starts_with("opaque<") {
        bail!("opaque types cannot be read back from the text form");
    } else if let Some(t) = s.strip_prefix("sparse ") {
        let (elem, shape) = parse_tensor_type(t)?;
        TypeKind::SparseTensor { elem, shape }
    } else {
        let (elem, shape) = parse_tensor_type(s)?;
        TypeKind::Tensor { elem, shape }
    };
    Ok(Some(TypeInfo {
        kind,
        denotation: None,
    }))
}

fn parse_elem(s: &str) -> Result<Option<DataType>> {
    Ok(if s == "?" {
        None
    } else {
        Some(parse_dtype(s)?)
    })
}

/// `f32[N,3,?]`, `f32[..]` (rank unknown).
fn parse_tensor_type(s: &str) -> Result<(Option<DataType>, Shape)> {
    let (elem, dims) = s.split_once('[').context("expected `type[dims]`")?;
    let dims = dims.strip_suffix(']').context("expected `]`")?;
    let shape = match dims {
        ".." => None,
        "" => Some(vec![]),
        _ => Some(
            dims.split(',')
                .map(|d| Dim {
                    value: match d {
                        "?" => DimValue::Unknown,
                        _ => d
                            .parse()
                            .map_or_else(|_| DimValue::Param(d.to_string()), DimValue::Known),
                    },
                    denotation: None,
                })
                .collect(),
        ),
    };
    Ok((parse_elem(elem)?, shape))
}

/// `f32[2,2] = [1.0, 2.0, 3.0, 4.0]`: floats for f32 and f64, integers for
/// the integer types and bool, stored as raw little-endian data.
fn parse_tensor(s: &str) -> Result<Tensor> {
    let Some((head, values)) = s.split_once(" = ") else {
        bail!("a tensor shown by its digest cannot be read back: write its values (`= [...]`)");
    };
    let (dtype, dims) = head.split_once('[').context("expected `type[dims]`")?;
    let dtype = parse_dtype(dtype)?;
    let dims = dims.strip_suffix(']').context("expected `]`")?;
    let dims: Vec<i64> = if dims.is_empty() {
        vec![]
    } else {
        dims.split(',').map(str::parse).collect::<Result<_, _>>()?
    };
    let values = values
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .context("expected `[values]`")?;
    let items: Vec<&str> = values.split(", ").filter(|v| !v.is_empty()).collect();
    let mut bytes = vec![];
    for v in &items {
        match dtype.0 {
            1 => bytes.extend(v.parse::<f32>()?.to_le_bytes()),
            11 => bytes.extend(v.parse::<f64>()?.to_le_bytes()),
            _ => {
                let i: i64 = v.parse()?;
                match dtype.size_of() {
                    Some(n @ (1 | 2 | 4 | 8)) if dtype.0 != 13 => {
                        bytes.extend(&i.to_le_bytes()[..n])
                    }
                    _ => bail!("tensors of {dtype} cannot be written by value"),
                }
            }
        }
    }
    let t = Tensor::new(dtype, dims, TensorData::Raw(bytes.into()));
    ensure!(
        t.numel() == items.len(),
        "{} values for dims {:?}",
        items.len(),
        t.dims
    );
    Ok(t)
}

fn parse_attr(s: &str) -> Result<AttrValue> {
    Ok(
        if let Some(body) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            let items: Vec<&str> = if body.is_empty() {
                vec![]
            } else {
                split_top(body)
            };
            if items.iter().all(|i| i.starts_with('"')) && !items.is_empty() {
                AttrValue::Strings(
                    items
                        .iter()
                        .map(|i| parse_string(i).map(Into::into))
                        .collect::<Result<_>>()?,
                )
            } else if items.iter().all(|i| i.parse::<i64>().is_ok()) {
                AttrValue::Ints(items.iter().map(|i| i.parse()).collect::<Result<_, _>>()?)
            } else if items.iter().all(|i| i.parse::<f32>().is_ok()) {
                AttrValue::Floats(items.iter().map(|i| i.parse()).collect::<Result<_, _>>()?)
            } else if items.iter().all(|i| i.contains(" = ")) {
                AttrValue::Tensors(
                    items
                        .iter()
                        .map(|i| parse_tensor(i))
                        .collect::<Result<_>>()?,
                )
            } else {
                AttrValue::Types(
                    items
                        .iter()
                        .map(|i| parse_type(i)?.context("a type attribute of `?`"))
                        .collect::<Result<_>>()?,
                )
            }
        } else if s.starts_with('"') {
            AttrValue::String(parse_string(s)?.into())
        } else if s == "ref" {
            AttrValue::None
        } else if s.starts_with("sparse-tensor") || s.ends_with("sparse tensors]") {
            bail!("sparse tensor attributes cannot be read back from the text form");
        } else if let Ok(i) = s.parse::<i64>() {
            AttrValue::Int(i)
        } else if let Ok(f) = s.parse::<f32>() {
            AttrValue::Float(f)
        } else if s.contains(" = ") || s.contains(" #") {
            AttrValue::Tensor(parse_tensor(s)?)
        } else {
            AttrValue::Type(parse_type(s)?.context("a type attribute of `?`")?)
        },
    )
}

/// A string as Rust's `{:?}` prints it.
fn parse_string(s: &str) -> Result<String> {
    let body = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .context("expected a quoted string")?;
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next().context("a string ends in `\\`")? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '0' => out.push('\0'),
            'u' => {
                let code: String = chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                let code = u32::from_str_radix(&code, 16)?;
                out.push(char::from_u32(code).context("not a character")?);
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
