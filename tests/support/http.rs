//! The HTTP/1.1 plumbing the loopback test servers share (`ec2_query`, `git_http`,
//! `github_server`, `kube_server`): a listener on 127.0.0.1 (a free port) and an accept loop
//! serving every connection with hyper, each request handed to the server's handler with a clone
//! of its state.
//!
//! Each server includes this file as its own child module (`#[path = "http.rs"] mod http;`), so a
//! test binary that includes a server needs nothing more.

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// What every handler answers.
pub type Resp = Response<Full<Bytes>>;

/// Binds 127.0.0.1 on a free port, non-blocking (ready for [`serve_in_thread`]).
pub fn bind() -> (std::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Binds 127.0.0.1 on a free port and serves it with `handle` on a background thread of its own
/// (see [`serve_in_thread`]); returns the address.
pub fn start_in_thread<S, H, Fut>(state: S, handle: H) -> SocketAddr
where
    S: Clone + Send + 'static,
    H: Fn(S, Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let (listener, addr) = bind();
    serve_in_thread(listener, state, handle);
    addr
}

/// Serves `listener` (from [`bind`]) on a background thread running its own current-thread Tokio
/// runtime: every request is answered with `handle(state.clone(), request)`. The thread is never
/// stopped; it dies with the test process.
pub fn serve_in_thread<S, H, Fut>(listener: std::net::TcpListener, state: S, handle: H)
where
    S: Clone + Send + 'static,
    H: Fn(S, Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            accept_loop(listener, state, move |state, req| {
                let answer = handle(state, req);
                async move { Ok::<_, Infallible>(answer.await) }
            })
            .await
        });
    });
}

/// Binds 127.0.0.1 on a free port and spawns [`accept_loop`] on the current Tokio runtime;
/// returns the address and the accept task (abort it to stop accepting connections).
pub async fn start_on_runtime<S, H, Fut, E, B>(
    state: S,
    handle: H,
) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    S: Clone + Send + 'static,
    H: Fn(S, Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<B>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(accept_loop(listener, state, handle));
    (addr, accept)
}

/// Accepts connections forever, serving each over HTTP/1.1 on a task of its own; every request is
/// answered with `handle(state.clone(), request)`. A handler's error closes the connection without
/// an answer, and so does a body that fails part way (a stream cut short); a body of unknown
/// length is sent chunked, one chunk per frame; a failed accept is skipped.
pub async fn accept_loop<S, H, Fut, E, B>(listener: tokio::net::TcpListener, state: S, handle: H)
where
    S: Clone + Send + 'static,
    H: Fn(S, Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<B>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The `name=value` pairs of a query string or `application/x-www-form-urlencoded` body, both
/// sides decoded ([`percent_decode`]); empty pairs skipped, a pair without `=` has an empty value.
pub fn form_pairs(s: &str) -> impl Iterator<Item = (String, String)> + '_ {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a space, `%XX` a byte; a `%`
/// not followed by two hex digits stays as it is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request header as text (`None` when absent or not visible ASCII).
pub fn header<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

/// The whole request body (empty when reading it fails).
pub async fn body_bytes(req: Request<Incoming>) -> Bytes {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

/// The whole request body as text, invalid UTF-8 replaced (empty when reading it fails).
pub async fn body_text(req: Request<Incoming>) -> String {
    String::from_utf8_lossy(&body_bytes(req).await).into_owned()
}
