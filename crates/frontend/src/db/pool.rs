//! The connection pool (r2d2) and how long a request waits for one of its connections.
//!
//! From the pool's side two situations look alike, and a request must be treated differently in
//! each. Every connection busy, or the database refusing new ones (a stopped or rebooting
//! instance resets the connection at once, a reader is turned away after login): the request
//! gets its 503 after `DB_ACQUIRE_TIMEOUT`. A connection being opened that the server has not
//! answered yet: Aurora Serverless v2 resuming from 0 ACU holds new connections until it has
//! resumed (about 15 s), so the request waits for that attempt, up to `DB_CONNECT_TIMEOUT`. An
//! attempt that fails while a request waits means the database is refusing, and ends the longer
//! wait at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::connection::ConnectionManager;

pub type PooledConnection = r2d2::PooledConnection<ConnectionManager>;

/// Past the acquire timeout, how often a waiting request looks again whether the attempt it
/// waits for has failed.
const RECHECK_EVERY: Duration = Duration::from_millis(100);

/// Connection attempts in progress and failed so far, counted where connections are opened.
#[derive(Debug, Default)]
pub struct Attempts {
    under_way: AtomicUsize,
    failed: AtomicU64,
}

impl Attempts {
    /// Runs one connection attempt, counted (a panic counts as a failure).
    pub fn track<T, E>(&self, attempt: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        /// Ends the attempt however `attempt` returns: r2d2's thread pool survives a panic.
        struct UnderWay<'a> {
            attempts: &'a Attempts,
            succeeded: bool,
        }
        impl Drop for UnderWay<'_> {
            fn drop(&mut self) {
                if !self.succeeded {
                    self.attempts.failed.fetch_add(1, Ordering::SeqCst);
                }
                self.attempts.under_way.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.under_way.fetch_add(1, Ordering::SeqCst);
        let mut guard = UnderWay {
            attempts: self,
            succeeded: false,
        };
        let result = attempt();
        guard.succeeded = result.is_ok();
        result
    }

    fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    fn under_way(&self) -> bool {
        self.under_way.load(Ordering::SeqCst) > 0
    }
}

#[derive(Clone)]
pub struct Pool {
    inner: r2d2::Pool<ConnectionManager>,
    attempts: Arc<Attempts>,
    acquire_timeout: Duration,
    connect_timeout: Duration,
}

impl Pool {
    /// `attempts` must be the counter `inner`'s manager reports its connection attempts to.
    pub fn new(
        inner: r2d2::Pool<ConnectionManager>,
        attempts: Arc<Attempts>,
        acquire_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            attempts,
            acquire_timeout,
            connect_timeout,
        }
    }

    /// A connection, waiting as the module documentation says. Blocking.
    pub fn get(&self) -> Result<PooledConnection, r2d2::Error> {
        let started = Instant::now();
        let failed_before = self.attempts.failed();
        let mut result = self.inner.get_timeout(self.acquire_timeout);
        while result.is_err() {
            let waited = started.elapsed();
            let resuming = self.attempts.under_way() && self.attempts.failed() == failed_before;
            if !resuming || waited >= self.connect_timeout {
                break;
            }
            result = self
                .inner
                .get_timeout((self.connect_timeout - waited).min(RECHECK_EVERY));
        }
        result
    }

    pub fn max_size(&self) -> u32 {
        self.inner.max_size()
    }
}
