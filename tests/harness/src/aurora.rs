//! What a client meets at an Aurora endpoint, as a TCP proxy in front of real PostgreSQL: the
//! instance the endpoint names, which a failover changes for new connections only (as a moved
//! DNS record does), and Aurora Serverless v2's pause and resume.
//!
//! Pause and resume, as the Aurora user guide describes them ("Scaling to Zero ACUs with
//! automatic pause and resume"): an instance pauses once it has had no connection for
//! `pause_after`; any open connection, even idle, keeps it awake. A connection that arrives
//! while it is paused resumes it, and "requested connections are established only after the
//! database instance finishes resuming" — so the proxy accepts the connection and holds it,
//! forwarding no byte either way, for `resume_takes` (about 15 s on Aurora), then carries it to
//! PostgreSQL. Connections that arrive while it resumes wait for the same moment.
//!
//! An instance that is down (stopped, rebooting) refuses: the proxy accepts and closes at once,
//! which a client sees as a connection ended before the server spoke.
//!
//! And the faults of the path in between: a link that freezes (every byte held, every socket
//! kept: acknowledged by the kernel, so neither keepalives nor TCP_USER_TIMEOUT notice) and is
//! then released or severed, and a session the server ends with a FATAL right after a commit.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// What meets the answer to a commit (see [`AuroraEndpoint::after_next_commit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterCommit {
    /// The answer is replaced by a FATAL with this SQLSTATE and the connection closed: the
    /// server ended the session after the commit, as a failed WAL flush would (`58030`).
    Fatal(&'static str),
    /// The answer is held and the link frozen ([`AuroraEndpoint::freeze`]).
    Freeze,
}

/// Aurora Serverless v2's scaling to zero. The default never pauses.
#[derive(Clone, Copy, Debug)]
pub struct Lifecycle {
    /// Pause after this long without any connection; `None`: never (a provisioned instance, or
    /// a minimum capacity above 0 ACU).
    pub pause_after: Option<Duration>,
    /// How long a resume holds the connections that caused it.
    pub resume_takes: Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            pause_after: None,
            resume_takes: Duration::from_secs(15),
        }
    }
}

/// A running endpoint on `127.0.0.1:<port>` (or the address given to [`start_on`](Self::start_on)).
/// Dropping it stops accepting and closes every connection it carries.
pub struct AuroraEndpoint {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    resumed: Condvar,
    thawed: Condvar,
    stopping: AtomicBool,
}

struct State {
    upstream: SocketAddr,
    lifecycle: Lifecycle,
    phase: Phase,
    /// Open client connections, with a handle of each side to close them on drop.
    open: HashMap<u64, Vec<TcpStream>>,
    next_id: u64,
    resumes: usize,
    /// No byte is forwarded while set (see [`AuroraEndpoint::freeze`]).
    frozen: bool,
    /// What happens to the next answer to a commit.
    after_commit: Option<AfterCommit>,
    /// How many answers to a commit have met an [`AfterCommit`].
    commit_faults: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Serving; `idle_since` is when the last connection closed (or the start), for the idle count.
    Awake {
        idle_since: Instant,
    },
    Paused,
    Resuming {
        until: Instant,
    },
}

impl State {
    /// Pausing happens by itself after the idle period; it is computed when looked at.
    fn settle(&mut self) {
        if let (Phase::Awake { idle_since }, Some(pause_after)) = (self.phase, self.lifecycle.pause_after)
            && self.open.is_empty()
            && idle_since.elapsed() >= pause_after
        {
            self.phase = Phase::Paused;
        }
        if let Phase::Resuming { until } = self.phase
            && Instant::now() >= until
        {
            self.phase = Phase::Awake {
                idle_since: Instant::now(),
            };
        }
    }
}

