//! Ignore rules: known noise dropped from a diff, and counted.
//!
//! Two kinds. Built-in, never compared and not counted (desired does not declare them): the
//! root `apiVersion` (identity, not content), server bookkeeping (`metadata.uid`,
//! `resourceVersion`, `generation`, `creationTimestamp`, `managedFields`, `selfLink`,
//! `deletionTimestamp`, `deletionGracePeriodSeconds`), `status`, and the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation. Configured ([`IgnoreRule`],
//! like Argo CD's `ignoreDifferences`): select objects by kind, name glob and
//! namespace glob, then drop fields by JSON pointer (`*` matches any one segment; a pointer
//! covers the field and everything under it) and/or by the field's current owner in
//! managedFields. Every field a configured rule drops is counted under the rule's name, because
//! the report must never hide what it did not compare (docs/diff.md, rule 4).

use globset::{Glob, GlobMatcher};
use serde_json::Value;
use thiserror::Error;

use super::IgnoreRule;

/// Why an ignore rule is unusable.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IgnoreRuleError {
    #[error("ignore rule {rule:?}: invalid glob {glob:?}: {message}")]
    Glob {
        rule: String,
        glob: String,
        message: String,
    },
    #[error("ignore rule {rule:?}: JSON pointer {pointer:?} must be empty or start with '/'")]
    Pointer { rule: String, pointer: String },
    #[error("ignore rule {rule:?}: needs at least one pointer or manager")]
    Empty { rule: String },
}

/// Checks a rule up front, so config loading can reject it with a clear message. A rule that
/// fails here never matches anything in [`super::diff_object`].
pub fn validate_rule(rule: &IgnoreRule) -> Result<(), IgnoreRuleError> {
    compile_rule(rule).map(|_| ())
}

/// Splits an RFC 6901 pointer into unescaped segments. `""` is the whole document.
pub fn parse_pointer(p: &str) -> Option<Vec<String>> {
    if p.is_empty() {
        return Some(Vec::new());
    }
    let rest = p.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// Fields the server owns, never compared (and not counted as ignored). The root `apiVersion`
/// is identity, not content: like [`crate::model::ResourceId::key`], the same object read
/// through another served version is the same object.
pub fn is_builtin_ignored(path: &[String]) -> bool {
    match path {
        [first, ..] if first == "status" => true,
        [first] if first == "apiVersion" => true,
        [m, field, ..] if m == "metadata" => {
            matches!(
                field.as_str(),
                "uid"
                    | "resourceVersion"
                    | "generation"
                    | "creationTimestamp"
                    | "managedFields"
                    | "selfLink"
                    | "deletionTimestamp"
                    | "deletionGracePeriodSeconds"
            ) || (field == "annotations"
                && path.get(2).map(String::as_str)
                    == Some("kubectl.kubernetes.io/last-applied-configuration"))
        }
        _ => false,
    }
}

/// A rule ready to match.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub name: String,
    kinds: Vec<String>,
    name_glob: Option<GlobMatcher>,
    namespace_glob: Option<GlobMatcher>,
    pointers: Vec<Vec<String>>,
    pub managers: Vec<String>,
}

