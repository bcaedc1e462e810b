//! `POST /hooks/github`: GitHub push events that make `watch` re-read a target's desired state
//! at once instead of at its next Git poll.
//!
//! Every request is authenticated before anything else is looked at: `X-Hub-Signature-256`
//! must be `sha256=` and the hex HMAC-SHA256 of the raw body under the shared secret, compared
//! in constant time (`hmac`'s `verify_slice`). A missing or wrong signature is 401 and triggers
//! nothing. Then `ping` is answered 200; a `push` whose repository and ref match a target's
//! desired Git source sends [`Trigger::Target`] for it on the trigger channel (202); other events and
//! pushes no target follows are answered 200 and do nothing. The body size limit (1 MiB, 413)
//! is enforced by the HTTP layer before this module sees the body.
//!
//! The secret is read from the environment variable the config names, once, at start. It is
//! never logged, shown in an error or a reply, and its `Debug` form is masked.
//!
//! Matching: repository URLs are compared without scheme, user, port, trailing `/` or `.git`,
//! case-insensitively (`https://github.com/acme/Deploy.git`, `git@github.com:acme/deploy` and
//! `ssh://git@github.com:22/acme/deploy` are the same), against the payload's `clone_url`,
//! `ssh_url`, `git_url`, `html_url` and `url`. A target's ref matches the pushed ref when it is
//! the same full ref, the branch or tag name of it, or `HEAD` and the push is to the
//! repository's default branch. A ref that names a commit never matches (it cannot move). A
//! push that deletes its ref triggers nothing (the next poll reports the missing ref).

use hmac::{Hmac, Mac};
use hyper::HeaderMap;
use hyper::StatusCode;
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::mpsc;

use super::Trigger;
use crate::config::{DesiredLocation, Target};

/// The webhook's path.
pub const PATH: &str = "/hooks/github";

/// Every way setting the webhook up fails.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook secret variable `{var}` is not set")]
    Unset { var: String },
    #[error("the webhook secret variable `{var}` is empty")]
    Empty { var: String },
    #[error("the webhook secret variable `{var}` is not valid Unicode")]
    NotUnicode { var: String },
}

/// The shared secret; its `Debug` form never shows it.
struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(masked)")
    }
}

/// A target's desired Git source, as pushes are matched against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub target: String,
    /// The repository, normalized ([`normalize_repo`]).
    pub repo: String,
    /// The ref as configured (`main`, `refs/heads/main`, `v1.2`, `HEAD`).
    pub reference: String,
}

/// The routes of every target whose desired state comes from a Git repository.
pub fn routes(targets: &[Target]) -> Vec<Route> {
    targets
        .iter()
        .filter_map(|t| match &t.desired.location {
            DesiredLocation::Git(g) => Some(Route {
                target: t.name.clone(),
                repo: normalize_repo(&g.repo),
                reference: g.reference.clone(),
            }),
            DesiredLocation::Dir(_) => None,
        })
        .collect()
}

/// A repository URL or path in a form two spellings of one repository share: no scheme, no
/// user, no port, no trailing `/` or `.git`, lower case.
pub fn normalize_repo(repo: &str) -> String {
    let r = repo.trim();
    let (authority_and_path, had_scheme) = match r.split_once("://") {
        Some((_, rest)) => (rest, true),
        None => (r, false),
    };
    let (host, path) = if had_scheme {
        match authority_and_path.split_once('/') {
            Some((a, p)) => (a, p),
            None => (authority_and_path, ""),
        }
    } else if let Some((a, p)) = authority_and_path
        .split_once(':')
        .filter(|(a, _)| !a.contains('/'))
    {
        // scp-like `user@host:path`.
        (a, p)
    } else {
        // A local path.
        ("", authority_and_path)
    };
    let host = host.rsplit('@').next().unwrap_or(host);
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let joined = if host.is_empty() {
        path.to_string()
    } else {
        format!("{host}/{path}")
    };
    joined.to_ascii_lowercase()
}

/// Whether a target's configured ref follows a pushed ref.
fn ref_matches(configured: &str, pushed: &str, default_branch: Option<&str>) -> bool {
    if configured == pushed {
        return true;
    }
    if configured == "HEAD" {
        return default_branch.is_some_and(|b| pushed == format!("refs/heads/{b}"));
    }
    pushed == format!("refs/heads/{configured}") || pushed == format!("refs/tags/{configured}")
}

