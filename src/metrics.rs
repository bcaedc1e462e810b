//! Prometheus metrics of a run, in the text exposition format (version 0.0.4), written to a file
//! (for node_exporter's textfile collector or a sidecar) or pushed to a Pushgateway.
//!
//! The figures are the report's summary (resources checked, drifts by class and kind, actions by
//! result, ignored fields, compliance), the run's duration and end time, and the API requests the
//! live readers and actuators sent, by endpoint (and result, where the caller knows it). Readers
//! count their requests with [`record_api_request`] or [`record_api_call`]; the counts live in a
//! process-wide registry, like a Prometheus client library's default registry, so no reader
//! needs a handle threaded through the pipeline.
//!
//! [`render`] is pure. [`push`] is the one function here that does IO: an HTTP/1.1 `PUT` of the
//! text to `<url>/metrics/job/<job>{/<label>/<value>}`, which replaces the group's previous
//! metrics (a CronJob run supersedes the last one). Only `http://` URLs are supported: a
//! Pushgateway is an in-cluster service; put a TLS-terminating proxy in front of a remote one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::model::Report;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a push may take, connect to last byte.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Every way a push fails.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("invalid Pushgateway URL `{url}`: {why}")]
    Url { url: String, why: &'static str },
    #[error("cannot reach the Pushgateway at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the Pushgateway at {addr} did not answer within {}s", PUSH_TIMEOUT.as_secs())]
    Timeout { addr: String },
    #[error("the Pushgateway answered {status}: {body}")]
    Status { status: String, body: String },
}

pub type Result<T, E = MetricsError> = std::result::Result<T, E>;

/// One series of API requests: who was called, what, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiRequest {
    /// `kubernetes`, `ec2`, `github`.
    pub provider: String,
    /// A verb and a resource type (`list apps/v1 deployments`) or an API action
    /// (`DescribeInstances`).
    pub endpoint: String,
    /// How the request ended (`ok`, an error code); empty when the caller counts requests as
    /// they are sent, before any answer (then the series has no `result` label).
    pub result: String,
}

/// API requests by provider, endpoint and result.
pub type ApiRequests = BTreeMap<ApiRequest, u64>;

static API_REQUESTS: Mutex<ApiRequests> = Mutex::new(BTreeMap::new());

/// Counts one API request as it is sent (no result). `endpoint` must have low cardinality: a verb
/// and a resource type, e.g. `list apps/v1 deployments` or `DescribeInstances`, never an object
/// name or a full URL.
pub fn record_api_request(provider: &str, endpoint: &str) {
    record_api_call(provider, endpoint, "");
}

/// Counts one API request with its result. `endpoint` as for [`record_api_request`]; `result`
/// must have low cardinality too: `ok`, an error code from the API's fixed set
/// (`RequestLimitExceeded`), or a kind of failure (`timeout`), never a message.
pub fn record_api_call(provider: &str, endpoint: &str, result: &str) {
    let key = ApiRequest {
        provider: provider.to_string(),
        endpoint: endpoint.to_string(),
        result: result.to_string(),
    };
    let mut map = API_REQUESTS.lock().unwrap_or_else(|e| e.into_inner());
    *map.entry(key).or_default() += 1;
}

