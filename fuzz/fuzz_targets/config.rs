//! The config loader (`config::parse`: YAML, then the two-stage walk that collects every
//! problem with its position), any text.
//!
//! Laws: it never panics; a refusal names the file and carries at least one problem, each with
//! a position inside the text (line 0 is reserved for "cannot read the file", which `parse`
//! never says).
#![no_main]

use std::path::Path;

use driftwarden::config;
use driftwarden_fuzz::line_count;
use libfuzzer_sys::fuzz_target;

const NAME: &str = "fuzz/driftwarden.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = line_count(text);
    match config::parse(text, NAME, Path::new("/fuzz")) {
        Ok(cfg) => assert!(
            !cfg.targets.is_empty(),
            "a config without targets was accepted"
        ),
        Err(e) => {
            assert_eq!(e.file, NAME);
            assert!(!e.issues.is_empty(), "a refusal without a problem");
            for i in &e.issues {
                assert!(
                    i.line >= 1 && i.line <= lines + 1,
                    "problem at line {} of a {lines}-line text: {}",
                    i.line,
                    i.message
                );
            }
            assert!(e.to_string().contains(NAME), "{e}");
        }
    }
});
