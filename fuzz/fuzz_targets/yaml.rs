//! The positioned YAML loader (`yaml::parse_documents`), any text.
//!
//! Laws: it never panics; every node's position is inside the text; a document's data rendered
//! by `yaml::to_yaml` (the renderer of human diffs, whose block writer adoption edits share)
//! reads back as the same data.
#![no_main]

use driftwarden::yaml::{self, Node, NodeKind};
use driftwarden_fuzz::line_count;
use libfuzzer_sys::fuzz_target;

fn check_positions(n: &Node, lines: usize) {
    assert!(
        n.line >= 1 && n.line <= lines + 1 && n.col >= 1,
        "position {}:{} outside a text of {lines} lines",
        n.line,
        n.col
    );
    match &n.kind {
        NodeKind::Scalar(_) => {}
        NodeKind::Seq(items) => items.iter().for_each(|i| check_positions(i, lines)),
        NodeKind::Map(entries) => entries.iter().for_each(|(k, v)| {
            check_positions(k, lines);
            check_positions(v, lines);
        }),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = line_count(text);
    match yaml::parse_documents(text) {
        Ok(docs) => {
            for d in &docs {
                check_positions(&d.root, lines);
                let rendered = yaml::to_yaml(&d.value);
                let back = yaml::parse_single(&rendered).unwrap_or_else(|e| {
                    panic!("to_yaml wrote YAML that does not parse ({e}):\n{rendered}")
                });
                assert_eq!(back.value, d.value, "to_yaml changed the data:\n{rendered}");
            }
        }
        Err(e) => assert!(
            e.line >= 1 && e.line <= lines + 1,
            "error line {} of {lines}",
            e.line
        ),
    }
});
