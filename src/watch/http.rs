//! The HTTP endpoints of `driftwarden watch` on `watch.listen`, answered from the shared
//! [`Status`]:
//!
//! - `GET /metrics`: [`Status::render_metrics`] (the report metrics of the targets' latest
//!   cycles and the watcher's own: events, reconciles, queue depth, watch restarts, the
//!   event-to-confirmed-correction histogram, leader state, each target's state);
//! - `GET /healthz`: 200 while the watch loop's heartbeat is younger than
//!   `heartbeat_stale_after` ([`Status::liveness`]), else 503;
//! - `GET /readyz`: 200 once every target's first sync has finished, no target is degraded and
//!   the leader state is known ([`Status::readiness`]); 503 with the reasons otherwise;
//! - `POST /hooks/github` when a webhook is configured ([`super::webhook`]);
//! - anything else 404, a known path with another method 405 (with `Allow`).
//!
//! The server is hyper 1 over HTTP/1.1. Abuse costs a request, never the process: a request
//! head that does not parse gets 400, one over [`MAX_HEAD_BYTES`] 431, a body over
//! [`MAX_BODY_BYTES`] 413 (by `Content-Length` before reading, or while reading a chunked one),
//! and every connection is bounded in time (the head within `header_timeout`, the whole
//! connection within `connection_timeout`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::status::Status;
use super::webhook::{self, Webhook};
use crate::metrics;

/// The largest request body accepted (the webhook's; other endpoints take none).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The largest request head (request line and headers) accepted; hyper answers 431 past it.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Every way the server fails to start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Time limits per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// The request head must arrive within this.
    pub header_timeout: Duration,
    /// A connection is closed after this, whatever it is doing (keep-alive included).
    pub connection_timeout: Duration,
    /// `/healthz` fails when the watch loop's heartbeat is older than this.
    pub heartbeat_stale_after: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(60),
            heartbeat_stale_after: Duration::from_secs(60),
        }
    }
}

/// Binds the listening socket (before anything else starts, so a taken port fails at once).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// What the server answers from.
#[derive(Debug, Clone)]
pub struct App {
    pub status: Arc<Status>,
    /// `POST /hooks/github`; 404 when absent.
    pub webhook: Option<Arc<Webhook>>,
    pub settings: HttpSettings,
}

/// Serves connections until `shutdown` completes, then lets the requests in flight finish
/// (each connection closes after its current request) for at most five seconds.
pub async fn serve(listener: TcpListener, app: App, shutdown: impl Future<Output = ()>) {
    let mut shutdown = pin!(shutdown);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            a = listener.accept() => a,
            // Reap finished connections so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        conns.spawn(connection(stream, peer, app.clone(), stop_rx.clone()));
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: App,
    mut stop: watch::Receiver<bool>,
) {
    let settings = app.settings.clone();
    let service = hyper::service::service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(route(&app, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(100)
        // A client that half-closes after its request still gets the answer.
        .half_close(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = pin!(conn);
    let deadline = tokio::time::sleep(settings.connection_timeout);
    let mut deadline = pin!(deadline);
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            () = &mut deadline => {
                tracing::debug!(%peer, "http: connection closed at its time limit");
                return;
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    conn.as_mut().graceful_shutdown();
                }
                // Stop watching once shut down: the connection ends by itself now.
                if changed.is_err() {
                    break conn.as_mut().await;
                }
            }
        }
    };
    if let Err(e) = result {
        // Malformed requests, timeouts, resets: the peer's problem, answered where possible.
        tracing::debug!(%peer, error = %e, "http: connection ended with an error");
    }
}

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<String>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

