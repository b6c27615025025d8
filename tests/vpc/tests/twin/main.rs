//! The VPC twin's tests. They need root (network namespaces, nftables); without it they fail
//! with the reason — `tests/run` leaves them out for non-root users with
//! `-E 'not binary_id(vpc-twin::twin)'` and says so.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vpc_twin::{firewall, program};

mod aurora;

/// A program the twin's tests run, with the name of the rule that admits its frontend to the
/// database (what the fault test removes).
#[derive(Clone, Copy, Debug)]
struct Program {
    /// Relative to the workspace.
    path: &'static str,
    db_ingress: &'static str,
}

const APP_RUNNER: Program = Program {
    path: program::APP_RUNNER_PROGRAM,
    db_ingress: "db-from-connector",
};

const ECS_EXPRESS: Program = Program {
    path: program::EXPRESS_PROGRAM,
    db_ingress: "db-from-frontend",
};

impl Program {
    fn path(self) -> std::path::PathBuf {
        program::workspace_program(self.path)
    }

    fn topology(self) -> vpc_twin::Topology {
        program::from_path(&self.path()).unwrap()
    }
}

/// The behaviour both programs share is tested on each: `on_both_programs!(check)` makes the
/// tests `check::app_runner` and `check::ecs_express` of the function `check(Program)`, each its
/// own test (and twin), so either can be run or fail alone.
macro_rules! on_both_programs {
    ($check:ident) => {
        mod $check {
            #[test]
            fn app_runner() {
                super::$check(super::APP_RUNNER)
            }

            #[test]
            fn ecs_express() {
                super::$check(super::ECS_EXPRESS)
            }
        }
    };
}

mod cloud_map;

