//! A generated cluster of N objects for the scale benchmark (benches/scale.rs) and the
//! memory-ceiling test (tests/memory_ceiling.rs).
//!
//! Every object is a copy of a real kube-apiserver 1.32 object from `fixtures/golden/`, renamed:
//! the desired side is the hand-written manifest (`fixtures/golden/desired/*.yaml`, as Git holds
//! it), the live side is what the server stored after a server-side apply by `driftwarden`
//! (`fixtures/golden/live/*.json`: server defaults, managedFields, status, uid,
//! resourceVersion, creationTimestamp). Five kinds take turns: Deployment, Service, ConfigMap,
//! Secret, ServiceAccount; objects are spread over `max(10, N / 1000)` namespaces.
//!
//! One object in a hundred is drifted, the way people drift them (`fixtures/golden/live-drifted/`,
//! see its EXPECTED.md): a Deployment scaled (2 → 5), its image set and a label overwritten
//! (risky), or only scaled (2 → 3, safe); a ConfigMap value edited; a Secret value patched; a
//! Service or a ServiceAccount deleted (risky). The generator
//! knows exactly which, so [`Cluster::check_report`] can assert that a run found every planted
//! drift, with its changed paths and the class the default policies give it, and nothing else.
//! Some Services that are not drifted carry an annotation added by hand that Git never declared
//! (not drift under the default rules), so a diff that reports it fails the check.
//!
//! Written as files, desired is one YAML file per object under `<namespace>/`, and live is one
//! `kubectl get deployments,services,configmaps,secrets,serviceaccounts -n NS -o json` List per
//! namespace (4-space indent, as kubectl prints). The same live objects can be stored in the test
//! API server (kube_server.rs `seed`), which serves them in pages (`limit`/`continue`).
//! Nothing is held for all objects at once: files are written one object at a time.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One kind's templates: the desired manifest, the live object, and the drifted live object.
struct Template {
    kind: &'static str,
    /// `metadata.name` in the templates; objects are named `<base>-<index>`.
    base: &'static str,
    desired: &'static str,
    live: &'static str,
    drifted: Option<&'static str>,
    /// What a drifted object of this kind is; drifted objects take the variants in turn.
    drift: &'static [Planted],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Planted {
    /// Live is the drifted template, which differs at these JSON pointers; the default
    /// policies give it this class.
    Modified(&'static [&'static str], &'static str),
    /// Live is the clean template scaled to this many replicas by hand (`kubectl scale`: an
    /// Update of the `scale` subresource by `kubectl`, without `time`); this class.
    Scaled(i64, &'static str),
    /// The object is absent from live; the default policies give it this class.
    Missing(&'static str),
}

const TEMPLATES: [Template; 5] = [
    Template {
        kind: "Deployment",
        base: "storefront",
        desired: include_str!("../../fixtures/golden/desired/deployment-storefront.yaml"),
        live: include_str!("../../fixtures/golden/live/deployment-storefront.json"),
        drifted: Some(include_str!(
            "../../fixtures/golden/live-drifted/deployment-storefront.json"
        )),
        drift: &[
            // Scaled 2 -> 5, image set, label overwritten: the image makes it risky.
            Planted::Modified(
                &[
                    "/metadata/labels/tier",
                    "/spec/replicas",
                    "/spec/template/spec/containers/0/image",
                ],
                "risky",
            ),
            // Scaled 2 -> 3 with no autoscaler: within the limits, safe to restore.
            Planted::Scaled(3, "safe"),
        ],
    },
    Template {
        kind: "Service",
        base: "storefront",
        desired: include_str!("../../fixtures/golden/desired/service-storefront.yaml"),
        live: include_str!("../../fixtures/golden/live/service-storefront.json"),
        // Not drift: an annotation added by hand (`kubectl annotate`) that Git never declared.
        drifted: Some(include_str!(
            "../../fixtures/golden/live-drifted/service-storefront.json"
        )),
        drift: &[Planted::Missing("risky")],
    },
    Template {
        kind: "ConfigMap",
        base: "storefront-config",
        desired: include_str!("../../fixtures/golden/desired/configmap-storefront-config.yaml"),
        live: include_str!("../../fixtures/golden/live/configmap-storefront-config.json"),
        drifted: Some(include_str!(
            "../../fixtures/golden/live-drifted/configmap-storefront-config.json"
        )),
        drift: &[Planted::Modified(&["/data/LOG_LEVEL"], "risky")],
    },
    Template {
        kind: "Secret",
        base: "storefront-secrets",
        desired: include_str!("../../fixtures/golden/desired/secret-storefront-secrets.yaml"),
        live: include_str!("../../fixtures/golden/live/secret-storefront-secrets.json"),
        drifted: Some(include_str!(
            "../../fixtures/golden/live-drifted/secret-storefront-secrets.json"
        )),
        drift: &[Planted::Modified(&["/data/API_KEY"], "risky")],
    },
    Template {
        kind: "ServiceAccount",
        base: "storefront",
        desired: include_str!("../../fixtures/golden/desired/serviceaccount-storefront.yaml"),
        live: include_str!("../../fixtures/golden/live/serviceaccount-storefront.json"),
        drifted: None,
        drift: &[Planted::Missing("risky")],
    },
];

/// One drift the generator planted, as a report names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlantedDrift {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `Modified` or `Missing`.
    pub drift: String,
    /// The changed JSON pointers (sorted), empty for `Missing`.
    pub paths: Vec<String>,
    /// The verdict class the default policies give it.
    pub class: String,
}

/// A hand edit of a live object ([`Cluster::live_edits`]).
#[derive(Clone, Debug)]
pub struct LiveEdit {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub edit: Edit,
    /// The class the default policies give the drift the edit makes.
    pub class: &'static str,
}

/// What a [`LiveEdit`] does.
#[derive(Clone, Debug)]
pub enum Edit {
    /// `kubectl scale --replicas=N` (the `scale` subresource, manager `kubectl`).
    Scale(i64),
    /// `kubectl patch --type merge` by the field manager `kubectl-edit`.
    MergePatch(Value),
}

/// Where object `i` goes and what it is.
struct Slot {
    template: usize,
    name: String,
    namespace: String,
    drifted: bool,
    /// Which of the template's drifts, when drifted.
    variant: Planted,
    /// A Service with a hand-added annotation Git never declared (not drift).
    annotated: bool,
}

/// A generated cluster of `objects` objects.
#[derive(Clone, Copy, Debug)]
pub struct Cluster {
    pub objects: usize,
    pub namespaces: usize,
}

/// Parsed templates, shared by every object.
struct Parsed {
    live: Vec<Value>,
    drifted: Vec<Option<Value>>,
}

fn parsed() -> Parsed {
    Parsed {
        live: TEMPLATES
            .iter()
            .map(|t| serde_json::from_str(t.live).expect("golden live object"))
            .collect(),
        drifted: TEMPLATES
            .iter()
            .map(|t| {
                t.drifted
                    .map(|d| serde_json::from_str(d).expect("golden drifted object"))
            })
            .collect(),
    }
}

impl Cluster {
    /// `objects` objects over `max(10, objects / 1000)` namespaces.
    pub fn new(objects: usize) -> Cluster {
        Cluster {
            objects,
            namespaces: (objects / 1000).max(10),
        }
    }

