//! Aurora's lifecycle in the twin (issue 19), on the App Runner program (the Express program
//! declares the same cluster, reached the same way): a failover behind the VPC resolver's
//! cache, an instance that vanishes without a reset, a pause and a resume. Each under load from
//! `internet` with the request-by-request accounting, read on whichever instance writes.

use std::time::{Duration, Instant};

use reliability_tests::{Load, LoadSpec, Target, assert_only_200_from, assert_only_200_or_503_problem};
use vpc_twin::Twin;
use vpc_twin::twin::Options;

use super::{APP_RUNNER, serial, stop_twin};

/// What the issue asks for: 16 clients on `GET /`.
const CLIENTS: usize = 16;

fn start_with(options: impl FnOnce(Options) -> Options) -> Twin {
    let topology = APP_RUNNER.topology();
    let options = options(Options::of(&topology));
    let twin = Twin::start_with(topology, options).unwrap();
    println!("twin started in {:?}", twin.start_time);
    twin
}

/// A load of `GET /` from `internet` (its threads are made there, so every connection is).
fn visits_from_internet(twin: &Twin, duration: Duration, request_timeout: Duration) -> Load {
    let mut spec = LoadSpec::new(twin.public_addr(), vec![Target::visits(CLIENTS)], duration);
    spec.request_timeout = request_timeout;
    vpc_twin::ns::in_namespace(&twin.namespace_of("internet"), || Load::start(spec))
        .unwrap()
        .unwrap()
}

