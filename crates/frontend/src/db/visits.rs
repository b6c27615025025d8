//! Visits: recorded with group commit, read newest first.
//!
//! Every `GET /` needs its row durably committed before it may answer 200. One transaction per
//! request makes the commit (a WAL flush) the bottleneck, so writer threads take whatever visits
//! are queued — up to a batch limit — and commit them with one multi-row INSERT. Each request
//! still waits for its own batch's commit, and a failed batch fails exactly its own requests.
//!
//! A batch costs one round trip: a single statement, committed on its own, stores the visits and
//! the batch's id (`INSERT_VISITS`). Across a VPC every round trip is paid by every visit in the
//! batch, so BEGIN and COMMIT of their own would triple the time a visit waits. When the answer is
//! lost (the session ends while the statement is in flight) the batch may or may not be stored;
//! the id says which: sending the statement again stores nothing twice, and claiming the id
//! for nothing tells a stored batch from one that never was and now never can be. Ids are kept
//! for `visit_batch_retention.keep` and may be sent or claimed only within `send_within` of their
//! creation, both judged by the database's clock in the statements themselves: a statement held
//! up for minutes (a frozen link, a stalled server) finds its id refused, never pruned and stored
//! again. Its visits are then told the outcome is unknown.
//!
//! Reads are coalesced the same way: reader threads take every `GET /recent-visits` waiting and
//! answer them all from one query. A query serves only requests that were queued before it
//! started, so each answer is at least as fresh as a query of its own would have been.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::connection::Connection;
use super::pool::Pool;
use super::{DbError, connection_was_lost, error_chain, session_cannot_serve, with_connection};

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

/// A writer's connection unused for this long is checked before a batch is sent on it (see
/// `insert`). Short enough that a session ended between two bursts is noticed; long enough that a
/// loaded writer never pays the extra round trip.
const IDLE_PING_AFTER: Duration = Duration::from_millis(100);

/// How often a writer deletes batch ids nobody can ask about any more. Often enough that each
/// delete is small (it runs on a writer, between two batches).
const PRUNE_EVERY: Duration = Duration::from_secs(10);

pub struct VisitWriter {
    queue: mpsc::Sender<Pending>,
    writers: Arc<Writers>,
}

/// What the writers share besides the queue.
struct Writers {
    pool: Pool,
    max_batch: usize,
    resolve_within: Duration,
    /// Seconds since the epoch of the last prune, so that one writer at a time prunes.
    last_prune: AtomicU64,
    /// Batches sent or being resolved whose requests have no answer yet, with their visit
    /// counts: what [`VisitWriter::finish`] waits for, and names if the process must go first.
    in_flight: Mutex<HashMap<Uuid, usize>>,
    answered: Condvar,
}

impl Writers {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, usize>> {
        self.in_flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives each waiting request its answer, and takes the batch off the in-flight list.
    fn answer(
        &self,
        id: Uuid,
        waiting: Vec<oneshot::Sender<Result<(), DbError>>>,
        outcome: Result<(), DbError>,
    ) {
        for committed in waiting {
            let _ = committed.send(outcome);
        }
        self.in_flight().remove(&id);
        self.answered.notify_all();
    }
}

impl VisitWriter {
    /// Starts `writers` threads. They stop when the writer is dropped and the queue is empty.
    /// `resolve_within`: how long a batch whose answer was lost waits for the database to say
    /// whether it was stored.
    pub fn start(
        pool: Pool,
        writers: u32,
        max_batch: usize,
        resolve_within: Duration,
    ) -> std::io::Result<Self> {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let receiver = Arc::new(Mutex::new(receiver));
        let shared = Arc::new(Writers {
            pool,
            max_batch,
            resolve_within,
            last_prune: AtomicU64::new(epoch_seconds()),
            in_flight: Mutex::new(HashMap::new()),
            answered: Condvar::new(),
        });
        for index in 0..writers {
            let (shared, receiver) = (Arc::clone(&shared), Arc::clone(&receiver));
            thread::Builder::new()
                .name(format!("visit-writer-{index}"))
                .spawn(move || write_batches(&shared, &receiver))?;
        }
        Ok(Self {
            queue,
            writers: shared,
        })
    }

