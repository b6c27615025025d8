//! Visits: recorded with group commit, read newest first.
//!
//! Every `GET /` needs its row durably committed before it may answer 200. One transaction per
//! request makes the commit (a WAL flush) the bottleneck, so writer threads take whatever visits
//! are queued — up to a batch limit — and commit them with one multi-row INSERT. Each request
//! still waits for its own batch's commit, and a failed batch fails exactly its own requests.
//!
//! Reads are coalesced the same way: reader threads take every `GET /recent-visits` waiting and
//! answer them all from one query. A query serves only requests that were queued before it
//! started, so each answer is at least as fresh as a query of its own would have been.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::connection::Connection;
use super::{DbError, Pool, error_chain, with_connection};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visit {
    pub at: DateTime<Utc>,
    pub user_agent: Option<String>,
}

struct Pending {
    visit: Visit,
    committed: oneshot::Sender<Result<(), DbError>>,
}

/// Queue in front of the writers. Bounded so an outage turns into back-pressure, not memory.
const QUEUE_CAPACITY: usize = 4096;

pub struct VisitWriter {
    queue: mpsc::Sender<Pending>,
}

impl VisitWriter {
    /// Starts `writers` threads. They stop when the writer is dropped and the queue is empty.
    /// `resolve_within`: how long a batch whose COMMIT went unanswered waits for the database
    /// to say whether it committed.
    pub fn start(
        pool: Pool,
        writers: u32,
        max_batch: usize,
        resolve_within: Duration,
    ) -> std::io::Result<Self> {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..writers {
            let (pool, receiver) = (pool.clone(), Arc::clone(&receiver));
            thread::Builder::new()
                .name(format!("visit-writer-{index}"))
                .spawn(move || write_batches(&pool, &receiver, max_batch, resolve_within))?;
        }
        Ok(Self { queue })
    }

    /// Resolves once the visit is committed, or with the reason it was not.
    pub async fn record(&self, visit: Visit) -> Result<(), DbError> {
        let (committed, outcome) = oneshot::channel();
        self.queue
            .send(Pending { visit, committed })
            .await
            .map_err(|_| DbError::Unavailable)?;
        outcome.await.unwrap_or(Err(DbError::Unavailable))
    }
}

fn write_batches(
    pool: &Pool,
    receiver: &Mutex<mpsc::Receiver<Pending>>,
    max_batch: usize,
    resolve_within: Duration,
) {
    let mut batch = Vec::with_capacity(max_batch);
    // A caller that stopped waiting (client gone) must not get a row it was never told of.
    while next_batch(receiver, &mut batch, max_batch, |pending| {
        pending.committed.is_closed()
    }) {
        let outcome = match insert(pool, &batch) {
            Written::Done(outcome) => outcome,
            Written::CommitUnanswered { xid } => {
                // Finding out may take until the database is back; the writer must not wait for
                // that, or every other visit would wait with it instead of getting its 503.
                let waiting: Vec<_> = batch.drain(..).map(|pending| pending.committed).collect();
                resolve_in_background(pool.clone(), xid, resolve_within, waiting);
                continue;
            }
        };
        for pending in batch.drain(..) {
            let _ = pending.committed.send(outcome);
        }
    }
}

/// Blocks until at least one queued request whose caller still waits is in `batch` (up to
/// `max`, all that is queued), dropping those whose caller left. False once the queue is closed
/// and empty: the service is shutting down.
fn next_batch<T>(
    receiver: &Mutex<mpsc::Receiver<T>>,
    batch: &mut Vec<T>,
    max: usize,
    caller_left: impl Fn(&T) -> bool,
) -> bool {
    while batch.is_empty() {
        let received = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocking_recv_many(batch, max);
        if received == 0 {
            return false;
        }
        batch.retain(|request| !caller_left(request));
    }
    true
}

/// What became of a batch.
enum Written {
    Done(Result<(), DbError>),
    /// The session failed between sending COMMIT and reading its answer: the batch may or may
    /// not be durable, and only the database can say which.
    CommitUnanswered {
        xid: i64,
    },
}

fn resolve_in_background(
    pool: Pool,
    xid: i64,
    within: Duration,
    waiting: Vec<oneshot::Sender<Result<(), DbError>>>,
) {
    let answer = move || {
        let outcome = resolve_commit(&pool, xid, within);
        for committed in waiting {
            let _ = committed.send(outcome);
        }
    };
    // A thread per cut-off COMMIT: these come with restarts and failovers, a handful at a time.
    if let Err(error) = thread::Builder::new()
        .name("commit-resolver".to_owned())
        .spawn(answer)
    {
        tracing::error!(%error, xid, "cannot start a thread to resolve a COMMIT; its visits get 503");
    }
}

