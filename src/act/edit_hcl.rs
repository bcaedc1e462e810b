//! Adoption edits to Terraform configuration: set a literal attribute of a resource block in a
//! `.tf` file to its live value, and write an `import` block with a resource skeleton for an EC2
//! resource that exists live but in no Terraform state.
//!
//! Like [`super::edit_yaml`], the file is never re-serialized: hcl-edit parses it (keeping spans),
//! the attribute's expression is located, and new text is spliced into exactly that span, so
//! comments, alignment, heredocs and every other block stay byte for byte. The edited file is
//! parsed again to prove it is still HCL and holds the new literal.
//!
//! Only literals are edited. An attribute computed by an expression (`var.size`, `local.tags`,
//! `"${var.env}-web"`, a function call), a resource inside a module or with `count`/`for_each`
//! (the literal is shared by every instance), or a nested block that appears several times has
//! no honest edit: [`HclError::NoHonestEdit`], and the caller opens an issue instead.
//!
//! Pure: text in, text out, no IO.

use std::ops::Range;

use hcl_edit::Span;
use hcl_edit::expr::{Expression, ObjectKey};
use hcl_edit::structure::{Block, Body, Structure};
use serde_json::{Map, Value};

use super::edit_yaml::line_start;
use crate::model::contains_mask;

/// Why a Terraform adoption edit was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HclError {
    /// No literal edit expresses the adoption: open an issue.
    #[error("no honest edit: {0}")]
    NoHonestEdit(String),
    /// The file no longer declares what the drift was computed from.
    #[error("the file changed since the drift was read: {0}")]
    Stale(String),
    /// The file is not valid HCL.
    #[error("not valid HCL: {0}")]
    Invalid(String),
}

/// Result alias for this module.
pub type Result<T, E = HclError> = std::result::Result<T, E>;

fn no_edit(msg: impl Into<String>) -> HclError {
    HclError::NoHonestEdit(msg.into())
}

/// A resource address split into what a `resource` block declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub resource_type: String,
    pub name: String,
    /// `[0]` or `["key"]` on the address: one instance of a `count`/`for_each` resource.
    pub instance: Option<String>,
}

/// Parses `aws_instance.web` or `aws_instance.web[0]`. Module and data addresses have no honest
/// edit: a module's source is shared by its every call, and data sources are read, not managed.
pub fn parse_address(address: &str) -> Result<Address> {
    if address.starts_with("module.") {
        return Err(no_edit(format!(
            "`{address}` is declared inside a module, whose source every call of the module shares"
        )));
    }
    if address.starts_with("data.") {
        return Err(no_edit(format!("`{address}` is a data source")));
    }
    let (base, instance) = match address.find('[') {
        Some(i) => (&address[..i], Some(address[i..].to_string())),
        None => (address, None),
    };
    let Some((t, n)) = base.split_once('.') else {
        return Err(no_edit(format!("`{address}` is not a resource address")));
    };
    if t.is_empty() || n.is_empty() || n.contains('.') {
        return Err(no_edit(format!("`{address}` is not a resource address")));
    }
    Ok(Address {
        resource_type: t.to_string(),
        name: n.to_string(),
        instance,
    })
}

fn parse_body(text: &str) -> Result<Body> {
    hcl_edit::parser::parse_body(text).map_err(|e| HclError::Invalid(e.to_string()))
}

fn find_block<'a>(body: &'a Body, a: &Address) -> Option<&'a Block> {
    body.get_blocks("resource")
        .find(|b| b.has_exact_labels(&[a.resource_type.as_str(), a.name.as_str()]))
}

/// Whether `text` declares `resource "<type>" "<name>"` for the address.
pub fn declares(text: &str, address: &str) -> bool {
    match (parse_body(text), parse_address(address)) {
        (Ok(body), Ok(a)) => find_block(&body, &a).is_some(),
        _ => false,
    }
}

