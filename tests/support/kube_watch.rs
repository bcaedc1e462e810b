//! WATCH streams of the Kubernetes test API server (a child module of kube_server.rs), as a real
//! kube-apiserver 1.32 sends them (fixtures/golden/protocol/watch-*.http, watchlist-*.http):
//!
//! - `200`, `Content-Type: application/json` (no `;stream=watch`), chunked, the headers flushed
//!   before any event; one compact `{"type","object"}` JSON line per event, one chunk each;
//! - a resume from `resourceVersion` replays the events after it from the server's event
//!   history (every write through every path is recorded: apply, patches, PUT, POST, DELETE and
//!   the in-process helpers); a resourceVersion older than the history window is a `200` with
//!   one `ERROR` event (Status 410 `Expired`, `too old resource version: X (Y)`), then the end;
//!   a future one stays silent (only events after it are sent);
//! - no `resourceVersion` (or `0`): synthetic `ADDED` events for the current objects first;
//!   `sendInitialEvents=true` needs `resourceVersionMatch=NotOlderThan` (422 otherwise) and ends
//!   the initial events with the `k8s.io/initial-events-end` BOOKMARK when bookmarks are allowed;
//! - `labelSelector` and `fieldSelector` (`metadata.name`, `metadata.namespace`): an object that
//!   stops matching is `DELETED` (its previous state, the new resourceVersion), one that starts
//!   matching `ADDED`, writes while it does not match are not sent;
//! - `allowWatchBookmarks=true`: a BOOKMARK (the kind with only `metadata.resourceVersion` and its
//!   zero-valued typed fields) every bookmark interval (60 s, settable for tests) and before
//!   `timeoutSeconds` ends the stream with the terminating chunk, each only once the watched
//!   resource's resourceVersion moved past the watch's start;
//! - test controls: cut every open stream (connection dropped mid-stream), end every open stream
//!   with an `ERROR` 410 (the history compacted, so a resume gets 410 too), count open streams.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::Frame;
use tokio::sync::mpsc;

use super::*;

/// How many events the history keeps by default (the real watch cache keeps at least 100 per
/// resource, more while its oldest is younger than 75 s).
pub(super) const DEFAULT_HISTORY: usize = 10_000;

/// The real server's bookmark period.
pub(super) const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

/// When a watch sets no `timeoutSeconds` (the real server picks 30 to 60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// The body of an answer: whole (with a `Content-Length`) or a watch stream (chunked).
pub enum KubeBody {
    Full(Full<Bytes>),
    Stream(mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>),
}

impl hyper::body::Body for KubeBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            KubeBody::Full(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            KubeBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            KubeBody::Full(full) => full.is_end_stream(),
            KubeBody::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            KubeBody::Full(full) => full.size_hint(),
            KubeBody::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// One write as the history keeps it: the object before and after (`None` before a create,
/// `None` after a delete; a delete's `old` is the last state stamped with the delete's
/// resourceVersion).
struct Change {
    rv: u64,
    group: String,
    plural: String,
    old: Option<Value>,
    new: Option<Value>,
}

/// A `fieldSelector` requirement (`metadata.name` and `metadata.namespace`, as every kind
/// supports).
struct FieldReq {
    field: String,
    value: String,
    equal: bool,
}

/// What one watch is sent.
struct Filter {
    group: String,
    plural: String,
    gv: String,
    kind: String,
    namespace: Option<String>,
    labels: Vec<Requirement>,
    fields: Vec<FieldReq>,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        if let Some(ns) = &self.namespace {
            if meta["namespace"].as_str() != Some(ns.as_str()) {
                return false;
            }
        }
        let labels = meta["labels"].as_object().cloned().unwrap_or_default();
        if !self.labels.iter().all(|r| r.matches(&labels)) {
            return false;
        }
        self.fields.iter().all(|f| {
            let got = match f.field.as_str() {
                "metadata.name" => meta["name"].as_str().unwrap_or(""),
                "metadata.namespace" => meta["namespace"].as_str().unwrap_or(""),
                _ => "",
            };
            (got == f.value) == f.equal
        })
    }

    /// The event a change is for this watch, if any.
    fn view(&self, c: &Change) -> Option<(&'static str, Value)> {
        if c.group != self.group || c.plural != self.plural {
            return None;
        }
        let old = c.old.as_ref().filter(|o| self.matches(o));
        let new = c.new.as_ref().filter(|n| self.matches(n));
        match (&c.old, &c.new, old, new) {
            // Deleted (a removal's `old` already carries the delete's resourceVersion).
            (_, None, Some(o), _) => Some(("DELETED", o.clone())),
            (None, Some(_), _, Some(n)) => Some(("ADDED", n.clone())),
            (Some(_), Some(_), Some(_), Some(n)) => Some(("MODIFIED", n.clone())),
            (Some(_), Some(_), None, Some(n)) => Some(("ADDED", n.clone())),
            // Left the selector: the previous object, at the new resourceVersion.
            (Some(_), Some(_), Some(o), None) => {
                let mut o = o.clone();
                o["metadata"]["resourceVersion"] = json!(c.rv.to_string());
                Some(("DELETED", o))
            }
            _ => None,
        }
    }

    fn line(&self, kind: &str, obj: Value) -> Bytes {
        let mut obj = obj;
        if let Some(m) = obj.as_object_mut() {
            m.insert("kind".into(), json!(self.kind));
            m.insert("apiVersion".into(), json!(self.gv));
        }
        event_line(kind, order_object(obj))
    }
}

