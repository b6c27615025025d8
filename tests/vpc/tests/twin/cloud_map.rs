//! The private service behind its Cloud Map name, as ECS replaces its tasks (issue 21, item 1):
//! a crashed task is deregistered at once and its replacement registered only when it runs (tens
//! of seconds later on Fargate); a deployment registers the new tasks, then deregisters the old
//! ones and sends them SIGTERM at once; and a resolver that looked the name up while it had no
//! record keeps "no such name" for the namespace's SOA TTL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vpc_twin::Twin;
use vpc_twin::topology::CLOUD_MAP_SOA_TTL_SOURCE;

use super::{APP_RUNNER, ECS_EXPRESS, Program, mutated, serial, start, stop_twin};

/// How long a crashed task's replacement takes to register in the twin: the record's TTL and 5 s
/// more, so that what resolvers held has expired and the frontend (whose requests to the dead
/// address take their 2 s timeout) has asked again while the name had no record — as it has
/// after the tens of seconds Fargate takes.
fn replacement_gap(twin: &Twin) -> Duration {
    Duration::from_secs(u64::from(twin.topology.cloud_map.ttl) + 5)
}

/// How long past a TTL a change may take to show: Unbound counts whole seconds (+1 s), the
/// poller's last request may have just missed it, and 1 s for a loaded machine.
const MARGIN: Duration = Duration::from_secs(3);

