//! Git over SSH, against OpenSSH's own server on loopback (tests/support/sshd.rs): the Git desired
//! source fetches `ssh://USER@127.0.0.1:PORT/…/gitops.git` with the configured key and reads the
//! same manifests as from the repository on disk; a host key that is not in `~/.ssh/known_hosts`,
//! or differs from the one recorded there, is refused before any key is offered (exit 3); a key
//! the server does not accept is an input error (exit 3); pull-request branches are pushed over
//! SSH with the same key, once.
//!
//! The binary runs with `HOME` pointing at a directory of the test's own, whose `.ssh/known_hosts`
//! the test writes: nothing of the machine's SSH setup is read or changed. `sshd` must be
//! installed (scripts/test installs it): without it these tests fail.

#[path = "support/common.rs"]
mod common;
#[path = "support/github_server.rs"]
mod github_server;
#[path = "support/sshd.rs"]
mod sshd;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{bare_repo_of, code, copy_dir, root, stderr, stdout};
use github_server::GitHubServer;
use serde_json::Value;
use sshd::SshServer;

const TOKEN_ENV: &str = "DRIFTWARDEN_TEST_SSH_GITHUB_TOKEN";
const TOKEN: &str = "ghs_sshcanary_5b7d9f1a3c5e";
const AUTHOR_EMAIL: &str = "drift-bot@example.com";

/// The demo's desired files as `main` of a bare repository served over SSH, a copy of its live
/// snapshot, and a home directory for the binary.
struct World {
    dir: tempfile::TempDir,
    bare: PathBuf,
    live: PathBuf,
    ssh: SshServer,
}

