//! Reads live objects from a directory of `kubectl get -o yaml|json` output: single objects,
//! `kind: List` and the API's typed lists (`ConfigMapList`, whose items carry no `kind`).
//! This is the embedded default for the offline demo and for many tests.

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
    if dir.is_file() {
        return read_one(dir, dir.parent().unwrap_or(Path::new(".")));
    }
    if !dir.is_dir() {
        return Err(LiveError::NotFound(dir.display().to_string()));
    }
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    let mut out = Vec::new();
    for f in files {
        out.extend(read_one(&f, dir)?);
    }
    Ok(out)
}

fn read_one(path: &Path, root: &Path) -> Result<Vec<RawObject>, LiveError> {
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
    Ok(manifests::parse_file(&shown, &bytes, true)?)
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
