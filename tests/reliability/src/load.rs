//! A closed-loop HTTP/1.1 load: each of N connections sends the next request as soon as the
//! previous answer is read, until a deadline. Every attempt is kept as a [`Record`] (what was
//! asked, when, and exactly what came back), so a suite can count 200s against rows and say what
//! happened in any time window.
//!
//! One hyper client connection per simulated client (no shared pool), so "256 connections"
//! means 256 TCP connections to the service. A connection that fails is replaced by a new one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One kind of request, sent by `connections` connections at once.
#[derive(Clone, Debug)]
pub struct Target {
    pub path: String,
    pub connections: usize,
    /// The User-Agent sent, followed by ` #<request id>` so every stored row names the request
    /// it came from (none sent when `None`).
    pub user_agent: Option<String>,
    /// The body a 200 must have, compared as JSON; `None` accepts any JSON body.
    pub ok_body: Option<Value>,
}

impl Target {
    pub fn new(path: &str, connections: usize) -> Self {
        Self {
            path: path.to_owned(),
            connections,
            user_agent: Some("reliability-load/1".to_owned()),
            ok_body: None,
        }
    }

    /// `GET /`, whose 200 must be exactly `{"Response":"Registered request"}`.
    pub fn visits(connections: usize) -> Self {
        Self {
            ok_body: Some(serde_json::json!({"Response": "Registered request"})),
            ..Self::new("/", connections)
        }
    }

    /// `GET /health`, whose 200 must be exactly `{"Status":"Healthy"}`.
    pub fn health(connections: usize) -> Self {
        Self {
            ok_body: Some(serde_json::json!({"Status": "Healthy"})),
            ..Self::new("/health", connections)
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub targets: Vec<Target>,
    /// No request starts after this; every request in flight then still gets its answer.
    pub duration: Duration,
    /// A request not answered within this is recorded as [`Outcome::Timeout`] (a hang).
    pub request_timeout: Duration,
    /// Strings no response (status line, headers, body) may contain, e.g. a sentinel password.
    pub forbidden: Vec<String>,
}

impl LoadSpec {
    pub fn new(addr: SocketAddr, targets: Vec<Target>, duration: Duration) -> Self {
        Self {
            addr,
            targets,
            duration,
            request_timeout: Duration::from_secs(15),
            forbidden: Vec::new(),
        }
    }
}

/// What one attempt got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Response {
        status: u16,
        /// `application/problem+json` whose `status` member equals the status and whose
        /// `detail` is a non-empty string (RFC 9457 as the services promise).
        problem: bool,
        /// For a 200: the body is the expected JSON (always true when none is set).
        body_ok: bool,
        /// The response contained one of the spec's forbidden strings.
        forbidden: bool,
        /// A problem whose `type` is [`OUTCOME_UNKNOWN_TYPE`]: the visit may have been stored.
        outcome_unknown: bool,
    },
    /// The TCP connection was refused (nothing listens, or the listener closed with it unaccepted).
    Refused,
    /// The connection closed (or reset) with the request sent and no answer.
    Closed,
    /// No complete answer within the request timeout.
    Timeout,
    /// Anything else, with the client's message.
    Error(String),
}

