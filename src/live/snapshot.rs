//! Reads live objects from a directory of `kubectl get -o yaml|json` output: single objects,
//! `kind: List` and the API's typed lists (`ConfigMapList`, whose items carry no `kind`).
//! This is the embedded default for the offline demo and for many tests.
//!
//! Objects are handed over one at a time ([`for_each_snapshot_object`]), so a caller that
//! compares each as it arrives holds one object at a time, not the snapshot. JSON files are
//! read by [`super::json`] (no positions, items streamed); YAML files by the positioned reader,
//! one file at a time.

use std::path::{Path, PathBuf};

use crate::desired::manifests::{self, ManifestError, RawObject};

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("live snapshot directory {0} does not exist")]
    NotFound(String),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The cluster could not be read at all (no client, or discovery failed).
    #[error("cluster read failed")]
    Kube(#[source] Box<super::kube::KubeError>),
}

impl LiveError {
    /// True when the user's input is at fault (exit 3).
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, LiveError::Io { .. } | LiveError::Kube(_))
    }
}

/// Loads every object under `dir` (recursively, `.yaml`, `.yml` and `.json` files, sorted).
/// A single file is accepted too.
pub fn load_snapshot(dir: &Path) -> Result<Vec<RawObject>, LiveError> {
    let mut out = Vec::new();
    for_each_snapshot_object(dir, &mut |o| out.push(o))?;
    Ok(out)
}

/// [`load_snapshot`] one object at a time, in the same order: files sorted by path, objects in
/// file order. On an error, the objects already handed over are the caller's to drop.
pub fn for_each_snapshot_object(
    dir: &Path,
    sink: &mut dyn FnMut(RawObject),
) -> Result<(), LiveError> {
    if dir.is_file() {
        return read_one(dir, dir.parent().unwrap_or(Path::new(".")), sink);
    }
    if !dir.is_dir() {
        return Err(LiveError::NotFound(dir.display().to_string()));
    }
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    for f in files {
        read_one(&f, dir, sink)?;
    }
    Ok(())
}

fn read_one(path: &Path, root: &Path, sink: &mut dyn FnMut(RawObject)) -> Result<(), LiveError> {
    let bytes = std::fs::read(path).map_err(|e| LiveError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let shown = path
        .strip_prefix(root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| path.display().to_string());
    let shown = if shown.is_empty() {
        path.display().to_string()
    } else {
        shown
    };
    if shown.ends_with(".json") {
        super::json::for_each_object(&shown, &bytes, sink)?;
    } else {
        for o in manifests::parse_file(&shown, &bytes, true)? {
            sink(o);
        }
    }
    Ok(())
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LiveError> {
    let entries = std::fs::read_dir(dir).map_err(|e| LiveError::Io {
        path: dir.display().to_string(),
        source: e,
    })?;
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if manifests::is_manifest_name(name) {
            out.push(p);
        }
    }
    Ok(())
}
