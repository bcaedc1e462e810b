//! OpenSSH's own server on loopback, for Git over SSH: `sshd` in the foreground on
//! `127.0.0.1:PORT` with a fresh ed25519 host key, public-key authentication only, one authorized
//! client key, and its log in a file for assertions. Git runs through it exactly as against a
//! real Git host: the client's `git-upload-pack` / `git-receive-pack` on a repository path.
//!
//! `sshd` (Debian's openssh-server) must be installed: scripts/test installs it. Without it these
//! tests fail; they never skip.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

pub struct SshServer {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    user: String,
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "driftwarden-test",
            "-f",
        ])
        .arg(path)
        .output()
        .expect("ssh-keygen (openssh-client) runs");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl SshServer {
    /// Starts the server; panics (the test fails) when `sshd` is not installed.
    pub fn start() -> SshServer {
        assert!(
            Path::new(SSHD).is_file(),
            "{SSHD} is missing: install openssh-server (scripts/test does)"
        );
        // Privilege separation wants this directory when sshd starts as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("host_key"));
        keygen(&dir.path().join("client_key"));
        keygen(&dir.path().join("stranger_key"));
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let user = String::from_utf8(
            Command::new("id")
                .arg("-un")
                .output()
                .expect("id -un")
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string();

        // A port another process takes between the probe and sshd's bind: try another.
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            let d = dir.path().display();
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                     AuthorizedKeysFile {d}/authorized_keys\nPubkeyAuthentication yes\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n\
                     LogLevel VERBOSE\n"
                ),
            )
            .unwrap();
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-f")
                .arg(&config)
                .arg("-E")
                .arg(dir.path().join("sshd.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sshd starts");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return SshServer {
                        dir,
                        child,
                        port,
                        user,
                    };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "sshd did not start: {}",
            std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default()
        );
    }

    /// `ssh://USER@127.0.0.1:PORT/ABSOLUTE/PATH` for a repository on this machine.
    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    /// The private key the server accepts.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// A private key the server does not accept.
    pub fn stranger_key(&self) -> PathBuf {
        self.dir.path().join("stranger_key")
    }

    /// The `known_hosts` line for this server's host key.
    pub fn known_hosts_line(&self) -> String {
        self.line_for("host_key.pub")
    }

    /// A `known_hosts` line naming this server's address with the public key in `file`.
    fn line_for(&self, file: &str) -> String {
        let public = std::fs::read_to_string(self.dir.path().join(file)).unwrap();
        let mut parts = public.split_whitespace();
        let (kind, key) = (parts.next().unwrap(), parts.next().unwrap());
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }

    /// The same line as [`known_hosts_line`](Self::known_hosts_line), its host name hashed the way
    /// `ssh-keygen -H` (and `HashKnownHosts yes`) writes it.
    pub fn hashed_known_hosts_line(&self) -> String {
        let file = self.dir.path().join("known_hosts_hashed");
        std::fs::write(&file, self.known_hosts_line()).unwrap();
        let out = Command::new("ssh-keygen")
            .arg("-q")
            .arg("-H")
            .arg("-f")
            .arg(&file)
            .output()
            .expect("ssh-keygen -H runs");
        assert!(out.status.success(), "ssh-keygen -H: {out:?}");
        let hashed = std::fs::read_to_string(&file).unwrap();
        assert!(hashed.starts_with("|1|"), "{hashed}");
        hashed
    }

    /// A `known_hosts` line for this address with a key that is not the server's (a host that
    /// changed its key, or a machine in the middle).
    pub fn wrong_known_hosts_line(&self) -> String {
        self.line_for("stranger_key.pub")
    }

    /// What the server logged so far (connections, accepted and refused keys).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// How many sessions authenticated with the client key so far.
    pub fn accepted(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
