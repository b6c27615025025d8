//! Hostile input: schemathesis against the published OpenAPI document, and by hand the inputs
//! a client library would never send — SQL in the User-Agent, 10 KB of it, bytes that are not
//! UTF-8, control characters, no User-Agent at all, 100 headers, a very long path, HTTP/1.0,
//! pipelining, requests cut short, idle connections by the hundred. Never a 5xx, and the table
//! holds exactly the visits that were acknowledged, each with the User-Agent as documented.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{EcsMetadata, ServiceCommand};
use reliability_tests::raw::{Exchange, exchange, read_responses};
use reliability_tests::{Stack, long_form, one_at_a_time};

const TIMEOUT: Duration = Duration::from_secs(10);

/// What a case must do to the visits table.
#[derive(Debug)]
enum Expect {
    /// 200, and exactly this User-Agent stored (`None`: NULL).
    Stored(Option<String>),
    /// A 4xx, and nothing stored.
    Refused,
    /// Either a 4xx and nothing stored, or 200 and this stored: the HTTP layer may refuse
    /// bytes the standard forbids, or pass them on; it must not fail or store them wrongly.
    RefusedOrStored(Option<String>),
    /// Not `GET /`: any answer but a 5xx, and nothing stored.
    NoVisit,
}

fn get_root_with_agent(agent: &[u8]) -> Vec<u8> {
    let mut request = b"GET / HTTP/1.1\r\nHost: reliability\r\nUser-Agent: ".to_vec();
    request.extend_from_slice(agent);
    request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    request
}

