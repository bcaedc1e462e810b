//! An EC2 Query API server on loopback for the Describe calls driftwarden's EC2 reader makes,
//! speaking the real protocol where moto does not: moto ignores `MaxResults` for most calls and
//! never hands out a `NextToken` for them, and it never throttles.
//!
//! Protocol, as EC2 speaks it (API version 2016-11-15):
//! - requests are `POST /` with a form-encoded body (`Action=DescribeInstances&Version=2016-11-15
//!   &Filter.1.Name=...&Filter.1.Value.1=...&MaxResults=1000&NextToken=...`) signed with SigV4;
//! - a success is HTTP 200 `text/xml` whose root is `{Action}Response` in the
//!   `http://ec2.amazonaws.com/doc/2016-11-15/` namespace, holding `<requestId>`, the result set
//!   (`reservationSet`, `securityGroupInfo`, `vpcSet`... each a list of `<item>`s) and, while more
//!   items remain, `<nextToken>`; the request id is also sent as `x-amzn-requestid`;
//! - an error is `<Response><Errors><Error><Code>..</Code><Message>..</Message></Error></Errors>
//!   <RequestID>..</RequestID></Response>`: HTTP 503 with `RequestLimitExceeded` when throttled,
//!   HTTP 400 for client errors (`InvalidParameterValue` for a `MaxResults` out of the call's
//!   range or an unknown `NextToken`, `InvalidParameterCombination` for `MaxResults` with
//!   instance ids, `InvalidInstanceID.NotFound`, `InvalidAction`), HTTP 401 `AuthFailure` for an
//!   unsigned request.
//!
//! Contents: `Fleet::running` instances (plus `Fleet::terminated` ones that the reader's
//! `instance-state-name` filter must drop), one instance per reservation (so a page of
//! `MaxResults` items is that many instances and that many reservations, whichever EC2 counts);
//! every other Describe call answers a valid, empty result set, still checking `MaxResults`
//! against that call's documented range. `DescribeInstances` pages in instance order: filters
//! first, then at most `MaxResults` items, and a `nextToken` (opaque, reusable, so a retried
//! request may resend it) while items remain; without `MaxResults` every item comes in one page.
//!
//! Every request is logged (action, `MaxResults`, `NextToken`, status, error code, the token
//! returned); [`Ec2QueryServer::throttle`] injects `RequestLimitExceeded` responses.

#![allow(dead_code)]

// Each server includes the shared plumbing itself, so a test binary needs nothing more; one that
// includes two servers compiles it twice, which is harmless.
#[allow(clippy::duplicate_mod)]
#[path = "http.rs"]
mod http;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};

/// The API version the SDK sends and the namespace of every response.
pub const VERSION: &str = "2016-11-15";
pub const XMLNS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";
/// The owner of every reservation.
pub const ACCOUNT: &str = "123456789012";

/// What the server holds.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The region the instances live in (availability zones `{region}a`...).
    pub region: String,
    /// Running instances: what a reader filtering on live states must return.
    pub running: usize,
    /// Terminated instances, listed after the running ones: a reader must filter them out.
    pub terminated: usize,
}

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub action: String,
    pub max_results: Option<String>,
    pub next_token: Option<String>,
    /// The HTTP status sent.
    pub status: u16,
    /// The error code sent, if any (`RequestLimitExceeded`...).
    pub error: Option<String>,
    /// The `nextToken` sent back, if any.
    pub returned_token: Option<String>,
    /// Every form parameter, decoded.
    pub params: BTreeMap<String, String>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Logged {
    /// Answered with `RequestLimitExceeded`.
    pub fn throttled(&self) -> bool {
        self.error.as_deref() == Some("RequestLimitExceeded")
    }
}

/// Injected throttling: of the requests that match `action` (every request when `None`), let
/// `skip` through, then answer the next `count` with `RequestLimitExceeded` (HTTP 503).
#[derive(Debug, Clone)]
struct Throttle {
    action: Option<String>,
    skip: usize,
    count: usize,
}

