//! One watch stream per list scope, on kube's runtime watcher.
//!
//! What kube's [`watcher`] covers (kube-runtime 5, `watcher.rs`): the initial LIST (paginated)
//! and the WATCH from its resourceVersion with `allowWatchBookmarks=true`; BOOKMARK events move
//! the resume point; an `ERROR` event with code 410 (Expired) in a 200 stream relists (a new
//! `Init` … `InitDone` sequence); a stream that ends, or breaks, is re-watched from the last
//! resourceVersion seen; every failure is returned as an `Err` item and recovery happens on the
//! next poll, without delay of its own.
//!
//! What this module builds on top of it:
//! - **backoff**: after an error the next poll waits (250 ms doubling to 30 s, with jitter),
//!   reset by the next event;
//! - **410 as an HTTP status** when a watch is started from a resourceVersion the server no
//!   longer has: kube's watcher would retry the same resourceVersion forever, so the watcher is
//!   replaced by a fresh one, which relists;
//! - **health**: a scope that returned an error counts as unread (nothing Missing, nothing
//!   pruned, in its scope) until an event arrives or the re-watch has stayed open for
//!   [`RESUMED_AFTER`] (kube's watcher does not surface a successful reconnect or a bookmark);
//! - **memory**: objects are passed on as JSON without `status` (no diff reads it), except
//!   Deployments, StatefulSets and DaemonSets, whose status the health gate judges the
//!   workload's health by before a correction (src/act/health.rs);
//! - **bounded listing**: a stream lists (at start, and again after a 410) only while it holds
//!   one of its target's list permits (`live.kubernetes.concurrency` of them), from the
//!   watcher's `Init` to its `InitDone` or failure, in pages of the target's `page_size`. Every
//!   stream starts at once, one per kind and namespace; without the permits every stream's
//!   first page would be in memory at the same time, next to the first full cycle's LISTs
//!   (1.9 GiB more at 100,000 objects in `cargo bench --bench scale`);
//! - events go to the target's loop over a channel, tagged with the scope and the generation of
//!   the desired state that planned them.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::live::kube::ListScope;

/// A re-watch that stays open this long after an error counts as a resumed stream.
pub const RESUMED_AFTER: Duration = Duration::from_secs(2);

/// What a scope's stream reports to its target.
#[derive(Debug)]
pub enum Msg {
    /// A (re)list begins: the scope's objects follow as `InitApply`, then `InitDone`.
    Init,
    InitApply(Value),
    /// The list is complete: it replaces what the scope held.
    InitDone,
    /// An object was added or modified.
    Apply(Value, Instant),
    /// An object was deleted (or, in a label-selected scope, lost the label).
    Delete(Value, Instant),
    /// The stream failed; it is retried. `relist`: the server expired the resume point (410).
    Failed {
        message: String,
        relist: bool,
    },
    /// The stream is delivering again after a failure.
    Resumed,
}

/// A message with where it comes from.
#[derive(Debug)]
pub struct Tagged {
    /// The desired state's generation whose scopes started this stream.
    pub generation: u64,
    /// The scope's index in that generation's plan.
    pub scope: usize,
    pub msg: Msg,
}

/// kube's dynamic resource description of a scope's kind.
fn api_resource(scope: &ListScope) -> kube::discovery::ApiResource {
    let r = &scope.resource;
    kube::discovery::ApiResource {
        group: r.group.clone(),
        version: r.version.clone(),
        api_version: r.api_version(),
        kind: r.kind.clone(),
        plural: r.plural.clone(),
    }
}

/// What the store keeps of an object: everything but `status` (a workload keeps it, for the
/// health gate), with its `apiVersion` and `kind` (list items come without them).
pub fn trim(obj: DynamicObject, ar: &kube::discovery::ApiResource) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(map) = v.as_object_mut() {
        if !crate::act::health::WORKLOADS.contains(&ar.kind.as_str()) {
            map.remove("status");
        }
        map.entry("apiVersion")
            .or_insert_with(|| Value::String(ar.api_version.clone()));
        map.entry("kind")
            .or_insert_with(|| Value::String(ar.kind.clone()));
    }
    v
}

/// Whether an error is the server's 410 Expired (as an HTTP status or a watch `ERROR` event).
fn expired(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(s) => s.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 410,
        _ => false,
    }
}

/// Whether kube's watcher will not recover by itself: a 410 as the HTTP status of a watch
/// request keeps the expired resourceVersion.
fn needs_fresh_watcher(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 410)
}

/// The delay before retry `attempt` (from 1): 250 ms doubling, at most 30 s, ±20% jitter.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(250)
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(7))
        .min(Duration::from_secs(30));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = 0.8 + f64::from(nanos % 400) / 1000.0;
    base.mul_f64(jitter)
}

/// How a target's streams list: the permits they share and the page size.
#[derive(Debug, Clone)]
pub struct Listing {
    /// A stream lists only while it holds one of these.
    pub permits: Arc<Semaphore>,
    /// Items per LIST page (`limit`).
    pub page_size: u32,
}