    fn slot(&self, i: usize) -> Slot {
        let template = i % TEMPLATES.len();
        let group = i / TEMPLATES.len();
        let drifted = group % 100 == 37;
        let variants = TEMPLATES[template].drift;
        Slot {
            variant: variants[(group / 100) % variants.len()],
            template,
            name: format!("{}-{i:06}", TEMPLATES[template].base),
            namespace: format!("scale-{:03}", (group / 3) % self.namespaces),
            drifted,
            annotated: !drifted && TEMPLATES[template].kind == "Service" && group % 50 == 11,
        }
    }

    fn namespace_name(&self, ns: usize) -> String {
        format!("scale-{ns:03}")
    }

    /// Every planted drift, sorted.
    pub fn planted(&self) -> Vec<PlantedDrift> {
        let mut out: Vec<PlantedDrift> = (0..self.objects)
            .map(|i| self.slot(i))
            .filter(|s| s.drifted)
            .map(|s| {
                let t = &TEMPLATES[s.template];
                let (drift, paths, class) = match s.variant {
                    Planted::Modified(paths, class) => (
                        "Modified",
                        paths.iter().map(|p| p.to_string()).collect(),
                        class,
                    ),
                    Planted::Scaled(_, class) => {
                        ("Modified", vec!["/spec/replicas".to_string()], class)
                    }
                    Planted::Missing(class) => ("Missing", Vec::new(), class),
                };
                PlantedDrift {
                    kind: t.kind.to_string(),
                    namespace: s.namespace,
                    name: s.name,
                    drift: drift.to_string(),
                    paths,
                    class: class.to_string(),
                }
            })
            .collect();
        out.sort();
        out
    }

