//! Desired state: the objects Git says should exist.
//!
//! A target's desired source is a Git repository read at a ref ([`git`]) or a plain directory;
//! files pass the include/exclude globs, then are parsed ([`manifests`]) or, when the target asks,
//! rendered first by `helm template` / `kustomize build` ([`render`]). Reading only: nothing here
//! writes to the repository.

pub mod git;
pub mod manifests;
pub mod render;

use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::config::{DesiredLocation, DesiredSource};
pub use manifests::{ManifestError, RawObject};

/// Why desired state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error(transparent)]
    Git(#[from] git::GitError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("desired directory {0} does not exist")]
    DirNotFound(String),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid glob `{glob}`: {message}")]
    Glob { glob: String, message: String },
    #[error(transparent)]
    Render(#[from] render::RenderError),
    #[error("no manifests found under {0} (check `path` and `include`)")]
    Empty(String),
}

impl DesiredError {
    /// True when the user's input is at fault (exit 3), not the environment.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            DesiredError::Git(g) => g.is_invalid_input(),
            DesiredError::Manifest(_)
            | DesiredError::DirNotFound(_)
            | DesiredError::Glob { .. }
            | DesiredError::Empty(_) => true,
            DesiredError::Render(r) => r.is_invalid_input(),
            DesiredError::Io { .. } => false,
        }
    }
}

/// What one desired source holds.
#[derive(Debug)]
pub struct DesiredSet {
    pub objects: Vec<RawObject>,
    /// Where it came from (repository or directory), for provenance.
    pub source: String,
    /// Commit id, for Git sources.
    pub commit: Option<String>,
}

fn globset(globs: &[String]) -> Result<GlobSet, DesiredError> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).map_err(|e| DesiredError::Glob {
            glob: g.clone(),
            message: e.to_string(),
        })?);
    }
    b.build().map_err(|e| DesiredError::Glob {
        glob: globs.join(","),
        message: e.to_string(),
    })
}

/// Loads every desired object of a source. Any unreadable or invalid file fails the whole load:
/// a partial desired set must never drive a correction or a deletion.
pub fn load(src: &DesiredSource, cache_dir: &Path) -> Result<DesiredSet, DesiredError> {
    let include = globset(&src.include)?;
    let exclude = globset(&src.exclude)?;
    let render_mode = src.render.is_some();
    let keep = |rel: &str| -> bool {
        if exclude.is_match(rel) {
            return false;
        }
        // Renderers need every file of the chart or overlay, not only manifests.
        render_mode || include.is_match(rel)
    };
    let (files, source, commit) = match &src.location {
        DesiredLocation::Git(g) => {
            // A renderer may reach outside the target's directory (`resources: [../../base]`),
            // as Argo CD's checkout allows: it gets the whole commit.
            let t = if render_mode {
                git::read_tree_with_context(g, &src.path, cache_dir, &keep)?
            } else {
                git::read_tree(g, &src.path, cache_dir, &keep)?
            };
            (t.files, git::redact_url(&g.repo), Some(t.commit))
        }
        DesiredLocation::Dir(d) => {
            let root = if src.path.is_empty() {
                d.clone()
            } else {
                d.join(&src.path)
            };
            if !root.is_dir() {
                return Err(DesiredError::DirNotFound(root.display().to_string()));
            }
            let mut files = Vec::new();
            read_dir_files(&root, &root, &src.path, &keep, &mut files)?;
            if render_mode && !src.path.is_empty() {
                // The rest of the directory, for what the renderer reaches outside the target.
                let inside = format!("{}/", src.path);
                let outside = |rel: &str| !rel.starts_with(&inside);
                read_dir_files(d, d, "", &outside, &mut files)?;
            }
            files.sort_by(|a, b| a.0.cmp(&b.0));
            (files, d.display().to_string(), None)
        }
    };
    let objects = match &src.render {
        Some(r) => render::render(r, &src.path, &files)?,
        None => {
            let mut objects = Vec::new();
            for (path, bytes) in &files {
                objects.extend(manifests::parse_file(path, bytes, false)?);
            }
            objects
        }
    };
    if objects.is_empty() && files.is_empty() {
        return Err(DesiredError::Empty(if src.path.is_empty() {
            source
        } else {
            format!("{source}/{}", src.path)
        }));
    }
    Ok(DesiredSet {
        objects,
        source,
        commit,
    })
}

fn read_dir_files(
    root: &Path,
    dir: &Path,
    prefix: &str,
    keep: &dyn Fn(&str) -> bool,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), DesiredError> {
    let io = |p: &Path, e| DesiredError::Io {
        path: p.display().to_string(),
        source: e,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            read_dir_files(root, &p, prefix, keep, out)?;
        } else {
            let rel = p
                .strip_prefix(root)
                .map(|r| r.to_string_lossy().replace('\\', "/"))
                .unwrap_or_else(|_| name.to_string());
            if keep(&rel) {
                let bytes = std::fs::read(&p).map_err(|e| io(&p, e))?;
                let shown = if prefix.is_empty() {
                    rel
                } else {
                    format!("{prefix}/{rel}")
                };
                out.push((shown, bytes));
            }
        }
    }
    Ok(())
}
