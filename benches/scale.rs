//! Scale benchmark: the `driftwarden` binary over generated clusters of 1,000 and 10,000
//! objects (100,000 on request), shaped as a real API server stores them
//! (tests/support/scale.rs: Deployments, Services, ConfigMaps, Secrets and ServiceAccounts from
//! `fixtures/golden/`, 1% drifted).
//!
//! For each size, each measured as a child process (wall time, and peak resident memory from
//! `wait4`'s `ru_maxrss`):
//! - **bare parse**: this benchmark's own executable, re-run to parse the same files and keep
//!   every document in memory (driftwarden's YAML node tree for the desired files,
//!   `serde_json::Value` for the live files), with the binary's allocator: the denominator of
//!   the ratios;
//! - **offline**: `driftwarden diff --desired DIR --live DIR -o json` (YAML manifests, `kubectl
//!   get -o json` Lists); the report is checked: every planted drift found with its paths and
//!   class, nothing else;
//! - **desired only** (`--live` an empty directory: every object Missing, and classified) and
//!   **live only** (`--desired` one ConfigMap of a namespace live does not hold: every live
//!   object read, none compared);
//! - **live path**: `driftwarden diff --config` with a Kubernetes target against the test API
//!   server (tests/support/kube_server.rs) on loopback holding the same live objects, LISTed in
//!   pages (`page_size` half a kind's objects per namespace, at most 500: every kind and
//!   namespace takes two pages or more); the report is checked the same way;
//! - **watch**: `driftwarden watch` (observe mode, the same Kubernetes target and page size)
//!   against a fresh test API server holding the same objects: once `/readyz` answers 200 (its
//!   first full cycle done) and every scope's watch stream is open, `/metrics` must count every
//!   object checked and exactly the planted drifts by class; then hand edits are made on the
//!   server (`Cluster::live_edits`: 1% of the Deployments scaled, 1% of the ConfigMaps edited)
//!   and `/metrics` must count each as one drift more of its class; then SIGTERM, which must end
//!   it with exit 0. Its time is until `/readyz` answered 200; its peak RSS covers the whole
//!   life of the process (first sync, watch streams, the event passes, the shutdown). A process
//!   that never gets ready, or never shows the edits, fails the benchmark.
//!
//! `cargo bench --bench scale` prints a Markdown table for docs/performance.md.
//! `DRIFTWARDEN_BENCH_SCALE=1000,10000,100000` adds the 100,000 size (about 0.7 GB of files
//! and several minutes); `DRIFTWARDEN_BENCH_RUNS` (default 3 up to 10,000 objects, 1 above)
//! sets the runs per measure (the median time and the largest peak are reported);
//! `DRIFTWARDEN_BENCH_SKIP` (comma-separated: `bare,offline,desired,live-only,kube,watch`) leaves
//! measures out; `DRIFTWARDEN_BIN` measures another build of the binary instead of cargo's.

#[path = "../tests/support/kube_server.rs"]
mod kube_server;
#[path = "../tests/support/scale.rs"]
mod scale;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use scale::{Cluster, Measured};
use serde_json::Value;

// The binary's allocator, so the bare parse is measured as the binary would allocate.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BARE_DESIRED: &str = "DRIFTWARDEN_SCALE_BARE_DESIRED";
const BARE_LIVE: &str = "DRIFTWARDEN_SCALE_BARE_LIVE";

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The bare parse, in a child: every document kept until the end.
fn bare_parse(desired: &Path, live: &Path) {
    let mut desired_files = Vec::new();
    files(desired, &mut desired_files);
    let mut docs = Vec::new();
    for f in &desired_files {
        let text = std::fs::read_to_string(f).expect("read desired file");
        docs.extend(driftwarden::yaml::parse_documents(&text).expect("desired YAML"));
    }
    let mut live_files = Vec::new();
    files(live, &mut live_files);
    let mut lists = Vec::new();
    let mut items = 0;
    for f in &live_files {
        let bytes = std::fs::read(f).expect("read live file");
        let v: Value = serde_json::from_slice(&bytes).expect("live JSON");
        items += v["items"].as_array().map_or(0, Vec::len);
        lists.push(v);
    }
    println!("{} desired documents, {items} live items", docs.len());
    std::hint::black_box((docs, lists));
}

struct Row {
    objects: usize,
    what: String,
    wall: Duration,
    rss_kib: u64,
}

/// `driftwarden diff -o json` with the default policy library.
fn diff() -> Command {
    let mut cmd = scale::measured_command(scale::binary());
    cmd.stdin(Stdio::null()).stderr(Stdio::null());
    cmd.args(["diff", "-o", "json"]);
    cmd
}

