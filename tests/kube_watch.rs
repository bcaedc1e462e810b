//! WATCH streams and Leases of the Kubernetes test API server (tests/support/kube_server.rs)
//! against the real kube-apiserver 1.32's captured exchanges (fixtures/golden/protocol/watch-*,
//! watchlist-*, lease-*), replayed over raw HTTP/1.1 and compared event by event; then kube's own
//! client against it over real sockets: `kube::runtime::watcher` through an expired history
//! (410) and a dropped connection, and `Api<Lease>`.

#[path = "support/golden.rs"]
mod golden;
#[path = "support/kube_server.rs"]
mod kube_server;

use std::time::Duration;

use golden::{Chunk, RawStream, exchange, normalize, raw_exchange};
use kube_server::{Fault, FaultKind, KubeServer, TOKEN};
use serde_json::{Value, json};

/// How long a test waits for something that must happen (a watch to open); never reached when
/// the server works.
const PATIENCE: Duration = Duration::from_secs(20);

fn addr(server: &KubeServer) -> String {
    server.url().trim_start_matches("http://").to_string()
}

async fn open(server: &KubeServer, target: &str) -> RawStream {
    RawStream::open(&addr(server), Some(TOKEN), target).await
}

/// The golden target with a shorter `timeoutSeconds` (the captures ran for up to 90 s).
fn shortened(target: &str, seconds: u64) -> String {
    let mut out: Vec<String> = Vec::new();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    for pair in query.split('&') {
        if pair.starts_with("timeoutSeconds=") {
            out.push(format!("timeoutSeconds={seconds}"));
        } else {
            out.push(pair.to_string());
        }
    }
    format!("{path}?{}", out.join("&"))
}

/// A namespace as the real server stores it.
fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
}

/// The Deployment the watch captures applied (as `driftwarden`, server-side).
fn ticker(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": "driftwarden", "app.kubernetes.io/name": name}},
        "spec": {"replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": name}},
                "spec": {"containers": [{"name": name,
                    "image": format!("registry.example.test/{name}:1.4.2")}]}}}})
}

/// The headers every watch answer carries, as the capture shows them: 200, JSON (no
/// `;stream=watch`), chunked, no `Content-Length`.
fn assert_stream_head(stream: &RawStream, name: &str) {
    let want = exchange(name);
    assert_eq!(stream.status, want.status, "{name}");
    for h in ["content-type", "cache-control", "transfer-encoding"] {
        assert_eq!(stream.header(h), want.header(h), "{name}: {h}");
    }
    assert!(stream.header("content-length").is_empty(), "{name}");
    assert_eq!(
        stream.header("x-kubernetes-pf-flowschema-uid").len(),
        1,
        "{name}"
    );
}

/// Events with what differs between two servers replaced (uids, timestamps).
fn normalized(mut events: Vec<Value>) -> Vec<Value> {
    events.iter_mut().for_each(normalize);
    events
}

// ------------------------------------------------------------------------------------------
// Watch streams against the captures
// ------------------------------------------------------------------------------------------

/// watch-deployments-list-200 → watch-deployments-200: an empty LIST's resourceVersion, a
/// watch from it, then a Deployment applied, scaled, labelled and deleted: ADDED, MODIFIED,
/// MODIFIED, DELETED (the last state, the delete's resourceVersion), then a BOOKMARK before the
/// timeout ends the stream with the terminating chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_watch_sees_every_write_like_the_real_server() {
    let server = KubeServer::start().await;
    let ns = "golden-watch-113029";
    server.seed(namespace(ns));
    server.set_resource_version(466);
    let list = exchange("watch-deployments-list-200");
    let answer = raw_exchange(&addr(&server), Some(TOKEN), "GET", &list.target, None, "").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), list.body);

    let want = exchange("watch-deployments-200");
    let mut stream = open(&server, &shortened(&want.target, 2)).await;
    assert_stream_head(&stream, "watch-deployments-200");
    server.apply_as("driftwarden", ticker(ns, "ticker"));
    server.scale_as("kubectl", "apps/v1", "Deployment", Some(ns), "ticker", 3);
    server.merge_patch_as(
        "kubectl-label",
        "apps/v1",
        "Deployment",
        Some(ns),
        "ticker",
        json!({"metadata": {"labels": {"tier": "backend"}}}),
    );
    server.delete_object("apps/v1", "Deployment", Some(ns), "ticker");
    let (events, end) = stream.rest().await;
    assert_eq!(end, Chunk::End, "a clean end at timeoutSeconds");
    assert_eq!(normalized(events), normalized(want.events()));
}

