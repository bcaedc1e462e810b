//! Desired state: the objects Git says should exist.
//!
//! A target's desired source is a Git repository read at a ref ([`git`]) or a plain directory;
//! files pass the include/exclude globs ([`read`]), then are parsed ([`manifests`]) one file at a
//! time, each object handed to the caller as it is parsed ([`DesiredFiles::parse_each`]; [`load`]
//! collects them) or, when the target asks, rendered first by `helm template` /
//! `kustomize build` ([`render`]). Reading only: nothing here writes to the repository.

pub mod git;
pub mod manifests;
pub mod render;

use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::config::{DesiredLocation, DesiredSource, Render};
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

/// Loads every desired object of a source into memory: [`read`], then
/// [`DesiredFiles::parse_all`].
pub fn load(src: &DesiredSource, cache_dir: &Path) -> Result<DesiredSet, DesiredError> {
    read(src, cache_dir)?.parse_all()
}

/// A source's files, read and not parsed yet: where they come from is known (for provenance)
/// before the first object is. [`DesiredFiles::parse_each`] turns them into objects.
#[derive(Debug)]
pub struct DesiredFiles {
    /// Where they came from (repository or directory), for provenance.
    pub source: String,
    /// Commit id, for Git sources.
    pub commit: Option<String>,
    /// (path as shown to people, contents), in path order.
    files: Vec<(String, Vec<u8>)>,
    render: Option<Render>,
    /// The target's directory inside the source.
    subdir: String,
}

/// Reads the files of a desired source: a Git tree at its ref, or a directory, through the
/// include/exclude globs (every file, for a renderer). Fails on what [`load`] fails on before
/// parsing: Git, a missing directory, an unreadable file, a bad glob.
pub fn read(src: &DesiredSource, cache_dir: &Path) -> Result<DesiredFiles, DesiredError> {
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
    Ok(DesiredFiles {
        source,
        commit,
        files,
        render: src.render.clone(),
        subdir: src.path.clone(),
    })
}

impl DesiredFiles {
    /// Every object of [`DesiredFiles::parse_each`], collected into [`DesiredSet::objects`].
    pub fn parse_all(self) -> Result<DesiredSet, DesiredError> {
        let mut objects = Vec::new();
        let mut set = self.parse_each(&mut |o| objects.push(o))?;
        set.objects = objects;
        Ok(set)
    }

    /// Parses the files one at a time and hands each object to `sink` in file order, each
    /// file's bytes freed once its objects are handed over: the caller keeps what it needs (a
    /// compare keeps each object compact), so the whole set never exists as value trees. A
    /// renderer's output (helm, kustomize) is one stream, parsed whole, then handed over object
    /// by object.
    ///
    /// Any invalid file fails the whole load with the error [`load`] gives (its file and line),
    /// and a source without any file is [`DesiredError::Empty`]: a partial desired set must never
    /// drive a correction or a deletion. The sink may already have received the objects of the
    /// files before the bad one; on an error the caller discards whatever it built from them.
    /// The returned set names the source; its `objects` are empty.
    pub fn parse_each(self, sink: &mut dyn FnMut(RawObject)) -> Result<DesiredSet, DesiredError> {
        let DesiredFiles {
            source,
            commit,
            files,
            render,
            subdir,
        } = self;
        let no_files = files.is_empty();
        let mut handed = 0usize;
        match &render {
            Some(r) => {
                for o in render::render(r, &subdir, &files)? {
                    handed += 1;
                    sink(o);
                }
            }
            None => {
                // By value: each file's bytes are freed as soon as its objects are handed over.
                for (path, bytes) in files {
                    let objects = manifests::parse_file(&path, &bytes, false)?;
                    drop(bytes);
                    for o in objects {
                        handed += 1;
                        sink(o);
                    }
                }
            }
        }
        if handed == 0 && no_files {
            return Err(DesiredError::Empty(if subdir.is_empty() {
                source
            } else {
                format!("{source}/{subdir}")
            }));
        }
        Ok(DesiredSet {
            objects: Vec::new(),
            source,
            commit,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_source(dir: &Path) -> DesiredSource {
        DesiredSource {
            location: DesiredLocation::Dir(dir.to_path_buf()),
            path: "apps".into(),
            include: vec!["**/*.yaml".into()],
            exclude: Vec::new(),
            render: None,
        }
    }

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn cm(name: &str) -> String {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n")
    }

    #[test]
    fn objects_are_handed_over_file_by_file_in_path_order() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "apps/b.yaml", &cm("b"));
        write(
            d.path(),
            "apps/a.yaml",
            &format!("{}---\n{}", cm("a1"), cm("a2")),
        );
        write(d.path(), "apps/notes.txt", "not a manifest");
        let files = read(&dir_source(d.path()), d.path()).unwrap();
        assert_eq!(files.source, d.path().display().to_string());
        let mut seen = Vec::new();
        let set = files
            .parse_each(&mut |o| {
                let name = k8s_name(&o.value);
                seen.push((o.file, o.line, name));
            })
            .unwrap();
        assert!(set.objects.is_empty());
        assert_eq!(set.source, d.path().display().to_string());
        assert_eq!(
            seen,
            [
                ("apps/a.yaml".to_string(), 1, "a1".to_string()),
                ("apps/a.yaml".to_string(), 6, "a2".to_string()),
                ("apps/b.yaml".to_string(), 1, "b".to_string()),
            ]
        );
        // `load` is the same objects, collected.
        let whole = load(&dir_source(d.path()), d.path()).unwrap();
        let names: Vec<String> = whole.objects.iter().map(|o| k8s_name(&o.value)).collect();
        assert_eq!(names, ["a1", "a2", "b"]);
    }

    fn k8s_name(v: &serde_json::Value) -> String {
        crate::k8s::str_at(v, "/metadata/name").to_string()
    }

    #[test]
    fn an_invalid_file_after_valid_ones_fails_the_load_with_its_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "apps/a.yaml", &cm("a"));
        write(d.path(), "apps/b.yaml", &cm("b"));
        write(
            d.path(),
            "apps/c.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n",
        );
        write(d.path(), "apps/d.yaml", &cm("d"));
        let mut handed = 0;
        let e = read(&dir_source(d.path()), d.path())
            .unwrap()
            .parse_each(&mut |_| handed += 1)
            .unwrap_err();
        let DesiredError::Manifest(m) = &e else {
            panic!("expected a manifest error, got {e:?}");
        };
        assert_eq!(m.file, "apps/c.yaml");
        assert!(m.line >= 3, "line {} of {m}", m.line);
        assert!(e.is_invalid_input());
        // The files before it were handed over (the caller discards them); none after it.
        assert_eq!(handed, 2);
        // `load` fails the same way.
        let whole = load(&dir_source(d.path()), d.path()).unwrap_err();
        assert_eq!(whole.to_string(), e.to_string());
    }

    #[test]
    fn a_source_without_manifests_is_empty() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "apps/readme.md", "nothing");
        let e = read(&dir_source(d.path()), d.path())
            .unwrap()
            .parse_each(&mut |_| panic!("no object"))
            .unwrap_err();
        assert!(
            matches!(&e, DesiredError::Empty(p) if p.ends_with("/apps")),
            "{e:?}"
        );
    }
}
