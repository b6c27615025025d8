//! Calling another HTTP service synchronously (ureq) with a deadline, and saying precisely how it
//! failed: the difference between 502 and 504 is what an operator needs first.

use std::time::Duration;

use poem::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::Problem;

/// Why an upstream call did not produce the expected JSON.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("unreachable: {0}")]
    Unreachable(ureq::Error),
    #[error("answered with status {0}")]
    Status(u16),
    #[error("answered with a body that is not the expected JSON: {0}")]
    InvalidBody(ureq::Error),
}

impl UpstreamError {
    /// The problem a client sees: 504 for a timeout, 502 for anything else the upstream did.
    pub fn to_problem(&self, upstream: &str) -> Problem {
        match self {
            Self::Timeout(limit) => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("{upstream} did not answer within {} ms.", limit.as_millis()),
            ),
            Self::Unreachable(_) => {
                Problem::new(StatusCode::BAD_GATEWAY, format!("{upstream} is unreachable."))
            }
            Self::Status(status) => Problem::new(
                StatusCode::BAD_GATEWAY,
                format!("{upstream} answered with HTTP status {status}."),
            ),
            Self::InvalidBody(_) => Problem::new(
                StatusCode::BAD_GATEWAY,
                format!("{upstream} answered with a body that is not the expected JSON."),
            ),
        }
    }
}

/// An HTTP client for one upstream with a whole-request deadline.
#[derive(Clone)]
pub struct Upstream {
    agent: ureq::Agent,
    timeout: Duration,
}

impl Upstream {
    /// No connection is kept idle, so every call resolves the name again: service-discovery
    /// records (Cloud Map) change as tasks are replaced, and a pooled socket would pin a dead task.
    pub fn new(timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .max_idle_connections(0)
            .http_status_as_error(false)
            .build()
            .into();
        Self { agent, timeout }
    }

    /// GETs `url` and decodes a 2xx JSON body. Blocking: call it off the async executor.
    pub fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, UpstreamError> {
        let mut response = self.agent.get(url).call().map_err(|error| self.classify(error))?;
        let status = response.status();
        if !status.is_success() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        response
            .body_mut()
            .read_json()
            .map_err(|error| match self.classify(error) {
                UpstreamError::Unreachable(error) => UpstreamError::InvalidBody(error),
                timeout => timeout,
            })
    }

    fn classify(&self, error: ureq::Error) -> UpstreamError {
        match error {
            ureq::Error::Timeout(_) => UpstreamError::Timeout(self.timeout),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                UpstreamError::Timeout(self.timeout)
            }
            other => UpstreamError::Unreachable(other),
        }
    }
}
