//! Terraform state, format version 4 (Terraform 0.12 and later; `terraform.tfstate` or
//! `terraform state pull`).
//!
//! Every managed resource instance becomes a [`StateInstance`] with its full address (modules,
//! `count` indexes and `for_each` keys), its schema version and its attributes. Sensitive
//! attributes (`sensitive_attributes`) are masked in everything this module hands out for
//! display; the raw attributes stay private to the crate, for comparison only, and the
//! instance's `Debug` output never shows them. Other state versions, pre-0.12 flatmap
//! attributes and malformed files are rejected with the file, the line and what was expected
//! (exit 3).

use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

use super::values::{self, element_lines};

/// Why a state file cannot be used. Every variant is the input's fault (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading state {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: not valid JSON: {message}")]
    Json {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{file}: state format version {version} is not supported; driftwarden reads version 4 (Terraform 0.12 and later): run `terraform state pull` with a current Terraform"
    )]
    UnsupportedVersion { file: String, version: String },
    #[error("{file}:{line}: {what}: {message}")]
    Malformed {
        file: String,
        line: usize,
        what: String,
        message: String,
    },
}

/// `count` index or `for_each` key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IndexKey {
    Int(i64),
    Str(String),
}

impl fmt::Display for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexKey::Int(i) => write!(f, "[{i}]"),
            IndexKey::Str(s) => write!(f, "[{}]", Value::String(s.clone())),
        }
    }
}

/// One managed resource instance of a state.
#[derive(Clone)]
pub struct StateInstance {
    /// Full address: `module.net.aws_subnet.private["a"]`.
    pub address: String,
    /// `module.net` (nested: `module.a.module.b`), `None` for the root module.
    pub module: Option<String>,
    pub resource_type: String,
    pub name: String,
    pub index: Option<IndexKey>,
    /// `provider["registry.terraform.io/hashicorp/aws"].west`.
    pub provider: String,
    /// The provider's schema version of this resource type when the state was written.
    pub schema_version: u64,
    /// `tainted`, when marked for replacement.
    pub status: Option<String>,
    /// Pointers of the sensitive attributes.
    pub sensitive: Vec<String>,
    /// 1-based line of the resource in the file.
    pub line: usize,
    raw: Value,
    masked: Value,
}

impl StateInstance {
    /// The attributes, sensitive values replaced by [`crate::model::MASK`]. Safe to render.
    pub fn attributes(&self) -> &Value {
        &self.masked
    }

    /// The attributes as stored: for comparison only, never for output.
    pub(crate) fn raw_attributes(&self) -> &Value {
        &self.raw
    }

    /// The instance's `id` attribute.
    pub fn id(&self) -> Option<&str> {
        self.raw.get("id").and_then(Value::as_str)
    }

    /// Whether a pointer touches a sensitive attribute (at, above or below it).
    pub fn is_sensitive(&self, pointer: &str) -> bool {
        self.sensitive.iter().any(|s| values::overlaps(s, pointer))
    }
}

impl fmt::Debug for StateInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateInstance")
            .field("address", &self.address)
            .field("schema_version", &self.schema_version)
            .field("sensitive", &self.sensitive)
            .field("attributes", &self.masked)
            .finish_non_exhaustive()
    }
}

/// A parsed state file.
#[derive(Debug, Clone)]
pub struct State {
    pub file: String,
    pub terraform_version: String,
    pub serial: u64,
    pub lineage: String,
    /// Managed resource instances, in file order. Data sources and deposed objects are left
    /// out: they are not desired infrastructure.
    pub instances: Vec<StateInstance>,
}

/// Reads and parses a state file.
pub fn load(path: &Path) -> Result<State, StateError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| StateError::Io {
        file: file.clone(),
        source: e,
    })?;
    parse(&bytes, &file)
}

