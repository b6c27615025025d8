//! `local-stack`: the whole system on this machine, no AWS needed.
//!
//! A throwaway PostgreSQL (database `apprunnerdemo`, role `apprunnerdemo`), a stand-in for the
//! ECS task metadata endpoint, `private-service` and `frontend`; URLs printed, logs forwarded,
//! everything stopped on Ctrl-C or SIGTERM.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use harness::{EcsMetadata, Postgres, Service, ServiceCommand, binaries};

/// Runs the whole system locally: PostgreSQL, the private service (with a stand-in for the ECS
/// task metadata endpoint) and the frontend, listening on all interfaces. Stop it with Ctrl-C.
///
/// Binaries come from $FRONTEND_BIN / $PRIVATE_SERVICE_BIN, otherwise they are built with
/// cargo in this command's profile (showing cargo's progress; nothing is rebuilt when nothing
/// changed). PostgreSQL comes from $PG_BIN, $PATH or /usr/lib/postgresql/*/bin
/// (`apt-get install -y postgresql`).
///
/// The frontend's settings (`DB_*`, `TARGET*`, `ECSPRIVATESERVICE_TIMEOUT`, `BLOCKING_THREADS`,
/// `RUST_LOG`; see `frontend --help`) are passed on from this command's environment, e.g.
/// `DB_STATEMENT_TIMEOUT=1s local-stack`; the database connection is local-stack's own.
#[derive(Parser, Debug)]
#[command(name = "local-stack", version)]
struct Args {
    /// Port of the frontend (the public API).
    #[arg(long, default_value_t = 8080)]
    frontend_port: u16,

    /// Port of the private service.
    #[arg(long, default_value_t = 8081)]
    private_service_port: u16,

    /// Run the system in the VPC twin instead (root only): network namespaces for the internet,
    /// App Runner, Aurora and each task, the security groups of pulumi/Pulumi.yaml (or
    /// $PULUMI_PROGRAM) as nftables rules, a caching VPC resolver (Unbound in front of dnsmasq),
    /// a NAT host. Prints the topology, the reachability matrix and how to reach the service from
    /// the `internet` namespace. The port options do not apply.
    #[arg(long, conflicts_with_all = ["frontend_port", "private_service_port"])]
    vpc: bool,
}

fn main() {
    if let Err(error) = run(Args::parse()) {
        eprintln!("local-stack: {error:#}");
        std::process::exit(1);
    }
}

/// The frontend's own settings in this command's environment; those set afterwards (the database
/// connection, the private service's URL) take precedence.
fn frontend_settings_from_the_environment() -> Vec<(String, String)> {
    const PREFIXES: [&str; 4] = [
        "ECSPRIVATESERVICE_TIMEOUT",
        "BLOCKING_THREADS",
        "RUST_LOG",
        "TARGET",
    ];
    std::env::vars()
        .filter(|(name, _)| name.starts_with("DB_") || PREFIXES.iter().any(|p| name.starts_with(p)))
        .collect()
}

