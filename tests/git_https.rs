//! Git over smart HTTP with a token, against Git's own `git http-backend` on loopback
//! (tests/support/git_http.rs): the Git desired source clones, fetches and reads manifests from
//! `http://127.0.0.1:PORT/gitops.git` with the token from its environment variable; a wrong
//! token is an input error (exit 3) naming the URL and never the token; a server error is a
//! runtime failure (exit 1) the next run recovers from. Pull-request branches
//! (`driftwarden/<target>/<fingerprint>`) are pushed over HTTP with the token, a branch carrying
//! someone else's commit is never overwritten, a failed push is reported and retried by the next
//! run, and the local forge mirrors the desired repository over HTTP. The token never appears in
//! stdout, stderr, the debug JSON log, the report, any file, any commit or any Git config.
//!
//! `git http-backend` must be installed (it ships with Git): without it these tests fail.

#[path = "support/common.rs"]
mod common;
#[path = "support/git_http.rs"]
mod git_http;
#[path = "support/github_server.rs"]
mod github_server;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Once;

use common::{bare_repo_of, copy_dir, git_text, root};
use driftwarden::config::{self, DesiredLocation, DesiredSource, GitSource};
use driftwarden::desired;
use driftwarden::model::{Action, ActionResult, Report};
use driftwarden::run::{self, Command, RunOptions};
use git_http::{Auth, GitHttpServer};
use github_server::GitHubServer;

/// The variable the right token is read from, in-process and in the binary's environment.
const TOKEN_ENV: &str = "DRIFTWARDEN_TEST_HTTPS_TOKEN";
const TOKEN: &str = "ghs_httpscanary_3d5e7f9a1b2c4d6e";
/// A variable holding a token the server does not accept.
const WRONG_ENV: &str = "DRIFTWARDEN_TEST_HTTPS_WRONG_TOKEN";
const WRONG: &str = "ghs_wrongcanary_0a9b8c7d6e5f";
/// The username driftwarden sends with a token (GitHub's convention).
const USER: &str = "x-access-token";
const AUTHOR_EMAIL: &str = "drift-bot@example.com";

const FP_DEPLOYMENT: &str = "fdee82c74c41a560";
const FP_CONFIGMAP: &str = "0b2240e0985f1df7";
const FP_HOTFIX: &str = "b10790a3239c0cdf";
const FP_SERVICE: &str = "8691a30e9cf82b96";
/// The forbidden worker Deployment: a draft pull request.
const FP_WORKER: &str = "d8b06faf8b3a5e6c";
const PR_FINGERPRINTS: [&str; 5] = [
    FP_DEPLOYMENT,
    FP_CONFIGMAP,
    FP_HOTFIX,
    FP_SERVICE,
    FP_WORKER,
];

fn set_tokens() {
    static ONCE: Once = Once::new();
    // SAFETY: set once, before any test thread reads them (every test calls this first, and the
    // values never change).
    ONCE.call_once(|| unsafe {
        std::env::set_var(TOKEN_ENV, TOKEN);
        std::env::set_var(WRONG_ENV, WRONG);
    });
}

/// Adds a commit by `who` on `branch` of a bare repository, writing `path`.
fn commit_on(bare: &Path, branch: &str, path: &str, text: &str, who: (&str, &str)) -> git2::Oid {
    let repo = git2::Repository::open_bare(bare).unwrap();
    let tip = repo
        .find_reference(&format!("refs/heads/{branch}"))
        .unwrap()
        .peel_to_commit()
        .unwrap();
    let mut update = git2::build::TreeUpdateBuilder::new();
    let blob = repo.blob(text.as_bytes()).unwrap();
    update.upsert(path, blob, git2::FileMode::Blob);
    let tree = update.create_updated(&repo, &tip.tree().unwrap()).unwrap();
    let tree = repo.find_tree(tree).unwrap();
    let sig = git2::Signature::now(who.0, who.1).unwrap();
    repo.commit(
        Some(&format!("refs/heads/{branch}")),
        &sig,
        &sig,
        &format!("{path} by {}", who.0),
        &tree,
        &[&tip],
    )
    .unwrap()
}

/// Every blob, commit message and author reachable from any ref of a repository.
fn git_text_of(path: &Path) -> String {
    git_text(&git2::Repository::open(path).unwrap(), true)
}