fn cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let sql = "x'); DROP TABLE access; --";
    let sql_quotes = "Robert'); DELETE FROM access WHERE ('1'='1";
    let long_ascii = "A".repeat(10 * 1024);
    let long_multibyte = "é".repeat(5 * 1024);
    let hundred_headers: String = (0..100).map(|n| format!("X-Filler-{n}: {n}\r\n")).collect();
    let long_path = format!("/{}", "a".repeat(64 * 1024));
    let huge_path = format!("/{}", "a".repeat(1024 * 1024));
    let long_query = format!("/?q={}", "x".repeat(8 * 1024));
    vec![
        ("SQL metacharacters", get_root_with_agent(sql.as_bytes()), Expect::Stored(Some(sql.to_owned()))),
        ("SQL with quotes", get_root_with_agent(sql_quotes.as_bytes()), Expect::Stored(Some(sql_quotes.to_owned()))),
        ("10 KB ASCII", get_root_with_agent(long_ascii.as_bytes()), Expect::Stored(Some("A".repeat(250)))),
        ("10 KB two-byte characters", get_root_with_agent(long_multibyte.as_bytes()), Expect::Stored(Some("é".repeat(250)))),
        ("not UTF-8", get_root_with_agent(b"agent \xff\xfe\xc0"), Expect::Stored(Some("agent \u{fffd}\u{fffd}\u{fffd}".to_owned()))),
        ("obs-text Latin-1", get_root_with_agent(b"caf\xe9"), Expect::Stored(Some("caf\u{fffd}".to_owned()))),
        ("tab", get_root_with_agent(b"a\tb"), Expect::Stored(Some("a\tb".to_owned()))),
        ("control characters", get_root_with_agent(b"a\x01b\x1bc"), Expect::RefusedOrStored(Some("a\u{1}b\u{1b}c".to_owned()))),
        ("DEL", get_root_with_agent(b"a\x7fb"), Expect::RefusedOrStored(Some("a\u{7f}b".to_owned()))),
        ("NUL", get_root_with_agent(b"a\x00b"), Expect::RefusedOrStored(Some("a\u{0}b".to_owned()))),
        ("bare CR", get_root_with_agent(b"a\rb"), Expect::RefusedOrStored(Some("a\rb".to_owned()))),
        ("empty", get_root_with_agent(b""), Expect::Stored(Some(String::new()))),
        ("absent", b"GET / HTTP/1.1\r\nHost: reliability\r\nConnection: close\r\n\r\n".to_vec(), Expect::Stored(None)),
        (
            "two User-Agents",
            b"GET / HTTP/1.1\r\nHost: r\r\nUser-Agent: first\r\nUser-Agent: second\r\nConnection: close\r\n\r\n".to_vec(),
            Expect::Stored(Some("first".to_owned())),
        ),
        (
            "100 headers",
            format!("GET / HTTP/1.1\r\nHost: r\r\nUser-Agent: many-headers\r\n{hundred_headers}Connection: close\r\n\r\n").into_bytes(),
            Expect::RefusedOrStored(Some("many-headers".to_owned())),
        ),
        (
            "64 KB path",
            format!("GET {long_path} HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n").into_bytes(),
            Expect::NoVisit,
        ),
        (
            "1 MB path",
            format!("GET {huge_path} HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n").into_bytes(),
            Expect::NoVisit,
        ),
        (
            "8 KB query string on /",
            format!("GET {long_query} HTTP/1.1\r\nHost: r\r\nUser-Agent: long-query\r\nConnection: close\r\n\r\n").into_bytes(),
            Expect::Stored(Some("long-query".to_owned())),
        ),
        (
            "absolute-form target",
            b"GET http://elsewhere.example/ HTTP/1.1\r\nHost: elsewhere.example\r\nUser-Agent: absolute\r\nConnection: close\r\n\r\n".to_vec(),
            Expect::Stored(Some("absolute".to_owned())),
        ),
        ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\nUser-Agent: http10\r\n\r\n".to_vec(), Expect::Stored(Some("http10".to_owned()))),
        ("path traversal", b"GET /../../etc/passwd HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n".to_vec(), Expect::NoVisit),
        ("encoded traversal", b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n".to_vec(), Expect::NoVisit),
        ("unknown method", b"BREW / HTTP/1.1\r\nHost: r\r\nUser-Agent: teapot\r\nConnection: close\r\n\r\n".to_vec(), Expect::Refused),
        (
            "POST with a body",
            b"POST / HTTP/1.1\r\nHost: r\r\nUser-Agent: poster\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec(),
            Expect::Refused,
        ),
        (
            "Content-Length and chunked (smuggling)",
            b"GET / HTTP/1.1\r\nHost: r\r\nUser-Agent: smuggler\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n".to_vec(),
            Expect::RefusedOrStored(Some("smuggler".to_owned())),
        ),
        (
            "invalid chunk size",
            b"GET / HTTP/1.1\r\nHost: r\r\nUser-Agent: bad-chunk\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n".to_vec(),
            Expect::RefusedOrStored(Some("bad-chunk".to_owned())),
        ),
        ("header without a colon", b"GET / HTTP/1.1\r\nHost: r\r\nNoColonHere\r\nConnection: close\r\n\r\n".to_vec(), Expect::Refused),
        ("space before colon", b"GET / HTTP/1.1\r\nHost: r\r\nUser-Agent : spaced\r\nConnection: close\r\n\r\n".to_vec(), Expect::Refused),
        ("not HTTP at all", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(), Expect::NoVisit),
        ("lowercase method", b"get / HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n".to_vec(), Expect::NoVisit),
        (
            "Expect: 100-continue without a body",
            b"GET / HTTP/1.1\r\nHost: r\r\nUser-Agent: continue\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n".to_vec(),
            Expect::Stored(Some("continue".to_owned())),
        ),
    ]
}

/// The final (non-1xx) statuses of an exchange.
fn final_statuses(exchange: &Exchange) -> Vec<u16> {
    exchange
        .responses
        .iter()
        .map(|response| response.status)
        .filter(|status| *status >= 200)
        .collect()
}

fn stored_user_agents(stack: &Stack) -> Vec<Option<String>> {
    let mut agents = stack
        .pg
        .with_admin_client(&stack.db, |client| {
            Ok(client
                .query("SELECT user_agent FROM access", &[])?
                .iter()
                .map(|row| row.get::<_, Option<String>>(0))
                .collect::<Vec<_>>())
        })
        .expect("visits read");
    agents.sort();
    agents
}

