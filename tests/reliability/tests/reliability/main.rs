//! Reliability and security under load (issue 5): the real `frontend` and `private-service`
//! binaries as processes, against a real PostgreSQL and moto, driven by a load that keeps every
//! answer. Short forms by default (CI); `RELIABILITY_LONG=1` for the long forms.
//!
//! The suites run one at a time ([`reliability_tests::one_at_a_time`]): on two cores, two loads
//! would measure each other.

mod accounting;
mod aurora;
mod db_outage;
mod exactly_once;
mod faults;
mod hostile_input;
mod private_service;
mod rotation;
mod security;
mod sigterm;
mod slow_db;