    /// The desired manifest of object `i`, as Git holds it.
    fn desired_text(&self, s: &Slot) -> String {
        let t = &TEMPLATES[s.template];
        let from = format!("metadata:\n  name: {}\n  namespace: shop\n", t.base);
        let to = format!(
            "metadata:\n  name: {}\n  namespace: {}\n",
            s.name, s.namespace
        );
        assert!(
            t.desired.contains(&from),
            "the {} template starts its metadata with name and namespace",
            t.kind
        );
        t.desired.replacen(&from, &to, 1)
    }

    /// The live object of slot `s` (None when the drift planted is its deletion).
    fn live_object(&self, p: &Parsed, i: usize, s: &Slot) -> Option<Value> {
        let t = &TEMPLATES[s.template];
        let mut obj = if s.drifted {
            match s.variant {
                Planted::Missing(_) => return None,
                Planted::Modified(..) => p.drifted[s.template].clone()?,
                Planted::Scaled(replicas, _) => scaled(&p.live[s.template], replicas)?,
            }
        } else if s.annotated {
            p.drifted[s.template].clone()?
        } else {
            p.live[s.template].clone()
        };
        let meta = obj.get_mut("metadata")?.as_object_mut()?;
        meta.insert("name".into(), Value::String(s.name.clone()));
        meta.insert("namespace".into(), Value::String(s.namespace.clone()));
        meta.insert(
            "uid".into(),
            Value::String(format!("{:08x}-5ca1-4e00-8000-{:012x}", i, i * 7 + 1)),
        );
        meta.insert(
            "resourceVersion".into(),
            Value::String((1000 + i as u64).to_string()),
        );
        if t.kind == "Service" {
            let ip = format!("10.{}.{}.{}", 96 + (i >> 16) % 32, (i >> 8) % 256, i % 256);
            obj["spec"]["clusterIP"] = Value::String(ip.clone());
            obj["spec"]["clusterIPs"] = Value::Array(vec![Value::String(ip)]);
        }
        Some(obj)
    }

    /// Writes the desired manifests under `dir` (one file per object, a directory per
    /// namespace); returns the bytes written.
    pub fn write_desired(&self, dir: &Path) -> std::io::Result<u64> {
        let mut bytes = 0u64;
        for ns in 0..self.namespaces {
            std::fs::create_dir_all(dir.join(self.namespace_name(ns)))?;
        }
        for i in 0..self.objects {
            let s = self.slot(i);
            let text = self.desired_text(&s);
            let file = format!(
                "{}/{}-{}.yaml",
                s.namespace,
                TEMPLATES[s.template].kind.to_lowercase(),
                s.name
            );
            std::fs::write(dir.join(file), &text)?;
            bytes += text.len() as u64;
        }
        Ok(bytes)
    }

    /// Writes the live objects under `dir`: one `kubectl get ... -o json` List per namespace;
    /// returns the bytes written.
    pub fn write_live(&self, dir: &Path) -> std::io::Result<u64> {
        std::fs::create_dir_all(dir)?;
        let p = parsed();
        let mut per_ns: Vec<Vec<usize>> = vec![Vec::new(); self.namespaces];
        for i in 0..self.objects {
            let s = self.slot(i);
            let ns = (i / TEMPLATES.len() / 3) % self.namespaces;
            debug_assert_eq!(s.namespace, self.namespace_name(ns));
            per_ns[ns].push(i);
        }
        let mut bytes = 0u64;
        for (ns, indices) in per_ns.iter().enumerate() {
            let path = dir.join(format!("{}.json", self.namespace_name(ns)));
            let mut out = Counting {
                inner: BufWriter::new(File::create(&path)?),
                bytes: 0,
            };
            out.write_all(b"{\n    \"apiVersion\": \"v1\",\n    \"items\": [")?;
            let mut first = true;
            for &i in indices {
                let s = self.slot(i);
                let Some(obj) = self.live_object(&p, i, &s) else {
                    continue;
                };
                out.write_all(if first { b"\n" } else { b",\n" })?;
                first = false;
                write_indented(&mut out, &obj, 2)?;
            }
            out.write_all(
                b"\n    ],\n    \"kind\": \"List\",\n    \"metadata\": {\n        \"resourceVersion\": \"\"\n    }\n}\n",
            )?;
            out.flush()?;
            bytes += out.bytes;
        }
        Ok(bytes)
    }