#[derive(Debug)]
struct Instance {
    id: String,
    reservation: String,
    index: usize,
    state: (&'static str, u8),
}

#[derive(Debug)]
struct State {
    fleet: Fleet,
    instances: Vec<Instance>,
    /// Handed-out tokens: the action and the offset of the next item.
    tokens: HashMap<String, (String, usize)>,
    throttles: Vec<Throttle>,
    log: Vec<Logged>,
    requests: u64,
}

/// The server. Dropping it leaves the background thread to die with the test process.
pub struct Ec2QueryServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

/// A response before it is built: status, XML body, and what the log records of it.
struct Answer {
    status: u16,
    body: String,
    error: Option<String>,
    returned_token: Option<String>,
}

impl Ec2QueryServer {
    /// Starts a server on 127.0.0.1 (a free port) holding `fleet`.
    pub fn start(fleet: Fleet) -> Ec2QueryServer {
        let mut instances = Vec::new();
        for index in 0..fleet.running + fleet.terminated {
            let state = if index < fleet.running {
                ("running", 16)
            } else {
                ("terminated", 48)
            };
            instances.push(Instance {
                id: format!("i-{:017x}", 0x0a00_0000_0000_0000u64 + index as u64),
                reservation: format!("r-{:017x}", 0x0b00_0000_0000_0000u64 + index as u64),
                index,
                state,
            });
        }
        let state = Arc::new(Mutex::new(State {
            fleet,
            instances,
            tokens: HashMap::new(),
            throttles: Vec::new(),
            log: Vec::new(),
            requests: 0,
        }));
        let addr = http::start_in_thread(Arc::clone(&state), |st, req| async move {
            handle(&st, req).await
        });
        Ec2QueryServer { addr, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// The requests for one action, in arrival order.
    pub fn log_of(&self, action: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.action == action)
            .collect()
    }

    /// Answers the first `count` requests (any action) from now on with `RequestLimitExceeded`.
    pub fn throttle_first(&self, count: usize) {
        self.add_throttle(None, 0, count);
    }

    /// Of the `action` requests from now on, lets `skip` through, then answers the next `count`
    /// with `RequestLimitExceeded` (`usize::MAX`: throttling that never ends).
    pub fn throttle(&self, action: &str, skip: usize, count: usize) {
        self.add_throttle(Some(action.to_string()), skip, count);
    }

    fn add_throttle(&self, action: Option<String>, skip: usize, count: usize) {
        self.state.lock().unwrap().throttles.push(Throttle {
            action,
            skip,
            count,
        });
    }

    /// The ids of the running instances, in the server's order.
    pub fn running_ids(&self) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.instances
            .iter()
            .filter(|i| i.state.0 == "running")
            .map(|i| i.id.clone())
            .collect()
    }

    /// The id of the `index`th instance.
    pub fn instance_id(&self, index: usize) -> String {
        self.state.lock().unwrap().instances[index].id.clone()
    }
}

fn form(body: &str) -> BTreeMap<String, String> {
    http::form_pairs(body).collect()
}

/// XML character data.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A request id shaped like EC2's (a UUID).
fn request_id(n: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        0x7e57_0000u64 + n,
        n & 0xffff,
        n & 0xfff,
        (n >> 12) & 0xfff,
        n
    )
}

/// The root device and launch time every instance shares.
const ROOT_DEVICE: &str = "/dev/xvda";
const LAUNCH_TIME: &str = "2026-11-22T04:00:00.000Z";

/// The `MaxResults` range of each call the reader pages, per the EC2 API reference (the model's
/// `Describe*MaxResults` shapes; DescribeInstances' in its parameter text). `None`: the call has
/// no `MaxResults` (DescribeAddresses, DescribeKeyPairs) or no documented range (DescribeVolumes).
fn max_results_range(action: &str) -> Option<(i64, i64)> {
    Some(match action {
        "DescribeInstances" => (5, 1000),
        "DescribeSecurityGroups" => (5, 1000),
        "DescribeVpcs" => (5, 1000),
        "DescribeSubnets" => (5, 1000),
        "DescribeNetworkInterfaces" => (5, 1000),
        "DescribeInternetGateways" => (5, 1000),
        "DescribeNatGateways" => (5, 1000),
        "DescribeRouteTables" => (5, 100),
        "DescribeLaunchTemplates" | "DescribeLaunchTemplateVersions" => (1, 200),
        _ => return None,
    })
}

