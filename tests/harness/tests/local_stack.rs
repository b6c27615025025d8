//! `cargo run --release -p harness --bin local-stack`, as a person runs it from a shell: the
//! second start compiles nothing (it used to rebuild everything each time: the inner cargo got the
//! outer one's CARGO_MANIFEST_DIR, which dirtied ring's build script), and both starts end up
//! serving the walkthrough.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::{free_port, workspace_root};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// What one start showed: cargo's and the services' standard error, and how long until ready.
struct Start {
    stderr: String,
    ready_after: Duration,
}

/// `cargo` with what a login shell has: none of the variables cargo and nextest set for this test
/// (CARGO_MANIFEST_DIR, ...), none of the test run's binary overrides (FRONTEND_BIN, ...).
fn cargo_as_from_a_shell() -> Command {
    let mut command = Command::new("cargo");
    command.env_clear();
    for variable in [
        "PATH",
        "HOME",
        "USER",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
    ] {
        if let Some(value) = std::env::var_os(variable) {
            command.env(variable, value);
        }
    }
    command
}

/// Starts local-stack through cargo, waits until it says it is up, checks the API answers, and
/// stops it as Ctrl-C in a terminal does (SIGINT to its whole process group).
fn start_and_stop() -> Start {
    let frontend_port = free_port().expect("a free port");
    let private_service_port = free_port().expect("a free port");
    let started = Instant::now();
    let mut child: Child = cargo_as_from_a_shell()
        .current_dir(workspace_root())
        .args(["run", "--release", "-p", "harness", "--bin", "local-stack", "--"])
        .args(["--frontend-port", &frontend_port.to_string()])
        .args(["--private-service-port", &private_service_port.to_string()])
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cargo starts");
    let group = Pid::from_raw(i32::try_from(child.id()).expect("a pid"));

    let mut stderr = child.stderr.take().expect("piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (ready_sender, ready) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("local-stack is up") {
                let _ = ready_sender.send(());
            }
        }
    });

    // A cold release build on two cores takes minutes; a warm start seconds.
    let up = ready.recv_timeout(Duration::from_secs(20 * 60));
    let ready_after = started.elapsed();
    let health = up.is_ok().then(|| {
        ureq::get(&format!("http://127.0.0.1:{frontend_port}/health"))
            .call()
            .map(|response| response.status().as_u16())
    });
    let _ = killpg(group, Signal::SIGINT);
    let status = child.wait().expect("local-stack exits");
    let stderr = stderr_reader.join().expect("stderr reader");
    assert!(up.is_ok(), "local-stack did not come up:\n{stderr}");
    assert!(
        matches!(health, Some(Ok(200))),
        "GET /health: {health:?}\n{stderr}"
    );
    assert!(
        status.success(),
        "local-stack exited with {status} on Ctrl-C:\n{stderr}"
    );
    Start { stderr, ready_after }
}

#[test]
fn a_second_start_compiles_nothing() {
    let first = start_and_stop();
    eprintln!("first start: ready after {:?}", first.ready_after);
    let second = start_and_stop();
    eprintln!("second start: ready after {:?}", second.ready_after);
    let compiled: Vec<&str> = second
        .stderr
        .lines()
        .filter(|line| line.trim_start().starts_with("Compiling"))
        .collect();
    assert!(
        compiled.is_empty(),
        "the second start compiled again:\n{}",
        compiled.join("\n")
    );
}

#[test]
fn the_frontends_settings_reach_it_from_local_stacks_environment() {
    // An invalid value shows that the setting arrived: the frontend refuses to start, naming it,
    // and local-stack stops with its output instead of serving the defaults.
    let mut child = cargo_as_from_a_shell()
        .current_dir(workspace_root())
        .env("DB_STATEMENT_TIMEOUT", "soon")
        .args(["run", "--release", "-p", "harness", "--bin", "local-stack", "--"])
        .args(["--frontend-port", &free_port().expect("a free port").to_string()])
        .args([
            "--private-service-port",
            &free_port().expect("a free port").to_string(),
        ])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cargo starts");
    let mut stderr = child.stderr.take().expect("piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // A cold release build on two cores takes minutes; then the frontend fails at once.
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("local-stack's status") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let group = Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
            let _ = killpg(group, Signal::SIGINT);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stderr = stderr_reader.join().expect("stderr reader");
    assert!(
        status.is_some_and(|status| !status.success()),
        "local-stack kept serving with DB_STATEMENT_TIMEOUT=soon:\n{stderr}"
    );
    assert!(
        stderr.contains("local-stack: frontend did not become healthy")
            && stderr.contains("invalid value 'soon' for '--db-statement-timeout"),
        "{stderr}"
    );
}