    /// Calls `f` with every live object (what a cluster holds), one at a time.
    pub fn for_each_live(&self, mut f: impl FnMut(Value)) {
        let p = parsed();
        for i in 0..self.objects {
            let s = self.slot(i);
            if let Some(obj) = self.live_object(&p, i, &s) {
                f(obj);
            }
        }
    }

    /// Hand edits to make on the live cluster after a first sync (the `watch` measure): 1% of
    /// the Deployments scaled 2 → 3 (`kubectl scale`: safe under the default policies) and 1% of
    /// the ConfigMaps' `LOG_LEVEL` set to `debug` by `kubectl-edit` (risky), all of them objects
    /// that are not drifted yet, so each edit adds exactly one drift. At least one of each.
    pub fn live_edits(&self) -> Vec<LiveEdit> {
        let mut out = Vec::new();
        for i in 0..self.objects {
            let s = self.slot(i);
            let group = i / TEMPLATES.len();
            if s.drifted || s.annotated {
                continue;
            }
            // Group 73 of every hundred, or the first group when there are fewer than 74.
            let chosen = if self.objects / TEMPLATES.len() > 73 {
                group % 100 == 73
            } else {
                group == 0
            };
            if !chosen {
                continue;
            }
            let edit = match TEMPLATES[s.template].kind {
                "Deployment" => Edit::Scale(3),
                "ConfigMap" => {
                    Edit::MergePatch(serde_json::json!({"data": {"LOG_LEVEL": "debug"}}))
                }
                _ => continue,
            };
            let (api_version, class) = match edit {
                Edit::Scale(_) => ("apps/v1", "safe"),
                Edit::MergePatch(_) => ("v1", "risky"),
            };
            out.push(LiveEdit {
                api_version,
                kind: TEMPLATES[s.template].kind,
                namespace: s.namespace,
                name: s.name,
                edit,
                class,
            });
        }
        out
    }

    /// The namespaces the objects are in.
    pub fn namespace_names(&self) -> Vec<String> {
        (0..self.namespaces)
            .map(|ns| self.namespace_name(ns))
            .collect()
    }