async fn route(app: &App, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match path.as_str() {
        "/metrics" if get => {
            let mut r = text(StatusCode::OK, app.status.render_metrics());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            r
        }
        "/healthz" if get => {
            let max_age = app.settings.heartbeat_stale_after;
            if app.status.liveness(max_age) {
                text(StatusCode::OK, "ok\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the watch loop has not reported alive within {}s\n",
                        max_age.as_secs()
                    ),
                )
            }
        }
        "/readyz" if get => {
            let r = app.status.readiness();
            if r.ready {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready:\n{}\n", r.reasons.join("\n")),
                )
            }
        }
        "/metrics" | "/healthz" | "/readyz" => method_not_allowed("GET, HEAD"),
        webhook::PATH => match &app.webhook {
            None => text(StatusCode::NOT_FOUND, "not found\n"),
            Some(_) if req.method() != Method::POST => method_not_allowed("POST"),
            Some(hook) => {
                let (parts, body) = req.into_parts();
                let body = match read_body(&parts.headers, body).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let reply = hook.handle(&parts.headers, &body).await;
                text(reply.status, reply.body)
            }
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Reads a body of at most [`MAX_BODY_BYTES`]: refused by its `Content-Length` before reading,
/// or once a chunked body passes the limit.
async fn read_body(headers: &hyper::HeaderMap, body: Incoming) -> Result<Bytes, Resp> {
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_BODY_BYTES} bytes\n"),
        )
    };
    if let Some(len) = headers.get(CONTENT_LENGTH) {
        let len = len
            .to_str()
            .ok()
            .and_then(|l| l.parse::<u64>().ok())
            .ok_or_else(|| text(StatusCode::BAD_REQUEST, "invalid Content-Length\n"))?;
        if len > MAX_BODY_BYTES as u64 {
            return Err(too_large());
        }
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(text(
            StatusCode::BAD_REQUEST,
            "the request body could not be read\n",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Trigger;
    use super::super::lease::Role;
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    struct Server {
        addr: SocketAddr,
        status: Arc<Status>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(settings: HttpSettings, webhook: Option<Arc<Webhook>>) -> Server {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(Status::new(&["apps", "infra"], true));
        let app = App {
            status: status.clone(),
            webhook,
            settings,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            status,
            stop: Some(tx),
            task,
        }
    }

    /// Sends raw bytes, half-closes, and reads the whole answer.
    async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // The server may answer and close before everything is written.
        let _ = s.write_all(bytes).await;
        let _ = s.shutdown().await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let a = raw(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        parse(&a)
    }

    fn parse(answer: &str) -> (u16, String) {
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn endpoints_answer_and_readiness_follows_the_targets() {
        let s = start(HttpSettings::default(), None).await;
        s.status.heartbeat();
        let (code, body) = get(s.addr, "/healthz").await;
        assert_eq!((code, body.as_str()), (200, "ok\n"));
        let (code, body) = get(s.addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(
            body.contains("target apps: first sync not finished"),
            "{body}"
        );
        assert!(
            body.contains("target infra: first sync not finished"),
            "{body}"
        );
        assert!(body.contains("leader state not known yet"), "{body}");
        s.status.update_target("apps", |t| t.first_sync = true);
        s.status.update_target("infra", |t| {
            t.first_sync = true;
            t.degraded = Some("cluster unreachable".into());
        });
        s.status.set_role(Role::Follower);
        let (code, body) = get(s.addr, "/readyz").await;
        assert_eq!(code, 503);
        assert_eq!(body, "not ready:\ntarget infra: cluster unreachable\n");
        s.status.update_target("infra", |t| t.degraded = None);
        assert_eq!(get(s.addr, "/readyz").await, (200, "ready\n".to_string()));

        s.status.record_event("Deployment", "MODIFIED");
        s.status.set_queue_depth("apps", 3);
        let a = raw(
            s.addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        let (code, body) = parse(&a);
        assert_eq!(code, 200);
        assert!(
            a.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{a}"
        );
        for line in [
            "driftwarden_watch_events_total{kind=\"Deployment\",type=\"MODIFIED\"} 1",
            "driftwarden_queue_depth 3",
            "driftwarden_leader{state=\"follower\"} 1",
            "# TYPE driftwarden_api_requests_total counter",
        ] {
            assert!(body.lines().any(|l| l == line), "{line}\n{body}");
        }
        // HEAD answers the head alone.
        let a = raw(
            s.addr,
            b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(parse(&a), (200, String::new()));
    }

    #[tokio::test]
    async fn a_stale_heartbeat_fails_healthz() {
        let settings = HttpSettings {
            heartbeat_stale_after: Duration::ZERO,
            ..HttpSettings::default()
        };
        let s = start(settings, None).await;
        // Any time at all is past a zero limit; sleep a millisecond to be sure the clock moved.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let (code, body) = get(s.addr, "/healthz").await;
        assert_eq!(code, 503);
        assert!(body.contains("has not reported alive"), "{body}");
    }

    #[tokio::test]
    async fn unknown_paths_methods_and_garbage_get_4xx_and_the_server_lives_on() {
        let s = start(HttpSettings::default(), None).await;
        assert_eq!(get(s.addr, "/nope").await.0, 404);
        // No webhook configured: its path is not there.
        assert_eq!(get(s.addr, "/hooks/github").await.0, 404);
        let a = raw(
            s.addr,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(parse(&a).0, 405);
        assert!(a.to_ascii_lowercase().contains("allow: get, head"), "{a}");
        // Garbage bytes.
        let a = raw(
            s.addr,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        )
        .await;
        assert_eq!(parse(&a).0, 400, "{a}");
        let a = raw(s.addr, b"GET / HTTP/9.9 nonsense\r\n\r\n").await;
        assert!(parse(&a).0 >= 400 && parse(&a).0 < 500, "{a}");
        // A head larger than the limit.
        let big = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES * 2)
        );
        let a = raw(s.addr, big.as_bytes()).await;
        assert_eq!(parse(&a).0, 431, "{a}");
        // A connection that closes at once, and one that sends half a request line.
        drop(TcpStream::connect(s.addr).await.unwrap());
        let _ = raw(s.addr, b"GET /metr").await;
        // Still serving.
        assert_eq!(get(s.addr, "/healthz").await.0, 200);
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_at_the_header_timeout() {
        let settings = HttpSettings {
            header_timeout: Duration::from_millis(200),
            ..HttpSettings::default()
        };
        let s = start(settings, None).await;
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        // The server closes (with a 408 or nothing); read_to_end returns instead of hanging.
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out).await;
        let a = String::from_utf8_lossy(&out);
        assert!(a.is_empty() || parse(&a).0 == 408, "{a}");
        assert_eq!(get(s.addr, "/healthz").await.0, 200);
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() {
        let mut s = start(HttpSettings::default(), None).await;
        assert_eq!(get(s.addr, "/healthz").await.0, 200);
        let _ = s.stop.take().unwrap().send(());
        (&mut s.task).await.unwrap();
        assert!(TcpStream::connect(s.addr).await.is_err());
    }

    const CANARY: &str = "canary-webhook-secret-9d41f7";

    fn sign(secret: &str, body: &[u8]) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }

    fn post(event: &str, signature: Option<&str>, body: &[u8]) -> Vec<u8> {
        let mut head = format!(
            "POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-GitHub-Event: {event}\r\nX-GitHub-Delivery: d-1\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        if let Some(sig) = signature {
            head.push_str(&format!("X-Hub-Signature-256: {sig}\r\n"));
        }
        head.push_str("\r\n");
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        req
    }

    fn push_body(git_ref: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "ref": git_ref,
            "before": "0000000000000000000000000000000000000000",
            "after": "1111111111111111111111111111111111111111",
            "deleted": false,
            "repository": {
                "full_name": "acme/gitops",
                "clone_url": "https://github.com/acme/gitops.git",
                "ssh_url": "git@github.com:acme/gitops.git",
                "html_url": "https://github.com/acme/gitops",
                "default_branch": "main"
            }
        }))
        .unwrap()
    }

    /// A log writer the test reads back.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn webhook_pushes_are_verified_and_trigger_their_targets() {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let cfg = crate::config::parse(
            "targets:\n\
             - {name: shop, desired: {git: {repo: 'https://github.com/acme/gitops.git', ref: main}}, live: {snapshot: s}}\n\
             - {name: edge, desired: {git: {repo: 'git@github.com:acme/gitops', ref: HEAD}}, live: {snapshot: s}}\n\
             - {name: staging, desired: {git: {repo: 'https://github.com/acme/gitops.git', ref: staging}}, live: {snapshot: s}}\n\
             - {name: other, desired: {git: {repo: 'https://github.com/acme/other.git', ref: main}}, live: {snapshot: s}}\n\
             - {name: local, desired: {dir: d}, live: {snapshot: s}}\n",
            "c.yaml",
            std::path::Path::new("/b"),
        )
        .unwrap();
        let routes = webhook::routes(&cfg.targets);
        assert_eq!(routes.len(), 4);
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let hook = Arc::new(Webhook::new(CANARY.as_bytes().to_vec(), routes, tx));
        let s = start(HttpSettings::default(), Some(hook)).await;
        let answers = |a: &str| parse(a);

        // A push to main: `shop` (ref main) and `edge` (HEAD = the default branch main).
        let body = push_body("refs/heads/main");
        let a = raw(s.addr, &post("push", Some(&sign(CANARY, &body)), &body)).await;
        let (code, text) = answers(&a);
        assert_eq!(code, 202, "{a}");
        assert_eq!(text, "re-read triggered: shop, edge\n");
        assert_eq!(rx.recv().await, Some(Trigger::Target("shop".into())));
        assert_eq!(rx.recv().await, Some(Trigger::Target("edge".into())));
        // A push to staging triggers only `staging`.
        let body = push_body("refs/heads/staging");
        let a = raw(s.addr, &post("push", Some(&sign(CANARY, &body)), &body)).await;
        assert_eq!(answers(&a).0, 202, "{a}");
        assert_eq!(rx.recv().await, Some(Trigger::Target("staging".into())));
        // A branch no target follows: 200, nothing.
        let body = push_body("refs/heads/feature");
        let a = raw(s.addr, &post("push", Some(&sign(CANARY, &body)), &body)).await;
        assert_eq!(answers(&a).0, 200, "{a}");

        // Missing, wrong, truncated and other-secret signatures: 401, nothing triggered.
        let body = push_body("refs/heads/main");
        let good = sign(CANARY, &body);
        let wrong_secret = sign("not-the-secret", &body);
        let truncated = good[..good.len() - 2].to_string();
        let last = if good.ends_with('0') { '1' } else { '0' };
        let flipped = format!("{}{last}", &good[..good.len() - 1]);
        let sha1 = good.replace("sha256=", "sha1=");
        for sig in [
            None,
            Some(wrong_secret.as_str()),
            Some(&truncated),
            Some(&flipped),
            Some(&sha1),
            Some(""),
        ] {
            let a = raw(s.addr, &post("push", sig, &body)).await;
            assert_eq!(answers(&a).0, 401, "{sig:?}: {a}");
            assert!(!a.contains(CANARY));
        }
        // The right signature over another body.
        let tampered = push_body("refs/heads/staging");
        let a = raw(s.addr, &post("push", Some(&good), &tampered)).await;
        assert_eq!(answers(&a).0, 401, "{a}");
        // Ping: signed, 200.
        let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
        let a = raw(s.addr, &post("ping", Some(&sign(CANARY, ping)), ping)).await;
        assert_eq!(answers(&a), (200, "pong\n".to_string()));
        // An unsigned ping is refused like anything else.
        let a = raw(s.addr, &post("ping", None, ping)).await;
        assert_eq!(answers(&a).0, 401);
        // Signed garbage: 400.
        let junk = b"{not json";
        let a = raw(s.addr, &post("push", Some(&sign(CANARY, junk)), junk)).await;
        assert_eq!(answers(&a).0, 400, "{a}");
        // GET on the hook: 405.
        assert_eq!(get(s.addr, "/hooks/github").await.0, 405);

        // Nothing more was triggered by any of the refused or unmatched requests.
        assert!(rx.try_recv().is_err());
        // The secret never reached the logs; the refusals did.
        let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(!logs.contains(CANARY), "{logs}");
        assert!(
            logs.contains("missing or wrong X-Hub-Signature-256"),
            "{logs}"
        );
    }

    #[tokio::test]
    async fn webhook_bodies_over_one_mebibyte_get_413() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let cfg = crate::config::parse(
            "targets:\n- {name: shop, desired: {git: {repo: 'https://github.com/acme/gitops.git', ref: main}}, live: {snapshot: s}}\n",
            "c.yaml",
            std::path::Path::new("/b"),
        )
        .unwrap();
        let hook = Arc::new(Webhook::new(
            CANARY.as_bytes().to_vec(),
            webhook::routes(&cfg.targets),
            tx,
        ));
        let s = start(HttpSettings::default(), Some(hook)).await;
        // A correctly signed push padded past the limit, by Content-Length.
        let mut v: serde_json::Value =
            serde_json::from_slice(&push_body("refs/heads/main")).unwrap();
        v["padding"] = serde_json::Value::String("x".repeat(MAX_BODY_BYTES));
        let body = serde_json::to_vec(&v).unwrap();
        let a = raw(s.addr, &post("push", Some(&sign(CANARY, &body)), &body)).await;
        assert_eq!(parse(&a).0, 413, "{}", &a[..a.len().min(300)]);
        // The same, chunked (no Content-Length): refused once the limit is passed.
        let mut req = format!(
            "POST /hooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            sign(CANARY, &body)
        )
        .into_bytes();
        for chunk in body.chunks(64 * 1024) {
            req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            req.extend_from_slice(chunk);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let a = raw(s.addr, &req).await;
        assert_eq!(parse(&a).0, 413, "{}", &a[..a.len().min(300)]);
        // A Content-Length that is not a number.
        let a = raw(
            s.addr,
            b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n",
        )
        .await;
        assert_eq!(parse(&a).0, 400, "{a}");
        // Exactly at the limit is read (and then judged by its signature).
        let at_limit = vec![b' '; MAX_BODY_BYTES];
        let a = raw(s.addr, &post("push", Some("sha256=00"), &at_limit)).await;
        assert_eq!(parse(&a).0, 401, "{a}");
        assert!(rx.try_recv().is_err());
        assert_eq!(get(s.addr, "/healthz").await.0, 200);
    }
}
