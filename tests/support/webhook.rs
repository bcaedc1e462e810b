//! A webhook receiver on loopback for the notification tests: raw HTTP/1.1 over TCP (keep-alive
//! included, as a pooled client reuses connections), so that it can also misbehave in ways a
//! framework would not let it: answer slowly, answer 500, or never answer at all.
//!
//! What it does depends on the first path segment:
//! - `/ok/…`: 200 at once;
//! - `/slow/…`: 200 after [`SLOW`];
//! - `/fail/…`: 500 every time;
//! - `/hang/…`: reads the request and never answers; when the client gives up and closes the
//!   connection, the request's `closed_at` is set.
//!
//! Every request is logged with its arrival time, in arrival order.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long `/slow/…` waits before answering.
pub const SLOW: Duration = Duration::from_millis(200);

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: Instant,
    /// `/hang/…` only: when the client closed the connection it was waiting on.
    pub closed_at: Option<Instant>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

type Log = Arc<Mutex<Vec<Received>>>;

/// The receiver; it lives as long as the test process.
pub struct Receiver {
    addr: SocketAddr,
    log: Log,
}

impl Receiver {
    /// Binds 127.0.0.1 on a free port and serves it on a thread of its own.
    pub fn start() -> Receiver {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let log: Log = Arc::default();
        let shared = Arc::clone(&log);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(connection(stream, Arc::clone(&shared)));
                }
            });
        });
        Receiver { addr, log }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn all(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// The requests whose path starts with `prefix`, in arrival order.
    pub fn received(&self, prefix: &str) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }
}

/// Serves one connection: requests one after another until the client closes it.
async fn connection(mut stream: TcpStream, log: Log) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some((path, headers, body)) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let index = {
            let mut l = log.lock().unwrap();
            l.push(Received {
                path: path.clone(),
                headers,
                body,
                at: Instant::now(),
                closed_at: None,
            });
            l.len() - 1
        };
        let (status, delay) = match path.split('/').nth(1).unwrap_or_default() {
            "ok" => ("200 OK", None),
            "slow" => ("200 OK", Some(SLOW)),
            "fail" => ("500 Internal Server Error", None),
            "hang" => {
                // Never answer; note when the client gives up on the connection.
                let mut sink = [0u8; 1024];
                loop {
                    match stream.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                log.lock().unwrap()[index].closed_at = Some(Instant::now());
                return;
            }
            _ => ("404 Not Found", None),
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let body = if status.starts_with("200") {
            "ok"
        } else {
            "receiver error"
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads one request (head and a `content-length` body); `None` when the connection closed.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, Vec<(String, String)>, String)> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let start = head_end + 4;
    while buf.len() < start + len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[start..start + len]).into_owned();
    buf.drain(..start + len);
    Some((path, headers, body))
}
