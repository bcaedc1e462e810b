//! Pull-request branches with git2, in a bare work repository.
//!
//! Commits are built straight in the object database (blobs, a tree updated from the base
//! commit's tree, a commit with the configured author), never in a checkout: nobody's work tree,
//! index or HEAD is touched. A branch is published with a lease, like `git push
//! --force-with-lease`: the push names the commit it expects the branch to hold, and is refused if
//! anyone moved the branch since it was read. Before that, every commit on the branch that is not
//! on the base must be driftwarden's own (its author email and its `Driftwarden-Fingerprint`
//! trailer); a branch carrying someone else's commit is never rewritten.
//!
//! A work repository either mirrors a remote (GitHub: fetched over HTTPS with a token or over
//! SSH, or `file://` in tests) or is the local forge's own repository.

use std::path::{Path, PathBuf};

use git2::{
    FetchOptions, FetchPrune, FileMode, ObjectType, Oid, PushOptions, RemoteCallbacks, Repository,
    Signature, TreeWalkMode, TreeWalkResult,
};
use sha2::{Digest, Sha256};

use crate::desired::git::{credential_callbacks, redact_url};

/// The trailer that marks a commit as driftwarden's, with the drift's fingerprint.
pub const FINGERPRINT_TRAILER: &str = "Driftwarden-Fingerprint";

/// Failures building or publishing branches.
#[derive(Debug, thiserror::Error)]
pub enum GitOpError {
    #[error("git work repository {path}: {message}")]
    Repo { path: String, message: String },
    #[error("fetching {remote}: {message}")]
    Fetch { remote: String, message: String },
    #[error("pushing {branch} to {remote}: {message}")]
    Push {
        remote: String,
        branch: String,
        message: String,
    },
    #[error(
        "branch `{branch}` moved while driftwarden was updating it (expected {expected}, found {found}); not overwritten"
    )]
    Moved {
        branch: String,
        expected: String,
        found: String,
    },
    #[error("base branch `{0}` does not exist on the remote")]
    NoBase(String),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("environment variable {0} (the Git token) is not set")]
    TokenMissing(String),
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

/// Result alias for this module.
pub type Result<T, E = GitOpError> = std::result::Result<T, E>;

/// Who commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub name: String,
    pub email: String,
}

/// A remote to fetch from and push to, with its credentials.
#[derive(Debug, Clone)]
pub struct Remote {
    /// URL or local path.
    pub url: String,
    /// Environment variable holding an HTTPS token.
    pub token_env: Option<String>,
    /// SSH private key; otherwise the SSH agent.
    pub ssh_key: Option<PathBuf>,
}

/// One file change in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    /// Write these bytes at this path (repository-relative).
    Write { path: String, bytes: Vec<u8> },
    /// Delete this path.
    Delete { path: String },
}

impl FileChange {
    pub fn path(&self) -> &str {
        match self {
            FileChange::Write { path, .. } | FileChange::Delete { path } => path,
        }
    }
}

/// A commit on a branch that driftwarden did not make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    pub id: String,
    pub author: String,
}

/// A bare repository where branches are built.
pub struct WorkRepo {
    repo: Repository,
    path: PathBuf,
    remote: Option<Remote>,
}

impl std::fmt::Debug for WorkRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkRepo")
            .field("path", &self.path)
            .field("remote", &self.remote.as_ref().map(|r| redact_url(&r.url)))
            .finish()
    }
}