impl Outcome {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Response { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// `"200"`, `"503"`, `"refused"`, ... for summaries.
    pub fn label(&self) -> String {
        match self {
            Self::Response { status, .. } => status.to_string(),
            Self::Refused => "refused".to_owned(),
            Self::Closed => "closed".to_owned(),
            Self::Timeout => "timeout".to_owned(),
            Self::Error(message) => format!("error: {message}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Record {
    /// Index into the spec's targets.
    pub target: usize,
    /// Unique within the load; part of the User-Agent sent (see [`Report::user_agent`]).
    pub id: u64,
    pub start: Instant,
    pub end: Instant,
    pub outcome: Outcome,
}

impl Record {
    pub fn latency(&self) -> Duration {
        self.end.duration_since(self.start)
    }

    pub fn status(&self) -> Option<u16> {
        self.outcome.status()
    }
}

/// A load running on a thread (and Tokio runtime) of its own; the test thread stays free to
/// break things meanwhile.
pub struct Load {
    pub started: Instant,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Vec<Record>>>,
    spec: Arc<LoadSpec>,
}

impl Load {
    pub fn start(spec: LoadSpec) -> Result<Self> {
        let spec = Arc::new(spec);
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("building the load's Tokio runtime")?;
        let started = Instant::now();
        let deadline = started + spec.duration;
        let (thread_spec, thread_stop) = (Arc::clone(&spec), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("load".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut workers = Vec::new();
                    let mut client_number = 0_u64;
                    for (index, target) in thread_spec.targets.iter().enumerate() {
                        for _ in 0..target.connections {
                            client_number += 1;
                            workers.push(tokio::spawn(client(
                                Arc::clone(&thread_spec),
                                index,
                                client_number << 32,
                                deadline,
                                Arc::clone(&thread_stop),
                            )));
                        }
                    }
                    let mut records = Vec::new();
                    for worker in workers {
                        records.extend(
                            worker
                                .await
                                .map_err(|error| anyhow!("a load client panicked: {error}"))?,
                        );
                    }
                    Ok(records)
                })
            })
            .context("spawning the load thread")?;
        Ok(Self {
            started,
            stop,
            thread,
            spec,
        })
    }

    /// Seconds since the load started, for progress messages.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Asks every client to stop after its current request.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for the deadline (or [`stop`](Self::stop)) and the last answers.
    pub fn finish(self) -> Result<Report> {
        let records = self
            .thread
            .join()
            .map_err(|_| anyhow!("the load thread panicked"))??;
        Ok(Report {
            started: self.started,
            ended: Instant::now(),
            spec: self.spec,
            records,
        })
    }
}

/// One simulated client: one connection at a time, one request at a time.
async fn client(
    spec: Arc<LoadSpec>,
    target: usize,
    first_id: u64,
    deadline: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Record> {
    let mut id = first_id;
    let mut records = Vec::new();
    let mut connection: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
    let path = &spec.targets[target].path;
    let host = spec.addr.to_string();
    // Bounded: the loop ends at the deadline, and every await in it has a timeout.
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        let start = Instant::now();
        id += 1;
        // A kept-alive connection the server has closed meanwhile is replaced, not counted.
        if let Some(sender) = &mut connection
            && sender.ready().await.is_err()
        {
            connection = None;
        }
        let sender = match &mut connection {
            Some(sender) => sender,
            None => match connect(&spec).await {
                Ok(sender) => connection.insert(sender),
                Err(outcome) => {
                    records.push(Record {
                        target,
                        id,
                        start,
                        end: Instant::now(),
                        outcome,
                    });
                    // Do not spin against a closed port.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let mut request = Request::get(path.as_str()).header(HOST, &host);
        if let Some(agent) = &spec.targets[target].user_agent {
            request = request.header(USER_AGENT, format!("{agent} #{id}"));
        }
        let request = match request.body(Empty::new()) {
            Ok(request) => request,
            Err(error) => {
                records.push(Record {
                    target,
                    id,
                    start,
                    end: Instant::now(),
                    outcome: Outcome::Error(format!("building the request: {error}")),
                });
                break;
            }
        };
        let exchange = async {
            let response = sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, hyper::Error>((parts, body))
        };
        let outcome = match tokio::time::timeout(spec.request_timeout, exchange).await {
            Ok(Ok((parts, body))) => {
                if parts
                    .headers
                    .get(CONNECTION)
                    .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"))
                {
                    connection = None;
                }
                judge(&spec, target, &parts, &body)
            }
            Ok(Err(error)) => {
                connection = None;
                if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
                    Outcome::Closed
                } else {
                    Outcome::Error(error.to_string())
                }
            }
            Err(_) => {
                connection = None;
                Outcome::Timeout
            }
        };
        records.push(Record {
            target,
            id,
            start,
            end: Instant::now(),
            outcome,
        });
    }
    records
}

async fn connect(spec: &LoadSpec) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, Outcome> {
    let stream =
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(spec.addr)).await {
            Ok(Ok(stream)) => stream,
            // A connection still in the listener's backlog when the listener closes is reset
            // by the kernel: refused too, with nothing sent (seen once in 3 runs of the SIGTERM suite).
            Ok(Err(error))
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return Err(Outcome::Refused);
            }
            Ok(Err(error)) => return Err(Outcome::Error(format!("connecting: {error}"))),
            Err(_) => return Err(Outcome::Timeout),
        };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| Outcome::Error(format!("handshake: {error}")))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

fn judge(spec: &LoadSpec, target: usize, parts: &hyper::http::response::Parts, body: &Bytes) -> Outcome {
    let status = parts.status.as_u16();
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let problem = content_type.starts_with("application/problem+json")
        && json.as_ref().is_some_and(|json| {
            json["status"] == status && json["detail"].as_str().is_some_and(|detail| !detail.is_empty())
        });
    let body_ok = status != 200
        || match &spec.targets[target].ok_body {
            Some(expected) => json.as_ref() == Some(expected),
            None => json.is_some(),
        };
    let forbidden = !spec.forbidden.is_empty() && {
        let mut text = String::from_utf8_lossy(body).into_owned();
        for (name, value) in &parts.headers {
            text.push_str(name.as_str());
            text.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
        spec.forbidden.iter().any(|needle| text.contains(needle.as_str()))
    };
    let outcome_unknown = problem
        && json
            .as_ref()
            .is_some_and(|json| json["type"] == OUTCOME_UNKNOWN_TYPE);
    Outcome::Response {
        status,
        problem,
        body_ok,
        forbidden,
        outcome_unknown,
    }
}

/// The problem `type` the frontend answers when the database could not confirm whether a visit
/// was stored (crates/frontend/src/api/visits.rs, `OUTCOME_UNKNOWN_TYPE`).
pub const OUTCOME_UNKNOWN_TYPE: &str = "tag:apprunner-vpc,2026:visit-outcome-unknown";

/// Everything a load saw.
pub struct Report {
    pub started: Instant,
    pub ended: Instant,
    pub spec: Arc<LoadSpec>,
    pub records: Vec<Record>,
}

impl Report {
    /// Records of target `index` (in the order of the spec's targets).
    pub fn of(&self, index: usize) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(move |record| record.target == index)
    }

    /// The User-Agent a record's request carried (what its row must hold).
    pub fn user_agent(&self, record: &Record) -> Option<String> {
        let prefix = self.spec.targets[record.target].user_agent.as_ref()?;
        Some(format!("{prefix} #{}", record.id))
    }

    /// Matches the answers of target `index` with `stored` (the table's User-Agents): each 200
    /// must have exactly one row, no request two, and an answer that said nothing was stored
    /// none. A request told its outcome is unknown, or that got no answer at all (its connection
    /// closed, or the client gave up), may have one; those are counted.
    pub fn account(&self, index: usize, stored: &[Option<String>]) -> Accounting {
        use std::collections::HashMap;
        let mut rows: HashMap<&str, usize> = HashMap::new();
        for agent in stored.iter().flatten() {
            *rows.entry(agent.as_str()).or_default() += 1;
        }
        let mut accounting = Accounting {
            acknowledged: 0,
            rows: stored.len(),
            lost: Vec::new(),
            duplicated: Vec::new(),
            unacknowledged: Vec::new(),
            unknown: 0,
            unknown_stored: 0,
            unanswered: 0,
            unanswered_stored: 0,
        };
        for record in self.of(index) {
            let Some(agent) = self.user_agent(record) else {
                continue;
            };
            let found = rows.remove(agent.as_str()).unwrap_or(0);
            let ok = record.status() == Some(200);
            let unknown = matches!(
                record.outcome,
                Outcome::Response {
                    outcome_unknown: true,
                    ..
                }
            );
            // The request was sent and no answer came: the client cannot know either way.
            let unanswered = matches!(
                record.outcome,
                Outcome::Closed | Outcome::Timeout | Outcome::Error(_)
            );
            accounting.acknowledged += usize::from(ok);
            accounting.unknown += usize::from(unknown);
            accounting.unanswered += usize::from(unanswered);
            match (ok, found) {
                (true, 1) | (false, 0) => {}
                (_, found) if found > 1 => accounting.duplicated.push(self.describe(record)),
                (true, _) => accounting.lost.push(self.describe(record)),
                // The client was told the visit may have been stored: one row is the truth too.
                (false, _) if unknown => accounting.unknown_stored += 1,
                (false, _) if unanswered => accounting.unanswered_stored += 1,
                (false, _) => accounting.unacknowledged.push(self.describe(record)),
            }
        }
        // Rows no request of this load sent (or of another target): also wrong here.
        accounting.unacknowledged.extend(
            rows.keys()
                .map(|agent| format!("a row nobody asked for: {agent:?}")),
        );
        accounting
    }

    fn describe(&self, record: &Record) -> String {
        format!(
            "request #{} sent at +{:?}, answered {} at +{:?}",
            record.id,
            record.start.duration_since(self.started),
            record.outcome.label(),
            record.end.duration_since(self.started)
        )
    }

    /// How many answers of target `index` had `status`.
    pub fn count_status(&self, index: usize, status: u16) -> usize {
        self.of(index)
            .filter(|record| record.status() == Some(status))
            .count()
    }

    /// Every record of target `index` that is not one of `statuses` (for assertion messages).
    pub fn other_than(&self, index: usize, statuses: &[u16]) -> Vec<&Record> {
        self.of(index)
            .filter(|record| !record.status().is_some_and(|status| statuses.contains(&status)))
            .collect()
    }

    /// The `p`-th percentile (0-100) latency of `records`, or zero when empty.
    pub fn percentile<'a>(records: impl Iterator<Item = &'a Record>, p: f64) -> Duration {
        let mut latencies: Vec<Duration> = records.map(Record::latency).collect();
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        latencies.sort_unstable();
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies[rank.clamp(1, latencies.len()) - 1]
    }