fn event_line(kind: &str, obj: Value) -> Bytes {
    let mut text = json!({"type": kind, "object": obj}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// What the state hands a watch's stream task.
enum Msg {
    /// An event line at this resourceVersion (not sent when at or below the watch's start).
    Event(u64, Bytes),
    /// An initial event (the current state, or the end-of-initial-events bookmark).
    Initial(u64, Bytes),
    /// Cut the connection (no terminating chunk).
    Drop,
    /// Send this `ERROR` line, then end the stream.
    Expire(Bytes),
}

struct Watcher {
    id: u64,
    filter: Filter,
    /// The request's path and query, for [`KubeServer::open_watches_on`].
    target: String,
    tx: mpsc::UnboundedSender<Msg>,
}

/// The server's watch bookkeeping (in `State`).
pub(super) struct Hub {
    history: VecDeque<Change>,
    pub(super) limit: usize,
    /// The oldest resourceVersion a watch can resume from.
    pub(super) floor: u64,
    /// (group, plural) → the resourceVersion of its last write.
    type_rv: BTreeMap<(String, String), u64>,
    watchers: Vec<Watcher>,
    next_id: u64,
    pub(super) bookmark_interval: Duration,
    /// Signalled whenever a watch opens or closes.
    pub(super) changed: Arc<tokio::sync::Notify>,
    /// (group, plural) served without a watch cache.
    pub(super) uncached: BTreeSet<(String, String)>,
}

impl Hub {
    pub(super) fn new(floor: u64) -> Hub {
        Hub {
            history: VecDeque::new(),
            limit: DEFAULT_HISTORY,
            floor,
            type_rv: BTreeMap::new(),
            watchers: Vec::new(),
            next_id: 0,
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
            changed: Arc::new(tokio::sync::Notify::new()),
            uncached: BTreeSet::new(),
        }
    }

    /// Records a write and sends it to every watch it concerns.
    pub(super) fn record(
        &mut self,
        rt: &ResourceType,
        old: Option<Value>,
        new: Option<Value>,
        current_rv: u64,
    ) {
        let rv_of = |v: &Value| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
        };
        let rv = match (&new, &old) {
            (Some(n), _) => rv_of(n),
            (None, Some(o)) => rv_of(o),
            (None, None) => None,
        }
        .unwrap_or(current_rv);
        let change = Change {
            rv,
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            old,
            new,
        };
        let key = (rt.group.clone(), rt.plural.clone());
        let latest = self.type_rv.entry(key).or_insert(0);
        *latest = (*latest).max(rv);
        let before = self.watchers.len();
        self.watchers.retain(|w| match w.filter.view(&change) {
            Some((kind, obj)) => w.tx.send(Msg::Event(rv, w.filter.line(kind, obj))).is_ok(),
            None => !w.tx.is_closed(),
        });
        if self.watchers.len() != before {
            self.changed.notify_waiters();
        }
        self.history.push_back(change);
        self.trim();
    }

    pub(super) fn trim(&mut self) {
        while self.history.len() > self.limit {
            if let Some(c) = self.history.pop_front() {
                self.floor = self.floor.max(c.rv);
            }
        }
    }

    /// The resourceVersion counter was set back to `rv`: writes recorded above it are
    /// forgotten, and a watch can resume from `rv`.
    pub(super) fn rewind(&mut self, rv: u64) {
        self.history.retain(|c| c.rv <= rv);
        self.floor = self.floor.min(rv);
        for latest in self.type_rv.values_mut() {
            *latest = (*latest).min(rv);
        }
    }

    /// Forgets the history up to `rv`: a watch from an older resourceVersion gets 410.
    pub(super) fn compact(&mut self, rv: u64) {
        self.history.retain(|c| c.rv > rv);
        self.floor = self.floor.max(rv);
    }

    /// The resourceVersion a bookmark of this resource carries (its last write, or the oldest
    /// resumable one when it has none).
    fn bookmark_rv(&self, group: &str, plural: &str) -> u64 {
        self.type_rv
            .get(&(group.to_string(), plural.to_string()))
            .copied()
            .unwrap_or(self.floor)
    }

    pub(super) fn open_count(&self, prefix: &str) -> usize {
        self.watchers
            .iter()
            .filter(|w| !w.tx.is_closed() && w.target.starts_with(prefix))
            .count()
    }

    /// Cuts every open watch connection.
    pub(super) fn drop_all(&mut self) {
        for w in self.watchers.drain(..) {
            let _ = w.tx.send(Msg::Drop);
        }
        self.changed.notify_waiters();
    }

    /// Ends every open watch with an `ERROR` 410 event.
    pub(super) fn expire_all(&mut self, current_rv: u64) {
        let floor = self.floor;
        for w in self.watchers.drain(..) {
            let key = (w.filter.group.clone(), w.filter.plural.clone());
            let cached = !self.uncached.contains(&key);
            let line = event_line("ERROR", expired_status(current_rv, floor, cached));
            let _ = w.tx.send(Msg::Expire(line));
        }
        self.changed.notify_waiters();
    }

    fn remove(&mut self, id: u64) {
        self.watchers.retain(|w| w.id != id);
        self.changed.notify_waiters();
    }
}

/// The Status of an `ERROR` event for a resourceVersion older than the history: from the watch
/// cache `too old resource version: 1 (246)` (watch-expired-rv1-200), from etcd without one
/// (watch-expired-compacted-200) the compaction's message.
fn expired_status(rv: u64, floor: u64, cached: bool) -> Value {
    let message = if cached {
        format!("too old resource version: {rv} ({floor})")
    } else {
        "The resourceVersion for the provided watch is too old.".to_string()
    };
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Expired", "code": 410})
}

/// A BOOKMARK's object: the kind with only `metadata.resourceVersion` set and the zero values of
/// the Go type's fields that are not `omitempty` (watch-bookmark-200 for Deployments). Custom
/// resources (unstructured on the server) carry nothing else.
fn bookmark_object(
    gv: &str,
    kind: &str,
    builtin: bool,
    rv: u64,
    annotations: Option<Value>,
) -> Value {
    let mut meta = Map::new();
    meta.insert("resourceVersion".into(), json!(rv.to_string()));
    if builtin {
        meta.insert("creationTimestamp".into(), Value::Null);
    }
    if let Some(a) = annotations {
        meta.insert("annotations".into(), a);
    }
    let pod_template =
        json!({"metadata": {"creationTimestamp": null}, "spec": {"containers": null}});
    let mut obj = Map::new();
    obj.insert("kind".into(), json!(kind));
    obj.insert("apiVersion".into(), json!(gv));
    obj.insert("metadata".into(), Value::Object(meta));
    let rest = match (gv, kind) {
        ("apps/v1", "Deployment") => json!({
            "spec": {"replicas": 0, "selector": null, "template": pod_template, "strategy": {}},
            "status": {}}),
        ("apps/v1", "ReplicaSet") => json!({
            "spec": {"selector": null, "template": pod_template},
            "status": {"replicas": 0}}),
        ("apps/v1", "StatefulSet") => json!({
            "spec": {"selector": null, "template": pod_template, "serviceName": "", "updateStrategy": {}},
            "status": {"replicas": 0, "availableReplicas": 0}}),
        ("apps/v1", "DaemonSet") => json!({
            "spec": {"selector": null, "template": pod_template, "updateStrategy": {}},
            "status": {"currentNumberScheduled": 0, "numberMisscheduled": 0,
                "desiredNumberScheduled": 0, "numberReady": 0}}),
        ("v1", "Pod") => json!({"spec": {"containers": null}, "status": {}}),
        ("v1", "Service") => json!({"spec": {}, "status": {"loadBalancer": {}}}),
        ("v1", "Namespace") => json!({"spec": {}, "status": {}}),
        ("coordination.k8s.io/v1", "Lease") => json!({"spec": {}}),
        ("batch/v1", "Job") => json!({"spec": {"template": pod_template}, "status": {}}),
        ("batch/v1", "CronJob") => json!({
            "spec": {"schedule": "", "jobTemplate": {"metadata": {"creationTimestamp": null},
                "spec": {"template": pod_template}}},
            "status": {}}),
        _ => json!({}),
    };
    if let Value::Object(m) = rest {
        obj.extend(m);
    }
    Value::Object(obj)
}

/// The base64 `kubernetes.io/initial-events-list-blueprint` annotation: the empty list of the
/// kind as JSON, with the encoder's newline (watchlist-initial-events-200).
fn list_blueprint(gv: &str, kind: &str) -> String {
    let text = format!(
        "{{\"kind\":\"{kind}List\",\"apiVersion\":\"{gv}\",\"metadata\":{{}},\"items\":null}}\n"
    );
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A watch request, once accepted: what its stream task needs.
pub(super) struct Opened {
    id: u64,
    rx: mpsc::UnboundedReceiver<Msg>,
    group: String,
    plural: String,
    gv: String,
    kind: String,
    builtin: bool,
    bookmarks: bool,
    timeout: Duration,
    /// Events at or below it are not sent (a future resourceVersion), and bookmarks come only
    /// once the resource moved past it.
    start_rv: u64,
    interval: Duration,
}

/// The answer to a watch request that is not a stream: a Status, or a `200` whose stream is
/// one `ERROR` event.
pub(super) enum Refused {
    Status(StatusCode, Value),
    Expired(Bytes),
}

/// `?watch=true|1`.
pub(super) fn is_watch(q: &[(String, String)]) -> bool {
    q.iter()
        .any(|(k, v)| k == "watch" && matches!(v.as_str(), "true" | "1"))
}

/// A legacy `/api/v1/watch/...` or `/apis/<group>/<version>/watch/...` path without its
/// `watch` segment.
pub(super) fn strip_legacy_watch(path: &str) -> Option<String> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let at = match segs.first() {
        Some(&"api") => 2,
        Some(&"apis") => 3,
        _ => return None,
    };
    if segs.get(at) != Some(&"watch") || segs.len() <= at + 1 {
        return None;
    }
    let mut rest = segs.clone();
    rest.remove(at);
    Some(format!("/{}", rest.join("/")))
}

fn parse_field_selector(s: &str) -> Result<Vec<FieldReq>, String> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = part.split_once("==") {
            (f, v, true)
        } else if let Some((f, v)) = part.split_once('=') {
            (f, v, true)
        } else {
            return Err(format!(
                "invalid selector: '{part}'; can't understand '{part}'"
            ));
        };
        let field = field.trim().to_string();
        if !matches!(field.as_str(), "metadata.name" | "metadata.namespace") {
            return Err(format!("field label not supported: {field}"));
        }
        out.push(FieldReq {
            field,
            value: value.trim().to_string(),
            equal,
        });
    }
    Ok(out)
}