#[test]
fn hostile_requests_get_no_5xx_and_the_table_holds_exactly_what_was_acknowledged() {
    let _serial = one_at_a_time();
    let stack = Stack::start(&[]).expect("PostgreSQL and the frontend start");
    let addr = stack.addr();
    let mut expected: Vec<Option<String>> = Vec::new();
    let mut tried = 0;
    let mut outcomes = Vec::new();

    for (name, request, expect) in cases() {
        tried += 1;
        let answer = exchange(addr, &request, 1, TIMEOUT).unwrap_or_else(|error| panic!("{name}: {error:#}"));
        let statuses = final_statuses(&answer);
        let status = statuses.first().copied();
        outcomes.push(format!("{name}: {status:?}"));
        assert!(
            status.is_some_and(|status| status < 500) || (status.is_none() && answer.closed),
            "{name}: answered {statuses:?} (closed: {})",
            answer.closed
        );
        // Our own refusals (routing) are problem+json, like every other error.
        if let Some(response) = answer
            .responses
            .iter()
            .find(|response| matches!(response.status, 404 | 405))
        {
            assert_eq!(
                response.header("content-type"),
                Some(&b"application/problem+json"[..]),
                "{name}: {} without problem+json",
                response.status
            );
        }
        // RFC 9110: a 405 names the methods that would work.
        if let Some(response) = answer.responses.iter().find(|response| response.status == 405) {
            assert_eq!(
                response.header("allow"),
                Some(&b"GET, HEAD"[..]),
                "{name}: 405 without Allow"
            );
        }
        match expect {
            Expect::Stored(agent) => {
                assert_eq!(status, Some(200), "{name}: must be recorded");
                expected.push(agent);
            }
            Expect::Refused => assert!(
                status.is_none_or(|status| (400..500).contains(&status)),
                "{name}: must be refused, got {status:?}"
            ),
            Expect::RefusedOrStored(agent) => {
                if status == Some(200) {
                    expected.push(agent);
                }
            }
            Expect::NoVisit => {}
        }
    }

    // HTTP/1.0 keep-alive, and 50 requests pipelined in one write: each answered, in order.
    let keep_alive_10 =
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nUser-Agent: http10-keepalive\r\n\r\n".repeat(2);
    let answer = exchange(addr, &keep_alive_10, 2, TIMEOUT).expect("HTTP/1.0 keep-alive");
    assert_eq!(final_statuses(&answer), vec![200, 200], "HTTP/1.0 keep-alive");
    expected.extend([
        Some("http10-keepalive".to_owned()),
        Some("http10-keepalive".to_owned()),
    ]);
    tried += 2;
    let pipelined: Vec<u8> = (0..50)
        .flat_map(|n| format!("GET / HTTP/1.1\r\nHost: r\r\nUser-Agent: pipelined-{n}\r\n\r\n").into_bytes())
        .collect();
    let answer = exchange(addr, &pipelined, 50, TIMEOUT).expect("pipelined requests");
    assert_eq!(final_statuses(&answer), vec![200; 50], "pipelined requests");
    expected.extend((0..50).map(|n| Some(format!("pipelined-{n}"))));
    tried += 50;

    // Slowloris and idle keep-alive connections by the hundred, held open while an honest
    // client is served; then the half-sent requests are abandoned (nothing may be stored).
    let idle = if long_form() { 250 } else { 200 };
    let mut held: Vec<TcpStream> = Vec::new();
    for n in 0..idle {
        let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connection");
        let partial: &[u8] = if n % 2 == 0 {
            b"GET / HTTP/1.1\r\nHost: r\r\nUser-Agent: slowloris"
        } else {
            b""
        };
        stream.write_all(partial).expect("partial request");
        held.push(stream);
    }
    tried += idle;
    let honest_started = Instant::now();
    for n in 0..20 {
        let answer = exchange(
            addr,
            &get_root_with_agent(format!("honest-{n}").as_bytes()),
            1,
            TIMEOUT,
        )
        .expect("an honest request among idle connections");
        assert_eq!(
            final_statuses(&answer),
            vec![200],
            "an honest request among {idle} idle connections"
        );
        expected.push(Some(format!("honest-{n}")));
    }
    let honest = honest_started.elapsed();
    assert!(
        honest < Duration::from_secs(5),
        "20 honest requests took {honest:?} among idle connections"
    );
    // A held connection that finishes its request late is still served.
    let mut late = held.swap_remove(0);
    late.write_all(b"-late\r\nConnection: close\r\n\r\n")
        .expect("rest of the request");
    late.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let answer = read_responses(&mut late, 1, TIMEOUT).expect("late request");
    assert_eq!(final_statuses(&answer), vec![200], "a slowly sent request");
    expected.push(Some("slowloris-late".to_owned()));
    drop(held);
    std::thread::sleep(Duration::from_millis(300));

    expected.sort();
    assert_eq!(
        stored_user_agents(&stack),
        expected,
        "what the table holds vs what was acknowledged"
    );
    assert!(
        stack.frontend.logs().contains("\"status\":200"),
        "the request log is written"
    );
    println!(
        "hostile input: {tried} inputs, {} visits stored exactly as acknowledged\n{}",
        expected.len(),
        outcomes.join("\n")
    );
}

fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let venv = harness::workspace_root().join(".venv/bin/schemathesis");
    assert!(
        venv.is_file(),
        "schemathesis was not found: from the workspace root run \
         `python3 -m venv .venv && .venv/bin/pip install -r tests/reliability/requirements.txt` \
         (or set $SCHEMATHESIS)"
    );
    venv
}

#[test]
fn schemathesis_finds_no_5xx_and_no_schema_violation_in_the_openapi_document() {
    let _serial = one_at_a_time();
    let metadata = EcsMetadata::start().expect("metadata endpoint");
    let private_service =
        ServiceCommand::new(harness::binary("private-service").expect("private-service binary"))
            .env("ECS_CONTAINER_METADATA_URI_V4", metadata.uri_v4())
            .spawn()
            .expect("private service starts");
    let stack = Stack::start(&[("ECSPRIVATESERVICE", private_service.url("").as_str())])
        .expect("PostgreSQL and the frontend start");
    let examples = if long_form() { "200" } else { "25" };
    let reports = tempfile::tempdir().expect("report directory");
    let junit = reports.path().join("junit.xml");
    let output = Command::new(schemathesis())
        .arg("run")
        .arg(stack.frontend.url("/openapi.json"))
        .args([
            "--checks",
            "all",
            "--max-examples",
            examples,
            "--seed",
            "5",
            "--no-color",
            "--workers",
            "2",
        ])
        .args([
            "--request-timeout",
            "10",
            "--report",
            "junit",
            "--report-junit-path",
        ])
        .arg(&junit)
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(reports.path())
        .output()
        .expect("schemathesis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}");
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{text}",
        output.status
    );
    let report = std::fs::read_to_string(&junit).unwrap_or_default();
    assert!(
        report.contains("<testcase"),
        "schemathesis ran no operation:\n{text}"
    );
    // The service saw the traffic and never answered 5xx (its own request log).
    let logs = stack.frontend.logs();
    let requests = logs
        .lines()
        .filter(|line| line.contains("\"message\":\"request\""))
        .count();
    let server_errors = logs
        .lines()
        .filter(|line| line.contains("\"message\":\"request\"") && line.contains("\"status\":5"))
        .count();
    println!("schemathesis: {requests} requests logged by the frontend, {server_errors} with 5xx");
    assert!(requests > 20, "schemathesis sent only {requests} requests");
    assert_eq!(server_errors, 0, "5xx answers in the request log");
}
