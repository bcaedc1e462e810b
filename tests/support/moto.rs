//! moto's EC2 server for the EC2 tests (and the EC2 benchmark).
//!
//! The endpoint comes from `DRIFTWARDEN_MOTO_ENDPOINT`, which `scripts/test` sets after starting
//! moto with `scripts/moto`. Without it, the first test starts a private moto through
//! `scripts/moto start --watch PID` (it stops when this test process exits), provided moto is
//! already installed in `.venv/moto` (`scripts/moto install`): a test never downloads anything.
//! When moto cannot be had, the EC2 tests fail; they skip only when a developer asks for it
//! with `DRIFTWARDEN_SKIP_EC2=1`, and never under CI (`CI` set) or `scripts/test`
//! (`DRIFTWARDEN_REQUIRE_MOTO=1`), whatever that variable says.
//!
//! moto keeps state per region, so every test uses its own region and sees only its resources.
#![allow(dead_code)]

use std::process::Command;
use std::sync::OnceLock;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};

/// The environment variable holding moto's endpoint.
pub const ENDPOINT_VAR: &str = "DRIFTWARDEN_MOTO_ENDPOINT";

/// moto's endpoint, or `None` (after saying why) when a developer asked to skip the EC2 tests
/// with `DRIFTWARDEN_SKIP_EC2=1`. Panics when moto cannot be had otherwise.
pub fn endpoint() -> Option<String> {
    static EP: OnceLock<Option<String>> = OnceLock::new();
    EP.get_or_init(|| {
        let ep = find_or_start()?;

        // A server may outlive one test process (a developer's `scripts/moto start`): start
        // every test process from an empty moto, so regions hold only this run's resources.
        if let Err(e) = reset(&ep) {
            panic!("cannot reset moto at {ep}: {e}");
        }
        Some(ep)
    })
    .clone()
}

/// `POST /moto-api/reset`: forget every resource of every region.
fn reset(endpoint: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "POST /moto-api/reset HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    if reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "unexpected reply: {}",
            reply.lines().next().unwrap_or_default()
        )))
    }
}

fn find_or_start() -> Option<String> {
    if let Ok(e) = std::env::var(ENDPOINT_VAR)
        && !e.is_empty()
    {
        return Some(e);
    }
    let set =
        |var: &str| std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    let required = set("CI") || set("DRIFTWARDEN_REQUIRE_MOTO");
    let unavailable = |why: String| -> Option<String> {
        if required || !set("DRIFTWARDEN_SKIP_EC2") {
            panic!(
                "the EC2 tests need moto's EC2 server and {why}. Run the suite with \
                 `bash scripts/test` (it installs and starts moto), or install moto once with \
                 `scripts/moto install`{}",
                if required {
                    ""
                } else {
                    ", or skip the EC2 tests on purpose with DRIFTWARDEN_SKIP_EC2=1"
                }
            );
        }
        eprintln!("skipping this EC2 test (DRIFTWARDEN_SKIP_EC2 is set): {why}");
        None
    };
    let root = env!("CARGO_MANIFEST_DIR");
    if !std::path::Path::new(root)
        .join(".venv/moto/bin/moto_server")
        .exists()
    {
        return unavailable(format!(
            "{ENDPOINT_VAR} is not set and moto is not installed in .venv/moto"
        ));
    }
    let out = Command::new(format!("{root}/scripts/moto"))
        .args(["start", "--watch", &std::process::id().to_string()])
        .current_dir(root)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let ep = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {ENDPOINT_VAR}=")))
                .map(str::to_string);
            match ep {
                Some(ep) => Some(ep),
                None => unavailable(format!("scripts/moto printed no endpoint: {text}")),
            }
        }
        Ok(o) => unavailable(format!(
            "scripts/moto start failed: {}",
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => unavailable(format!("scripts/moto cannot run: {e}")),
    }
}

/// An EC2 client for moto in `region`, with dummy credentials.
pub fn client(endpoint: &str, region: &str) -> Client {
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
        .build();
    Client::from_conf(conf)
}

/// Environment for a driftwarden process talking to moto: dummy credentials, no instance
/// metadata lookups, no shared config files from the developer's home.
pub fn env(home: &std::path::Path) -> Vec<(&'static str, String)> {
    for f in ["aws-config", "aws-credentials"] {
        let p = home.join(f);
        if !p.exists() {
            let _ = std::fs::write(p, "");
        }
    }
    vec![
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        (
            "AWS_CONFIG_FILE",
            home.join("aws-config").display().to_string(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            home.join("aws-credentials").display().to_string(),
        ),
        ("HOME", home.display().to_string()),
    ]
}
