//! The VPC twin's tests. They need root (network namespaces, nftables); without it they fail
//! with the reason — `tests/run` leaves them out for non-root users with
//! `-E 'not binary_id(vpc-twin::twin)'` and says so.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::Write as _;
use std::process::{Command, Stdio};

use vpc_twin::{firewall, program};

/// Every ruleset the twin would load passes `nft -c` (check mode: parsed and validated by the
/// kernel, nothing committed).
#[test]
fn compiled_rulesets_pass_nft_check_mode() {
    vpc_twin::require_root().unwrap();
    let topology = program::load().unwrap();
    let members = firewall::Members::new();
    let mut rulesets = vec![
        ("vpc router".to_owned(), firewall::vpc_router()),
        ("nat".to_owned(), firewall::nat_gateway(&topology)),
    ];
    for host in topology.hosts.iter().filter(|host| !host.groups.is_empty()) {
        rulesets.push((
            host.name.clone(),
            firewall::security_groups(&topology, host, &members),
        ));
    }
    for (name, text) in rulesets {
        let mut child = Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running nft (apt-get install -y nftables)");
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "nft -c rejected the ruleset of {name}:\n{}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// One twin at a time in this process too (nextest runs each test in its own process; the twin
/// also holds a machine-wide lock).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn start(topology: vpc_twin::Topology) -> vpc_twin::Twin {
    let twin = vpc_twin::Twin::start(topology).unwrap();
    println!("twin started in {:?}", twin.start_time);
    for (phase, took) in &twin.phases {
        println!("  {phase}: {took:?}");
    }
    twin
}

fn stop(twin: vpc_twin::Twin) {
    let took = twin.stop().unwrap();
    println!("twin stopped in {took:?}");
    let left = vpc_twin::ns::run("ip", &["netns", "list"]).unwrap();
    assert!(
        !left.lines().any(|line| line.starts_with(vpc_twin::PREFIX)),
        "namespaces left behind:\n{left}"
    );
}

/// The original walkthrough, from `internet`, through App Runner's endpoint, the connector,
/// the security groups, the VPC resolver and NAT.
#[test]
fn the_walkthrough_runs_through_the_vpc() {
    let _serial = serial();
    let twin = start(program::load().unwrap());

    let visit = twin.get("/").unwrap();
    assert_eq!(visit.status, 200, "GET /: {visit:?}\n{}", twin.all_logs());
    assert_eq!(
        visit.json().unwrap(),
        serde_json::json!({"Response": "Registered request"})
    );
    let stored = twin.stored_user_agents().unwrap();
    assert_eq!(
        stored,
        [Some("vpc-twin/1".to_owned())],
        "the visit is a row in aurora"
    );

    let recent = twin.get("/recent-visits").unwrap();
    assert_eq!(recent.status, 200, "{recent:?}");
    assert_eq!(recent.json().unwrap()["Response"][0]["user_agent"], "vpc-twin/1");

    let private = twin.get("/ecs-private-service").unwrap();
    assert_eq!(private.status, 200, "{private:?}\n{}", twin.all_logs());
    let task = &private.json().unwrap()["Response"];
    assert_eq!(
        task["IpAddress"],
        twin.topology.host("task-1").address.to_string()
    );
    assert_eq!(task["TaskArn"], twin.task_arn(1).unwrap());

    let connection = twin.get("/test-connection").unwrap();
    assert_eq!(connection.status, 200, "{connection:?}");
    let endpoint = &twin.topology.database.endpoint;
    assert!(
        connection.body.contains(endpoint),
        "reached by name: {connection:?}"
    );

    for path in ["/docs", "/openapi.json"] {
        let answer = twin.get(path).unwrap();
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
    }
    println!("walkthrough: {visit:?}\n{private:?}\n{connection:?}");
    stop(twin);
}

/// Every path the program opens is open, every other is silently dropped — checked against
/// the rules' verdicts both ways, printed with the rule that decides each.
#[test]
fn the_reachability_matrix_is_what_the_rules_say() {
    let _serial = serial();
    let twin = start(program::load().unwrap());
    let (table, mismatches) = twin.matrix(std::time::Duration::from_millis(1500)).unwrap();
    println!("reachability matrix (TCP connect, 1.5 s):\n{table}");
    assert!(
        mismatches.is_empty(),
        "the network disagrees with the program:\n{}",
        mismatches.join("\n")
    );
    stop(twin);
}