/// Parses state JSON. `file` names it in messages.
pub fn parse(bytes: &[u8], file: &str) -> Result<State, StateError> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| StateError::Json {
        file: file.into(),
        line: e.line(),
        column: e.column(),
        message: values::json_syntax_message(&e),
    })?;
    let text = String::from_utf8_lossy(bytes);
    let malformed = |line: usize, what: &str, message: &str| StateError::Malformed {
        file: file.into(),
        line,
        what: what.into(),
        message: message.into(),
    };
    let Value::Object(root) = &doc else {
        return Err(malformed(1, "state", "expected a JSON object"));
    };
    match root.get("version") {
        Some(Value::Number(n)) if n.as_u64() == Some(4) => {}
        Some(v @ (Value::Number(_) | Value::String(_))) => {
            return Err(StateError::UnsupportedVersion {
                file: file.into(),
                version: match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            });
        }
        _ => {
            let hint = if root.contains_key("format_version") {
                "`version` is missing: this looks like `terraform show -json` output; give the state file itself (`terraform state pull`)"
            } else {
                "`version` is missing (expected a Terraform state file)"
            };
            return Err(malformed(1, "state", hint));
        }
    }
    let terraform_version = match root.get("terraform_version").and_then(Value::as_str) {
        Some(v) => v.to_string(),
        None => {
            return Err(malformed(
                1,
                "state",
                "`terraform_version` is missing or not a string",
            ));
        }
    };
    if let Some((maj, min)) = major_minor(&terraform_version) {
        if maj == 0 && min < 12 {
            return Err(StateError::UnsupportedVersion {
                file: file.into(),
                version: format!("4 written by Terraform {terraform_version}"),
            });
        }
    } else {
        return Err(malformed(
            1,
            "terraform_version",
            "expected a version like 1.9.5",
        ));
    }
    let lines = element_lines(&text, "resources");
    let resources = match root.get("resources") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(r)) => r,
        Some(_) => return Err(malformed(1, "resources", "expected a list")),
    };
    let mut instances = Vec::new();
    for (i, r) in resources.iter().enumerate() {
        let line = lines.get(i).copied().unwrap_or(0);
        let what = format!("resources[{i}]");
        let Value::Object(r) = r else {
            return Err(malformed(line, &what, "expected an object"));
        };
        let s = |k: &str| r.get(k).and_then(Value::as_str);
        let (Some(mode), Some(rtype), Some(name)) = (s("mode"), s("type"), s("name")) else {
            return Err(malformed(
                line,
                &what,
                "`mode`, `type` and `name` must be strings",
            ));
        };
        let module = s("module").map(str::to_string);
        let base = match &module {
            Some(m) => format!("{m}."),
            None => String::new(),
        };
        let what = match mode {
            "managed" => format!("{base}{rtype}.{name}"),
            "data" => format!("{base}data.{rtype}.{name}"),
            _ => {
                return Err(malformed(line, &what, "`mode` must be `managed` or `data`"));
            }
        };
        let each = s("each");
        let Some(Value::Array(insts)) = r.get("instances") else {
            return Err(malformed(line, &what, "`instances` must be a list"));
        };
        if mode != "managed" {
            continue;
        }
        for inst in insts {
            let Value::Object(inst) = inst else {
                return Err(malformed(line, &what, "each instance must be an object"));
            };
            if inst.get("deposed").is_some_and(|d| !d.is_null()) {
                continue;
            }
            let index = match (inst.get("index_key"), each) {
                (None | Some(Value::Null), None) => None,
                (Some(Value::Number(n)), None | Some("list")) => match n.as_i64() {
                    Some(i) => Some(IndexKey::Int(i)),
                    None => return Err(malformed(line, &what, "`index_key` must be an integer")),
                },
                (Some(Value::String(k)), None | Some("map")) => Some(IndexKey::Str(k.clone())),
                (None | Some(Value::Null), Some(_)) => {
                    return Err(malformed(
                        line,
                        &what,
                        "`each` is set but an instance has no `index_key`",
                    ));
                }
                _ => {
                    return Err(malformed(
                        line,
                        &what,
                        "`index_key` must be a number (count) or a string (for_each) matching `each`",
                    ));
                }
            };
            let address = match &index {
                Some(k) => format!("{what}{k}"),
                None => what.clone(),
            };
            let schema_version = match inst.get("schema_version") {
                Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(0),
                None => 0,
                _ => {
                    return Err(malformed(
                        line,
                        &address,
                        "`schema_version` must be a whole number",
                    ));
                }
            };
            let raw = match inst.get("attributes") {
                Some(Value::Object(a)) => Value::Object(a.clone()),
                _ if inst.contains_key("attributes_flat") => {
                    return Err(malformed(
                        line,
                        &address,
                        "attributes are in the pre-0.12 flat format (`attributes_flat`); refresh the state with Terraform 0.12 or later",
                    ));
                }
                _ => return Err(malformed(line, &address, "`attributes` must be an object")),
            };
            let sensitive = sensitive_paths(inst.get("sensitive_attributes"));
            let mut masked = raw.clone();
            for p in &sensitive {
                mask_pointer(&mut masked, p);
            }
            instances.push(StateInstance {
                address,
                module: module.clone(),
                resource_type: rtype.to_string(),
                name: name.to_string(),
                index,
                provider: s("provider").unwrap_or_default().to_string(),
                schema_version,
                status: inst
                    .get("status")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                sensitive,
                line,
                raw,
                masked,
            });
        }
    }
    Ok(State {
        file: file.to_string(),
        terraform_version,
        serial: root.get("serial").and_then(Value::as_u64).unwrap_or(0),
        lineage: root
            .get("lineage")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        instances,
    })
}

