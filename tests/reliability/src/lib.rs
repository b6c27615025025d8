//! Tools for the reliability suites: a load driver that keeps every answer, the frontend over a
//! throwaway PostgreSQL, and raw HTTP for inputs a well-behaved client would never send.
//!
//! The suites themselves are in `tests/reliability/`; the README fragment says how to run them.

pub mod load;
pub mod raw;
pub mod stack;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use load::{Accounting, Load, LoadSpec, Outcome, Record, Report, Target};
pub use stack::Stack;

/// `RELIABILITY_LONG=1` selects the long forms (60 s loads instead of 10 s, more examples).
pub fn long_form() -> bool {
    std::env::var("RELIABILITY_LONG").is_ok_and(|value| value == "1")
}

/// How long a steady load lasts: 60 s in the long form, 10 s otherwise (the CI form).
pub fn load_duration() -> Duration {
    if long_form() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(10)
    }
}

/// The concurrency the issue asks for.
pub const CONNECTIONS: usize = 256;

/// Suites run one at a time: two loads on two cores would measure each other, not the service.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}