/// watch-label-selector-200: across all namespaces, by label. Removing the label is DELETED
/// (the previous object, the new resourceVersion), a write while unlabelled is not sent,
/// labelling again is ADDED with the current state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_label_selector_watch_reports_objects_leaving_and_joining() {
    let server = KubeServer::start().await;
    let ns = "golden-selector-113314";
    server.seed(namespace(ns));
    server.set_resource_version(500);
    let want = exchange("watch-label-selector-200");
    let mut stream = open(&server, &shortened(&want.target, 2)).await;
    assert_stream_head(&stream, "watch-label-selector-200");
    let label = |v: Value| json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": v}}});
    server.apply_as("driftwarden", ticker(ns, "ticker"));
    let patch = |manager: &str, p: Value| {
        server.merge_patch_as(manager, "apps/v1", "Deployment", Some(ns), "ticker", p)
    };
    patch("kubectl-label", label(Value::Null));
    server.scale_as("kubectl", "apps/v1", "Deployment", Some(ns), "ticker", 2);
    // The capture's server wrote something else at 504.
    server.set_resource_version(504);
    patch("kubectl-label", label(json!("driftwarden")));
    server.delete_object("apps/v1", "Deployment", Some(ns), "ticker");
    let (events, end) = stream.rest().await;
    assert_eq!(end, Chunk::End);
    assert_eq!(normalized(events), normalized(want.events()));
}

/// Two Deployments for the WatchList captures (`alpha` 653, `beta` 654).
fn seed_watchlist(server: &KubeServer) -> &'static str {
    let ns = "golden-watchlist-113812";
    server.seed(namespace(ns));
    server.set_resource_version(652);
    server.apply_as("driftwarden", ticker(ns, "alpha"));
    server.apply_as("driftwarden", ticker(ns, "beta"));
    ns
}

/// watchlist-initial-events-200: `sendInitialEvents=true` with `NotOlderThan` and bookmarks:
/// the current objects in name order, the `initial-events-end` BOOKMARK, then live events and a
/// plain BOOKMARK before the end. watchlist-without-bookmarks-200: no end marker.
/// watchlist-without-resourceversionmatch-422: refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_watchlist_sends_the_initial_state_like_the_real_server() {
    let server = KubeServer::start().await;
    let ns = seed_watchlist(&server);
    let want = exchange("watchlist-initial-events-200");
    let mut stream = open(&server, &shortened(&want.target, 2)).await;
    assert_stream_head(&stream, "watchlist-initial-events-200");
    let expected = want.events();
    // The initial events come before any write.
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(stream.event().await);
    }
    assert_eq!(normalized(got), normalized(expected[..3].to_vec()));
    server.set_resource_version(655);
    server.scale_as("kubectl", "apps/v1", "Deployment", Some(ns), "alpha", 2);
    let (rest, end) = stream.rest().await;
    assert_eq!(end, Chunk::End);
    assert_eq!(normalized(rest), normalized(expected[3..].to_vec()));

    let want = exchange("watchlist-without-bookmarks-200");
    let mut stream = open(&server, &shortened(&want.target, 1)).await;
    assert_stream_head(&stream, "watchlist-without-bookmarks-200");
    let (events, end) = stream.rest().await;
    assert_eq!(end, Chunk::End);
    assert_eq!(normalized(events), normalized(want.events()));

    let want = exchange("watchlist-without-resourceversionmatch-422");
    let answer = raw_exchange(&addr(&server), Some(TOKEN), "GET", &want.target, None, "").await;
    assert_eq!(answer.status, 422);
    assert_eq!(answer.json(), want.body);
    assert_eq!(answer.header("content-type"), want.header("content-type"));
}