/// Every regular file under `dir`, with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The Git repositories (bare or not) under `dir`: directories holding `HEAD` and `objects/`.
fn repos_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if d.join("HEAD").is_file() && d.join("objects").is_dir() {
            out.push(d);
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn assert_no_token(text: &[u8], where_: &str) {
    for t in [TOKEN, WRONG] {
        assert!(!contains(text, t), "{where_} leaks the token {t}");
    }
}

/// A Git config that names no credential: no token, no user-info in any URL.
fn assert_clean_git_config(repo: &Path) {
    let config = std::fs::read_to_string(repo.join("config")).unwrap();
    assert_no_token(config.as_bytes(), &format!("{}/config", repo.display()));
    assert!(
        !config.contains(USER) && !config.contains("@127.0.0.1"),
        "{}/config names a credential:\n{config}",
        repo.display()
    );
}

/// The demo's desired files as `main` of a bare repository served over HTTP, a copy of its live
/// snapshot, and a GitHub REST server whose branches are that same repository.
struct World {
    dir: tempfile::TempDir,
    bare: PathBuf,
    live: PathBuf,
    git: GitHttpServer,
    github: GitHubServer,
}

impl World {
    fn new() -> World {
        set_tokens();
        let dir = tempfile::tempdir().unwrap();
        let served = dir.path().join("served");
        let bare = served.join("gitops.git");
        bare_repo_of(&root().join("fixtures/demo/desired"), &bare);
        let live = dir.path().join("live");
        copy_dir(&root().join("fixtures/demo/live"), &live);
        let git = GitHttpServer::start(&served, USER, TOKEN);
        let github = GitHubServer::start("acme", "gitops", TOKEN, &bare);
        World {
            dir,
            bare,
            live,
            git,
            github,
        }
    }

    fn url(&self) -> String {
        self.git.url("gitops.git")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// A config reading desired state over HTTP with the token in `token_env`, pull requests on
    /// `forge` (`github`: the GitHub server, branches pushed to the desired repository).
    fn config_text(&self, token_env: &str, forge: &str) -> String {
        let prs = match forge {
            "github" => format!(
                "  forge: github\n  repo: acme/gitops\n  api_url: \"{api}/api/v3\"\n  token_env: {TOKEN_ENV}\n  write_interval_ms: 0\n",
                api = self.github.url()
            ),
            _ => format!(
                "  forge: local\n  output_dir: \"{}\"\n",
                self.dir.path().join("prs").display()
            ),
        };
        format!(
            r#"version: 1
policies:
  dirs: ["{policies}"]
state_dir: "{state}"
pull_requests:
{prs}  author: {{name: drift-bot, email: {AUTHOR_EMAIL}}}
targets:
  - name: demo
    cluster: demo
    mode: recommend
    namespace: shop
    desired:
      git: {{repo: "{url}", ref: main, token_env: {token_env}}}
    live:
      snapshot: "{live}"
    tracking:
      label: app.kubernetes.io/managed-by=driftwarden
    unmanaged_namespaces: [shop]
"#,
            policies = root().join("policies").display(),
            state = self.state().display(),
            url = self.url(),
            live = self.live.display(),
        )
    }

    /// One reconcile run in-process.
    fn run(&self, forge: &str) -> Report {
        let cfg = config::parse(
            &self.config_text(TOKEN_ENV, forge),
            "test.yaml",
            self.dir.path(),
        )
        .unwrap();
        let mut opts = RunOptions::new(Command::Reconcile);
        opts.cache_dir = self.cache();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run::run(&cfg, &opts))
            .unwrap()
    }

    /// The binary, with a config file whose desired token comes from `token_env`.
    fn binary(&self, token_env: &str, forge: &str, args: &[&str]) -> Output {
        let cfg = self.dir.path().join("driftwarden.yaml");
        std::fs::write(&cfg, self.config_text(token_env, forge)).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"))
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .current_dir(self.dir.path())
            .env_remove("DRIFTWARDEN_LOG")
            .env("NO_COLOR", "1")
            .env("XDG_CACHE_HOME", self.cache())
            .env(TOKEN_ENV, TOKEN)
            .env(WRONG_ENV, WRONG)
            .output()
            .unwrap()
    }

    fn edit_live(&self, file: &str, from: &str, to: &str) {
        let p = self.live.join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    fn tip(&self, branch: &str) -> Option<git2::Oid> {
        let repo = git2::Repository::open_bare(&self.bare).unwrap();
        repo.find_reference(&format!("refs/heads/{branch}"))
            .ok()
            .map(|r| r.peel_to_commit().unwrap().id())
    }

    fn file_at(&self, commit: git2::Oid, path: &str) -> String {
        let repo = git2::Repository::open_bare(&self.bare).unwrap();
        let tree = repo.find_commit(commit).unwrap().tree().unwrap();
        let e = tree.get_path(Path::new(path)).unwrap();
        String::from_utf8(repo.find_blob(e.id()).unwrap().content().to_vec()).unwrap()
    }
}

fn action(r: &Report, fp: &str) -> (Action, ActionResult, String) {
    let d = r
        .drifts
        .iter()
        .find(|d| d.fingerprint == fp)
        .unwrap_or_else(|| panic!("no drift {fp}"));
    let a = d.action.clone().unwrap();
    (a.action, a.result, a.detail.unwrap_or_default())
}

fn git_source(url: &str, token_env: &str) -> DesiredSource {
    DesiredSource {
        location: DesiredLocation::Git(GitSource {
            repo: url.to_string(),
            reference: "main".to_string(),
            token_env: Some(token_env.to_string()),
            ssh_key: None,
        }),
        path: "bookstore".to_string(),
        include: vec!["**/*.yaml".into(), "**/*.yml".into(), "**/*.json".into()],
        exclude: Vec::new(),
        render: None,
    }
}

/// How many source errors a JSON report lists (the key is left out when there are none).
fn errors_in(report: &serde_json::Value) -> usize {
    report
        .get("errors")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len)
}

/// (file, line, object) of every object of a desired set, in order.
fn objects(set: &desired::DesiredSet) -> Vec<(String, usize, serde_json::Value)> {
    set.objects
        .iter()
        .map(|o| (o.file.clone(), o.line, o.value.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The server itself
// ---------------------------------------------------------------------------------------------

/// CRC-32 (IEEE), for the gzip trailer.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A gzip member holding `data` in one stored (uncompressed) deflate block.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).unwrap();
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.push(1); // BFINAL, stored
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn basic(user: &str, token: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"))
}

/// A stateless upload-pack request for one commit (protocol v0, no capabilities).
fn want_request(commit: git2::Oid) -> Vec<u8> {
    let want = format!("want {commit}\n");
    format!("{:04x}{want}00000009done\n", want.len() + 4).into_bytes()
}

#[test]
fn the_server_wants_basic_auth_and_speaks_smart_http_through_git_http_backend() {
    let w = World::new();
    let addr = w.git.addr();
    let main = w.tip("main").unwrap();
    let get = |auth: Option<String>| {
        let auth = auth
            .map(|a| format!("Authorization: Basic {a}\r\n"))
            .unwrap_or_default();
        git_http::raw_request(
            addr,
            format!(
                "GET /gitops.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
    };

    // No credentials, or wrong ones: 401 with a Basic challenge, and nothing from the backend.
    for auth in [
        None,
        Some(basic(USER, WRONG)),
        Some(basic("someone", TOKEN)),
    ] {
        let (status, headers, body) = get(auth);
        assert_eq!(status, 401);
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "www-authenticate" && v == "Basic realm=\"git\""),
            "{headers:?}"
        );
        assert!(!contains(&body, "refs/heads/main"));
    }

    // The right credentials: the backend's ref advertisement.
    let (status, headers, body) = get(Some(basic(USER, TOKEN)));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(headers.iter().any(|(k, v)| k == "content-type"
        && v == "application/x-git-upload-pack-advertisement"));
    assert!(contains(&body, "# service=git-upload-pack"));
    assert!(contains(&body, &format!("{main} refs/heads/main")));

    // A `Status:` line from the CGI becomes the HTTP status.
    let (status, _, _) = git_http::raw_request(
        addr,
        format!(
            "GET /nothing-here.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
            basic(USER, TOKEN)
        )
        .as_bytes(),
    );
    assert_eq!(status, 404);

    // A chunked request body reaches the backend whole: it answers with the pack.
    let body = want_request(main);
    let (a, b) = body.split_at(17);
    let mut req = format!(
        "POST /gitops.git/git-upload-pack HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {}\r\nContent-Type: application/x-git-upload-pack-request\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        basic(USER, TOKEN)
    )
    .into_bytes();
    for part in [a, b] {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, headers, resp) = git_http::raw_request(addr, &req);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/x-git-upload-pack-result")
    );
    assert!(resp.starts_with(b"0008NAK\n"), "{resp:?}");
    assert!(contains(&resp, "PACK"));

    // A gzip-encoded request body (as Git sends large negotiations) is inflated by the backend.
    let gz = gzip_stored(&want_request(main));
    let mut req = format!(
        "POST /gitops.git/git-upload-pack HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {}\r\nContent-Type: application/x-git-upload-pack-request\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        basic(USER, TOKEN),
        gz.len()
    )
    .into_bytes();
    req.extend_from_slice(&gz);
    let (status, _, resp) = git_http::raw_request(addr, &req);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    assert!(contains(&resp, "PACK"));

    // Injected faults: the next authenticated request gets a 500, then service resumes.
    w.git.fail_next(1);
    assert_eq!(get(None).0, 401, "a challenge does not use up a fault");
    assert_eq!(get(Some(basic(USER, TOKEN))).0, 500);
    assert_eq!(get(Some(basic(USER, TOKEN))).0, 200);

    // The log: what was asked, with which credentials, and the answer; never the token.
    let log = w.git.log();
    let summary: Vec<(&str, Auth, u16)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.auth, r.status))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("GET", Auth::Missing, 401),
            ("GET", Auth::Wrong, 401),
            ("GET", Auth::Wrong, 401),
            ("GET", Auth::Ok, 200),
            ("GET", Auth::Ok, 404),
            ("POST", Auth::Ok, 200),
            ("POST", Auth::Ok, 200),
            ("GET", Auth::Missing, 401),
            ("GET", Auth::Ok, 500),
            ("GET", Auth::Ok, 200),
        ]
    );
    assert!(log[5].chunked && log[5].content_encoding.is_none());
    assert_eq!(log[6].content_encoding.as_deref(), Some("gzip"));
    assert!(log[5].is_fetch() && !log[5].is_push());
    assert_no_token(format!("{log:?}").as_bytes(), "the request log");
}

