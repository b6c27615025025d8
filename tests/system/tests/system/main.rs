//! Whole-system tests: `frontend` and `private-service` run as processes, configured through
//! their environment, against a real PostgreSQL, moto and the ECS metadata stand-in.
//!
//! Binaries: `$FRONTEND_BIN` / `$PRIVATE_SERVICE_BIN` when set (e.g. the release builds),
//! otherwise built by the harness in the profile of this test run.

mod database_tls;
mod failures;
mod request_bodies;
mod runtime_contract;
mod secrets_manager;
mod walkthrough;
