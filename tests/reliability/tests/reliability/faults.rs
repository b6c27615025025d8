//! The fault-schedule checker (issue 20): seeded random schedules of faults against a steady
//! load, one verdict over each whole history (see `reliability_tests::faults`). A few seeds run
//! here; `FAULT_SEEDS=1..=100` runs a sweep (tests/README.md, "Reliability and security under load").

use reliability_tests::faults::{self, Schedule};
use reliability_tests::one_at_a_time;

/// Faults per schedule.
const FAULTS: usize = 6;
/// The seeds `tests/run` tries; a failure prints its seed, and `FAULT_SEEDS=<seed>` replays it.
const CI_SEEDS: [u64; 3] = [1, 2, 3];

#[test]
fn every_promise_holds_under_seeded_fault_schedules() {
    let _serial = one_at_a_time();
    let seeds = faults::seeds(&CI_SEEDS).expect("FAULT_SEEDS");
    let mut failures = Vec::new();
    for seed in seeds {
        let schedule = Schedule::from_seed(seed, FAULTS);
        println!("{schedule}");
        match faults::run(&schedule) {
            Ok(run) => println!(
                "  {}\n  {}",
                run.accounting,
                run.summary.trim_end().replace('\n', "\n  ")
            ),
            Err(error) => {
                println!("  FAILED: {error:#}");
                failures.push(seed);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "seeds that broke a promise: {failures:?} (replay one with FAULT_SEEDS=<seed>)"
    );
}