    /// Checks a JSON report (`-o json`) against the planted drifts: every planted drift found,
    /// with exactly its changed paths and its class, and nothing else; every object checked.
    pub fn check_report(&self, report: &Value) -> Result<(), String> {
        let mut found = Vec::new();
        for d in report["drifts"]
            .as_array()
            .ok_or("the report has no drifts array")?
        {
            let r = &d["resource"];
            let mut paths: Vec<String> = d["changes"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| c["path"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            paths.sort();
            let drift = d["kind"].as_str().unwrap_or("").to_string();
            if drift == "Missing" {
                paths.clear();
            }
            found.push(PlantedDrift {
                kind: r["kind"].as_str().unwrap_or("").to_string(),
                namespace: r["namespace"].as_str().unwrap_or("").to_string(),
                name: r["name"].as_str().unwrap_or("").to_string(),
                drift,
                paths,
                class: d["verdict"]["class"].as_str().unwrap_or("").to_string(),
            });
        }
        found.sort();
        let planted = self.planted();
        if found != planted {
            let want: BTreeSet<&PlantedDrift> = planted.iter().collect();
            let got: BTreeSet<&PlantedDrift> = found.iter().collect();
            let missed: Vec<_> = want.difference(&got).take(5).collect();
            let extra: Vec<_> = got.difference(&want).take(5).collect();
            return Err(format!(
                "{} planted drifts, {} found; not found (first 5): {missed:?}; found but not planted or not as planted (first 5): {extra:?}",
                planted.len(),
                found.len()
            ));
        }
        let checked = report["summary"]["resources_checked"].as_u64();
        if checked != Some(self.objects as u64) {
            return Err(format!(
                "resources_checked is {checked:?}, {} objects were generated",
                self.objects
            ));
        }
        Ok(())
    }
}

/// `live` after `kubectl scale --replicas=N`: the count, the generation bumped, and the
/// Update entry the scale subresource records (manager `kubectl`, no `time`), as in
/// `fixtures/golden/live-drifted/deployment-storefront.json`.
fn scaled(live: &Value, replicas: i64) -> Option<Value> {
    let mut obj = live.clone();
    obj["spec"]["replicas"] = Value::from(replicas);
    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    obj["metadata"]["generation"] = Value::from(generation + 1);
    let api_version = obj["apiVersion"].clone();
    obj["metadata"]["managedFields"]
        .as_array_mut()?
        .push(serde_json::json!({
            "apiVersion": api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
            "manager": "kubectl",
            "operation": "Update",
            "subresource": "scale"
        }));
    Some(obj)
}

/// A writer that counts what passes through it.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `v` pretty-printed with kubectl's 4-space indent, its first line indented by `depth` levels
/// (a List item).
fn write_indented(out: &mut impl Write, v: &Value, depth: usize) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(v, &mut ser).map_err(std::io::Error::other)?;
    let pad = "    ".repeat(depth);
    for (n, line) in buf.split(|&b| b == b'\n').enumerate() {
        if n > 0 {
            out.write_all(b"\n")?;
        }
        out.write_all(pad.as_bytes())?;
        out.write_all(line)?;
    }
    Ok(())
}

/// The `driftwarden` binary to run: `DRIFTWARDEN_BIN` when set (a copy of one build, where
/// several checkouts share a target directory and overwrite each other's binary), else the one
/// cargo built with this test or benchmark.
pub fn binary() -> std::path::PathBuf {
    std::env::var_os("DRIFTWARDEN_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_driftwarden").into())
}

/// A child process's result, wall time and peak resident memory.
#[derive(Debug)]
pub struct Measured {
    pub status: ExitStatus,
    pub wall: Duration,
    /// The child's peak resident set size (`ru_maxrss` from `wait4`, taken by the launcher), in
    /// KiB.
    pub max_rss_kib: u64,
}

/// `struct rusage` of 64-bit Linux: two `timeval`s, then 14 `long`s, `ru_maxrss` first (KiB).
#[repr(C)]
#[derive(Default)]
struct RUsage {
    utime: [i64; 2],
    stime: [i64; 2],
    maxrss: i64,
    rest: [i64; 13],
}

// From the C library std already links; no binding crate needed for these calls.
unsafe extern "C" {
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut RUsage) -> i32;
    fn signal(sig: i32, handler: usize) -> usize;
    fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
}

const PR_SET_PDEATHSIG: i32 = 1;
const SIGINT: i32 = 2;

/// Set on a measuring launcher: the file it writes the child's `ru_maxrss` (KiB) to.
const LAUNCH: &str = "DRIFTWARDEN_MEASURE_LAUNCH";

/// A command measured through a small launcher process: `program` run by this executable in
/// launcher mode ([`launch_if_asked`]). Add arguments, environment and stdio to it as to
/// `Command::new(program)`, then run it with [`run_measured`] or [`Running::spawn`].
///
/// Why a launcher: on Linux a child's `ru_maxrss` starts from its parent's peak, because
/// `execve` records the high-water mark of the address space it replaces, which for a child
/// just spawned is its parent's (shared by `vfork`, copied by `fork`). A benchmark or test that
/// holds a test API server with 20,000 objects would add its own hundreds of MiB to every
/// child it measures. The launcher is this executable freshly started, a few MiB; it spawns the
/// program, reaps it with `wait4` and writes its `ru_maxrss`, which is then the program's own.
pub fn measured_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let report = std::env::temp_dir().join(format!(
        "driftwarden-measure-{}-{n}.rss",
        std::process::id()
    ));
    // This very executable, even when cargo has since replaced the file (a checkout sharing
    // the target directory rebuilt it): /proc/self/exe still opens the running one.
    let mut cmd = Command::new("/proc/self/exe");
    cmd.env(LAUNCH, report).arg(program);
    cmd
}

/// The program a measuring launcher runs (0 until it is started): signals are forwarded to it.
static LAUNCHED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward_signal(sig: i32) {
    let pid = LAUNCHED.load(std::sync::atomic::Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe; `pid` is the launcher's own child.
        unsafe {
            kill(pid, sig);
        }
    }
}

