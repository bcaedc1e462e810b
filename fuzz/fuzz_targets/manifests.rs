//! Manifest loading (`desired::manifests::parse_file`): multi-document YAML, JSON, `kind: List`
//! and typed lists, as Git holds them. The first byte picks the file name (`.yaml` or `.json`)
//! and whether list items may omit their kind (live reading); the rest is the file.
//!
//! Laws: it never panics; every object it returns has a `kind`, an `apiVersion` and a
//! `metadata.name` (what the diff keys objects by), and a line inside the file; a refusal
//! names the file and a line inside it.
#![no_main]

use driftwarden::desired::manifests::{ManifestError, RawObject, parse_file};
use driftwarden_fuzz::line_count;
use libfuzzer_sys::fuzz_target;

/// The laws.
fn check(file: &str, bytes: &[u8], result: &Result<Vec<RawObject>, ManifestError>) {
    let lines = line_count(&String::from_utf8_lossy(bytes));
    match result {
        Ok(objects) => {
            for o in objects {
                for (what, at) in [
                    ("kind", "/kind"),
                    ("apiVersion", "/apiVersion"),
                    ("metadata.name", "/metadata/name"),
                ] {
                    let v = o.value.pointer(at).and_then(|v| v.as_str());
                    assert!(
                        v.is_some_and(|s| !s.is_empty()),
                        "an object without {what} was accepted: {}",
                        o.value
                    );
                }
                assert_eq!(o.file, file);
                assert!(
                    o.line >= 1 && o.line <= lines + 1,
                    "object at line {} of {lines}",
                    o.line
                );
            }
        }
        Err(e) => {
            assert_eq!(e.file, file);
            assert!(
                e.line >= 1 && e.line <= lines + 1,
                "error at line {} of {lines}: {e}",
                e.line
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let file = if mode & 1 == 0 {
        "app.yaml"
    } else {
        "app.json"
    };
    let live = mode & 2 != 0;
    let result = parse_file(file, bytes, live);
    check(file, bytes, &result);
});
