//! A smart-HTTP Git server on loopback for tests, backed by Git's own `git http-backend` CGI.
//!
//! It serves every bare repository under a root directory (`http://127.0.0.1:PORT/<name>.git`),
//! fetches and pushes alike, the way a real Git host behind a web server does: each request is
//! handed to `git http-backend` with the CGI/1.1 environment (`GIT_PROJECT_ROOT`,
//! `GIT_HTTP_EXPORT_ALL`, `REQUEST_METHOD`, `PATH_INFO`, `QUERY_STRING`, `CONTENT_TYPE`,
//! `CONTENT_LENGTH`, `REMOTE_USER`, `HTTP_CONTENT_ENCODING`, `HTTP_GIT_PROTOCOL`, ...), the request
//! body is streamed to its stdin as it arrives (hyper removes a chunked transfer encoding; a
//! `Content-Encoding: gzip` body is passed through and inflated by `http-backend` itself), and its
//! CGI response (`Status:` and the other headers, a blank line, the body) becomes the HTTP
//! response.
//!
//! Every request needs HTTP Basic auth with the configured username and token; without it, or
//! with a wrong one, the answer is 401 with `WWW-Authenticate: Basic realm="git"`. `git
//! http-backend` enables `receive-pack` (pushes) because `REMOTE_USER` is set for authenticated
//! requests. Every request is logged (method, path, query, whether credentials were sent and
//! matched, the status): the token itself is compared, never kept. Faults: the next N
//! authenticated requests (optionally only those whose path or query contains a string, such as
//! `git-receive-pack`) get a 500.
//!
//! The backend is found with `git --exec-path`; when it is not there, `start` panics with a
//! message saying so: tests that need it fail, they never skip.

#![allow(dead_code)]

// Each server includes the shared plumbing itself, so a test binary needs nothing more; one that
// includes two servers compiles it twice, which is harmless.
#[allow(clippy::duplicate_mod)]
#[path = "http.rs"]
mod http;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};

/// What a request's credentials were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No `Authorization` header.
    Missing,
    /// Credentials that are not the configured username and token.
    Wrong,
    /// The configured username and token.
    Ok,
}

/// One logged request. The token is never recorded.
#[derive(Debug, Clone)]
pub struct GitRequest {
    pub method: String,
    /// `/<repo>.git/info/refs`, `/<repo>.git/git-upload-pack`, ...
    pub path: String,
    pub query: String,
    pub auth: Auth,
    /// The status sent back.
    pub status: u16,
    /// The request's `Content-Encoding`, when it had one.
    pub content_encoding: Option<String>,
    /// Whether the request body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

impl GitRequest {
    /// Whether the request is part of a push (`git-receive-pack`).
    pub fn is_push(&self) -> bool {
        self.path.ends_with("/git-receive-pack") || self.query.contains("git-receive-pack")
    }

    /// Whether the request sends a pack to the server (`POST .../git-receive-pack`).
    pub fn is_push_upload(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/git-receive-pack")
    }

    /// Whether the request is part of a fetch (`git-upload-pack`).
    pub fn is_fetch(&self) -> bool {
        self.path.ends_with("/git-upload-pack") || self.query.contains("git-upload-pack")
    }
}

struct Fault {
    remaining: usize,
    /// Only requests whose path or query contains this.
    matching: Option<String>,
}

struct State {
    user: String,
    token: String,
    log: Vec<GitRequest>,
    faults: VecDeque<Fault>,
}

/// The server. Dropping it leaves the background thread to die with the test process.
pub struct GitHttpServer {
    addr: SocketAddr,
    root: PathBuf,
    state: Arc<Mutex<State>>,
}

/// The `git http-backend` program, from `git --exec-path`. Panics with the reason when it is not
/// there: the tests that need it must fail, not skip.
pub fn http_backend() -> PathBuf {
    let out = Command::new("git").arg("--exec-path").output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!(
            "`git --exec-path` failed ({}): {}; these tests need Git's `git http-backend`",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "cannot run `git --exec-path` ({e}): these tests need Git (with `git http-backend`) on PATH"
        ),
    };
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let backend = dir.join("git-http-backend");
    assert!(
        backend.is_file(),
        "`git http-backend` not found at {}: these tests need Git's smart-HTTP backend (Debian: package `git`)",
        backend.display()
    );
    backend
}