/// The API requests counted so far in this process.
pub fn api_requests() -> ApiRequests {
    API_REQUESTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Notifications by receiver, event and result (`sent`, `failed`).
pub type Notifications = BTreeMap<(String, String, String), u64>;

static NOTIFICATIONS: Mutex<Notifications> = Mutex::new(BTreeMap::new());

/// Counts one notification once it was delivered (`sent`) or given up on (`failed`). `receiver`
/// is the configured name, `event` an event name (src/notify.rs): both of low cardinality.
pub fn record_notification(receiver: &str, event: &str, result: &str) {
    let key = (receiver.to_string(), event.to_string(), result.to_string());
    let mut map = NOTIFICATIONS.lock().unwrap_or_else(|e| e.into_inner());
    *map.entry(key).or_default() += 1;
}

/// The notifications counted so far in this process.
pub fn notifications() -> Notifications {
    NOTIFICATIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// What the metrics know beyond the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFacts {
    /// Wall-clock duration of the run, in seconds.
    pub duration_seconds: f64,
    /// When the run ended, Unix seconds.
    pub finished_unix_seconds: f64,
    /// API requests by provider, endpoint and result ([`api_requests`]).
    pub api_requests: ApiRequests,
    /// Notifications by receiver, event and result ([`notifications`]).
    pub notifications: Notifications,
}

/// The classes always exported, zero included, so a dashboard's series never vanish.
const CLASSES: [&str; 4] = ["safe", "risky", "forbidden", "unclassified"];

/// Renders the metrics in the Prometheus text format. Every family has `# HELP` and `# TYPE`;
/// label values are escaped; the text ends with a newline.
pub fn render(report: &Report, facts: &RunFacts) -> String {
    let s = &report.summary;
    let mut out = String::new();
    family(
        &mut out,
        "driftwarden_info",
        "gauge",
        "Always 1; labels carry the driftwarden version and the command that ran.",
        &[(
            vec![
                ("version", report.tool_version.as_str()),
                ("command", report.command.as_str()),
            ],
            1.0,
        )],
    );
    let simple: [(&str, &str, f64); 6] = [
        (
            "driftwarden_targets",
            "Targets in the run.",
            s.targets as f64,
        ),
        (
            "driftwarden_resources_checked",
            "Resources compared: everything desired plus tracked live resources absent from desired.",
            s.resources_checked as f64,
        ),
        (
            "driftwarden_resources_in_sync",
            "Checked resources that match Git.",
            s.in_sync as f64,
        ),
        (
            "driftwarden_resources_drifted",
            "Checked resources that differ from Git.",
            s.drifted as f64,
        ),
        (
            "driftwarden_compliance_ratio",
            "Share of checked resources that match Git, 0 to 1 (the report's compliance score / 100).",
            s.compliance_score / 100.0,
        ),
        (
            "driftwarden_partial",
            "1 when some source failed to load (nothing was deleted for those targets), else 0.",
            if s.partial { 1.0 } else { 0.0 },
        ),
    ];
    for (name, help, v) in simple {
        family(&mut out, name, "gauge", help, &[(vec![], v)]);
    }

    let mut by_class: BTreeMap<&str, usize> = CLASSES.iter().map(|c| (*c, 0)).collect();
    for (k, v) in &s.by_class {
        by_class.insert(k.as_str(), *v);
    }
    let samples: Vec<_> = by_class
        .iter()
        .map(|(c, n)| (vec![("class", *c)], *n as f64))
        .collect();
    family(
        &mut out,
        "driftwarden_drifts",
        "gauge",
        "Drifted resources by policy class (unclassified: no policy ran).",
        &samples,
    );

    let samples: Vec<_> = s
        .by_kind
        .iter()
        .map(|(k, n)| (vec![("kind", k.as_str())], *n as f64))
        .collect();
    family(
        &mut out,
        "driftwarden_drifts_by_kind",
        "gauge",
        "Drifted resources by drift kind (Modified, Missing, Unmanaged).",
        &samples,
    );

    let actions: Vec<(String, String, usize)> = s
        .actions
        .iter()
        .map(|(k, n)| {
            let (a, r) = k.split_once(':').unwrap_or((k.as_str(), ""));
            (a.to_string(), r.to_string(), *n)
        })
        .collect();
    let samples: Vec<_> = actions
        .iter()
        .map(|(a, r, n)| {
            (
                vec![("action", a.as_str()), ("result", r.as_str())],
                *n as f64,
            )
        })
        .collect();
    family(
        &mut out,
        "driftwarden_actions",
        "gauge",
        "Actions by type and result (planned, done, failed, skipped).",
        &samples,
    );

    let samples: Vec<_> = s
        .ignored_fields
        .iter()
        .map(|(r, n)| (vec![("rule", r.as_str())], *n as f64))
        .collect();
    family(
        &mut out,
        "driftwarden_ignored_fields",
        "gauge",
        "Fields dropped by each ignore rule.",
        &samples,
    );

    let mut errors: BTreeMap<&str, usize> = [("desired", 0), ("live", 0)].into_iter().collect();
    for e in &report.errors {
        *errors.entry(e.side.as_str()).or_default() += 1;
    }
    let samples: Vec<_> = errors
        .iter()
        .map(|(side, n)| (vec![("side", *side)], *n as f64))
        .collect();
    family(
        &mut out,
        "driftwarden_source_errors",
        "gauge",
        "Sources that failed to load, by side.",
        &samples,
    );

    if let Some(t) = &s.trust {
        render_run_trust(&mut out, t);
    }

    family(
        &mut out,
        "driftwarden_run_duration_seconds",
        "gauge",
        "Wall-clock duration of the run.",
        &[(vec![], facts.duration_seconds)],
    );
    family(
        &mut out,
        "driftwarden_last_run_timestamp_seconds",
        "gauge",
        "When the run ended, Unix time; alert when it grows stale.",
        &[(vec![], facts.finished_unix_seconds)],
    );

    let samples: Vec<_> = facts
        .api_requests
        .iter()
        .map(|(r, n)| {
            let mut labels = vec![
                ("provider", r.provider.as_str()),
                ("endpoint", r.endpoint.as_str()),
            ];
            if !r.result.is_empty() {
                labels.push(("result", r.result.as_str()));
            }
            (labels, *n as f64)
        })
        .collect();
    family(
        &mut out,
        "driftwarden_api_requests_total",
        "counter",
        "API requests sent during the run, by provider and endpoint, and by result where known.",
        &samples,
    );

    let samples: Vec<_> = facts
        .notifications
        .iter()
        .map(|((receiver, event, result), n)| {
            (
                vec![
                    ("receiver", receiver.as_str()),
                    ("event", event.as_str()),
                    ("result", result.as_str()),
                ],
                *n as f64,
            )
        })
        .collect();
    family(
        &mut out,
        "driftwarden_notifications_total",
        "counter",
        "Webhook notifications by receiver and event: sent (accepted with 2xx) or failed (given up after retries, refused, or past the deadline).",
        &samples,
    );
    out
}

/// The run's own audit figures (`summary.trust`).
fn render_run_trust(out: &mut String, t: &crate::audit::RunFigures) {
    let simple: [(&str, &str, f64); 6] = [
        (
            "driftwarden_run_corrections_attempted",
            "Corrections this run sent (an intent recorded in the audit log; dry runs excluded).",
            t.corrections_attempted as f64,
        ),
        (
            "driftwarden_run_corrections_confirmed",
            "Corrections this run confirmed by reading the object back.",
            t.corrections_confirmed as f64,
        ),
        (
            "driftwarden_run_corrections_failed",
            "Corrections this run that failed.",
            t.corrections_failed as f64,
        ),
        (
            "driftwarden_run_reverts_detected",
            "Earlier corrections this run saw reverted by another manager.",
            t.reverts_detected as f64,
        ),
        (
            "driftwarden_run_unfinished_intents",
            "Intents of earlier runs found without a result (the process stopped in between).",
            t.unfinished_intents as f64,
        ),
        (
            "driftwarden_audit_log_healthy",
            "1 when the audit log could be written all run, else 0 (nothing was acted on after a failure).",
            if t.audit_error.is_none() { 1.0 } else { 0.0 },
        ),
    ];
    for (name, help, v) in simple {
        family(out, name, "gauge", help, &[(vec![], v)]);
    }
    let samples: Vec<Sample<'_>> = t
        .breakers_tripped
        .iter()
        .map(|k| {
            let (target, rule) = k.split_once('/').unwrap_or((k.as_str(), ""));
            (vec![("target", target), ("rule", rule)], 1.0)
        })
        .collect();
    family(
        out,
        "driftwarden_run_breaker_tripped",
        "gauge",
        "1 for each rule and target whose corrections the revert breaker held back this run.",
        &samples,
    );
    let samples: Vec<Sample<'_>> = t
        .corrections_stopped
        .iter()
        .map(|target| (vec![("target", target.as_str())], 1.0))
        .collect();
    family(
        out,
        "driftwarden_run_corrections_stopped",
        "gauge",
        "1 for each target whose corrections stopped this run after consecutive failures.",
        &samples,
    );
}

/// The self-healing figures of `driftwarden stats` (audit history) in the Prometheus text
/// format: per target and per rule, time to remediate, compliance, open breakers.
pub fn render_stats(s: &crate::audit::stats::Stats) -> String {
    use crate::audit::stats::Figures;
    let mut out = String::new();
    type Pick = fn(&Figures) -> Option<f64>;
    let figures: [(&str, &str, Pick); 9] = [
        (
            "drifts_seen",
            "Drifts seen (episodes, first seen to resolved).",
            |f| Some(f.drifts_seen as f64),
        ),
        ("corrections_attempted", "Corrections sent.", |f| {
            Some(f.corrections_attempted as f64)
        }),
        (
            "corrections_confirmed",
            "Corrections confirmed by a re-read.",
            |f| Some(f.corrections_confirmed as f64),
        ),
        ("corrections_failed", "Corrections that failed.", |f| {
            Some(f.corrections_failed as f64)
        }),
        (
            "corrections_reverted",
            "Confirmed corrections reverted by another manager within 24 hours.",
            |f| Some(f.corrections_reverted as f64),
        ),
        (
            "redrifts",
            "Drifts of resources an earlier confirmed correction had fixed.",
            |f| Some(f.re_drifts as f64),
        ),
        (
            "breaker_trips",
            "Times the revert breaker stopped a rule.",
            |f| Some(f.breaker_trips as f64),
        ),
        (
            "self_healing_success_ratio",
            "Corrections confirmed / attempted (absent without attempts).",
            |f| f.success_rate,
        ),
        (
            "false_positive_ratio",
            "Corrections reverted / confirmed (absent without confirmed corrections).",
            |f| f.false_positive_rate,
        ),
    ];
    for (name, help, pick) in figures {
        let mut samples: Vec<Sample<'_>> = Vec::new();
        for t in &s.targets {
            if let Some(v) = pick(&t.figures) {
                samples.push((vec![("target", t.target.as_str())], v));
            }
        }
        family(
            &mut out,
            &format!("driftwarden_{name}"),
            "gauge",
            help,
            &samples,
        );
        let mut samples: Vec<Sample<'_>> = Vec::new();
        for r in &s.rules {
            if let Some(v) = pick(&r.figures) {
                samples.push((
                    vec![("target", r.target.as_str()), ("rule", r.rule.as_str())],
                    v,
                ));
            }
        }
        family(
            &mut out,
            &format!("driftwarden_rule_{name}"),
            "gauge",
            &format!("{help} By policy rule."),
            &samples,
        );
    }
    let mut samples: Vec<Sample<'_>> = Vec::new();
    for t in &s.time_to_remediate {
        let labels = vec![
            ("class", t.class.as_str()),
            ("resolution", t.resolution.as_str()),
        ];
        let mut mean = labels.clone();
        mean.push(("stat", "mean"));
        let mut p90 = labels;
        p90.push(("stat", "p90"));
        samples.push((mean, t.mean_seconds));
        samples.push((p90, t.p90_seconds));
    }
    family(
        &mut out,
        "driftwarden_time_to_remediate_seconds",
        "gauge",
        "First seen to resolved, by class and resolution (auto_corrected, merged_pull_request, drift_revert, other): mean and p90.",
        &samples,
    );
    let samples: Vec<Sample<'_>> = s
        .compliance
        .iter()
        .filter(|c| c.day == s.until.get(..10).unwrap_or_default())
        .map(|c| (vec![("target", c.target.as_str())], c.score / 100.0))
        .collect();
    family(
        &mut out,
        "driftwarden_compliance_ratio_today",
        "gauge",
        "Mean compliance score of today's runs, 0 to 1, by target.",
        &samples,
    );
    let samples: Vec<Sample<'_>> = s
        .open_breakers
        .iter()
        .map(|b| {
            (
                vec![("target", b.target.as_str()), ("rule", b.rule.as_str())],
                f64::from(b.reverts),
            )
        })
        .collect();
    family(
        &mut out,
        "driftwarden_breaker_open",
        "gauge",
        "Revert breakers open now, by target and rule; the value is the reverts counted.",
        &samples,
    );
    out
}

pub(crate) type Sample<'a> = (Vec<(&'a str, &'a str)>, f64);

/// Writes one metric family: `# HELP`, `# TYPE` and its samples with escaped labels.
pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[Sample<'_>]) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{k}=\"{}\"", escape_label(v));
            }
            out.push('}');
        }
        let _ = writeln!(out, " {}", number(*value));
    }
}

