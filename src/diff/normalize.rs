//! Value normalization: when two JSON values that look different mean the same thing.
//!
//! The API server rewrites what it stores: typed resource quantities are canonicalized (`0.5` →
//! `"500m"`, `1.5Gi` → `"1536Mi"`), Secret `stringData` is merged into `data` as base64, empty
//! fields are dropped, and YAML authors write `8080` where JSON has `"8080"`. Comparing raw
//! values would report all of that as drift, so every leaf comparison goes through here.
//!
//! What is deliberately *not* normalized: int-or-string fields of custom resources. The server
//! stores those verbatim (`fixtures/golden/README.md`, "Quantities"), so `0.5Gi` and `512Mi` in a CR are
//! different values and a change between them is real drift. Quantity rules apply only to the
//! built-in API groups, where the server itself canonicalizes.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

/// A Kubernetes resource quantity in canonical form: `(-1)^negative * mantissa * 10^exp10`, with
/// no trailing zeros in `mantissa` (and zero stored as `0 * 10^0`), so derived equality is exact
/// numeric equality. Binary suffixes are multiplied out into the mantissa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
}

impl Quantity {
    /// Parses the Kubernetes quantity grammar: a signed decimal number followed by a binary SI
    /// suffix (`Ki`..`Ei`), a decimal SI suffix (`n u m k M G T P E`) or a decimal exponent
    /// (`e3`, `E-2`). Returns `None` for anything else, or when the exact value does not fit.
    pub fn parse(s: &str) -> Option<Quantity> {
        let (negative, rest) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, suffix) = rest.split_at(end);
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        if frac_part.contains('.') || (int_part.is_empty() && frac_part.is_empty()) {
            return None;
        }
        let mut mantissa: u128 = 0;
        for c in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .checked_mul(10)?
                .checked_add(u128::from(c - b'0'))?;
        }
        let mut exp10 = -i32::try_from(frac_part.len()).ok()?;
        let mut exp2: u32 = 0;
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            other => {
                let digits = other.strip_prefix(['e', 'E'])?;
                let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let e: i32 = digits.parse().ok()?;
                if e.abs() > 1000 {
                    return None;
                }
                exp10 += e;
            }
        }
        if exp2 > 0 {
            mantissa = mantissa.checked_mul(1u128 << exp2)?;
        }
        Some(Quantity::canonical(negative, mantissa, exp10))
    }

    /// Parses a JSON value as a quantity: strings by the grammar, numbers by their decimal text.
    pub fn from_value(v: &Value) -> Option<Quantity> {
        match v {
            Value::String(s) => Quantity::parse(s),
            Value::Number(n) => Quantity::parse(&n.to_string()),
            _ => None,
        }
    }

    fn canonical(negative: bool, mut mantissa: u128, mut exp10: i32) -> Quantity {
        if mantissa == 0 {
            return Quantity {
                negative: false,
                mantissa: 0,
                exp10: 0,
            };
        }
        while mantissa % 10 == 0 {
            mantissa /= 10;
            exp10 += 1;
        }
        Quantity {
            negative,
            mantissa,
            exp10,
        }
    }
}

/// Compares two values as quantities. `None` when either side does not parse (the caller then
/// falls back to plain scalar comparison).
pub fn quantities_equal(a: &Value, b: &Value) -> Option<bool> {
    Some(Quantity::from_value(a)? == Quantity::from_value(b)?)
}

/// True for null, `""`, `[]`, `{}` (and for an absent value).
pub fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    }
}

/// Like [`is_empty`], but a map whose every value is itself effectively empty counts as empty
/// too (`resources: {limits: {}}` declares nothing).
pub fn is_effectively_empty(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Object(o)) => o.values().all(|c| is_effectively_empty(Some(c))),
        other => is_empty(other),
    }
}

/// Scalar equality with the int/string rule: a number equals a string holding the same number
/// (`8080` = `"8080"`, `2` = `2.0`). Everything else compares verbatim.
pub fn scalar_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            parse_number(s).is_some_and(|m| numbers_equal(n, &m))
        }
        _ => a == b,
    }
}

fn numbers_equal(a: &Number, b: &Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Parses a string that is exactly a decimal number (no `inf`, `NaN` or surrounding spaces).
fn parse_number(s: &str) -> Option<Number> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
        || !s.bytes().any(|b| b.is_ascii_digit())
    {
        return None;
    }
    if let Ok(i) = s.parse::<i64>() {
        return Some(Number::from(i));
    }
    if let Ok(u) = s.parse::<u64>() {
        return Some(Number::from(u));
    }
    s.parse::<f64>().ok().and_then(Number::from_f64)
}

