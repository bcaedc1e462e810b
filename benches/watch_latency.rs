//! Benchmark of `driftwarden watch` against the Kubernetes API server on loopback
//! (tests/support/kube_server.rs):
//!
//! - **time to correct**: a hand edit of a Deployment's replica count (merge patch by another
//!   field manager) is made on the server; the time until the server holds the corrected object
//!   again (driftwarden's apply, confirmed by its re-read) is measured, edit after edit
//!   (`DRIFTWARDEN_BENCH_EDITS`, default 60), with `watch.debounce: 500ms` (the default); p50
//!   and p99, and both minus the debounce;
//! - **resident memory**: the `driftwarden watch` binary watching a namespace of N ConfigMaps
//!   (`DRIFTWARDEN_BENCH_OBJECTS`, default `10000,100000`), read from `/proc/<pid>/status` once
//!   `/readyz` answers 200 (first sync done): VmRSS and VmHWM.
//!
//! `cargo bench --bench watch_latency`; results go to stdout as Markdown rows for
//! docs/performance.md.

#[path = "../tests/support/common.rs"]
mod common;
#[path = "../tests/support/kube_server.rs"]
mod kube_server;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use driftwarden::config;
use driftwarden::watch::{Status, Watch, WatchOptions};
use kube_server::KubeServer;
use serde_json::{Value, json};

const DEBOUNCE_MS: u64 = 500;

fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": "nginx:1.27.3"}]}
            }
        }
    })
}

const POLICY: &str = r#"package driftwarden.bench

classify contains {"class": "safe", "reason": "replica counts follow Git", "rule": "replicas"} if {
	input.kind == "Modified"
	input.resource.kind == "Deployment"
}
"#;

