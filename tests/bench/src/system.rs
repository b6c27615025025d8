//! What the machine and the processes say about themselves: conditions of the run, start-to-ready
//! time, peak memory.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Peak resident set size (`VmHWM`) of process `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/<pid>/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .context("no VmHWM in /proc/<pid>/status")
}

/// Time from `exec` until `GET /health` answers 200, `repeats` times (each a fresh process,
/// polled every 200 µs over a raw socket so the probe adds next to nothing).
pub fn start_to_ready(
    program: &Path,
    env: &[(OsString, OsString)],
    port: u16,
    repeats: usize,
) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let mut command = Command::new(program);
        command
            .env_clear()
            .envs(env.iter().map(|(name, value)| (name, value)))
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let deadline = started + Duration::from_secs(10);
        let ready = loop {
            if health_ok(port) {
                break Some(started.elapsed());
            }
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                break None;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let _ = child.kill();
        let _ = child.wait();
        match ready {
            Some(elapsed) => times.push(elapsed),
            None => bail!("{} did not answer GET /health within 10 s", program.display()),
        }
    }
    Ok(times)
}

fn health_ok(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// One line per fact: CPU, cores, memory, kernel, load, tool versions.
pub struct Conditions {
    pub lines: Vec<(String, String)>,
}

impl Conditions {
    pub fn machine() -> Self {
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|line| line.strip_prefix("model name"))
                    .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let memory = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|line| line.strip_prefix("MemTotal:"))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|kib| kib.parse::<u64>().ok())
            })
            .map(|kib| format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut lines = vec![
            ("CPU".to_owned(), format!("{cpu}, {cores} cores")),
            ("memory".to_owned(), memory),
            ("kernel".to_owned(), kernel.trim().to_owned()),
            ("rustc".to_owned(), command_line("rustc", &["--version"])),
            (
                "git commit".to_owned(),
                command_line("git", &["rev-parse", "--short", "HEAD"]),
            ),
        ];
        lines.push(("load average at start".to_owned(), load_average()));
        Self { lines }
    }

    pub fn add(&mut self, name: &str, value: impl Into<String>) {
        self.lines.push((name.to_owned(), value.into()));
    }
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The default of `variable` as `program -h` states it (`[env: NAME=] [default: X]`).
pub fn help_default(program: &Path, variable: &str) -> Option<String> {
    let output = Command::new(program).arg("-h").env_clear().output().ok()?;
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let marker = format!("[env: {variable}=");
    let line = help.lines().find(|line| line.contains(&marker))?;
    let rest = line.split("[default: ").nth(1)?;
    Some(rest.split(']').next()?.to_owned())
}