fn insert(pool: &Pool, batch: &[Pending]) -> Written {
    let timestamps: Vec<DateTime<Utc>> = batch.iter().map(|pending| pending.visit.at).collect();
    let user_agents: Vec<Option<&str>> = batch
        .iter()
        .map(|pending| pending.visit.user_agent.as_deref())
        .collect();
    let outcome = with_connection(pool, "recording visits", |connection| {
        let Connection {
            client,
            insert_visits,
            ..
        } = connection;
        let mut transaction = client.transaction()?;
        let row = transaction.query_one(&*insert_visits, &[&timestamps, &user_agents])?;
        let (xid, inserted): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        // Up to here nothing is committed: a failure, even a lost connection, leaves no row and
        // may be retried; from here on only the database can say what happened.
        Ok(match transaction.commit() {
            Ok(()) => BatchOutcome::Committed { inserted },
            Err(error) => BatchOutcome::CommitUnanswered { xid, error },
        })
    });
    match outcome {
        Err(error) => Written::Done(Err(error)),
        Ok(BatchOutcome::Committed { inserted }) if inserted == batch.len() as i64 => Written::Done(Ok(())),
        Ok(BatchOutcome::Committed { inserted }) => {
            tracing::error!(
                inserted,
                expected = batch.len(),
                "visit batch inserted an unexpected number of rows"
            );
            Written::Done(Err(DbError::Failed))
        }
        Ok(BatchOutcome::CommitUnanswered { xid, error }) => {
            tracing::warn!(error = %error_chain(&error), xid, visits = batch.len(), "COMMIT unanswered; asking the database how it ended");
            Written::CommitUnanswered { xid }
        }
    }
}

enum BatchOutcome {
    Committed { inserted: i64 },
    CommitUnanswered { xid: i64, error: postgres::Error },
}

/// Answers a batch whose COMMIT went unanswered with what the database recorded: committed
/// means 200, aborted means 503 with no row. If the database stays unreachable past
/// `resolve_within`, the requests get 503 although their rows may exist — logged as such, the
/// one case where a 503 does not prove that nothing was stored.
fn resolve_commit(pool: &Pool, xid: i64, resolve_within: Duration) -> Result<(), DbError> {
    let deadline = Instant::now() + resolve_within;
    loop {
        let status = pool
            .get()
            .map_err(|error| error.to_string())
            .and_then(|mut connection| {
                connection
                    .client
                    .query_one("SELECT txid_status($1)", &[&xid])
                    .and_then(|row| row.try_get::<_, Option<String>>(0))
                    .map_err(|error| error_chain(&error))
            });
        match status.as_ref().map(Option::as_deref) {
            Ok(Some("committed")) => {
                tracing::info!(xid, "the unanswered COMMIT had committed");
                return Ok(());
            }
            Ok(Some("aborted")) => {
                tracing::info!(xid, "the unanswered COMMIT had not committed");
                return Err(DbError::Unavailable);
            }
            _ if Instant::now() >= deadline => {
                tracing::error!(
                    xid,
                    ?status,
                    "outcome of an unanswered COMMIT unknown; answering 503, rows may exist"
                );
                return Err(DbError::Unavailable);
            }
            // "in progress" (the ended backend is still finishing) or no connection yet.
            _ => thread::sleep(Duration::from_millis(100)),
        }
    }
}

type Recent = Result<Arc<[Visit]>, DbError>;

/// Queue in front of the readers; a waiting read costs a few bytes.
const READ_QUEUE_CAPACITY: usize = 4096;

/// Answers recent-visit reads from shared queries (see the module documentation).
pub struct VisitReader {
    queue: mpsc::Sender<oneshot::Sender<Recent>>,
}

impl VisitReader {
    /// Starts `readers` threads. They stop when the reader is dropped and the queue is empty.
    pub fn start(pool: Pool, readers: u32) -> std::io::Result<Self> {
        let (queue, receiver) = mpsc::channel(READ_QUEUE_CAPACITY);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..readers.max(1) {
            let (pool, receiver) = (pool.clone(), Arc::clone(&receiver));
            thread::Builder::new()
                .name(format!("visit-reader-{index}"))
                .spawn(move || read_batches(&pool, &receiver))?;
        }
        Ok(Self { queue })
    }

