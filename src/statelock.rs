//! One run at a time per state directory.
//!
//! `reconcile`, `diff` over a config, `watch` and `trust reset` take an exclusive lock on
//! `<state_dir>/lock` before they read anything under the state directory (remediation history,
//! the local forge, the audit log). The lock is an advisory `flock` held on the open file for
//! the whole run; the kernel releases it when the process ends, however it ends, so a lock left
//! by a killed run never blocks the next one. While it holds the lock, a run keeps its identity
//! in the file as JSON (pid, host, start time, command); it empties the file when it ends
//! normally.
//!
//! A second run tries again every 100 ms for up to `state_lock_timeout` and then fails (exit 1)
//! naming the holder. A run that gets the lock and finds the file not empty knows the previous
//! holder ended without releasing it (killed, crashed): it says so in a warning naming that
//! holder, and replaces the record with its own.
//!
//! The file is never removed: removing a flock'ed file lets two processes each lock a different
//! inode of the same path.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The lock file's name under the state directory.
pub const LOCK_FILE: &str = "lock";

/// How often a waiting run tries again.
const RETRY: Duration = Duration::from_millis(100);

/// Who holds (or held) the lock, as written in the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// Unix seconds when the holder took the lock.
    pub since: u64,
    /// The holder's command (`reconcile`, `watch`, ...).
    #[serde(default)]
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on host {} since {} (unix {})",
            self.pid,
            self.host,
            crate::audit::rfc3339(self.since),
            self.since
        )?;
        if !self.command.is_empty() {
            write!(f, ", running `{}`", self.command)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open the state lock {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot record this run in the state lock {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another run holds the state directory's lock {} ({}); waited {}s (state_lock_timeout)",
        path.display(),
        holder.as_ref().map_or_else(|| "holder not recorded yet".to_string(), |h| h.to_string()),
        waited.as_secs()
    )]
    Busy {
        path: PathBuf,
        holder: Option<Holder>,
        waited: Duration,
    },
}

/// The held lock; dropping it empties the record and releases the lock.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
    /// The record found in the file when the lock was taken: a holder that ended without
    /// releasing it.
    pub stale: Option<Holder>,
}

impl StateLock {
    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Empty the record first, so the next holder does not take this run for a dead one; the
        // lock itself goes with the file descriptor.
        if let Err(e) = self.file.set_len(0).and_then(|()| self.file.sync_all()) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot empty the state lock record");
        }
        let _ = self.file.unlock();
    }
}

/// The lock file of a state directory.
pub fn lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join(LOCK_FILE)
}

/// Takes the state directory's lock for `command`, waiting up to `timeout` for another run to
/// release it.
pub fn acquire(state_dir: &Path, timeout: Duration, command: &str) -> Result<StateLock, LockError> {
    let path = lock_path(state_dir);
    let open_err = |source| LockError::Open {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(open_err)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(open_err)?;
    let start = Instant::now();
    let mut announced = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                let waited = start.elapsed();
                if waited >= timeout {
                    return Err(LockError::Busy {
                        holder: read_holder(&mut file),
                        path,
                        waited,
                    });
                }
                if !announced {
                    announced = true;
                    match read_holder(&mut file) {
                        Some(h) => {
                            tracing::warn!(holder = %h, "waiting for another run's state lock")
                        }
                        None => tracing::warn!("waiting for another run's state lock"),
                    }
                }
                std::thread::sleep(RETRY.min(timeout - waited));
            }
            Err(TryLockError::Error(source)) => return Err(LockError::Lock { path, source }),
        }
    }
    let stale = read_holder(&mut file);
    if let Some(h) = &stale {
        tracing::warn!(
            holder = %h,
            "the state lock was left by a run that ended without releasing it; taken over"
        );
    }
    let me = Holder {
        pid: std::process::id(),
        host: hostname(),
        since: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        command: command.to_string(),
    };
    let write_err = |source| LockError::Write {
        path: path.clone(),
        source,
    };
    let text = serde_json::to_string(&me).map_err(|e| write_err(std::io::Error::other(e)))?;
    file.set_len(0).map_err(write_err)?;
    file.seek(SeekFrom::Start(0)).map_err(write_err)?;
    file.write_all(text.as_bytes()).map_err(write_err)?;
    file.write_all(b"\n").map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    Ok(StateLock { file, path, stale })
}

/// The record in the lock file; `None` when empty or unreadable (a holder between truncating
/// and writing, or a file written by something else).
fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// Writes `bytes` to `path` atomically and durably: a temporary file in the same directory,
/// flushed to disk, renamed over `path`, and the directory flushed so the rename survives a
/// crash. A reader sees the old content or the new, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_parent(path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Creates `path` with `bytes` only if it does not exist, atomically and durably (the content
/// is complete before the name appears); `AlreadyExists` when it does.
pub fn create_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let res = (|| {
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        // A hard link fails when the name exists: the first writer wins, whole.
        std::fs::hard_link(&tmp, path)?;
        sync_parent(path)
    })();
    let _ = std::fs::remove_file(&tmp);
    res
}

/// `<dir>/.<name>.<pid>.tmp` beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Flushes the directory holding `path` (its entries), where the platform allows it.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// This machine's name: the kernel's, then `$HOSTNAME`, else `unknown`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_times_out_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), Duration::ZERO, "reconcile").unwrap();
        assert!(first.stale.is_none());
        let err = acquire(dir.path(), Duration::from_millis(200), "diff").unwrap_err();
        match &err {
            LockError::Busy { holder, .. } => {
                let h = holder.as_ref().expect("holder recorded");
                assert_eq!(h.pid, std::process::id());
                assert_eq!(h.command, "reconcile");
            }
            other => panic!("unexpected {other}"),
        }
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id()))
        );
        drop(first);
        let again = acquire(dir.path(), Duration::ZERO, "diff").unwrap();
        assert!(again.stale.is_none(), "a released lock is not stale");
    }

    #[test]
    fn atomic_writes_replace_whole_and_create_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let k = dir.path().join("key");
        create_atomic(&k, b"first", 0o600).unwrap();
        let e = create_atomic(&k, b"second", 0o600).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&k).unwrap(), b"first");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn a_record_left_behind_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            lock_path(dir.path()),
            r#"{"pid":999999999,"host":"gone","since":5,"command":"reconcile"}"#,
        )
        .unwrap();
        let lock = acquire(dir.path(), Duration::ZERO, "diff").unwrap();
        assert_eq!(lock.stale.as_ref().map(|h| h.pid), Some(999_999_999));
        let text = std::fs::read_to_string(lock.path()).unwrap();
        let now: Holder = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(now.pid, std::process::id());
        assert_eq!(now.command, "diff");
    }
}