/// The result-set element of the calls answered empty.
fn empty_set(action: &str) -> Option<&'static str> {
    Some(match action {
        "DescribeSecurityGroups" => "securityGroupInfo",
        "DescribeVpcs" => "vpcSet",
        "DescribeSubnets" => "subnetSet",
        "DescribeVolumes" => "volumeSet",
        "DescribeAddresses" => "addressesSet",
        "DescribeNetworkInterfaces" => "networkInterfaceSet",
        "DescribeKeyPairs" => "keySet",
        "DescribeLaunchTemplates" => "launchTemplates",
        "DescribeLaunchTemplateVersions" => "launchTemplateVersionSet",
        "DescribeInternetGateways" => "internetGatewaySet",
        "DescribeNatGateways" => "natGatewaySet",
        "DescribeRouteTables" => "routeTableSet",
        _ => return None,
    })
}

fn error_body(code: &str, message: &str, rid: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>",
        esc(code),
        esc(message)
    )
}

fn error(status: u16, code: &str, message: &str, rid: &str) -> Answer {
    Answer {
        status,
        body: error_body(code, message, rid),
        error: Some(code.to_string()),
        returned_token: None,
    }
}

fn ok(action: &str, rid: &str, inner: &str) -> Answer {
    Answer {
        status: 200,
        body: format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"{XMLNS}\">\n    <requestId>{rid}</requestId>\n{inner}</{action}Response>"
        ),
        error: None,
        returned_token: None,
    }
}

/// `Filter.N.Name` / `Filter.N.Value.M` as name → values.
fn filters(params: &BTreeMap<String, String>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, name) in params {
        let Some(n) = k
            .strip_prefix("Filter.")
            .and_then(|r| r.strip_suffix(".Name"))
        else {
            continue;
        };
        let prefix = format!("Filter.{n}.Value.");
        let values = params
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect();
        out.insert(name.clone(), values);
    }
    out
}

/// `Prefix.1`, `Prefix.2`... values.
fn list(params: &BTreeMap<String, String>, prefix: &str) -> Vec<String> {
    let mut items: Vec<(usize, String)> = params
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('.'))
                .and_then(|n| n.parse().ok())
                .map(|n| (n, v.clone()))
        })
        .collect();
    items.sort();
    items.into_iter().map(|(_, v)| v).collect()
}

fn instance_xml(fleet: &Fleet, i: &Instance) -> String {
    let n = i.index;
    let az = format!("{}{}", fleet.region, ['a', 'b', 'c'][n % 3]);
    let ip = format!("10.0.{}.{}", (n / 250) % 256, 4 + n % 250);
    let volume = format!("vol-{:017x}", 0x0c00_0000_0000_0000u64 + n as u64);
    let running = i.state.0 == "running";
    let reason = if running {
        String::new()
    } else {
        "User initiated (2026-11-22 05:00:00 GMT)".to_string()
    };
    let block_devices = if running {
        format!(
            "\n                        <blockDeviceMapping>\n                            <item>\n                                <deviceName>{ROOT_DEVICE}</deviceName>\n                                <ebs>\n                                    <volumeId>{volume}</volumeId>\n                                    <status>attached</status>\n                                    <attachTime>{LAUNCH_TIME}</attachTime>\n                                    <deleteOnTermination>true</deleteOnTermination>\n                                </ebs>\n                            </item>\n                        </blockDeviceMapping>"
        )
    } else {
        "\n                        <blockDeviceMapping/>".to_string()
    };
    format!(
        r#"                    <item>
                        <instanceId>{id}</instanceId>
                        <imageId>ami-0abcdef1234567890</imageId>
                        <instanceState>
                            <code>{code}</code>
                            <name>{state}</name>
                        </instanceState>
                        <privateDnsName>ip-{dashed}.{region}.compute.internal</privateDnsName>
                        <dnsName/>
                        <reason>{reason}</reason>
                        <keyName>deploy</keyName>
                        <amiLaunchIndex>0</amiLaunchIndex>
                        <productCodes/>
                        <instanceType>t3.micro</instanceType>
                        <launchTime>{LAUNCH_TIME}</launchTime>
                        <placement>
                            <availabilityZone>{az}</availabilityZone>
                            <groupName/>
                            <tenancy>default</tenancy>
                        </placement>
                        <monitoring>
                            <state>disabled</state>
                        </monitoring>
                        <subnetId>subnet-0123456789abcdef0</subnetId>
                        <vpcId>vpc-0123456789abcdef0</vpcId>
                        <privateIpAddress>{ip}</privateIpAddress>
                        <sourceDestCheck>true</sourceDestCheck>
                        <groupSet>
                            <item>
                                <groupId>sg-0123456789abcdef0</groupId>
                                <groupName>nodes</groupName>
                            </item>
                        </groupSet>
                        <architecture>x86_64</architecture>
                        <rootDeviceType>ebs</rootDeviceType>
                        <rootDeviceName>{ROOT_DEVICE}</rootDeviceName>{block_devices}
                        <virtualizationType>hvm</virtualizationType>
                        <clientToken/>
                        <tagSet>
                            <item>
                                <key>Name</key>
                                <value>{name}</value>
                            </item>
                        </tagSet>
                        <hypervisor>xen</hypervisor>
                        <networkInterfaceSet/>
                        <ebsOptimized>false</ebsOptimized>
                        <enaSupport>true</enaSupport>
                    </item>
"#,
        id = i.id,
        code = i.state.1,
        state = i.state.0,
        dashed = ip.replace('.', "-"),
        region = fleet.region,
        name = esc(&format!("node-{n}")),
    )
}