/// Where a path leads inside a resource block.
enum Target<'a> {
    /// An existing expression.
    Expr {
        expr: &'a Expression,
        /// The span of the whole `key = value` (attributes and object entries), for removal.
        entry: Option<Range<usize>>,
    },
    /// A missing attribute of a block body: insert before the block's closing brace.
    MissingAttribute { block: &'a Block, key: String },
    /// A missing key of an object expression.
    MissingKey { object: &'a Expression, key: String },
}

fn locate<'a>(block: &'a Block, path: &'a [String]) -> Result<Target<'a>> {
    let mut body_block = block;
    let mut i = 0;
    // Walk nested blocks (`root_block_device`, `/root_block_device/0/...`).
    loop {
        let Some(seg) = path.get(i) else {
            return Err(no_edit("the path names a whole block, not an attribute"));
        };
        let body = &body_block.body;
        if let Some(attr) = body.get_attribute(seg) {
            let entry = attr.span();
            return locate_in_expr(&attr.value, &path[i + 1..], entry, path);
        }
        let blocks: Vec<&Block> = body.get_blocks(seg).collect();
        match blocks.as_slice() {
            [] => {
                if i + 1 == path.len() {
                    return Ok(Target::MissingAttribute {
                        block: body_block,
                        key: seg.clone(),
                    });
                }
                return Err(HclError::Stale(format!(
                    "`{}` is not declared in the configuration",
                    pointer(&path[..=i])
                )));
            }
            [one] => {
                body_block = one;
                i += 1;
                // Terraform addresses nested blocks as lists: `/ebs_block_device/0/...`.
                if path.get(i).is_some_and(|s| s == "0") {
                    i += 1;
                }
            }
            _ => {
                return Err(no_edit(format!(
                    "`{seg}` is declared by {} blocks; which one drifted is ambiguous",
                    blocks.len()
                )));
            }
        }
    }
}

fn locate_in_expr<'a>(
    expr: &'a Expression,
    rest: &[String],
    entry: Option<Range<usize>>,
    full: &[String],
) -> Result<Target<'a>> {
    let Some(seg) = rest.first() else {
        return Ok(Target::Expr { expr, entry });
    };
    match expr {
        Expression::Object(obj) => {
            for (k, v) in obj.iter() {
                if object_key(k).as_deref() == Some(seg.as_str()) {
                    let entry = match (k.span(), v.expr().span()) {
                        (Some(a), Some(b)) => Some(a.start..b.end),
                        _ => None,
                    };
                    return locate_in_expr(v.expr(), &rest[1..], entry, full);
                }
            }
            if rest.len() == 1 {
                Ok(Target::MissingKey {
                    object: expr,
                    key: seg.clone(),
                })
            } else {
                Err(HclError::Stale(format!(
                    "`{}` is not declared in the configuration",
                    pointer(full)
                )))
            }
        }
        Expression::Array(arr) => {
            let idx: usize = seg
                .parse()
                .map_err(|_| HclError::Stale(format!("`{}` is not a list", pointer(full))))?;
            match arr.get(idx) {
                Some(e) => locate_in_expr(e, &rest[1..], e.span(), full),
                None => Err(no_edit(format!(
                    "`{}` would add a list element",
                    pointer(full)
                ))),
            }
        }
        other => Err(no_edit(format!(
            "`{}` is computed by an expression ({}), not a literal",
            pointer(full),
            describe(other)
        ))),
    }
}

fn object_key(k: &ObjectKey) -> Option<String> {
    match k {
        ObjectKey::Ident(id) => Some(id.as_str().to_string()),
        ObjectKey::Expression(Expression::String(s)) => Some(s.value().clone()),
        _ => None,
    }
}

fn pointer(path: &[String]) -> String {
    path.iter()
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect()
}

fn describe(e: &Expression) -> &'static str {
    match e {
        Expression::Variable(_) => "a variable reference",
        Expression::Traversal(_) => "a reference",
        Expression::FuncCall(_) => "a function call",
        Expression::StringTemplate(_) | Expression::HeredocTemplate(_) => "a template",
        Expression::Conditional(_) => "a conditional",
        Expression::ForExpr(_) => "a for expression",
        Expression::UnaryOp(_) | Expression::BinaryOp(_) => "an operation",
        Expression::Parenthesis(_) => "a parenthesized expression",
        _ => "a literal",
    }
}

/// Whether an expression is a literal value (no references, calls or templates).
fn is_literal(e: &Expression) -> bool {
    match e {
        Expression::Null(_)
        | Expression::Bool(_)
        | Expression::Number(_)
        | Expression::String(_) => true,
        Expression::Array(a) => a.iter().all(is_literal),
        Expression::Object(o) => o
            .iter()
            .all(|(k, v)| object_key(k).is_some() && is_literal(v.expr())),
        _ => false,
    }
}

/// The JSON value of a literal expression.
fn literal_value(e: &Expression) -> Option<Value> {
    Some(match e {
        Expression::Null(_) => Value::Null,
        Expression::Bool(b) => Value::Bool(*b.value()),
        Expression::Number(n) => {
            let n = n.value();
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                serde_json::Number::from_f64(n.as_f64()?).map(Value::Number)?
            }
        }
        Expression::String(s) => Value::String(s.value().clone()),
        Expression::Array(a) => Value::Array(a.iter().map(literal_value).collect::<Option<_>>()?),
        Expression::Object(o) => {
            let mut m = Map::new();
            for (k, v) in o.iter() {
                m.insert(object_key(k)?, literal_value(v.expr())?);
            }
            Value::Object(m)
        }
        _ => return None,
    })
}

