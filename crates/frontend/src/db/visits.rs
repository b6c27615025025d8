//! Visits: recorded with group commit, read newest first.
//!
//! Every `GET /` needs its row durably committed before it may answer 200. One transaction per
//! request makes the commit (a WAL flush) the bottleneck, so writer threads take whatever visits
//! are queued — up to a batch limit — and commit them with one multi-row INSERT. Each request
//! still waits for its own batch's commit, and a failed batch fails exactly its own requests.

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

/// The ten newest visits. Blocking: call it off the async executor.
pub fn recent(pool: &Pool) -> Result<Vec<Visit>, DbError> {
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
