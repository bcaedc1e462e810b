//! `kubectl get -o yaml|json` snapshot files (`live::snapshot::load_snapshot`, the reader of the
//! offline live source), from a real file: the first byte picks `.yaml` or `.json`, the rest is
//! written to a snapshot directory and read back.
//!
//! Laws: it never panics; every object it returns has a `kind`, an `apiVersion` and a
//! `metadata.name` (items of typed lists such as `ConfigMapList` get theirs from the list),
//! with the file's name and, from a YAML file, a line inside it (JSON files are read without
//! positions); a refusal is invalid input (exit 3), never an
//! I/O failure, and names the file and a line inside it.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use driftwarden::live::snapshot::{LiveError, load_snapshot};
use driftwarden_fuzz::line_count;
use libfuzzer_sys::fuzz_target;

/// One directory for the whole run; each input replaces the file in it.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d =
            std::env::temp_dir().join(format!("driftwarden-fuzz-snapshot-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("a temporary directory for the snapshot");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let (name, other) = if mode & 1 == 0 {
        ("live.yaml", "live.json")
    } else {
        ("live.json", "live.yaml")
    };
    let _ = std::fs::remove_file(dir().join(other));
    std::fs::write(dir().join(name), bytes).expect("writing the snapshot file");
    let lines = line_count(&String::from_utf8_lossy(bytes));
    match load_snapshot(dir()) {
        Ok(objects) => {
            for o in objects {
                for at in ["/kind", "/apiVersion", "/metadata/name"] {
                    let v = o.value.pointer(at).and_then(|v| v.as_str());
                    assert!(v.is_some_and(|s| !s.is_empty()), "no {at}: {}", o.value);
                }
                assert_eq!(o.file, name);
                // JSON files are read without positions (line 0); YAML objects have theirs.
                let json = name.ends_with(".json");
                assert!(
                    (json || o.line >= 1) && o.line <= lines + 1,
                    "object at line {} of {lines}",
                    o.line
                );
            }
        }
        Err(e) => {
            assert!(
                e.is_invalid_input(),
                "bad input reported as a runtime failure: {e}"
            );
            if let LiveError::Manifest(m) = &e {
                assert_eq!(m.file, name);
                assert!(
                    m.line >= 1 && m.line <= lines + 1,
                    "error at line {} of {lines}: {m}",
                    m.line
                );
            }
            assert!(
                e.to_string().contains(name),
                "the error does not name the file: {e}"
            );
        }
    }
});