/// watch-expired-rv1-200: a resourceVersion older than the history is a 200 whose stream is one
/// ERROR event (410 `Expired`, the oldest resumable resourceVersion in brackets), then the end.
/// watch-expired-cache-window-200: the history keeps a window of events; a watch from before it
/// is refused the same way, one from inside it replays what followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_expired_resource_versions_are_an_error_event_like_the_real_server() {
    let server = KubeServer::start().await;
    server.seed(namespace("golden-expired-113827"));
    server.set_resource_version(246);
    server.compact_history();
    let want = exchange("watch-expired-rv1-200");
    let mut stream = open(&server, &want.target).await;
    assert_stream_head(&stream, "watch-expired-rv1-200");
    let (events, end) = stream.rest().await;
    assert_eq!(
        end,
        Chunk::End,
        "closed at once, whatever timeoutSeconds says"
    );
    assert_eq!(events, want.events());

    // 110 writes (205–314) with a window of 100 events: 205–214 are gone.
    let server = KubeServer::start().await;
    let ns = "golden-window-113733";
    server.seed(namespace(ns));
    server.set_resource_version(204);
    server.set_watch_history(100);
    for i in 0..110 {
        server.seed(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i:03}"), "namespace": ns}}));
    }
    let want = exchange("watch-expired-cache-window-200");
    let mut stream = open(&server, &want.target).await;
    assert_stream_head(&stream, "watch-expired-cache-window-200");
    let (events, end) = stream.rest().await;
    assert_eq!(end, Chunk::End);
    assert_eq!(events, want.events());
    let mut inside = open(
        &server,
        &format!("/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion=214&timeoutSeconds=1"),
    )
    .await;
    let (events, end) = inside.rest().await;
    assert_eq!(end, Chunk::End);
    let rvs: Vec<&str> = events
        .iter()
        .map(|e| e["object"]["metadata"]["resourceVersion"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (215..=314).map(|rv| rv.to_string()).collect();
    assert_eq!(rvs, expected);
    assert!(events.iter().all(|e| e["type"] == "ADDED"));
}

/// watch-future-resourceversion-200: a resourceVersion the server has not reached is accepted
/// and stays silent (no error, no bookmark) until the timeout ends it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_a_future_resource_version_stays_silent() {
    let server = KubeServer::start().await;
    server.seed(namespace("golden-expired-113827"));
    let want = exchange("watch-future-resourceversion-200");
    assert!(want.events().is_empty());
    let mut stream = open(&server, &shortened(&want.target, 1)).await;
    assert_stream_head(&stream, "watch-future-resourceversion-200");
    server.apply_as("driftwarden", ticker("golden-expired-113827", "ticker"));
    let (events, end) = stream.rest().await;
    assert_eq!((events, end), (Vec::new(), Chunk::End));
}

/// watch-forbidden-403: a watch the caller may not make is an ordinary 403 Status (not a
/// stream), verb `watch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_a_forbidden_watch_is_a_plain_status() {
    let server = KubeServer::start().await;
    let want = exchange("watch-forbidden-403");
    server.inject(Fault::new(
        "GET",
        "/apis/apps/v1/namespaces/golden-rbac-113832/deployments",
        FaultKind::Forbidden {
            user: "system:serviceaccount:golden-rbac-113832:reader".into(),
        },
        1,
    ));
    let answer = raw_exchange(&addr(&server), Some(TOKEN), "GET", &want.target, None, "").await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json(), want.body);
    for h in ["content-type", "x-content-type-options", "cache-control"] {
        assert_eq!(answer.header(h), want.header(h), "{h}");
    }
}

