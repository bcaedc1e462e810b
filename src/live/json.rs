//! Live objects from JSON (`kubectl get -o json` files), one at a time and without positions.
//!
//! Live objects need no line numbers: no error or provenance record points into a live file
//! except a broken one, and a broken file is read a second time by the positioned reader
//! ([`manifests::parse_file`]) for the message. So a JSON file is parsed by serde_json straight
//! into values, and a list's `items` are handed to the caller one by one as they are parsed:
//! a 100,000-item `kind: List` never exists in memory as a whole.
//!
//! `kubectl` writes a list's keys in alphabetical order (`apiVersion`, `items`, `kind`,
//! `metadata`): the list's `kind` comes after its items. A first pass ([`top_level`]) skims the
//! bytes for the top-level keys without building anything, so the items can be handled as they
//! are parsed. The same objects come out as from the positioned reader, in the same order.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::desired::manifests::{self, ManifestError, RawObject};

/// Hands every object of one live JSON file to `sink`, in file order. An invalid file is
/// reported exactly as [`manifests::parse_file`] reports it (file and line); objects handed
/// over before the problem was found are then the caller's to drop.
pub fn for_each_object(
    file: &str,
    bytes: &[u8],
    sink: &mut dyn FnMut(RawObject),
) -> Result<(), ManifestError> {
    let mut emitted = 0usize;
    let fast = {
        let mut count = |o: RawObject| {
            emitted += 1;
            sink(o);
        };
        read_fast(file, bytes, &mut count)
    };
    if fast.is_ok() {
        return Ok(());
    }
    // Something the fast reader does not accept: the positioned reader decides, and names the
    // line when the file is invalid. Objects already handed over come first in its output too.
    let objects = manifests::parse_file(file, bytes, true)?;
    for o in objects.into_iter().skip(emitted) {
        sink(o);
    }
    Ok(())
}

/// The fast reader gave up; the positioned reader decides.
#[derive(Debug)]
struct Fallback;

fn read_fast(file: &str, bytes: &[u8], sink: &mut dyn FnMut(RawObject)) -> Result<(), Fallback> {
    let top = top_level(bytes).ok_or(Fallback)?;
    let is_list = top.kind == "List" || (top.kind.ends_with("List") && top.has_items);
    if !is_list {
        let value: Value = serde_json::from_slice(bytes).map_err(|_| Fallback)?;
        return emit(file, value, None, sink);
    }
    if top.api.is_empty() {
        return Err(Fallback);
    }
    let item_kind = if top.kind == "List" {
        None
    } else {
        Some((
            top.api.clone(),
            top.kind.trim_end_matches("List").to_string(),
        ))
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = ListSeed {
        file,
        item_kind: item_kind.as_ref().map(|(a, k)| (a.as_str(), k.as_str())),
        sink,
        failed: false,
    };
    let failed = de.deserialize_map(seed).map_err(|_| Fallback)?;
    de.end().map_err(|_| Fallback)?;
    if failed { Err(Fallback) } else { Ok(()) }
}

/// One object (or a nested list's objects), checked like [`manifests::parse_file`] checks a
/// live object: a mapping with `kind`, `apiVersion` and `metadata.name`.
fn emit(
    file: &str,
    mut value: Value,
    list_item_kind: Option<(&str, &str)>,
    sink: &mut dyn FnMut(RawObject),
) -> Result<(), Fallback> {
    let Some(obj) = value.as_object_mut() else {
        return Err(Fallback);
    };
    if let Some((api, kind)) = list_item_kind {
        obj.entry("apiVersion")
            .or_insert_with(|| Value::String(api.to_string()));
        obj.entry("kind")
            .or_insert_with(|| Value::String(kind.to_string()));
    }
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let api = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if kind.is_empty() || api.is_empty() {
        return Err(Fallback);
    }
    if kind == "List" || (kind.ends_with("List") && value.get("items").is_some()) {
        // A list inside a list: rare, handled on values.
        let items_kind = if kind == "List" {
            None
        } else {
            Some((api.to_string(), kind.trim_end_matches("List").to_string()))
        };
        let items = match value.get_mut("items").map(Value::take) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(Fallback),
        };
        for item in items {
            let ik = items_kind.as_ref().map(|(a, k)| (a.as_str(), k.as_str()));
            emit(file, item, ik, sink)?;
        }
        return Ok(());
    }
    let named = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !named {
        return Err(Fallback);
    }
    sink(RawObject {
        value,
        file: file.to_string(),
        // Live objects carry no position (module docs).
        line: 0,
    });
    Ok(())
}

