//! A TCP "latency link": a loopback proxy that delivers every chunk of bytes a fixed one-way delay
//! (plus optional jitter) after it was read, in each direction, so the benchmark's frontend reaches
//! PostgreSQL across a network like an AWS VPC (~0.5 ms one way to Aurora) instead of loopback.
//!
//! # Why a small one of our own
//!
//! - `tc qdisc … netem` is the usual tool, but this machine's kernel has no netem: in a throwaway
//!   network namespace `tc qdisc add dev lo root netem delay 500us` answers "Specified qdisc kind is
//!   unknown" (and there is no /lib/modules to load it from).
//! - Toxiproxy's latency toxic counts whole milliseconds: `Latency int64 // Times in milliseconds`,
//!   turned into `time.Duration(delay) * time.Millisecond` (Shopify/toxiproxy, toxics/latency.go).
//!   Its Rust port noxious does the same (`tokio::time::sleep(Duration::from_millis(latency))`,
//!   noxious 1.0.4 src/toxics/latency.rs). Neither can say 0.5 ms, and neither is in Debian.
//! - Tokio's own timer is no base for one either: "Sleep operates at millisecond granularity and
//!   should not be used for tasks that require high-resolution timers" (docs.rs, tokio::time::sleep).
//!   tokio-hrtime offers sub-millisecond timers, but only timers: the proxy would still be ours.
//! - Debian's `trickle` shapes bandwidth through LD_PRELOAD, which a Rust binary making its own
//!   syscalls bypasses.
//!
//! # The model
//!
//! Per accepted connection, one connection to `upstream`, TCP_NODELAY on both (a delayed ACK must
//! not add to the delay being modelled). Per direction a reader thread stamps each chunk it reads
//! with its due time (read time + one way + uniform jitter in [0, jitter]) into a bounded channel,
//! and a writer thread sleeps until each chunk is due and writes it. A FIFO channel keeps the
//! bytes of a direction in order; jitter can only hold a chunk back behind its predecessor.
//!
//! A real client cannot send before its TCP handshake has completed, one round trip after
//! `connect`. Here the client's `connect` completes at once on loopback, so bytes toward `upstream`
//! are treated as sent no earlier than two one-way delays after the accept: a request on a new
//! connection (the seed opens one per visit) then pays the handshake's round trip as it would in a
//! VPC. Protocols where the server speaks first would see that first answer one round trip early;
//! PostgreSQL and HTTP are client-first.
//!
//! EOF travels like data (the peer's write side is shut down when it is due). A read error such
//! as a reset tears the other side down when due; std cannot send a real RST (`set_linger` is
//! still unstable, rust-lang/rust#88494), so the peer sees its connection closed instead.
//!
//! Precise sleeping: `thread::sleep` on this machine wakes 50–110 µs late (the default 50 µs timer
//! slack plus wake-up latency), so each writer asks to wake that much early, as learnt from recent
//! wake-ups, and spins the rest: measured at 0.5 ms, p50 0.1 µs late for ~5 µs of spinning per
//! chunk, where a plain sleep was p50 108 µs late and a fixed 100 µs spin cost more CPU.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Bytes read per chunk: a chunk is whatever one `read` returned, up to this.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight per direction before the reader stops reading (and TCP flow control pushes
/// back on the sender), so a fast sender cannot make the link buffer without bound.
const CHUNKS_IN_FLIGHT: usize = 256;
/// Worker threads only copy bytes; a small stack keeps hundreds of connections cheap.
const WORKER_STACK_BYTES: usize = 128 * 1024;
/// How long dropping the link waits for its connections' threads to wind down.
const DROP_GRACE: Duration = Duration::from_secs(5);
/// A wake-up later than this is a descheduling, not timer behaviour: it must not teach the writers
/// to wake milliseconds early (they would spin all that time).
const MAX_LEARNT_WAKE_LATENESS: Duration = Duration::from_micros(200);