/// How the binary's `~/.ssh/known_hosts` looks.
enum KnownHosts {
    Server,
    Hashed,
    Missing,
    WrongKey,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("served/gitops.git");
        bare_repo_of(&root().join("fixtures/demo/desired"), &bare);
        let live = dir.path().join("live");
        copy_dir(&root().join("fixtures/demo/live"), &live);
        World {
            dir,
            bare,
            live,
            ssh: SshServer::start(),
        }
    }

    fn home(&self, known: KnownHosts) -> PathBuf {
        let home = self.dir.path().join("home");
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        let line = match known {
            KnownHosts::Server => self.ssh.known_hosts_line(),
            KnownHosts::Hashed => self.ssh.hashed_known_hosts_line(),
            KnownHosts::WrongKey => self.ssh.wrong_known_hosts_line(),
            KnownHosts::Missing => return home,
        };
        std::fs::write(home.join(".ssh/known_hosts"), line).unwrap();
        home
    }

    fn tip(&self, branch: &str) -> Option<git2::Oid> {
        let repo = git2::Repository::open_bare(&self.bare).unwrap();
        repo.find_reference(&format!("refs/heads/{branch}"))
            .ok()
            .map(|r| r.peel_to_commit().unwrap().id())
    }

    fn config(&self, repo: &str, key: &Path, prs: &str) -> PathBuf {
        let text = format!(
            r#"version: 1
policies:
  dirs: ["{policies}"]
state_dir: "{state}"
{prs}targets:
  - name: demo
    cluster: demo
    mode: recommend
    namespace: shop
    desired:
      git: {{repo: "{repo}", ref: main, ssh_key: "{key}"}}
    live:
      snapshot: "{live}"
    tracking:
      label: app.kubernetes.io/managed-by=driftwarden
    unmanaged_namespaces: [shop]
"#,
            policies = root().join("policies").display(),
            state = self.dir.path().join("state").display(),
            key = key.display(),
            live = self.live.display(),
        );
        let path = self.dir.path().join("driftwarden.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The binary with `args`, the config last written, and `home` as `HOME`.
    fn binary(&self, home: &Path, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"))
            .args(args)
            .arg("--config")
            .arg(self.dir.path().join("driftwarden.yaml"))
            .current_dir(self.dir.path())
            .env_remove("DRIFTWARDEN_LOG")
            .env_remove("SSH_AUTH_SOCK")
            .env("NO_COLOR", "1")
            .env("HOME", home)
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env(TOKEN_ENV, TOKEN)
            .output()
            .unwrap()
    }
}

fn report(out: &Output) -> Value {
    serde_json::from_str(&stdout(out))
        .unwrap_or_else(|e| panic!("not a JSON report ({e}): {}\n{}", stdout(out), stderr(out)))
}

fn fingerprints(report: &Value) -> BTreeSet<String> {
    report["drifts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["fingerprint"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_git_source_fetches_over_ssh_with_a_key_and_a_known_host() {
    let w = World::new();
    let home = w.home(KnownHosts::Server);
    let main = w.tip("main").unwrap();

    // The reference: the same repository read from disk.
    w.config(&w.bare.display().to_string(), &w.ssh.client_key(), "");
    let local = w.binary(&home, &["diff", "-o", "json"]);
    assert_eq!(code(&local), 2, "{}", stderr(&local));
    let expected = fingerprints(&report(&local));
    assert!(expected.len() >= 5, "{expected:?}");
    assert_eq!(w.ssh.accepted(), 0);

    w.config(&w.ssh.url(&w.bare), &w.ssh.client_key(), "");
    for run in 1..=2 {
        // The second run knows the host from a hashed entry.
        let home = match run {
            1 => home.clone(),
            _ => w.home(KnownHosts::Hashed),
        };
        let out = w.binary(&home, &["diff", "-o", "json"]);
        assert_eq!(code(&out), 2, "run {run}: {}", stderr(&out));
        let r = report(&out);
        assert!(r.get("errors").is_none(), "{}", r["errors"]);
        assert_eq!(fingerprints(&r), expected, "run {run}");
        // Provenance names the commit fetched over SSH.
        let commits: BTreeSet<&str> = r["drifts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["provenance"]["commit"].as_str())
            .collect();
        assert_eq!(commits, BTreeSet::from([main.to_string().as_str()]));
        // Each run fetched once, authenticated with the key: the first clones into the cache,
        // the second fetches into it.
        assert_eq!(w.ssh.accepted(), run, "{}", w.ssh.log());
    }
}

#[test]
fn unknown_or_changed_host_keys_are_refused_before_any_key_is_offered() {
    let w = World::new();
    w.config(&w.ssh.url(&w.bare), &w.ssh.client_key(), "");
    for (known, what) in [
        (KnownHosts::Missing, "not in known_hosts"),
        (KnownHosts::WrongKey, "a different key in known_hosts"),
    ] {
        let home = w.home(known);
        let out = w.binary(&home, &["diff", "-o", "json"]);
        let err = stderr(&out);
        assert_eq!(code(&out), 3, "{what}: {err}");
        assert!(err.contains("SSH host key"), "{what}: {err}");
        assert!(err.contains("known_hosts"), "{what}: {err}");
        assert!(err.contains("127.0.0.1"), "{what}: {err}");
    }
    // The client stopped at the host key: the server never saw a key offered, let alone accepted.
    let log = w.ssh.log();
    assert_eq!(w.ssh.accepted(), 0, "{log}");
    assert!(!log.contains("Failed publickey"), "{log}");
}

#[test]
fn a_key_the_server_does_not_accept_is_an_input_error() {
    let w = World::new();
    let home = w.home(KnownHosts::Server);
    w.config(&w.ssh.url(&w.bare), &w.ssh.stranger_key(), "");
    let out = w.binary(&home, &["diff", "-o", "json"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    assert!(err.contains("authentication to ssh://"), "{err}");
    assert_eq!(w.ssh.accepted(), 0, "{}", w.ssh.log());
}

#[test]
fn pull_request_branches_are_pushed_over_ssh_once() {
    let w = World::new();
    let home = w.home(KnownHosts::Server);
    let github = GitHubServer::start("acme", "gitops", TOKEN, &w.bare);
    let prs = format!(
        "pull_requests:\n  forge: github\n  repo: acme/gitops\n  api_url: \"{}/api/v3\"\n  \
         token_env: {TOKEN_ENV}\n  write_interval_ms: 0\n  author: {{name: drift-bot, email: {AUTHOR_EMAIL}}}\n",
        github.url()
    );
    // The push remote defaults to the desired repository (over SSH), with the desired key.
    w.config(&w.ssh.url(&w.bare), &w.ssh.client_key(), &prs);
    let main = w.tip("main").unwrap();

    let out = w.binary(&home, &["reconcile", "-o", "json"]);
    let r = report(&out);
    assert!(r.get("errors").is_none(), "{}", r["errors"]);
    // The desired fetch and the pushes each authenticated over SSH with the key.
    assert!(w.ssh.accepted() >= 2, "{}", w.ssh.log());
    let pushed: Vec<(String, String)> = r["drifts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["action"]["action"]["type"] == "pull_request")
        .map(|d| {
            (
                d["fingerprint"].as_str().unwrap().to_string(),
                d["action"]["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(!pushed.is_empty(), "{}", stdout(&out));
    let repo = git2::Repository::open_bare(&w.bare).unwrap();
    let mut tips = Vec::new();
    for (fp, result) in &pushed {
        assert_eq!(result, "done", "{fp}: {}", stdout(&out));
        let branch = format!("driftwarden/demo/{fp}");
        let tip = w
            .tip(&branch)
            .unwrap_or_else(|| panic!("{branch} was not pushed over SSH"));
        let c = repo.find_commit(tip).unwrap();
        assert_eq!(c.parent_id(0).unwrap(), main);
        assert_eq!(c.author().email(), Ok(AUTHOR_EMAIL));
        assert!(
            github
                .items()
                .iter()
                .any(|i| i.head.as_deref() == Some(branch.as_str())),
            "no pull request for {branch}"
        );
        tips.push((branch, tip));
    }

    // Nothing changed: the next run writes nothing to GitHub and moves no branch.
    let mark = github.log().len();
    let out = w.binary(&home, &["reconcile", "-o", "json"]);
    assert!(report(&out).get("errors").is_none(), "{}", stderr(&out));
    assert!(github.writes_since(mark).is_empty());
    for (branch, tip) in tips {
        assert_eq!(w.tip(&branch), Some(tip), "{branch}");
    }
    // The token never reached the Git side.
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains(TOKEN));
}
