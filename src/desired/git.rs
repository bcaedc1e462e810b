//! Reads files from a Git tree at a ref with git2, without a checkout.
//!
//! Local repositories are opened in place and only their object database is read: the user's
//! work tree, index and HEAD are never touched. Remote URLs (https with a token from an
//! environment variable, ssh with a key or the agent, file://) are fetched into a bare cache
//! repository under the cache directory, then read the same way. A token goes over plain http
//! only to a loopback host; a token the server rejects is an input error, like a missing one.

use std::path::{Path, PathBuf};

use git2::{FetchOptions, Oid, RemoteCallbacks, Repository};
use sha2::{Digest, Sha256};

use crate::config::{GitSource, is_url};

/// Failures reading a Git source.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot open Git repository {repo}: {message}")]
    Open { repo: String, message: String },
    #[error("ref `{reference}` does not exist in {repo}")]
    RefNotFound { repo: String, reference: String },
    #[error("path `{path}` does not exist at {reference} in {repo}")]
    PathNotFound {
        repo: String,
        reference: String,
        path: String,
    },
    #[error("cannot fetch {repo}: {message}")]
    Fetch { repo: String, message: String },
    #[error("environment variable {0} (the Git token) is not set")]
    TokenMissing(String),
    #[error("authentication to {repo} failed: {message}")]
    Auth { repo: String, message: String },
    #[error(
        "cannot verify the SSH host key of {repo}: {message}. Add the host's key to \
         ~/.ssh/known_hosts after checking its fingerprint (`ssh-keyscan -p PORT HOST | ssh-keygen -lf -`)"
    )]
    HostKey { repo: String, message: String },
    #[error("reading {repo}: {source}")]
    Read {
        repo: String,
        #[source]
        source: git2::Error,
    },
}

impl GitError {
    /// True when the error is the user's input (a wrong ref, path or repository), not a
    /// runtime failure.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            GitError::Open { .. }
                | GitError::RefNotFound { .. }
                | GitError::PathNotFound { .. }
                | GitError::TokenMissing(_)
                | GitError::Auth { .. }
                | GitError::HostKey { .. }
        )
    }
}

/// The files found under a subdirectory at a commit.
#[derive(Debug)]
pub struct TreeFiles {
    /// Full commit id.
    pub commit: String,
    /// (path relative to the repository root, contents), in path order.
    pub files: Vec<(String, Vec<u8>)>,
}

/// The commit `src.reference` names now: a fetch first for a URL (into the cache), a ref read
/// for a local repository. What `watch` polls.
pub fn current_commit(src: &GitSource, cache_dir: &Path) -> Result<String, GitError> {
    let repo = open(src, cache_dir)?;
    Ok(resolve(&repo, src)?.to_string())
}

/// Reads every blob under `subdir` at `src.reference` whose path (relative to `subdir`) passes
/// `keep`.
pub fn read_tree(
    src: &GitSource,
    subdir: &str,
    cache_dir: &Path,
    keep: &dyn Fn(&str) -> bool,
) -> Result<TreeFiles, GitError> {
    read_tree_at(src, subdir, cache_dir, keep, false)
}

/// Like [`read_tree`], plus every other file of the commit, whole and named from the root: what
/// a renderer may reach outside the target's directory (a Kustomize overlay's `../../base`, a
/// chart's shared values). `keep` still filters the files under `subdir`.
pub fn read_tree_with_context(
    src: &GitSource,
    subdir: &str,
    cache_dir: &Path,
    keep: &dyn Fn(&str) -> bool,
) -> Result<TreeFiles, GitError> {
    read_tree_at(src, subdir, cache_dir, keep, true)
}

fn read_tree_at(
    src: &GitSource,
    subdir: &str,
    cache_dir: &Path,
    keep: &dyn Fn(&str) -> bool,
    context: bool,
) -> Result<TreeFiles, GitError> {
    let repo = open(src, cache_dir)?;
    let commit = resolve(&repo, src)?;
    let read = |e: git2::Error| GitError::Read {
        repo: src.repo.clone(),
        source: e,
    };
    let commit_obj = repo.find_commit(commit).map_err(read)?;
    let root = commit_obj.tree().map_err(read)?;
    let tree = if subdir.is_empty() {
        root
    } else {
        let entry = root
            .get_path(Path::new(subdir))
            .map_err(|_| GitError::PathNotFound {
                repo: src.repo.clone(),
                reference: src.reference.clone(),
                path: subdir.to_string(),
            })?;
        repo.find_tree(entry.id())
            .map_err(|_| GitError::PathNotFound {
                repo: src.repo.clone(),
                reference: src.reference.clone(),
                path: subdir.to_string(),
            })?
    };
    let mut found: Vec<(String, Oid)> = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            let name = entry.name().unwrap_or("");
            let rel = format!("{dir}{name}");
            if keep(&rel) {
                let full = if subdir.is_empty() {
                    rel
                } else {
                    format!("{subdir}/{rel}")
                };
                found.push((full, entry.id()));
            }
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(read)?;
    if context && !subdir.is_empty() {
        // Every file outside the target's directory, which was read above with its filters.
        let root = commit_obj.tree().map_err(read)?;
        root.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let full = format!("{dir}{}", entry.name().unwrap_or(""));
            match entry.kind() {
                Some(git2::ObjectType::Tree) if full == subdir => git2::TreeWalkResult::Skip,
                Some(git2::ObjectType::Blob) => {
                    found.push((full, entry.id()));
                    git2::TreeWalkResult::Ok
                }
                _ => git2::TreeWalkResult::Ok,
            }
        })
        .map_err(read)?;
    }
    let mut files = Vec::with_capacity(found.len());
    for (full, oid) in found {
        let blob = repo.find_blob(oid).map_err(read)?;
        files.push((full, blob.content().to_vec()));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(TreeFiles {
        commit: commit.to_string(),
        files,
    })
}