/// watch-bookmark-200: with `allowWatchBookmarks=true`, BOOKMARKs (the kind with only the
/// resourceVersion and zero-valued typed fields) come periodically and before the timeout,
/// repeating the resourceVersion; the capture's 60 s period is shortened here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_bookmarks_come_periodically_and_before_the_timeout() {
    let server = KubeServer::start().await;
    let ns = "golden-bookmark-113108";
    server.seed(namespace(ns));
    server.set_resource_version(475);
    server.set_bookmark_interval(Duration::from_millis(300));
    let want = exchange("watch-bookmark-200");
    let expected = normalized(want.events());
    let mut stream = open(&server, &shortened(&want.target, 2)).await;
    assert_stream_head(&stream, "watch-bookmark-200");
    server.apply_as("driftwarden", ticker(ns, "ticker"));
    let (events, end) = stream.rest().await;
    assert_eq!(end, Chunk::End);
    let events = normalized(events);
    assert_eq!(events[0], expected[0]);
    assert!(
        events.len() >= 3,
        "periodic bookmarks and the last one: {events:#?}"
    );
    for e in &events[1..] {
        assert_eq!(e, &expected[1], "every bookmark as the real one");
    }

    // No bookmark while the resource has not moved past the watch's start.
    let mut idle = open(
        &server,
        &format!("/apis/apps/v1/namespaces/{ns}/deployments?watch=1&resourceVersion=476&allowWatchBookmarks=true&timeoutSeconds=1"),
    )
    .await;
    assert_eq!(idle.rest().await, (Vec::new(), Chunk::End));
}

// ------------------------------------------------------------------------------------------
// Test controls: cut streams, expire them, count them
// ------------------------------------------------------------------------------------------

/// `drop_watches` cuts a stream without the terminating chunk; a resume from the last
/// resourceVersion replays what was written meanwhile, deletions included. `expire_watches`
/// ends a stream with an ERROR 410 and a resume from before it is refused the same way. The
/// number of open watches is observable; a legacy `/watch/` path and a field selector work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_can_be_cut_expired_and_counted() {
    let server = KubeServer::start().await;
    let ns = "shop";
    server.seed(namespace(ns));
    server.apply_as("driftwarden", ticker(ns, "a"));
    let target = |rv: &str| {
        format!(
            "/apis/apps/v1/namespaces/{ns}/deployments?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"
        )
    };
    let start = server
        .object("apps/v1", "Deployment", Some(ns), "a")
        .unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut stream = open(&server, &target(&start)).await;
    assert_eq!(server.open_watches(), 1);
    server
        .wait_for_watches("/apis/apps/v1/namespaces/shop/deployments", 1, PATIENCE)
        .await;
    server.apply_as("driftwarden", ticker(ns, "b"));
    let added = stream.event().await;
    assert_eq!(added["type"], "ADDED");
    let last = added["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    server.drop_watches();
    assert_eq!(stream.next().await, Chunk::Cut);
    // Written while nobody watched.
    server.scale_as("kubectl", "apps/v1", "Deployment", Some(ns), "a", 4);
    server.delete_object("apps/v1", "Deployment", Some(ns), "b");
    let mut resumed = open(&server, &target(&last)).await;
    let modified = resumed.event().await;
    assert_eq!(
        (&modified["type"], &modified["object"]["spec"]["replicas"]),
        (&json!("MODIFIED"), &json!(4))
    );
    let deleted = resumed.event().await;
    assert_eq!(
        (&deleted["type"], &deleted["object"]["metadata"]["name"]),
        (&json!("DELETED"), &json!("b"))
    );

    server.expire_watches();
    let error = resumed.event().await;
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    assert_eq!(resumed.next().await, Chunk::End);
    let mut again = open(&server, &target(&last)).await;
    let (events, end) = again.rest().await;
    assert_eq!(end, Chunk::End);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["object"]["code"], 410);

    // A legacy path with a field selector: the current object first (no resourceVersion).
    let mut legacy = open(
        &server,
        &format!("/apis/apps/v1/watch/namespaces/{ns}/deployments?fieldSelector=metadata.name%3Da&timeoutSeconds=1"),
    )
    .await;
    assert_eq!(legacy.status, 200);
    server.apply_as("driftwarden", ticker(ns, "c"));
    let (events, end) = legacy.rest().await;
    assert_eq!(end, Chunk::End);
    let names: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("ADDED", "a")]);
    server.wait_for_watches("", 0, PATIENCE).await;
    drop(stream);
}

// ------------------------------------------------------------------------------------------
// kube's own client
// ------------------------------------------------------------------------------------------

