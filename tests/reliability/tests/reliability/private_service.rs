//! The private service down, hung, or answering garbage while the frontend is busy: its route
//! answers 502/504 problem+json within the timeout, and the other routes do not slow down
//! (their p99 is compared with a run against the real, healthy private service).

use std::time::Duration;

use harness::{EcsMetadata, HttpStub, Postgres, Reply, Service, ServiceCommand, closed_port_url};
use reliability_tests::stack::{addr_of, frontend_command};
use reliability_tests::{Load, LoadSpec, Outcome, Report, Target, long_form, one_at_a_time};

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The mix: the private service route under pressure, and the routes that must not notice.
fn mixed_load(frontend: &Service, duration: Duration) -> Report {
    let load = Load::start(LoadSpec::new(
        addr_of(frontend),
        vec![
            Target::new("/ecs-private-service", 64),
            Target::health(16),
            Target::new("/recent-visits", 16),
        ],
        duration,
    ))
    .expect("load starts");
    load.finish().expect("load finishes")
}

fn frontend(pg: &Postgres, db: &str, private_service: &str) -> Service {
    frontend_command(pg, db, "postgres", pg.superuser_password())
        .expect("frontend binary")
        .env("ECSPRIVATESERVICE", private_service)
        .env("ECSPRIVATESERVICE_TIMEOUT", "2s")
        .spawn()
        .expect("frontend starts")
}

#[test]
fn a_private_service_down_hung_or_garbled_gives_502_or_504_and_other_routes_keep_their_p99() {
    let _serial = one_at_a_time();
    let phase = if long_form() {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(5)
    };
    let pg = Postgres::start().expect("PostgreSQL starts");
    let db = pg.create_database().expect("database created");

    // Baseline: the real private service over the ECS metadata stand-in.
    let metadata = EcsMetadata::start().expect("metadata endpoint");
    let private_service =
        ServiceCommand::new(harness::binary("private-service").expect("private-service binary"))
            .env("ECS_CONTAINER_METADATA_URI_V4", metadata.uri_v4())
            .spawn()
            .expect("private service starts");
    let healthy = frontend(&pg, &db, &private_service.url(""));
    let baseline = mixed_load(&healthy, phase);
    drop(healthy);
    println!("private service healthy:\n{}", baseline.summary());
    assert_eq!(
        baseline.other_than(0, &[200]).len(),
        0,
        "the healthy private service failed"
    );
    let baseline_p99 = [1, 2].map(|target| Report::percentile(baseline.of(target), 99.0));

    let hung = HttpStub::start(Reply::Hang).expect("hanging stub");
    let garbage = HttpStub::start(Reply::Garbage).expect("garbage stub");
    let faults = [
        ("down", closed_port_url().expect("a closed port"), 502),
        ("hung", hung.url(), 504),
        ("garbage", garbage.url(), 502),
    ];
    for (fault, url, expected) in faults {
        let frontend = frontend(&pg, &db, &url);
        let report = mixed_load(&frontend, phase);
        println!("private service {fault}:\n{}", report.summary());

        let wrong: Vec<_> = report
            .of(0)
            .filter(|record| !matches!(record.outcome, Outcome::Response { status, problem: true, .. } if status == expected))
            .collect();
        assert!(
            wrong.is_empty(),
            "private service {fault}: {} answers were not {expected} problem+json, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        assert!(
            report.of(0).count() > 0,
            "private service {fault}: no answer at all"
        );
        // Within the timeout (plus 1 s for a busy machine), never a hang.
        let slowest = Report::percentile(report.of(0), 100.0);
        assert!(
            slowest <= UPSTREAM_TIMEOUT + Duration::from_secs(1),
            "private service {fault}: an answer took {slowest:?}"
        );
        if fault == "hung" {
            let fastest = Report::percentile(report.of(0), 0.0);
            assert!(
                fastest >= UPSTREAM_TIMEOUT - Duration::from_millis(100),
                "a 504 before the timeout ran out ({fastest:?})"
            );
        }

        // The other routes: all 200, p99 not worse than twice the baseline's plus 50 ms
        // (noise on two shared cores; a route stuck behind the upstream would take seconds).
        for (index, target) in [1, 2].into_iter().enumerate() {
            let path = &report.spec.targets[target].path;
            assert_eq!(
                report.other_than(target, &[200]).len(),
                0,
                "{path} failed while the private service was {fault}"
            );
            let p99 = Report::percentile(report.of(target), 99.0);
            let allowed = baseline_p99[index] * 2 + Duration::from_millis(50);
            assert!(
                p99 <= allowed,
                "{path} p99 {p99:?} while the private service was {fault}, baseline {:?}",
                baseline_p99[index]
            );
        }
    }
    // The hanging stub really was asked (the 504s are its doing, not a misconfiguration).
    assert!(hung.requests() > 0 && garbage.requests() > 0);
}