fn major_minor(v: &str) -> Option<(u32, u32)> {
    let v = v.trim_start_matches('v');
    let mut parts = v.split(['.', '-']);
    let maj = parts.next()?.parse().ok()?;
    let min = parts.next()?.parse().ok()?;
    Some((maj, min))
}

/// Decodes `sensitive_attributes`: a list of cty paths, each a list of steps
/// `{"type": "get_attr", "value": NAME}` or `{"type": "index", "value": {"value": K, "type": T}}`.
/// A step it does not understand ends the path there, so the mask covers the whole prefix:
/// unknown encodings fail closed. A value that is not a list masks every attribute.
fn sensitive_paths(v: Option<&Value>) -> Vec<String> {
    let Some(v) = v else {
        return Vec::new();
    };
    let Value::Array(paths) = v else {
        return if v.is_null() {
            Vec::new()
        } else {
            vec![String::new()]
        };
    };
    let mut out = Vec::new();
    for path in paths {
        let Value::Array(steps) = path else {
            out.push(String::new());
            continue;
        };
        let mut pointer = String::new();
        for step in steps {
            let seg = match (step.get("type").and_then(Value::as_str), step.get("value")) {
                (Some("get_attr"), Some(Value::String(name))) => name.clone(),
                (Some("index"), Some(Value::Object(k))) => match k.get("value") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => break,
                },
                _ => break,
            };
            pointer = values::join(&pointer, &seg);
        }
        out.push(pointer);
    }
    out.sort();
    out.dedup();
    out
}

/// Replaces the value at `pointer` by the mask (the whole value for `""`).
fn mask_pointer(v: &mut Value, pointer: &str) {
    let mut marks = Value::Bool(true);
    for seg in pointer
        .split('/')
        .skip(1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        let mut m = Map::new();
        m.insert(seg, marks);
        marks = Value::Object(m);
    }
    // Indices of lists are written as object keys here; a list at that place is masked whole.
    let masked = values::masked(v, &list_tolerant(&marks, v));
    *v = masked;
}