impl State {
    /// Accepts a watch request (under the state's lock, so no write falls between the replayed
    /// or initial events and the live ones) or says how it is refused.
    pub(super) fn open_watch(
        &mut self,
        rt: &ResourceType,
        gv: &str,
        ns: Option<&str>,
        name: Option<&str>,
        q: &[(String, String)],
        target: &str,
    ) -> Result<Opened, Refused> {
        let param = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let initial = param("sendInitialEvents").as_deref() == Some("true");
        let not_older = param("resourceVersionMatch").as_deref() == Some("NotOlderThan");
        if initial && !not_older {
            // watchlist-without-resourceversionmatch-422.
            let detail = "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan";
            let (code, body) = status_body(
                422,
                "Invalid",
                &format!("ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: {detail}"),
                Some(json!({"group": "meta.k8s.io", "kind": "ListOptions",
                    "causes": [{"reason": "FieldValueForbidden", "message": detail,
                        "field": "resourceVersionMatch"}]})),
            );
            return Err(Refused::Status(code, body));
        }
        let labels = match param("labelSelector").filter(|s| !s.is_empty()) {
            Some(s) => parse_selector(&s).map_err(|msg| {
                let (code, body) = status_body(
                    400,
                    "BadRequest",
                    &format!("unable to parse requirement: {msg}"),
                    None,
                );
                Refused::Status(code, body)
            })?,
            None => Vec::new(),
        };
        let mut fields = match param("fieldSelector").filter(|s| !s.is_empty()) {
            Some(s) => parse_field_selector(&s).map_err(|msg| {
                let (code, body) = status_body(400, "BadRequest", &msg, None);
                Refused::Status(code, body)
            })?,
            None => Vec::new(),
        };
        if let Some(name) = name {
            fields.push(FieldReq {
                field: "metadata.name".into(),
                value: name.to_string(),
                equal: true,
            });
        }
        let filter = Filter {
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            gv: gv.to_string(),
            kind: rt.kind.clone(),
            namespace: ns.map(str::to_string),
            labels,
            fields,
        };
        let requested = param("resourceVersion").filter(|s| !s.is_empty() && s != "0");
        let from = match &requested {
            Some(s) => match s.parse::<u64>() {
                Ok(n) => Some(n),
                Err(e) => {
                    let (code, body) = status_body(
                        400,
                        "BadRequest",
                        &format!("invalid resource version: {s}: {e}"),
                        None,
                    );
                    return Err(Refused::Status(code, body));
                }
            },
            None => None,
        };
        let bookmarks = param("allowWatchBookmarks").as_deref() == Some("true");
        let (tx, rx) = mpsc::unbounded_channel();
        let start_rv = match from {
            Some(n) if !initial => {
                if n < self.watch.floor {
                    let cached = !self
                        .watch
                        .uncached
                        .contains(&(rt.group.clone(), rt.plural.clone()));
                    let line = event_line("ERROR", expired_status(n, self.watch.floor, cached));
                    return Err(Refused::Expired(line));
                }
                for c in self.watch.history.iter().filter(|c| c.rv > n) {
                    if let Some((kind, obj)) = filter.view(c) {
                        let _ = tx.send(Msg::Event(c.rv, filter.line(kind, obj)));
                    }
                }
                n
            }
            _ => {
                // The current state first: every matching object, in key order.
                let mut current: Vec<(String, Value)> = self
                    .objects
                    .get(&(rt.group.clone(), rt.plural.clone()))
                    .map(|m| {
                        m.iter()
                            .filter(|(_, v)| filter.matches(v))
                            .map(|((ons, n), v)| (format!("{ons}/{n}"), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                current.sort_by(|a, b| a.0.cmp(&b.0));
                for (_, obj) in current {
                    let rv = obj["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let _ = tx.send(Msg::Initial(rv, filter.line("ADDED", obj)));
                }
                let now_rv = self.watch.bookmark_rv(&rt.group, &rt.plural);
                if initial && bookmarks {
                    let annotations = json!({"k8s.io/initial-events-end": "true",
                        "kubernetes.io/initial-events-list-blueprint": list_blueprint(gv, &rt.kind)});
                    let obj = bookmark_object(
                        gv,
                        &rt.kind,
                        is_builtin_group(&rt.group),
                        now_rv,
                        Some(annotations),
                    );
                    let _ = tx.send(Msg::Initial(now_rv, event_line("BOOKMARK", obj)));
                }
                now_rv
            }
        };
        let timeout = param("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|t| *t > 0)
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT);
        self.watch.next_id += 1;
        let id = self.watch.next_id;
        self.watch.watchers.push(Watcher {
            id,
            filter,
            target: target.to_string(),
            tx,
        });
        self.watch.changed.notify_waiters();
        Ok(Opened {
            id,
            rx,
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            gv: gv.to_string(),
            kind: rt.kind.clone(),
            builtin: is_builtin_group(&rt.group),
            bookmarks,
            timeout,
            start_rv,
            interval: self.watch.bookmark_interval,
        })
    }
}

/// The headers of a watch answer (watch-deployments-200).
fn stream_head(code: StatusCode) -> hyper::http::response::Builder {
    Response::builder()
        .status(code)
        .header("Cache-Control", "no-cache, private")
        .header("Content-Type", "application/json")
        .header("X-Kubernetes-Pf-Flowschema-Uid", PF_FLOWSCHEMA)
        .header("X-Kubernetes-Pf-Prioritylevel-Uid", PF_PRIORITY)
}

/// A `200` whose stream is one `ERROR` event, then the end (watch-expired-rv1-200).
pub(super) fn expired_response(line: Bytes) -> Response<KubeBody> {
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(Ok(line));
    drop(tx);
    stream_head(StatusCode::OK)
        .body(KubeBody::Stream(rx))
        .unwrap()
}

/// Starts the stream of an accepted watch: events as they come, bookmarks, the end at
/// `timeoutSeconds`.
pub(super) fn stream(shared: Arc<Mutex<State>>, opened: Opened) -> Response<KubeBody> {
    let (body_tx, body_rx) = mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let Opened {
        id,
        mut rx,
        group,
        plural,
        gv,
        kind,
        builtin,
        bookmarks,
        timeout,
        start_rv,
        interval,
    } = opened;
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next_bookmark = tokio::time::Instant::now() + interval;
        let mut sent_rv = start_rv;
        let bookmark = |sent_rv: u64| -> Option<Bytes> {
            let st = shared.lock().unwrap_or_else(|e| e.into_inner());
            let rv = st.watch.bookmark_rv(&group, &plural).max(sent_rv);
            (rv > start_rv)
                .then(|| event_line("BOOKMARK", bookmark_object(&gv, &kind, builtin, rv, None)))
        };
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Event(rv, _)) if rv <= start_rv => {}
                    Some(Msg::Event(rv, line) | Msg::Initial(rv, line)) => {
                        sent_rv = sent_rv.max(rv);
                        if body_tx.send(Ok(line)).is_err() {
                            break;
                        }
                    }
                    Some(Msg::Drop) => {
                        let _ = body_tx.send(Err(std::io::Error::other("watch dropped by the test")));
                        break;
                    }
                    Some(Msg::Expire(line)) => {
                        let _ = body_tx.send(Ok(line));
                        break;
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(next_bookmark), if bookmarks => {
                    next_bookmark += interval;
                    if let Some(line) = bookmark(sent_rv) {
                        if body_tx.send(Ok(line)).is_err() {
                            break;
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if bookmarks {
                        if let Some(line) = bookmark(sent_rv) {
                            let _ = body_tx.send(Ok(line));
                        }
                    }
                    break;
                }
                _ = body_tx.closed() => break,
            }
        }
        shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .watch
            .remove(id);
    });
    stream_head(StatusCode::OK)
        .body(KubeBody::Stream(body_rx))
        .unwrap()
}