    /// Outcome counts per target, with p50/p99/max latency: what a test prints for the record.
    pub fn summary(&self) -> String {
        let seconds = self.ended.duration_since(self.started).as_secs_f64();
        let mut text = format!(
            "{} requests in {seconds:.1} s ({:.0}/s)\n",
            self.records.len(),
            self.records.len() as f64 / seconds.max(0.001)
        );
        for (index, target) in self.spec.targets.iter().enumerate() {
            let mut counts = std::collections::BTreeMap::<String, usize>::new();
            for record in self.of(index) {
                *counts.entry(record.outcome.label()).or_default() += 1;
            }
            text.push_str(&format!(
                "  GET {} x{} conns: {counts:?} p50 {:?} p99 {:?} max {:?}\n",
                target.path,
                target.connections,
                Self::percentile(self.of(index), 50.0),
                Self::percentile(self.of(index), 99.0),
                Self::percentile(self.of(index), 100.0),
            ));
        }
        text
    }
}

/// Rows matched against answers, request by request.
#[derive(Debug)]
pub struct Accounting {
    /// 200 answers.
    pub acknowledged: usize,
    /// Rows in the table.
    pub rows: usize,
    /// 200s without a row.
    pub lost: Vec<String>,
    /// 200s with more than one row.
    pub duplicated: Vec<String>,
    /// Rows for requests whose answer said nothing was stored (or that were never sent).
    pub unacknowledged: Vec<String>,
    /// Answers that said the outcome is unknown (the visit may have been stored) …
    pub unknown: usize,
    /// … and how many of those were stored.
    pub unknown_stored: usize,
    /// Requests sent that got no answer (closed, timed out) …
    pub unanswered: usize,
    /// … and how many of those were stored.
    pub unanswered_stored: usize,
}

impl Accounting {
    /// Every 200 one row, every other request none, and no outcome unknown.
    pub fn is_exact(&self) -> bool {
        self.keeps_the_promises() && self.unknown == 0 && self.unanswered_stored == 0
    }

    /// Every 200 one row, nothing stored twice, no row for an answer that said nothing was
    /// stored; a request told its outcome is unknown, or never answered, may have one row
    /// (counted in [`unknown_stored`](Self::unknown_stored) and
    /// [`unanswered_stored`](Self::unanswered_stored)).
    pub fn keeps_the_promises(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.unacknowledged.is_empty()
    }
}

impl std::fmt::Display for Accounting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} answers 200, {} rows; lost {}, duplicated {}, stored although the answer said not {}; outcome unknown {} ({} stored), no answer {} ({} stored)",
            self.acknowledged,
            self.rows,
            self.lost.len(),
            self.duplicated.len(),
            self.unacknowledged.len(),
            self.unknown,
            self.unknown_stored,
            self.unanswered,
            self.unanswered_stored
        )?;
        for (what, list) in [
            ("lost", &self.lost),
            ("duplicated", &self.duplicated),
            ("stored although the answer said not", &self.unacknowledged),
        ] {
            for entry in list.iter().take(10) {
                write!(f, "\n  {what}: {entry}")?;
            }
        }
        Ok(())
    }
}