fn compile_rule(rule: &IgnoreRule) -> Result<CompiledRule, IgnoreRuleError> {
    let glob = |g: &Option<String>| -> Result<Option<GlobMatcher>, IgnoreRuleError> {
        g.as_deref()
            .map(|g| {
                Glob::new(g)
                    .map(|g| g.compile_matcher())
                    .map_err(|e| IgnoreRuleError::Glob {
                        rule: rule.name.clone(),
                        glob: g.to_string(),
                        message: e.kind().to_string(),
                    })
            })
            .transpose()
    };
    let pointers = rule
        .pointers
        .iter()
        .map(|p| {
            parse_pointer(p).ok_or_else(|| IgnoreRuleError::Pointer {
                rule: rule.name.clone(),
                pointer: p.clone(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if pointers.is_empty() && rule.managers.is_empty() {
        return Err(IgnoreRuleError::Empty {
            rule: rule.name.clone(),
        });
    }
    Ok(CompiledRule {
        name: rule.name.clone(),
        kinds: rule.kinds.clone(),
        name_glob: glob(&rule.name_glob)?,
        namespace_glob: glob(&rule.namespace_glob)?,
        pointers,
        managers: rule.managers.clone(),
    })
}

/// Compiles the usable rules; invalid ones are logged and skipped (config validation should have
/// rejected them with [`validate_rule`]).
pub fn compile(rules: &[IgnoreRule]) -> Vec<CompiledRule> {
    rules
        .iter()
        .filter_map(|r| match compile_rule(r) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("{e}; the rule is not applied");
                None
            }
        })
        .collect()
}

/// How a rule's pointer relates to a change's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointerMatch {
    No,
    /// The pattern is the path or one of its ancestors: the whole change is covered.
    Covers,
    /// The pattern points inside the change's value: this pattern relative to it.
    Below(Vec<String>),
}

/// Matches a pattern (`*` = any one segment) against a path.
pub fn match_pattern(pattern: &[String], path: &[String]) -> PointerMatch {
    let common = pattern.len().min(path.len());
    let agrees = pattern[..common]
        .iter()
        .zip(&path[..common])
        .all(|(p, s)| p == "*" || p == s);
    if !agrees {
        PointerMatch::No
    } else if pattern.len() <= path.len() {
        PointerMatch::Covers
    } else {
        PointerMatch::Below(pattern[common..].to_vec())
    }
}

/// Removes every field matching the relative pattern from `value`. Returns how many were removed.
pub fn prune(value: &mut Value, rel: &[String]) -> usize {
    let Some((head, rest)) = rel.split_first() else {
        return 0;
    };
    match value {
        Value::Object(map) => {
            let keys: Vec<String> = if head == "*" {
                map.keys().cloned().collect()
            } else {
                map.contains_key(head)
                    .then(|| head.clone())
                    .into_iter()
                    .collect()
            };
            let mut n = 0;
            for k in keys {
                if rest.is_empty() {
                    map.shift_remove(&k);
                    n += 1;
                } else if let Some(child) = map.get_mut(&k) {
                    n += prune(child, rest);
                }
            }
            n
        }
        Value::Array(items) => {
            let idx: Vec<usize> = if head == "*" {
                (0..items.len()).collect()
            } else {
                head.parse::<usize>()
                    .ok()
                    .filter(|i| *i < items.len())
                    .into_iter()
                    .collect()
            };
            if rest.is_empty() {
                // Replace rather than remove, so the remaining indices keep their meaning.
                for i in &idx {
                    if let Some(it) = items.get_mut(*i) {
                        *it = Value::Null;
                    }
                }
                idx.len()
            } else {
                let mut n = 0;
                for i in idx {
                    if let Some(it) = items.get_mut(i) {
                        n += prune(it, rest);
                    }
                }
                n
            }
        }
        _ => 0,
    }
}

impl CompiledRule {
    /// Whether the rule applies to this object at all.
    pub fn selects(&self, kind: &str, name: &str, namespace: Option<&str>) -> bool {
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k.eq_ignore_ascii_case(kind)))
            && self.name_glob.as_ref().is_none_or(|g| g.is_match(name))
            && self
                .namespace_glob
                .as_ref()
                .is_none_or(|g| namespace.is_some_and(|ns| g.is_match(ns)))
    }

    /// Whether the field's owner satisfies the rule's manager filter.
    pub fn owner_matches(&self, owner: Option<&str>) -> bool {
        self.managers.is_empty() || owner.is_some_and(|o| self.managers.iter().any(|m| m == o))
    }

    pub fn pointers(&self) -> &[Vec<String>] {
        &self.pointers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn segs(p: &str) -> Vec<String> {
        parse_pointer(p).unwrap()
    }

    fn rule(name: &str) -> IgnoreRule {
        IgnoreRule {
            name: name.into(),
            pointers: vec!["/spec/replicas".into()],
            ..IgnoreRule::default()
        }
    }

    #[test]
    fn pointers_parse_and_unescape() {
        assert_eq!(segs(""), Vec::<String>::new());
        assert_eq!(
            segs("/metadata/annotations/team.shop~1incident"),
            ["metadata", "annotations", "team.shop/incident"]
        );
        assert_eq!(segs("/a~01"), ["a~1"]);
        assert_eq!(parse_pointer("spec"), None);
    }

    #[test]
    fn wildcard_matching() {
        let p = segs("/spec/template/spec/containers/*/image");
        assert_eq!(
            match_pattern(&p, &segs("/spec/template/spec/containers/3/image")),
            PointerMatch::Covers
        );
        assert_eq!(
            match_pattern(&p, &segs("/spec/template/spec/containers/3/name")),
            PointerMatch::No
        );
        // Covers everything under the field.
        assert_eq!(
            match_pattern(
                &segs("/metadata/annotations"),
                &segs("/metadata/annotations/x")
            ),
            PointerMatch::Covers
        );
        assert_eq!(
            match_pattern(&p, &segs("/spec/template/spec/containers/2")),
            PointerMatch::Below(vec!["image".into()])
        );
    }

    #[test]
    fn prune_inside_values() {
        let mut v = json!({"name": "c", "image": "x", "env": [{"name": "A", "value": "1"}]});
        assert_eq!(prune(&mut v, &segs("/image")), 1);
        assert_eq!(prune(&mut v, &segs("/env/*/value")), 1);
        assert_eq!(prune(&mut v, &segs("/nope")), 0);
        assert_eq!(v, json!({"name": "c", "env": [{"name": "A"}]}));
    }

    #[test]
    fn builtin_paths() {
        for p in [
            "/apiVersion",
            "/status",
            "/status/replicas",
            "/metadata/uid",
            "/metadata/managedFields/0",
            "/metadata/resourceVersion",
            "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration",
        ] {
            assert!(is_builtin_ignored(&segs(p)), "{p}");
        }
        for p in [
            "/spec/apiVersion",
            "/spec/status",
            "/metadata/labels/uid",
            "/metadata/annotations/x",
            "/metadata/name",
        ] {
            assert!(!is_builtin_ignored(&segs(p)), "{p}");
        }
    }

    #[test]
    fn selection_by_kind_name_and_namespace() {
        let mut r = rule("hpa-replicas");
        r.kinds = vec!["Deployment".into()];
        r.name_glob = Some("store*".into());
        r.namespace_glob = Some("shop-*".into());
        let c = compile(std::slice::from_ref(&r));
        assert_eq!(c.len(), 1);
        assert!(c[0].selects("Deployment", "storefront", Some("shop-drifted")));
        assert!(c[0].selects("deployment", "storefront", Some("shop-x")));
        assert!(!c[0].selects("StatefulSet", "storefront", Some("shop-x")));
        assert!(!c[0].selects("Deployment", "checkout", Some("shop-x")));
        assert!(!c[0].selects("Deployment", "storefront", Some("shop")));
        assert!(!c[0].selects("Deployment", "storefront", None));
        let any = compile(&[rule("any")]);
        assert!(any[0].selects("ClusterRole", "x", None));
    }

    #[test]
    fn invalid_rules_are_rejected() {
        let mut bad_glob = rule("g");
        bad_glob.name_glob = Some("a[".into());
        assert!(matches!(
            validate_rule(&bad_glob),
            Err(IgnoreRuleError::Glob { .. })
        ));
        let mut bad_ptr = rule("p");
        bad_ptr.pointers = vec!["spec/replicas".into()];
        assert!(matches!(
            validate_rule(&bad_ptr),
            Err(IgnoreRuleError::Pointer { .. })
        ));
        let empty = IgnoreRule {
            name: "e".into(),
            ..IgnoreRule::default()
        };
        assert_eq!(
            validate_rule(&empty),
            Err(IgnoreRuleError::Empty { rule: "e".into() })
        );
        assert!(compile(&[bad_glob, bad_ptr, empty]).is_empty());
        assert_eq!(validate_rule(&rule("ok")), Ok(()));
    }

    #[test]
    fn manager_filter() {
        let mut r = rule("m");
        r.managers = vec!["kube-controller-manager".into()];
        let c = &compile(&[r])[0];
        assert!(c.owner_matches(Some("kube-controller-manager")));
        assert!(!c.owner_matches(Some("kubectl")));
        assert!(!c.owner_matches(None));
    }
}
