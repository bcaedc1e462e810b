//! One run at a time per state directory (src/statelock.rs), through the binary: a second run
//! waits for the holder and goes on when it is released, or exits 1 naming the holder after
//! `state_lock_timeout`; a lock record left by a dead process is taken over.

#[path = "support/common.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{bin, code, run, stderr, stdout, write};
use driftwarden::statelock::{self, Holder};

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: shop\ndata:\n  LEVEL: info\n";
const CM_LIVE: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: shop\n  uid: 1b4c\n  resourceVersion: \"42\"\ndata:\n  LEVEL: debug\n";

/// A config over a desired directory and a live snapshot with one drift; the state directory is
/// `<dir>/state`.
fn setup(dir: &Path, timeout: &str) -> PathBuf {
    write(dir, "desired/cm.yaml", CM);
    write(dir, "live/cm.yaml", CM_LIVE);
    write(
        dir,
        "config.yaml",
        &format!(
            "version: 1\nstate_dir: state\nstate_lock_timeout: {timeout}\ntargets:\n  - name: a\n    desired: {{dir: desired}}\n    live: {{snapshot: live}}\n"
        ),
    )
}

#[test]
fn a_second_run_exits_1_naming_the_holder_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), "1s");
    let state = dir.path().join("state");
    let held = statelock::acquire(&state, Duration::ZERO, "reconcile").unwrap();

    for command in ["reconcile", "diff"] {
        let out = run(bin().args([command, "--config"]).arg(&cfg));
        assert_eq!(code(&out), 1, "{command}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{command}: {err}"
        );
        assert!(
            err.contains(&format!("on host {}", statelock::hostname())),
            "{err}"
        );
        assert!(err.contains("running `reconcile`"), "{err}");
        assert!(err.contains("state_lock_timeout"), "{err}");
        assert!(stdout(&out).is_empty(), "no report: {}", stdout(&out));
    }
    // Nothing was read or written under the state directory but the lock.
    let names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["lock".to_string()]);

    drop(held);
    let out = run(bin().args(["reconcile", "--config"]).arg(&cfg));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

#[test]
fn a_second_run_waits_for_the_first_and_then_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), "10m");
    let state = dir.path().join("state");
    let held = statelock::acquire(&state, Duration::ZERO, "watch").unwrap();

    let mut child = bin()
        .args(["diff", "-o", "json", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run says it is waiting (and for whom), then release.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = lines
            .next()
            .expect("the run reports it waits before it ends")
            .unwrap();
        seen.push(line.clone());
        if line.contains("waiting for another run's state lock") {
            assert!(
                line.contains(&format!("pid {}", std::process::id())),
                "{line}"
            );
            break;
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "still waiting: {seen:?}"
    );
    drop(held);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{seen:?} {rest:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["drifted"], 1);
    // Released at the end: the record is empty.
    assert_eq!(
        std::fs::read_to_string(statelock::lock_path(&state)).unwrap(),
        ""
    );
}

#[test]
fn a_lock_left_by_a_dead_process_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), "0s");
    let state = dir.path().join("state");
    // A real process that has ended: its pid is the stale holder.
    let mut gone = std::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .arg("version")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let dead_pid = gone.id();
    assert!(gone.wait().unwrap().success());
    let stale = Holder {
        pid: dead_pid,
        host: statelock::hostname(),
        since: 1_700_000_000,
        command: "reconcile".to_string(),
    };
    write(&state, "lock", &serde_json::to_string(&stale).unwrap());

    let out = run(bin().args(["reconcile", "--config"]).arg(&cfg));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("ended without releasing it"), "{err}");
    assert!(err.contains(&format!("pid {dead_pid}")), "{err}");
    assert_eq!(
        std::fs::read_to_string(statelock::lock_path(&state)).unwrap(),
        "",
        "the stale record is replaced, then emptied at the end"
    );
}

/// A state directory that cannot be written (here: its parent is a regular file, which stops
/// root too, unlike permissions; a full disk fails the same first write): exit 1 naming the
/// path, no report, nothing done.
#[test]
fn a_state_directory_that_cannot_be_written_stops_the_run_before_anything_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), "0s");
    write(dir.path(), "blocker", "a file, not a directory");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("state_dir: state", "state_dir: blocker/state");
    std::fs::write(&cfg, text).unwrap();
    let out = run(bin().args(["reconcile", "--config"]).arg(&cfg));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("cannot open the state lock"), "{err}");
    assert!(err.contains("blocker/state/lock"), "{err}");
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
}