// ---------------------------------------------------------------------------------------------
// The Git desired source
// ---------------------------------------------------------------------------------------------

#[test]
fn the_git_source_clones_and_fetches_over_http_with_the_token() {
    let w = World::new();
    let cache = w.cache();
    let set = desired::load(&git_source(&w.url(), TOKEN_ENV), &cache).unwrap();

    // The same objects, files and lines as reading the directory the repository was made of.
    let mut from_dir = git_source(&w.url(), TOKEN_ENV);
    from_dir.location = DesiredLocation::Dir(root().join("fixtures/demo/desired"));
    let expected = desired::load(&from_dir, &cache).unwrap();
    assert!(!expected.objects.is_empty());
    assert_eq!(objects(&set), objects(&expected));
    let main = w.tip("main").unwrap();
    assert_eq!(set.commit.as_deref(), Some(main.to_string().as_str()));
    assert_no_token(set.source.as_bytes(), "the source's name");

    // libgit2 asked without credentials first, was challenged, then sent the token: only
    // challenges went unauthenticated, and the pack was fetched with the token.
    let log = w.git.log();
    assert!(log.iter().all(|r| r.auth == Auth::Ok || r.status == 401));
    assert!(log.iter().all(|r| r.auth != Auth::Wrong), "{log:?}");
    assert!(
        log.iter()
            .any(|r| r.auth == Auth::Missing && r.status == 401)
    );
    assert!(log.iter().any(|r| r.method == "GET"
        && r.path == "/gitops.git/info/refs"
        && r.query == "service=git-upload-pack"
        && r.auth == Auth::Ok
        && r.status == 200));
    assert!(log.iter().any(|r| r.method == "POST"
        && r.path == "/gitops.git/git-upload-pack"
        && r.auth == Auth::Ok
        && r.status == 200));
    assert!(!log.iter().any(|r| r.is_push()));

    // A new commit on the server is fetched into the same cache and read.
    let extra = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-http\n  namespace: shop\ndata:\n  k: v\n";
    let second = commit_on(
        &w.bare,
        "main",
        "bookstore/extra.yaml",
        extra,
        ("Platform Team", "platform@example.com"),
    );
    let mark = w.git.log().len();
    let set = desired::load(&git_source(&w.url(), TOKEN_ENV), &cache).unwrap();
    assert_eq!(set.commit.as_deref(), Some(second.to_string().as_str()));
    let extra_obj = set
        .objects
        .iter()
        .find(|o| o.value["metadata"]["name"] == "from-http")
        .expect("the new commit's ConfigMap");
    assert_eq!(extra_obj.file, "bookstore/extra.yaml");
    assert_eq!(set.objects.len(), expected.objects.len() + 1);
    assert!(
        w.git
            .log_since(mark)
            .iter()
            .any(|r| r.path == "/gitops.git/git-upload-pack" && r.auth == Auth::Ok)
    );

    // One bare cache, named by a hash; neither it nor any other file holds the token, and its
    // config names no remote URL with a credential.
    let repos = repos_under(&cache);
    assert_eq!(repos.len(), 1, "{repos:?}");
    assert!(repos[0].starts_with(cache.join("repos")));
    let cache_repo = git2::Repository::open_bare(&repos[0]).unwrap();
    assert!(
        cache_repo.remotes().unwrap().is_empty(),
        "remotes are anonymous"
    );
    assert_clean_git_config(&repos[0]);
    for (p, bytes) in files_under(&cache) {
        assert_no_token(&bytes, &p.display().to_string());
    }
    assert_no_token(git_text_of(&repos[0]).as_bytes(), "the cache's commits");
}