/// A sample value: integers without a fraction, `NaN`/`+Inf`/`-Inf` as the format spells them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Label values escape backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text escapes backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Where to push: host, port and request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// The push target for a Pushgateway base URL (`http://host:9091`, optionally with a path
/// prefix), a job name and grouping labels. A URL that already names `/metrics/job/...` is used
/// as given. Label values that are empty or contain `/` are sent base64url-encoded
/// (`<label>@base64/<value>`), as the Pushgateway API requires.
pub fn push_target(url: &str, job: &str, grouping: &[(&str, &str)]) -> Result<PushTarget> {
    let bad = |why| MetricsError::Url {
        url: url.to_string(),
        why,
    };
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            bad("only http:// is supported (put a TLS-terminating proxy in front of a remote Pushgateway)")
        } else {
            bad("expected http://HOST[:PORT][/PREFIX]")
        }
    })?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    let port_of = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| bad("the port is not a number"))
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, rest) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
        match rest.strip_prefix(':') {
            Some(p) => (h, port_of(p)?),
            None if rest.is_empty() => (h, 80),
            None => return Err(bad("unexpected text after the IPv6 address")),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, port_of(p)?),
            None => (authority, 80),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let prefix = prefix.trim_end_matches('/');
    let path = if prefix.contains("/metrics/job/") || prefix.contains("/metrics/job@base64/") {
        prefix.to_string()
    } else {
        let mut p = format!("{prefix}/metrics/{}", path_pair("job", job));
        for (k, v) in grouping {
            p.push('/');
            p.push_str(&path_pair(k, v));
        }
        p
    };
    Ok(PushTarget {
        host: host.to_string(),
        port,
        path,
    })
}

