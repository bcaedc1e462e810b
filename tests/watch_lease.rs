//! Leader election (src/watch/lease.rs) against the Kubernetes test API server over real
//! sockets: two electors and one leader, a takeover after the holder vanishes, a release on
//! shutdown, a 409 that ends a leadership, and a leader whose renewals hang stopping before
//! anyone else could take over. A monitor checks throughout that the two replicas never both
//! pass `Leadership::check` at the same moment.

#[path = "support/kube_server.rs"]
mod kube_server;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use driftwarden::live::kube_verbs::{KUBE_LEASE_VERBS, rbac_request_verbs};
use driftwarden::watch::lease::{Elector, Leadership, LeaseSettings, NotLeader, Role};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kube_server::{Fault, FaultKind, KubeServer, TOKEN};
use serde_json::json;

const NS: &str = "ops";
const NAME: &str = "dw";
const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

fn client(server: &KubeServer) -> kube::Client {
    let mut config = kube::Config::new(server.url().parse().unwrap());
    config.auth_info.token = Some(TOKEN.to_string().into());
    kube::Client::try_from(config).unwrap()
}

/// Short timings so a test takes seconds: a 2 s Lease, stop after 1 s without renewal, try
/// every 200 ms.
fn settings(identity: &str) -> LeaseSettings {
    let mut s = LeaseSettings::new(NAME, NS, identity);
    s.lease_duration = Duration::from_secs(2);
    s.renew_deadline = Duration::from_secs(1);
    s.retry_period = Duration::from_millis(200);
    s
}

struct Replica {
    leadership: Leadership,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Replica {
    fn start(server: &KubeServer, identity: &str) -> Replica {
        let (elector, leadership) = Elector::new(client(server), settings(identity)).unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async move {
            let _ = rx.await;
        }));
        Replica {
            leadership,
            stop: Some(stop),
            task,
        }
    }

    /// A clean shutdown: the elector stops acting and releases the Lease.
    async fn shutdown(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
    }
}

/// Polls until `cond` holds; fails (rather than hanging) after a generous bound.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < give_up, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the monitor saw: moments at which both replicas would act, and the latest instant
/// until which `a` was allowed to act.
#[derive(Default)]
struct Seen {
    both: AtomicUsize,
    a_deadline: std::sync::Mutex<Option<Instant>>,
}