fn repo_err(path: &Path, e: impl std::fmt::Display) -> GitOpError {
    GitOpError::Repo {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn open_or_init(path: &Path) -> Result<Repository> {
    match Repository::open_bare(path) {
        Ok(r) => Ok(r),
        Err(_) => {
            std::fs::create_dir_all(path).map_err(|e| repo_err(path, e))?;
            Repository::init_bare(path).map_err(|e| repo_err(path, e))
        }
    }
}

/// Remote-tracking name of a branch in a mirror.
fn tracking(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}

impl WorkRepo {
    /// The mirror of `remote`, kept under `dir` in a directory named by a hash of the URL (no
    /// credential ever lands in a path).
    pub fn for_remote(dir: &Path, remote: Remote) -> Result<WorkRepo> {
        let digest = Sha256::digest(remote.url.as_bytes());
        let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("{name}.git"));
        Ok(WorkRepo {
            repo: open_or_init(&path)?,
            path,
            remote: Some(remote),
        })
    }

    /// A repository that is itself where branches live (the local forge).
    pub fn local(path: &Path) -> Result<WorkRepo> {
        Ok(WorkRepo {
            repo: open_or_init(path)?,
            path: path.to_path_buf(),
            remote: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fetches the base branch and every branch under `prefix` from the remote, pruning
    /// tracking refs of branches deleted there. No-op for a local repository.
    pub fn fetch(&self, base: &str, prefix: &str) -> Result<()> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let shown = redact_url(&remote.url);
        let fetch_err = |e: git2::Error| GitOpError::Fetch {
            remote: shown.clone(),
            message: e.message().to_string(),
        };
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(callbacks(self.remote.as_ref())?);
        opts.prune(FetchPrune::On);
        let mut r = self.repo.remote_anonymous(&remote.url).map_err(fetch_err)?;
        let prefix = prefix.trim_end_matches('/');
        let specs = [
            format!("+refs/heads/{base}:{}", tracking(base)),
            format!("+refs/heads/{prefix}/*:refs/remotes/origin/{prefix}/*"),
        ];
        r.fetch(&specs, Some(&mut opts), None).map_err(fetch_err)?;
        // An anonymous remote does not prune: drop tracking refs the remote no longer has.
        let advertised: Vec<String> = r
            .list()
            .map(|heads| heads.iter().map(|h| h.name().to_string()).collect())
            .unwrap_or_default();
        let glob = format!("refs/remotes/origin/{prefix}/*");
        let stale: Vec<String> = self
            .repo
            .references_glob(&glob)?
            .flatten()
            .filter_map(|r| r.name().ok().map(str::to_string))
            .filter(|n| {
                let head = n.replacen("refs/remotes/origin/", "refs/heads/", 1);
                !advertised.contains(&head)
            })
            .collect();
        for name in stale {
            if let Ok(mut r) = self.repo.find_reference(&name) {
                r.delete()?;
            }
        }
        Ok(())
    }

    fn branch_ref(&self, branch: &str) -> String {
        if self.remote.is_some() {
            tracking(branch)
        } else {
            format!("refs/heads/{branch}")
        }
    }

    /// The commit the base branch points at.
    pub fn base_commit(&self, base: &str) -> Result<Oid> {
        self.tip(base)?
            .ok_or_else(|| GitOpError::NoBase(base.to_string()))
    }

    /// The commit a branch points at, if it exists.
    pub fn tip(&self, branch: &str) -> Result<Option<Oid>> {
        match self.repo.find_reference(&self.branch_ref(branch)) {
            Ok(r) => Ok(Some(r.peel_to_commit()?.id())),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The bytes of a file at a commit, if it exists there.
    pub fn read(&self, commit: Oid, path: &str) -> Result<Option<Vec<u8>>> {
        let tree = self.repo.find_commit(commit)?.tree()?;
        match tree.get_path(Path::new(path)) {
            Ok(entry) => Ok(Some(self.repo.find_blob(entry.id())?.content().to_vec())),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every file path under `dir` (repository-relative, `""` for all) at a commit.
    pub fn files(&self, commit: Oid, dir: &str) -> Result<Vec<String>> {
        let tree = self.repo.find_commit(commit)?.tree()?;
        let mut out = Vec::new();
        tree.walk(TreeWalkMode::PreOrder, |root, entry| {
            if entry.kind() == Some(ObjectType::Blob) {
                let p = format!("{root}{}", entry.name().unwrap_or(""));
                if dir.is_empty() || p.starts_with(&format!("{}/", dir.trim_end_matches('/'))) {
                    out.push(p);
                }
            }
            TreeWalkResult::Ok
        })?;
        out.sort();
        Ok(out)
    }

    /// Builds (without publishing) a commit on `base` with `changes`.
    pub fn commit(
        &self,
        base: Oid,
        changes: &[FileChange],
        message: &str,
        author: &Author,
    ) -> Result<Oid> {
        let parent = self.repo.find_commit(base)?;
        let base_tree = parent.tree()?;
        let mut update = git2::build::TreeUpdateBuilder::new();
        for c in changes {
            match c {
                FileChange::Write { path, bytes } => {
                    let blob = self.repo.blob(bytes)?;
                    let mode = match base_tree.get_path(Path::new(path)) {
                        Ok(e) if e.filemode() == i32::from(FileMode::BlobExecutable) => {
                            FileMode::BlobExecutable
                        }
                        _ => FileMode::Blob,
                    };
                    update.upsert(path.as_str(), blob, mode);
                }
                FileChange::Delete { path } => {
                    update.remove(path.as_str());
                }
            }
        }
        let tree_id = update.create_updated(&self.repo, &base_tree)?;
        let tree = self.repo.find_tree(tree_id)?;
        let sig = Signature::now(&author.name, &author.email)?;
        Ok(self
            .repo
            .commit(None, &sig, &sig, message, &tree, &[&parent])?)
    }

    /// Whether the branch tip already holds `changes` (same bytes at every path, deletions
    /// absent), whatever base it was built on.
    pub fn holds(&self, tip: Oid, changes: &[FileChange]) -> Result<bool> {
        for c in changes {
            let have = self.read(tip, c.path())?;
            let same = match c {
                FileChange::Write { bytes, .. } => have.as_deref() == Some(bytes.as_slice()),
                FileChange::Delete { .. } => have.is_none(),
            };
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The commits on `tip` that are not on `base` and that driftwarden did not make for
    /// `fingerprint`: their presence means the branch is not ours to rewrite.
    pub fn foreign_commits(
        &self,
        base: Oid,
        tip: Oid,
        author: &Author,
        fingerprint: &str,
    ) -> Result<Vec<Foreign>> {
        let mut walk = self.repo.revwalk()?;
        walk.push(tip)?;
        // Hide the base's history; when the base moved on, the branch's own base still hides
        // through the merge base.
        if let Ok(mb) = self.repo.merge_base(base, tip) {
            walk.hide(mb)?;
        }
        walk.hide(base).ok();
        let trailer = format!("{FINGERPRINT_TRAILER}: {fingerprint}");
        let mut out = Vec::new();
        for id in walk {
            let id = id?;
            let c = self.repo.find_commit(id)?;
            let ours = c.author().email().ok() == Some(author.email.as_str())
                && c.message()
                    .is_ok_and(|m| m.lines().any(|l| l.trim() == trailer));
            if !ours {
                out.push(Foreign {
                    id: id.to_string(),
                    author: format!(
                        "{} <{}>",
                        c.author().name().ok().unwrap_or("?"),
                        c.author().email().ok().unwrap_or("?")
                    ),
                });
            }
        }
        Ok(out)
    }

    /// Points `branch` at `new` on the remote (or in the local repository), only if it still
    /// holds `expected` (`None`: only if it does not exist).
    pub fn publish(&self, branch: &str, new: Oid, expected: Option<Oid>) -> Result<()> {
        let dst = format!("refs/heads/{branch}");
        match &self.remote {
            None => {
                let current = self.tip(branch)?;
                if current != expected {
                    return Err(moved(branch, expected, current));
                }
                match expected {
                    Some(old) => {
                        self.repo.reference_matching(
                            &dst,
                            new,
                            true,
                            old,
                            "driftwarden: update pull-request branch",
                        )?;
                    }
                    None => {
                        self.repo.reference(
                            &dst,
                            new,
                            false,
                            "driftwarden: create pull-request branch",
                        )?;
                    }
                }
                Ok(())
            }
            Some(remote) => {
                self.push(remote, &format!("+{new}:{dst}"), branch, expected)?;
                // Keep the tracking ref in step, as a fetch would.
                self.repo
                    .reference(&tracking(branch), new, true, "driftwarden: pushed")?;
                Ok(())
            }
        }
    }

    /// Deletes `branch` if it still holds `expected`.
    pub fn delete(&self, branch: &str, expected: Oid) -> Result<()> {
        let dst = format!("refs/heads/{branch}");
        match &self.remote {
            None => {
                let current = self.tip(branch)?;
                if current != Some(expected) {
                    return Err(moved(branch, Some(expected), current));
                }
                self.repo.find_reference(&dst)?.delete()?;
                Ok(())
            }
            Some(remote) => {
                self.push(remote, &format!(":{dst}"), branch, Some(expected))?;
                if let Ok(mut r) = self.repo.find_reference(&tracking(branch)) {
                    r.delete()?;
                }
                Ok(())
            }
        }
    }

    fn push(
        &self,
        remote: &Remote,
        refspec: &str,
        branch: &str,
        expected: Option<Oid>,
    ) -> Result<()> {
        let shown = redact_url(&remote.url);
        let mut cb = callbacks(Some(remote))?;
        let lease_branch = branch.to_string();
        let dst = format!("refs/heads/{branch}");
        let lease = std::rc::Rc::new(std::cell::RefCell::new(None::<GitOpError>));
        let lease_out = std::rc::Rc::clone(&lease);
        cb.push_negotiation(move |updates| {
            for u in updates {
                if u.dst_refname() == Ok(dst.as_str()) {
                    let found = (!u.src().is_zero()).then(|| u.src());
                    if found != expected {
                        *lease_out.borrow_mut() = Some(moved(&lease_branch, expected, found));
                        return Err(git2::Error::from_str("lease lost"));
                    }
                }
            }
            Ok(())
        });
        let rejected = std::rc::Rc::new(std::cell::RefCell::new(None::<String>));
        let rejected_out = std::rc::Rc::clone(&rejected);
        cb.push_update_reference(move |_name, status| {
            if let Some(s) = status {
                *rejected_out.borrow_mut() = Some(s.to_string());
            }
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(cb);
        let mut r = self
            .repo
            .remote_anonymous(&remote.url)
            .map_err(|e| GitOpError::Push {
                remote: shown.clone(),
                branch: branch.to_string(),
                message: e.message().to_string(),
            })?;
        let res = r.push(&[refspec], Some(&mut opts));
        if let Some(e) = lease.borrow_mut().take() {
            return Err(e);
        }
        res.map_err(|e| GitOpError::Push {
            remote: shown.clone(),
            branch: branch.to_string(),
            message: e.message().to_string(),
        })?;
        if let Some(status) = rejected.borrow_mut().take() {
            return Err(GitOpError::Push {
                remote: shown,
                branch: branch.to_string(),
                message: format!("rejected: {status}"),
            });
        }
        Ok(())
    }

    /// Makes `base` hold the files of directory `dir` (a plain desired directory) that `keep`
    /// accepts (paths relative to `dir`), committing a new snapshot only when they changed.
    /// Dot-files and dot-directories are left out.
    pub fn snapshot_dir(
        &self,
        dir: &Path,
        base: &str,
        author: &Author,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<Oid> {
        let tree = self.tree_of_dir(dir, "", keep)?;
        let dst = format!("refs/heads/{base}");
        let parent = self.tip(base)?;
        if let Some(p) = parent {
            if self.repo.find_commit(p)?.tree_id() == tree {
                return Ok(p);
            }
        }
        let tree = self.repo.find_tree(tree)?;
        let sig = Signature::now(&author.name, &author.email)?;
        let parents: Vec<git2::Commit<'_>> = match parent {
            Some(p) => vec![self.repo.find_commit(p)?],
            None => Vec::new(),
        };
        let refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        let msg = format!(
            "driftwarden: snapshot of the desired directory {}\n",
            dir.display()
        );
        let id = self.repo.commit(None, &sig, &sig, &msg, &tree, &refs)?;
        self.repo
            .reference(&dst, id, true, "driftwarden: desired snapshot")?;
        Ok(id)
    }

    fn tree_of_dir(&self, dir: &Path, prefix: &str, keep: &dyn Fn(&str) -> bool) -> Result<Oid> {
        let io = |e: std::io::Error| GitOpError::Io {
            path: dir.display().to_string(),
            source: e,
        };
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        let mut tb = self.repo.treebuilder(None)?;
        for p in entries {
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).map_err(io)?;
            let rel = format!("{prefix}{name}");
            if meta.is_dir() {
                let sub = self.tree_of_dir(&p, &format!("{rel}/"), keep)?;
                if !self.repo.find_tree(sub)?.is_empty() {
                    tb.insert(name, sub, i32::from(FileMode::Tree))?;
                }
            } else if meta.is_file() && keep(&rel) {
                let bytes = std::fs::read(&p).map_err(|e| GitOpError::Io {
                    path: p.display().to_string(),
                    source: e,
                })?;
                let blob = self.repo.blob(&bytes)?;
                tb.insert(name, blob, i32::from(FileMode::Blob))?;
            }
        }
        Ok(tb.write()?)
    }

    /// Makes `base` mirror `reference` of the repository `source` (a path or URL), for the local
    /// forge of a Git desired source.
    pub fn mirror(&self, source: &Remote, reference: &str, base: &str) -> Result<Oid> {
        let shown = redact_url(&source.url);
        let fetch_err = |e: git2::Error| GitOpError::Fetch {
            remote: shown.clone(),
            message: e.message().to_string(),
        };
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(callbacks(Some(source))?);
        let mut r = self.repo.remote_anonymous(&source.url).map_err(fetch_err)?;
        let src = if reference == "HEAD" || reference.starts_with("refs/") {
            reference.to_string()
        } else {
            format!("refs/heads/{reference}")
        };
        let tmp = "refs/driftwarden/source";
        let res = r.fetch(&[format!("+{src}:{tmp}")], Some(&mut opts), None);
        if res.is_err() && !reference.starts_with("refs/") && reference != "HEAD" {
            // A tag or a commit id.
            r.fetch(
                &[format!("+refs/tags/{reference}:{tmp}")],
                Some(&mut opts),
                None,
            )
            .map_err(fetch_err)?;
        } else {
            res.map_err(fetch_err)?;
        }
        let id = self.repo.find_reference(tmp)?.peel_to_commit()?.id();
        self.repo.reference(
            &format!("refs/heads/{base}"),
            id,
            true,
            "driftwarden: mirror of the desired source",
        )?;
        Ok(id)
    }

    /// A unified diff of `changes` against `base`, for the local forge's patch files.
    pub fn patch(&self, base: Oid, new: Oid) -> Result<String> {
        let old_tree = self.repo.find_commit(base)?.tree()?;
        let new_tree = self.repo.find_commit(new)?.tree()?;
        let diff = self
            .repo
            .diff_tree_to_tree(Some(&old_tree), Some(&new_tree), None)?;
        let mut out = String::new();
        diff.print(git2::DiffFormat::Patch, |_d, _h, line| {
            let origin = line.origin();
            if matches!(origin, '+' | '-' | ' ') {
                out.push(origin);
            }
            out.push_str(&String::from_utf8_lossy(line.content()));
            true
        })?;
        Ok(out)
    }

    /// The parent of a commit (the base a branch was built on).
    pub fn parent(&self, commit: Oid) -> Result<Option<Oid>> {
        Ok(self.repo.find_commit(commit)?.parent_id(0).ok())
    }
}

/// Credentials for a remote: an HTTPS token from its environment variable (plain HTTP only to a
/// loopback host), an SSH key or the agent.
fn callbacks(remote: Option<&Remote>) -> Result<RemoteCallbacks<'static>> {
    let (token, token_env, ssh_key) = match remote {
        Some(r) => {
            let token = match &r.token_env {
                Some(var) => match std::env::var(var) {
                    Ok(t) => Some(t),
                    Err(_) if is_https(&r.url) => {
                        return Err(GitOpError::TokenMissing(var.clone()));
                    }
                    Err(_) => None,
                },
                None => None,
            };
            (token, r.token_env.clone(), r.ssh_key.clone())
        }
        None => (None, None, None),
    };
    Ok(credential_callbacks(token, token_env, ssh_key))
}

fn is_https(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

fn moved(branch: &str, expected: Option<Oid>, found: Option<Oid>) -> GitOpError {
    let show = |o: Option<Oid>| {
        o.map(|o| o.to_string())
            .unwrap_or_else(|| "no branch".into())
    };
    GitOpError::Moved {
        branch: branch.to_string(),
        expected: show(expected),
        found: show(found),
    }
}
