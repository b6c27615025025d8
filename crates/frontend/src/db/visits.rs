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

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::{DbError, Pool, with_connection};

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
    pub fn start(pool: Pool, writers: u32, max_batch: usize) -> std::io::Result<Self> {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..writers {
            let (pool, receiver) = (pool.clone(), Arc::clone(&receiver));
            thread::Builder::new()
                .name(format!("visit-writer-{index}"))
                .spawn(move || write_batches(&pool, &receiver, max_batch))?;
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

fn write_batches(pool: &Pool, receiver: &Mutex<mpsc::Receiver<Pending>>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        let received = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocking_recv_many(&mut batch, max_batch);
        if received == 0 {
            return; // the sender is gone: the service is shutting down
        }
        // A caller that stopped waiting (client gone) must not get a row it was never told of.
        batch.retain(|pending| !pending.committed.is_closed());
        if batch.is_empty() {
            continue;
        }
        let outcome = insert(pool, &batch);
        for pending in batch.drain(..) {
            let _ = pending.committed.send(outcome);
        }
    }
}

fn insert(pool: &Pool, batch: &[Pending]) -> Result<(), DbError> {
    let timestamps: Vec<DateTime<Utc>> = batch.iter().map(|pending| pending.visit.at).collect();
    let user_agents: Vec<Option<&str>> = batch
        .iter()
        .map(|pending| pending.visit.user_agent.as_deref())
        .collect();
    let inserted = with_connection(pool, "recording visits", |connection| {
        connection
            .client
            .execute(&connection.insert_visits, &[&timestamps, &user_agents])
    })?;
    if inserted != batch.len() as u64 {
        tracing::error!(
            inserted,
            expected = batch.len(),
            "visit batch inserted an unexpected number of rows"
        );
        return Err(DbError::Failed);
    }
    Ok(())
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
    loop {
        let received = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocking_recv_many(&mut waiting, READ_QUEUE_CAPACITY);
        if received == 0 {
            return; // the sender is gone: the service is shutting down
        }
        waiting.retain(|answer| !answer.is_closed());
        if waiting.is_empty() {
            continue;
        }
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
}