fn client(server: &KubeServer) -> kube::Client {
    let mut config = kube::Config::new(server.url().parse().unwrap());
    config.auth_info.token = Some(TOKEN.to_string().into());
    kube::Client::try_from(config).unwrap()
}

fn config_map(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "shop"}, "data": {"value": value}})
}

/// kube's runtime watcher on DynamicObject over real sockets: the initial LIST, live events, an
/// ERROR 410 mid-stream (it LISTs again) and a dropped connection (it resumes from its last
/// resourceVersion, replaying what was written meanwhile); at every step its view is exactly
/// the server's objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_watcher_sees_every_object_through_expiry_and_drops() {
    use futures::StreamExt;
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
    use kube::runtime::{WatchStreamExt, watcher};
    use std::collections::BTreeMap;

    let server = KubeServer::start().await;
    server.seed(namespace("shop"));
    for i in 0..3 {
        server.apply_as("driftwarden", config_map(&format!("cm-{i}"), "0"));
    }
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap"));
    let api: Api<DynamicObject> = Api::namespaced_with(client(&server), "shop", &ar);
    // The watcher runs on its own task (it opens its watch only while polled).
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let task = tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    let mut view: BTreeMap<String, String> = BTreeMap::new();
    let mut staged: BTreeMap<String, String> = BTreeMap::new();
    // Applies events until the view is `want`.
    let mut follow = async |view: &mut BTreeMap<String, String>, want: BTreeMap<String, String>| {
        let step = async {
            while *view != want {
                let event = events.recv().await.expect("the watcher runs on");
                let Ok(event) = event else { continue };
                let value =
                    |o: &DynamicObject| o.data["data"]["value"].as_str().unwrap_or("").to_string();
                match event {
                    watcher::Event::Init => staged.clear(),
                    watcher::Event::InitApply(o) => {
                        staged.insert(o.metadata.name.clone().unwrap(), value(&o));
                    }
                    watcher::Event::InitDone => *view = std::mem::take(&mut staged),
                    watcher::Event::Apply(o) => {
                        view.insert(o.metadata.name.clone().unwrap(), value(&o));
                    }
                    watcher::Event::Delete(o) => {
                        view.remove(&o.metadata.name.clone().unwrap());
                    }
                }
            }
        };
        tokio::time::timeout(PATIENCE, step)
            .await
            .unwrap_or_else(|_| panic!("the watcher's view stayed {view:?}"));
    };
    let live = |server: &KubeServer| -> BTreeMap<String, String> {
        (0..10)
            .filter_map(|i| {
                let name = format!("cm-{i}");
                server
                    .object("v1", "ConfigMap", Some("shop"), &name)
                    .map(|o| (name, o["data"]["value"].as_str().unwrap().to_string()))
            })
            .collect()
    };
    follow(&mut view, live(&server)).await;
    assert_eq!(view.len(), 3);
    server
        .wait_for_watches("/api/v1/namespaces/shop/configmaps", 1, PATIENCE)
        .await;

    // Live events.
    server.apply_as("driftwarden", config_map("cm-3", "0"));
    server.apply_as("driftwarden", config_map("cm-0", "1"));
    follow(&mut view, live(&server)).await;

    // An ERROR 410 mid-stream, and writes before the watcher is back: it lists again.
    let lists = |server: &KubeServer| {
        server
            .requests()
            .iter()
            .filter(|r| r.is_list() && r.param("watch").is_none())
            .count()
    };
    let lists_before = lists(&server);
    server.expire_watches();
    server.apply_as("driftwarden", config_map("cm-4", "0"));
    server.delete_object("v1", "ConfigMap", Some("shop"), "cm-1");
    follow(&mut view, live(&server)).await;
    assert!(
        lists(&server) > lists_before,
        "a 410 makes the watcher list again"
    );
    server
        .wait_for_watches("/api/v1/namespaces/shop/configmaps", 1, PATIENCE)
        .await;

    // A dropped connection, and writes while it is down: it resumes without listing.
    let lists_before = lists(&server);
    let last_rv = server
        .object("v1", "ConfigMap", Some("shop"), "cm-4")
        .unwrap()["metadata"]["resourceVersion"]
        .clone();
    server.drop_watches();
    server.apply_as("driftwarden", config_map("cm-2", "2"));
    server.delete_object("v1", "ConfigMap", Some("shop"), "cm-3");
    server.apply_as("driftwarden", config_map("cm-5", "0"));
    follow(&mut view, live(&server)).await;
    assert_eq!(
        lists(&server),
        lists_before,
        "a dropped watch resumes from its resourceVersion"
    );
    let resumed = server
        .requests()
        .into_iter()
        .rfind(|r| r.param("watch").is_some())
        .unwrap();
    assert!(
        resumed
            .param("resourceVersion")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= last_rv.as_str().unwrap().parse::<u64>().unwrap()
    );
    assert_eq!(
        view.keys().collect::<Vec<_>>(),
        ["cm-0", "cm-2", "cm-4", "cm-5"]
    );
    task.abort();
}