fn path_pair(label: &str, value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'));
    if plain {
        format!("{label}/{value}")
    } else {
        let enc = base64::engine::general_purpose::URL_SAFE.encode(value.as_bytes());
        // The Pushgateway reads `=` as the single-character encoding of an empty value.
        let enc = if enc.is_empty() { "=".to_string() } else { enc };
        format!("{label}@base64/{enc}")
    }
}

/// `PUT`s the metrics text to the Pushgateway, replacing the group's previous metrics. Any 2xx
/// answer is success.
pub async fn push(target: &PushTarget, body: &str) -> Result<()> {
    let addr = format!("{}:{}", target.host, target.port);
    match tokio::time::timeout(PUSH_TIMEOUT, push_inner(target, &addr, body)).await {
        Ok(r) => r,
        Err(_) => Err(MetricsError::Timeout { addr }),
    }
}

async fn push_inner(target: &PushTarget, addr: &str, body: &str) -> Result<()> {
    let connect = |source| MetricsError::Connect {
        addr: addr.to_string(),
        source,
    };
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(connect)?;
    let host_header = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let request = format!(
        "PUT {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: driftwarden/{}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        target.path,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(connect)?;
    stream.write_all(body.as_bytes()).await.map_err(connect)?;
    stream.flush().await.map_err(connect)?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the peer closes (Connection: close) or enough to judge the answer.
    loop {
        let n = stream.read(&mut buf).await.map_err(connect)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if response.len() > 64 * 1024 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status.starts_with('2') && status.len() == 3 {
        return Ok(());
    }
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim())
        .unwrap_or_default();
    Err(MetricsError::Status {
        status: if status_line.is_empty() {
            "nothing".to_string()
        } else {
            status_line.to_string()
        },
        body: body.chars().take(300).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_targets() {
        let t = push_target(
            "http://pgw.monitoring:9091",
            "driftwarden",
            &[("shard", "2")],
        )
        .unwrap();
        assert_eq!(t.host, "pgw.monitoring");
        assert_eq!(t.port, 9091);
        assert_eq!(t.path, "/metrics/job/driftwarden/shard/2");
        let t = push_target("http://127.0.0.1/prefix/", "a/b", &[("x", "")]).unwrap();
        assert_eq!(t.port, 80);
        assert_eq!(t.path, "/prefix/metrics/job@base64/YS9i/x@base64/=");
        let t = push_target("http://[::1]:9091/metrics/job/custom", "ignored", &[]).unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.path, "/metrics/job/custom");
        assert!(push_target("https://pgw:9091", "j", &[]).is_err());
        assert!(push_target("pgw:9091", "j", &[]).is_err());
        assert!(push_target("http://user:pw@pgw:9091", "j", &[]).is_err());
        assert!(push_target("http://pgw:x", "j", &[]).is_err());
    }

    #[test]
    fn numbers_and_escapes() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.667), "0.667");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn registry_counts() {
        record_api_request("test-provider", "list v1 configmaps");
        record_api_request("test-provider", "list v1 configmaps");
        record_api_call("test-provider", "DescribeThings", "ok");
        record_api_call("test-provider", "DescribeThings", "RequestLimitExceeded");
        record_api_call("test-provider", "DescribeThings", "ok");
        let m = api_requests();
        let key = |endpoint: &str, result: &str| ApiRequest {
            provider: "test-provider".into(),
            endpoint: endpoint.into(),
            result: result.into(),
        };
        assert!(m[&key("list v1 configmaps", "")] >= 2);
        assert!(m[&key("DescribeThings", "ok")] >= 2);
        assert!(m[&key("DescribeThings", "RequestLimitExceeded")] >= 1);
    }

    #[test]
    fn api_requests_carry_a_result_label_only_when_known() {
        let mut api_requests = ApiRequests::new();
        let key = |provider: &str, endpoint: &str, result: &str| ApiRequest {
            provider: provider.into(),
            endpoint: endpoint.into(),
            result: result.into(),
        };
        api_requests.insert(key("kubernetes", "list v1 configmaps", ""), 3);
        api_requests.insert(key("ec2", "DescribeInstances", "ok"), 2);
        api_requests.insert(key("ec2", "CreateTags", "DryRunOperation"), 1);
        let facts = RunFacts {
            api_requests,
            ..RunFacts::default()
        };
        let report = Report::new("diff", 1, 0, BTreeMap::new(), Vec::new(), Vec::new());
        let text = render(&report, &facts);
        for line in [
            "driftwarden_api_requests_total{provider=\"kubernetes\",endpoint=\"list v1 configmaps\"} 3",
            "driftwarden_api_requests_total{provider=\"ec2\",endpoint=\"DescribeInstances\",result=\"ok\"} 2",
            "driftwarden_api_requests_total{provider=\"ec2\",endpoint=\"CreateTags\",result=\"DryRunOperation\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }
}
