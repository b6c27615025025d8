//! Accounting under load: every 200 from `GET /` is exactly one committed row, and a healthy
//! system answers nothing but 200.

use reliability_tests::{CONNECTIONS, Load, LoadSpec, Stack, Target, load_duration, one_at_a_time};

#[test]
fn every_200_under_load_is_exactly_one_row_and_nothing_fails() {
    let _serial = one_at_a_time();
    let stack = Stack::start(&[]).expect("PostgreSQL and the frontend start");

    let load = Load::start(LoadSpec::new(
        stack.addr(),
        vec![Target::visits(CONNECTIONS)],
        load_duration(),
    ))
    .expect("load starts");
    let report = load.finish().expect("load finishes");
    println!("accounting: {}", report.summary());

    let ok = report.count_status(0, 200);
    assert!(ok > 0, "no request succeeded: {}", report.summary());
    let accounting = report.account(0, &stack.user_agents().expect("visits read"));
    assert!(accounting.is_exact(), "{accounting}");
    let rows = accounting.rows;
    let failed = report.other_than(0, &[200]);
    assert!(
        failed.is_empty(),
        "{} requests did not get 200 without any fault, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        report.of(0).all(|record| matches!(
            record.outcome,
            reliability_tests::Outcome::Response { body_ok: true, .. }
        )),
        "a 200 without the documented body"
    );
    println!("accounting: {ok} answers 200 = {rows} rows, 0 lost");
}