fn monitor(a: Leadership, b: Leadership) -> (Arc<Seen>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            if a.is_leader_now() && b.is_leader_now() {
                s.both.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(d) = a.deadline() {
                let mut m = s.a_deadline.lock().unwrap();
                *m = Some(m.map_or(d.into_std(), |x| x.max(d.into_std())));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    (seen, task)
}

fn lease(server: &KubeServer) -> serde_json::Value {
    server
        .object("coordination.k8s.io/v1", "Lease", Some(NS), NAME)
        .expect("the Lease exists")
}

async fn start_server() -> KubeServer {
    let server = KubeServer::start().await;
    server.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}));
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_electors_one_leader_renewing_with_compare_and_swap_then_a_release() {
    let server = start_server().await;
    let mut a = Replica::start(&server, "replica-a");
    let mut b = Replica::start(&server, "replica-b");
    let (seen, mon) = monitor(a.leadership.clone(), b.leadership.clone());
    until("a leader", || {
        a.leadership.role() == Role::Leader || b.leadership.role() == Role::Leader
    })
    .await;
    let (leader, follower, leader_id, follower_id) = if a.leadership.role() == Role::Leader {
        (&mut a, &mut b, "replica-a", "replica-b")
    } else {
        (&mut b, &mut a, "replica-b", "replica-a")
    };
    until("the other one follows", || {
        follower.leadership.role() == Role::Follower
    })
    .await;
    assert_eq!(follower.leadership.check(), Err(NotLeader::Follower));
    assert!(leader.leadership.check().is_ok());
    // Several renewals go by; the leader keeps the Lease, the follower keeps following.
    let renewals = || {
        server
            .requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.path.starts_with(LEASE_PATH) && r.status == 200)
            .count()
    };
    until("five renewals", || renewals() >= 5).await;
    assert_eq!(leader.leadership.role(), Role::Leader);
    assert_eq!(follower.leadership.role(), Role::Follower);
    let l = lease(&server);
    assert_eq!(l["spec"]["holderIdentity"], leader_id);
    assert_eq!(l["spec"]["leaseDurationSeconds"], 2);
    assert_eq!(l["spec"]["leaseTransitions"], 0);
    // Every write carried a resourceVersion and six fractional digits (the server answers
    // 422 or 400 otherwise); the first was the only create.
    let writes: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with(LEASE_PATH) && r.is_write())
        .collect();
    // One create succeeded (a second replica's concurrent create, if any, was refused 409).
    assert_eq!(
        writes
            .iter()
            .filter(|r| r.method == "POST" && r.status == 201)
            .count(),
        1
    );
    assert!(
        writes
            .iter()
            .all(|r| r.method != "POST" || r.status == 201 || r.status == 409)
    );
    for w in writes.iter().filter(|r| r.status == 200) {
        let body: serde_json::Value = serde_json::from_str(&w.body).unwrap();
        assert!(
            body["metadata"]["resourceVersion"].is_string(),
            "{}",
            w.body
        );
        let renew = body["spec"]["renewTime"].as_str().unwrap();
        let frac = renew.split('.').nth(1).unwrap();
        assert_eq!(frac.len(), "000000Z".len(), "{renew}");
    }
    assert!(writes.iter().all(|w| w.status != 400 && w.status != 422));
    // Every Lease request is one the deploy manifests' RBAC grants (KUBE_LEASE_VERBS).
    for r in server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with(LEASE_PATH))
    {
        let verbs = rbac_request_verbs(&r.method, r.is_collection(), &r.query, r.status);
        assert!(
            !verbs.is_empty() && verbs.iter().all(|v| KUBE_LEASE_VERBS.contains(v)),
            "{} {} -> {verbs:?}",
            r.method,
            r.path
        );
    }

    // The leader shuts down: it stops acting, then releases the Lease.
    leader.shutdown().await;
    assert_eq!(leader.leadership.check(), Err(NotLeader::Follower));
    let l = lease(&server);
    assert!(l["spec"]["holderIdentity"].is_null(), "{l}");
    assert_eq!(l["spec"]["leaseDurationSeconds"], 1);
    // The follower takes the released Lease.
    until("the follower leads", || {
        follower.leadership.role() == Role::Leader
    })
    .await;
    let l = lease(&server);
    assert_eq!(l["spec"]["holderIdentity"], follower_id);
    assert_eq!(l["spec"]["leaseTransitions"], 1);
    assert_eq!(l["spec"]["acquireTime"], l["spec"]["renewTime"]);
    mon.abort();
    assert_eq!(
        seen.both.load(Ordering::SeqCst),
        0,
        "two replicas acted at once"
    );
    follower.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_holder_is_replaced_only_after_its_lease_expired() {
    let server = start_server().await;
    let a = Replica::start(&server, "replica-a");
    until("a leads", || a.leadership.role() == Role::Leader).await;
    let mut b = Replica::start(&server, "replica-b");
    until("b follows", || b.leadership.role() == Role::Follower).await;
    let (seen, mon) = monitor(a.leadership.clone(), b.leadership.clone());
    // `a` crashes: no release, no more renewals.
    a.task.abort();
    let _ = a.task.await;
    let stopped = Instant::now();
    until("b leads", || b.leadership.role() == Role::Leader).await;
    // `a`'s view of itself had expired before `b` could lead.
    assert_eq!(a.leadership.check(), Err(NotLeader::Expired));
    // `b` waited for the Lease to expire: its takeover came a full lease duration after the
    // last renewal `a` made.
    let reqs = server.requests();
    let last_a = reqs
        .iter()
        .filter(|r| r.is_write() && (r.status == 200 || r.status == 201))
        .filter(|r| r.body.contains("replica-a"))
        .map(|r| r.at)
        .max()
        .unwrap();
    let takeover = reqs
        .iter()
        .find(|r| r.method == "PUT" && r.status == 200 && r.body.contains("replica-b"))
        .unwrap();
    assert!(takeover.at >= last_a + settings("x").lease_duration);
    assert!(takeover.at >= stopped);
    // And `a` could act only until before that.
    let a_deadline = seen.a_deadline.lock().unwrap().expect("a led");
    assert!(a_deadline < last_a + settings("x").lease_duration);
    let l = lease(&server);
    assert_eq!(l["spec"]["holderIdentity"], "replica-b");
    assert_eq!(l["spec"]["leaseTransitions"], 1);
    mon.abort();
    assert_eq!(
        seen.both.load(Ordering::SeqCst),
        0,
        "two replicas acted at once"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_on_renewal_ends_the_leadership_at_once() {
    let server = start_server().await;
    let mut a = Replica::start(&server, "replica-a");
    until("a leads", || a.leadership.role() == Role::Leader).await;
    let mut roles = a.leadership.subscribe();
    // Another writer takes the Lease (a replica that believed it expired).
    let api: Api<Lease> = Api::namespaced(client(&server), NS);
    let mut current = api.get(NAME).await.unwrap();
    let spec = current.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    api.replace(NAME, &PostParams::default(), &current)
        .await
        .unwrap();
    // `a`'s next renewal carries the old resourceVersion: 409, and `a` stops.
    tokio::time::timeout(Duration::from_secs(30), async {
        while *roles.borrow_and_update() != Role::Follower {
            roles.changed().await.unwrap();
        }
    })
    .await
    .expect("a steps down");
    assert_eq!(a.leadership.check(), Err(NotLeader::Follower));
    let conflicts: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.status == 409 && r.body.contains("replica-a"))
        .collect();
    assert_eq!(conflicts.len(), 1, "one refused renewal, then reads");
    // While the intruder's Lease is valid, `a` only reads; once it expired, `a` takes it back.
    until("a leads again", || a.leadership.role() == Role::Leader).await;
    let l = lease(&server);
    assert_eq!(l["spec"]["holderIdentity"], "replica-a");
    assert_eq!(l["spec"]["leaseTransitions"], 2);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_hang_stops_before_its_lease_expires() {
    let server = start_server().await;
    let mut a = Replica::start(&server, "replica-a");
    until("a leads", || a.leadership.role() == Role::Leader).await;
    let mut b = Replica::start(&server, "replica-b");
    until("b follows", || b.leadership.role() == Role::Follower).await;
    let (seen, mon) = monitor(a.leadership.clone(), b.leadership.clone());
    // From now on every Lease write hangs far beyond the Lease's duration (the API server
    // answers late): `a` cannot renew, `b` cannot take over.
    server.inject(Fault::new(
        "PUT",
        &format!("{LEASE_PATH}/{NAME}"),
        FaultKind::Delay(Duration::from_secs(5)),
        usize::MAX,
    ));
    let mut roles = a.leadership.subscribe();
    tokio::time::timeout(Duration::from_secs(30), async {
        while *roles.borrow_and_update() != Role::Follower {
            roles.changed().await.unwrap();
        }
    })
    .await
    .expect("a steps down");
    assert_eq!(a.leadership.check(), Err(NotLeader::Follower));
    assert_eq!(a.leadership.deadline(), None);
    // `a` was allowed to act only until before its Lease could expire for anyone else: its
    // latest deadline came before the earliest moment its last stored write let another
    // replica take over (the write was sent before the server stored it).
    let last_a = server
        .requests()
        .iter()
        .filter(|r| r.is_write() && (r.status == 200 || r.status == 201))
        .filter(|r| r.body.contains("replica-a"))
        .map(|r| r.at)
        .max()
        .unwrap();
    let a_deadline = seen.a_deadline.lock().unwrap().expect("a led");
    assert!(a_deadline < last_a + settings("x").lease_duration);
    assert_ne!(b.leadership.role(), Role::Leader);
    // The API server recovers: one of the two leads again, never both at once.
    server.clear_faults();
    until("a leader again", || {
        a.leadership.role() == Role::Leader || b.leadership.role() == Role::Leader
    })
    .await;
    mon.abort();
    assert_eq!(
        seen.both.load(Ordering::SeqCst),
        0,
        "two replicas acted at once"
    );
    a.shutdown().await;
    b.shutdown().await;
}
