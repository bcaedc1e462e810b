//! Reads live objects from a Kubernetes cluster, and the small request layer the Kubernetes
//! actuator (`act::correct_kube`) shares.
//!
//! What a read does, and why:
//! - **Discovery first**, cached per process for [`DISCOVERY_TTL`] keyed by the API server URL
//!   (and the kubeconfig and context it was reached with),
//!   so one run fetches it once (the read and the corrections share it): `/api/v1`, `/apis`, and
//!   `/apis/<group>/<version>` only for the groups desired names. Custom resources are found like
//!   any other kind.
//! - **One LIST per kind and namespace scope**, paginated with `limit`/`continue`; never a GET
//!   per object. Only the kinds and namespaces desired names, plus the scope configured for
//!   Unmanaged detection (filtered by the tracking label when it can be).
//! - **Bounded**: at most `concurrency` LISTs in flight, a timeout per request, and bounded
//!   retries with jittered exponential backoff on 429, 5xx, timeouts and broken connections,
//!   honouring `Retry-After`. An answer that refuses the object itself ([`Rejection`]: a 500
//!   `failed to create typed patch object`, a 422 `Invalid`) is the same on every attempt and
//!   is never retried.
//! - **Page by page**: each LIST page is handed to the caller as soon as it is parsed
//!   ([`read_with_each`]); only two pages are parsed objects at a time (the one the caller
//!   compares and the next), the answers of the other LISTs in flight wait as bytes, so a read
//!   holds a few pages, not a LIST and not the cluster.
//! - **Expired continue tokens**: a LIST whose continue token expired (410 `Expired`) starts
//!   over from the first page once rather than mix in the inconsistent remainder the server
//!   offers; the new pass's objects replace those of the pass given up on. A second expiry
//!   fails the scope ([`KubeError::ListExpired`]).
//! - **Partial failure is data**: a LIST that still fails becomes an error in [`KubeRead`] and an
//!   [`UnreadScope`]; its desired objects are then not reported `Missing`
//!   ([`drop_unread_missing`]), and the target's read counts as partial (nothing is pruned).
//!
//! Nothing here logs an object or a request body: Secrets pass through this module. An error
//! answer to a request on Secrets is masked where it is read ([`KubeError::Api`] never holds
//! the server's text for it): validation messages quote rejected values.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hyper::http::{self, HeaderMap, Method, StatusCode, header};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroupList, APIResourceList};
use kube::client::Body;
use kube::core::params::{DeleteParams, GetParams, ListParams, Patch, PatchParams};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::KubeSource;
use crate::desired::RawObject;
use crate::diff::Tracking;
use crate::k8s::{split_api_version, str_at};
use crate::model::{Drift, DriftKind, FIELD_MANAGER, ResourceId};

/// How long discovery answers are reused.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(300);

/// The longest `Retry-After` honoured; a longer one is shortened to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A LIST that keeps answering with new pages stops here (a server bug, not a cluster size).
/// The read timeout of watch streams: above the server-side watch timeout (290 s) and its
/// margin, so a quiet stream is never cut by the client.
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(330);

const MAX_PAGES: usize = 100_000;

/// How the API server's 500 for an applied object it cannot type against the kind's schema
/// begins (structured-merge-diff, through the apply handler); the rest names the object and
/// the fields: `failed to create typed patch object (shop/web; apps/v1, Kind=Deployment):
/// .spec.replica: field not declared in schema`.
pub const TYPED_PATCH_ERROR: &str = "failed to create typed patch object";

/// What stands for the server's text in an error about a Secret.
const WITHHELD: &str = "(message withheld: Secret)";

/// Why the server refused an object for what it is rather than for the moment it was sent:
/// every attempt gets the same answer, so it is never retried and the object must change (in
/// Git) before a write can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A 500 `failed to create typed patch object (…)`: server-side apply cannot type the
    /// object against its kind's schema, for a field the schema does not declare (a typo, a
    /// field of another API version) or a value of the wrong type.
    Schema,
    /// A 422 `Invalid`: validation or an admission policy refused values.
    Invalid,
}

/// Why talking to the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read kubeconfig {path}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot find a kubeconfig or an in-cluster service account")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot load the in-cluster configuration")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error("cannot build the request for {path}: {message}")]
    Request { path: String, message: String },
    /// The server answered with an error status. `message` is the API's own message.
    #[error("{method} {path}: HTTP {code}{}: {message}{}", reason_text(reason), attempts_text(*attempts))]
    Api {
        method: String,
        path: String,
        code: u16,
        reason: String,
        message: String,
        attempts: u32,
        /// The `metav1.Status` body, when the server sent one.
        status: Option<Box<kube::core::Status>>,
    },
    #[error("{method} {path}: no response within {timeout:?}{}", attempts_text(*attempts))]
    Timeout {
        method: String,
        path: String,
        timeout: Duration,
        attempts: u32,
    },
    #[error("{method} {path}: connection failed{}", attempts_text(*attempts))]
    Transport {
        method: String,
        path: String,
        attempts: u32,
        #[source]
        source: kube::Error,
    },
    #[error("{method} {path}: the response is not the expected JSON")]
    Decode {
        method: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: the server kept returning pages ({pages}); giving up")]
    EndlessList { path: String, pages: usize },
    /// The continue token of a LIST expired (410) again after the list had been started over
    /// once from the first page.
    #[error(
        "LIST {path}: the continue token expired again after the list was started over from the first page; giving up on this scope"
    )]
    ListExpired {
        path: String,
        #[source]
        source: Box<KubeError>,
    },
}

fn reason_text(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" {reason}")
    }
}

fn attempts_text(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

impl KubeError {
    /// The HTTP status the server answered with, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Api { code, .. } => Some(*code),
            KubeError::ListExpired { source, .. } => source.code(),
            _ => None,
        }
    }

    /// Whether the server refused the object itself (see [`Rejection`]).
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            KubeError::Api {
                code: 500, message, ..
            } if message.starts_with(TYPED_PATCH_ERROR) => Some(Rejection::Schema),
            KubeError::Api { code: 422, .. } => Some(Rejection::Invalid),
            _ => None,
        }
    }

    /// The server's `metav1.Status`, if it sent one.
    pub fn status(&self) -> Option<&kube::core::Status> {
        match self {
            KubeError::Api { status, .. } => status.as_deref(),
            _ => None,
        }
    }
}