/// The VPC resolver caches as the Route 53 Resolver does: a node that looked an endpoint up
/// before its record moved gets the old answer until the record's 5 s TTL has run out — the
/// window in which a failover sends new connections to the old writer. (The reader endpoint,
/// which nothing else looks up, so the cached answer is exactly the one fetched here; a
/// failover moves it as it moves the cluster endpoint.)
#[test]
fn the_vpc_resolver_answers_a_moved_endpoint_from_its_cache_until_the_ttl_runs_out() {
    let _serial = serial();
    let mut twin = start_with(|options| options);
    let frontend = twin.topology.frontend().name.clone();
    let (_, reader_endpoint) = vpc_twin::aurora::names(&twin.topology.database.endpoint);
    let ttl = Duration::from_secs(u64::from(vpc_twin::aurora::ENDPOINT_TTL));
    let [first, second] = twin.aurora_instance_names();
    let first_address = twin.resolve(&frontend, &first).unwrap();
    let second_address = twin.resolve(&frontend, &second).unwrap();
    let cached = twin.resolve(&frontend, &reader_endpoint).unwrap();
    let cached_at = Instant::now();
    assert_eq!(cached, second_address, "the reader endpoint names the reader");
    // The second instance becomes the writer: the reader endpoint now names the first.
    twin.point_cluster_endpoint_at(&second).unwrap();
    let stale = twin.resolve(&frontend, &reader_endpoint).unwrap();
    let stale_after = cached_at.elapsed();
    println!("resolver: {cached:?}, then {stale:?} {stale_after:?} later, after the record moved");
    assert!(
        stale_after < ttl - Duration::from_secs(1),
        "moving the record took {stale_after:?}: the check needs less than the TTL"
    );
    assert_eq!(
        stale, second_address,
        "within the TTL the resolver answers from its cache"
    );
    // Unbound counts TTLs in whole seconds: the moved record shows within a second of the TTL.
    let moved_after = loop {
        let answer = twin.resolve(&frontend, &reader_endpoint).unwrap();
        let elapsed = cached_at.elapsed();
        if answer == first_address {
            break elapsed;
        }
        assert_eq!(answer, second_address);
        assert!(
            elapsed < ttl + Duration::from_secs(2),
            "the resolver still answered the old record {elapsed:?} after caching it"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("resolver: the moved record answered {moved_after:?} after the old one was cached");
    assert!(
        moved_after >= ttl - Duration::from_secs(1),
        "the moved record showed {moved_after:?} after the old one was cached, before the TTL ran out"
    );
    stop_twin(twin);
}

/// A failover under 16 clients, through the VPC resolver's stale window: the frontend, which
/// keeps no connection to a reader, answers 200 again within 10 s of the record moving, and every
/// 200 is a row on the new writer.
#[test]
fn a_failover_under_load_recovers_within_10_s_of_the_record_moving() {
    let _serial = serial();
    let mut twin = start_with(|options| options);
    let load = visits_from_internet(&twin, Duration::from_secs(20), Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(3));
    let moved = twin.aurora_failover().unwrap();
    let report = load.finish().unwrap();
    println!(
        "failover: record moved at +{:?}\n{}",
        moved.duration_since(report.started),
        report.summary()
    );

    assert_only_200_or_503_problem(&report, 0);
    assert_only_200_from(&report, 0, moved + Duration::from_secs(10), &twin.all_logs());
    let accounting = report.account(0, &twin.stored_user_agents().unwrap());
    println!(
        "failover: {} answers 503; {accounting}",
        report.count_status(0, 503)
    );
    assert!(accounting.is_exact(), "across the failover: {accounting}");
    // Reads as fresh as ever: no reader session left on the old writer (now a replica).
    assert_eq!(twin.get("/").unwrap().status, 200);
    let newest = twin.get("/recent-visits").unwrap().json().unwrap()["Response"][0]["user_agent"].clone();
    assert_eq!(
        newest, "vpc-twin/1",
        "the visit just acknowledged is the newest read"
    );
    stop_twin(twin);
}

/// The writer vanishes (its packets dropped, no reset) under 16 clients; 8 s later Aurora fails
/// over, and the lost instance stays silent. The frontend, with its default timeouts, notices
/// within DB_TCP_USER_TIMEOUT (10 s) instead of the kernel's 15 minutes: every request is
/// answered; a visit whose batch was in flight is resolved on the new writer or told its outcome
/// is unknown — never a false 200, never a row for a 503 that said nothing was stored; and only
/// 200 once the record's TTL and one DB_CONNECT_TIMEOUT (connections still opening to the lost
/// address) have passed.
#[test]
fn a_vanished_writer_is_noticed_within_the_tcp_user_timeout_and_nothing_is_stored_falsely() {
    const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
    let _serial = serial();
    let mut twin = start_with(|options| options.frontend("DB_CONNECT_TIMEOUT", "20s"));
    let load = visits_from_internet(&twin, Duration::from_secs(45), Duration::from_secs(90));
    std::thread::sleep(Duration::from_secs(3));
    twin.aurora_vanish().unwrap();
    let vanished = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let moved = twin.aurora_failover().unwrap();
    let report = load.finish().unwrap();
    let in_flight_answered = report
        .of(0)
        .filter(|record| record.start <= vanished)
        .map(|record| record.end.duration_since(vanished))
        .max()
        .unwrap_or_default();
    println!(
        "vanish: the writer vanished at +{:?}, the record moved {:?} later; the last visit sent before \
         the vanish was answered {in_flight_answered:?} after it\n{}",
        vanished.duration_since(report.started),
        moved.duration_since(vanished),
        report.summary()
    );
    assert_only_200_or_503_problem(&report, 0);
    assert!(
        in_flight_answered >= TCP_USER_TIMEOUT - Duration::from_secs(1),
        "a visit in flight was answered {in_flight_answered:?} after the vanish: the vanish was not felt"
    );
    assert!(
        in_flight_answered <= TCP_USER_TIMEOUT + 2 * CONNECT_TIMEOUT + Duration::from_secs(5),
        "a visit in flight at the vanish waited {in_flight_answered:?}"
    );
    let ttl = Duration::from_secs(u64::from(vpc_twin::aurora::ENDPOINT_TTL));
    assert_only_200_from(
        &report,
        0,
        moved + ttl + CONNECT_TIMEOUT + Duration::from_secs(5),
        &twin.all_logs(),
    );
    let accounting = report.account(0, &twin.stored_user_agents().unwrap());
    println!("vanish: {accounting}");
    assert!(accounting.keeps_the_promises(), "across the vanish: {accounting}");
    assert!(
        accounting.unknown <= CLIENTS,
        "more outcomes unknown than visits can have been in flight at the vanish"
    );
    stop_twin(twin);
}

/// Auto-pause and resume through the VPC: an idle frontend lets go of its connections, the
/// writer pauses, `/health` does not wake it, and the first visit waits for the resume (5 s
/// here) and succeeds.
#[test]
fn a_paused_writer_resumes_for_the_first_visit_through_the_vpc() {
    let _serial = serial();
    let resume = Duration::from_secs(5);
    let twin = start_with(|mut options| {
        options.lifecycle = harness::Lifecycle {
            pause_after: Some(Duration::from_secs(1)),
            resume_takes: resume,
        };
        options
            .frontend("DB_IDLE_TIMEOUT", "1s")
            .frontend("DB_CONNECT_TIMEOUT", "20s")
    });
    let writer = twin.aurora_writer().unwrap();
    let waiting = Instant::now();
    while !writer.is_paused() {
        assert!(
            waiting.elapsed() < Duration::from_secs(45),
            "the writer did not pause: {} connection(s) open; sockets on the node:\n{}",
            writer.connections(),
            vpc_twin::ns::run(
                "ip",
                &["netns", "exec", &twin.namespace_of("aurora"), "ss", "-tn"]
            )
            .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("paused {:?} after the twin started", waiting.elapsed());
    for _ in 0..3 {
        assert_eq!(twin.get("/health").unwrap().status, 200);
    }
    assert!(writer.is_paused(), "/health woke the database");
    let started = Instant::now();
    let visit = twin.get("/").unwrap();
    let took = started.elapsed();
    println!("the first visit after the pause: {} in {took:?}", visit.status);
    assert_eq!(visit.status, 200, "{visit:?}\n{}", twin.all_logs());
    assert!(
        took >= resume - Duration::from_millis(500),
        "answered before the resume: {took:?}"
    );
    assert_eq!(writer.resumes(), 1);
    assert_eq!(twin.stored_user_agents().unwrap().len(), 1);
    stop_twin(twin);
}

/// A reboot of the writer under 16 clients through the VPC: every session ends, connections
/// fail while it starts; only 200 or 503 problem+json, 200 again within 3 s of it accepting
/// connections, each 200 one row.
#[test]
fn a_reboot_under_load_recovers_within_3_s() {
    let _serial = serial();
    let mut twin = start_with(|options| options);
    let load = visits_from_internet(&twin, Duration::from_secs(10), Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(3));
    twin.aurora_reboot().unwrap();
    let up = Instant::now();
    let report = load.finish().unwrap();
    println!(
        "reboot: up again at +{:?}\n{}",
        up.duration_since(report.started),
        report.summary()
    );
    assert_only_200_or_503_problem(&report, 0);
    assert_only_200_from(&report, 0, up + Duration::from_secs(3), &twin.all_logs());
    let accounting = report.account(0, &twin.stored_user_agents().unwrap());
    assert!(accounting.is_exact(), "across the reboot: {accounting}");
    stop_twin(twin);
}

/// What a person types while `local-stack --vpc` runs reaches the twin (`vpc-twin aurora …`
/// calls `control::send`): the status names the writer, a failover changes it, and a command it
/// does not know gets the usage.
#[test]
fn aurora_commands_reach_the_running_twin() {
    use std::sync::{Arc, Mutex};

    use vpc_twin::control;

    let _serial = serial();
    let twin = start_with(|options| options);
    let [first, second] = twin.aurora_instance_names();
    let shared: control::Shared = Arc::new(Mutex::new(Some(twin)));
    control::serve(Arc::clone(&shared)).unwrap();
    let send = |words: &[&str]| control::send(&words.iter().map(ToString::to_string).collect::<Vec<_>>());
    let status = send(&["status"]).unwrap();
    println!("{status}");
    assert!(status.starts_with(&format!("writer {first}")), "{status}");
    let failed_over = send(&["failover"]).unwrap();
    println!("{failed_over}");
    assert!(failed_over.contains(&format!("writer {second}")), "{failed_over}");
    let unknown = send(&["frobnicate"]).unwrap_err().to_string();
    assert!(unknown.contains("usage: vpc-twin aurora"), "{unknown}");
    control::close();
    assert!(
        send(&["status"])
            .unwrap_err()
            .to_string()
            .contains("no twin is running")
    );
    let twin = shared.lock().unwrap().take().unwrap();
    stop_twin(twin);
}