/// HCL text for a JSON value: strings quoted and escaped (`${` and `%{` doubled so they stay
/// literal), objects on one line.
pub fn render_value(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => render_string(s),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(render_value).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(m) => {
            if m.is_empty() {
                return "{}".to_string();
            }
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{} = {}", render_key(k), render_value(v)))
                .collect();
            format!("{{ {} }}", parts.join(", "))
        }
    }
}

fn render_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn is_ident(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn render_key(k: &str) -> String {
    if is_ident(k) {
        k.to_string()
    } else {
        render_string(k)
    }
}

fn indentation(text: &str, pos: usize) -> String {
    let ls = line_start(text, pos);
    text[ls..pos]
        .chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .collect()
}

/// The closing `}` of a block or object whose span is `span`.
fn closing_brace(text: &str, span: &Range<usize>) -> Option<usize> {
    text.get(span.clone())?.rfind('}').map(|i| span.start + i)
}

fn check_instance(block: &Block, a: &Address) -> Result<()> {
    let repeated = block.body.has_attribute("count") || block.body.has_attribute("for_each");
    if repeated {
        return Err(no_edit(format!(
            "`{}.{}` uses count/for_each: its literals are shared by every instance",
            a.resource_type, a.name
        )));
    }
    if a.instance.is_some() {
        return Err(HclError::Stale(format!(
            "`{}.{}` is addressed as an instance but declares no count/for_each",
            a.resource_type, a.name
        )));
    }
    Ok(())
}

fn splice(text: &str, range: Range<usize>, new: &str) -> String {
    let mut out = String::with_capacity(text.len() + new.len());
    out.push_str(&text[..range.start]);
    out.push_str(new);
    out.push_str(&text[range.end..]);
    out
}

/// Sets the attribute at `path` (attribute names, nested block names, object keys and list
/// indices, as a JSON pointer into Terraform's attributes splits them) of the resource
/// `address` in `text` to `value`. A missing top-level attribute or object key is added on its
/// own line; everything else in the file stays byte for byte.
pub fn set_attribute(text: &str, address: &str, path: &[String], value: &Value) -> Result<String> {
    if contains_mask(value) {
        return Err(no_edit(
            "the value is secret (masked) and is never written to Git",
        ));
    }
    let a = parse_address(address)?;
    let body = parse_body(text)?;
    let block = find_block(&body, &a)
        .ok_or_else(|| HclError::Stale(format!("`{address}` is not declared in this file")))?;
    check_instance(block, &a)?;
    let out = match locate(block, path)? {
        Target::Expr { expr, .. } => {
            if !is_literal(expr) {
                return Err(no_edit(format!(
                    "`{}` is computed by {}, not a literal",
                    pointer(path),
                    describe(expr)
                )));
            }
            if literal_value(expr).as_ref() == Some(value) {
                return Ok(text.to_string());
            }
            let span = expr
                .span()
                .ok_or_else(|| no_edit("the parser gave no position for the value"))?;
            splice(text, span, &render_value(value))
        }
        Target::MissingAttribute { block: b, key } => {
            let span = b
                .span()
                .ok_or_else(|| no_edit("the parser gave no position for the block"))?;
            let close = closing_brace(text, &span)
                .ok_or_else(|| no_edit("cannot find the block's closing brace"))?;
            let indent = b
                .body
                .iter()
                .find_map(|s| match s {
                    Structure::Attribute(at) => at.span(),
                    Structure::Block(bl) => bl.span(),
                })
                .map(|s| indentation(text, s.start))
                .unwrap_or_else(|| format!("{}  ", indentation(text, span.start)));
            let line = format!("{indent}{} = {}\n", render_key(&key), render_value(value));
            let at = line_start(text, close);
            if text[at..close].trim().is_empty() {
                splice(text, at..at, &line)
            } else {
                // `resource "x" "y" { a = 1 }` on one line: not touched.
                return Err(no_edit("the block is written on one line"));
            }
        }
        Target::MissingKey { object, key } => {
            let span = object
                .span()
                .ok_or_else(|| no_edit("the parser gave no position for the object"))?;
            let close = closing_brace(text, &span)
                .ok_or_else(|| no_edit("cannot find the object's closing brace"))?;
            let Expression::Object(obj) = object else {
                return Err(no_edit("not an object"));
            };
            let multiline = text[span.clone()].contains('\n');
            if multiline {
                let indent = obj
                    .iter()
                    .find_map(|(k, _)| k.span())
                    .map(|s| indentation(text, s.start))
                    .unwrap_or_else(|| format!("{}  ", indentation(text, span.start)));
                let line = format!("{indent}{} = {}\n", render_key(&key), render_value(value));
                let at = line_start(text, close);
                splice(text, at..at, &line)
            } else {
                let inner = text[span.start + 1..close].trim();
                let sep = if inner.is_empty() || inner.ends_with(',') {
                    " "
                } else {
                    ", "
                };
                let new = format!("{sep}{} = {} ", render_key(&key), render_value(value));
                let at = text[..close].trim_end().len();
                splice(text, at..close, &new)
            }
        }
    };
    verify(&out, address, path, Some(value))?;
    Ok(out)
}

/// Removes the attribute or object key at `path` of the resource `address` (live no longer has
/// it): its line goes, or its `key = value` when it shares a line.
pub fn remove_attribute(text: &str, address: &str, path: &[String]) -> Result<String> {
    let a = parse_address(address)?;
    let body = parse_body(text)?;
    let block = find_block(&body, &a)
        .ok_or_else(|| HclError::Stale(format!("`{address}` is not declared in this file")))?;
    check_instance(block, &a)?;
    let Target::Expr { expr, entry } = locate(block, path)? else {
        return Err(HclError::Stale(format!(
            "`{}` is not declared in the configuration",
            pointer(path)
        )));
    };
    if !is_literal(expr) {
        return Err(no_edit(format!(
            "`{}` is computed by {}, not a literal",
            pointer(path),
            describe(expr)
        )));
    }
    let entry = entry.ok_or_else(|| no_edit("the parser gave no position for the attribute"))?;
    let ls = line_start(text, entry.start);
    let le = text[entry.end..]
        .find('\n')
        .map(|i| entry.end + i + 1)
        .unwrap_or(text.len());
    let own_line = text[ls..entry.start].trim().is_empty()
        && text[entry.end..le]
            .trim_start_matches([',', ' ', '\t'])
            .trim_start()
            .chars()
            .next()
            .is_none_or(|c| c == '#' || c == '\n' || c == '\r');
    if !own_line {
        return Err(no_edit("the attribute shares its line with other content"));
    }
    let out = splice(text, ls..le, "");
    verify(&out, address, path, None)?;
    Ok(out)
}

/// Re-parses the edited text and checks the attribute now holds `want` (or is gone).
fn verify(text: &str, address: &str, path: &[String], want: Option<&Value>) -> Result<()> {
    let body = parse_body(text).map_err(|e| no_edit(format!("the edit would not parse ({e})")))?;
    let a = parse_address(address)?;
    let block = find_block(&body, &a).ok_or_else(|| no_edit("the edit lost the resource block"))?;
    match (locate(block, path), want) {
        (Ok(Target::Expr { expr, .. }), Some(v)) if literal_value(expr).as_ref() == Some(v) => {
            Ok(())
        }
        (Ok(Target::MissingAttribute { .. } | Target::MissingKey { .. }), None) => Ok(()),
        (Err(HclError::Stale(_)), None) => Ok(()),
        _ => Err(no_edit("the edited file does not hold the new value")),
    }
}

/// The Terraform resource type for an EC2 resource type as the EC2 reader names it, when
/// driftwarden can write a skeleton for it.
pub fn terraform_type(ec2_type: &str) -> Option<&'static str> {
    Some(match ec2_type {
        "instance" | "aws_instance" => "aws_instance",
        "security-group" | "security_group" | "aws_security_group" => "aws_security_group",
        "volume" | "aws_ebs_volume" => "aws_ebs_volume",
        "vpc" | "aws_vpc" => "aws_vpc",
        "subnet" | "aws_subnet" => "aws_subnet",
        "internet-gateway" | "internet_gateway" | "aws_internet_gateway" => "aws_internet_gateway",
        "key-pair" | "key_pair" | "aws_key_pair" => "aws_key_pair",
        _ => return None,
    })
}