/// One served resource type, as discovery describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiResource {
    /// Empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The plural resource name used in URLs (`deployments`).
    pub plural: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl ApiResource {
    /// `apps/v1` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The collection path, in a namespace or across all of them (or for a cluster-scoped kind).
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let root = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{root}/namespaces/{ns}/{}", self.plural),
            _ => format!("{root}/{}", self.plural),
        }
    }

    /// `deployments.apps` or `services`, as RBAC and error messages name it.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// A (kind, namespace) scope whose LIST failed: desired objects in it were not compared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnreadScope {
    pub group: String,
    /// `None`: every kind of the group (its discovery failed).
    pub kind: Option<String>,
    /// `None`: every namespace (and cluster-scoped objects).
    pub namespace: Option<String>,
}

impl UnreadScope {
    /// Whether an object with this identity lies in the scope.
    pub fn covers(&self, id: &ResourceId) -> bool {
        let ResourceId::Kubernetes {
            group,
            kind,
            namespace,
            ..
        } = id
        else {
            return false;
        };
        group == &self.group
            && self.kind.as_ref().is_none_or(|k| k == kind)
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| namespace.as_ref() == Some(ns))
    }
}

/// Removes the `Missing` drifts of objects in unread scopes: their absence was never observed.
/// Returns the dropped resources' display names, for the report.
pub fn drop_unread_missing(drifts: &mut Vec<Drift>, unread: &[UnreadScope]) -> Vec<String> {
    if unread.is_empty() {
        return Vec::new();
    }
    let mut dropped = Vec::new();
    drifts.retain(|d| {
        let hidden =
            d.kind == DriftKind::Missing && unread.iter().any(|u| u.covers(&d.resource.id));
        if hidden {
            dropped.push(d.resource.display.clone());
        }
        !hidden
    });
    dropped
}

/// What a cluster read needs to know about the target.
#[derive(Debug, Clone, Copy)]
pub struct ReadRequest<'a> {
    /// The desired objects: they name the kinds and namespaces to LIST.
    pub desired: &'a [Value],
    /// The namespace of namespaced desired objects that name none.
    pub default_namespace: &'a str,
    /// How Unmanaged objects are recognised; `None` = no Unmanaged detection.
    pub tracking: Option<&'a Tracking>,
    /// Where Unmanaged objects are searched; empty = every namespace.
    pub unmanaged_namespaces: &'a [String],
}

/// What a cluster read returned.
#[derive(Debug, Default)]
pub struct KubeRead {
    pub objects: Vec<RawObject>,
    /// Failed LISTs and discovery calls; non-empty = a partial read.
    pub errors: Vec<String>,
    /// The scopes those failures left unread.
    pub unread: Vec<UnreadScope>,
    /// LIST requests sent (pages, retries excluded).
    pub list_requests: usize,
}

/// A Kubernetes API client with driftwarden's timeouts, retries and discovery cache.
#[derive(Clone)]
pub struct Kube {
    client: kube::Client,
    /// The same connection settings with a read timeout above a watch's server-side timeout
    /// (290 s): a quiet watch stream is not a failure.
    watch_client: kube::Client,
    cluster_url: String,
    /// Discovery cache key: the API server URL and where the credentials came from.
    cache_key: String,
    settings: KubeSource,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("cluster_url", &self.cluster_url)
            .finish_non_exhaustive()
    }
}

/// What a successful request returned.
struct Answer {
    code: u16,
    body: Vec<u8>,
}

/// A request that can be sent again.
struct Prepared {
    method: Method,
    uri: String,
    /// What the request does, for the request metrics: `list apps/v1 deployments`.
    endpoint: String,
    headers: HeaderMap,
    body: Vec<u8>,
    /// A request on Secrets: an error answer's text is masked where it is read.
    secret: bool,
}

impl Prepared {
    fn from_http(req: http::Request<Vec<u8>>, verb: &str, res: &ApiResource) -> Prepared {
        let (parts, body) = req.into_parts();
        Prepared {
            method: parts.method,
            uri: parts.uri.to_string(),
            endpoint: format!("{verb} {} {}", res.api_version(), res.plural),
            headers: parts.headers,
            body,
            secret: res.group.is_empty() && res.kind == "Secret",
        }
    }

    fn get(uri: String) -> Prepared {
        Prepared {
            method: Method::GET,
            uri,
            endpoint: "discovery".to_string(),
            headers: HeaderMap::new(),
            body: Vec::new(),
            secret: false,
        }
    }

    fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or(&self.uri)
    }

    fn build(&self) -> Result<http::Request<Body>, KubeError> {
        let mut b = http::Request::builder()
            .method(self.method.clone())
            .uri(self.uri.as_str());
        if let Some(h) = b.headers_mut() {
            h.extend(self.headers.clone());
            h.entry(header::ACCEPT)
                .or_insert(http::HeaderValue::from_static("application/json"));
        }
        b.body(Body::from(self.body.clone()))
            .map_err(|e| KubeError::Request {
                path: self.path().to_string(),
                message: e.to_string(),
            })
    }
}

/// Why one attempt failed, and whether to try again.
enum AttemptError {
    Retry {
        after: Option<Duration>,
        last: KubeError,
    },
    Fatal(KubeError),
}

