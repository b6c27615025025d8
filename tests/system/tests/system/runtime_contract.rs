//! The image runtime contract: what the OCI images give a binary is all it needs. Each binary
//! starts and serves `/health` with an environment of only `PORT` and `SSL_CERT_FILE`, from an
//! empty working directory, as the unprivileged user 65534:65534 (the images' `User`), and
//! stops cleanly on SIGTERM without writing a file — the private service only after answering
//! for its default `STOP_LINGER` (30 s) more, while resolvers forget its Cloud Map record.
//!
//! With `FRONTEND_BIN` / `PRIVATE_SERVICE_BIN` pointing at the release builds this checks the
//! release binaries; otherwise those of this test run's profile.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::{ServiceCommand, binary};
use serde_json::json;
use system_tests::get;

/// The `User` of the images (nobody:nogroup on Debian).
const IMAGE_UID: u32 = 65534;
const IMAGE_GID: u32 = 65534;

/// The private service's default `STOP_LINGER`.
const PRIVATE_SERVICE_LINGER: Duration = Duration::from_secs(30);

#[test]
fn frontend_runs_with_only_port_from_an_empty_directory_as_an_unprivileged_user() {
    check_runtime_contract("frontend", "/", Duration::ZERO);
}

#[test]
fn private_service_runs_with_only_port_from_an_empty_directory_as_an_unprivileged_user() {
    check_runtime_contract("private-service", "/", PRIVATE_SERVICE_LINGER);
}

fn check_runtime_contract(name: &str, unconfigured_route: &str, linger: Duration) {
    let built = binary(name).expect("build");
    // The binary alone in a directory of its own, like /bin in the image.
    let image = tempfile::Builder::new()
        .prefix("contract-image-")
        .tempdir()
        .expect("tempdir");
    let program = image.path().join(name);
    fs::copy(&built, &program).expect("copy the binary");
    let workdir = tempfile::Builder::new()
        .prefix("contract-cwd-")
        .tempdir()
        .expect("tempdir");
    for dir in [image.path(), workdir.path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    let mut command = ServiceCommand::new(&program)
        .without_path()
        .current_dir(workdir.path());
    let ca_bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if ca_bundle.exists() {
        command = command.env("SSL_CERT_FILE", ca_bundle);
    }
    let as_root = nix::unistd::geteuid().is_root();
    if as_root {
        command = command.user(IMAGE_UID, IMAGE_GID);
    } else {
        eprintln!("not root: {name} runs as the current user, not {IMAGE_UID}");
    }
    let mut service = command.spawn().expect("start with the image's environment");

    if as_root {
        let status = fs::read_to_string(format!("/proc/{}/status", service.pid())).expect("status");
        let uid_line = status
            .lines()
            .find(|line| line.starts_with("Uid:"))
            .unwrap_or_default();
        assert_eq!(
            uid_line.split_whitespace().nth(1),
            Some(IMAGE_UID.to_string().as_str()),
            "{uid_line}"
        );
    }
    let health = get(&service.url("/health"), Some("kube-probe"));
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"Status": "Healthy"}))
    );
    // Unconfigured dependencies are an answer, not a crash.
    let answer = get(&service.url(unconfigured_route), Some("system-tests"));
    assert!(
        answer.status == 502 || answer.status == 503,
        "{} {}",
        answer.status,
        answer.body
    );
    assert_eq!(answer.content_type, "application/problem+json");

    service.sigterm().expect("SIGTERM");
    let terminated = Instant::now();
    if !linger.is_zero() {
        // New connections are still answered until the linger is nearly over.
        while terminated.elapsed() + Duration::from_secs(2) < linger {
            let health = get(&service.url("/health"), Some("kube-probe"));
            assert_eq!(health.status, 200, "{:?} after SIGTERM", terminated.elapsed());
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let status = service.wait_exit(linger + Duration::from_secs(15)).expect("exit");
    let stopped_after = terminated.elapsed();
    assert!(status.success(), "exit status {status}:\n{}", service.logs());
    assert!(
        stopped_after >= linger,
        "{name} exited {stopped_after:?} after SIGTERM, before its linger of {linger:?}"
    );
    let left: Vec<_> = fs::read_dir(workdir.path())
        .expect("read workdir")
        .flatten()
        .map(|entry| entry.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "{name} wrote into its working directory: {left:?}"
    );
}