fn open(src: &GitSource, cache_dir: &Path) -> Result<Repository, GitError> {
    if !is_url(&src.repo) {
        return Repository::open(&src.repo).map_err(|e| GitError::Open {
            repo: src.repo.clone(),
            message: e.message().to_string(),
        });
    }
    let dir = cache_path(cache_dir, &src.repo);
    let repo = match Repository::open_bare(&dir) {
        Ok(r) => r,
        Err(_) => {
            std::fs::create_dir_all(&dir).map_err(|e| GitError::Fetch {
                repo: src.repo.clone(),
                message: format!("cannot create cache {}: {e}", dir.display()),
            })?;
            Repository::init_bare(&dir).map_err(|e| GitError::Fetch {
                repo: src.repo.clone(),
                message: e.message().to_string(),
            })?
        }
    };
    fetch(&repo, src)?;
    Ok(repo)
}

/// The cache directory of one remote: named by a hash, so no credential in a URL lands in a path.
fn cache_path(cache_dir: &Path, url: &str) -> PathBuf {
    let digest = Sha256::digest(url.as_bytes());
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    cache_dir.join("repos").join(name)
}

fn fetch(repo: &Repository, src: &GitSource) -> Result<(), GitError> {
    let token = match &src.token_env {
        Some(var) => Some(std::env::var(var).map_err(|_| GitError::TokenMissing(var.clone()))?),
        None => None,
    };
    let callbacks = credential_callbacks(token, src.token_env.clone(), src.ssh_key.clone());
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks);
    let mut remote = repo
        .remote_anonymous(&src.repo)
        .map_err(|e| GitError::Fetch {
            repo: redact_url(&src.repo),
            message: e.message().to_string(),
        })?;
    let refspecs = [
        "+refs/heads/*:refs/remotes/origin/*",
        "+refs/tags/*:refs/tags/*",
        "+HEAD:refs/remotes/origin/HEAD",
    ];
    remote
        .fetch(&refspecs, Some(&mut opts), None)
        .map_err(|e| {
            // Rejected credentials are the configuration's fault, like a missing token.
            if e.code() == git2::ErrorCode::Auth {
                GitError::Auth {
                    repo: redact_url(&src.repo),
                    message: e.message().to_string(),
                }
            } else if is_host_key_error(&e) {
                GitError::HostKey {
                    repo: redact_url(&src.repo),
                    message: e.message().to_string(),
                }
            } else {
                GitError::Fetch {
                    repo: redact_url(&src.repo),
                    message: e.message().to_string(),
                }
            }
        })?;
    Ok(())
}

/// Callbacks that answer libgit2's credential requests with [`credentials`], counting the
/// attempts; shared with the pull-request pushes.
pub fn credential_callbacks(
    token: Option<String>,
    token_env: Option<String>,
    ssh_key: Option<PathBuf>,
) -> RemoteCallbacks<'static> {
    let mut callbacks = RemoteCallbacks::new();
    let mut attempts = 0;
    callbacks.credentials(move |url, username, allowed| {
        attempts += 1;
        credentials(
            url,
            username,
            allowed,
            attempts,
            token.as_deref(),
            token_env.as_deref(),
            ssh_key.as_deref(),
        )
    });
    callbacks
}

/// The credentials libgit2 asks for, shared with the pull-request pushes: the token (as
/// `x-access-token`) for HTTPS, or for plain HTTP to a loopback host only; an SSH key or the agent.
/// Gives up after three offers, with an error of code `Auth` naming the token's variable (never
/// its value).
pub fn credentials(
    url: &str,
    username: Option<&str>,
    allowed: git2::CredentialType,
    attempt: usize,
    token: Option<&str>,
    token_env: Option<&str>,
    ssh_key: Option<&Path>,
) -> Result<git2::Cred, git2::Error> {
    let auth_err = |m: String| git2::Error::new(git2::ErrorCode::Auth, git2::ErrorClass::Http, m);
    let var = token_env.unwrap_or("token_env");
    if attempt > 3 {
        return Err(auth_err(match token {
            Some(_) => format!("the server rejected the token in {var}"),
            None => "the server rejected the credentials".to_string(),
        }));
    }
    if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
        if let Some(t) = token {
            if insecure_for_token(url) {
                return Err(auth_err(format!(
                    "refusing to send the token in {var} over plain http to {}: use https (plain http is allowed only to a loopback host)",
                    redact_url(url)
                )));
            }
            return git2::Cred::userpass_plaintext("x-access-token", t);
        }
        if !allowed.intersects(git2::CredentialType::SSH_KEY | git2::CredentialType::DEFAULT) {
            return Err(auth_err(
                "the server asks for credentials and no token is configured (token_env)".into(),
            ));
        }
    }
    if allowed.contains(git2::CredentialType::SSH_KEY) {
        let user = username.unwrap_or("git");
        return match ssh_key {
            Some(k) => git2::Cred::ssh_key(user, None, k, None),
            None => git2::Cred::ssh_key_from_agent(user),
        };
    }
    git2::Cred::default()
}