impl Kube {
    /// Builds a client from the target's settings: an explicit kubeconfig (and context), the
    /// in-cluster service account, or the usual inference (`$KUBECONFIG`, `~/.kube/config`,
    /// in-cluster). No request is sent yet.
    pub async fn connect(src: &KubeSource) -> Result<Kube, KubeError> {
        // kube needs a process-wide rustls provider when more than one backend is compiled in;
        // the binary installs one too, this covers library callers (an error = already set).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let options = kube::config::KubeConfigOptions {
            context: src.context.clone(),
            ..Default::default()
        };
        let mut config = if src.in_cluster {
            kube::Config::incluster().map_err(KubeError::InCluster)?
        } else if let Some(path) = &src.kubeconfig {
            let kc =
                kube::config::Kubeconfig::read_from(path).map_err(|e| KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    source: e,
                })?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    source: e,
                })?
        } else if src.context.is_some() {
            kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| KubeError::Kubeconfig {
                    path: "$KUBECONFIG or ~/.kube/config".to_string(),
                    source: e,
                })?
        } else {
            kube::Config::infer().await.map_err(KubeError::Infer)?
        };
        // Retries are ours (bounded, jittered, honouring Retry-After); kube's own default
        // retries up to 15 times and would multiply ours.
        config.default_retry = false;
        config.read_timeout = Some(src.timeout);
        config.connect_timeout = Some(src.timeout.min(Duration::from_secs(10)));
        config.write_timeout = Some(src.timeout);
        config.reset_reader_on_write = true;
        let cluster_url = config.cluster_url.to_string();
        // Discovery is cached per API server and credentials source.
        let cache_key = format!(
            "{cluster_url}|{}|{}|{}",
            src.kubeconfig
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            src.context.as_deref().unwrap_or_default(),
            src.in_cluster
        );
        let mut watch_config = config.clone();
        watch_config.read_timeout = Some(WATCH_READ_TIMEOUT);
        let watch_client = kube::Client::try_from(watch_config).map_err(KubeError::Client)?;
        let client = kube::Client::try_from(config).map_err(KubeError::Client)?;
        Ok(Kube {
            client,
            watch_client,
            cluster_url,
            cache_key,
            settings: src.clone(),
        })
    }

    /// Asks the API server for its API groups (fresh, with the usual retries): `Ok` when the
    /// cluster answers.
    pub async fn probe(&self) -> Result<(), KubeError> {
        self.groups(true).await.map(|_| ())
    }

    /// The underlying kube client (for the Lease).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A client for watch streams: the same credentials, a read timeout longer than a watch's
    /// server-side timeout.
    pub fn watch_client(&self) -> kube::Client {
        self.watch_client.clone()
    }

    /// The API server URL.
    pub fn cluster_url(&self) -> &str {
        &self.cluster_url
    }

    /// Sends a request with the per-request timeout and bounded retries.
    async fn send(&self, req: &Prepared) -> Result<Answer, KubeError> {
        let attempts = self.settings.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(req, attempt).await {
                Ok(a) => return Ok(a),
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Retry { after, last }) => {
                    if attempt >= attempts {
                        return Err(last);
                    }
                    let delay = match after {
                        Some(d) => d.min(MAX_RETRY_AFTER),
                        None => backoff(self.settings.backoff, attempt),
                    };
                    debug!(
                        method = %req.method,
                        path = req.path(),
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        error = %last,
                        "retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn attempt(&self, req: &Prepared, attempt: u32) -> Result<Answer, AttemptError> {
        crate::metrics::record_api_request("kubernetes", &req.endpoint);
        let method = req.method.to_string();
        let path = req.path().to_string();
        let request = req.build().map_err(AttemptError::Fatal)?;
        let exchange = async {
            let res = self.client.send(request).await?;
            let code = res.status();
            let retry_after = res
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = res.into_body().collect_bytes().await?;
            Ok::<_, kube::Error>((code, retry_after, body.to_vec()))
        };
        let timeout = self.settings.timeout;
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(AttemptError::Retry {
                after: None,
                last: KubeError::Timeout {
                    method,
                    path,
                    timeout,
                    attempts: attempt,
                },
            }),
            Ok(Err(e)) => {
                let retryable = matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_));
                let err = KubeError::Transport {
                    method,
                    path,
                    attempts: attempt,
                    source: e,
                };
                if retryable {
                    Err(AttemptError::Retry {
                        after: None,
                        last: err,
                    })
                } else {
                    Err(AttemptError::Fatal(err))
                }
            }
            Ok(Ok((code, retry_after, body))) => {
                if code.is_success() {
                    return Ok(Answer {
                        code: code.as_u16(),
                        body,
                    });
                }
                let err = api_error(&method, &path, code, &body, attempt, req.secret);
                let transient = code == StatusCode::TOO_MANY_REQUESTS || code.is_server_error();
                if transient && err.rejection().is_none() {
                    Err(AttemptError::Retry {
                        after: retry_after,
                        last: err,
                    })
                } else {
                    Err(AttemptError::Fatal(err))
                }
            }
        }
    }

    async fn send_json(&self, req: &Prepared) -> Result<(u16, Value), KubeError> {
        let answer = self.send(req).await?;
        let value = serde_json::from_slice(&answer.body).map_err(|e| KubeError::Decode {
            method: req.method.to_string(),
            path: req.path().to_string(),
            source: e,
        })?;
        Ok((answer.code, value))
    }

    async fn get_typed<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, KubeError> {
        let req = Prepared::get(path.to_string());
        let answer = self.send(&req).await?;
        serde_json::from_slice(&answer.body).map_err(|e| KubeError::Decode {
            method: "GET".into(),
            path: path.to_string(),
            source: e,
        })
    }

    /// Finds the served resource for a kind: the desired API version when the server serves it,
    /// else the group's preferred version. `Ok(None)` when the server does not serve the kind.
    /// With `refresh_on_miss`, a kind missing from a cached answer triggers one fresh discovery
    /// (a CRD created earlier in the run).
    pub async fn resolve(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        refresh_on_miss: bool,
    ) -> Result<Option<ApiResource>, KubeError> {
        if let Some(found) = self.resolve_once(group, version, kind, false).await? {
            return Ok(Some(found));
        }
        if refresh_on_miss {
            return self.resolve_once(group, version, kind, true).await;
        }
        Ok(None)
    }

    async fn resolve_once(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        fresh: bool,
    ) -> Result<Option<ApiResource>, KubeError> {
        let gv = if group.is_empty() {
            if version.is_empty() { "v1" } else { version }.to_string()
        } else {
            let groups = self.groups(fresh).await?;
            let Some(g) = groups.iter().find(|g| g.name == group) else {
                return Ok(None);
            };
            let v = if g.versions.iter().any(|v| v == version) {
                version.to_string()
            } else {
                g.preferred.clone()
            };
            format!("{group}/{v}")
        };
        let resources = self.resources(&gv, fresh).await?;
        Ok(resources.iter().find(|r| r.kind == kind).cloned())
    }

    async fn groups(&self, fresh: bool) -> Result<Arc<Vec<GroupInfo>>, KubeError> {
        if !fresh {
            if let Some(g) = cache_get(&self.cache_key, |c| c.groups.clone()) {
                return Ok(g);
            }
        }
        let list: APIGroupList = self.get_typed("/apis").await?;
        let groups: Vec<GroupInfo> = list
            .groups
            .into_iter()
            .map(|g| GroupInfo {
                preferred: g
                    .preferred_version
                    .map(|p| p.version)
                    .or_else(|| g.versions.first().map(|v| v.version.clone()))
                    .unwrap_or_default(),
                versions: g.versions.into_iter().map(|v| v.version).collect(),
                name: g.name,
            })
            .collect();
        let groups = Arc::new(groups);
        cache_put(&self.cache_key, |c| {
            c.groups = Some((Instant::now(), Arc::clone(&groups)))
        });
        Ok(groups)
    }

    async fn resources(&self, gv: &str, fresh: bool) -> Result<Arc<Vec<ApiResource>>, KubeError> {
        if !fresh {
            if let Some(r) = cache_get(&self.cache_key, |c| c.resources.get(gv).cloned()) {
                return Ok(r);
            }
        }
        let path = if gv.contains('/') {
            format!("/apis/{gv}")
        } else {
            format!("/api/{gv}")
        };
        let list: APIResourceList = match self.get_typed(&path).await {
            Ok(l) => l,
            // A version the server does not serve: no kinds, not an error.
            Err(e) if e.code() == Some(404) => APIResourceList {
                group_version: gv.to_string(),
                resources: Vec::new(),
            },
            Err(e) => return Err(e),
        };
        let (group, version) = split_api_version(gv);
        let resources: Vec<ApiResource> = list
            .resources
            .into_iter()
            .filter(|r| !r.name.contains('/'))
            .map(|r| ApiResource {
                group: group.clone(),
                version: version.clone(),
                kind: r.kind,
                plural: r.name,
                namespaced: r.namespaced,
                verbs: r.verbs,
            })
            .collect();
        let resources = Arc::new(resources);
        let key = gv.to_string();
        cache_put(&self.cache_key, |c| {
            c.resources
                .insert(key, (Instant::now(), Arc::clone(&resources)));
        });
        Ok(resources)
    }

    /// Every object of one scope, page by page. Items get their `apiVersion` and `kind` back
    /// (the API leaves them out of list items). Returns the objects and the pages fetched.
    pub async fn list(
        &self,
        res: &ApiResource,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<(Vec<Value>, usize), KubeError> {
        let mut items = Vec::new();
        let pages = self
            .list_pages(res, namespace, label_selector, None, |event| {
                match event {
                    ListEvent::Page(page) => items.extend(page.items),
                    // The pass given up on is replaced by the new one.
                    ListEvent::Restart => items.clear(),
                }
                std::future::ready(())
            })
            .await?;
        Ok((items, pages))
    }

    /// [`Kube::list`], each page handed to `on_page` as soon as it is parsed (and awaited, so a
    /// bounded consumer holds the LIST back), instead of collected. With `slots`, a page's
    /// answer is parsed only once a slot is free, and the page holds its slot until it is
    /// dropped: LISTs sharing the slots hold at most that many parsed pages between them (an
    /// answer waiting for a slot is its bytes, a fifth of its parsed size or less). When the
    /// continue token expires (410 `Expired`) the LIST starts over once from the first page:
    /// [`ListEvent::Restart`] comes first, and the new pass's objects replace the old ones.
    /// Returns the pages fetched (those of a pass given up on included).
    pub async fn list_pages<F, Fut>(
        &self,
        res: &ApiResource,
        namespace: Option<&str>,
        label_selector: Option<&str>,
        slots: Option<&Arc<Semaphore>>,
        mut on_page: F,
    ) -> Result<usize, KubeError>
    where
        F: FnMut(ListEvent) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let path = res.collection_path(namespace);
        let mut restarted = false;
        // Pages fetched, those of a pass given up on included.
        let mut fetched = 0;
        'restart: loop {
            let mut token: Option<String> = None;
            let mut seen_tokens = HashSet::new();
            let mut pages = 0;
            loop {
                let lp = ListParams {
                    label_selector: label_selector.map(str::to_string),
                    limit: Some(self.settings.page_size),
                    continue_token: token.clone(),
                    ..ListParams::default()
                };
                let req = kube::core::Request::new(path.as_str())
                    .list(&lp)
                    .map_err(|e| KubeError::Request {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                let prepared = Prepared::from_http(req, "list", res);
                pages += 1;
                fetched += 1;
                let answer = match self.send(&prepared).await {
                    Ok(p) => p,
                    // The continue token expired (410 Expired). The server offers a token for
                    // an inconsistent remainder; start over once instead, from a fresh
                    // snapshot, rather than mix two snapshots.
                    Err(e) if e.code() == Some(410) && token.is_some() => {
                        if restarted {
                            return Err(KubeError::ListExpired {
                                path,
                                source: Box::new(e),
                            });
                        }
                        warn!(path = %path, pages, "continue token expired; listing again from the first page");
                        restarted = true;
                        on_page(ListEvent::Restart).await;
                        continue 'restart;
                    }
                    Err(e) => return Err(e),
                };
                let slot = match slots {
                    // A closed semaphore (never closed here) leaves the page unbounded.
                    Some(slots) => Arc::clone(slots).acquire_owned().await.ok(),
                    None => None,
                };
                let mut page: Value =
                    serde_json::from_slice(&answer.body).map_err(|e| KubeError::Decode {
                        method: prepared.method.to_string(),
                        path: prepared.path().to_string(),
                        source: e,
                    })?;
                drop(answer);
                let next = str_at(&page, "/metadata/continue").to_string();
                let mut items = match page.get_mut("items").map(Value::take) {
                    Some(Value::Array(list)) => list,
                    _ => Vec::new(),
                };
                for item in &mut items {
                    if let Some(obj) = item.as_object_mut() {
                        obj.entry("apiVersion")
                            .or_insert_with(|| Value::String(res.api_version()));
                        obj.entry("kind")
                            .or_insert_with(|| Value::String(res.kind.clone()));
                    }
                }
                drop(page);
                let page = ListPage { items, _slot: slot };
                if next.is_empty() {
                    on_page(ListEvent::Page(page)).await;
                    return Ok(fetched);
                }
                if !seen_tokens.insert(next.clone()) || pages >= MAX_PAGES {
                    return Err(KubeError::EndlessList { path, pages });
                }
                on_page(ListEvent::Page(page)).await;
                token = Some(next);
            }
        }
    }

    fn object_request(res: &ApiResource, namespace: Option<&str>) -> kube::core::Request {
        kube::core::Request::new(res.collection_path(namespace))
    }

    /// Reads one object; `Ok(None)` when it does not exist.
    pub async fn get(
        &self,
        res: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, KubeError> {
        let path = res.collection_path(namespace);
        let req = Self::object_request(res, namespace)
            .get(name, &GetParams::default())
            .map_err(|e| KubeError::Request {
                path,
                message: e.to_string(),
            })?;
        match self.send_json(&Prepared::from_http(req, "get", res)).await {
            Ok((_, v)) => Ok(Some(v)),
            Err(e) if e.code() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Server-side apply (`PATCH`, `application/apply-patch+yaml`) of `object` with field
    /// manager `driftwarden`; `force` takes fields other managers own, `dry_run` sends
    /// `dryRun=All`. Returns the HTTP status (201 = created) and the object the server returned.
    pub async fn apply(
        &self,
        res: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
        force: bool,
        dry_run: bool,
    ) -> Result<(u16, Value), KubeError> {
        let mut pp = PatchParams::apply(FIELD_MANAGER);
        if force {
            pp = pp.force();
        }
        if dry_run {
            pp = pp.dry_run();
        }
        let path = res.collection_path(namespace);
        let req = Self::object_request(res, namespace)
            .patch(name, &pp, &Patch::Apply(object))
            .map_err(|e| KubeError::Request {
                path,
                message: e.to_string(),
            })?;
        self.send_json(&Prepared::from_http(req, "patch", res))
            .await
    }

    /// Deletes one object (background propagation). `Ok(None)` when it was already gone;
    /// otherwise what the server returned (a `Status`, or the object while finalizers run).
    pub async fn delete(
        &self,
        res: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        dry_run: bool,
    ) -> Result<Option<Value>, KubeError> {
        let mut dp = DeleteParams::background();
        if dry_run {
            dp = dp.dry_run();
        }
        let path = res.collection_path(namespace);
        let req = Self::object_request(res, namespace)
            .delete(name, &dp)
            .map_err(|e| KubeError::Request {
                path,
                message: e.to_string(),
            })?;
        let mut prepared = Prepared::from_http(req, "delete", res);
        if dry_run {
            // Also in the query, where every server version reads it.
            prepared.uri = format!("{}?dryRun=All", prepared.path());
        }
        match self.send_json(&prepared).await {
            Ok((_, v)) => Ok(Some(v)),
            Err(e) if e.code() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Builds [`KubeError::Api`] from an error response, reading its `metav1.Status` when present.
/// For a request on Secrets (`secret`) the server's text is masked ([`mask_for_secret`]).
fn api_error(
    method: &str,
    path: &str,
    code: StatusCode,
    body: &[u8],
    attempts: u32,
    secret: bool,
) -> KubeError {
    let mut status: Option<kube::core::Status> = serde_json::from_slice(body).ok();
    let (reason, mut message) = match &status {
        Some(s) if !s.message.is_empty() || !s.reason.is_empty() => {
            (s.reason.clone(), s.message.clone())
        }
        _ => (
            code.canonical_reason().unwrap_or("").replace(' ', ""),
            String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(300)
                .collect(),
        ),
    };
    if secret {
        message = mask_for_secret(&message);
        if let Some(s) = status.as_mut() {
            s.message = message.clone();
            if let Some(details) = s.details.as_mut() {
                for cause in &mut details.causes {
                    cause.message = WITHHELD.to_string();
                }
            }
        }
    }
    KubeError::Api {
        method: method.to_string(),
        path: path.to_string(),
        code: code.as_u16(),
        reason,
        message,
        attempts,
        status: status.map(Box::new),
    }
}

/// The server's message about a Secret with every value it could quote removed. A typed patch
/// error keeps its object and field paths (names, not values) and only the
/// `field not declared in schema` detail; anything else becomes [`WITHHELD`]. The fields of a
/// 422 stay in its causes.
fn mask_for_secret(message: &str) -> String {
    let Some(rest) = message.strip_prefix(TYPED_PATCH_ERROR) else {
        return WITHHELD.to_string();
    };
    // ` (<namespace>/<name>; <group>/<version>, Kind=<Kind>): <errors>`
    let Some((object, errors)) = rest.split_once("): ") else {
        return WITHHELD.to_string();
    };
    let errors: Vec<String> = errors
        .trim_start_matches("errors:")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| match line.split_once(": ") {
            Some((field, "field not declared in schema")) => {
                format!("{field}: field not declared in schema")
            }
            Some((field, _)) if field.starts_with('.') && !field.contains(['=', '"']) => {
                format!("{field}: (detail withheld: Secret)")
            }
            _ => "(detail withheld: Secret)".to_string(),
        })
        .collect();
    format!("{TYPED_PATCH_ERROR}{object}): {}", errors.join("; "))
}

/// Exponential backoff with jitter: `base × 2^(attempt-1)`, capped, then a random point in its
/// upper half so that many clients retrying at once spread out.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(MAX_BACKOFF);
    let half = capped / 2;
    let jitter_ms = match half.as_millis() as u64 {
        0 => 0,
        n => random_u64() % (n + 1),
    };
    half + Duration::from_millis(jitter_ms)
}

fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// One API group as `/apis` lists it.
#[derive(Debug, Clone)]
struct GroupInfo {
    name: String,
    versions: Vec<String>,
    preferred: String,
}

/// Discovery answers for one API server.
#[derive(Default)]
struct Catalog {
    groups: Option<(Instant, Arc<Vec<GroupInfo>>)>,
    resources: HashMap<String, (Instant, Arc<Vec<ApiResource>>)>,
}

trait Fresh {
    type Out;
    fn fresh(&self) -> Option<Self::Out>;
}

impl<T: Clone> Fresh for Option<(Instant, T)> {
    type Out = T;
    fn fresh(&self) -> Option<T> {
        self.as_ref()
            .filter(|(at, _)| at.elapsed() < DISCOVERY_TTL)
            .map(|(_, v)| v.clone())
    }
}

fn catalogs() -> &'static Mutex<HashMap<String, Catalog>> {
    static CATALOGS: OnceLock<Mutex<HashMap<String, Catalog>>> = OnceLock::new();
    CATALOGS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn cache_get<T: Clone>(
    cluster: &str,
    pick: impl FnOnce(&Catalog) -> Option<(Instant, T)>,
) -> Option<T> {
    let map = catalogs().lock().unwrap_or_else(|e| e.into_inner());
    map.get(cluster).and_then(|c| pick(c).fresh())
}

fn cache_put(cluster: &str, put: impl FnOnce(&mut Catalog)) {
    let mut map = catalogs().lock().unwrap_or_else(|e| e.into_inner());
    put(map.entry(cluster.to_string()).or_default());
}

/// One page of a LIST: its objects, `apiVersion` and `kind` restored.
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<Value>,
    /// Held until the page is dropped ([`Kube::list_pages`]'s `slots`).
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// One step of a LIST read page by page ([`Kube::list_pages`]).
#[derive(Debug)]
pub enum ListEvent {
    /// A page's objects.
    Page(ListPage),
    /// The continue token expired: the LIST starts over from the first page, and the objects
    /// of the new pass replace those handed over before.
    Restart,
}

/// What to LIST for one desired kind.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WantedKind {
    group: String,
    version: String,
    kind: String,
    namespaces: BTreeSet<String>,
}

/// One LIST to send: a resource in a namespace (or across all), maybe filtered by label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListScope {
    pub resource: ApiResource,
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    /// An unfiltered LIST: every object of the scope is in the answer, so a desired object
    /// absent from it is really missing.
    pub authoritative: bool,
}

/// The kinds desired names, with the namespaces of their objects. Objects without
/// `apiVersion`/`kind` cannot be listed and are skipped (the loader rejects them anyway).
fn wanted_kinds(desired: &[Value], default_namespace: &str) -> Vec<WantedKind> {
    let mut by_kind: BTreeMap<(String, String), WantedKind> = BTreeMap::new();
    for obj in desired {
        let (group, version) = split_api_version(str_at(obj, "/apiVersion"));
        let kind = str_at(obj, "/kind");
        if kind.is_empty() || version.is_empty() {
            continue;
        }
        let ns = match str_at(obj, "/metadata/namespace") {
            "" => default_namespace,
            ns => ns,
        };
        let w = by_kind
            .entry((group.clone(), kind.to_string()))
            .or_insert_with(|| WantedKind {
                group,
                version,
                kind: kind.to_string(),
                namespaces: BTreeSet::new(),
            });
        w.namespaces.insert(ns.to_string());
    }
    by_kind.into_values().collect()
}

/// The LISTs for one resolved kind: one per desired namespace, plus the Unmanaged scope. With
/// tracking and no namespace restriction, Unmanaged objects may be anywhere: one LIST across all
/// namespaces, filtered by the tracking label when tracking is by label alone (annotations
/// cannot be selected), and unfiltered otherwise (it then replaces the per-namespace LISTs).
pub fn list_scopes(
    resource: &ApiResource,
    desired_namespaces: &BTreeSet<String>,
    tracking: Option<&Tracking>,
    unmanaged_namespaces: &[String],
) -> Vec<ListScope> {
    let scope = |namespace: Option<String>, label_selector: Option<String>| ListScope {
        resource: resource.clone(),
        authoritative: label_selector.is_none(),
        namespace,
        label_selector,
    };
    if !resource.namespaced {
        return vec![scope(None, None)];
    }
    let selector = tracking.and_then(|t| match (&t.label, &t.annotation) {
        (Some(label), None) => Some(label.clone()),
        _ => None,
    });
    let mut out = Vec::new();
    match tracking {
        Some(_) if unmanaged_namespaces.is_empty() => {
            if selector.is_none() {
                return vec![scope(None, None)];
            }
            out.extend(
                desired_namespaces
                    .iter()
                    .map(|ns| scope(Some(ns.clone()), None)),
            );
            out.push(scope(None, selector));
        }
        Some(_) => {
            out.extend(
                desired_namespaces
                    .iter()
                    .map(|ns| scope(Some(ns.clone()), None)),
            );
            for ns in unmanaged_namespaces {
                if !desired_namespaces.contains(ns) {
                    out.push(scope(Some(ns.clone()), selector.clone()));
                }
            }
        }
        None => out.extend(
            desired_namespaces
                .iter()
                .map(|ns| scope(Some(ns.clone()), None)),
        ),
    }
    out
}

/// Reads the live objects a target's desired state names, from the cluster `src` points at.
///
/// `Err` only when no client can be built or discovery of the API groups fails entirely (the
/// cluster is unreachable): the target's live side then failed as a whole. Any later failure
/// (one group's discovery, one LIST) is recorded in [`KubeRead::errors`] and
/// [`KubeRead::unread`], and the rest is still read.
pub async fn read(src: &KubeSource, req: &ReadRequest<'_>) -> Result<KubeRead, KubeError> {
    let kube = Kube::connect(src).await?;
    read_with(&kube, req).await
}

/// [`read`], each object handed to `sink` instead of collected ([`read_with_each`]).
pub async fn read_each(
    src: &KubeSource,
    req: &ReadRequest<'_>,
    sink: &mut (dyn FnMut(RawObject) + Send),
) -> Result<KubeRead, KubeError> {
    let kube = Kube::connect(src).await?;
    read_with_each(&kube, req, sink).await
}

/// The scopes a target's live read covers, from discovery of the kinds desired names.
#[derive(Debug, Default)]
pub struct PlannedScopes {
    /// Kinds desired names.
    pub kinds: usize,
    /// One LIST (or watch) each.
    pub scopes: Vec<ListScope>,
    /// Kinds that cannot be listed and groups whose discovery failed.
    pub errors: Vec<String>,
    /// The scopes those failures leave unread.
    pub unread: Vec<UnreadScope>,
}

/// Discovery for a target's live read: the [`ListScope`]s of the kinds desired names (see
/// [`list_scopes`]). `Err` when the API groups cannot be discovered at all (the cluster is
/// unreachable); a group or kind that fails is recorded and the rest planned.
pub async fn plan_scopes(kube: &Kube, req: &ReadRequest<'_>) -> Result<PlannedScopes, KubeError> {
    let wanted = wanted_kinds(req.desired, req.default_namespace);
    // The first request: when it fails (after its retries) the cluster is unreachable and the
    // whole read fails.
    kube.groups(false).await?;
    let mut out = PlannedScopes {
        kinds: wanted.len(),
        ..PlannedScopes::default()
    };
    let scopes = &mut out.scopes;
    let mut failed_groups: BTreeMap<String, String> = BTreeMap::new();
    for w in &wanted {
        if let Some(msg) = failed_groups.get(&w.group) {
            debug!(group = %w.group, kind = %w.kind, error = %msg, "group discovery failed earlier");
            continue;
        }
        match kube.resolve(&w.group, &w.version, &w.kind, false).await {
            Ok(Some(res)) => {
                if !res.verbs.is_empty() && !res.verbs.iter().any(|v| v == "list") {
                    out.errors.push(format!(
                        "{} ({}) cannot be listed (verbs: {}); its objects were not compared",
                        w.kind,
                        res.api_version(),
                        res.verbs.join(", ")
                    ));
                    out.unread.push(UnreadScope {
                        group: w.group.clone(),
                        kind: Some(w.kind.clone()),
                        namespace: None,
                    });
                    continue;
                }
                scopes.extend(list_scopes(
                    &res,
                    &w.namespaces,
                    req.tracking,
                    req.unmanaged_namespaces,
                ));
            }
            Ok(None) => {
                // Not served (a CRD not installed yet): its objects cannot exist, and are
                // reported Missing, which is the truth.
                warn!(group = %w.group, kind = %w.kind, "the API server does not serve this kind");
            }
            Err(e) => {
                let msg = error_chain(&e);
                out.errors.push(format!(
                    "discovery of API group `{}` failed: {msg}; its objects were not compared",
                    display_group(&w.group)
                ));
                out.unread.push(UnreadScope {
                    group: w.group.clone(),
                    kind: None,
                    namespace: None,
                });
                failed_groups.insert(w.group.clone(), msg);
            }
        }
    }

    Ok(out)
}

/// [`read`] with an existing client.
pub async fn read_with(kube: &Kube, req: &ReadRequest<'_>) -> Result<KubeRead, KubeError> {
    let mut objects = Vec::new();
    let mut out = read_with_each(kube, req, &mut |o| objects.push(o)).await?;
    out.objects = objects;
    Ok(out)
}

/// Parsed LIST pages a read holds at once ([`read_with_each`]): the one being compared and the
/// next one, parsed meanwhile.
const PARSED_PAGES: usize = 2;

/// What a LIST task reports to the reader: a page (or a restart) of scope `.0`, then the end.
enum ScopeMessage {
    Event(usize, ListEvent),
    /// The LIST is over: the pages it took, or why it failed.
    Done(usize, Result<usize, KubeError>),
}

/// [`read_with`], each object handed to `sink` (and `objects` left empty) as soon as its LIST
/// page is parsed: up to `concurrency` LISTs run at once, but only [`PARSED_PAGES`] of their
/// pages are parsed objects at a time (the others wait as the bytes the server sent), so a
/// caller that compares each object as it arrives holds two pages' objects, not a LIST and not
/// the cluster. An object seen by two LISTs
/// (overlapping scopes) is handed over once; a LIST that starts over after its continue token
/// expired hands its objects over again, and the later copy replaces the earlier one. A LIST
/// that fails part-way has had its first pages compared: its scope is still recorded unread,
/// so none of its desired objects is reported `Missing` ([`drop_unread_missing`]).
pub async fn read_with_each(
    kube: &Kube,
    req: &ReadRequest<'_>,
    sink: &mut (dyn FnMut(RawObject) + Send),
) -> Result<KubeRead, KubeError> {
    let started = Instant::now();
    let mut out = KubeRead::default();
    let mut objects = 0usize;
    let planned = plan_scopes(kube, req).await?;
    let kinds = planned.kinds;
    let scopes = planned.scopes;
    out.errors = planned.errors;
    out.unread = planned.unread;
    let concurrency = kube.settings.concurrency.max(1);
    let sem = Arc::new(Semaphore::new(concurrency));
    // Parsed pages in memory at once: the one being compared and the next one.
    let slots = Arc::new(Semaphore::new(PARSED_PAGES));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ScopeMessage>(concurrency);
    let mut tasks = JoinSet::new();
    for (i, scope) in scopes.iter().cloned().enumerate() {
        let kube = kube.clone();
        let sem = Arc::clone(&sem);
        let slots = Arc::clone(&slots);
        let tx = tx.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let res = kube
                .list_pages(
                    &scope.resource,
                    scope.namespace.as_deref(),
                    scope.label_selector.as_deref(),
                    Some(&slots),
                    |event| {
                        let tx = tx.clone();
                        async move {
                            // The reader is gone only when the read itself was dropped.
                            let _ = tx.send(ScopeMessage::Event(i, event)).await;
                        }
                    },
                )
                .await;
            let _ = tx.send(ScopeMessage::Done(i, res)).await;
        });
    }
    // The channel closes once every task has ended.
    drop(tx);
    let mut done = vec![false; scopes.len()];
    // Each object handed over, by identity, with the scope that handed it over.
    let mut seen: HashMap<String, usize> = HashMap::new();
    while let Some(message) = rx.recv().await {
        match message {
            ScopeMessage::Event(i, ListEvent::Page(page)) => {
                let Some(scope) = scopes.get(i) else { continue };
                let path = scope.resource.collection_path(scope.namespace.as_deref());
                let ListPage { items, _slot } = page;
                for item in items {
                    let key = object_key(&item);
                    match seen.get(&key) {
                        // Another LIST handed it over already.
                        Some(&first) if first != i => continue,
                        // A LIST that started over: the later copy replaces the earlier one.
                        Some(_) => {}
                        None => {
                            seen.insert(key, i);
                            objects += 1;
                        }
                    }
                    sink(RawObject {
                        value: item,
                        file: path.clone(),
                        line: 0,
                    });
                }
            }
            ScopeMessage::Event(i, ListEvent::Restart) => {
                debug!(
                    scope = i,
                    "LIST started over; its objects are handed over again"
                );
            }
            ScopeMessage::Done(i, res) => {
                if let (Some(scope), Some(d)) = (scopes.get(i), done.get_mut(i)) {
                    *d = true;
                    record_scope(&mut out, scope, res);
                }
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            out.errors.push(format!("a LIST task failed: {e}"));
        }
    }
    // A scope whose task ended without a result (it failed) was never read whole.
    for (scope, _) in scopes.iter().zip(&done).filter(|(_, d)| !**d) {
        out.unread.push(UnreadScope {
            group: scope.resource.group.clone(),
            kind: Some(scope.resource.kind.clone()),
            namespace: scope.namespace.clone(),
        });
    }
    out.unread.sort();
    out.unread.dedup();
    info!(
        cluster = %kube.cluster_url,
        kinds,
        scopes = scopes.len(),
        lists = out.list_requests,
        objects,
        errors = out.errors.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "cluster read"
    );
    Ok(out)
}

/// Records how a scope's LIST ended: its requests, or its failure and what the failure leaves
/// unread.
fn record_scope(out: &mut KubeRead, scope: &ListScope, res: Result<usize, KubeError>) {
    match res {
        Ok(pages) => out.list_requests += pages,
        Err(e) => {
            let where_ = match &scope.namespace {
                Some(ns) => format!("in namespace {ns}"),
                None if scope.resource.namespaced => "in any namespace".to_string(),
                None => "(cluster-scoped)".to_string(),
            };
            let consequence = if scope.authoritative {
                out.unread.push(UnreadScope {
                    group: scope.resource.group.clone(),
                    kind: Some(scope.resource.kind.clone()),
                    namespace: scope.namespace.clone(),
                });
                "its desired objects were not compared"
            } else {
                "Unmanaged objects there were not searched"
            };
            out.errors.push(format!(
                "LIST {} {} failed: {}; {consequence}",
                scope.resource.kind,
                where_,
                error_chain(&e)
            ));
        }
    }
}

fn display_group(group: &str) -> &str {
    if group.is_empty() { "core" } else { group }
}

/// A live object's identity for de-duplication across overlapping LISTs.
fn object_key(obj: &Value) -> String {
    match str_at(obj, "/metadata/uid") {
        "" => format!(
            "{}/{}/{}/{}",
            str_at(obj, "/apiVersion"),
            str_at(obj, "/kind"),
            str_at(obj, "/metadata/namespace"),
            str_at(obj, "/metadata/name")
        ),
        uid => uid.to_string(),
    }
}

/// The error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn res(kind: &str, namespaced: bool) -> ApiResource {
        ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            kind: kind.into(),
            plural: format!("{}s", kind.to_lowercase()),
            namespaced,
            verbs: vec!["list".into()],
        }
    }

    #[test]
    fn wanted_kinds_group_namespaces() {
        let desired = vec![
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "namespace": "x"}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "b"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "x"}}),
        ];
        let w = wanted_kinds(&desired, "shop");
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].kind, "ConfigMap");
        assert_eq!(
            w[1].namespaces.iter().cloned().collect::<Vec<_>>(),
            ["shop", "x"]
        );
    }

    #[test]
    fn scopes_follow_tracking() {
        let ns: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        let dep = res("Deployment", true);
        let none = list_scopes(&dep, &ns, None, &[]);
        assert_eq!(none.len(), 2);
        assert!(none.iter().all(|s| s.authoritative));

        let by_label = Tracking {
            label: Some("owner=dw".into()),
            annotation: None,
        };
        let s = list_scopes(&dep, &ns, Some(&by_label), &[]);
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].namespace, None);
        assert_eq!(s[2].label_selector.as_deref(), Some("owner=dw"));
        assert!(!s[2].authoritative);

        let by_annotation = Tracking {
            label: None,
            annotation: Some("dw".into()),
        };
        let s = list_scopes(&dep, &ns, Some(&by_annotation), &[]);
        assert_eq!(s.len(), 1);
        assert!(s[0].authoritative && s[0].namespace.is_none());

        let s = list_scopes(&dep, &ns, Some(&by_label), &["b".into(), "c".into()]);
        let shown: Vec<_> = s
            .iter()
            .map(|s| (s.namespace.clone(), s.label_selector.clone()))
            .collect();
        assert_eq!(
            shown,
            [
                (Some("a".into()), None),
                (Some("b".into()), None),
                (Some("c".into()), Some("owner=dw".into()))
            ]
        );

        let cluster = list_scopes(&res("ClusterThing", false), &ns, Some(&by_label), &[]);
        assert_eq!(cluster.len(), 1);
        assert!(cluster[0].authoritative);
    }

    #[test]
    fn paths_and_unread_coverage() {
        let dep = res("Deployment", true);
        assert_eq!(
            dep.collection_path(Some("shop")),
            "/apis/apps/v1/namespaces/shop/deployments"
        );
        assert_eq!(dep.collection_path(None), "/apis/apps/v1/deployments");
        let u = UnreadScope {
            group: "apps".into(),
            kind: Some("Deployment".into()),
            namespace: Some("shop".into()),
        };
        let id = |ns: &str| ResourceId::Kubernetes {
            cluster: "c".into(),
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            namespace: Some(ns.into()),
            name: "web".into(),
        };
        assert!(u.covers(&id("shop")));
        assert!(!u.covers(&id("other")));
    }

    /// The golden answers (fixtures/golden/protocol): a 500 for an undeclared field is a schema
    /// rejection, a 422 `Invalid` a validation one; other 5xx stay transient.
    #[test]
    fn rejections_are_told_from_transient_failures() {
        let typed = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"failed to create typed patch object (shop/checkout; apps/v1, Kind=Deployment): .spec.replica: field not declared in schema","code":500}"#;
        let e = api_error(
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/checkout",
            StatusCode::INTERNAL_SERVER_ERROR,
            typed,
            1,
            false,
        );
        assert_eq!(e.rejection(), Some(Rejection::Schema));
        assert_eq!(
            e.to_string(),
            "PATCH /apis/apps/v1/namespaces/shop/deployments/checkout: HTTP 500: failed to create typed patch object (shop/checkout; apps/v1, Kind=Deployment): .spec.replica: field not declared in schema"
        );
        let internal = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Internal error occurred: etcdserver: request timed out","reason":"InternalError","code":500}"#;
        let e = api_error(
            "PATCH",
            "/p",
            StatusCode::INTERNAL_SERVER_ERROR,
            internal,
            1,
            false,
        );
        assert_eq!(e.rejection(), None);
        let invalid = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Deployment.apps \"broken\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "reason": "Invalid", "details": {"name": "broken", "group": "apps", "kind": "Deployment",
                "causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: -1: must be greater than or equal to 0", "field": "spec.replicas"}]},
            "code": 422})
        .to_string();
        let e = api_error(
            "PATCH",
            "/p",
            StatusCode::UNPROCESSABLE_ENTITY,
            invalid.as_bytes(),
            1,
            false,
        );
        assert_eq!(e.rejection(), Some(Rejection::Invalid));
        assert_eq!(e.code(), Some(422));
    }

    /// An error answer about a Secret keeps no value the server quoted: a 422's message and
    /// cause messages are withheld (the fields stay), a typed patch error keeps its object and
    /// field paths and only the `field not declared in schema` detail.
    #[test]
    fn secret_error_answers_are_masked_where_they_are_read() {
        let canary = "czNjcjN0LWNhbmFyeQ==";
        let invalid = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("Secret \"s\" is invalid: data[API_KEY]: Invalid value: \"{canary}\": denied"),
            "reason": "Invalid", "details": {"name": "s", "kind": "Secret",
                "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: \"{canary}\": denied"), "field": "data[API_KEY]"}]},
            "code": 422})
        .to_string();
        let e = api_error(
            "PATCH",
            "/api/v1/namespaces/a/secrets/s",
            StatusCode::UNPROCESSABLE_ENTITY,
            invalid.as_bytes(),
            1,
            true,
        );
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(canary), "{shown}");
        assert_eq!(e.rejection(), Some(Rejection::Invalid));
        let causes = &e.status().and_then(|s| s.details.as_ref()).unwrap().causes;
        assert_eq!(causes[0].field, "data[API_KEY]");
        assert_eq!(causes[0].message, WITHHELD);

        assert_eq!(
            mask_for_secret(
                "failed to create typed patch object (a/s; /v1, Kind=Secret): errors:\n  .strinData: field not declared in schema\n  .data.KEY: expected string, got &value.valueUnstructured{Value:12345}"
            ),
            "failed to create typed patch object (a/s; /v1, Kind=Secret): .strinData: field not declared in schema; .data.KEY: (detail withheld: Secret)"
        );
        assert_eq!(
            mask_for_secret("Internal error occurred: value 12345 refused"),
            WITHHELD
        );
        let e = api_error(
            "PATCH",
            "/p",
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"message":"failed to create typed patch object (a/s; /v1, Kind=Secret): .data.K: expected string, got 12345","code":500}"#,
            1,
            true,
        );
        assert_eq!(e.rejection(), Some(Rejection::Schema));
        assert!(!e.to_string().contains("12345"), "{e}");
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let base = Duration::from_millis(100);
        for attempt in 1..20 {
            let d = backoff(base, attempt);
            let cap = (base * (1 << (attempt - 1).min(16))).min(MAX_BACKOFF);
            assert!(d >= cap / 2 && d <= cap, "{attempt}: {d:?} vs {cap:?}");
        }
    }
}
