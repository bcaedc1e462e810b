//! The default Action's installer (scripts/action-install) against a loopback HTTP server that
//! serves a release the way GitHub lays one out (`<tag>/<asset>`): a verified download is used
//! and cached, a tampered one is refused before anything from it runs, and a ref without a
//! release falls back to building from source with a notice.

#[path = "support/common.rs"]
mod common;
#[path = "support/http.rs"]
mod http;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};

use common::{code, root, stderr, stdout};

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Files by URL path, and every path requested.
#[derive(Clone, Default)]
struct Release {
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Release {
    fn serve(&self) -> String {
        let addr = http::start_in_thread(self.clone(), |r: Release, req| async move {
            let path = req.uri().path().to_string();
            r.requests.lock().unwrap().push(path.clone());
            match r.files.lock().unwrap().get(&path) {
                Some(body) => Response::new(Full::new(Bytes::from(body.clone()))),
                None => Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(Full::new(Bytes::from_static(b"Not Found")))
                    .unwrap(),
            }
        });
        format!("http://{addr}/acme/driftwarden/releases/download")
    }

    fn put(&self, tag: &str, name: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(
            format!("/acme/driftwarden/releases/download/{tag}/{name}"),
            body,
        );
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A release archive as release.yml packs it: `driftwarden-<tag>-<target>/driftwarden`.
fn archive(tag: &str, binary: &Path) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let top = format!("driftwarden-{tag}-{TARGET}");
    std::fs::create_dir(dir.path().join(&top)).unwrap();
    std::fs::copy(binary, dir.path().join(&top).join("driftwarden")).unwrap();
    let file = dir.path().join("a.tar.gz");
    let out = Command::new("tar")
        .args(["--use-compress-program=gzip -1", "-cf"])
        .arg(&file)
        .arg("-C")
        .arg(dir.path())
        .arg(&top)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read(file).unwrap()
}

/// The installer run as the Action's install step runs it.
struct Runner {
    dir: tempfile::TempDir,
    releases_url: String,
}

impl Runner {
    fn new(releases_url: String) -> Runner {
        Runner {
            dir: tempfile::tempdir().unwrap(),
            releases_url,
        }
    }

    fn tool_cache(&self) -> PathBuf {
        self.dir.path().join("toolcache")
    }

    /// Runs `scripts/action-install <verb>` for `tag`; returns the output and the step outputs.
    fn run(&self, verb: &str, tag: &str, cargo: &Path) -> (Output, BTreeMap<String, String>) {
        let outputs = self.dir.path().join(format!("output-{verb}-{tag}"));
        std::fs::write(&outputs, "").unwrap();
        let out = Command::new("bash")
            .arg(root().join("scripts/action-install"))
            .arg(verb)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", self.dir.path())
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &outputs)
            .env("RUNNER_OS", "Linux")
            .env("RUNNER_ARCH", "X64")
            .env("RUNNER_TOOL_CACHE", self.tool_cache())
            .env("DRIFTWARDEN_REF", tag)
            .env("DRIFTWARDEN_REPOSITORY", "acme/driftwarden")
            .env("DRIFTWARDEN_RELEASES_URL", &self.releases_url)
            .env("DRIFTWARDEN_SOURCE_DIR", root())
            .env("DRIFTWARDEN_CARGO", cargo)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        let parsed = std::fs::read_to_string(&outputs)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (out, parsed)
    }
}

/// A cargo that must never run: the tests that download must not build.
fn no_cargo(dir: &Path) -> PathBuf {
    dir.join("cargo-is-not-installed")
}

#[test]
fn a_verified_release_is_installed_then_used_from_the_cache() {
    let release = Release::default();
    let url = release.serve();
    let binary = Path::new(env!("CARGO_BIN_EXE_driftwarden"));
    let tag = "v9.8.7";
    let asset = format!("driftwarden-{tag}-{TARGET}.tar.gz");
    let tarball = archive(tag, binary);
    let sums = format!(
        "{}  driftwarden-{tag}-aarch64-apple-darwin.tar.gz\n{}  {asset}\n",
        "0".repeat(64),
        sha256_hex(&tarball)
    );
    release.put(tag, &asset, tarball);
    release.put(
        tag,
        &format!("driftwarden-{tag}-SHA256SUMS"),
        sums.into_bytes(),
    );
    let runner = Runner::new(url);
    let cargo = no_cargo(runner.dir.path());

    // plan: where the cache lives and under which key.
    let (out, plan) = runner.run("plan", tag, &cargo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(plan["release"], "true");
    assert_eq!(plan["cache-key"], format!("driftwarden-{tag}-{TARGET}"));
    let cache_dir = PathBuf::from(&plan["cache-dir"]);
    assert!(cache_dir.starts_with(runner.tool_cache()), "{cache_dir:?}");

    // install: downloaded, verified, unpacked into the cache directory.
    let (out, got) = runner.run("install", tag, &cargo);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(got["source"], "release");
    assert_eq!(PathBuf::from(&got["bin"]), cache_dir.join("driftwarden"));
    assert!(stdout(&out).contains("SHA-256"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("::error"), "{}", stdout(&out));
    assert_eq!(
        release.requests(),
        vec![
            format!("/acme/driftwarden/releases/download/{tag}/driftwarden-{tag}-SHA256SUMS"),
            format!("/acme/driftwarden/releases/download/{tag}/{asset}"),
        ]
    );
    // The installed binary is the released one and runs.
    assert_eq!(
        std::fs::read(&got["bin"]).unwrap(),
        std::fs::read(binary).unwrap()
    );
    let version = Command::new(&got["bin"]).arg("--version").output().unwrap();
    assert_eq!(code(&version), 0);
    assert!(stdout(&version).starts_with("driftwarden "));

    // The next run finds it in the cache directory (what actions/cache restores) and downloads
    // nothing.
    let (out, again) = runner.run("install", tag, &cargo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(again["source"], "cache");
    assert_eq!(again["bin"], got["bin"]);
    assert_eq!(release.requests().len(), 2, "{:?}", release.requests());

    // A cached binary that changed since it was installed is not used: it is downloaded anew.
    std::fs::write(&got["bin"], b"#!/bin/sh\necho tampered\n").unwrap();
    let (out, fresh) = runner.run("install", tag, &cargo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(fresh["source"], "release");
    assert_eq!(
        std::fs::read(&fresh["bin"]).unwrap(),
        std::fs::read(binary).unwrap()
    );
    assert_eq!(release.requests().len(), 4);
}

#[test]
fn a_download_whose_checksum_differs_is_refused_and_never_run() {
    let release = Release::default();
    let url = release.serve();
    let runner = Runner::new(url);
    let cargo = no_cargo(runner.dir.path());
    let tag = "v9.8.6";
    let asset = format!("driftwarden-{tag}-{TARGET}.tar.gz");
    // The checksum file lists the genuine archive; the server hands out another one whose
    // "driftwarden" leaves a mark when it runs.
    let genuine = archive(tag, Path::new(env!("CARGO_BIN_EXE_driftwarden")));
    let marker = runner.dir.path().join("the-download-ran");
    let evil = runner.dir.path().join("evil");
    std::fs::write(&evil, format!("#!/bin/sh\ntouch '{}'\n", marker.display())).unwrap();
    let tampered = archive(tag, &evil);
    release.put(tag, &asset, tampered.clone());
    release.put(
        tag,
        &format!("driftwarden-{tag}-SHA256SUMS"),
        format!("{}  {asset}\n", sha256_hex(&genuine)).into_bytes(),
    );

    let (out, got) = runner.run("install", tag, &cargo);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let text = stdout(&out);
    let error = text
        .lines()
        .find(|l| l.starts_with("::error"))
        .unwrap_or_else(|| panic!("no error annotation: {text}"));
    assert!(
        error.contains(&format!("checksum mismatch for {asset}")),
        "{error}"
    );
    assert!(error.contains(&sha256_hex(&genuine)), "{error}");
    assert!(error.contains(&sha256_hex(&tampered)), "{error}");
    assert!(
        stderr(&out).contains("nothing from it was run"),
        "{}",
        stderr(&out)
    );
    // Nothing installed, no output for the next step, nothing executed, no build attempted.
    assert!(!got.contains_key("bin"), "{got:?}");
    assert!(!marker.exists(), "the tampered download ran");
    let installed: Vec<_> = walk(&runner.tool_cache())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "driftwarden"))
        .collect();
    assert!(installed.is_empty(), "{installed:?}");

    // An archive the checksum file does not list is refused the same way.
    release.put(
        tag,
        &format!("driftwarden-{tag}-SHA256SUMS"),
        format!(
            "{}  driftwarden-{tag}-aarch64-apple-darwin.tar.gz\n",
            sha256_hex(&genuine)
        )
        .into_bytes(),
    );
    let (out, got) = runner.run("install", tag, &cargo);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains(&format!("does not list {asset}")),
        "{}",
        stdout(&out)
    );
    assert!(!got.contains_key("bin"));
    assert!(!marker.exists());
}

#[test]
fn a_ref_without_a_release_is_built_from_source_with_a_notice() {
    let release = Release::default();
    let url = release.serve();
    let runner = Runner::new(url);
    // The stand-in for cargo records its arguments and "installs" the binary under test where
    // `cargo install --root` puts it.
    let log = runner.dir.path().join("cargo-args");
    let cargo = runner.dir.path().join("cargo");
    std::fs::write(
        &cargo,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\nwhile [ $# -gt 0 ]; do [ \"$1\" = --root ] && root=$2; shift; done\n\
             mkdir -p \"$root/bin\" && cp '{}' \"$root/bin/driftwarden\"\n",
            log.display(),
            env!("CARGO_BIN_EXE_driftwarden")
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&cargo).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&cargo, perms).unwrap();

    // A release tag the repository never released: the checksum file is 404.
    let (out, got) = runner.run("install", "v0.0.404", &cargo);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let notice = stdout(&out)
        .lines()
        .find(|l| l.starts_with("::notice"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no notice: {}", stdout(&out)));
    assert!(
        notice.contains("acme/driftwarden has no release v0.0.404"),
        "{notice}"
    );
    assert!(
        notice.contains("building driftwarden from the Action's source"),
        "{notice}"
    );
    assert!(notice.contains("release tag"), "{notice}");
    assert_eq!(got["source"], "source");
    let args = std::fs::read_to_string(&log).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(args[..3], ["install", "--locked", "--path"]);
    assert_eq!(Path::new(args[3]), root());
    assert!(
        args.contains(&"--bin") && args.contains(&"driftwarden"),
        "{args:?}"
    );
    let version = Command::new(&got["bin"]).arg("--version").output().unwrap();
    assert_eq!(code(&version), 0);
    // The plan looks a release tag up; action.yml saves only downloads (source=release).
    let (_, plan) = runner.run("plan", "v0.0.404", &cargo);
    assert_eq!(plan["release"], "true", "a release tag is looked up");
    assert_eq!(
        release.requests(),
        vec!["/acme/driftwarden/releases/download/v0.0.404/driftwarden-v0.0.404-SHA256SUMS"]
    );

    // A branch is no release tag: no request at all, a build from source with the reason.
    std::fs::remove_file(&log).unwrap();
    let (out, got) = runner.run("install", "main", &cargo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains(
            "::notice title=driftwarden install::the Action's ref main is not a release tag"
        ),
        "{}",
        stdout(&out)
    );
    assert_eq!(got["source"], "source");
    assert!(log.exists());
    assert_eq!(release.requests().len(), 1);
    let (_, plan) = runner.run("plan", "main", &cargo);
    assert_eq!(plan["release"], "false");
}

#[test]
fn a_major_tag_or_a_release_commit_gets_the_release_its_cargo_toml_names() {
    let release = Release::default();
    let url = release.serve();
    let runner = Runner::new(url);
    let cargo = no_cargo(runner.dir.path());
    // The Action's own Cargo.toml (this repository's) names the release.
    let tag = format!("v{}", env!("CARGO_PKG_VERSION"));
    let major = tag.split('.').next().unwrap().to_string();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let asset = format!("driftwarden-{tag}-{TARGET}.tar.gz");
    let tarball = archive(&tag, Path::new(env!("CARGO_BIN_EXE_driftwarden")));
    release.put(
        &tag,
        &format!("driftwarden-{tag}-SHA256SUMS"),
        format!("{}  {asset}\n", sha256_hex(&tarball)).into_bytes(),
    );
    release.put(&tag, &asset, tarball);
    release.put(
        &tag,
        &format!("driftwarden-{tag}-COMMIT"),
        format!("{commit}\n").into_bytes(),
    );

    // `@v0`: the release, cached under the release's own key (so a moved tag misses the cache).
    let (_, plan) = runner.run("plan", &major, &cargo);
    assert_eq!(plan["release"], "true");
    assert_eq!(plan["cache-key"], format!("driftwarden-{tag}-{TARGET}"));
    let (out, got) = runner.run("install", &major, &cargo);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(got["source"], "release");
    assert!(stdout(&out).contains(&format!("the Action's ref {major}: release {tag}")));

    // `@<commit>` of the release: the release, after its COMMIT asset matched.
    let (_, plan) = runner.run("plan", commit, &cargo);
    assert_eq!(plan["cache-key"], format!("driftwarden-{commit}-{TARGET}"));
    let (out, got) = runner.run("install", commit, &cargo);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(got["source"], "release");

    // Another commit: never the release's binary, a source build (here: no cargo, so it fails
    // saying so).
    let other = "fedcba9876543210fedcba9876543210fedcba98";
    let (out, got) = runner.run("install", other, &cargo);
    assert!(
        stdout(&out).contains(&format!(
            "commit {other} is not the commit release {tag} was built from"
        )),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("cargo is not installed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(code(&out), 1);
    assert!(!got.contains_key("bin"));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