/// The top-level list: its `items` handed over one by one, everything else skipped.
struct ListSeed<'a, 's> {
    file: &'a str,
    item_kind: Option<(&'a str, &'a str)>,
    sink: &'s mut dyn FnMut(RawObject),
    /// An item failed the checks: the positioned reader decides.
    failed: bool,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_, '_> {
    /// Whether an item failed the checks.
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Kubernetes list")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<bool, A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "items" && !self.failed {
                let items = Items {
                    file: self.file,
                    item_kind: self.item_kind,
                    sink: &mut *self.sink,
                };
                self.failed = map.next_value_seed(items)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(self.failed)
    }
}

/// A list's `items`: each item parsed, checked and handed over before the next is read.
struct Items<'a, 's> {
    file: &'a str,
    item_kind: Option<(&'a str, &'a str)>,
    sink: &'s mut dyn FnMut(RawObject),
}

impl<'de> DeserializeSeed<'de> for Items<'_, '_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Items<'_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of objects")
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut failed = false;
        while let Some(item) = seq.next_element::<Value>()? {
            if !failed && emit(self.file, item, self.item_kind, &mut *self.sink).is_err() {
                // Keep reading to the end of the list (the syntax is still checked); the
                // positioned reader will name the problem.
                failed = true;
            }
        }
        Ok(failed)
    }
}

/// The top-level facts of a JSON object, found without building it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Top {
    kind: String,
    api: String,
    has_items: bool,
}

/// Skims a JSON document for its top-level `kind`, `apiVersion` and whether it has `items`.
/// `None` when the document is not an object or the skim meets something it does not expect
/// (the parsers then report it).
fn top_level(bytes: &[u8]) -> Option<Top> {
    let mut s = Skim { b: bytes, i: 0 };
    s.ws();
    // A UTF-8 byte-order mark is not JSON; serde_json refuses it too.
    s.eat(b'{')?;
    let mut top = Top::default();
    s.ws();
    if s.peek() == Some(b'}') {
        return Some(top);
    }
    loop {
        s.ws();
        let key = s.string()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        match key.as_ref() {
            "kind" | "apiVersion" if s.peek() == Some(b'"') => {
                let v = s.string()?.into_owned();
                if key == "kind" {
                    top.kind = v;
                } else {
                    top.api = v;
                }
            }
            k => {
                if k == "items" {
                    top.has_items = true;
                }
                s.skip_value()?;
            }
        }
        s.ws();
        match s.next()? {
            b',' => continue,
            b'}' => return Some(top),
            _ => return None,
        }
    }
}