/// Turns object-shaped marks into array marks where the value is a list, so `/ingress/0/x`
/// marks element 0 of a list.
fn list_tolerant(marks: &Value, v: &Value) -> Value {
    match (marks, v) {
        (Value::Object(m), Value::Array(items)) => {
            let mut out = vec![Value::Null; items.len()];
            for (k, mk) in m {
                match k.parse::<usize>() {
                    Ok(i) if i < items.len() => out[i] = list_tolerant(mk, &items[i]),
                    _ => return Value::Bool(true),
                }
            }
            Value::Array(out)
        }
        (Value::Object(m), Value::Object(vm)) => Value::Object(
            m.iter()
                .map(|(k, mk)| {
                    let sub = vm
                        .get(k)
                        .map(|x| list_tolerant(mk, x))
                        .unwrap_or(mk.clone());
                    (k.clone(), sub)
                })
                .collect(),
        ),
        _ => marks.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MASK;

    const STATE: &str = r#"{
  "version": 4,
  "terraform_version": "1.9.5",
  "serial": 7,
  "lineage": "abc",
  "outputs": {},
  "resources": [
    {
      "mode": "managed",
      "type": "aws_instance",
      "name": "web",
      "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]",
      "instances": [
        {"schema_version": 1, "attributes": {"id": "i-1", "user_data": "s3cr3t", "tags": {"Name": "web"}},
         "sensitive_attributes": [[{"type": "get_attr", "value": "user_data"}]]}
      ]
    },
    {
      "module": "module.net",
      "mode": "managed",
      "type": "aws_subnet",
      "name": "private",
      "each": "map",
      "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]",
      "instances": [
        {"index_key": "a", "schema_version": 1, "attributes": {"id": "subnet-a"}},
        {"index_key": "b", "schema_version": 1, "attributes": {"id": "subnet-b"}}
      ]
    },
    {
      "mode": "managed",
      "type": "aws_eip",
      "name": "ip",
      "each": "list",
      "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]",
      "instances": [
        {"index_key": 0, "schema_version": 0, "attributes": {"id": "eipalloc-1"}},
        {"index_key": 1, "deposed": "00000001", "schema_version": 0, "attributes": {"id": "eipalloc-old"}}
      ]
    },
    {
      "mode": "data",
      "type": "aws_ami",
      "name": "ubuntu",
      "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]",
      "instances": [{"schema_version": 0, "attributes": {"id": "ami-1"}}]
    }
  ]
}"#;

    #[test]
    fn parses_modules_count_for_each_and_masks() {
        let s = parse(STATE.as_bytes(), "s.tfstate").unwrap();
        let addrs: Vec<&str> = s.instances.iter().map(|i| i.address.as_str()).collect();
        assert_eq!(
            addrs,
            [
                "aws_instance.web",
                "module.net.aws_subnet.private[\"a\"]",
                "module.net.aws_subnet.private[\"b\"]",
                "aws_eip.ip[0]"
            ]
        );
        let web = &s.instances[0];
        assert_eq!(web.schema_version, 1);
        assert_eq!(web.line, 8);
        assert_eq!(web.attributes()["user_data"], MASK);
        assert_eq!(web.raw_attributes()["user_data"], "s3cr3t");
        assert!(!format!("{web:?}").contains("s3cr3t"));
        assert_eq!(s.instances[1].line, 18);
        assert_eq!(s.terraform_version, "1.9.5");
    }

    #[test]
    fn rejects_other_versions_and_shapes() {
        let v3 = r#"{"version": 3, "terraform_version": "0.11.14", "modules": []}"#;
        let err = parse(v3.as_bytes(), "old.tfstate").unwrap_err();
        assert!(
            matches!(err, StateError::UnsupportedVersion { .. }),
            "{err}"
        );
        let err = parse(b"{\"version\": 4,\n \"resources\": [", "t.tfstate").unwrap_err();
        assert!(err.to_string().contains("t.tfstate:2:"), "{err}");
        let bad = r#"{"version": 4, "terraform_version": "1.5.0", "resources": [{"mode": "managed", "type": "a", "name": "b", "each": "map", "instances": [{"index_key": 3, "attributes": {}}]}]}"#;
        let err = parse(bad.as_bytes(), "b.tfstate").unwrap_err();
        assert!(err.to_string().contains("index_key"), "{err}");
        let flat = r#"{"version": 4, "terraform_version": "0.12.0", "resources": [{"mode": "managed", "type": "a", "name": "b", "instances": [{"attributes_flat": {"id": "x"}}]}]}"#;
        let err = parse(flat.as_bytes(), "f.tfstate").unwrap_err();
        assert!(err.to_string().contains("attributes_flat"), "{err}");
        let shown = r#"{"format_version": "1.0", "values": {}}"#;
        let err = parse(shown.as_bytes(), "j.json").unwrap_err();
        assert!(err.to_string().contains("terraform state pull"), "{err}");
    }

    #[test]
    fn sensitive_paths_decode_and_fail_closed() {
        let v: Value = serde_json::from_str(
            r#"[[{"type": "get_attr", "value": "a"}, {"type": "index", "value": {"value": 0, "type": "number"}}],
                [{"type": "get_attr", "value": "m"}, {"type": "weird"}]]"#,
        )
        .unwrap();
        assert_eq!(sensitive_paths(Some(&v)), ["/a/0", "/m"]);
        assert_eq!(sensitive_paths(Some(&Value::Bool(true))), [""]);
        let mut x: Value = serde_json::from_str(r#"{"a": ["p", "q"], "m": {"k": 1}}"#).unwrap();
        mask_pointer(&mut x, "/a/0");
        mask_pointer(&mut x, "/m");
        assert_eq!(x["a"][0], MASK);
        assert_eq!(x["a"][1], "q");
        assert_eq!(x["m"], MASK);
        let mut whole: Value = serde_json::from_str(r#"{"a": 1}"#).unwrap();
        mask_pointer(&mut whole, "");
        assert_eq!(whole, MASK);
    }
}
