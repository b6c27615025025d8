//! Network namespaces and the commands that shape them (`ip`, `nft`), running code inside a
//! namespace (a thread that `setns`es), processes inside one (`ip netns exec`, which also
//! bind-mounts `/etc/netns/<ns>/resolv.conf`), and cleanup of everything carrying the prefix.

use std::fs::File;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sched::{CloneFlags, setns};

use crate::PREFIX;

/// Runs a command; an error carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} (apt-get install -y iproute2 nftables dnsmasq-base)"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Feeds `input` to a command's stdin.
pub fn run_with_input(program: &str, args: &[&str], input: &str) -> Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(input.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}\ninput:\n{input}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// `ip -n <ns> -batch -` with one command per line.
pub fn ip_batch(ns: &str, commands: &[String]) -> Result<()> {
    if commands.is_empty() {
        return Ok(());
    }
    run_with_input("ip", &["-n", ns, "-batch", "-"], &(commands.join("\n") + "\n"))
        .with_context(|| format!("configuring namespace {ns}"))
}

/// Loads an nftables ruleset into namespace `ns` (one atomic transaction).
pub fn nft(ns: &str, ruleset: &str) -> Result<()> {
    run_with_input("ip", &["netns", "exec", ns, "nft", "-f", "-"], ruleset)
        .with_context(|| format!("loading nftables rules into {ns}"))
}

/// Sets sysctls under /proc/sys inside `ns` (`net.ipv4.ip_forward` → `net/ipv4/ip_forward`).
pub fn sysctl(ns: &str, settings: &[(&str, &str)]) -> Result<()> {
    let settings: Vec<(String, String)> = settings
        .iter()
        .map(|(key, value)| (key.replace('.', "/"), (*value).to_owned()))
        .collect();
    in_namespace(ns, move || -> Result<()> {
        for (key, value) in &settings {
            std::fs::write(Path::new("/proc/sys").join(key), value)
                .with_context(|| format!("setting {key} = {value}"))?;
        }
        Ok(())
    })?
}

/// Runs `f` on a thread that has entered namespace `ns`; sockets it makes live there (and so
/// do threads it spawns).
pub fn in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let file = File::open(format!("/run/netns/{ns}")).with_context(|| format!("opening namespace {ns}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || -> Result<T> {
                setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering namespace {ns}"))?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow!("a thread in namespace {ns} panicked"))?
    })
}

/// What a TCP connect attempt got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connect {
    Connected,
    /// No answer at all within the timeout: the SYN was dropped (what a blocked path does in AWS).
    NoAnswer,
    Refused,
    Other(String),
}

/// A TCP connect from namespace `ns` to `addr`.
pub fn tcp_connect(ns: &str, addr: SocketAddr, timeout: Duration) -> Result<Connect> {
    in_namespace(ns, move || match TcpStream::connect_timeout(&addr, timeout) {
        Ok(_) => Connect::Connected,
        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => Connect::NoAnswer,
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => Connect::Refused,
        Err(error) => Connect::Other(error.to_string()),
    })
}

/// Removes what a killed run left: every namespace named `avt-*` (after killing the processes
/// in it), every `/etc/netns/avt-*` and every `$TMPDIR/avt-twin-*`. Nothing else is looked at.
/// Called with the twin's lock held, so no running twin is hit.
pub fn remove_leftovers() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for line in run("ip", &["netns", "list"])?.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name.starts_with(PREFIX) {
            delete_namespace(name)?;
            removed.push(name.to_owned());
        }
    }
    // Working directories of killed twins (Aurora's data, logs, certificates).
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(crate::WORKDIR_PREFIX)
            {
                let _ = std::fs::remove_dir_all(entry.path());
                removed.push(entry.path().display().to_string());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/etc/netns") {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(PREFIX) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(removed)
}

/// Kills every process inside `ns`, then deletes it (with its links, bridges and tables).
pub fn delete_namespace(ns: &str) -> Result<()> {
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids.split_whitespace().filter_map(|pid| pid.parse::<i32>().ok()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        // Wait (briefly) until they are gone, so PostgreSQL's files are released.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && run("ip", &["netns", "pids", ns]).is_ok_and(|pids| !pids.trim().is_empty())
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    run("ip", &["netns", "del", ns])?;
    Ok(())
}

/// A process started inside a namespace with exactly the given environment (plus `PATH`),
/// its output in a log file; killed on drop.
pub struct NsProcess {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl NsProcess {
    pub fn spawn(
        name: &str,
        ns: &str,
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        log: PathBuf,
    ) -> Result<Self> {
        let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {} in {ns}", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    /// Everything it wrote so far.
    pub fn logs(&self) -> String {
        std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An error (with its output) if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = &mut self.child
            && let Some(status) = child.try_wait()?
        {
            bail!("{} exited ({status}); its output:\n{}", self.name, self.logs());
        }
        Ok(())
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (SIGTERM: stop as ECS stops a task).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid)?), signal)
            .with_context(|| format!("sending {signal} to {}", self.name))
    }

    /// Waits up to `timeout` for it to exit by itself: whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        while let Some(child) = &mut self.child {
            if child.try_wait()?.is_some() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(true)
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls until `probe` answers `Some`, or fails after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