/// A running latency link on `127.0.0.1:<port>`; stops accepting and closes every connection it
/// carries when dropped.
pub struct Link {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Link {
    /// Listens on 127.0.0.1:0 and forwards every connection to `upstream`, each chunk delivered
    /// `one_way` plus a uniform random jitter in `[0, jitter]` after it was read.
    pub fn start(upstream: SocketAddr, one_way: Duration, jitter: Duration) -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the latency link")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            one_way,
            jitter,
            stopping: AtomicBool::new(false),
            connections: Mutex::new(Connections::default()),
            connection_ended: Condvar::new(),
            jitter_source: RandomState::new(),
            jitter_draws: AtomicU64::new(0),
            // A first guess; the writers learn the real figure within a few chunks.
            wake_early_ns: AtomicU64::new(50_000),
        });
        let acceptor = std::thread::Builder::new()
            .name("link-accept".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || accept_loop(&listener, &shared)
            })
            .context("starting the latency link's accept thread")?;
        Ok(Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Where clients connect instead of `upstream`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // std's accept cannot be interrupted: a connection of our own wakes it to see `stopping`.
        let woken = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok();
        if let Some(acceptor) = self.acceptor.take()
            && woken
        {
            let _ = acceptor.join();
        }
        let mut connections = self.shared.lock_connections();
        for stream in connections.live.values().flatten() {
            // Wakes every worker: blocked reads return, blocked writes fail.
            let _ = stream.shutdown(Shutdown::Both);
        }
        let deadline = Instant::now() + DROP_GRACE;
        while !connections.live.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            connections = self
                .shared
                .connection_ended
                .wait_timeout(connections, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

struct Shared {
    upstream: SocketAddr,
    one_way: Duration,
    jitter: Duration,
    stopping: AtomicBool,
    connections: Mutex<Connections>,
    connection_ended: Condvar,
    /// Randomly keyed SipHash of a counter: uniform draws from std alone (no `rand` in this crate).
    jitter_source: RandomState,
    jitter_draws: AtomicU64,
    /// How early writers ask `thread::sleep` to wake (its typical lateness), shared so a new
    /// connection starts with what earlier ones learnt.
    wake_early_ns: AtomicU64,
}

#[derive(Default)]
struct Connections {
    next_id: u64,
    /// A second handle to each socket of each live connection, to shut them down on drop.
    live: HashMap<u64, Vec<TcpStream>>,
}

impl Shared {
    fn lock_connections(&self) -> std::sync::MutexGuard<'_, Connections> {
        self.connections.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn jitter(&self) -> Duration {
        if self.jitter.is_zero() {
            return Duration::ZERO;
        }
        let draw = self.jitter_draws.fetch_add(1, Ordering::Relaxed);
        let fraction = self.jitter_source.hash_one(draw) as f64 / u64::MAX as f64;
        self.jitter.mul_f64(fraction)
    }

    /// Sleeps until `due`, never returning before it.
    fn sleep_until(&self, due: Instant) {
        let wake_early = Duration::from_nanos(self.wake_early_ns.load(Ordering::Relaxed));
        let now = Instant::now();
        if due > now + wake_early {
            let asked = due - wake_early - now;
            let slept_from = Instant::now();
            std::thread::sleep(asked);
            let late = slept_from
                .elapsed()
                .saturating_sub(asked)
                .min(MAX_LEARNT_WAKE_LATENESS);
            // Moving average over ~8 wake-ups: follows the machine's load, shrugs off one outlier.
            let learnt =
                wake_early.as_nanos() as i128 + (late.as_nanos() as i128 - wake_early.as_nanos() as i128) / 8;
            self.wake_early_ns
                .store(u64::try_from(learnt.max(0)).unwrap_or(0), Ordering::Relaxed);
        }
        while Instant::now() < due {
            std::hint::spin_loop();
        }
    }
}

/// Removes its connection from [`Connections::live`] when the last of the connection's threads
/// lets go of it, so a link carrying one connection per request does not keep their sockets open.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.lock_connections().live.remove(&self.id);
        self.shared.connection_ended.notify_all();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else {
            // e.g. out of file descriptors: give the machine a moment rather than spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let accepted_at = Instant::now();
        let Some(registration) = register(shared, &client) else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("link-connect".to_owned())
            .stack_size(WORKER_STACK_BYTES)
            .spawn(move || carry(client, accepted_at, &registration));
        if spawned.is_err() {
            // No thread for it: the connection is dropped with the closure, the client sees it close.
            continue;
        }
    }
}

fn register(shared: &Arc<Shared>, client: &TcpStream) -> Option<Arc<Registration>> {
    let mut connections = shared.lock_connections();
    if shared.stopping.load(Ordering::SeqCst) {
        return None;
    }
    let id = connections.next_id;
    connections.next_id += 1;
    connections
        .live
        .insert(id, client.try_clone().into_iter().collect());
    Some(Arc::new(Registration {
        shared: Arc::clone(shared),
        id,
    }))
}

/// Connects to upstream and starts the connection's four workers: a reader and a writer for each
/// direction.
fn carry(client: TcpStream, accepted_at: Instant, registration: &Arc<Registration>) {
    let shared = &registration.shared;
    let Ok(upstream) = TcpStream::connect(shared.upstream) else {
        // Refused upstream: the client learns it one round trip after connecting, as it would.
        shared.sleep_until(accepted_at + shared.one_way * 2);
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    {
        let mut connections = shared.lock_connections();
        if shared.stopping.load(Ordering::SeqCst) {
            let _ = upstream.shutdown(Shutdown::Both);
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        if let (Some(streams), Ok(handle)) =
            (connections.live.get_mut(&registration.id), upstream.try_clone())
        {
            streams.push(handle);
        }
    }
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let handshake_done = accepted_at + shared.one_way * 2;
    let started = start_direction(&client, &upstream, handshake_done, registration, "link-up")
        .and_then(|()| start_direction(&upstream, &client, accepted_at, registration, "link-down"));
    if started.is_err() {
        // Out of threads or descriptors: close it rather than carry one direction only.
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
    }
}

/// Starts the reader and the writer carrying bytes from `from` to `to`.
fn start_direction(
    from: &TcpStream,
    to: &TcpStream,
    earliest_send: Instant,
    registration: &Arc<Registration>,
    name: &str,
) -> std::io::Result<()> {
    let (due_chunks, chunks_to_write) = sync_channel(CHUNKS_IN_FLIGHT);
    let reader = Reader {
        from: from.try_clone()?,
        earliest_send,
        registration: Arc::clone(registration),
    };
    let writer = Writer {
        from: from.try_clone()?,
        to: to.try_clone()?,
        registration: Arc::clone(registration),
    };
    spawn_worker(&format!("{name}-read"), move || reader.run(&due_chunks))?;
    spawn_worker(&format!("{name}-write"), move || writer.run(&chunks_to_write))?;
    Ok(())
}

fn spawn_worker(name: &str, work: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(WORKER_STACK_BYTES)
        .spawn(work)
        .map(drop)
}

/// What a writer does when a chunk is due.
enum Segment {
    Bytes(Vec<u8>),
    /// The source shut its write side (EOF): shut ours toward the destination.
    End,
    /// Reading the source failed (a reset, or the link shut it): close the destination entirely.
    Abort,
}

/// Reads one direction's source and stamps each chunk with the time it is due.
struct Reader {
    from: TcpStream,
    /// Bytes read before this count as read at this time (upstream-bound: the handshake).
    earliest_send: Instant,
    registration: Arc<Registration>,
}

impl Reader {
    fn run(mut self, due_chunks: &SyncSender<(Instant, Segment)>) {
        let mut buffer = vec![0_u8; CHUNK_BYTES];
        loop {
            let segment = match self.from.read(&mut buffer) {
                Ok(0) => Segment::End,
                Ok(read) => Segment::Bytes(buffer[..read].to_vec()),
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => Segment::Abort,
            };
            let last = !matches!(segment, Segment::Bytes(_));
            // The writer has gone only if the destination failed: nothing more can be delivered.
            if due_chunks.send((self.due(), segment)).is_err() || last {
                return;
            }
        }
    }

    fn due(&self) -> Instant {
        let shared = &self.registration.shared;
        Instant::now().max(self.earliest_send) + shared.one_way + shared.jitter()
    }
}

/// Writes one direction's chunks to its destination, each when it is due.
struct Writer {
    /// The source, shut down when the destination fails so the failure travels back.
    from: TcpStream,
    to: TcpStream,
    registration: Arc<Registration>,
}

impl Writer {
    fn run(mut self, chunks_to_write: &Receiver<(Instant, Segment)>) {
        let shared = Arc::clone(&self.registration.shared);
        for (due, segment) in chunks_to_write {
            shared.sleep_until(due);
            match segment {
                Segment::Bytes(bytes) => {
                    if self.to.write_all(&bytes).is_err() {
                        let _ = self.from.shutdown(Shutdown::Both);
                        let _ = self.to.shutdown(Shutdown::Both);
                        return;
                    }
                }
                Segment::End => {
                    let _ = self.to.shutdown(Shutdown::Write);
                    return;
                }
                Segment::Abort => {
                    let _ = self.to.shutdown(Shutdown::Both);
                    let _ = self.from.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
}

/// The link's own added latency: small round trips through a link with no delay against the same
/// round trips straight to the same echo server, for the report's conditions.
#[derive(Debug, Clone, Copy)]
pub struct OwnLatency {
    pub round_trips: usize,
    pub direct_p50: Duration,
    pub direct_p99: Duration,
    pub linked_p50: Duration,
    pub linked_p99: Duration,
}

/// Bytes per round trip: about a small query and its answer.
const PROBE_BYTES: usize = 64;

impl OwnLatency {
    /// `round_trips` round trips each way (after as many again to warm up).
    pub fn measure(round_trips: usize) -> Result<Self> {
        let echo = echo_server(2)?;
        let direct = round_trip_times(echo, round_trips)?;
        let link = Link::start(echo, Duration::ZERO, Duration::ZERO)?;
        let linked = round_trip_times(link.addr(), round_trips)?;
        Ok(Self {
            round_trips,
            direct_p50: percentile(&direct, 0.50),
            direct_p99: percentile(&direct, 0.99),
            linked_p50: percentile(&linked, 0.50),
            linked_p99: percentile(&linked, 0.99),
        })
    }

    /// One line for the report, e.g. "adds 31 µs p50, 58 µs p99 per round trip (…)".
    pub fn summary(&self) -> String {
        let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
        format!(
            "adds {:.0} µs p50, {:.0} µs p99 per round trip of its own ({} round trips of {PROBE_BYTES} B at one way 0: \
             through the link p50 {:.0} µs, p99 {:.0} µs; direct p50 {:.0} µs, p99 {:.0} µs)",
            micros(self.linked_p50.saturating_sub(self.direct_p50)),
            micros(self.linked_p99.saturating_sub(self.direct_p99)),
            self.round_trips,
            micros(self.linked_p50),
            micros(self.linked_p99),
            micros(self.direct_p50),
            micros(self.direct_p99),
        )
    }
}

/// An echo server on loopback for `connections` connections, one thread each; its accept thread
/// ends after the last one.
fn echo_server(connections: usize) -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding an echo server")?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("echo-accept".to_owned())
        .spawn(move || {
            for stream in listener.incoming().take(connections).flatten() {
                let _ = std::thread::Builder::new()
                    .name("echo".to_owned())
                    .spawn(move || {
                        let _ = stream.set_nodelay(true);
                        let Ok(mut reading) = stream.try_clone() else {
                            return;
                        };
                        let mut writing = stream;
                        let _ = std::io::copy(&mut reading, &mut writing);
                        let _ = writing.shutdown(Shutdown::Write);
                    });
            }
        })
        .context("starting the echo server")?;
    Ok(addr)
}

/// Times `round_trips` exchanges of [`PROBE_BYTES`] on one connection to `addr`, after as many
/// unmeasured ones (connection set-up, caches, the link's wake-up estimate).
fn round_trip_times(addr: SocketAddr, round_trips: usize) -> Result<Vec<Duration>> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let probe = [7_u8; PROBE_BYTES];
    let mut answer = [0_u8; PROBE_BYTES];
    let mut times = Vec::with_capacity(round_trips);
    for round in 0..round_trips * 2 {
        let sent = Instant::now();
        stream.write_all(&probe).context("sending a probe")?;
        stream.read_exact(&mut answer).context("reading a probe's echo")?;
        if round >= round_trips {
            times.push(sent.elapsed());
        }
    }
    times.sort_unstable();
    Ok(times)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(index).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn connect(addr: SocketAddr) -> Result<TcpStream> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        Ok(stream)
    }

    /// Pseudo-random bytes (randomly keyed SipHash of a counter): no pattern a bug could hide in.
    fn payload(bytes: usize) -> Vec<u8> {
        let source = RandomState::new();
        (0..bytes.div_ceil(8) as u64)
            .flat_map(|block| source.hash_one(block).to_le_bytes())
            .take(bytes)
            .collect()
    }

    /// Whether reading `stream` shows it ended (EOF or a reset) rather than timing out.
    fn ended(stream: &mut TcpStream) -> bool {
        let mut byte = [0_u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => !matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    }

    #[test]
    fn eight_mebibytes_arrive_unchanged_both_ways() -> Result<()> {
        let echo = echo_server(1)?;
        let link = Link::start(echo, Duration::from_micros(200), Duration::from_micros(100))?;
        let sent = payload(8 << 20);
        let mut client = connect(link.addr())?;
        let mut sending = client.try_clone()?;
        let to_send = sent.clone();
        let sender = std::thread::spawn(move || -> std::io::Result<()> {
            sending.write_all(&to_send)?;
            sending.shutdown(Shutdown::Write)
        });
        let mut received = Vec::with_capacity(sent.len());
        client.read_to_end(&mut received)?;
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
        assert_eq!(received.len(), sent.len());
        assert!(
            received == sent,
            "the echo through the link differs from what was sent"
        );
        Ok(())
    }

    #[test]
    fn a_round_trip_takes_at_least_two_one_way_delays() -> Result<()> {
        let one_way = Duration::from_micros(500);
        let echo = echo_server(1)?;
        let link = Link::start(echo, one_way, Duration::ZERO)?;
        let mut client = connect(link.addr())?;
        let mut answer = [0_u8; PROBE_BYTES];
        client.write_all(&[1; PROBE_BYTES])?;
        client.read_exact(&mut answer)?;

        let mut times = Vec::new();
        for _ in 0..200 {
            let sent = Instant::now();
            client.write_all(&[2; PROBE_BYTES])?;
            client.read_exact(&mut answer)?;
            times.push(sent.elapsed());
        }
        times.sort_unstable();
        let excess = |time: Duration| (time.as_secs_f64() - 2.0 * one_way.as_secs_f64()) * 1e6;
        println!(
            "round trip at one way {one_way:?}: excess over 2 × one way p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            excess(percentile(&times, 0.50)),
            excess(percentile(&times, 0.99)),
            excess(percentile(&times, 1.0)),
        );
        let shortest = times.first().copied().unwrap_or_default();
        assert!(
            shortest >= one_way * 2,
            "a round trip took {shortest:?}, under 2 × {one_way:?}"
        );
        Ok(())
    }

    #[test]
    fn a_new_connection_pays_the_handshake_round_trip_before_its_first_exchange() -> Result<()> {
        // Long enough that thread start-up on a busy machine cannot pass for the handshake.
        let one_way = Duration::from_millis(5);
        let echo = echo_server(1)?;
        let link = Link::start(echo, one_way, Duration::ZERO)?;
        let connecting = Instant::now();
        let mut client = connect(link.addr())?;
        let mut answer = [0_u8; PROBE_BYTES];
        client.write_all(&[1; PROBE_BYTES])?;
        client.read_exact(&mut answer)?;
        let first = connecting.elapsed();
        println!("connect and first exchange at one way {one_way:?}: {first:?}");
        assert!(
            first >= one_way * 4,
            "connect and first exchange took {first:?}, under the handshake's round trip plus the exchange's"
        );
        Ok(())
    }

    #[test]
    fn half_close_travels_with_the_delay_and_the_other_way_stays_open() -> Result<()> {
        let one_way = Duration::from_millis(2);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let upstream = listener.local_addr()?;
        let server = std::thread::spawn(move || -> std::io::Result<(Vec<u8>, Instant)> {
            let (mut stream, _) = listener.accept()?;
            let mut request = Vec::new();
            stream.read_to_end(&mut request)?;
            let eof_seen = Instant::now();
            stream.write_all(b"answer after your EOF")?;
            Ok((request, eof_seen))
        });
        let link = Link::start(upstream, one_way, Duration::ZERO)?;
        let mut client = connect(link.addr())?;
        client.write_all(b"request")?;
        let shut = Instant::now();
        client.shutdown(Shutdown::Write)?;
        let mut answer = Vec::new();
        client.read_to_end(&mut answer)?;
        let (request, eof_seen) = server
            .join()
            .map_err(|_| anyhow::anyhow!("the server panicked"))??;
        assert_eq!(request, b"request");
        assert!(
            eof_seen >= shut + one_way,
            "upstream saw EOF {:?} after the client shut down, before one way",
            eof_seen.saturating_duration_since(shut)
        );
        assert_eq!(
            answer, b"answer after your EOF",
            "the half-closed client still reads"
        );
        Ok(())
    }

    #[test]
    fn a_reset_upstream_closes_the_client() -> Result<()> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let upstream = listener.local_addr()?;
        let link = Link::start(upstream, Duration::from_micros(500), Duration::ZERO)?;
        let mut client = connect(link.addr())?;
        client.write_all(b"never read")?;
        let (stream, _) = listener.accept()?;
        // Closing with unread bytes makes Linux answer with a reset instead of a FIN.
        std::thread::sleep(Duration::from_millis(20));
        drop(stream);
        assert!(
            ended(&mut client),
            "the client's connection stayed open after upstream reset"
        );
        Ok(())
    }

    #[test]
    fn a_refused_upstream_closes_the_client() -> Result<()> {
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?;
        let link = Link::start(closed, Duration::from_micros(500), Duration::ZERO)?;
        let mut client = connect(link.addr())?;
        assert!(
            ended(&mut client),
            "the client's connection stayed open with nothing upstream"
        );
        Ok(())
    }

    #[test]
    fn short_lived_connections_leave_no_sockets_behind() -> Result<()> {
        // The seed opens a connection per request: the link must not keep any of them.
        let connections = 200;
        let echo = echo_server(connections)?;
        let link = Link::start(echo, Duration::from_micros(100), Duration::ZERO)?;
        let mut answer = [0_u8; 4];
        for _ in 0..connections {
            let mut client = connect(link.addr())?;
            client.write_all(b"ping")?;
            client.read_exact(&mut answer)?;
        }
        let deadline = Instant::now() + TIMEOUT;
        while !link.shared.lock_connections().live.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = link.shared.lock_connections().live.len();
        assert_eq!(left, 0, "{left} closed connections still hold sockets");
        Ok(())
    }

    #[test]
    fn dropping_the_link_closes_its_connections_and_stops_accepting() -> Result<()> {
        let echo = echo_server(1)?;
        let link = Link::start(echo, Duration::from_micros(500), Duration::ZERO)?;
        let addr = link.addr();
        let mut client = connect(addr)?;
        let mut answer = [0_u8; 4];
        client.write_all(b"ping")?;
        client.read_exact(&mut answer)?;

        let dropping = Instant::now();
        drop(link);
        let took = dropping.elapsed();
        assert!(took < DROP_GRACE, "dropping the link took {took:?}");
        assert!(ended(&mut client), "the client's connection outlived the link");
        assert!(
            TcpStream::connect(addr).is_err(),
            "the link still accepts after drop"
        );
        Ok(())
    }

    #[test]
    fn its_own_latency_is_measured() -> Result<()> {
        let own = OwnLatency::measure(500)?;
        println!("latency link {}", own.summary());
        assert!(own.linked_p50 > Duration::ZERO && own.direct_p50 > Duration::ZERO);
        assert!(own.direct_p50 <= own.direct_p99 && own.linked_p50 <= own.linked_p99);
        Ok(())
    }
}