/// A name whose every record went away stays unknown to a resolver that asked meanwhile for the
/// namespace's SOA TTL after a record is back — not the 5 s dnsmasq's SOA-less answers get.
#[test]
fn a_name_left_without_records_stays_unknown_for_the_namespaces_negative_ttl() {
    let _serial = serial();
    let mut twin = start(APP_RUNNER.topology());
    let cloud_map = twin.topology.cloud_map.clone();
    let name = cloud_map.fqdn();
    let node = twin.topology.frontend().name.clone();
    for number in 1..=twin.topology.desired_tasks {
        twin.deregister(number).unwrap();
    }
    // Whatever the node's resolver held expires within the record's TTL; then it asks, and
    // keeps the answer "no such name".
    let record_ttl = Duration::from_secs(u64::from(cloud_map.ttl));
    let deregistered = Instant::now();
    while !twin.resolve(&node, &name).unwrap().is_empty() {
        assert!(
            deregistered.elapsed() <= record_ttl + MARGIN,
            "{name} still resolves {:?} after its records were removed",
            deregistered.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    twin.register(1).unwrap();
    let registered = Instant::now();
    let negative_ttl = Duration::from_secs(u64::from(cloud_map.negative_ttl));
    while twin.resolve(&node, &name).unwrap().is_empty() {
        assert!(
            registered.elapsed() <= negative_ttl + MARGIN,
            "{name} was still unknown {:?} after a record was registered: more than the negative TTL {negative_ttl:?} + {MARGIN:?}",
            registered.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let unknown_for = registered.elapsed();
    println!("{name} resolved {unknown_for:?} after a record was registered (negative TTL {negative_ttl:?})");
    assert!(
        unknown_for + Duration::from_secs(2) >= negative_ttl,
        "the resolver forgot 'no such name' after {unknown_for:?}, not the namespace's SOA TTL \
         {negative_ttl:?} ({CLOUD_MAP_SOA_TTL_SOURCE}): the twin is kinder than AWS"
    );
    stop_twin(twin);
}

/// One answer of the relay as seen from `internet`, with when it came and how long it took.
struct Seen {
    at: Instant,
    took: Duration,
    status: u16,
    problem: bool,
    task_arn: Option<String>,
    address: Option<String>,
}

/// The relay's answers, recorded by a poller on `/ecs-private-service` from `internet`.
#[derive(Default)]
struct Relay {
    seen: std::sync::Mutex<Vec<Seen>>,
    stop: AtomicBool,
}

impl Relay {
    fn poll(&self, internet: &str, url: &str) {
        while !self.stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            let answer = vpc_twin::twin::http_get(internet, url, Duration::from_secs(10)).unwrap();
            let task = answer.json().ok().map(|body| body["Response"].clone());
            let field = |name: &str| {
                task.as_ref()
                    .and_then(|task| task[name].as_str())
                    .map(str::to_owned)
            };
            let seen = Seen {
                at: Instant::now(),
                took: started.elapsed(),
                status: answer.status,
                problem: answer.is_problem(),
                task_arn: field("TaskArn"),
                address: field("IpAddress"),
            };
            self.seen.lock().unwrap().push(seen);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// When the task at `address` first answered, if it has.
    fn first_answer_from(&self, address: &str) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .find(|answer| answer.status == 200 && answer.address.as_deref() == Some(address))
            .map(|answer| answer.at)
    }
}

/// Runs `act` on the twin while the relay is polled (from half a second before until a second
/// after); every answer, and what `act` returned.
fn while_polling_the_relay<R>(twin: &mut Twin, act: impl FnOnce(&mut Twin, &Relay) -> R) -> (Vec<Seen>, R) {
    let internet = twin.namespace_of("internet");
    let url = twin.url("/ecs-private-service");
    let relay = Relay::default();
    let result = std::thread::scope(|scope| {
        scope.spawn(|| relay.poll(&internet, &url));
        std::thread::sleep(Duration::from_millis(500));
        let result = act(twin, &relay);
        std::thread::sleep(Duration::from_secs(1));
        relay.stop.store(true, Ordering::SeqCst);
        result
    });
    (relay.seen.into_inner().unwrap(), result)
}

/// ARN and address of task `number`.
fn identity(twin: &Twin, number: usize) -> (String, String) {
    (
        twin.task_arn(number).unwrap().to_owned(),
        twin.topology.host(&format!("task-{number}")).address.to_string(),
    )
}

/// What happened around a crashed task, from a poller on `/ecs-private-service`.
struct Replacement {
    seen: Vec<Seen>,
    crashed: Instant,
    registered: Instant,
    /// When the frontend's node first resolved the name to the replacement's address.
    resolvable: Option<Instant>,
    /// The first answer from the replacement.
    reached: Option<Instant>,
    /// ARN and address of every task that ran.
    tasks: Vec<(String, String)>,
}

/// Task `crashed` stops and is deregistered, as ECS does when a task's essential container
/// exits or Spot takes it back; after [`replacement_gap`] task `replacement` starts and is
/// registered. The relay is polled until the frontend's node resolves the name to the
/// replacement and the replacement has answered (or `bound` after its registration has passed).
fn replace_a_crashed_task(
    twin: &mut Twin,
    crashed: usize,
    replacement: usize,
    bound: Duration,
) -> Replacement {
    let gap = replacement_gap(twin);
    let mut tasks: Vec<_> = (1..=twin.topology.desired_tasks)
        .map(|number| identity(twin, number))
        .collect();
    let node = twin.topology.frontend().name.clone();
    let name = twin.topology.cloud_map.fqdn();
    let (seen, (crashed_at, registered, resolvable, reached)) =
        while_polling_the_relay(twin, |twin, relay| {
            let crashed_at = Instant::now();
            twin.stop_task(crashed).unwrap();
            twin.deregister(crashed).unwrap();
            std::thread::sleep(gap);
            twin.start_task(replacement).unwrap();
            twin.register(replacement).unwrap();
            let registered = Instant::now();
            let (arn, address) = identity(twin, replacement);
            tasks.push((arn, address.clone()));
            let mut resolvable = None;
            while !(resolvable.is_some() && relay.first_answer_from(&address).is_some())
                && registered.elapsed() < bound + Duration::from_secs(1)
            {
                if resolvable.is_none()
                    && twin
                        .resolve(&node, &name)
                        .unwrap()
                        .iter()
                        .any(|resolved| resolved.to_string() == address)
                {
                    resolvable = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (
                crashed_at,
                registered,
                resolvable,
                relay.first_answer_from(&address),
            )
        });
    Replacement {
        seen,
        crashed: crashed_at,
        registered,
        resolvable,
        reached,
        tasks,
    }
}

impl Replacement {
    /// [`assert_answers`], where a request in flight to the task when it crashed may also be a
    /// 502 problem: the kernel resets its connection, as a task's end does in AWS.
    fn assert_answers(&self, failures: &[u16]) -> std::collections::BTreeMap<String, usize> {
        let in_flight = |answer: &Seen| answer.at - answer.took <= self.crashed;
        assert_answers(&self.seen, &self.tasks, failures, in_flight)
    }

    /// The slowest answer.
    fn slowest(&self) -> Duration {
        slowest(&self.seen)
    }
}

/// Every answer is a 200 from one of `tasks` (its own address and ARN, never a mix), or a
/// problem with one of `failures`, or a 502 problem for a request `cut_off` says was cut.
/// Counted by task (its place in `tasks`, from 1) and status.
fn assert_answers(
    seen: &[Seen],
    tasks: &[(String, String)],
    failures: &[u16],
    cut_off: impl Fn(&Seen) -> bool,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for answer in seen {
        let task = tasks
            .iter()
            .position(|(arn, address)| {
                answer.task_arn.as_ref() == Some(arn) && answer.address.as_ref() == Some(address)
            })
            .map(|index| index + 1);
        let label = match (answer.status, task) {
            (200, Some(number)) => format!("200 task-{number}"),
            (status, _) => status.to_string(),
        };
        *counts.entry(label).or_insert(0) += 1;
        let allowed = match answer.status {
            200 => task.is_some(),
            status => answer.problem && (failures.contains(&status) || status == 502 && cut_off(answer)),
        };
        assert!(
            allowed,
            "an answer that is neither 200 from a task nor a {failures:?} problem: status {} (problem {}, task {:?} at {:?})",
            answer.status, answer.problem, answer.task_arn, answer.address
        );
    }
    counts
}

/// The slowest answer.
fn slowest(seen: &[Seen]) -> Duration {
    seen.iter().map(|answer| answer.took).max().unwrap_or_default()
}

/// The program's tasks (two): one crashes; the relay keeps answering 200 from the other — a
/// request that tries the dead task's address first (resolvers still hold it for the TTL) moves
/// on to the next address within its 2 s — and the replacement is in the frontend's answer
/// within the record's TTL of its registration (which task the relay then reaches is the
/// resolver's order: getaddrinfo sorts the addresses).
fn a_crashed_task_costs_the_relay_no_answer(program: Program) {
    let _serial = serial();
    let mut twin = start(program.topology());
    let desired = twin.topology.desired_tasks;
    assert!(
        desired >= 2,
        "the program runs {desired} task(s) of the private service"
    );
    let bound = Duration::from_secs(u64::from(twin.topology.cloud_map.ttl)) + MARGIN;
    let replacement = replace_a_crashed_task(&mut twin, 1, desired + 1, bound);
    let resolvable = replacement.resolvable.unwrap_or_else(|| {
        panic!("the frontend's node never resolved the replacement within {bound:?} of its registration")
    });
    let counts = replacement.assert_answers(&[]);
    println!(
        "answers: {counts:?}; slowest {:?}; the replacement resolved {:?} after its registration (record TTL {} s)",
        replacement.slowest(),
        resolvable - replacement.registered,
        twin.topology.cloud_map.ttl
    );
    stop_twin(twin);
}

on_both_programs!(a_crashed_task_costs_the_relay_no_answer);

/// With one task (`privateServiceDesiredCount: 1`) a crash empties the name: the relay fails
/// (504 while resolvers still hold the dead task, then 502 "no such name") until the
/// replacement registers and the negative answer resolvers keep has expired — up to the
/// namespace's SOA TTL later. The outage is measured and printed.
#[test]
fn with_one_task_a_crash_fails_the_relay_until_the_negative_ttl_after_the_replacement() {
    let _serial = serial();
    let mut twin = start(mutated(APP_RUNNER, |text| {
        let two = "privateServiceDesiredCount:\n    type: integer\n    default: 2\n";
        anyhow::ensure!(
            text.contains(two),
            "the program's privateServiceDesiredCount defaults to 2"
        );
        Ok(text.replace(two, &two.replace("default: 2", "default: 1")))
    }));
    assert_eq!(twin.topology.desired_tasks, 1);
    let negative_ttl = Duration::from_secs(u64::from(twin.topology.cloud_map.negative_ttl));
    let bound = negative_ttl + MARGIN;
    let replacement = replace_a_crashed_task(&mut twin, 1, 2, bound);
    let reached = replacement.reached.unwrap_or_else(|| {
        panic!(
            "the replacement never answered within the negative TTL {negative_ttl:?} + {MARGIN:?} of its registration\n{}",
            twin.all_logs()
        )
    });
    let counts = replacement.assert_answers(&[502, 504]);
    println!(
        "answers: {counts:?}; the relay failed from the crash until {:?} later: the replacement registered after {:?}, answered {:?} after that (negative TTL {negative_ttl:?})",
        reached - replacement.crashed,
        replacement.registered - replacement.crashed,
        reached - replacement.registered
    );
    assert!(reached - replacement.registered <= bound);
    stop_twin(twin);
}

/// A deployment as ECS runs it with minimum 100 % / maximum 200 %: the new tasks start and
/// register, then the old ones are deregistered and sent SIGTERM at once (aws/containers-roadmap
/// #343: ECS does not wait for the record's TTL). The old tasks keep answering for their
/// `STOP_LINGER` while resolvers still hold their addresses, so every answer of the relay is a
/// 200 — with a service that stopped listening at SIGTERM, requests meet closed ports until the
/// cached answer expires.
#[test]
fn a_deployment_costs_the_relay_no_answer() {
    let _serial = serial();
    let mut twin = start(APP_RUNNER.topology());
    let desired = twin.topology.desired_tasks;
    let old: Vec<usize> = (1..=desired).collect();
    let new: Vec<usize> = (desired + 1..=2 * desired).collect();
    let mut tasks: Vec<_> = old.iter().map(|number| identity(&twin, *number)).collect();
    let (seen, stopped_after) = while_polling_the_relay(&mut twin, |twin, _| {
        for number in &new {
            twin.start_task(*number).unwrap();
            twin.register(*number).unwrap();
            tasks.push(identity(twin, *number));
        }
        let stopping = Instant::now();
        for number in &old {
            twin.begin_task_stop(*number).unwrap();
        }
        for number in &old {
            twin.finish_task_stop(*number).unwrap();
        }
        stopping.elapsed()
    });
    let counts = assert_answers(&seen, &tasks, &[], |_| false);
    println!(
        "answers: {counts:?}; slowest {:?}; the old tasks stopped {stopped_after:?} after SIGTERM",
        slowest(&seen)
    );
    let last = seen.last().unwrap();
    assert!(
        new.iter()
            .any(|number| Some(&identity(&twin, *number).1) == last.address.as_ref()),
        "the last answer came from a new task"
    );
    stop_twin(twin);
}