/// The launcher of [`measured_command`]: called first in the `main` of an executable that
/// measures children. When this process was started as a launcher, runs the program it names
/// (stdio, environment and directory inherited; SIGTERM and SIGINT forwarded), writes its
/// `ru_maxrss` to the file the launcher was given and exits as the program did. Otherwise
/// returns at once.
pub fn launch_if_asked() {
    use std::os::unix::process::ExitStatusExt;
    let Some(report) = std::env::var_os(LAUNCH) else {
        return;
    };
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("measuring launcher: no program to run");
        std::process::exit(120);
    };
    // SAFETY: installs a handler that only loads an atomic and calls kill(2).
    unsafe {
        signal(SIGTERM, forward_signal as *const () as usize);
        signal(SIGINT, forward_signal as *const () as usize);
    }
    let mut cmd = Command::new(&program);
    cmd.args(args).env_remove(LAUNCH);
    // SAFETY: prctl(2) between fork and exec, async-signal-safe: the program is killed if the
    // launcher dies (a caller that gives up kills the launcher).
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if prctl(PR_SET_PDEATHSIG, SIGKILL as u64, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("measuring launcher: cannot start {program:?}: {e}");
            std::process::exit(121);
        }
    };
    let Ok(pid) = i32::try_from(child.id()) else {
        std::process::exit(122);
    };
    LAUNCHED.store(pid, std::sync::atomic::Ordering::SeqCst);
    let mut status = 0i32;
    let mut usage = RUsage::default();
    loop {
        // SAFETY: valid pointers for the call; `pid` is our child, reaped only here.
        let r = unsafe { wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            eprintln!(
                "measuring launcher: wait4: {}",
                std::io::Error::last_os_error()
            );
            std::process::exit(123);
        }
    }
    if let Err(e) = std::fs::write(&report, usage.maxrss.to_string()) {
        eprintln!("measuring launcher: writing {report:?}: {e}");
        std::process::exit(124);
    }
    let status = ExitStatus::from_raw(status);
    if let Some(code) = status.code() {
        std::process::exit(code);
    }
    // Ended by a signal: end the same way, so the caller sees the same status.
    if let Some(sig) = status.signal() {
        // SAFETY: restores the default action, then signals this process.
        unsafe {
            signal(sig, 0);
            kill(std::process::id() as i32, sig);
        }
    }
    std::process::exit(125);
}

/// Runs `cmd` (made by [`measured_command`]) to its end and measures it: its exit status, wall
/// time and peak resident memory (the kernel's own account of the program, `wait4`'s
/// `ru_maxrss`).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub fn run_measured(cmd: &mut Command) -> std::io::Result<Measured> {
    let mut running = Running::spawn(cmd)?;
    running.wait(None)
}

/// A child started to be measured while the caller works with it (`driftwarden watch`, which
/// runs until a signal).
#[derive(Debug)]
pub struct Running {
    child: std::process::Child,
    pid: i32,
    /// Where the launcher writes the program's peak RSS.
    report: std::path::PathBuf,
    start: Instant,
    /// Reaped by `wait4`: nothing left to kill on drop.
    reaped: bool,
}

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;
const WNOHANG: i32 = 1;

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
impl Running {
    /// Starts `cmd`, which must come from [`measured_command`] (a child spawned directly would
    /// be measured with this process's memory in it).
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Running> {
        let report = cmd
            .get_envs()
            .find(|(k, _)| *k == LAUNCH)
            .and_then(|(_, v)| v)
            .map(std::path::PathBuf::from)
            .ok_or_else(|| {
                std::io::Error::other("not a measured command: build it with measured_command")
            })?;
        let _ = std::fs::remove_file(&report);
        let start = Instant::now();
        let child = cmd.spawn()?;
        let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
        Ok(Running {
            child,
            pid,
            report,
            start,
            reaped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Since the child was started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Whether the child has not ended yet (without reaping it).
    pub fn alive(&self) -> bool {
        // /proc/PID/stat's third field: `Z` once it has ended and waits to be reaped.
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(|f| f != "Z"))
            })
            .unwrap_or(false)
    }