/// A Terraform resource name for an EC2 id: `i-0abc` → `i_0abc`.
pub fn resource_name(id: &str) -> String {
    let mut out: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

/// The attributes a skeleton declares for a live EC2 object (Describe output in EC2's
/// PascalCase or Terraform's snake_case): the identity-defining ones and the tags.
pub fn skeleton_attributes(tf_type: &str, live: &Value) -> Map<String, Value> {
    let pick: &[(&str, &[&str])] = match tf_type {
        "aws_instance" => &[
            ("ami", &["ami", "ImageId"]),
            ("instance_type", &["instance_type", "InstanceType"]),
            ("subnet_id", &["subnet_id", "SubnetId"]),
        ],
        "aws_security_group" => &[
            ("name", &["name", "GroupName"]),
            ("description", &["description", "Description"]),
            ("vpc_id", &["vpc_id", "VpcId"]),
        ],
        "aws_ebs_volume" => &[
            (
                "availability_zone",
                &["availability_zone", "AvailabilityZone"],
            ),
            ("size", &["size", "Size"]),
            ("type", &["type", "VolumeType"]),
        ],
        "aws_vpc" => &[("cidr_block", &["cidr_block", "CidrBlock"])],
        "aws_subnet" => &[
            ("vpc_id", &["vpc_id", "VpcId"]),
            ("cidr_block", &["cidr_block", "CidrBlock"]),
        ],
        _ => &[],
    };
    let mut out = Map::new();
    for (name, sources) in pick {
        if let Some(v) = sources
            .iter()
            .find_map(|s| live.get(*s))
            .filter(|v| !v.is_null())
        {
            out.insert((*name).to_string(), v.clone());
        }
    }
    let tags = match (live.get("tags"), live.get("Tags")) {
        (Some(Value::Object(m)), _) => Some(Value::Object(m.clone())),
        (_, Some(Value::Array(items))) => {
            let mut m = Map::new();
            for t in items {
                if let (Some(k), Some(v)) = (t.get("Key").and_then(Value::as_str), t.get("Value")) {
                    m.insert(k.to_string(), v.clone());
                }
            }
            Some(Value::Object(m))
        }
        _ => None,
    };
    if let Some(Value::Object(t)) = tags {
        if !t.is_empty() {
            out.insert("tags".to_string(), Value::Object(t));
        }
    }
    out
}

/// A new `.tf` file adopting an unmanaged resource: an `import` block (Terraform 1.5+) and a
/// resource skeleton with `attributes`, formatted like `terraform fmt` (aligned `=`). Refused
/// when an attribute is masked.
pub fn import_file(
    tf_type: &str,
    name: &str,
    id: &str,
    attributes: &Map<String, Value>,
    header: &str,
) -> Result<String> {
    if attributes.values().any(contains_mask) {
        return Err(no_edit(
            "the live resource holds secret (masked) values, which are never written to Git",
        ));
    }
    let mut out = String::new();
    for line in header.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!(
        "import {{\n  to = {tf_type}.{name}\n  id = {}\n}}\n\nresource {} {} {{\n",
        render_string(id),
        render_string(tf_type),
        render_string(name)
    ));
    let scalars: Vec<(&String, &Value)> = attributes
        .iter()
        .filter(|(_, v)| !matches!(v, Value::Object(_)))
        .collect();
    let width = scalars
        .iter()
        .map(|(k, _)| render_key(k).len())
        .max()
        .unwrap_or(0);
    for (k, v) in &scalars {
        let key = render_key(k);
        out.push_str(&format!("  {key:<width$} = {}\n", render_value(v)));
    }
    for (k, v) in attributes {
        if let Value::Object(m) = v {
            out.push_str(&format!("\n  {} = {{\n", render_key(k)));
            let w = m.keys().map(|k| render_key(k).len()).max().unwrap_or(0);
            for (ik, iv) in m {
                let key = render_key(ik);
                out.push_str(&format!("    {key:<w$} = {}\n", render_value(iv)));
            }
            out.push_str("  }\n");
        }
    }
    out.push_str("}\n");
    parse_body(&out).map_err(|e| no_edit(format!("the generated file would not parse ({e})")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn addresses_parse() {
        assert_eq!(
            parse_address("aws_instance.web").unwrap(),
            Address {
                resource_type: "aws_instance".into(),
                name: "web".into(),
                instance: None
            }
        );
        assert!(
            parse_address("aws_instance.web[0]")
                .unwrap()
                .instance
                .is_some()
        );
        assert!(matches!(
            parse_address("module.a.aws_instance.web"),
            Err(HclError::NoHonestEdit(_))
        ));
    }

    #[test]
    fn strings_escape_templates() {
        assert_eq!(render_value(&json!("a${b}\"c")), "\"a$${b}\\\"c\"");
        assert_eq!(
            render_value(&json!({"Name": "x", "a b": 1})),
            "{ Name = \"x\", \"a b\" = 1 }"
        );
        assert_eq!(resource_name("i-0abc"), "i_0abc");
        assert_eq!(resource_name("0x"), "_0x");
    }
}