    /// For the end of the process: waits up to `within` for the batches whose outcome is not
    /// known yet (sent, or being resolved after a lost answer), then logs each one still open.
    /// Their requests get no answer from this process, and their rows may exist. Blocking.
    pub fn finish(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut in_flight = self.writers.in_flight();
        while !in_flight.is_empty() && Instant::now() < deadline {
            let wait = deadline.saturating_duration_since(Instant::now());
            in_flight = self
                .writers
                .answered
                .wait_timeout(in_flight, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        for (id, visits) in in_flight.iter() {
            tracing::error!(batch = %id, visits, "outcome of a visit batch unknown at exit: its requests got no answer, rows may exist");
        }
    }

    /// Resolves once the visit is committed, or with the reason it was not.
    pub async fn record(&self, visit: Visit) -> Result<(), DbError> {
        let (committed, outcome) = oneshot::channel();
        self.queue
            .send(Pending { visit, committed })
            .await
            .map_err(|_| DbError::Unavailable)?;
        // The writer gave up its part without an answer (a resolver thread that could not start):
        // the batch's statement may have been sent.
        outcome.await.unwrap_or(Err(DbError::OutcomeUnknown))
    }
}

fn write_batches(writers: &Arc<Writers>, receiver: &Mutex<mpsc::Receiver<Pending>>) {
    let mut batch = Vec::with_capacity(writers.max_batch);
    // A caller that stopped waiting (client gone) must not get a row it was never told of.
    while next_batch(receiver, &mut batch, writers.max_batch, |pending| {
        pending.committed.is_closed()
    }) {
        let id = Uuid::now_v7();
        writers.in_flight().insert(id, batch.len());
        let written = insert(&writers.pool, id, &batch);
        let waiting: Vec<_> = batch.drain(..).map(|pending| pending.committed).collect();
        match written {
            Written::Done(outcome) => writers.answer(id, waiting, outcome),
            // Finding out may take until the database is back; the writer must not wait for
            // that, or every other visit would wait with it instead of getting its 503.
            Written::Unanswered => resolve_in_background(Arc::clone(writers), id, waiting),
        }
        prune_if_due(writers);
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
    /// A session ended while the batch's statement was in flight: the batch may or may not be
    /// stored, and only the database can say which.
    Unanswered,
}

fn insert(pool: &Pool, id: Uuid, batch: &[Pending]) -> Written {
    let timestamps: Vec<DateTime<Utc>> = batch.iter().map(|pending| pending.visit.at).collect();
    let user_agents: Vec<Option<&str>> = batch
        .iter()
        .map(|pending| pending.visit.user_agent.as_deref())
        .collect();
    let mut maybe_stored = false;
    let outcome = with_connection(pool, "recording visits", |connection| {
        let Connection {
            client,
            insert_visits,
            last_batch,
            ..
        } = connection;
        // A session the server ended while it sat idle (a restart, a failover, rotation) fails
        // this empty query, and a batch never sent cannot have been stored: its visits get their
        // answer at once instead of waiting for the database to say what happened. A connection
        // in steady use skips it, so a batch under load costs one round trip.
        if last_batch.elapsed() >= IDLE_PING_AFTER {
            client.simple_query("")?;
        }
        *last_batch = Instant::now();
        let sent = !client.is_closed();
        let result = client
            .query_one(&*insert_visits, &[&id, &timestamps, &user_agents])
            .and_then(|row| Ok((row.try_get::<_, i64>(0)?, row.try_get::<_, bool>(1)?)));
        // A statement that failed on its own aborted and stored nothing. One whose session ended
        // once it was sent may have committed, whatever came back first: under the reliability
        // suite's rotation, sessions ended with a FATAL before the result row had been read still
        // had their batch stored. Sending it again (on another connection) is safe either way.
        if let Err(error) = &result
            && sent
            && connection_was_lost(error)
        {
            maybe_stored = true;
        }
        result
    });
    match outcome {
        Ok((inserted, true)) if inserted == batch.len() as i64 => Written::Done(Ok(())),
        // Only a lost answer sends the statement twice: the first attempt had stored the batch.
        Ok((0, true)) if maybe_stored => Written::Done(Ok(())),
        // The database refused the id as too old to send: this statement stored nothing, and
        // whether an earlier attempt did can no longer be asked (its id may be pruned).
        Ok((_, false)) if maybe_stored => {
            tracing::error!(batch = %id, visits = batch.len(), "outcome of an unanswered visit batch unknown: its id is older than visit_batch_retention.send_within by the database's clock; answering 503, outcome unknown, rows may exist");
            Written::Done(Err(DbError::OutcomeUnknown))
        }
        Ok((_, false)) => {
            tracing::error!(batch = %id, "the database refused a new visit batch id as older than visit_batch_retention.send_within: the statement arrived that late, or this instance's clock is behind the database's by more than that; nothing stored");
            Written::Done(Err(DbError::Failed))
        }
        Ok((inserted, true)) => {
            tracing::error!(
                ?inserted,
                expected = batch.len(),
                "visit batch inserted an unexpected number of rows"
            );
            Written::Done(Err(DbError::Failed))
        }
        Err(_) if maybe_stored => {
            tracing::warn!(batch = %id, visits = batch.len(), "COMMIT unanswered (the batch's statement commits on its own); asking the database whether the batch was stored");
            Written::Unanswered
        }
        Err(error) => Written::Done(Err(error)),
    }
}

fn resolve_in_background(
    writers: Arc<Writers>,
    id: Uuid,
    waiting: Vec<oneshot::Sender<Result<(), DbError>>>,
) {
    let resolver = Arc::clone(&writers);
    let answer = move || {
        let outcome = resolve_batch(&resolver.pool, id, resolver.resolve_within);
        resolver.answer(id, waiting, outcome);
    };
    // A thread per cut-off batch: these come with restarts and failovers, a handful at a time.
    if let Err(error) = thread::Builder::new()
        .name("batch-resolver".to_owned())
        .spawn(answer)
    {
        // The closure, and with it every waiting request's sender, is dropped: they answer
        // "outcome unknown" (see `record`).
        writers.in_flight().remove(&id);
        writers.answered.notify_all();
        tracing::error!(%error, batch = %id, "cannot start a thread to resolve a visit batch; its visits get 503, outcome unknown, rows may exist");
    }
}

/// Claims a batch id for nothing unless the batch is stored, and answers whether it is. The claim
/// is the only writer of an id without visits, and marks it so (`stored = false`): a claim whose
/// own answer was lost, asked again, must not read its own row as a stored batch. A first attempt
/// still in progress makes it wait for that attempt's outcome, as `DO NOTHING` would. An id older
/// than `send_within` (the database's clock) is not claimed and no row is answered: it may have
/// been pruned, and then a claim would call a stored batch "never stored".
const CLAIM_BATCH: &str = "INSERT INTO visit_batch (id, stored) \
     SELECT $1, false FROM visit_batch_retention \
     WHERE visit_batch_id_floor(clock_timestamp() - send_within) <= $1 \
     ON CONFLICT (id) DO UPDATE SET stored = visit_batch.stored RETURNING stored";

/// Deletes the batch ids older than `keep`, by the database's clock (see `visit_batch_retention`).
const PRUNE_BATCH_IDS: &str = "DELETE FROM visit_batch \
     WHERE id < (SELECT visit_batch_id_floor(now() - keep) FROM visit_batch_retention)";

/// Answers a batch whose answer was lost with what the database recorded: stored means 200,
/// not stored means 503 with no row. It claims the batch id for nothing: if that inserts, the
/// batch was never stored and now never can be; if the id exists, the batch was stored. A first
/// attempt still in progress (its session not yet ended on the server) makes the claim wait for
/// its outcome. If the database stays unreachable past `resolve_within`, the outcome is unknown
/// and the requests are told so ([`DbError::OutcomeUnknown`]): their rows may exist.
fn resolve_batch(pool: &Pool, id: Uuid, resolve_within: Duration) -> Result<(), DbError> {
    let deadline = Instant::now() + resolve_within;
    loop {
        let claimed = pool
            .get()
            .map_err(|error| error.to_string())
            .and_then(|mut connection| {
                connection
                    .client
                    .query_opt(CLAIM_BATCH, &[&id])
                    .and_then(|row| row.map(|row| row.try_get::<_, bool>(0)).transpose())
                    .map_err(|error| {
                        // Not the same session again: the next claim must reach the writer.
                        if session_cannot_serve(&error) {
                            connection.unusable = true;
                        }
                        error_chain(&error)
                    })
            });
        match claimed {
            Ok(Some(true)) => {
                tracing::info!(batch = %id, "the unanswered visit batch had been stored");
                return Ok(());
            }
            Ok(Some(false)) => {
                tracing::info!(batch = %id, "the unanswered visit batch had not been stored");
                return Err(DbError::Unavailable);
            }
            Ok(None) => {
                tracing::error!(batch = %id, "outcome of an unanswered visit batch unknown: its id is older than visit_batch_retention.send_within by the database's clock; answering 503, outcome unknown, rows may exist");
                return Err(DbError::OutcomeUnknown);
            }
            Err(error) if Instant::now() >= deadline => {
                tracing::error!(
                    batch = %id,
                    error,
                    "outcome of an unanswered visit batch unknown; answering 503, outcome unknown, rows may exist"
                );
                return Err(DbError::OutcomeUnknown);
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Deletes batch ids older than the retention, at most once per `PRUNE_EVERY` across writers.
/// Runs only after a batch, so an idle frontend opens no connection and Aurora can pause.
fn prune_if_due(writers: &Writers) {
    let now = epoch_seconds();
    let last = writers.last_prune.load(Ordering::Relaxed);
    let due = now.saturating_sub(last) >= PRUNE_EVERY.as_secs();
    if !due
        || writers
            .last_prune
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let pruned = with_connection(&writers.pool, "pruning visit batch ids", |connection| {
        connection.client.execute(PRUNE_BATCH_IDS, &[])
    });
    if let Ok(deleted) = pruned {
        tracing::debug!(deleted, "old visit batch ids pruned");
    }
}

fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
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

    async fn database_named(pg: &Postgres) -> (Arc<Database>, String) {
        database_with(pg, &[]).await
    }

    async fn database_with(pg: &Postgres, extra: &[&str]) -> (Arc<Database>, String) {
        let name = pg.create_database().expect("database created");
        let port = pg.port().to_string();
        let mut args = vec![
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
        ];
        args.extend_from_slice(extra);
        let settings = Config::try_parse_from_args(&args).expect("valid settings");
        let settings = settings.database.expect("database configured");
        let database = tokio::task::spawn_blocking(move || Database::new(settings))
            .await
            .expect("setup thread")
            .expect("database set up");
        // The schema is applied on the first connection.
        database.recent_visits().await.expect("schema applied");
        (Arc::new(database), name)
    }

    /// Coalesced reads are never staler than a read of their own: every read that starts after
    /// a visit was acknowledged sees it, however many reads share a query.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn coalesced_reads_see_every_visit_acknowledged_before_they_began() {
        let pg = Postgres::start().expect("PostgreSQL starts");
        let (database, _) = database_named(&pg).await;
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

    /// The shortest DB_TCP_USER_TIMEOUT accepted still makes socket options the kernel takes
    /// (keepalive intervals count whole seconds, and 0 is refused): visits are recorded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_shortest_tcp_user_timeout_still_connects() {
        let pg = Postgres::start().expect("PostgreSQL starts");
        let (database, _) = database_with(&pg, &["--db-tcp-user-timeout", "2s"]).await;
        let visit = Visit {
            at: Utc::now(),
            user_agent: Some("short timeout".to_owned()),
        };
        database.record_visit(visit).await.expect("visit committed");
    }

    /// Runs the batch statement itself, in a transaction of the caller's, as a writer would.
    fn store_batch(
        client: &mut impl postgres::GenericClient,
        id: uuid::Uuid,
        agents: &[&str],
    ) -> anyhow::Result<i64> {
        let timestamps = vec![Utc::now(); agents.len()];
        let agents: Vec<Option<&str>> = agents.iter().copied().map(Some).collect();
        let row = client.query_one(crate::db::INSERT_VISITS, &[&id, &timestamps, &agents])?;
        Ok(row.get(0))
    }

    fn count_visits(pg: &Postgres, database: &str, agent: &str) -> i64 {
        pg.with_admin_client(database, |client| {
            let row = client.query_one("SELECT count(*) FROM access WHERE user_agent = $1", &[&agent])?;
            Ok(row.get(0))
        })
        .expect("count")
    }

    /// Sending a batch's statement again (after a lost answer) stores nothing twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_sent_twice_is_stored_once() {
        let pg = Postgres::start().expect("PostgreSQL starts");
        let (database, name) = database_named(&pg).await;
        drop(database);
        let id = uuid::Uuid::now_v7();
        let inserted = pg
            .with_admin_client(&name, |client| {
                Ok((
                    store_batch(client, id, &["twice", "twice"])?,
                    store_batch(client, id, &["twice", "twice"])?,
                ))
            })
            .expect("both sends answered");
        assert_eq!(inserted, (2, 0));
        assert_eq!(count_visits(&pg, &name, "twice"), 2);
    }

    /// Once a batch id is older than `send_within` by the database's clock, it is neither
    /// stored nor claimed, so pruning it (after `keep`) can never let a late resend store the
    /// visits twice, nor a claim call a stored batch "never stored".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_id_too_old_to_send_is_neither_stored_again_nor_claimed() {
        use std::time::Duration;

        use super::{PRUNE_BATCH_IDS, resolve_batch};
        use crate::db::DbError;

        let pg = Postgres::start().expect("PostgreSQL starts");
        let (database, name) = database_named(&pg).await;
        let id = uuid::Uuid::now_v7();
        let sends = pg
            .with_admin_client(&name, |client| {
                client.execute(
                    "UPDATE visit_batch_retention SET keep = '1 s', send_within = '500 ms'",
                    &[],
                )?;
                let first = store_batch(client, id, &["pruned"])?;
                std::thread::sleep(Duration::from_millis(1100));
                let pruned = client.execute(PRUNE_BATCH_IDS, &[])?;
                let row = client.query_one(
                    crate::db::INSERT_VISITS,
                    &[&id, &vec![Utc::now()], &vec![Some("pruned")]],
                )?;
                Ok((first, pruned, row.get::<_, i64>(0), row.get::<_, bool>(1)))
            })
            .expect("statements answered");
        assert_eq!(
            sends,
            (1, 1, 0, false),
            "(stored, pruned, stored again, sendable)"
        );
        assert_eq!(count_visits(&pg, &name, "pruned"), 1);
        let claimed =
            tokio::task::spawn_blocking(move || resolve_batch(&database.pool, id, Duration::from_secs(5)))
                .await
                .expect("thread");
        assert_eq!(
            claimed,
            Err(DbError::OutcomeUnknown),
            "a stored batch is never called unstored"
        );
    }

    /// The resolver's own claim whose answer was lost (a second failover right after the
    /// first) is not mistaken for a stored batch when it asks again: no 200 without a row.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_asked_again_is_not_mistaken_for_a_stored_batch() {
        use super::resolve_batch;
        use crate::db::DbError;

        let pg = Postgres::start().expect("PostgreSQL starts");
        let (database, name) = database_named(&pg).await;
        let id = uuid::Uuid::now_v7();
        for attempt in ["the claim whose answer is lost", "the claim asked again"] {
            let database = Arc::clone(&database);
            let outcome = tokio::task::spawn_blocking(move || {
                resolve_batch(&database.pool, id, std::time::Duration::from_secs(5))
            })
            .await
            .expect("thread");
            assert_eq!(outcome, Err(DbError::Unavailable), "{attempt}: never stored");
        }
        let visits: i64 = pg
            .with_admin_client(&name, |client| {
                Ok(client.query_one("SELECT count(*) FROM access", &[])?.get(0))
            })
            .expect("count");
        assert_eq!(visits, 0);
    }

    /// A batch whose answer was lost is answered with what the database recorded — also when the
    /// first attempt is still in progress — and only an unreachable database leaves the outcome
    /// unknown (then: 503).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unanswered_batch_is_answered_with_what_the_database_recorded() {
        use std::time::{Duration, Instant};

        use super::resolve_batch;
        use crate::db::DbError;

        let mut pg = Postgres::start().expect("PostgreSQL starts");
        let (database, name) = database_named(&pg).await;
        let resolve = |id: uuid::Uuid, within: Duration| {
            let database = Arc::clone(&database);
            tokio::task::spawn_blocking(move || resolve_batch(&database.pool, id, within))
        };

        let stored = uuid::Uuid::now_v7();
        pg.with_admin_client(&name, |client| store_batch(client, stored, &["stored"]))
            .expect("batch stored");
        assert_eq!(
            resolve(stored, Duration::from_secs(5)).await.expect("thread"),
            Ok(())
        );

        let never_sent = uuid::Uuid::now_v7();
        assert_eq!(
            resolve(never_sent, Duration::from_secs(5)).await.expect("thread"),
            Err(DbError::Unavailable)
        );
        let late = pg
            .with_admin_client(&name, |client| store_batch(client, never_sent, &["late"]))
            .expect("statement answered");
        assert_eq!(
            late, 0,
            "a batch resolved as not stored can never be stored afterwards"
        );
        assert_eq!(count_visits(&pg, &name, "late"), 0);

        // A first attempt still running when the resolver asks: the answer waits for its end.
        for (commit, expected) in [(true, Ok(())), (false, Err(DbError::Unavailable))] {
            let in_flight = uuid::Uuid::now_v7();
            let (sent, sent_rx) = std::sync::mpsc::channel();
            let (end, end_rx) = std::sync::mpsc::channel::<bool>();
            let mut config = postgres::Config::new();
            config
                .host(pg.host())
                .port(pg.port())
                .user("postgres")
                .password(pg.superuser_password())
                .dbname(&name);
            let first_attempt = {
                std::thread::spawn(move || -> anyhow::Result<()> {
                    let mut client = config.connect(postgres::NoTls)?;
                    let mut transaction = client.transaction()?;
                    store_batch(&mut transaction, in_flight, &["in flight"])?;
                    sent.send(())?;
                    if end_rx.recv()? {
                        transaction.commit()?;
                    } else {
                        transaction.rollback()?;
                    }
                    Ok(())
                })
            };
            sent_rx.recv().expect("first attempt sent");
            let answer = resolve(in_flight, Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!answer.is_finished(), "the resolver waits for the first attempt");
            end.send(commit).expect("first attempt waiting");
            first_attempt.join().expect("thread").expect("first attempt ends");
            assert_eq!(
                answer.await.expect("thread"),
                expected,
                "first attempt committed: {commit}"
            );
        }

        pg.stop().expect("PostgreSQL stops");
        let started = Instant::now();
        assert_eq!(
            resolve(stored, Duration::from_millis(500)).await.expect("thread"),
            Err(DbError::OutcomeUnknown),
            "unknown outcome: no 200 without proof, and no claim that nothing was stored"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "waited for the database first"
        );
    }
}