impl AuroraEndpoint {
    /// An endpoint on 127.0.0.1:0 naming `upstream`.
    pub fn start(upstream: SocketAddr, lifecycle: Lifecycle) -> Result<Self> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), upstream, lifecycle)
    }

    /// An endpoint listening on `listen`. Its threads (and so its sockets, including those to
    /// `upstream`) live in the network namespace of the calling thread.
    pub fn start_on(listen: SocketAddr, upstream: SocketAddr, lifecycle: Lifecycle) -> Result<Self> {
        let listener =
            TcpListener::bind(listen).with_context(|| format!("binding the endpoint on {listen}"))?;
        // Polled, so that dropping the endpoint needs no connection to wake it: it may live in
        // a network namespace the dropping thread cannot reach.
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                upstream,
                lifecycle,
                phase: Phase::Awake {
                    idle_since: Instant::now(),
                },
                open: HashMap::new(),
                next_id: 0,
                resumes: 0,
                frozen: false,
                after_commit: None,
                commit_faults: 0,
            }),
            resumed: Condvar::new(),
            thawed: Condvar::new(),
            stopping: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("aurora-endpoint".to_owned())
                .spawn(move || accept_loop(&listener, &shared))
                .context("starting the endpoint's thread")?
        };
        Ok(Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// New connections go to `upstream` from now on; open ones stay where they are (a DNS record
    /// that moved).
    pub fn point_at(&self, upstream: SocketAddr) {
        self.shared.lock().upstream = upstream;
    }

    /// Changes the scaling settings (as `modify-db-cluster` does); the idle count restarts.
    pub fn set_lifecycle(&self, lifecycle: Lifecycle) {
        let mut state = self.shared.lock();
        state.lifecycle = lifecycle;
        if let Phase::Awake { .. } = state.phase {
            state.phase = Phase::Awake {
                idle_since: Instant::now(),
            };
        }
    }

    /// Whether the instance is paused now (it pauses by itself after the idle period).
    pub fn is_paused(&self) -> bool {
        let mut state = self.shared.lock();
        state.settle();
        state.phase == Phase::Paused
    }

    /// Client connections open now (held ones included).
    pub fn connections(&self) -> usize {
        self.shared.lock().open.len()
    }

    /// How many times a connection has resumed the instance.
    pub fn resumes(&self) -> usize {
        self.shared.lock().resumes
    }

    /// The link stops carrying bytes, both ways, on every connection (new ones included); the
    /// sockets stay open and the kernel keeps acknowledging what it buffers, as when the path or
    /// the instance stalls without a reset.
    pub fn freeze(&self) {
        self.shared.lock().frozen = true;
    }

    /// Carries again everything held, late.
    pub fn release(&self) {
        self.shared.lock().frozen = false;
        self.shared.thawed.notify_all();
    }

    /// Closes every connection, dropping what was held, and carries new ones again: a frozen
    /// path that ends in a reset (a NAT's idle timeout, TCP_USER_TIMEOUT on the other side).
    pub fn sever(&self) {
        let mut state = self.shared.lock();
        for streams in state.open.values() {
            for stream in streams {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        state.frozen = false;
        self.shared.thawed.notify_all();
    }

    /// `fault` meets the next answer to a statement that returned one row and committed on its
    /// own (a visit batch): the batch is stored, and its writer does not learn it.
    pub fn after_next_commit(&self, fault: AfterCommit) {
        self.shared.lock().after_commit = Some(fault);
    }

    /// How many answers to a commit have met a fault of [`after_next_commit`](Self::after_next_commit).
    pub fn commit_faults(&self) -> usize {
        self.shared.lock().commit_faults
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for AuroraEndpoint {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        {
            // Woken under the lock: a thread that saw `stopping` unset is already waiting.
            let state = self.shared.lock();
            for streams in state.open.values() {
                for stream in streams {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
            self.shared.resumed.notify_all();
            self.shared.thawed.notify_all();
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// How often the acceptor looks for a new connection (and whether it should stop).
const ACCEPT_POLL: Duration = Duration::from_millis(5);

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stopping.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(_) => continue,
        };
        if client.set_nonblocking(false).is_err() {
            continue;
        }
        let shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("aurora-endpoint-conn".to_owned())
            .stack_size(128 * 1024)
            .spawn(move || carry(client, &shared));
        if let Err(error) = spawned {
            eprintln!("aurora endpoint: cannot start a connection thread: {error}");
        }
    }
}

/// Holds the connection while the instance resumes, then carries it to the upstream of the
/// moment; closes it at once if nothing listens there.
fn carry(client: TcpStream, shared: &Arc<Shared>) {
    let Ok(client_handle) = client.try_clone() else {
        return;
    };
    let (id, upstream) = {
        let mut state = shared.lock();
        state.settle();
        let id = state.next_id;
        state.next_id += 1;
        state.open.insert(id, vec![client_handle]);
        if state.phase == Phase::Paused {
            state.phase = Phase::Resuming {
                until: Instant::now() + state.lifecycle.resume_takes,
            };
            state.resumes += 1;
        }
        while let Phase::Resuming { until } = state.phase {
            if shared.stopping.load(Ordering::SeqCst) {
                break;
            }
            let wait = until.saturating_duration_since(Instant::now());
            state = shared
                .resumed
                .wait_timeout(state, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.settle();
        }
        (id, state.upstream)
    };
    if !shared.stopping.load(Ordering::SeqCst)
        && let Ok(server) = TcpStream::connect(upstream)
        && let (Ok(server_reader), Ok(server_handle), Ok(client_reader)) =
            (server.try_clone(), server.try_clone(), client.try_clone())
    {
        if let Some(streams) = shared.lock().open.get_mut(&id) {
            streams.push(server_handle);
        }
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let back = {
            let shared = Arc::clone(shared);
            std::thread::Builder::new()
                .name("aurora-endpoint-back".to_owned())
                .stack_size(128 * 1024)
                .spawn(move || pump(server_reader, client, &shared, Direction::ToClient))
        };
        pump(client_reader, server, shared, Direction::ToServer);
        if let Ok(back) = back {
            let _ = back.join();
        }
    }
    let mut state = shared.lock();
    if let Some(streams) = state.open.remove(&id) {
        for stream in streams {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
    if state.open.is_empty()
        && let Phase::Awake { .. } = state.phase
    {
        state.phase = Phase::Awake {
            idle_since: Instant::now(),
        };
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

/// Copies `from` to `to` until EOF (then half-closes `to`) or an error (then closes both),
/// holding what it read while the link is frozen, and meeting the answer to a commit with a
/// fault when asked to.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, direction: Direction) {
    let mut buffer = [0_u8; 16 * 1024];
    // Server bytes kept back while a fault waits for a commit: the end of a statement whose
    // ReadyForQuery (which says whether it committed) has not arrived yet.
    let mut held = Vec::new();
    loop {
        match from.read(&mut buffer) {
            Ok(0) => {
                let _ = to.write_all(&held);
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(read) => {
                held.extend_from_slice(&buffer[..read]);
                let (answer, fatal) = {
                    let mut state = shared.lock();
                    let answer = match state.after_commit {
                        Some(_) if direction == Direction::ToClient => Answer::of(&held),
                        _ => Answer::Other,
                    };
                    let fault = state.after_commit.filter(|_| answer == Answer::Commit);
                    if fault.is_some() {
                        state.after_commit = None;
                        state.commit_faults += 1;
                    }
                    if fault == Some(AfterCommit::Freeze) {
                        state.frozen = true;
                    }
                    while state.frozen && !shared.stopping.load(Ordering::SeqCst) {
                        state = shared.thawed.wait(state).unwrap_or_else(PoisonError::into_inner);
                    }
                    match fault {
                        Some(AfterCommit::Fatal(sqlstate)) => (answer, Some(sqlstate)),
                        _ => (answer, None),
                    }
                };
                if let Some(sqlstate) = fatal {
                    let _ = to.write_all(&fatal_error_response(sqlstate));
                    break;
                }
                if answer == Answer::Unfinished {
                    continue;
                }
                if to.write_all(&held).is_err() {
                    break;
                }
                held.clear();
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// What server bytes are, for a fault waiting for a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// The end of a one-row statement that committed on its own: CommandComplete `SELECT 1`,
    /// then ReadyForQuery outside a transaction (`I`), which PostgreSQL sends after the commit.
    Commit,
    /// CommandComplete `SELECT 1` without its ReadyForQuery yet (with a synchronous standby the
    /// two often come in separate reads).
    Unfinished,
    Other,
}

impl Answer {
    fn of(bytes: &[u8]) -> Self {
        const COMPLETE: &[u8] = b"C\0\0\0\x0dSELECT 1\0";
        const READY: &[u8] = b"Z\0\0\0\x05";
        let Some(complete) = find(bytes, COMPLETE) else {
            return Self::Other;
        };
        let after = &bytes[complete..];
        match find(after, READY).and_then(|ready| after.get(ready + READY.len())) {
            Some(b'I') => Self::Commit,
            Some(_) => Self::Other,
            None => Self::Unfinished,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// A PostgreSQL ErrorResponse of severity FATAL with `sqlstate`.
fn fatal_error_response(sqlstate: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (code, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', sqlstate),
        (b'M', "injected by the test endpoint after a commit"),
    ] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    let length = u32::try_from(fields.len() + 4).unwrap_or(u32::MAX);
    message.extend_from_slice(&length.to_be_bytes());
    message.extend_from_slice(&fields);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> Result<SocketAddr> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    if let Ok(mut reader) = stream.try_clone() {
                        let mut writer = stream;
                        let _ = std::io::copy(&mut reader, &mut writer);
                    }
                });
            }
        });
        Ok(addr)
    }

    fn round_trip(addr: SocketAddr) -> Result<Duration> {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"ping")?;
        let mut answer = [0_u8; 4];
        stream.read_exact(&mut answer)?;
        anyhow::ensure!(&answer == b"ping", "echo answered {answer:?}");
        Ok(started.elapsed())
    }

    #[test]
    fn an_idle_instance_pauses_and_the_next_connections_wait_for_one_resume() -> Result<()> {
        let endpoint = AuroraEndpoint::start(
            echo_server()?,
            Lifecycle {
                pause_after: Some(Duration::from_millis(200)),
                resume_takes: Duration::from_millis(700),
            },
        )?;
        assert!(
            round_trip(endpoint.addr())? < Duration::from_millis(500),
            "awake at first"
        );
        std::thread::sleep(Duration::from_millis(400));
        assert!(endpoint.is_paused(), "paused after the idle period");
        let waits: Vec<_> = (0..3)
            .map(|_| {
                let addr = endpoint.addr();
                std::thread::spawn(move || round_trip(addr))
            })
            .collect();
        for wait in waits {
            let took = wait.join().expect("thread")?;
            assert!(
                took >= Duration::from_millis(600) && took < Duration::from_secs(3),
                "held for the resume: {took:?}"
            );
        }
        assert_eq!(endpoint.resumes(), 1, "one resume for the burst");
        assert!(!endpoint.is_paused());
        Ok(())
    }

    #[test]
    fn an_open_connection_keeps_the_instance_awake() -> Result<()> {
        let endpoint = AuroraEndpoint::start(
            echo_server()?,
            Lifecycle {
                pause_after: Some(Duration::from_millis(100)),
                resume_takes: Duration::from_secs(5),
            },
        )?;
        let idle = TcpStream::connect(endpoint.addr())?;
        std::thread::sleep(Duration::from_millis(300));
        assert!(!endpoint.is_paused(), "an idle connection keeps it awake");
        assert_eq!(endpoint.connections(), 1);
        drop(idle);
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(endpoint.connections(), 0);
        assert!(endpoint.is_paused());
        Ok(())
    }

    #[test]
    fn a_moved_endpoint_sends_new_connections_elsewhere_and_keeps_open_ones() -> Result<()> {
        let endpoint = AuroraEndpoint::start(echo_server()?, Lifecycle::default())?;
        let mut open = TcpStream::connect(endpoint.addr())?;
        open.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut answer = [0_u8; 1];
        open.write_all(b"x")?;
        open.read_exact(&mut answer)?;
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let nowhere = closed.local_addr()?;
        drop(closed);
        endpoint.point_at(nowhere);
        assert!(
            round_trip(endpoint.addr()).is_err(),
            "a new connection is closed: nothing listens"
        );
        open.write_all(b"y")?;
        open.read_exact(&mut answer)?;
        assert_eq!(
            &answer, b"y",
            "the open connection still reaches the old instance"
        );
        Ok(())
    }

    #[test]
    fn a_frozen_link_holds_every_byte_until_released_and_a_severed_one_closes() -> Result<()> {
        let endpoint = AuroraEndpoint::start(echo_server()?, Lifecycle::default())?;
        let mut open = TcpStream::connect(endpoint.addr())?;
        open.set_read_timeout(Some(Duration::from_millis(300)))?;
        let mut answer = [0_u8; 1];
        open.write_all(b"a")?;
        open.read_exact(&mut answer)?;
        endpoint.freeze();
        open.write_all(b"b")?;
        assert!(
            open.read_exact(&mut answer).is_err(),
            "nothing comes back while frozen"
        );
        endpoint.release();
        open.set_read_timeout(Some(Duration::from_secs(5)))?;
        open.read_exact(&mut answer)?;
        assert_eq!(&answer, b"b", "what was held arrives after the release");

        endpoint.freeze();
        open.write_all(b"c")?;
        endpoint.sever();
        assert!(
            matches!(open.read(&mut answer), Ok(0) | Err(_)),
            "a severed connection is closed, and what it held is dropped"
        );
        assert!(
            round_trip(endpoint.addr())? < Duration::from_secs(1),
            "new connections are carried"
        );
        Ok(())
    }

    #[test]
    fn only_the_answer_to_a_commit_of_one_row_is_a_commit() {
        let select_one = b"2\0\0\0\x04D\0\0\0\x0b\0\x01\0\0\0\x011C\0\0\0\x0dSELECT 1\0Z\0\0\0\x05I";
        assert_eq!(Answer::of(select_one), Answer::Commit);
        let in_transaction = b"C\0\0\0\x0dSELECT 1\0Z\0\0\0\x05T";
        assert_eq!(Answer::of(in_transaction), Answer::Other, "not committed yet");
        let split = b"C\0\0\0\x0dSELECT 1\0";
        assert_eq!(
            Answer::of(split),
            Answer::Unfinished,
            "the commit is only known with ReadyForQuery"
        );
        let claim = b"C\0\0\0\x0fINSERT 0 1\0Z\0\0\0\x05I";
        assert_eq!(Answer::of(claim), Answer::Other);
    }
}