/// Secret `data` values: equal when the strings are equal, or when both decode as base64 to the
/// same bytes (line-wrapped or differently padded encodings of one value are one value).
pub fn secret_data_equal(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (a.as_str(), b.as_str()) {
        (Some(x), Some(y)) => match (decode_b64(x), decode_b64(y)) {
            (Some(p), Some(q)) => p == q,
            _ => false,
        },
        _ => false,
    }
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .ok()
}

/// Does what the API server does to a Secret on write: `stringData` entries are base64-encoded
/// into `data` (overriding a `data` entry of the same key) and `stringData` disappears. A
/// `stringData` that is not a map is left in place, so the comparison still reports it.
pub fn secret_string_data_into_data(obj: &Value) -> Value {
    let mut out = obj.clone();
    let Some(map) = out.as_object_mut() else {
        return out;
    };
    match map.remove("stringData") {
        Some(Value::Object(string_data)) => {
            let data = map
                .entry("data")
                .or_insert_with(|| Value::Object(Map::new()));
            if !data.is_object() {
                *data = Value::Object(Map::new());
            }
            if let Value::Object(data) = data {
                for (k, v) in string_data {
                    let text = match v {
                        Value::Null => continue,
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    data.insert(
                        k,
                        Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
                    );
                }
            }
        }
        Some(Value::Null) | None => {}
        Some(other) => {
            map.insert("stringData".to_string(), other);
        }
    }
    out
}

/// The API groups served by kube-apiserver itself, whose typed fields (quantities) the server
/// canonicalizes. `apiextensions.k8s.io` is left out on purpose: a CRD's schema holds arbitrary
/// `default:` values verbatim.
pub fn is_builtin_group(group: &str) -> bool {
    matches!(
        group,
        "" | "apps"
            | "batch"
            | "autoscaling"
            | "policy"
            | "networking.k8s.io"
            | "rbac.authorization.k8s.io"
            | "storage.k8s.io"
            | "node.k8s.io"
            | "scheduling.k8s.io"
            | "coordination.k8s.io"
            | "discovery.k8s.io"
            | "admissionregistration.k8s.io"
            | "certificates.k8s.io"
            | "events.k8s.io"
            | "flowcontrol.apiserver.k8s.io"
            | "resource.k8s.io"
            | "apiregistration.k8s.io"
            | "storagemigration.k8s.io"
            | "internal.apiserver.k8s.io"
    )
}

/// Whether the leaf `key` under `parent` is a typed `resource.Quantity` in a built-in kind:
/// resource lists (`requests`, `limits`, pod `overhead`, ResourceQuota `hard`/`used`, node and PV
/// `capacity`/`allocatable`, LimitRange `max`/`min`/`default`/`defaultRequest`/
/// `maxLimitRequestRatio`), emptyDir `sizeLimit`, `resourceFieldRef.divisor`, and HPA metric
/// targets (`averageValue`, `target.value`).
pub fn is_quantity_field(parent: Option<&str>, key: &str) -> bool {
    if matches!(key, "sizeLimit" | "divisor" | "averageValue") {
        return true;
    }
    match parent {
        Some("target") => key == "value",
        Some(
            "requests"
            | "limits"
            | "overhead"
            | "hard"
            | "used"
            | "capacity"
            | "allocatable"
            | "max"
            | "min"
            | "default"
            | "defaultRequest"
            | "maxLimitRequestRatio",
        ) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    /// The README's "Quantities" table: what the server canonicalized, and what it kept.
    #[test]
    fn golden_quantity_table() {
        let canonicalized = [
            ("0.5", "500m"),
            ("0.25", "250m"),
            ("2.5", "2500m"),
            ("0.1", "100m"),
            ("0.001", "1m"),
            ("1000m", "1"),
            ("2.0", "2"),
            ("1.5Gi", "1536Mi"),
            ("1024Mi", "1Gi"),
            ("0.5Gi", "512Mi"),
            ("2048Mi", "2Gi"),
            ("1e9", "1G"),
            ("129e6", "129M"),
        ];
        for (written, stored) in canonicalized {
            assert_eq!(q(written), q(stored), "{written} = {stored}");
        }
        for kept in ["1Gi", "512Mi", "2000Mi", "128974848"] {
            assert_eq!(q(kept), q(kept));
        }
        assert_ne!(q("2000Mi"), q("2Gi"));
        assert_ne!(q("1G"), q("1Gi"));
        assert_ne!(q("500m"), q("5"));
    }

    #[test]
    fn quantities_from_json_numbers() {
        // YAML `cpu: 0.5` and `memory: 1e9` arrive as JSON numbers.
        assert_eq!(quantities_equal(&json!(0.5), &json!("500m")), Some(true));
        assert_eq!(quantities_equal(&json!(1e9), &json!("1G")), Some(true));
        assert_eq!(quantities_equal(&json!(1), &json!("1000m")), Some(true));
        assert_eq!(quantities_equal(&json!(2.0), &json!("2")), Some(true));
        assert_eq!(quantities_equal(&json!(3), &json!("2")), Some(false));
        assert_eq!(quantities_equal(&json!("lots"), &json!("2")), None);
        assert_eq!(quantities_equal(&json!(true), &json!("2")), None);
    }

    #[test]
    fn quantity_grammar_edges() {
        assert_eq!(q("0"), q("0m"));
        assert_eq!(q("0"), q("0Gi"));
        assert_eq!(q("-1"), q("-1000m"));
        assert_ne!(q("-1"), q("1"));
        assert_eq!(q("+1"), q("1"));
        assert_eq!(q(".5"), q("500m"));
        assert_eq!(q("1E3"), q("1k"));
        assert_eq!(q("1e-3"), q("1m"));
        assert_eq!(q("1E"), q("1000P"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1Ei"), q("1152921504606846976"));
        assert_eq!(q("100n"), q("0.1u"));
        for bad in [
            "", "-", ".", "1.2.3", "1Gb", "Gi", "1 Gi", "e3", "1e", "1e+", "abc",
        ] {
            assert!(Quantity::parse(bad).is_none(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn int_or_string_scalars() {
        assert!(scalar_equal(&json!(8080), &json!("8080")));
        assert!(scalar_equal(&json!("8080"), &json!(8080)));
        assert!(scalar_equal(&json!(2), &json!(2.0)));
        assert!(!scalar_equal(&json!(8080), &json!("http")));
        assert!(!scalar_equal(&json!(1), &json!("1.5")));
        assert!(!scalar_equal(&json!("inf"), &json!(f64::MAX)));
        assert!(!scalar_equal(&json!(true), &json!("true")));
        assert!(scalar_equal(&json!("a"), &json!("a")));
    }

    #[test]
    fn empties() {
        for v in [json!(null), json!(""), json!([]), json!({})] {
            assert!(is_empty(Some(&v)), "{v}");
        }
        assert!(is_empty(None));
        for v in [
            json!(0),
            json!(false),
            json!(" "),
            json!([""]),
            json!({"a": null}),
        ] {
            assert!(!is_empty(Some(&v)), "{v}");
        }
        assert!(is_effectively_empty(Some(
            &json!({"a": null, "b": {"c": []}})
        )));
        assert!(!is_effectively_empty(Some(&json!({"a": {"b": 0}}))));
    }

    #[test]
    fn secret_string_data_merges_as_base64() {
        let desired = json!({
            "kind": "Secret",
            "data": {"A": "YQ==", "B": "b2xk"},
            "stringData": {"B": "new", "C": "shop"}
        });
        let n = secret_string_data_into_data(&desired);
        assert_eq!(
            n["data"],
            json!({"A": "YQ==", "B": "bmV3", "C": "c2hvcA=="})
        );
        assert!(n.get("stringData").is_none());
        let only_string = secret_string_data_into_data(&json!({"stringData": {"X": "y"}}));
        assert_eq!(only_string, json!({"data": {"X": "eQ=="}}));
    }

    #[test]
    fn secret_values_compare_decoded() {
        assert!(secret_data_equal(&json!("c2hvcA=="), &json!("c2hvcA==")));
        assert!(secret_data_equal(&json!("c2hv\ncA=="), &json!("c2hvcA==")));
        assert!(!secret_data_equal(&json!("c2hvcA=="), &json!("c2hvcQ==")));
        assert!(!secret_data_equal(
            &json!("not base64!"),
            &json!("c2hvcA==")
        ));
    }

    #[test]
    fn quantity_fields_and_groups() {
        assert!(is_quantity_field(Some("requests"), "cpu"));
        assert!(is_quantity_field(Some("limits"), "memory"));
        assert!(is_quantity_field(Some("requests"), "storage"));
        assert!(is_quantity_field(Some("hard"), "pods"));
        assert!(is_quantity_field(Some("emptyDir"), "sizeLimit"));
        assert!(is_quantity_field(Some("target"), "value"));
        assert!(!is_quantity_field(Some("policies"), "value"));
        assert!(!is_quantity_field(Some("spec"), "replicas"));
        assert!(is_builtin_group(""));
        assert!(is_builtin_group("apps"));
        assert!(!is_builtin_group("apiextensions.k8s.io"));
        assert!(!is_builtin_group("platform.driftwarden.test"));
        assert!(!is_builtin_group("gateway.networking.k8s.io"));
    }
}
