//! The captured kube-apiserver 1.32 exchanges of fixtures/golden (see its README) and a raw
//! HTTP/1.1 client to replay them against the Kubernetes test API server
//! (tests/support/kube_server.rs): whole answers, and watch streams read chunk by chunk.
//!
//! Included with `#[path = "support/golden.rs"] mod golden;`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[path = "common.rs"]
#[allow(clippy::duplicate_mod)]
mod common;

/// A path under fixtures/golden.
pub fn golden(rel: &str) -> PathBuf {
    common::root().join("fixtures/golden").join(rel)
}

/// One captured exchange: request line, status, the response headers and the body.
pub struct Exchange {
    pub method: String,
    pub target: String,
    pub status: u16,
    /// Names lowercased, in order (`Date` and `Audit-Id` were left out of the capture).
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` for a watch stream, whose body is [`Exchange::events`]).
    pub body: Value,
    /// The body as captured.
    pub text: String,
}

impl Exchange {
    /// Every value of a response header.
    pub fn header(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    /// A watch stream's events, one JSON object per line.
    pub fn events(&self) -> Vec<Value> {
        self.text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The exchange `fixtures/golden/<dir>/<name>.http` (`dir`: `protocol` or `rollout`).
pub fn exchange_in(dir: &str, name: &str) -> Exchange {
    let text = std::fs::read_to_string(golden(&format!("{dir}/{name}.http"))).unwrap();
    let (head, body) = text.split_once("\n\n").unwrap();
    let (request_line, response) = head.split_once('\n').unwrap();
    let request: Vec<&str> = request_line.split(' ').collect();
    let (status, headers) = common::response_head(response);
    Exchange {
        method: request[0].to_string(),
        target: request[1].to_string(),
        status,
        headers,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
        text: body.to_string(),
    }
}

/// The exchange `fixtures/golden/protocol/<name>.http`.
pub fn exchange(name: &str) -> Exchange {
    exchange_in("protocol", name)
}

/// The request body of a protocol exchange (`<name>.request.yaml|json`), or empty.
pub fn request_body(name: &str) -> String {
    request_body_in("protocol", name)
}

/// The request body of an exchange in `dir`, or empty.
pub fn request_body_in(dir: &str, name: &str) -> String {
    for ext in ["yaml", "json"] {
        let p = golden(&format!("{dir}/{name}.request.{ext}"));
        if p.exists() {
            return std::fs::read_to_string(p).unwrap();
        }
    }
    String::new()
}

/// Replaces what differs between any two servers (uids, timestamps, allocated IPs).
pub fn normalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if matches!(
                    k.as_str(),
                    "uid" | "creationTimestamp" | "time" | "deletionTimestamp"
                ) && child.is_string()
                {
                    *child = json!("X");
                } else {
                    normalize(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// An answer as the wire carried it.
pub struct RawAnswer {
    pub status: u16,
    /// Names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawAnswer {
    /// Every value of a header.
    pub fn header(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// The request head curl sends (`Connection: close`).
fn request_head(
    addr: &str,
    token: Option<&str>,
    method: &str,
    target: &str,
    content_type: Option<&str>,
    body: &str,
) -> String {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: curl/8.5.0\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// A raw HTTP/1.1 exchange with the server at `addr` (`host:port`), like curl: status, headers
/// and the body as text.
pub async fn raw_exchange(
    addr: &str,
    token: Option<&str>,
    method: &str,
    target: &str,
    content_type: Option<&str>,
    body: &str,
) -> RawAnswer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = request_head(addr, token, method, target, content_type, body);
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let (status, headers) = common::response_head(head);
    RawAnswer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A watch stream read as the wire carries it.
pub struct RawStream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<tokio::net::TcpStream>,
}

/// What the next read of a watch stream found.
#[derive(Debug, PartialEq)]
pub enum Chunk {
    /// One chunk's bytes.
    Data(String),
    /// The terminating zero-length chunk: a clean end.
    End,
    /// The connection closed without the terminating chunk.
    Cut,
}

impl RawStream {
    /// Sends a GET and reads the answer's head (and nothing more: a stream's head comes before
    /// any event); status 0 when the connection closes unanswered.
    pub async fn open(addr: &str, token: Option<&str>, target: &str) -> RawStream {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = request_head(addr, token, "GET", target, None, "");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).await.unwrap();
            if n == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        // A connection closed without an answer: status 0.
        let (status, headers) = if head.is_empty() {
            (0, Vec::new())
        } else {
            common::response_head(&head)
        };
        RawStream {
            status,
            headers,
            reader,
        }
    }

    pub fn header(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    /// The next chunk of a chunked body.
    pub async fn next(&mut self) -> Chunk {
        let mut size = String::new();
        match self.reader.read_line(&mut size).await {
            Ok(0) | Err(_) => return Chunk::Cut,
            Ok(_) => {}
        }
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return Chunk::Cut;
        };
        let mut data = vec![0; n + 2];
        if self.reader.read_exact(&mut data).await.is_err() {
            return Chunk::Cut;
        }
        if n == 0 {
            return Chunk::End;
        }
        data.truncate(n);
        Chunk::Data(String::from_utf8(data).unwrap())
    }

    /// The next chunk, or `None` when nothing comes within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Chunk> {
        tokio::time::timeout(wait, self.next()).await.ok()
    }

    /// The next event (panics on anything else).
    pub async fn event(&mut self) -> Value {
        match self.next().await {
            Chunk::Data(line) => {
                assert!(
                    line.ends_with('\n'),
                    "one event per chunk, ended by a newline: {line:?}"
                );
                assert_eq!(
                    line.matches('\n').count(),
                    1,
                    "one event per chunk: {line:?}"
                );
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
            }
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// Every remaining event up to the end of the stream, and how it ended.
    pub async fn rest(&mut self) -> (Vec<Value>, Chunk) {
        let mut events = Vec::new();
        loop {
            match self.next().await {
                Chunk::Data(line) => events
                    .push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))),
                end => return (events, end),
            }
        }
    }
}