/// Every ruleset the twin would load, for both programs, passes `nft -c` (check mode: parsed
/// and validated by the kernel, nothing committed).
#[test]
fn compiled_rulesets_pass_nft_check_mode() {
    vpc_twin::require_root().unwrap();
    let mut rulesets = Vec::new();
    for program in [APP_RUNNER, ECS_EXPRESS] {
        let topology = program.topology();
        let members = firewall::Members::new();
        rulesets.push((
            format!("{}: vpc router", program.path),
            firewall::vpc_router(&topology),
        ));
        rulesets.push((format!("{}: nat", program.path), firewall::nat_gateway(&topology)));
        if let Some(alb) = topology.load_balancer() {
            rulesets.push((
                format!("{}: load balancer", program.path),
                firewall::load_balancer(&topology, alb),
            ));
        }
        for host in topology.hosts.iter().filter(|host| !host.groups.is_empty()) {
            rulesets.push((
                format!("{}: {}", program.path, host.name),
                firewall::security_groups(&topology, host, &members),
            ));
        }
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

/// Stops the twin; `Twin::stop` fails if any of its namespaces is left. (Not every `avt-*`
/// namespace is checked: another run's leftover test may have just planted one.)
fn stop_twin(twin: vpc_twin::Twin) {
    let took = twin.stop().unwrap();
    println!("twin stopped in {took:?}");
}

/// The original walkthrough, from `internet`: through App Runner's endpoint, the connector and
/// NAT; or through Express Mode's load balancer to the task, which leaves by its public IP.
/// Both through the security groups and the VPC resolver.
fn the_walkthrough_runs_through_the_vpc(program: Program) {
    let _serial = serial();
    let twin = start(program.topology());

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
    // One of the running tasks, with its own address and ARN (which one is the resolver's order).
    let task = &private.json().unwrap()["Response"];
    let answered_by = (1..=twin.topology.desired_tasks).find(|number| {
        task["IpAddress"] == twin.topology.host(&format!("task-{number}")).address.to_string()
            && task["TaskArn"] == twin.task_arn(*number).unwrap()
    });
    assert!(answered_by.is_some(), "not a running task's own answer: {task}");

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
    stop_twin(twin);
}

on_both_programs!(the_walkthrough_runs_through_the_vpc);

/// Every path the program opens is open, every other is silently dropped — checked against
/// the rules' verdicts both ways, printed with the rule that decides each.
fn the_reachability_matrix_is_what_the_rules_say(program: Program) {
    let _serial = serial();
    let twin = start(program.topology());
    let (table, mismatches) = twin.matrix().unwrap();
    println!(
        "reachability matrix (TCP connect; no answer within {:?} = blocked):\n{table}",
        vpc_twin::twin::NO_ANSWER_AFTER
    );
    assert!(
        mismatches.is_empty(),
        "the network disagrees with the program:\n{}",
        mismatches.join("\n")
    );
    stop_twin(twin);
}

on_both_programs!(the_reachability_matrix_is_what_the_rules_say);

/// A copy of the program with one change, read back from its file as `PULUMI_PROGRAM` would be.
fn mutated(program: Program, change: impl Fn(&str) -> anyhow::Result<String>) -> vpc_twin::Topology {
    let text = std::fs::read_to_string(program.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Pulumi.yaml");
    std::fs::write(&path, change(&text).unwrap()).unwrap();
    program::from_path(&path).unwrap()
}

/// The twin of a mutated program: its matrix must follow the mutated rules too.
fn start_checked(topology: vpc_twin::Topology) -> vpc_twin::Twin {
    let twin = start(topology);
    let (table, mismatches) = twin.matrix().unwrap();
    println!("reachability matrix of the mutated program:\n{table}");
    assert!(
        mismatches.is_empty(),
        "the network disagrees with the program:\n{}",
        mismatches.join("\n")
    );
    twin
}

fn timed_get(twin: &vpc_twin::Twin, path: &str) -> (vpc_twin::twin::Answer, Duration) {
    let started = Instant::now();
    let answer = twin.get(path).unwrap();
    (answer, started.elapsed())
}

/// The bound of a visit while the database cannot be reached: the acquire timeout (2 s in the
/// twin) twice, plus 2 s (as the reliability suites allow).
const VISIT_BOUND: Duration = Duration::from_secs(6);

/// Without the rule that admits the frontend (`db-from-connector`, `db-from-frontend`), a
/// visit is a 503 problem in time; the private service is still reached.
fn without_the_database_ingress_rule_a_visit_is_a_503_problem_within_its_bound(program: Program) {
    let _serial = serial();
    let twin = start_checked(mutated(program, |text| {
        program::without_resource(text, program.db_ingress)
    }));
    let (visit, took) = timed_get(&twin, "/");
    println!(
        "GET / without {}: {} in {took:?}: {}",
        program.db_ingress, visit.status, visit.body
    );
    assert_eq!(visit.status, 503, "{visit:?}");
    assert!(visit.is_problem(), "{visit:?}");
    assert!(took <= VISIT_BOUND, "answered after {took:?}");
    assert!(twin.stored_user_agents().unwrap().is_empty());
    let private = twin.get("/ecs-private-service").unwrap();
    assert_eq!(
        private.status, 200,
        "the private service is still reachable: {private:?}"
    );
    stop_twin(twin);
}

on_both_programs!(without_the_database_ingress_rule_a_visit_is_a_503_problem_within_its_bound);

/// Private hosted zones resolve only with enableDnsHostnames on as well as enableDnsSupport, and
/// EC2's default for the first is off: without it the Cloud Map name does not resolve and the
/// relay is a 502 problem, while the database (an RDS name, public DNS) is still reached.
#[test]
fn without_dns_hostnames_the_cloud_map_name_does_not_resolve() {
    let _serial = serial();
    let twin = start_checked(mutated(APP_RUNNER, |text| {
        let changed = text.replace("enableDnsHostnames: true", "enableDnsHostnames: false");
        anyhow::ensure!(changed != text, "the program sets enableDnsHostnames");
        Ok(changed)
    }));
    let (private, took) = timed_get(&twin, "/ecs-private-service");
    println!(
        "GET /ecs-private-service without enableDnsHostnames: {} in {took:?}: {}",
        private.status, private.body
    );
    assert_eq!(private.status, 502, "{private:?}");
    assert!(private.is_problem(), "{private:?}");
    let visit = twin.get("/").unwrap();
    assert_eq!(visit.status, 200, "the database is still reached: {visit:?}");
    stop_twin(twin);
}

#[test]
fn without_the_private_service_ingress_rule_the_relay_is_a_502_or_504_problem() {
    let _serial = serial();
    let twin = start_checked(mutated(APP_RUNNER, |text| {
        program::without_resource(text, "private-service-from-connector")
    }));
    let (private, took) = timed_get(&twin, "/ecs-private-service");
    println!(
        "GET /ecs-private-service without private-service-from-connector: {} in {took:?}: {}",
        private.status, private.body
    );
    assert!(matches!(private.status, 502 | 504), "{private:?}");
    assert!(private.is_problem(), "{private:?}");
    assert!(
        took <= Duration::from_secs(3),
        "answered after {took:?} (timeout 2 s + 1 s)"
    );
    let visit = twin.get("/").unwrap();
    assert_eq!(visit.status, 200, "the database is still reachable: {visit:?}");
    stop_twin(twin);
}

/// The most common App Runner VPC mistake: VPC egress without a way to Secrets Manager.
fn secrets_manager_unreachable(twin: vpc_twin::Twin, what: &str) {
    let (visit, took) = timed_get(&twin, "/");
    println!("GET / {what}: {} in {took:?}: {}", visit.status, visit.body);
    assert_eq!(visit.status, 503, "{visit:?}");
    assert!(visit.is_problem(), "{visit:?}");
    assert!(took <= VISIT_BOUND, "answered after {took:?}");
    // The SDK gives up after its retries; the log then names the cause and the two cures.
    let line = vpc_twin::ns::wait_for("the frontend's diagnosis", Duration::from_secs(45), || {
        let _ = twin.get("/");
        Ok(twin
            .frontend_logs()
            .lines()
            .find(|line| line.contains("Secrets Manager is unreachable"))
            .map(str::to_owned))
    })
    .unwrap_or_else(|error| panic!("{error:#}\n{}", twin.frontend_logs()));
    println!("frontend log: {line}");
    assert!(line.contains("NAT gateway"), "{line}");
    assert!(line.contains("VPC endpoint"), "{line}");
    stop_twin(twin);
}

#[test]
fn without_a_nat_gateway_secrets_manager_is_unreachable_and_the_log_says_why() {
    let _serial = serial();
    let twin = start_checked(mutated(APP_RUNNER, |text| {
        program::with_config_default(text, "natStrategy", "None")
    }));
    secrets_manager_unreachable(twin, "with natGateways None");
}

#[test]
fn without_the_connectors_https_egress_secrets_manager_is_unreachable_and_the_log_says_why() {
    let _serial = serial();
    let twin = start_checked(mutated(APP_RUNNER, |text| {
        program::without_resource(text, "connector-https-out")
    }));
    secrets_manager_unreachable(twin, "without connector-https-out");
}

/// Rotation: while `GET /` is loaded from `internet` (App Runner's endpoint, or Express Mode's
/// load balancer), the database password changes, the secret at the Secrets Manager stand-in
/// (reached through the NAT host from App Runner's connector, through the internet gateway by
/// the Express task's public IP) gets the new value and the frontend's sessions are ended. The
/// reliability suite's accounting applies: every 200 exactly one row, no row without a 200, no
/// restart.
///
/// WEAKER THAN ISSUE 11, which says "no failed request": this allows the reliability suite's
/// bound of one 503 problem per pool connection. The frontend retries a statement whose session
/// was ended on another connection, so a request fails only when no connection can be opened
/// within DB_ACQUIRE_TIMEOUT (2 s here) — the new connections have to re-read the secret
/// from outside the VPC, then do TLS and SCRAM; on a loaded machine that can take longer.
/// Observed in review runs: no failed request (also under CPU load).
fn rotating_the_secret_under_load_keeps_every_visit_accounted_for(program: Program) {
    use reliability_tests::{Load, LoadSpec, Target, assert_rotation_cost};
    const POOL_SIZE: usize = 4; // the frontend's default DB_POOL_SIZE
    let _serial = serial();
    let mut twin = start(program.topology());
    let pid = twin.frontend_pid();
    let (before, after) = (Duration::from_secs(3), Duration::from_secs(6));
    let spec = LoadSpec::new(twin.public_addr(), vec![Target::visits(64)], before + after);
    // The load's threads are made in `internet`, so every connection comes from there.
    let load = vpc_twin::ns::in_namespace(&twin.namespace_of("internet"), || Load::start(spec))
        .unwrap()
        .unwrap();
    std::thread::sleep(before);
    let new_password = "rotated-under-load-5d1c9e";
    twin.set_db_password(new_password).unwrap();
    twin.rotate_secret(new_password).unwrap();
    let ended = twin.end_frontend_sessions().unwrap();
    let rotated = Instant::now();
    let report = load.finish().unwrap();
    println!(
        "rotation ({}): ended {ended} sessions\n{}",
        program.path,
        report.summary()
    );
    assert!(
        ended > 0,
        "the frontend held no session to end: the rotation was not exercised"
    );

    let failed = assert_rotation_cost(&report, POOL_SIZE, rotated, &twin.all_logs());
    let secret_reads = twin
        .frontend_logs()
        .lines()
        .filter(|line| line.contains("database credentials read from Secrets Manager"))
        .count();
    assert!(secret_reads >= 2, "the secret was re-read ({secret_reads} reads)");
    assert_eq!(twin.frontend_pid(), pid, "no restart");

    let accounting = report.account(0, &twin.stored_user_agents().unwrap());
    assert!(accounting.is_exact(), "across the rotation: {accounting}");
    println!(
        "rotation ({}): {} failed (limit {POOL_SIZE}), {} answers 200 = {} rows, secret read {secret_reads} times",
        program.path,
        failed,
        report.count_status(0, 200),
        accounting.rows
    );
    stop_twin(twin);
}

on_both_programs!(rotating_the_secret_under_load_keeps_every_visit_accounted_for);

/// A subnet's router keeps its MAC when an ENI joins the subnet. A Linux bridge takes the lowest
/// MAC among its ports unless given one; App Runner's connector, which reaches task-2 through
/// the router of its subnet, would then send to a MAC nobody answers until its ARP entry expired
/// (a task started in the connector's subnet once cut the relay off task-2 for minutes).
#[test]
fn a_subnets_router_keeps_its_mac_when_an_eni_with_a_lower_one_joins() {
    let _serial = serial();
    let twin = start(APP_RUNNER.topology());
    let routed = |what: &str| {
        let connect = twin
            .connect("apprunner", "task-2", 8080, Duration::from_secs(2))
            .unwrap();
        assert_eq!(
            connect,
            vpc_twin::ns::Connect::Connected,
            "apprunner -> task-2:8080 {what}"
        );
    };
    routed("before");
    let router = vpc_twin::twin::ROUTER;
    let bridges = vpc_twin::ns::run("ip", &["-n", router, "-o", "link", "show", "type", "bridge"]).unwrap();
    for (index, bridge) in bridges
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .enumerate()
    {
        vpc_twin::ns::ip_batch(
            router,
            &[
                format!("link add low{index} address 02:00:00:00:00:01 type veth peer name low{index}p"),
                format!("link set low{index} master {bridge} up"),
            ],
        )
        .unwrap();
    }
    routed("after a port with MAC 02:00:00:00:00:01 joined every subnet's bridge");
    stop_twin(twin);
}

/// What a killed run leaves (namespaces with processes in them, /etc/netns entries) is
/// removed when the next twin starts.
#[test]
fn leftovers_of_a_killed_run_are_removed_at_the_next_start() {
    let _serial = serial();
    vpc_twin::require_root().unwrap();
    // Named after this process: a concurrent run's leftovers are not this test's business.
    let leftover = format!("{}leftover-{}", vpc_twin::PREFIX, std::process::id());
    vpc_twin::ns::run("ip", &["netns", "add", &leftover]).unwrap();
    std::fs::create_dir_all(format!("/etc/netns/{leftover}")).unwrap();
    let workdir = std::env::temp_dir().join(format!(
        "{}leftover-{}",
        vpc_twin::WORKDIR_PREFIX,
        std::process::id()
    ));
    std::fs::create_dir_all(workdir.join("aurora")).unwrap();
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", &leftover, "sleep", "600"])
        .spawn()
        .unwrap();
    let twin = start(APP_RUNNER.topology());
    let list = vpc_twin::ns::run("ip", &["netns", "list"]).unwrap();
    assert!(!list.contains(&leftover), "{list}");
    assert!(!std::path::Path::new(&format!("/etc/netns/{leftover}")).exists());
    assert!(
        !workdir.exists(),
        "the killed twin's working directory is removed"
    );
    // Killed (not merely outlived): reaped at once, or the next start did not end it.
    let status = vpc_twin::ns::wait_for("the leftover's process ended", Duration::from_secs(5), || {
        Ok(sleeper.try_wait()?)
    })
    .unwrap_or_else(|error| {
        let _ = sleeper.kill();
        panic!("{error:#}")
    });
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the leftover's process was killed: {status}"
    );
    stop_twin(twin);
}