/// Runs `make()` `runs` times; the median time and the largest peak. Each run's stdout goes to
/// `out`, and `check` sees the last one.
fn measure(
    runs: usize,
    out: &Path,
    mut make: impl FnMut() -> Command,
    accept: &[i32],
) -> (Duration, u64) {
    let mut walls = Vec::new();
    let mut rss = 0;
    for _ in 0..runs {
        let mut cmd = make();
        cmd.stdout(std::fs::File::create(out).expect("stdout file"));
        let Measured {
            status,
            wall,
            max_rss_kib,
        } = scale::run_measured(&mut cmd).expect("run the child");
        assert!(
            status.code().is_some_and(|c| accept.contains(&c)),
            "{cmd:?} ended with {status}, expected one of {accept:?}"
        );
        walls.push(wall);
        rss = rss.max(max_rss_kib);
    }
    walls.sort();
    (walls[walls.len() / 2], rss)
}

fn check(cluster: &Cluster, report: &Path) {
    let text = std::fs::read_to_string(report).expect("report");
    let v: Value = serde_json::from_str(&text).expect("JSON report");
    if let Err(e) = cluster.check_report(&v) {
        panic!("{e}");
    }
}

fn size(n: usize, skip: &[String], rows: &mut Vec<Row>) {
    let runs = std::env::var("DRIFTWARDEN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if n <= 10_000 { 3 } else { 1 });
    let on = |what: &str| !skip.iter().any(|s| s == what);
    let dir = tempfile::tempdir().expect("tempdir");
    let desired = dir.path().join("desired");
    let live = dir.path().join("live");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("empty dir");
    // Desired for "live files only": one ConfigMap in a namespace live does not have, so every
    // live object is read and none compared.
    let unrelated = dir.path().join("unrelated");
    std::fs::create_dir_all(&unrelated).expect("unrelated dir");
    std::fs::write(
        unrelated.join("configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unrelated\n  namespace: elsewhere\ndata:\n  k: v\n",
    )
    .expect("write unrelated manifest");
    let cluster = Cluster::new(n);
    let db = cluster.write_desired(&desired).expect("write desired");
    let lb = cluster.write_live(&live).expect("write live");
    eprintln!(
        "{n} objects in {} namespaces: desired {:.1} MB, live {:.1} MB, {} planted drifts",
        cluster.namespaces,
        db as f64 / 1e6,
        lb as f64 / 1e6,
        cluster.planted().len()
    );
    let report = dir.path().join("report.json");
    let mut row = |what: &str, (wall, rss_kib): (Duration, u64)| {
        eprintln!(
            "  {what}: {:.2} s, {:.0} MiB",
            Duration::as_secs_f64(&wall),
            rss_kib as f64 / 1024.0
        );
        rows.push(Row {
            objects: n,
            what: what.to_string(),
            wall,
            rss_kib,
        });
    };
    if on("bare") {
        let m = measure(
            runs,
            &report,
            || {
                let mut cmd = scale::measured_command(std::env::current_exe().expect("own path"));
                cmd.env(BARE_DESIRED, &desired)
                    .env(BARE_LIVE, &live)
                    .stdin(Stdio::null());
                cmd
            },
            &[0],
        );
        row(
            "bare parse (YAML node trees + `serde_json::Value`s, all kept)",
            m,
        );
    }
    if on("offline") {
        let m = measure(
            runs,
            &report,
            || {
                let mut cmd = diff();
                cmd.arg("--policies")
                    .arg(scale::policies())
                    .arg("--desired")
                    .arg(&desired)
                    .arg("--live")
                    .arg(&live);
                cmd
            },
            &[2],
        );
        check(&cluster, &report);
        row("`diff --desired DIR --live DIR`", m);
    }
    if on("live-only") {
        let m = measure(
            runs,
            &report,
            || {
                let mut cmd = diff();
                cmd.arg("--policies")
                    .arg(scale::policies())
                    .arg("--desired")
                    .arg(&unrelated)
                    .arg("--live")
                    .arg(&live);
                cmd
            },
            &[2],
        );
        row("the same, live files only (nothing to compare)", m);
    }
    if on("desired") {
        let m = measure(
            runs,
            &report,
            || {
                let mut cmd = diff();
                cmd.arg("--policies")
                    .arg(scale::policies())
                    .arg("--desired")
                    .arg(&desired)
                    .arg("--live")
                    .arg(&empty);
                cmd
            },
            &[2],
        );
        row("the same, desired files only (every object Missing)", m);
    }
    if on("kube") {
        let scale::Served {
            runtime: rt,
            server,
            kubeconfig,
        } = cluster.serve(dir.path());
        // Every kind and namespace holds about n / (5 × namespaces) objects: LISTed in two
        // pages or more, at most 500 to a page (the default).
        let page_size = (n / (5 * cluster.namespaces) / 2).clamp(1, 500);
        let config = scale::write_kube_config(
            dir.path(),
            "driftwarden.yaml",
            &desired,
            &kubeconfig,
            page_size,
            None,
            "",
        );
        let m = measure(
            runs,
            &report,
            || {
                let mut cmd = diff();
                cmd.arg("--config").arg(&config);
                cmd
            },
            &[2],
        );
        check(&cluster, &report);
        let lists = server.requests().iter().filter(|r| r.is_list()).count();
        let continued = server
            .requests()
            .iter()
            .filter(|r| r.is_list() && r.param("continue").is_some())
            .count();
        assert!(continued > 0, "the LISTs were paged");
        eprintln!(
            "  kube: {lists} LIST requests over {runs} run(s), {continued} with a continue token, page size {page_size}"
        );
        row(
            "`diff --config`, Kubernetes target, test API server (paged LISTs)",
            m,
        );
        drop(server);
        rt.shutdown_background();
    }
    if on("watch") {
        let page_size = (n / (5 * cluster.namespaces) / 2).clamp(1, 500);
        let edits = cluster.live_edits().len();
        let mut walls = Vec::new();
        let mut rss = 0;
        for run in 0..runs {
            let (ready, peak) = watch_run(
                &cluster,
                &desired,
                page_size,
                &dir.path().join(format!("watch-{run}")),
            );
            walls.push(ready);
            rss = rss.max(peak);
        }
        walls.sort();
        row(
            &format!(
                "`watch`, Kubernetes target, test API server: first sync + {edits} events (time: until `/readyz` is 200)"
            ),
            (walls[walls.len() / 2], rss),
        );
    }
}

/// `driftwarden watch` over the cluster in a fresh test API server, one run: started, ready
/// (`/readyz` 200: the first full cycle done) with every scope's watch stream open, checked
/// through `/metrics` (every object checked, exactly the planted drifts by class), then the
/// [`Cluster::live_edits`] made on the server and waited for until `/metrics` counts each as
/// one more drift of its class; then SIGTERM. Returns the time until ready and the peak RSS of
/// the whole process (`wait4`'s `ru_maxrss`, KiB).
fn watch_run(cluster: &Cluster, desired: &Path, page_size: usize, dir: &Path) -> (Duration, u64) {
    std::fs::create_dir_all(dir).expect("watch run dir");
    let scale::Served {
        runtime: rt,
        server,
        kubeconfig,
    } = cluster.serve(dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port");
    // The Kubernetes target in observe mode (it reports, writes nothing), the endpoints on
    // `127.0.0.1:port`.
    let config = scale::write_kube_config(
        dir,
        "driftwarden-watch.yaml",
        desired,
        &kubeconfig,
        page_size,
        Some("observe"),
        &format!("watch:\n  listen: 127.0.0.1:{port}\n"),
    );
    let log = dir.join("watch.log");
    let mut cmd = scale::measured_command(scale::binary());
    cmd.arg("watch")
        .arg("--config")
        .arg(&config)
        .args(["--log-format=json", "--log-level=info"])
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env_remove("DRIFTWARDEN_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let child = scale::Running::spawn(&mut cmd).expect("start driftwarden watch");
    let fail = |what: &str| -> ! {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "driftwarden watch over {} objects: {what}\nlast lines of its log:\n{}",
            cluster.objects,
            tail.join("\n")
        );
    };

    // Ready: every target's first full cycle done. A generous limit only turns a hang into a
    // failure (about 14 s per 10,000 objects on the shared two-core machine).
    let ready_limit = Duration::from_secs(120 + cluster.objects as u64 / 100);
    loop {
        if http_get(port, "/readyz").is_some_and(|(code, _)| code == 200) {
            break;
        }
        if !child.alive() {
            fail("the process ended before /readyz answered 200");
        }
        if child.elapsed() > ready_limit {
            fail(&format!(
                "/readyz did not answer 200 within {ready_limit:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready = child.elapsed();
    // Every scope (each kind in each namespace) has listed and opened its watch, so the edits
    // below arrive as watch events, not in a list.
    let scopes = 5 * cluster.namespaces;
    rt.block_on(server.wait_for_watches("", scopes, ready_limit));
    let planted = cluster.planted();
    let by_class = |class: &str| planted.iter().filter(|d| d.class == class).count();
    let (safe, risky) = (by_class("safe"), by_class("risky"));
    assert_eq!(
        safe + risky,
        planted.len(),
        "planted drifts are safe or risky"
    );
    let expect = |drifted: usize, safe: usize, risky: usize| {
        [
            ("driftwarden_resources_checked".to_string(), cluster.objects),
            ("driftwarden_resources_drifted".to_string(), drifted),
            ("driftwarden_drifts{class=\"safe\"}".to_string(), safe),
            ("driftwarden_drifts{class=\"risky\"}".to_string(), risky),
        ]
    };
    let mismatch = |want: &[(String, usize)]| -> Option<String> {
        let Some((200, text)) = http_get(port, "/metrics") else {
            return Some("/metrics did not answer 200".into());
        };
        let wrong: Vec<String> = want
            .iter()
            .filter_map(|(name, n)| {
                let got = metric(&text, name);
                (got != Some(*n as f64)).then(|| format!("{name} is {got:?}, expected {n}"))
            })
            .collect();
        (!wrong.is_empty()).then(|| wrong.join("; "))
    };
    if let Some(wrong) = mismatch(&expect(planted.len(), safe, risky)) {
        fail(&format!("after the first sync: {wrong}"));
    }
    let rss_ready = child.status_kib("VmRSS:").unwrap_or(0);

    // The hand edits, each one drift more once its event has been handled.
    let edits = cluster.live_edits();
    for e in &edits {
        match &e.edit {
            scale::Edit::Scale(replicas) => {
                server.scale_as(
                    "kubectl",
                    e.api_version,
                    e.kind,
                    Some(&e.namespace),
                    &e.name,
                    *replicas,
                );
            }
            scale::Edit::MergePatch(patch) => {
                server.merge_patch_as(
                    "kubectl-edit",
                    e.api_version,
                    e.kind,
                    Some(&e.namespace),
                    &e.name,
                    patch.clone(),
                );
            }
        }
    }
    let more = |class: &str| edits.iter().filter(|e| e.class == class).count();
    let want = expect(
        planted.len() + edits.len(),
        safe + more("safe"),
        risky + more("risky"),
    );
    let events_limit = Duration::from_secs(120);
    let edited = std::time::Instant::now();
    while let Some(wrong) = mismatch(&want) {
        if !child.alive() {
            fail("the process ended while the events were handled");
        }
        if edited.elapsed() > events_limit {
            fail(&format!(
                "{} edits made; not seen within {events_limit:?}: {wrong}",
                edits.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_after = child.status_kib("VmRSS:").unwrap_or(0);
    let hwm = child.status_kib("VmHWM:").unwrap_or(0);
    let Measured {
        status,
        max_rss_kib,
        ..
    } = child
        .terminate(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("driftwarden watch did not stop on SIGTERM: {e}"));
    assert_eq!(
        status.code(),
        Some(0),
        "driftwarden watch ended with {status} after SIGTERM"
    );
    eprintln!(
        "  watch: ready after {:.2} s, {scopes} watch streams; VmRSS {:.0} MiB when ready, {:.0} MiB after {} edits seen (VmHWM {:.0} MiB); peak {:.0} MiB",
        ready.as_secs_f64(),
        rss_ready as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        edits.len(),
        hwm as f64 / 1024.0,
        max_rss_kib as f64 / 1024.0
    );
    drop(server);
    rt.shutdown_background();
    (ready, max_rss_kib)
}

/// `GET path` on the watch's loopback listener: the status code and the body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// The value of the sample `name` (with its labels, as rendered) in a Prometheus text body.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn main() {
    scale::launch_if_asked();
    if let (Ok(d), Ok(l)) = (std::env::var(BARE_DESIRED), std::env::var(BARE_LIVE)) {
        bare_parse(Path::new(&d), Path::new(&l));
        return;
    }
    let sizes: Vec<usize> = std::env::var("DRIFTWARDEN_BENCH_SCALE")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let skip: Vec<String> = std::env::var("DRIFTWARDEN_BENCH_SKIP")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut rows = Vec::new();
    for &n in &sizes {
        size(n, &skip, &mut rows);
    }
    println!(
        "| objects | what | time | objects/s | µs per object | × bare parse (time) | peak RSS | × bare parse (RSS) | RSS per object |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let bare = rows
            .iter()
            .find(|b| b.objects == r.objects && b.what.starts_with("bare parse"));
        let secs = r.wall.as_secs_f64();
        let ratio = |a: f64, b: Option<f64>| match b {
            Some(b) if b > 0.0 => format!("{:.2}", a / b),
            _ => "–".into(),
        };
        println!(
            "| {} | {} | {:.2} s | {:.0} | {:.1} | {} | {:.0} MiB | {} | {:.1} KiB |",
            r.objects,
            r.what,
            secs,
            r.objects as f64 / secs,
            secs * 1e6 / r.objects as f64,
            ratio(secs, bare.map(|b| b.wall.as_secs_f64())),
            r.rss_kib as f64 / 1024.0,
            ratio(r.rss_kib as f64, bare.map(|b| b.rss_kib as f64)),
            r.rss_kib as f64 / r.objects as f64,
        );
    }
}
