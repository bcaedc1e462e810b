//! The repository stands alone: no tracked file refers to a document outside it. What the code
//! relies on is written in ARCHITECTURE.md or docs/, and what a test needs is copied into
//! fixtures/.

use std::path::{Path, PathBuf};

/// The references that point outside the repository. Built from pieces so that this file does
/// not match itself.
fn forbidden() -> Vec<String> {
    vec![
        ["..", "/shared"].concat(),
        ["DESIGN", ".md"].concat(),
        ["ENGINEERING", ".md"].concat(),
        ["DESIGN", " semantics"].concat(),
        ["DESIGN", ".md promise"].concat(),
    ]
}

/// The files git tracks in this checkout (the index, so a file staged but not yet committed
/// counts too).
fn tracked_files(root: &Path) -> Vec<PathBuf> {
    let repo = git2::Repository::open(root)
        .unwrap_or_else(|e| panic!("{} is not a git checkout: {e}", root.display()));
    let index = repo.index().expect("the repository's index");
    index
        .iter()
        .map(|entry| root.join(String::from_utf8_lossy(&entry.path).as_ref()))
        .collect()
}

#[test]
fn no_tracked_file_refers_to_a_document_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = tracked_files(root);
    assert!(
        files.iter().any(|f| f.ends_with("ARCHITECTURE.md")),
        "the tracked files listed from {} do not include ARCHITECTURE.md",
        root.display()
    );
    let patterns = forbidden();
    let mut found = Vec::new();
    for file in &files {
        // A file deleted in the work tree but still in the index has nothing to scan.
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for (n, line) in text.lines().enumerate() {
            for p in &patterns {
                if line.contains(p.as_str()) {
                    let rel = file.strip_prefix(root).unwrap_or(file);
                    found.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "references to documents outside the repository:\n{}",
        found.join("\n")
    );
}