fn write_repo(dir: &Path, objects: &[Value]) {
    let files: Vec<(String, String)> = objects
        .iter()
        .map(|o| {
            (
                format!(
                    "apps/{}-{}.json",
                    o["kind"].as_str().unwrap_or("").to_lowercase(),
                    o["metadata"]["name"].as_str().unwrap_or("")
                ),
                serde_json::to_string_pretty(o).unwrap_or_default(),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let repo = git2::Repository::init(dir.join("gitops")).expect("git init");
    common::commit_files(&repo, &refs, "desired state");
}

fn config(dir: &Path, kubeconfig: &Path, namespace: &str, listen: &str) -> std::path::PathBuf {
    let text = format!(
        "version: 1
policies:
  dirs: [{policies}]
state_dir: {state}
targets:
  - name: bench
    mode: autocorrect
    cluster: bench
    namespace: {namespace}
    desired: {{git: {{repo: {repo}}}, path: apps}}
    live:
      kubernetes: {{kubeconfig: {kc}}}
    guardrails: {{max_correction_percent: 100, max_remediations_per_hour: 100000}}
watch:
  debounce: {DEBOUNCE_MS}ms
  listen: {listen}
  max_corrections_per_window: 100000
",
        policies = dir.join("policies").display(),
        state = dir.join("state").display(),
        repo = dir.join("gitops").display(),
        kc = kubeconfig.display(),
    );
    common::write(dir, "driftwarden.yaml", &text)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

async fn until(status: &Status, pred: impl Fn() -> bool) {
    let mut rx = status.subscribe();
    let wait = async {
        while !pred() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), wait)
        .await
        .expect("the watch reached the state within two minutes");
}

async fn latency(edits: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = KubeServer::start().await;
    let kubeconfig = server.write_kubeconfig(dir.path());
    common::write(dir.path(), "policies/bench.rego", POLICY);
    server.apply_as(
        "kubectl",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
    );
    let objects: Vec<Value> = (0..20)
        .map(|i| deployment(&format!("app-{i}"), 2))
        .collect();
    for o in &objects {
        server.apply_as("driftwarden", o.clone());
    }
    write_repo(dir.path(), &objects);
    let cfg =
        config::load(&config(dir.path(), &kubeconfig, "shop", "127.0.0.1:0")).expect("config");
    let opts = WatchOptions {
        cache_dir: dir.path().join("cache"),
        ..WatchOptions::default()
    };
    let watch = Watch::prepare(cfg, opts).await.expect("prepare");
    let status = watch.status();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let done = tokio::task::spawn_local(watch.run(stop_rx));
    until(&status, || {
        status
            .target("bench")
            .is_some_and(|t| t.first_sync && t.watches > 0 && t.watches_synced == t.watches)
    })
    .await;
    let mut times = Vec::with_capacity(edits);
    for i in 0..edits {
        let name = format!("app-{}", i % objects.len());
        let started = Instant::now();
        server.merge_patch_as(
            "kubectl-edit",
            "apps/v1",
            "Deployment",
            Some("shop"),
            &name,
            json!({"spec": {"replicas": 5 + (i as i64 % 7)}}),
        );
        until(&status, || {
            server
                .object("apps/v1", "Deployment", Some("shop"), &name)
                .is_some_and(|o| o["spec"]["replicas"] == 2)
        })
        .await;
        times.push(started.elapsed());
    }
    let _ = stop.send(true);
    let _ = done.await;
    times.sort();
    let debounce = Duration::from_millis(DEBOUNCE_MS);
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    println!(
        "| hand edit → confirmed correction, {edits} edits, debounce {DEBOUNCE_MS} ms | p50 {:.0} ms ({:.0} ms beyond the debounce) | p99 {:.0} ms ({:.0} ms beyond) | max {:.0} ms |",
        p50.as_secs_f64() * 1000.0,
        p50.saturating_sub(debounce).as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        p99.saturating_sub(debounce).as_secs_f64() * 1000.0,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
    );
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn readyz(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

async fn memory(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = KubeServer::start().await;
    let kubeconfig = server.write_kubeconfig(dir.path());
    common::write(dir.path(), "policies/bench.rego", POLICY);
    server.apply_as(
        "kubectl",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bulk"}}),
    );
    let seeded = Instant::now();
    for i in 0..n {
        server.seed(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": format!("cm-{i:06}"),
                "namespace": "bulk",
                "labels": {"app": "bulk", "shard": format!("s{}", i % 16)}
            },
            "data": {"LOG_LEVEL": "info", "REGION": "eu-west-1", "FEATURE_FLAGS": "a,b,c,d"}
        }));
    }
    eprintln!("seeded {n} ConfigMaps in {:?}", seeded.elapsed());
    let desired = vec![json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm-000000", "namespace": "bulk", "labels": {"app": "bulk", "shard": "s0"}},
        "data": {"LOG_LEVEL": "info", "REGION": "eu-west-1", "FEATURE_FLAGS": "a,b,c,d"}
    })];
    write_repo(dir.path(), &desired);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let cfg = config(
        dir.path(),
        &kubeconfig,
        "bulk",
        &format!("127.0.0.1:{port}"),
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args(["watch", "--config"])
        .arg(&cfg)
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .env_remove("DRIFTWARDEN_LOG")
        .kill_on_drop(true)
        .spawn()
        .expect("start driftwarden watch");
    let pid = child.id().expect("pid");
    let started = Instant::now();
    // Waiting for readiness, not timing anything: /readyz turns 200 after the first sync.
    while !readyz(port) {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not ready after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = started.elapsed();
    let rss = status_kb(pid, "VmRSS:");
    let hwm = status_kb(pid, "VmHWM:");
    println!(
        "| `watch` over {n} ConfigMaps | ready after {:.1} s | VmRSS {:.0} MiB | VmHWM {:.0} MiB |",
        ready.as_secs_f64(),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
}

fn main() {
    // Only with `cargo bench` (which passes --bench), not when `cargo test` runs benches.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let edits: usize = std::env::var("DRIFTWARDEN_BENCH_EDITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let sizes: Vec<usize> = std::env::var("DRIFTWARDEN_BENCH_OBJECTS")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let local = tokio::task::LocalSet::new();
    rt.block_on(local.run_until(latency(edits)));
    for n in sizes {
        rt.block_on(memory(n));
    }
}