struct Skim<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Skim<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// The string starting here (at its opening quote), unescaped.
    fn string(&mut self) -> Option<std::borrow::Cow<'a, str>> {
        let start = self.i;
        self.eat(b'"')?;
        let mut escaped = false;
        loop {
            match self.next()? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.next()?;
                }
                _ => {}
            }
        }
        let raw = self.b.get(start..self.i)?;
        if escaped {
            serde_json::from_slice::<String>(raw)
                .ok()
                .map(std::borrow::Cow::Owned)
        } else {
            // Without the quotes.
            std::str::from_utf8(raw.get(1..raw.len() - 1)?)
                .ok()
                .map(std::borrow::Cow::Borrowed)
        }
    }

    /// Skips one value: a string, an object or array (with everything inside), or a scalar.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => self.skip_string()?,
                        b'{' | b'[' => {
                            depth += 1;
                            self.i += 1;
                        }
                        b'}' | b']' => {
                            depth -= 1;
                            self.i += 1;
                            if depth == 0 {
                                return Some(());
                            }
                        }
                        _ => self.i += 1,
                    }
                }
            }
            _ => {
                while !matches!(
                    self.peek()?,
                    b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                ) {
                    self.i += 1;
                }
                Some(())
            }
        }
    }

    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            // The bytes of a string up to its next quote or backslash.
            let rest = self.b.get(self.i..)?;
            let at = rest.iter().position(|c| *c == b'"' || *c == b'\\')?;
            self.i += at;
            match self.next()? {
                b'"' => return Some(()),
                _ => {
                    self.next()?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(file: &str, text: &str) -> Result<Vec<RawObject>, ManifestError> {
        let mut out = Vec::new();
        for_each_object(file, text.as_bytes(), &mut |o| out.push(o))?;
        Ok(out)
    }

    fn values(objs: &[RawObject]) -> Vec<&Value> {
        objs.iter().map(|o| &o.value).collect()
    }

    #[test]
    fn skims_the_top_level() {
        let t = top_level(br#" {"apiVersion": "v1", "items": [{"kind": "x", "a": "}\"]"}], "kind": "ConfigMapList", "metadata": {"k\u0069nd": "no"}}"#);
        assert_eq!(
            t,
            Some(Top {
                kind: "ConfigMapList".into(),
                api: "v1".into(),
                has_items: true
            })
        );
        assert_eq!(top_level(b"[1]"), None);
        assert_eq!(top_level(b"{\"kind\": \"A\", "), None);
        let escaped = top_level(br#"{"k\u0069nd": "L\u0069st", "n": -1.5e3, "b": true}"#);
        assert_eq!(escaped.map(|t| t.kind), Some("List".to_string()));
    }

    #[test]
    fn same_objects_as_the_positioned_reader() {
        let files = [
            // kubectl's order: the list's kind after its items.
            r#"{"apiVersion": "v1", "items": [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "x"}, "data": {"n": "1"}},
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 2, "f": 1.5, "n": -3, "e": 1e3}}
            ], "kind": "List", "metadata": {"resourceVersion": ""}}"#,
            // A typed list: its items carry no kind.
            r#"{"kind": "ConfigMapList", "apiVersion": "v1", "items": [{"metadata": {"name": "a"}}, {"kind": "ConfigMap", "metadata": {"name": "b"}}]}"#,
            // A list in a list, an empty list, a single object.
            r#"{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "SecretList", "items": [{"metadata": {"name": "s"}}]}]}"#,
            r#"{"apiVersion": "v1", "kind": "List", "items": null}"#,
            r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}, "items": [1]}"#,
        ];
        for text in files {
            let fast = read("f.json", text).unwrap();
            let slow = manifests::parse_file("f.json", text.as_bytes(), true).unwrap();
            assert_eq!(values(&fast), values(&slow), "{text}");
            assert!(fast.iter().all(|o| o.file == "f.json"));
        }
    }

    #[test]
    fn invalid_files_are_reported_by_the_positioned_reader() {
        let cases = [
            "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [\n{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"a\"}},\n{\"apiVersion\": \"v1\", \"metadata\": {\"name\": \"b\"}}]}",
            "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [\n{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {}}]}",
            "{\"apiVersion\": \"v1\", \"kind\": \"List\",\n \"items\": [1, }",
            "[{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"a\"}}]",
        ];
        for text in cases {
            let fast = read("bad.json", text).unwrap_err();
            let slow = manifests::parse_file("bad.json", text.as_bytes(), true).unwrap_err();
            assert_eq!(fast, slow, "{text}");
        }
    }
}