impl Listing {
    /// At most `concurrency` streams listing at once (at least one), `page_size` items a page.
    pub fn new(concurrency: usize, page_size: u32) -> Listing {
        Listing {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            page_size: page_size.max(1),
        }
    }
}

/// Runs one scope's watch until the receiver is gone.
pub async fn run(
    client: kube::Client,
    scope: ListScope,
    generation: u64,
    index: usize,
    tx: mpsc::Sender<Tagged>,
    listing: Listing,
) {
    let ar = api_resource(&scope);
    let api: Api<DynamicObject> = match &scope.namespace {
        Some(ns) if scope.resource.namespaced => Api::namespaced_with(client, ns, &ar),
        _ => Api::all_with(client, &ar),
    };
    // Bookmarks are on by default; the server ends each watch after 290 s and it resumes.
    let mut config = watcher::Config::default().page_size(listing.page_size);
    if let Some(sel) = &scope.label_selector {
        config = config.labels(sel);
    }
    let send = |msg: Msg| {
        let tx = tx.clone();
        async move {
            tx.send(Tagged {
                generation,
                scope: index,
                msg,
            })
            .await
            .is_ok()
        }
    };
    let mut attempt: u32 = 0;
    'fresh: loop {
        let mut stream = pin!(watcher::watcher(api.clone(), config.clone()));
        let mut failing = false;
        // Held from `Init` (which kube's watcher yields before requesting the first page) to
        // `InitDone`; dropped on an error, after which the watcher starts over with `Init`.
        let mut permit: Option<OwnedSemaphorePermit> = None;
        loop {
            let next = if failing {
                tokio::select! {
                    n = stream.next() => n,
                    _ = tokio::time::sleep(RESUMED_AFTER) => {
                        failing = false;
                        attempt = 0;
                        if !send(Msg::Resumed).await {
                            return;
                        }
                        continue;
                    }
                }
            } else {
                stream.next().await
            };
            let msg = match next {
                None => continue 'fresh,
                Some(Ok(Event::Init)) => {
                    if permit.is_none() {
                        match Arc::clone(&listing.permits).acquire_owned().await {
                            Ok(p) => permit = Some(p),
                            // Closed only when the target drops it: the stream is done.
                            Err(_) => return,
                        }
                    }
                    Msg::Init
                }
                Some(Ok(Event::InitApply(o))) => Msg::InitApply(trim(o, &ar)),
                Some(Ok(Event::InitDone)) => {
                    permit = None;
                    failing = false;
                    attempt = 0;
                    Msg::InitDone
                }
                Some(Ok(Event::Apply(o))) => {
                    if failing {
                        failing = false;
                        attempt = 0;
                        if !send(Msg::Resumed).await {
                            return;
                        }
                    }
                    Msg::Apply(trim(o, &ar), Instant::now())
                }
                Some(Ok(Event::Delete(o))) => {
                    if failing {
                        failing = false;
                        attempt = 0;
                        if !send(Msg::Resumed).await {
                            return;
                        }
                    }
                    Msg::Delete(trim(o, &ar), Instant::now())
                }
                Some(Err(e)) => {
                    // The backoff is waited without the permit (a scope that keeps failing,
                    // say a kind that may not be listed, never holds the others back).
                    permit = None;
                    attempt += 1;
                    failing = true;
                    let relist = expired(&e);
                    let message = crate::errors::error_chain(&e);
                    if relist {
                        debug!(scope = %describe(&scope), error = %message, "watch expired: relisting");
                    } else {
                        warn!(scope = %describe(&scope), error = %message, attempt, "watch failed: retrying");
                    }
                    if !send(Msg::Failed {
                        message: format!("watch of {}: {message}", describe(&scope)),
                        relist,
                    })
                    .await
                    {
                        return;
                    }
                    // A relist after 410 is immediate; other failures back off.
                    if !relist {
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                    if needs_fresh_watcher(&e) {
                        continue 'fresh;
                    }
                    continue;
                }
            };
            if !send(msg).await {
                return;
            }
        }
    }
}

/// `Deployment in shop`, `Deployment in any namespace (app=x)`, for messages.
pub fn describe(scope: &ListScope) -> String {
    let mut s = scope.resource.kind.clone();
    match &scope.namespace {
        Some(ns) => s.push_str(&format!(" in {ns}")),
        None if scope.resource.namespaced => s.push_str(" in any namespace"),
        None => {}
    }
    if let Some(sel) = &scope.label_selector {
        s.push_str(&format!(" ({sel})"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(300));
        assert!(backoff(3) >= Duration::from_millis(800));
        assert!(backoff(30) <= Duration::from_secs(36));
    }

    #[test]
    fn only_an_http_410_at_watch_start_needs_a_fresh_watcher() {
        let gone = kube::core::Status::failure("too old", "Expired").with_code(410);
        let e = watcher::Error::WatchStartFailed(kube::Error::Api(gone.clone().boxed()));
        assert!(expired(&e) && needs_fresh_watcher(&e));
        let e = watcher::Error::WatchError(gone.boxed());
        assert!(expired(&e) && !needs_fresh_watcher(&e));
    }
}