/// True when libgit2 refused an SSH server's host key: not in `~/.ssh/known_hosts`, or different
/// from the key recorded there.
pub fn is_host_key_error(e: &git2::Error) -> bool {
    e.code() == git2::ErrorCode::Certificate
        || (e.class() == git2::ErrorClass::Ssh && e.message().contains("hostkey"))
}

/// True for a plain `http://` URL to a host that is not loopback: a token sent there would cross
/// the network in clear text.
pub fn insecure_for_token(url: &str) -> bool {
    let Some(rest) = url
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("http://"))
        .map(|_| &url[7..])
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

/// Removes any user-info (a token) from a URL before it is shown.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority = rest.split('/').next().unwrap_or("");
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[authority.len()..]),
        None => url.to_string(),
    }
}

fn resolve(repo: &Repository, src: &GitSource) -> Result<Oid, GitError> {
    let not_found = || GitError::RefNotFound {
        repo: redact_url(&src.repo),
        reference: src.reference.clone(),
    };
    let r = &src.reference;
    let candidates: Vec<String> = if is_url(&src.repo) {
        if r == "HEAD" {
            vec!["refs/remotes/origin/HEAD".to_string()]
        } else {
            vec![
                format!("refs/remotes/origin/{r}"),
                format!("refs/tags/{r}"),
                r.clone(),
            ]
        }
    } else {
        vec![r.clone()]
    };
    for c in candidates {
        if let Ok(obj) = repo.revparse_single(&c) {
            if let Ok(commit) = obj.peel_to_commit() {
                return Ok(commit.id());
            }
        }
    }
    Err(not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_tokens() {
        assert_eq!(
            redact_url("https://user:secret@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(
            redact_url("https://github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
        assert_eq!(redact_url("/local/path"), "/local/path");
    }

    #[test]
    fn tokens_travel_over_plain_http_only_to_loopback() {
        assert!(!insecure_for_token("https://github.com/o/r.git"));
        assert!(!insecure_for_token("http://127.0.0.1:8080/r.git"));
        assert!(!insecure_for_token("http://127.8.9.1/r.git"));
        assert!(!insecure_for_token("http://localhost/r.git"));
        assert!(!insecure_for_token("http://[::1]:9000/r.git"));
        assert!(!insecure_for_token("HTTP://user@127.0.0.1/r.git"));
        assert!(!insecure_for_token("ssh://git@example.com/r.git"));
        assert!(insecure_for_token("http://github.com/o/r.git"));
        assert!(insecure_for_token("http://127.0.0.1.example.com/r.git"));
        assert!(insecure_for_token("http://10.0.0.1/r.git"));
        assert!(insecure_for_token("http://user:pw@example.com:80/r.git"));
        assert!(insecure_for_token("http://[2001:db8::1]/r.git"));
    }

    #[test]
    fn a_token_is_refused_for_plain_http_to_another_host() {
        let e = credentials(
            "http://gitops.example.com/r.git",
            None,
            git2::CredentialType::USER_PASS_PLAINTEXT,
            1,
            Some("tok-canary-1"),
            Some("GIT_TOKEN"),
            None,
        )
        .err()
        .map(|e| (e.code(), e.message().to_string()));
        let (code, message) = e.unwrap_or((git2::ErrorCode::GenericError, String::new()));
        assert_eq!(code, git2::ErrorCode::Auth);
        assert!(message.contains("plain http"), "{message}");
        assert!(message.contains("GIT_TOKEN"), "{message}");
        assert!(!message.contains("tok-canary-1"), "{message}");
        for url in [
            "https://gitops.example.com/r.git",
            "http://127.0.0.1:1/r.git",
        ] {
            assert!(
                credentials(
                    url,
                    None,
                    git2::CredentialType::USER_PASS_PLAINTEXT,
                    1,
                    Some("tok"),
                    Some("GIT_TOKEN"),
                    None,
                )
                .is_ok()
            );
        }
        let fourth = credentials(
            "https://gitops.example.com/r.git",
            None,
            git2::CredentialType::USER_PASS_PLAINTEXT,
            4,
            Some("tok"),
            Some("GIT_TOKEN"),
            None,
        );
        assert!(fourth.is_err_and(|e| e.code() == git2::ErrorCode::Auth
            && e.message().contains("rejected the token in GIT_TOKEN")));
    }
}