impl GitHttpServer {
    /// Serves the bare repositories under `root`, for `user` with `token` (HTTP Basic).
    pub fn start(root: &Path, user: &str, token: &str) -> GitHttpServer {
        let backend = http_backend();
        let state = Arc::new(Mutex::new(State {
            user: user.to_string(),
            token: token.to_string(),
            log: Vec::new(),
            faults: VecDeque::new(),
        }));
        let (listener, addr) = http::bind();
        let ctx = Arc::new(Ctx {
            state: Arc::clone(&state),
            backend,
            root: root.to_path_buf(),
            port: addr.port(),
        });
        http::serve_in_thread(
            listener,
            ctx,
            |ctx, req| async move { handle(&ctx, req).await },
        );
        GitHttpServer {
            addr,
            root: root.to_path_buf(),
            state,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/<repo>` (`repo` like `gitops.git`).
    pub fn url(&self, repo: &str) -> String {
        format!("http://{}/{repo}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory the repositories are served from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<GitRequest> {
        self.state.lock().unwrap().log.clone()
    }

    /// Requests after the first `from`.
    pub fn log_since(&self, from: usize) -> Vec<GitRequest> {
        self.log().into_iter().skip(from).collect()
    }

    /// The next `n` authenticated requests get a 500.
    pub fn fail_next(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.state.lock().unwrap().faults.push_back(Fault {
            remaining: n,
            matching: None,
        });
    }

    /// The next `n` authenticated requests whose path or query contains `needle` get a 500.
    pub fn fail_next_matching(&self, n: usize, needle: &str) {
        if n == 0 {
            return;
        }
        self.state.lock().unwrap().faults.push_back(Fault {
            remaining: n,
            matching: Some(needle.to_string()),
        });
    }
}

struct Ctx {
    state: Arc<Mutex<State>>,
    backend: PathBuf,
    root: PathBuf,
    port: u16,
}

fn check_auth(header: Option<&str>, user: &str, token: &str) -> Auth {
    let Some(h) = header else {
        return Auth::Missing;
    };
    let Some(encoded) = h
        .strip_prefix("Basic ")
        .or_else(|| h.strip_prefix("basic "))
    else {
        return Auth::Wrong;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return Auth::Wrong;
    };
    let expected = format!("{user}:{token}");
    if decoded == expected.as_bytes() {
        Auth::Ok
    } else {
        Auth::Wrong
    }
}

fn plain(status: u16, text: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text.to_string())))
        .unwrap()
}

async fn handle(ctx: &Ctx, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let content_encoding = http::header(&req, "content-encoding");
    let chunked = http::header(&req, "transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let (auth, fault) = {
        let mut st = ctx.state.lock().unwrap();
        let auth = check_auth(
            http::header(&req, "authorization").as_deref(),
            &st.user,
            &st.token,
        );
        let mut fault = false;
        if auth == Auth::Ok {
            if let Some(f) = st.faults.front_mut() {
                let applies = f
                    .matching
                    .as_ref()
                    .is_none_or(|m| path.contains(m.as_str()) || query.contains(m.as_str()));
                if applies {
                    fault = true;
                    f.remaining -= 1;
                    if f.remaining == 0 {
                        st.faults.pop_front();
                    }
                }
            }
        }
        (auth, fault)
    };
    let log = |status: u16| {
        ctx.state.lock().unwrap().log.push(GitRequest {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            auth,
            status,
            content_encoding: content_encoding.clone(),
            chunked,
        });
    };
    if auth != Auth::Ok {
        // Read what was sent, so the connection stays usable for the retry with credentials.
        let _ = req.into_body().collect().await;
        log(401);
        let mut resp = plain(401, "authentication required\n");
        resp.headers_mut().insert(
            "www-authenticate",
            hyper::header::HeaderValue::from_static("Basic realm=\"git\""),
        );
        return resp;
    }
    if fault {
        let _ = req.into_body().collect().await;
        log(500);
        return plain(500, "injected failure\n");
    }
    let resp = run_backend(ctx, req, &path, &query).await;
    log(resp.status().as_u16());
    resp
}

/// Runs `git http-backend` for one request: the body streamed to its stdin, its CGI output
/// turned into the response.
async fn run_backend(
    ctx: &Ctx,
    req: Request<Incoming>,
    path: &str,
    query: &str,
) -> Response<Full<Bytes>> {
    let user = ctx.state.lock().unwrap().user.clone();
    let mut cmd = Command::new(&ctx.backend);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // Hermetic: no system or user Git configuration.
        .env("HOME", &ctx.root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &ctx.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_SOFTWARE", "driftwarden-test-git-http")
        .env("SERVER_NAME", "127.0.0.1")
        .env("SERVER_PORT", ctx.port.to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SCRIPT_NAME", "")
        .env("REQUEST_METHOD", req.method().as_str())
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("AUTH_TYPE", "Basic")
        .env("REMOTE_USER", &user);
    if let Some(t) = http::header(&req, "content-type") {
        cmd.env("CONTENT_TYPE", t);
    }
    // With a chunked body there is no length: `http-backend` then reads to end of file.
    let chunked = http::header(&req, "transfer-encoding").is_some();
    if let Some(l) = http::header(&req, "content-length").filter(|_| !chunked) {
        cmd.env("CONTENT_LENGTH", l);
    }
    if let Some(e) = http::header(&req, "content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", e);
    }
    if let Some(p) = http::header(&req, "git-protocol") {
        cmd.env("HTTP_GIT_PROTOCOL", p);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return plain(500, &format!("cannot run git http-backend: {e}\n")),
    };
    let Some(mut stdin) = child.stdin.take() else {
        return plain(500, "git http-backend has no stdin\n");
    };
    // Body frames go to a thread that writes them to the CGI's stdin as they arrive; another
    // reads its output meanwhile, so neither side can block the other.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let writer = std::thread::spawn(move || {
        while let Some(chunk) = rx.blocking_recv() {
            if stdin.write_all(&chunk).is_err() {
                break;
            }
        }
        drop(stdin);
    });
    let output = tokio::task::spawn_blocking(move || child.wait_with_output());
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            if tx.send(data).await.is_err() {
                break;
            }
        }
    }
    drop(tx);
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    let output = match output.await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return plain(500, &format!("git http-backend failed: {e}\n")),
        Err(e) => return plain(500, &format!("git http-backend task failed: {e}\n")),
    };
    cgi_response(&output.stdout, &output.stderr, output.status.success())
}

/// Parses CGI output: header lines up to a blank line (`Status: 404 Not Found` sets the status),
/// then the body.
fn cgi_response(stdout: &[u8], stderr: &[u8], success: bool) -> Response<Full<Bytes>> {
    let split = find(stdout, b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| find(stdout, b"\n\n").map(|i| (i, i + 2)));
    let Some((head_end, body_start)) = split else {
        return plain(
            500,
            &format!(
                "git http-backend gave no CGI headers (exit ok: {success}): {}\n",
                String::from_utf8_lossy(stderr).trim()
            ),
        );
    };
    let head = String::from_utf8_lossy(&stdout[..head_end]).into_owned();
    let mut resp = Response::builder().status(StatusCode::OK);
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or(500);
            resp = resp.status(code);
        } else {
            resp = resp.header(name.trim(), value);
        }
    }
    resp.body(Full::new(Bytes::copy_from_slice(&stdout[body_start..])))
        .unwrap_or_else(|e| plain(500, &format!("bad CGI response: {e}\n")))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends one raw HTTP/1.1 request (already encoded) and returns the status, the headers
/// (lower-cased names) and the body (chunked responses decoded). For tests of the server itself.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let end = find(&buf, b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let raw = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    (status, headers, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(raw, b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..eol]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .expect("a chunk size");
        raw = &raw[eol + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
    out
}