    /// A field of the program's `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`), while it runs.
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        // The launcher's one child is the program.
        let program: i32 =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
        std::fs::read_to_string(format!("/proc/{program}/status"))
            .ok()?
            .lines()
            .find(|l| l.starts_with(field))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// Sends SIGTERM and measures the child once it has ended; one that has not ended within
    /// `limit` is killed and reported as an error.
    pub fn terminate(mut self, limit: Duration) -> std::io::Result<Measured> {
        // SAFETY: plain syscall on our own child's pid, not yet reaped (so not reused).
        if unsafe { kill(self.pid, SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.wait(Some(limit))
    }

    /// Waits for the child's end (at most `limit`, then it is killed and this is an error) and
    /// measures it.
    fn wait(&mut self, limit: Option<Duration>) -> std::io::Result<Measured> {
        use std::os::unix::process::ExitStatusExt;
        let waited = Instant::now();
        let mut status = 0i32;
        let mut usage = RUsage::default();
        loop {
            let options = if limit.is_some() { WNOHANG } else { 0 };
            // SAFETY: `status` and `usage` are valid for writes and outlive the call; `pid` is
            // our child, not yet reaped (std's `Child` only reaps in `wait`, which is never
            // called).
            let r = unsafe { wait4(self.pid, &mut status, options, &mut usage) };
            if r == self.pid {
                self.reaped = true;
                break;
            }
            if r == 0 {
                if let Some(limit) = limit
                    && waited.elapsed() > limit
                {
                    // SAFETY: as above; then reaped so the process is not left behind.
                    unsafe {
                        kill(self.pid, SIGKILL);
                        wait4(self.pid, &mut status, 0, &mut usage);
                    }
                    self.reaped = true;
                    return Err(std::io::Error::other(format!(
                        "pid {} still running {limit:?} after it was asked to stop: killed",
                        self.pid
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let wall = self.start.elapsed();
        Ok(Measured {
            status: ExitStatus::from_raw(status),
            wall,
            max_rss_kib: launched_rss(&self.report)?,
        })
    }
}

/// The program's peak RSS as its launcher wrote it.
fn launched_rss(report: &std::path::Path) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(report).map_err(|e| {
        std::io::Error::other(format!(
            "the measuring launcher wrote no peak RSS to {}: {e}",
            report.display()
        ))
    })?;
    let _ = std::fs::remove_file(report);
    text.trim().parse().map_err(std::io::Error::other)
}

/// A child the caller gave up on (a failed check) is killed, not left running.
impl Drop for Running {
    fn drop(&mut self) {
        if !self.reaped {
            let mut status = 0i32;
            let mut usage = RUsage::default();
            // SAFETY: our own child, not reaped yet; killed and reaped here.
            unsafe {
                kill(self.pid, SIGKILL);
                wait4(self.pid, &mut status, 0, &mut usage);
            }
        }
    }
}

/// The policy library the measures classify with.
pub fn policies() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// A cluster's live objects served by the test API server (tests/support/kube_server.rs, a
/// module of the crate that includes this one) on its own runtime, and a kubeconfig for it.
pub struct Served {
    pub runtime: tokio::runtime::Runtime,
    pub server: crate::kube_server::KubeServer,
    pub kubeconfig: std::path::PathBuf,
}

impl Cluster {
    /// Starts the test API server holding every live object; the kubeconfig goes into `dir`.
    pub fn serve(&self, dir: &std::path::Path) -> Served {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let server = runtime.block_on(crate::kube_server::KubeServer::start());
        self.for_each_live(|obj| server.seed(obj));
        let kubeconfig = server.write_kubeconfig(dir);
        Served {
            runtime,
            server,
            kubeconfig,
        }
    }
}

/// Writes `dir/NAME` with a config of one Kubernetes target `scale` over `desired`, LISTing in
/// pages of `page_size`; `extra` is appended (a `watch:` section, a target `mode`).
pub fn write_kube_config(
    dir: &std::path::Path,
    name: &str,
    desired: &std::path::Path,
    kubeconfig: &std::path::Path,
    page_size: usize,
    mode: Option<&str>,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.join(name);
    let mode = mode.map(|m| format!("    mode: {m}\n")).unwrap_or_default();
    let text = format!(
        "version: 1\npolicies:\n  dirs: [{policies}]\nstate_dir: {state}\ntargets:\n  - name: scale\n{mode}    cluster: scale\n    desired: {{dir: {desired}}}\n    live:\n      kubernetes: {{kubeconfig: {kc}, page_size: {page_size}}}\n{extra}",
        policies = policies().display(),
        state = dir.join("state").display(),
        desired = desired.display(),
        kc = kubeconfig.display(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}