// ------------------------------------------------------------------------------------------
// Leases
// ------------------------------------------------------------------------------------------

/// Sends a protocol capture's request (its body `application/json`) as curl did.
async fn send(server: &KubeServer, name: &str) -> golden::RawAnswer {
    let want = exchange(name);
    let body = golden::request_body(name);
    let content_type = (!body.is_empty()).then_some("application/json");
    raw_exchange(
        &addr(server),
        Some(TOKEN),
        &want.method,
        &want.target,
        content_type,
        &body,
    )
    .await
}

/// Replays a capture: same status, same body once uids and timestamps are set aside.
async fn replay(server: &KubeServer, name: &str) {
    let want = exchange(name);
    let answer = send(server, name).await;
    assert_eq!(answer.status, want.status, "{name}: {}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        want.header("content-type"),
        "{name}"
    );
    let (mut got, mut expected) = (answer.json(), want.body);
    normalize(&mut got);
    normalize(&mut expected);
    assert_eq!(got, expected, "{name}");
}

/// The Lease sequence as captured: create (201), get, renew (PUT with the current
/// resourceVersion), a stale PUT (409), a takeover by another holder (the server has no lease
/// logic), a PUT without resourceVersion (422), and times without six fractional digits (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_lease_sequence_matches_the_real_server() {
    let server = KubeServer::start().await;
    server.seed(namespace("golden-lease-113121"));
    server.set_resource_version(478);
    for name in [
        "lease-create-201",
        "lease-get-200",
        "lease-renew-200",
        "lease-stale-409",
    ] {
        replay(&server, name).await;
    }
    // The capture's server wrote other objects at 481 and 482.
    server.set_resource_version(482);
    for name in [
        "lease-takeover-200",
        "lease-update-no-resourceversion-422",
        "lease-microtime-without-fraction-400",
    ] {
        replay(&server, name).await;
    }
    let lease = server
        .object(
            "coordination.k8s.io/v1",
            "Lease",
            Some("golden-lease-113121"),
            "driftwarden-leader",
        )
        .unwrap();
    assert_eq!(lease["metadata"]["resourceVersion"], "483");
    assert!(
        server
            .object(
                "coordination.k8s.io/v1",
                "Lease",
                Some("golden-lease-113121"),
                "driftwarden-standby"
            )
            .is_none(),
        "a refused create stores nothing"
    );
    // Leases are discovered like every other resource.
    let answer = raw_exchange(
        &addr(&server),
        Some(TOKEN),
        "GET",
        "/apis/coordination.k8s.io/v1",
        None,
        "",
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json()["resources"],
        json!([{"name": "leases", "singularName": "lease", "namespaced": true, "kind": "Lease",
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "storageVersionHash": "gqkMMb/YqFM="}])
    );
}

