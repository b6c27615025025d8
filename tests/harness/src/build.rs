//! The workspace's own binaries: taken from `$<NAME>_BIN`, or built with cargo.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};

use anyhow::{Context, Result, bail};
use cargo_metadata::Message;

/// The path of workspace binary `name` (`frontend`, `private-service`, ...); see [`binaries`].
pub fn binary(name: &str) -> Result<PathBuf> {
    let mut paths = binaries(&[name])?;
    paths.pop().context("cargo reported no binary")
}

/// The paths of workspace binaries `names`, in that order.
///
/// `$<NAME>_BIN` (e.g. `FRONTEND_BIN`, `PRIVATE_SERVICE_BIN`) wins when set. The others are built
/// in one `cargo build -p <name> --bin <name> …` in the profile this code was built with (debug
/// for `cargo test`, release for `cargo run --release`), once per process, with cargo's progress
/// on standard error: a cold release build takes minutes, and nobody should wonder whether it
/// hangs.
pub fn binaries(names: &[&str]) -> Result<Vec<PathBuf>> {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    // Held during the build, so parallel tests build each binary once.
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);

    let mut to_build = Vec::new();
    for name in names {
        let variable = override_variable(name);
        if let Some(path) = std::env::var_os(&variable) {
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!("${variable}={} is not a file", path.display());
            }
            built.insert((*name).to_owned(), path);
        } else if !built.contains_key(*name) {
            to_build.push(*name);
        }
    }
    if !to_build.is_empty() {
        built.extend(cargo_build(&to_build).with_context(|| {
            let variables: Vec<String> = to_build
                .iter()
                .map(|name| format!("${}", override_variable(name)))
                .collect();
            format!(
                "building {} with cargo (or set {} to built binaries)",
                to_build.join(", "),
                variables.join(", ")
            )
        })?);
    }
    names
        .iter()
        .map(|name| {
            built
                .get(*name)
                .cloned()
                .with_context(|| format!("cargo built no binary named `{name}`"))
        })
        .collect()
}

fn override_variable(name: &str) -> String {
    format!("{}_BIN", name.to_uppercase().replace('-', "_"))
}

/// `cargo build` of these packages' binaries of the same name; their paths by name.
fn cargo_build(names: &[&str]) -> Result<HashMap<String, PathBuf>> {
    let mut command = cargo_from_a_clean_environment();
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(crate::workspace_root().join("Cargo.toml"))
        .arg("--message-format=json-render-diagnostics");
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    for name in names {
        command.args(["--package", name, "--bin", name]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting cargo")?;
    let stdout = child.stdout.take().context("cargo's standard output")?;
    let mut paths = HashMap::new();
    for message in Message::parse_stream(BufReader::new(stdout)) {
        if let Message::CompilerArtifact(artifact) = message.context("reading cargo's messages")?
            && let Some(executable) = artifact.executable
            && names.contains(&artifact.target.name.as_str())
        {
            paths.insert(artifact.target.name.clone(), executable.into_std_path_buf());
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("cargo build failed ({status}); its errors are above");
    }
    Ok(paths)
}

/// `cargo` (the one that built this code, when known), with the environment of a shell rather
/// than that of a crate cargo is building or running.
///
/// Cargo describes the crate it runs in variables (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...). Handed
/// to another cargo, they differ from the environment the first one built with, which dirties
/// build scripts that watch them (ring's): each cargo would then rebuild what the other built.
fn cargo_from_a_clean_environment() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (variable, _) in std::env::vars_os() {
        if is_per_crate_cargo_variable(&variable) {
            command.env_remove(variable);
        }
    }
    command
}

/// Variables cargo sets for the crate it builds or runs, as opposed to those that configure cargo
/// itself (CARGO_HOME, CARGO_TARGET_DIR, CARGO_BUILD_*, CARGO_PROFILE_*, ...), which must pass.
fn is_per_crate_cargo_variable(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_EXE_")
        || matches!(
            name,
            "CARGO"
                | "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}
