//! The `watch` webhook (`watch::webhook::Webhook::handle`): the X-Hub-Signature-256 check and
//! the push body (JSON or form-encoded).
//!
//! The input: a flags byte, a secret length byte, the secret, then the body. Flags: bit 0 signs
//! the body correctly (else the signature header is the rest of the secret bytes, or a correct
//! signature with one bit flipped), bit 1 sends the body form-encoded, bit 2 sends a `ping`
//! instead of a `push`.
//!
//! Laws: nothing panics; a delivery whose signature is not the body's HMAC-SHA256 under the
//! secret is answered 401 and triggers nothing; a correctly signed one is never 401, and
//! triggers exactly the targets its 202 answer names.
#![no_main]

use std::sync::OnceLock;

use driftwarden::watch::Trigger;
use driftwarden::watch::webhook::{Route, Webhook, normalize_repo};
use hmac::{Hmac, Mac};
use hyper::StatusCode;
use hyper::header::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use tokio::sync::mpsc;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

fn routes() -> Vec<Route> {
    [
        ("web", "https://github.com/acme/deploy.git", "main"),
        ("web-tags", "git@github.com:acme/deploy.git", "v1.2"),
        ("ops", "https://github.com/acme/ops", "HEAD"),
        ("local", "/srv/git/deploy", "refs/heads/main"),
    ]
    .into_iter()
    .map(|(t, repo, r)| Route {
        target: t.to_string(),
        repo: normalize_repo(repo),
        reference: r.to_string(),
    })
    .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let [flags, len, rest @ ..] = data else {
        return;
    };
    let len = usize::from(*len).min(rest.len());
    let (secret, body) = rest.split_at(len);
    if secret.is_empty() {
        return;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    let mut good = mac.finalize().into_bytes().to_vec();
    let signed = flags & 1 != 0;
    let signature = if signed {
        format!("sha256={}", hex(&good))
    } else if flags & 8 != 0 {
        let i = usize::from(flags >> 4) % good.len();
        good[i] ^= 1;
        format!("sha256={}", hex(&good))
    } else {
        String::from_utf8_lossy(secret).into_owned()
    };
    let mut headers = HeaderMap::new();
    let Ok(sig) = HeaderValue::from_str(&signature) else {
        return;
    };
    headers.insert("x-hub-signature-256", sig);
    let event = if flags & 4 != 0 { "ping" } else { "push" };
    headers.insert("x-github-event", HeaderValue::from_static(event));
    if flags & 2 != 0 {
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
    }
    let (tx, mut rx) = mpsc::channel(16);
    let hook = Webhook::new(secret.to_vec(), routes(), tx);
    let reply = runtime().block_on(hook.handle(&headers, body));
    let mut triggered = Vec::new();
    while let Ok(t) = rx.try_recv() {
        match t {
            Trigger::Target(name) => triggered.push(name),
            Trigger::AllGit => triggered.push("*".to_string()),
        }
    }
    if !signed {
        // A forged signature can only be right by chance when it is the correct one.
        let correct = signature
            == format!(
                "sha256={}",
                hex(&{
                    let mut mac =
                        Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
                    mac.update(body);
                    mac.finalize().into_bytes().to_vec()
                })
            );
        if !correct {
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "a forged delivery was accepted"
            );
            assert!(
                triggered.is_empty(),
                "a forged delivery triggered {triggered:?}"
            );
            return;
        }
    }
    assert_ne!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "a signed delivery was refused"
    );
    if reply.status == StatusCode::ACCEPTED {
        assert!(!triggered.is_empty(), "202 without a trigger");
        for t in &triggered {
            assert!(
                reply.body.contains(t.as_str()),
                "{t} triggered but not named: {}",
                reply.body
            );
        }
    } else {
        assert!(
            triggered.is_empty(),
            "{} but triggered {triggered:?}",
            reply.status
        );
    }
});