/// kube's `Api<Lease>` over real sockets: create, get, replace with the current
/// resourceVersion, a stale replace refused with 409, watch events for each write, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_lease_compare_and_swap_works() {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Api, DeleteParams, PostParams};

    let server = KubeServer::start().await;
    server.seed(namespace("ops"));
    let api: Api<Lease> = Api::namespaced(client(&server), "ops");
    let mut watch = open(
        &server,
        "/apis/coordination.k8s.io/v1/namespaces/ops/leases?watch=1&timeoutSeconds=5",
    )
    .await;
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "driftwarden-leader", "namespace": "ops"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15,
            "acquireTime": "2026-12-07T11:31:21.498249Z", "renewTime": "2026-12-07T11:31:21.498249Z",
            "leaseTransitions": 0}}))
    .unwrap();
    let created = api.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(watch.event().await["type"], "ADDED");
    let mut renewed = api.get("driftwarden-leader").await.unwrap();
    assert_eq!(renewed, created);
    let stale = renewed.clone();
    renewed.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let replaced = api
        .replace("driftwarden-leader", &PostParams::default(), &renewed)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    let modified = watch.event().await;
    assert_eq!(
        (
            &modified["type"],
            &modified["object"]["spec"]["holderIdentity"]
        ),
        (&json!("MODIFIED"), &json!("b"))
    );
    match api
        .replace("driftwarden-leader", &PostParams::default(), &stale)
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"))
        }
        other => panic!("a stale replace must be refused: {other:?}"),
    }
    api.delete("driftwarden-leader", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(watch.event().await["type"], "DELETED");
    assert!(api.get_opt("driftwarden-leader").await.unwrap().is_none());
}

/// Without a watch cache (second server: ConfigMaps served from etcd), a watch from a compacted
/// resourceVersion is the same 200 with one ERROR event, with etcd's message
/// (watch-expired-compacted-200); a LIST at that resourceVersion with
/// `resourceVersionMatch=Exact` is a real HTTP 410 (list-expired-compacted-410), and a LIST at
/// a future one a 504 with `Retry-After` (list-future-resourceversion-504).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_compacted_and_future_resource_versions_on_watch_and_list() {
    let server = KubeServer::start().await;
    server.seed(namespace("golden-compact-113800"));
    server.disable_watch_cache("v1", "ConfigMap");
    server.set_resource_version(320);
    server.compact_history();
    let want = exchange("watch-expired-compacted-200");
    let mut stream = open(&server, &want.target).await;
    assert_stream_head(&stream, "watch-expired-compacted-200");
    assert_eq!(stream.rest().await, (want.events(), Chunk::End));

    let want = exchange("list-expired-compacted-410");
    let answer = raw_exchange(&addr(&server), Some(TOKEN), "GET", &want.target, None, "").await;
    assert_eq!(answer.status, 410);
    assert_eq!(answer.json(), want.body);

    let server = KubeServer::start().await;
    server.seed(namespace("golden-expired-113827"));
    server.set_resource_version(673);
    let want = exchange("list-future-resourceversion-504");
    let answer = raw_exchange(&addr(&server), Some(TOKEN), "GET", &want.target, None, "").await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.json(), want.body);
    assert_eq!(answer.header("retry-after"), want.header("retry-after"));
}

