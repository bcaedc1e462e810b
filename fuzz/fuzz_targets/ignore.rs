//! Ignore patterns: the `.driftignore` lines of the EC2 source (`terraform::compare::IgnoreList`:
//! globs, `#` comments, `!` re-includes, the last matching line wins) and the configured ignore
//! rules of the Kubernetes diff (`diff::ignore`: name and namespace globs, JSON pointers with
//! `*` segments). The input is `.driftignore` text, optionally followed by a NUL byte and a JSON
//! object the first lines' rule is pruned from.
//!
//! Laws: nothing panics; a refused line is a line of the text; a last line naming a literal
//! resource decides that resource (ignored, or re-included with `!`); a pointer re-parses to its
//! segments once escaped; a pattern covers itself; pruning a literal pointer leaves no value
//! at it, and pruning twice removes nothing more.
#![no_main]

use driftwarden::diff::IgnoreRule;
use driftwarden::diff::ignore::{self, PointerMatch};
use driftwarden::terraform::compare::IgnoreList;
use driftwarden_fuzz::{get, line_count, pointer};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn is_literal(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '[', ']', '{', '}', '\\', ',', '!', '#'])
        && !pattern.is_empty()
        && pattern.trim() == pattern
}

fuzz_target!(|data: &[u8]| {
    let (text, json) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };

    // `.driftignore`.
    match IgnoreList::parse(text.lines()) {
        Ok(list) => {
            let last = text
                .lines()
                .map(|l| l.split(" #").next().unwrap_or(l).trim())
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .last();
            if let Some(last) = last {
                let (negated, pat) = match last.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, last),
                };
                if is_literal(pat) {
                    assert_eq!(
                        list.ignores(&[pat]),
                        !negated,
                        "the last line `{last}` does not decide `{pat}`"
                    );
                }
            }
            for l in text.lines().take(8) {
                list.ignores(&[l, l.trim()]);
            }
        }
        Err((line, message)) => {
            assert!(
                line >= 1 && line <= line_count(text),
                "line {line}: {message}"
            );
        }
    }

    // Configured rules: name glob, namespace glob, then pointers, one per line.
    let mut lines = text.lines();
    let name_glob = lines.next().filter(|l| !l.is_empty()).map(str::to_string);
    let namespace_glob = lines.next().filter(|l| !l.is_empty()).map(str::to_string);
    let pointers: Vec<String> = lines.take(8).map(str::to_string).collect();
    let rule = IgnoreRule {
        name: "fuzz".into(),
        kinds: Vec::new(),
        name_glob: name_glob.clone(),
        namespace_glob,
        pointers: pointers.clone(),
        managers: Vec::new(),
    };
    let valid = ignore::validate_rule(&rule).is_ok();
    let compiled = ignore::compile(std::slice::from_ref(&rule));
    assert_eq!(
        compiled.len(),
        usize::from(valid),
        "validate and compile disagree"
    );
    if let Some(c) = compiled.first() {
        if let Some(g) = &name_glob {
            if is_literal(g) {
                assert!(c.selects("ConfigMap", g, Some("ns")) || rule.namespace_glob.is_some());
            }
        }
        let mut doc: Option<Value> = json.and_then(|j| serde_json::from_slice(j).ok());
        for segs in c.pointers() {
            assert_eq!(ignore::parse_pointer(&pointer(segs)).as_ref(), Some(segs));
            assert_eq!(ignore::match_pattern(segs, segs), PointerMatch::Covers);
            if let Some(v) = doc.as_mut() {
                let literal = !segs.iter().any(|s| s == "*");
                ignore::prune(v, segs);
                if literal && !segs.is_empty() {
                    let left = get(v, segs);
                    assert!(
                        left.is_none() || left == Some(&Value::Null),
                        "{} still holds {left:?} after pruning",
                        pointer(segs)
                    );
                }
                let once = v.clone();
                ignore::prune(v, segs);
                assert_eq!(*v, once, "pruning {} twice changed more", pointer(segs));
            }
        }
    }
});