/// An answer to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: String,
}

fn reply(status: StatusCode, body: impl Into<String>) -> Reply {
    Reply {
        status,
        body: body.into(),
    }
}

/// The webhook: the secret, the routes and where triggers go.
#[derive(Debug)]
pub struct Webhook {
    secret: Secret,
    routes: Vec<Route>,
    trigger: mpsc::Sender<Trigger>,
}

impl Webhook {
    /// Reads the secret from the environment variable `var` (named, never shown, in errors).
    pub fn from_env(
        var: &str,
        routes: Vec<Route>,
        trigger: mpsc::Sender<Trigger>,
    ) -> Result<Webhook, WebhookError> {
        let secret = match std::env::var(var) {
            Ok(s) => s,
            Err(std::env::VarError::NotPresent) => {
                return Err(WebhookError::Unset {
                    var: var.to_string(),
                });
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(WebhookError::NotUnicode {
                    var: var.to_string(),
                });
            }
        };
        if secret.is_empty() {
            return Err(WebhookError::Empty {
                var: var.to_string(),
            });
        }
        Ok(Webhook::new(secret.into_bytes(), routes, trigger))
    }

    /// A webhook with this secret.
    pub fn new(secret: Vec<u8>, routes: Vec<Route>, trigger: mpsc::Sender<Trigger>) -> Webhook {
        Webhook {
            secret: Secret(secret),
            routes,
            trigger,
        }
    }

    /// Whether `header` (`sha256=<hex>`) is the body's HMAC-SHA256 under the secret; the
    /// comparison takes the same time wherever the bytes differ.
    fn verify(&self, header: Option<&[u8]>, body: &[u8]) -> bool {
        let Some(hex) = header.and_then(|h| h.strip_prefix(b"sha256=")) else {
            return false;
        };
        let Some(sig) = decode_hex(hex) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret.0) else {
            // HMAC takes keys of any length; unreachable, and refusing is the safe answer.
            return false;
        };
        mac.update(body);
        mac.verify_slice(&sig).is_ok()
    }

    /// Answers one delivery whose body the HTTP layer has read (at most 1 MiB).
    pub async fn handle(&self, headers: &HeaderMap, body: &[u8]) -> Reply {
        let signature = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
        if !self.verify(signature, body) {
            tracing::warn!(
                delivery = delivery(headers),
                "webhook: missing or wrong X-Hub-Signature-256; ignored"
            );
            return reply(
                StatusCode::UNAUTHORIZED,
                "missing or invalid X-Hub-Signature-256\n",
            );
        }
        let event = headers
            .get("x-github-event")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        match event {
            "ping" => return reply(StatusCode::OK, "pong\n"),
            "push" => {}
            "" => return reply(StatusCode::BAD_REQUEST, "missing X-GitHub-Event\n"),
            _ => return reply(StatusCode::OK, format!("event `{event}` ignored\n")),
        }
        let Some(payload) = payload(headers, body) else {
            return reply(StatusCode::BAD_REQUEST, "the push payload is not JSON\n");
        };
        let Some(pushed_ref) = payload.get("ref").and_then(Value::as_str) else {
            return reply(StatusCode::BAD_REQUEST, "the push payload has no `ref`\n");
        };
        if payload.get("deleted").and_then(Value::as_bool) == Some(true) {
            return reply(StatusCode::OK, "ref deleted; nothing to re-read\n");
        }
        let repo = payload.get("repository");
        let urls: Vec<String> = ["clone_url", "ssh_url", "git_url", "html_url", "url"]
            .iter()
            .filter_map(|k| repo.and_then(|r| r.get(*k)).and_then(Value::as_str))
            .map(normalize_repo)
            .collect();
        let default_branch = repo
            .and_then(|r| r.get("default_branch"))
            .and_then(Value::as_str);
        let matched: Vec<&Route> = self
            .routes
            .iter()
            .filter(|r| {
                urls.contains(&r.repo) && ref_matches(&r.reference, pushed_ref, default_branch)
            })
            .collect();
        if matched.is_empty() {
            return reply(
                StatusCode::OK,
                "no target follows this repository and ref\n",
            );
        }
        let mut names = Vec::new();
        for r in matched {
            if self
                .trigger
                .send(Trigger::Target(r.target.clone()))
                .await
                .is_err()
            {
                return reply(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
            }
            tracing::info!(target_name = %r.target, git_ref = pushed_ref, delivery = delivery(headers), "webhook: push triggers a re-read");
            names.push(r.target.as_str());
        }
        reply(
            StatusCode::ACCEPTED,
            format!("re-read triggered: {}\n", names.join(", ")),
        )
    }
}

