//! The workspace's own binaries as processes ([`crate::binary`] finds them): started with a
//! clean environment on a free port, waited for until `GET /health` answers 200.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::net::{free_port, poll_until};

/// How to start a [`Service`]; [`Service::spawn`] is the common case.
#[derive(Clone, Debug)]
pub struct ServiceCommand {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    port: Option<u16>,
    inherit_path: bool,
    current_dir: Option<PathBuf>,
    user: Option<(u32, u32)>,
    echo: Option<String>,
    health_timeout: Duration,
}

impl ServiceCommand {
    /// `program` with an empty environment plus `PATH` and `PORT`, waiting up to 30 s for health.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            port: None,
            inherit_path: true,
            current_dir: None,
            user: None,
            echo: None,
            health_timeout: Duration::from_secs(30),
        }
    }

    /// Adds command-line arguments.
    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Self {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    /// Adds one environment variable.
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((name.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Adds environment variables.
    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self {
        for (name, value) in vars {
            self = self.env(name, value);
        }
        self
    }

    /// Listens on this port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Do not pass the caller's `PATH` (the environment is then exactly what was given, plus `PORT`).
    pub fn without_path(mut self) -> Self {
        self.inherit_path = false;
        self
    }

    /// Working directory of the process.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Runs the process as this uid and gid (needs root), e.g. `(65534, 65534)` for nobody.
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Also copies every output line to our stdout, prefixed with `[prefix] `.
    pub fn echo_logs(mut self, prefix: impl Into<String>) -> Self {
        self.echo = Some(prefix.into());
        self
    }

    /// How long to wait for `GET /health` to answer 200.
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    /// Starts the process and waits until it is healthy. If it exits before (e.g. the port
    /// was taken, or its configuration was refused), the error carries its output.
    pub fn spawn(&self) -> Result<Service> {
        let attempts = if self.port.is_some() { 1 } else { 3 };
        let mut last_error = None;
        for _ in 0..attempts {
            let port = match self.port {
                Some(port) => port,
                None => free_port()?,
            };
            match self.spawn_on(port) {
                Ok(service) => return Ok(service),
                Err(SpawnError::PortTaken(error)) => last_error = Some(error),
                Err(SpawnError::Other(error)) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("the service did not start")))
    }

    fn spawn_on(&self, port: u16) -> Result<Service, SpawnError> {
        let name = self
            .program
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "service".to_string());
        let mut command = Command::new(&self.program);
        command.args(&self.args).env_clear();
        if self.inherit_path
            && let Some(path) = std::env::var_os("PATH")
        {
            command.env("PATH", path);
        }
        command
            .envs(self.envs.iter().map(|(name, value)| (name, value)))
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group: a terminal's Ctrl-C reaches whoever started it (local-stack, a
        // test), which then stops it in order, rather than every process at once.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            // std also drops supplementary groups when root changes uid.
            command.uid(uid).gid(gid);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))
            .map_err(SpawnError::Other)?;
        let logs = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(copy_lines(stdout, Arc::clone(&logs), self.echo.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(copy_lines(stderr, Arc::clone(&logs), self.echo.clone()));
        }
        let mut service = Service {
            name,
            child,
            port,
            logs,
            readers,
        };
        match service.wait_healthy(self.health_timeout) {
            Ok(()) => Ok(service),
            Err(error) => {
                let _ = service.kill();
                let logs = service.logs();
                let error = error.context(format!(
                    "{} did not become healthy; its output:\n{logs}",
                    service.name
                ));
                if logs.to_lowercase().contains("address already in use")
                    || logs.to_lowercase().contains("address in use")
                {
                    Err(SpawnError::PortTaken(error))
                } else {
                    Err(SpawnError::Other(error))
                }
            }
        }
    }
}

enum SpawnError {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

/// A running workspace binary, killed on drop (its output is printed then if the test is
/// panicking, so a failing test shows what the service said).
pub struct Service {
    name: String,
    child: Child,
    port: u16,
    logs: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Service {
    /// Starts `program` with exactly `env` (plus `PATH` and a free `PORT`) and waits up to
    /// 30 s until `GET /health` answers 200. See [`ServiceCommand`] for more control.
    pub fn spawn<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        program: impl AsRef<Path>,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        ServiceCommand::new(program.as_ref()).envs(env).spawn()
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The port it listens on (its `PORT`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Sends SIGTERM (a graceful stop request).
    pub fn sigterm(&self) -> Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = i32::try_from(self.child.id()).context("pid out of range")?;
        kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("sending {signal} to {} (pid {pid})", self.name))
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits up to `timeout` for it to exit; an error if it is still running then. Its
    /// output is complete once this returns `Ok`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let status = poll_until(timeout, Duration::from_millis(20), || {
            self.child.try_wait().ok().flatten()
        })
        .ok_or_else(|| anyhow!("{} still running after {timeout:?}", self.name))?;
        self.join_readers();
        Ok(status)
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill()?;
            self.child.wait()?;
        }
        self.join_readers();
        Ok(())
    }

    /// Waits (up to 2 s: a grandchild may hold the pipes open) until its output is read to the end.
    fn join_readers(&mut self) {
        poll_until(Duration::from_secs(2), Duration::from_millis(10), || {
            self.readers
                .iter()
                .all(|reader| reader.is_finished())
                .then_some(())
        });
        for reader in self.readers.drain(..) {
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
    }

    fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let url = self.url("/health");
        let mut last = String::from("no answer");
        let outcome = poll_until(timeout, Duration::from_millis(50), || {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(Err(anyhow!("exited early ({status})"))),
                Err(error) => return Some(Err(error.into())),
                Ok(None) => {}
            }
            match agent.get(&url).call() {
                Ok(response) if response.status() == 200 => Some(Ok(())),
                Ok(response) => {
                    last = format!("status {}", response.status());
                    None
                }
                Err(error) => {
                    last = error.to_string();
                    None
                }
            }
        });
        match outcome {
            Some(result) => {
                if result.is_err() {
                    // Let the reader threads collect what it said before it died.
                    self.join_readers();
                }
                result
            }
            None => bail!("GET {url} did not answer 200 within {timeout:?} (last: {last})"),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- output of {} (port {}) ----\n{}---- end of {} ----",
                self.name,
                self.port,
                self.logs(),
                self.name
            );
        }
    }
}

fn copy_lines(
    stream: impl Read + Send + 'static,
    logs: Arc<Mutex<String>>,
    echo: Option<String>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    if let Some(prefix) = &echo {
                        print!("[{prefix}] {text}");
                        if !text.ends_with('\n') {
                            println!();
                        }
                    }
                    let mut logs = logs.lock().unwrap_or_else(PoisonError::into_inner);
                    logs.push_str(&text);
                    if !text.ends_with('\n') {
                        logs.push('\n');
                    }
                }
            }
        }
    })
}