fn describe_instances(st: &mut State, params: &BTreeMap<String, String>, rid: &str) -> Answer {
    let ids = list(params, "InstanceId");
    let max = params.get("MaxResults");
    if !ids.is_empty() && max.is_some() {
        return error(
            400,
            "InvalidParameterCombination",
            "The parameter instancesSet cannot be used with the parameter maxResults",
            rid,
        );
    }
    let mut states: Option<Vec<String>> = None;
    for (name, values) in filters(params) {
        match name.as_str() {
            "instance-state-name" => states = Some(values),
            other => {
                return error(
                    400,
                    "InvalidParameterValue",
                    &format!("The filter '{other}' is invalid"),
                    rid,
                );
            }
        }
    }
    for id in &ids {
        if !st.instances.iter().any(|i| &i.id == id) {
            return error(
                400,
                "InvalidInstanceID.NotFound",
                &format!("The instance ID '{id}' does not exist"),
                rid,
            );
        }
    }
    let matching: Vec<usize> = st
        .instances
        .iter()
        .enumerate()
        .filter(|(_, i)| ids.is_empty() || ids.contains(&i.id))
        .filter(|(_, i)| {
            states
                .as_ref()
                .is_none_or(|s| s.iter().any(|v| v == i.state.0))
        })
        .map(|(n, _)| n)
        .collect();
    let start = match params.get("NextToken") {
        None => 0,
        Some(t) => match st.tokens.get(t) {
            Some((action, offset)) if action == "DescribeInstances" => *offset,
            _ => {
                return error(
                    400,
                    "InvalidParameterValue",
                    &format!("Invalid value '{t}' for nextToken"),
                    rid,
                );
            }
        },
    };
    let page = max
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    let end = start.saturating_add(page).min(matching.len());
    let start = start.min(end);
    let mut inner = String::from("    <reservationSet>\n");
    for &n in &matching[start..end] {
        let i = &st.instances[n];
        inner.push_str(&format!(
            "        <item>\n            <reservationId>{}</reservationId>\n            <ownerId>{ACCOUNT}</ownerId>\n            <groupSet/>\n            <instancesSet>\n{}            </instancesSet>\n        </item>\n",
            i.reservation,
            instance_xml(&st.fleet, i)
        ));
    }
    inner.push_str("    </reservationSet>\n");
    let mut token = None;
    if end < matching.len() {
        // Opaque to the client, like EC2's; kept so a retried request can resend it.
        let t = format!(
            "eyJ2IjoxfQ.{:016x}.{:08x}",
            st.requests.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            end
        );
        st.tokens
            .insert(t.clone(), ("DescribeInstances".to_string(), end));
        inner.push_str(&format!("    <nextToken>{}</nextToken>\n", esc(&t)));
        token = Some(t);
    }
    let mut a = ok("DescribeInstances", rid, &inner);
    a.returned_token = token;
    a
}