#[test]
fn a_wrong_token_is_an_input_error_naming_the_url_never_the_token() {
    let w = World::new();
    let out = w.binary(WRONG_ENV, "local", &["diff"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains(&w.url()), "{stderr}");
    assert!(stderr.contains("authentication to"), "{stderr}");
    assert!(
        stderr.contains(&format!("rejected the token in {WRONG_ENV}")),
        "{stderr}"
    );
    assert_no_token(&out.stdout, "stdout");
    assert_no_token(&out.stderr, "stderr");

    // The server saw the wrong credentials a few times, then nothing: never the right ones, and
    // nothing was served.
    let log = w.git.log();
    let wrong = log.iter().filter(|r| r.auth == Auth::Wrong).count();
    assert!((1..=3).contains(&wrong), "{log:?}");
    assert!(log.iter().all(|r| r.status == 401), "{log:?}");

    // A token variable that is not set is the same kind of error, and sends nothing.
    let mark = w.git.log().len();
    let out = w.binary("DRIFTWARDEN_TEST_HTTPS_UNSET_TOKEN", "local", &["diff"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("DRIFTWARDEN_TEST_HTTPS_UNSET_TOKEN (the Git token) is not set"),
        "{stderr}"
    );
    assert!(w.git.log_since(mark).is_empty());

    // The right token reads the demo and finds its drift.
    let out = w.binary(TOKEN_ENV, "local", &["diff"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_token(&out.stdout, "stdout");
    assert_no_token(&out.stderr, "stderr");
}

#[test]
fn a_server_error_is_a_runtime_failure_and_the_next_run_reads_again() {
    let w = World::new();
    w.git.fail_next(1);
    let out = w.binary(TOKEN_ENV, "local", &["diff", "-o", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["partial"], true, "{report}");
    assert_eq!(errors_in(&report), 1, "{report}");
    let message = report["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("cannot fetch {}", w.url())),
        "{message}"
    );
    assert!(message.contains("500"), "{message}");
    assert!(
        w.git
            .log()
            .iter()
            .any(|r| r.status == 500 && r.auth == Auth::Ok)
    );

    let out = w.binary(TOKEN_ENV, "local", &["diff", "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(errors_in(&report), 0, "{report}");
    assert_eq!(report["summary"]["partial"], false);
}

// ---------------------------------------------------------------------------------------------
// Pull-request branches
// ---------------------------------------------------------------------------------------------

#[test]
fn pull_request_branches_are_pushed_over_http_and_foreign_commits_are_kept() {
    let w = World::new();
    let report = w.run("github");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let main = w.tip("main").unwrap();
    for fp in PR_FINGERPRINTS {
        let (a, res, detail) = action(&report, fp);
        assert_eq!(
            (a, res),
            (Action::PullRequest, ActionResult::Done),
            "{fp}: {detail}"
        );
        // The branch is on the HTTP server's repository: one commit on main, by the configured
        // author, marked with the fingerprint, and the pull request points at it.
        let branch = format!("driftwarden/demo/{fp}");
        let tip = w
            .tip(&branch)
            .unwrap_or_else(|| panic!("{branch} was not pushed"));
        let repo = git2::Repository::open_bare(&w.bare).unwrap();
        let c = repo.find_commit(tip).unwrap();
        assert_eq!(c.parent_id(0).unwrap(), main);
        assert_eq!(c.author().email(), Ok(AUTHOR_EMAIL));
        assert!(
            c.message()
                .unwrap()
                .contains(&format!("Driftwarden-Fingerprint: {fp}"))
        );
        let pr = w
            .github
            .items()
            .into_iter()
            .find(|i| i.head.as_deref() == Some(branch.as_str()))
            .unwrap_or_else(|| panic!("no pull request for {branch}"));
        assert_eq!(pr.base.as_deref(), Some("main"));
    }
    let dep = format!("driftwarden/demo/{FP_DEPLOYMENT}");
    let dep_tip = w.tip(&dep).unwrap();
    let web = w.file_at(dep_tip, "bookstore/web.yaml");
    // The HPA manages the count: the pull request unpins it (removes the line) instead.
    assert!(!web.contains("replicas:"), "{web}");
    assert!(web.contains("bookstore-web:2.4.2-hotfix1"), "{web}");

    // Pushed through receive-pack with the token; nothing unauthenticated got further than the
    // challenge.
    let log = w.git.log();
    let pushes: Vec<_> = log.iter().filter(|r| r.is_push_upload()).collect();
    assert_eq!(pushes.len(), PR_FINGERPRINTS.len(), "{log:?}");
    assert!(pushes.iter().all(|r| r.auth == Auth::Ok && r.status == 200));
    assert!(log.iter().all(|r| r.auth == Auth::Ok || r.status == 401));

    // Nothing changed: nothing is pushed again.
    let mark = w.git.log().len();
    let report = w.run("github");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(!w.git.log_since(mark).iter().any(|r| r.is_push_upload()));
    assert_eq!(w.tip(&dep), Some(dep_tip));

    // Alice adds a commit to the branch on the server. The drift changes, so driftwarden would
    // rebuild the branch, but it carries someone else's commit now: not overwritten.
    let hers = commit_on(
        &w.bare,
        &dep,
        "NOTE.md",
        "# keep replicas at 6\n",
        ("Alice", "alice@example.com"),
    );
    w.edit_live(
        "shop-workloads.yaml",
        "\n    replicas: 6\n",
        "\n    replicas: 9\n",
    );
    let mark = w.git.log().len();
    let report = w.run("github");
    let (a, res, detail) = action(&report, FP_DEPLOYMENT);
    assert_eq!(
        (a, res),
        (Action::PullRequest, ActionResult::Skipped),
        "{detail}"
    );
    assert!(
        detail.contains("carries 1 commit(s) driftwarden did not make"),
        "{detail}"
    );
    assert!(detail.contains("Alice <alice@example.com>"), "{detail}");
    assert_eq!(w.tip(&dep), Some(hers));
    // The branch was fetched over HTTP (that is how Alice's commit was seen), never pushed.
    let since = w.git.log_since(mark);
    assert!(since.iter().any(|r| r.is_fetch() && r.auth == Auth::Ok));
    assert!(!since.iter().any(|r| r.is_push_upload()), "{since:?}");
}

#[test]
fn a_failed_push_is_reported_and_the_next_run_pushes_the_branch() {
    let w = World::new();
    // The first authenticated request of the first push fails.
    w.git.fail_next_matching(1, "git-receive-pack");
    let report = w.run("github");
    let failed: Vec<_> = PR_FINGERPRINTS
        .iter()
        .filter(|fp| action(&report, fp).1 == ActionResult::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", report.drifts);
    let fp = *failed[0];
    let (_, _, detail) = action(&report, fp);
    assert!(detail.contains(&w.url()), "{detail}");
    assert!(detail.contains("500"), "{detail}");
    assert_no_token(detail.as_bytes(), "the action detail");
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(w.tip(&format!("driftwarden/demo/{fp}")).is_none());
    for other in PR_FINGERPRINTS.iter().filter(|o| **o != fp) {
        assert!(w.tip(&format!("driftwarden/demo/{other}")).is_some());
    }

    let report = w.run("github");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let (a, res, detail) = action(&report, fp);
    assert_eq!(
        (a, res),
        (Action::PullRequest, ActionResult::Done),
        "{detail}"
    );
    for fp in PR_FINGERPRINTS {
        assert!(w.tip(&format!("driftwarden/demo/{fp}")).is_some(), "{fp}");
    }
}

#[test]
fn the_local_forge_mirrors_the_desired_repository_over_http() {
    let w = World::new();
    let report = w.run("local");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let local = w.dir.path().join("prs/repo.git");
    let repo = git2::Repository::open_bare(&local).unwrap();
    let main = repo
        .find_reference("refs/heads/main")
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id();
    assert_eq!(Some(main), w.tip("main"), "main mirrors the served main");
    let branch = repo
        .find_reference(&format!("refs/heads/driftwarden/demo/{FP_DEPLOYMENT}"))
        .unwrap()
        .peel_to_commit()
        .unwrap();
    assert_eq!(branch.parent_id(0).unwrap(), main);
    // The local forge pushes nothing to the desired repository.
    assert!(!w.git.log().iter().any(|r| r.is_push()));
    assert!(
        w.tip(&format!("driftwarden/demo/{FP_DEPLOYMENT}"))
            .is_none()
    );
    assert_clean_git_config(&local);
}

// ---------------------------------------------------------------------------------------------
// The secret canary
// ---------------------------------------------------------------------------------------------

#[test]
fn the_token_appears_in_no_output_log_report_file_commit_or_git_config() {
    let w = World::new();
    let report_file = w.dir.path().join("report.json");
    let report_arg = report_file.display().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args([
            "reconcile",
            "-o",
            "json",
            "--json-report",
            &report_arg,
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--config",
        ])
        .arg({
            let cfg = w.dir.path().join("driftwarden.yaml");
            std::fs::write(&cfg, w.config_text(TOKEN_ENV, "github")).unwrap();
            cfg
        })
        .current_dir(w.dir.path())
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .env("XDG_CACHE_HOME", w.cache())
        .env(TOKEN_ENV, TOKEN)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");

    // The run did the work the canary must survive: fetched, pushed, opened pull requests, and
    // logged at debug level in JSON.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(errors_in(&report), 0, "{report}");
    for fp in PR_FINGERPRINTS {
        assert!(w.tip(&format!("driftwarden/demo/{fp}")).is_some(), "{fp}");
    }
    assert!(
        w.git
            .log()
            .iter()
            .any(|r| r.is_push_upload() && r.auth == Auth::Ok)
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with('{') && l.contains("\"level\":\"DEBUG\"")),
        "no debug JSON log lines:\n{stderr}"
    );

    assert_no_token(&out.stdout, "stdout");
    assert_no_token(&out.stderr, "stderr (the debug log)");
    assert_no_token(&std::fs::read(&report_file).unwrap(), "the JSON report");

    // Every file the run could have written (state, work repositories, cache) and the served
    // repository, byte for byte; every commit; every Git config.
    for (p, bytes) in files_under(w.dir.path()) {
        assert_no_token(&bytes, &p.display().to_string());
    }
    let repos = repos_under(w.dir.path());
    assert!(repos.contains(&w.bare), "{repos:?}");
    assert!(repos.iter().any(|r| r.starts_with(w.state())), "{repos:?}");
    assert!(repos.iter().any(|r| r.starts_with(w.cache())), "{repos:?}");
    for r in &repos {
        assert_clean_git_config(r);
        assert_no_token(
            git_text_of(r).as_bytes(),
            &format!("commits of {}", r.display()),
        );
    }

    // Nor anything sent to the GitHub API besides the Authorization header.
    let mut sent = String::new();
    for l in w.github.log() {
        sent.push_str(&l.path);
        sent.push_str(&l.query);
        sent.push_str(&l.body);
    }
    for i in w.github.items() {
        sent.push_str(&i.title);
        sent.push_str(&i.body);
    }
    assert_no_token(sent.as_bytes(), "the forge requests");
}