/// The delivery id, for logs.
fn delivery(headers: &HeaderMap) -> &str {
    headers
        .get("x-github-delivery")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

/// The JSON payload: the body (`application/json`) or its `payload` form field
/// (`application/x-www-form-urlencoded`).
fn payload(headers: &HeaderMap, body: &[u8]) -> Option<Value> {
    let form = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form {
        let text = std::str::from_utf8(body).ok()?;
        let field = text.split('&').find_map(|kv| kv.strip_prefix("payload="))?;
        let decoded = percent_decode(field)?;
        serde_json::from_slice(&decoded).ok()
    } else {
        serde_json::from_slice(body).ok()
    }
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = b.get(i + 1..i + 3)?;
                out.push(decode_hex(h)?.first().copied()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}

fn decode_hex(h: &[u8]) -> Option<Vec<u8>> {
    if h.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    h.chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_normalize_to_one_form() {
        for spelling in [
            "https://github.com/acme/Deploy.git",
            "https://token@github.com/acme/deploy/",
            "git@github.com:acme/deploy.git",
            "ssh://git@github.com:22/acme/deploy",
            "git://github.com/acme/deploy.git",
            "http://GitHub.com/acme/deploy",
        ] {
            assert_eq!(
                normalize_repo(spelling),
                "github.com/acme/deploy",
                "{spelling}"
            );
        }
        assert_eq!(normalize_repo("/srv/git/deploy.git"), "srv/git/deploy");
        assert_ne!(
            normalize_repo("https://github.com/acme/deploy"),
            normalize_repo("https://github.com/acme/deploy-staging")
        );
    }

    #[test]
    fn refs_match_by_full_name_branch_tag_or_default_branch() {
        assert!(ref_matches("main", "refs/heads/main", None));
        assert!(ref_matches("refs/heads/main", "refs/heads/main", None));
        assert!(ref_matches("v1.2", "refs/tags/v1.2", None));
        assert!(ref_matches("HEAD", "refs/heads/trunk", Some("trunk")));
        assert!(!ref_matches("HEAD", "refs/heads/feature", Some("trunk")));
        assert!(!ref_matches("HEAD", "refs/heads/main", None));
        assert!(!ref_matches("main", "refs/heads/main-2", None));
        assert!(!ref_matches(
            "0123456789abcdef0123456789abcdef01234567",
            "refs/heads/main",
            None
        ));
    }

    #[test]
    fn hex_and_form_decoding() {
        assert_eq!(decode_hex(b"00ff7A"), Some(vec![0, 255, 0x7a]));
        assert_eq!(decode_hex(b"0"), None);
        assert_eq!(decode_hex(b"zz"), None);
        assert_eq!(percent_decode("a%7B%22b%22+c"), Some(b"a{\"b\" c".to_vec()));
        assert_eq!(percent_decode("%7"), None);
    }

    #[test]
    fn the_secret_is_masked_in_debug_and_errors_name_only_the_variable() {
        let (tx, _rx) = mpsc::channel(1);
        let hook = Webhook::new(b"canary-6f1d2b".to_vec(), Vec::new(), tx);
        let dbg = format!("{hook:?}");
        assert!(!dbg.contains("canary-6f1d2b"), "{dbg}");
        assert!(dbg.contains("masked"), "{dbg}");
        let (tx, _rx) = mpsc::channel(1);
        let e = Webhook::from_env("DRIFTWARDEN_TEST_UNSET_WEBHOOK_SECRET_VAR", Vec::new(), tx)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the webhook secret variable `DRIFTWARDEN_TEST_UNSET_WEBHOOK_SECRET_VAR` is not set"
        );
    }
}
