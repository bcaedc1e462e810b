//! Helpers shared by the integration tests: paths in the repository, reading and writing files,
//! running the binary, model constructors, and Git repositories made in temp dirs.
//!
//! Included with `#[path = "support/common.rs"] mod common;`; each test binary uses only some of
//! these.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use driftwarden::model::{ChangeOp, Drift, DriftKind, FieldChange, ResourceId, fingerprint};
use driftwarden::policy::{PolicyConfig, PolicyDir};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file's text; panics naming the file.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON file, relative to the repository root (or an absolute path).
pub fn read_json(path: impl AsRef<Path>) -> Value {
    let path = root().join(path);
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes `dir/rel`, creating its directories; returns the path.
pub fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// The binary, run from the repository root, without a log filter and without colour.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_driftwarden"));
    c.current_dir(root());
    c.env_remove("DRIFTWARDEN_LOG");
    c.env("NO_COLOR", "1");
    c
}

/// Runs `cmd`; any panic is a defect, whatever the input.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the binary runs");
    assert!(
        !stderr(&out).contains("panicked"),
        "panic running {cmd:?}\nstderr:\n{}",
        stderr(&out)
    );
    out
}

/// Runs `cmd`; returns (exit code, stdout, stderr).
pub fn outcome(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (code(&out), stdout(&out), stderr(&out))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn stdout(o: &Output) -> String {
    text(&o.stdout)
}

pub fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

/// The exit code, -1 when killed by a signal.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// A field change, neither masked, attributed nor classified.
pub fn field_change(path: &str, op: ChangeOp, desired: Value, live: Value) -> FieldChange {
    FieldChange {
        path: path.into(),
        op,
        desired,
        live,
        masked: false,
        attribution: None,
        class: None,
    }
}

/// A field change whose op follows from the values: no desired value is extra live, no live
/// value is missing live.
pub fn change(path: &str, desired: Value, live: Value) -> FieldChange {
    let op = if desired.is_null() {
        ChangeOp::ExtraLive
    } else if live.is_null() {
        ChangeOp::MissingLive
    } else {
        ChangeOp::Changed
    };
    field_change(path, op, desired, live)
}

/// A drift of target `target`, without provenance, verdict, action or objects.
pub fn target_drift(
    target: &str,
    id: ResourceId,
    kind: DriftKind,
    changes: Vec<FieldChange>,
) -> Drift {
    Drift {
        fingerprint: fingerprint(target, &id),
        target: target.into(),
        resource: id.into(),
        kind,
        changes,
        provenance: None,
        verdict: None,
        action: None,
        desired_object: None,
        live_object: None,
    }
}

/// A drift of target `demo`, without provenance, verdict, action or objects.
pub fn drift(id: ResourceId, kind: DriftKind, changes: Vec<FieldChange>) -> Drift {
    target_drift("demo", id, kind, changes)
}

pub fn kubernetes_id(
    cluster: &str,
    group: &str,
    version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> ResourceId {
    ResourceId::Kubernetes {
        cluster: cluster.into(),
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        namespace: namespace.map(str::to_string),
        name: name.into(),
    }
}

/// A `v1` object of cluster `demo`.
pub fn k8s_id(group: &str, kind: &str, ns: Option<&str>, name: &str) -> ResourceId {
    kubernetes_id("demo", group, "v1", kind, ns, name)
}

/// The default policy library (`policies/`).
pub fn policy_library() -> PolicyConfig {
    PolicyConfig {
        dirs: vec![PolicyDir::new(root().join("policies"))],
        data_files: vec![],
        strict_builtins: false,
    }
}

// ---------------------------------------------------------------------------------------------
// Git
// ---------------------------------------------------------------------------------------------

/// Writes `files` in the work tree of `repo` and commits them on HEAD as `Test`; returns the
/// commit.
pub fn commit_files(repo: &git2::Repository, files: &[(&str, &str)], message: &str) -> git2::Oid {
    let workdir = repo.workdir().unwrap().to_path_buf();
    let mut index = repo.index().unwrap();
    for (path, text) in files {
        write(&workdir, path, text);
        index.add_path(Path::new(path)).unwrap();
    }
    index.write().unwrap();
    let tree_id = index.write_tree().unwrap();
    let tree = repo.find_tree(tree_id).unwrap();
    let sig = git2::Signature::now("Test", "test@example.com").unwrap();
    let parents: Vec<git2::Commit> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let parent_refs: Vec<&git2::Commit> = parents.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parent_refs)
        .unwrap()
}

/// A tree of `repo` holding `dir`'s files.
pub fn tree_of(repo: &git2::Repository, dir: &Path) -> git2::Oid {
    let mut tb = repo.treebuilder(None).unwrap();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if p.is_dir() {
            tb.insert(&name, tree_of(repo, &p), 0o040000).unwrap();
        } else {
            let blob = repo.blob(&std::fs::read(&p).unwrap()).unwrap();
            tb.insert(&name, blob, 0o100644).unwrap();
        }
    }
    tb.write().unwrap()
}

/// A bare repository whose `main` (and HEAD) holds `dir`'s files.
pub fn bare_repo_of(dir: &Path, at: &Path) -> git2::Repository {
    let repo = git2::Repository::init_bare(at).unwrap();
    let tree = tree_of(&repo, dir);
    {
        let tree = repo.find_tree(tree).unwrap();
        let sig = git2::Signature::now("Platform Team", "platform@example.com").unwrap();
        repo.commit(
            Some("refs/heads/main"),
            &sig,
            &sig,
            "gitops: bookstore",
            &tree,
            &[],
        )
        .unwrap();
    }
    repo.set_head("refs/heads/main").unwrap();
    repo
}

/// Every blob and commit message (with `authors`, every commit's author too) reachable from any
/// ref of a repository.
pub fn git_text(repo: &git2::Repository, authors: bool) -> String {
    let mut all = String::new();
    for r in repo.references().unwrap() {
        let Ok(c) = r.unwrap().peel_to_commit() else {
            continue;
        };
        let mut walk = repo.revwalk().unwrap();
        walk.push(c.id()).unwrap();
        for id in walk {
            let c = repo.find_commit(id.unwrap()).unwrap();
            all.push_str(c.message().unwrap_or(""));
            if authors {
                all.push_str(&c.author().to_string());
            }
            c.tree()
                .unwrap()
                .walk(git2::TreeWalkMode::PreOrder, |_, e| {
                    if let Ok(b) = repo.find_blob(e.id()) {
                        all.push_str(&String::from_utf8_lossy(b.content()));
                    }
                    git2::TreeWalkResult::Ok
                })
                .unwrap();
        }
    }
    all
}

/// The status code and headers of an HTTP/1.1 response head (its status line first, lines ended
/// by CRLF or LF, no blank line): header names lowercased, values trimmed, in the order sent.
pub fn response_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
    let headers = lines
        .map(|l| {
            let (k, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("not a header line: {l:?}"));
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (status, headers)
}