fn describe_instance_attribute(st: &State, params: &BTreeMap<String, String>, rid: &str) -> Answer {
    let id = params.get("InstanceId").cloned().unwrap_or_default();
    if !st.instances.iter().any(|i| i.id == id) {
        return error(
            400,
            "InvalidInstanceID.NotFound",
            &format!("The instance ID '{id}' does not exist"),
            rid,
        );
    }
    match params.get("Attribute").map(String::as_str) {
        Some("disableApiTermination") => ok(
            "DescribeInstanceAttribute",
            rid,
            &format!(
                "    <instanceId>{id}</instanceId>\n    <disableApiTermination>\n        <value>false</value>\n    </disableApiTermination>\n"
            ),
        ),
        other => error(
            400,
            "InvalidParameterValue",
            &format!(
                "Value ({}) for parameter attribute is invalid. Unknown attribute.",
                other.unwrap_or_default()
            ),
            rid,
        ),
    }
}

fn answer(st: &mut State, params: &BTreeMap<String, String>, auth: &str, rid: &str) -> Answer {
    if !auth.starts_with("AWS4-HMAC-SHA256 Credential=") {
        return error(
            401,
            "AuthFailure",
            "AWS was not able to validate the provided access credentials",
            rid,
        );
    }
    let action = params.get("Action").cloned().unwrap_or_default();
    if params.get("Version").map(String::as_str) != Some(VERSION) {
        return error(
            400,
            "InvalidParameterValue",
            &format!(
                "Invalid API version: {}",
                params.get("Version").cloned().unwrap_or_default()
            ),
            rid,
        );
    }
    // Throttling comes before any validation, as a request rate limit does.
    let mut throttled = false;
    for t in st.throttles.iter_mut() {
        if t.action.as_ref().is_some_and(|a| a != &action) || t.count == 0 {
            continue;
        }
        if t.skip > 0 {
            t.skip -= 1;
            continue;
        }
        t.count -= 1;
        throttled = true;
        break;
    }
    if throttled {
        return error(503, "RequestLimitExceeded", "Request limit exceeded.", rid);
    }
    if let Some(m) = params.get("MaxResults") {
        let value: Option<i64> = m.parse().ok();
        if let Some((lo, hi)) = max_results_range(&action) {
            if value.is_none_or(|v| v < lo || v > hi) {
                return error(
                    400,
                    "InvalidParameterValue",
                    &format!(
                        "Value ( {m} ) for parameter maxResults is invalid. Expecting a value between {lo} and {hi}."
                    ),
                    rid,
                );
            }
        }
    }
    match action.as_str() {
        "DescribeInstances" => describe_instances(st, params, rid),
        "DescribeInstanceAttribute" => describe_instance_attribute(st, params, rid),
        a => match empty_set(a) {
            Some(set) => ok(a, rid, &format!("    <{set}/>\n")),
            None => error(
                400,
                "InvalidAction",
                &format!("The action {a} is not valid for this web service."),
                rid,
            ),
        },
    }
}

async fn handle(state: &Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let auth = http::header(&req, "authorization").unwrap_or_default();
    let method = req.method().clone();
    let body = http::body_text(req).await;
    let params = form(&body);
    let mut st = state.lock().unwrap();
    st.requests += 1;
    let rid = request_id(st.requests);
    let a = if method == hyper::Method::POST {
        answer(&mut st, &params, &auth, &rid)
    } else {
        error(
            400,
            "InvalidAction",
            "The action is not valid for this web service.",
            &rid,
        )
    };
    st.log.push(Logged {
        action: params.get("Action").cloned().unwrap_or_default(),
        max_results: params.get("MaxResults").cloned(),
        next_token: params.get("NextToken").cloned(),
        status: a.status,
        error: a.error.clone(),
        returned_token: a.returned_token.clone(),
        params,
        at: std::time::Instant::now(),
    });
    drop(st);
    Response::builder()
        .status(StatusCode::from_u16(a.status).unwrap())
        .header("content-type", "text/xml;charset=UTF-8")
        .header("x-amzn-requestid", rid)
        .header("server", "AmazonEC2")
        .header("cache-control", "no-cache, no-store")
        .body(Full::new(Bytes::from(a.body)))
        .unwrap()
}
