//! Aurora's lifecycle at a person's command while the twin runs (`local-stack --vpc`):
//! `vpc-twin aurora COMMAND` sends one line to the running twin over a unix socket and prints
//! its answer.
//!
//! | command | what happens (as in AWS) |
//! |---|---|
//! | `status` | which instance writes and reads, paused or awake, connections, resumes |
//! | `failover` | `aws rds failover-db-cluster`: the writer restarts as the reader, the reader is promoted, the cluster endpoint's record moves (clients may see the old one for its 5 s TTL) |
//! | `reboot` | `aws rds reboot-db-instance` of the writer |
//! | `vanish` / `restore` | the writer drops off the network without a reset, and comes back |
//! | `pause-after SECONDS` / `pause-after never` | Serverless v2's `secondsUntilAutoPause` (the frontend closes idle connections after DB_IDLE_TIMEOUT, 60 s, checked every 30 s) |

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::Twin;

/// Where the running twin listens (one twin per machine at a time: it holds a machine-wide lock).
pub const SOCKET: &str = "/run/avt-vpc-twin.sock";

/// What the commands act on: the twin until it stops.
pub type Shared = Arc<Mutex<Option<Twin>>>;

/// Listens on [`SOCKET`] on a thread of its own, for as long as the process runs; removes a
/// socket file a killed twin left.
pub fn serve(twin: Shared) -> Result<()> {
    let _ = std::fs::remove_file(SOCKET);
    let listener = UnixListener::bind(SOCKET).with_context(|| format!("listening on {SOCKET}"))?;
    std::thread::Builder::new()
        .name("vpc-twin-control".to_owned())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(error) = answer(stream, &twin) {
                    eprintln!("vpc-twin: a control command failed: {error:#}");
                }
            }
        })?;
    Ok(())
}

/// Removes the socket (the twin is stopping).
pub fn close() {
    let _ = std::fs::remove_file(SOCKET);
}

fn answer(stream: UnixStream, twin: &Shared) -> Result<()> {
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let reply = match twin.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
        Some(twin) => run(twin, line.trim()).unwrap_or_else(|error| format!("error: {error:#}")),
        None => "error: the twin is stopping".to_owned(),
    };
    (&stream).write_all(format!("{reply}\n").as_bytes())?;
    Ok(())
}

fn run(twin: &mut Twin, command: &str) -> Result<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["status"] => {}
        ["failover"] => {
            twin.aurora_failover()?;
            return Ok(format!(
                "failed over; clients may reach the old writer for the record's TTL\n{}",
                twin.aurora_status()
            ));
        }
        ["reboot"] => twin.aurora_reboot()?,
        ["vanish"] => twin.aurora_vanish()?,
        ["restore"] => twin.aurora_restore()?,
        ["pause-after", seconds] => {
            let pause_after = match *seconds {
                "never" => None,
                seconds => Some(Duration::from_secs(seconds.parse().with_context(|| {
                    format!("pause-after takes seconds or `never`, not {seconds:?}")
                })?)),
            };
            let mut lifecycle = twin.aurora_lifecycle();
            lifecycle.pause_after = pause_after;
            twin.set_aurora_lifecycle(lifecycle)?;
        }
        _ => bail!("unknown command {command:?}; {USAGE}"),
    }
    Ok(twin.aurora_status())
}

pub const USAGE: &str =
    "usage: vpc-twin aurora status | failover | reboot | vanish | restore | pause-after SECONDS|never";

/// `vpc-twin aurora ARGS…`: sends the command to the running twin and returns its answer.
pub fn send(args: &[String]) -> Result<String> {
    if args.is_empty() {
        bail!("{USAGE}");
    }
    if !Path::new(SOCKET).exists() {
        bail!("no twin is running here ({SOCKET} does not exist): start one with `local-stack --vpc`");
    }
    let mut stream = UnixStream::connect(SOCKET).with_context(|| format!("connecting to {SOCKET}"))?;
    stream.write_all(format!("{}\n", args.join(" ")).as_bytes())?;
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stream, &mut reply)?;
    let reply = reply.trim_end().to_owned();
    match reply.strip_prefix("error: ") {
        Some(error) => bail!("{error}"),
        None => Ok(reply),
    }
}