    /// The ten newest visits, read after this call began.
    pub async fn recent(&self) -> Recent {
        let (answer, outcome) = oneshot::channel();
        self.queue.send(answer).await.map_err(|_| DbError::Unavailable)?;
        outcome.await.unwrap_or(Err(DbError::Unavailable))
    }
}

fn read_batches(pool: &Pool, receiver: &Mutex<mpsc::Receiver<oneshot::Sender<Recent>>>) {
    let mut waiting = Vec::new();
    while next_batch(
        receiver,
        &mut waiting,
        READ_QUEUE_CAPACITY,
        oneshot::Sender::is_closed,
    ) {
        let outcome: Recent = recent(pool).map(Arc::from);
        for answer in waiting.drain(..) {
            let _ = answer.send(outcome.clone());
        }
    }
}

/// The ten newest visits. Blocking: call it off the async executor.
fn recent(pool: &Pool) -> Result<Vec<Visit>, DbError> {
    with_connection(pool, "reading recent visits", |connection| {
        let rows = connection.client.query(&connection.recent_visits, &[])?;
        rows.iter()
            .map(|row| {
                Ok(Visit {
                    at: row.try_get(0)?,
                    user_agent: row.try_get(1)?,
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use harness::Postgres;

    use super::Visit;
    use crate::config::Config;
    use crate::db::Database;

    async fn database(pg: &Postgres) -> Arc<Database> {
        let name = pg.create_database().expect("database created");
        let port = pg.port().to_string();
        let settings = Config::try_parse_from_args(&[
            "frontend",
            "--db-host",
            pg.host(),
            "--db-port",
            &port,
            "--db-name",
            &name,
            "--db-user",
            "postgres",
            "--db-pass",
            pg.superuser_password(),
        ])
        .expect("valid settings");
        let settings = settings.database.expect("database configured");
        let database = tokio::task::spawn_blocking(move || Database::new(settings))
            .await
            .expect("setup thread")
            .expect("database set up");
        Arc::new(database)
    }

    /// Coalesced reads are never staler than a read of their own: every read that starts after
    /// a visit was acknowledged sees it, however many reads share a query.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn coalesced_reads_see_every_visit_acknowledged_before_they_began() {
        let pg = Postgres::start().expect("PostgreSQL starts");
        let database = database(&pg).await;
        for round in 0..20 {
            let agent = format!("round {round}");
            let visit = Visit {
                at: Utc::now(),
                user_agent: Some(agent.clone()),
            };
            database.record_visit(visit).await.expect("visit committed");
            let reads: Vec<_> = (0..32)
                .map(|_| {
                    let database = Arc::clone(&database);
                    tokio::spawn(async move { database.recent_visits().await })
                })
                .collect();
            for read in reads {
                let visits = read.await.expect("read task").expect("read succeeds");
                assert_eq!(
                    visits.first().and_then(|visit| visit.user_agent.as_deref()),
                    Some(agent.as_str()),
                    "a read that began after round {round} was acknowledged must show it first"
                );
            }
        }
    }

    /// A COMMIT whose answer was lost is answered with what the database recorded, and only an
    /// unreachable database leaves the outcome unknown (then: 503).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unanswered_commit_is_answered_with_what_the_database_recorded() {
        use std::time::{Duration, Instant};

        use super::resolve_commit;
        use crate::db::DbError;

        let mut pg = Postgres::start().expect("PostgreSQL starts");
        let database = database(&pg).await;
        let (committed, aborted) = pg
            .with_admin_client("postgres", |client| {
                let mut transaction = client.transaction()?;
                let committed: i64 = transaction.query_one("SELECT txid_current()", &[])?.get(0);
                transaction.commit()?;
                let mut transaction = client.transaction()?;
                let aborted: i64 = transaction.query_one("SELECT txid_current()", &[])?.get(0);
                transaction.rollback()?;
                Ok((committed, aborted))
            })
            .expect("two transactions");

        let resolve = |xid: i64, within: Duration| {
            let database = Arc::clone(&database);
            tokio::task::spawn_blocking(move || resolve_commit(&database.pool, xid, within))
        };
        assert_eq!(
            resolve(committed, Duration::from_secs(5)).await.expect("thread"),
            Ok(())
        );
        assert_eq!(
            resolve(aborted, Duration::from_secs(5)).await.expect("thread"),
            Err(DbError::Unavailable)
        );

        pg.stop().expect("PostgreSQL stops");
        let started = Instant::now();
        assert_eq!(
            resolve(committed, Duration::from_millis(500))
                .await
                .expect("thread"),
            Err(DbError::Unavailable),
            "unknown outcome: no 200 without proof"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "waited for the database first"
        );
    }
}