fn run(args: Args) -> Result<()> {
    if args.vpc {
        return run_in_the_vpc_twin();
    }
    ensure_free(args.frontend_port, "--frontend-port")?;
    ensure_free(args.private_service_port, "--private-service-port")?;

    println!(
        "local-stack: building the service binaries (the first time: minutes, cargo's progress follows) ..."
    );
    // One cargo invocation for both (one lock, one progress display); paths in the order asked.
    let paths = binaries(&["frontend", "private-service"])?;
    let (frontend_bin, private_service_bin) = (&paths[0], &paths[1]);

    println!("local-stack: starting PostgreSQL ...");
    let pg = Postgres::start()?;
    let app_password = random_password()?;
    pg.create_role("apprunnerdemo", &app_password)?;
    pg.create_named_database("apprunnerdemo", "apprunnerdemo")?;

    let metadata = EcsMetadata::start()?;

    let mut private_service = ServiceCommand::new(private_service_bin)
        .port(args.private_service_port)
        .env("ECS_CONTAINER_METADATA_URI_V4", metadata.uri_v4())
        // No resolver caches its address here: Ctrl-C stops it at once.
        .env("STOP_LINGER", "0s")
        .echo_logs("private-service")
        .spawn()?;

    let mut frontend = ServiceCommand::new(frontend_bin)
        .port(args.frontend_port)
        .envs(frontend_settings_from_the_environment())
        .envs([
            ("DB_HOST", pg.host().to_string()),
            ("DB_PORT", pg.port().to_string()),
            ("DB_NAME", "apprunnerdemo".to_string()),
            ("DB_USER", "apprunnerdemo".to_string()),
            ("DB_PASS", app_password),
            ("DB_SSLMODE", "disable".to_string()),
            (
                "ECSPRIVATESERVICE",
                format!("http://127.0.0.1:{}", args.private_service_port),
            ),
        ])
        .echo_logs("frontend")
        .spawn()?;

    let api = frontend.url("");
    println!(
        "\nlocal-stack is up:\n  \
         API              {api}/   (try: curl {api}/ && curl {api}/recent-visits)\n  \
         API docs         {api}/docs   (OpenAPI: {api}/openapi.json)\n  \
         private service  {}\n  \
         PostgreSQL       postgres://apprunnerdemo@127.0.0.1:{}/apprunnerdemo (superuser postgres, password {})\n\
         Press Ctrl-C to stop.\n",
        private_service.url("/"),
        pg.port(),
        pg.superuser_password(),
    );

    let reason = wait_for_stop(&mut [&mut frontend, &mut private_service])?;
    println!("local-stack: {reason}; stopping ...");
    let mut failed = false;
    for service in [&mut frontend, &mut private_service] {
        failed |= stop_gracefully(service);
    }
    drop(metadata);
    drop(pg);
    println!("local-stack: stopped.");
    if failed || reason.contains("exited") {
        bail!("{reason}");
    }
    Ok(())
}

/// `--vpc`: the twin lives in tests/vpc, which depends on this crate, so it is a binary of its own
/// that this process becomes (Ctrl-C then reaches it directly), with the services built here.
fn run_in_the_vpc_twin() -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("--vpc creates network namespaces and nftables rules: run it as root (e.g. sudo -E)");
    }
    println!("local-stack: building the service binaries and the VPC twin (the first time: minutes) ...");
    // Two builds: built together, the twin's dependencies would change the services' features,
    // and they would no longer be the binaries the plain local-stack (and the image) runs.
    let services = binaries(&["frontend", "private-service"])?;
    let twin = binaries(&["vpc-twin"])?;
    let error = std::process::Command::new(&twin[0])
        .env("FRONTEND_BIN", &services[0])
        .env("PRIVATE_SERVICE_BIN", &services[1])
        .exec();
    Err(error).with_context(|| format!("starting {}", twin[0].display()))
}

/// Blocks until Ctrl-C, SIGTERM, or one of the services exits; says which.
fn wait_for_stop(services: &mut [&mut Service]) -> Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a Tokio runtime for signal handling")?;
    runtime.block_on(async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok("Ctrl-C".to_string()),
                _ = terminate.recv() => return Ok("SIGTERM".to_string()),
                _ = tick.tick() => {
                    for service in services.iter_mut() {
                        if let Some(status) = service.try_exit_status()? {
                            return Ok(format!("a service on port {} exited ({status})", service.port()));
                        }
                    }
                }
            }
        }
    })
}

/// SIGTERM, then up to 10 s to drain; returns true if it did not exit cleanly.
fn stop_gracefully(service: &mut Service) -> bool {
    if matches!(service.try_exit_status(), Ok(Some(_))) {
        return false;
    }
    let outcome = service
        .sigterm()
        .and_then(|()| service.wait_exit(Duration::from_secs(10)));
    match outcome {
        Ok(status) if status.success() => false,
        Ok(status) => {
            eprintln!(
                "local-stack: service on port {} exited with {status}",
                service.port()
            );
            true
        }
        Err(error) => {
            eprintln!("local-stack: {error:#}; killing it");
            true
        }
    }
}

fn ensure_free(port: u16, flag: &str) -> Result<()> {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        .map(drop)
        .with_context(|| format!("port {port} is already in use: choose another with {flag} <PORT>"))
}

fn random_password() -> Result<String> {
    let mut bytes = [0_u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut bytes,
    )
    .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}
