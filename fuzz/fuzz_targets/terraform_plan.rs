//! Terraform plan JSON (`terraform::plan::parse`, `terraform show -json PLANFILE`), any text,
//! then the drifts a plan becomes (`plan_drifts`, `change_drifts`).
//!
//! Laws: it never panics; a refusal names the file; a value the plan marks sensitive
//! (`before_sensitive`, `after_sensitive`) is in no parsed change, no drift and no report JSON.
#![no_main]

use driftwarden::terraform::plan::{self, DriftOptions};
use driftwarden_fuzz::{assert_no_canary, canaries, marked_strings};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const FILE: &str = "plan.json";

/// The sensitive strings of every `resource_changes` and `resource_drift` entry.
fn secrets(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["resource_changes", "resource_drift"] {
        let Some(Value::Array(entries)) = doc.get(key) else {
            continue;
        };
        for e in entries {
            let Some(change) = e.get("change") else {
                continue;
            };
            for (value, marks) in [("before", "before_sensitive"), ("after", "after_sensitive")] {
                if let (Some(v), Some(m)) = (change.get(value), change.get(marks)) {
                    marked_strings(v, m, &mut out);
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match plan::parse(text, FILE) {
        Ok(p) => {
            let doc: Value = serde_json::from_str(text).expect("a parsed plan is JSON");
            let canaries = canaries(secrets(&doc), text);
            assert_no_canary("the parsed plan", &format!("{p:?}"), &canaries);
            for relevant_only in [false, true] {
                let opts = DriftOptions { relevant_only };
                let drifts = plan::plan_drifts(&p, "tf", "default", &opts);
                let json = serde_json::to_string(&drifts).expect("drifts serialize");
                assert_no_canary("plan_drifts", &json, &canaries);
                assert_no_canary("plan_drifts", &format!("{drifts:?}"), &canaries);
            }
            let changes = plan::change_drifts(&p, "tf", "default");
            let json = serde_json::to_string(&changes).expect("drifts serialize");
            assert_no_canary("change_drifts", &json, &canaries);
            assert_no_canary("change_drifts", &format!("{changes:?}"), &canaries);
        }
        Err(e) => assert!(
            e.to_string().contains(FILE),
            "the error does not name the file: {e}"
        ),
    }
});
