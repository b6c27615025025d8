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
//! for nothing tells a stored batch from one that never was and now never can be.
//!
//! Reads are coalesced the same way: reader threads take every `GET /recent-visits` waiting and
//! answer them all from one query. A query serves only requests that were queued before it
//! started, so each answer is at least as fresh as a query of its own would have been.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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

/// Batch ids younger than this are kept. A lost answer is resolved within `resolve_within`, so
/// anything much older is never looked up again.
const MIN_BATCH_ID_RETENTION: Duration = Duration::from_secs(600);

pub struct VisitWriter {
    queue: mpsc::Sender<Pending>,
}

/// What the writers share besides the queue.
struct Writers {
    pool: Pool,
    max_batch: usize,
    resolve_within: Duration,
    retention: Duration,
    /// Seconds since the epoch of the last prune, so that one writer at a time prunes.
    last_prune: AtomicU64,
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
            retention: MIN_BATCH_ID_RETENTION.max(resolve_within * 10),
            last_prune: AtomicU64::new(epoch_seconds()),
        });
        for index in 0..writers {
            let (shared, receiver) = (Arc::clone(&shared), Arc::clone(&receiver));
            thread::Builder::new()
                .name(format!("visit-writer-{index}"))
                .spawn(move || write_batches(&shared, &receiver))?;
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
        // The writer gave up its part without an answer (a resolver thread that could not start):
        // the batch's statement may have been sent.
        outcome.await.unwrap_or(Err(DbError::OutcomeUnknown))
    }
}

fn write_batches(writers: &Writers, receiver: &Mutex<mpsc::Receiver<Pending>>) {
    let mut batch = Vec::with_capacity(writers.max_batch);
    // A caller that stopped waiting (client gone) must not get a row it was never told of.
    while next_batch(receiver, &mut batch, writers.max_batch, |pending| {
        pending.committed.is_closed()
    }) {
        let id = Uuid::now_v7();
        match insert(&writers.pool, id, &batch) {
            Written::Done(outcome) => {
                for pending in batch.drain(..) {
                    let _ = pending.committed.send(outcome);
                }
            }
            Written::Unanswered => {
                // Finding out may take until the database is back; the writer must not wait for
                // that, or every other visit would wait with it instead of getting its 503.
                let waiting: Vec<_> = batch.drain(..).map(|pending| pending.committed).collect();
                resolve_in_background(writers.pool.clone(), id, writers.resolve_within, waiting);
            }
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
            .and_then(|row| row.try_get::<_, i64>(0))
            .map(Some);
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
        Ok(Some(inserted)) if inserted == batch.len() as i64 => Written::Done(Ok(())),
        // Only a lost answer sends the statement twice: the first attempt had stored the batch.
        Ok(Some(0)) if maybe_stored => Written::Done(Ok(())),
        Ok(inserted) => {
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
    pool: Pool,
    id: Uuid,
    within: Duration,
    waiting: Vec<oneshot::Sender<Result<(), DbError>>>,
) {
    let answer = move || {
        let outcome = resolve_batch(&pool, id, within);
        for committed in waiting {
            let _ = committed.send(outcome);
        }
    };
    // A thread per cut-off batch: these come with restarts and failovers, a handful at a time.
    if let Err(error) = thread::Builder::new()
        .name("batch-resolver".to_owned())
        .spawn(answer)
    {
        tracing::error!(%error, batch = %id, "cannot start a thread to resolve a visit batch; its visits get 503, outcome unknown, rows may exist");
    }
}

/// Claims a batch id for nothing unless the batch is stored, and answers whether it is. The claim
/// is the only writer of an id without visits, and marks it so (`stored = false`): a claim whose
/// own answer was lost, asked again, must not read its own row as a stored batch. A first attempt
/// still in progress makes it wait for that attempt's outcome, as `DO NOTHING` would.
const CLAIM_BATCH: &str = "INSERT INTO visit_batch (id, stored) VALUES ($1, false) \
     ON CONFLICT (id) DO UPDATE SET stored = visit_batch.stored RETURNING stored";

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
                    .query_one(CLAIM_BATCH, &[&id])
                    .and_then(|row| row.try_get::<_, bool>(0))
                    .map_err(|error| {
                        // Not the same session again: the next claim must reach the writer.
                        if session_cannot_serve(&error) {
                            connection.unusable = true;
                        }
                        error_chain(&error)
                    })
            });
        match claimed {
            Ok(true) => {
                tracing::info!(batch = %id, "the unanswered visit batch had been stored");
                return Ok(());
            }
            Ok(false) => {
                tracing::info!(batch = %id, "the unanswered visit batch had not been stored");
                return Err(DbError::Unavailable);
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
    let cutoff = SystemTime::now()
        .checked_sub(writers.retention)
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map(|since| {
            Uuid::new_v7(uuid::Timestamp::from_unix(
                uuid::NoContext,
                since.as_secs(),
                since.subsec_nanos(),
            ))
        });
    let Some(cutoff) = cutoff else { return };
    // Ids are UUIDv7: ordered by creation time, so this is a range on the primary key.
    let pruned = with_connection(&writers.pool, "pruning visit batch ids", |connection| {
        connection
            .client
            .execute("DELETE FROM visit_batch WHERE id < $1", &[&cutoff])
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
