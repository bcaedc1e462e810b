//! Build metadata for `driftwarden version`, `--version` and the JSON report: the commit the
//! binary was built from and the build date, as the environment variables
//! `DRIFTWARDEN_COMMIT` and `DRIFTWARDEN_BUILD_DATE` that `src/version.rs` reads with `env!`.
//!
//! The commit comes from, in order: `DRIFTWARDEN_BUILD_COMMIT` (set by builds without Git, such
//! as the container image's), `git rev-parse HEAD` in a checkout, the `.cargo_vcs_info.json`
//! that `cargo package` writes into a crate tarball, else `unknown`. The date is UTC, from
//! `SOURCE_DATE_EPOCH` when set (reproducible builds), else the clock. Nothing here fails the
//! build: missing Git or a malformed file only means `unknown`.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DRIFTWARDEN_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");

    let commit = std::env::var("DRIFTWARDEN_BUILD_COMMIT")
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| is_commit(c))
        .or_else(git_commit)
        .or_else(vcs_info_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=DRIFTWARDEN_COMMIT={commit}");

    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs())
        })
        .unwrap_or(0);
    println!(
        "cargo:rustc-env=DRIFTWARDEN_BUILD_DATE={}",
        civil_date(secs)
    );
}

/// A full or abbreviated hexadecimal commit id.
fn is_commit(s: &str) -> bool {
    (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runs git in the crate's directory; `None` when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env_dir())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn env_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_string())
}

/// HEAD's commit in a Git checkout of this crate (not of a repository the crate's tarball was
/// unpacked into: the checkout's top level must be the crate's directory). Rebuilds when HEAD
/// or the branch it points to moves.
fn git_commit() -> Option<String> {
    let top = git(&["rev-parse", "--show-toplevel"])?;
    let same = |a: &str, b: &str| {
        Path::new(a)
            .canonicalize()
            .ok()
            .is_some_and(|a| Path::new(b).canonicalize().ok() == Some(a))
    };
    if !same(&top, &env_dir()) {
        return None;
    }
    let commit = git(&["rev-parse", "HEAD"]).filter(|c| is_commit(c))?;
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            rerun_if_exists(&absolute(&p));
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--git-path", &branch])
    {
        rerun_if_exists(&absolute(&p));
    }
    Some(commit)
}

/// Watches a file that exists. Cargo re-runs a build script on every build while a watched file
/// is missing, and with it rebuilds the crate: a checkout without `packed-refs` (a worktree, a
/// fresh `git init`), or without `.cargo_vcs_info.json` (every checkout), would rebuild
/// driftwarden on every cargo command.
fn rerun_if_exists(path: &str) {
    if Path::new(path).exists() {
        println!("cargo:rerun-if-changed={path}");
    }
}

fn absolute(p: &str) -> String {
    let path = Path::new(p);
    if path.is_absolute() {
        p.to_string()
    } else {
        Path::new(&env_dir()).join(path).display().to_string()
    }
}

/// The commit `cargo package` recorded in the tarball: `{"git": {"sha1": "<hex>"}, ...}`.
fn vcs_info_commit() -> Option<String> {
    let path = Path::new(&env_dir()).join(".cargo_vcs_info.json");
    rerun_if_exists(&path.display().to_string());
    let text = std::fs::read_to_string(path).ok()?;
    let after = &text[text.find("\"sha1\"")? + "\"sha1\"".len()..];
    let start = after.find('"')? + 1;
    let len = after[start..].find('"')?;
    let sha = &after[start..start + len];
    is_commit(sha).then(|| sha.to_string())
}

/// `YYYY-MM-DD` (UTC) of a Unix time (Howard Hinnant's days-to-civil algorithm).
fn civil_date(secs: u64) -> String {
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