/// kube's runtime watcher with streaming lists (WatchList: `sendInitialEvents=true`, no LIST):
/// the initial events end at the `initial-events-end` bookmark. In list-then-watch mode, an HTTP
/// 410 on the LIST (`FaultKind::ExpiredList`) is retried, and a slow answer (`FaultKind::Delay`)
/// waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_watcher_streaming_lists_and_list_faults() {
    use futures::StreamExt;
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
    use kube::runtime::{WatchStreamExt, watcher};

    let server = KubeServer::start().await;
    server.seed(namespace("shop"));
    for i in 0..3 {
        server.apply_as("driftwarden", config_map(&format!("cm-{i}"), "0"));
    }
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap"));
    let api: Api<DynamicObject> = Api::namespaced_with(client(&server), "shop", &ar);
    let mut stream = watcher(api.clone(), watcher::Config::default().streaming_lists())
        .default_backoff()
        .boxed();
    let mut names = Vec::new();
    let step = async {
        loop {
            match stream.next().await.expect("the watcher runs on") {
                Ok(watcher::Event::InitApply(o)) => names.push(o.metadata.name.clone().unwrap()),
                Ok(watcher::Event::InitDone) => return,
                _ => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, step).await.unwrap();
    assert_eq!(names, ["cm-0", "cm-1", "cm-2"]);
    let watches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/namespaces/shop/configmaps")
        .collect();
    assert!(
        watches.iter().all(|r| r.is_watch()),
        "no LIST: {watches:#?}"
    );
    assert_eq!(
        watches[0].param("sendInitialEvents").as_deref(),
        Some("true")
    );

    // List-then-watch through a 410 on the LIST, then a slow LIST.
    let path = "/api/v1/namespaces/shop/configmaps";
    server.inject(Fault::new("GET", path, FaultKind::ExpiredList, 1));
    server.inject(Fault::new(
        "GET",
        path,
        FaultKind::Delay(Duration::from_millis(200)),
        1,
    ));
    server.clear_requests();
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut seen = Vec::new();
    let step = async {
        loop {
            match stream.next().await.expect("the watcher runs on") {
                Ok(watcher::Event::InitApply(o)) => seen.push(o.metadata.name.clone().unwrap()),
                Ok(watcher::Event::InitDone) => return,
                _ => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, step).await.unwrap();
    assert_eq!(seen, ["cm-0", "cm-1", "cm-2"]);
    let statuses: Vec<u16> = server
        .requests()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses[0], 410, "{statuses:?}");
}

/// `go_away` cuts the watches and leaves every request unanswered; `come_back` answers again and
/// a watch resumes with what was written meanwhile (in process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_and_comes_back() {
    let server = KubeServer::start().await;
    server.seed(namespace("shop"));
    server.apply_as("driftwarden", config_map("cm-0", "0"));
    let rv = server
        .object("v1", "ConfigMap", Some("shop"), "cm-0")
        .unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let target = format!("/api/v1/namespaces/shop/configmaps?watch=1&resourceVersion={rv}");
    let mut stream = open(&server, &target).await;
    server.go_away();
    assert_eq!(stream.next().await, Chunk::Cut);
    assert_eq!(server.open_watches(), 0);
    let mut refused = open(&server, &target).await;
    assert_eq!(refused.status, 0, "no answer while gone");
    assert_eq!(refused.next().await, Chunk::Cut);
    server.apply_as("driftwarden", config_map("cm-0", "1"));
    server.come_back();
    let mut resumed = open(&server, &target).await;
    assert_eq!(resumed.status, 200);
    let event = resumed.event().await;
    assert_eq!(
        (&event["type"], &event["object"]["data"]["value"]),
        (&json!("MODIFIED"), &json!("1"))
    );
}

/// `kubectl scale` over HTTP: a merge patch of the `scale` subresource, recorded as an Update
/// with `subresource: scale` and no `time`, seen by a watch as MODIFIED with the generation
/// raised (watch-deployments-200's second event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_subresource_is_a_watched_update() {
    let server = KubeServer::start().await;
    server.seed(namespace("shop"));
    server.apply_as("driftwarden", ticker("shop", "ticker"));
    let mut stream = open(
        &server,
        "/apis/apps/v1/namespaces/shop/deployments?watch=1&resourceVersion=1002&timeoutSeconds=5",
    )
    .await;
    let target = "/apis/apps/v1/namespaces/shop/deployments/ticker/scale";
    let scale = raw_exchange(&addr(&server), Some(TOKEN), "GET", target, None, "").await;
    assert_eq!(scale.status, 200);
    assert_eq!(scale.json()["spec"]["replicas"], 1);
    assert_eq!(
        scale.json()["status"]["selector"],
        "app.kubernetes.io/name=ticker"
    );
    let answer = raw_exchange(
        &addr(&server),
        Some(TOKEN),
        "PATCH",
        &format!("{target}?fieldManager=kubectl"),
        Some("application/merge-patch+json"),
        r#"{"spec":{"replicas":3}}"#,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["kind"], "Scale");
    assert_eq!(answer.json()["spec"]["replicas"], 3);
    let event = stream.event().await;
    assert_eq!(event["type"], "MODIFIED");
    let obj = &event["object"];
    assert_eq!(
        (&obj["spec"]["replicas"], &obj["metadata"]["generation"]),
        (&json!(3), &json!(2))
    );
    let entry = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl")
        .unwrap();
    assert_eq!(
        entry,
        &json!({"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}, "subresource": "scale"})
    );
}
