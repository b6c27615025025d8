//! The frontend built different ways (C library, allocator) under the same loads, for choosing
//! the allocator with numbers. The images link musl statically, and musl's malloc is known to be
//! slow under multi-threaded load, while the rest of the suite runs the glibc build; so the
//! comparison includes the musl build with its own allocator and with mimalloc.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use harness::ServiceCommand;

use crate::load::{Run, Wrk};
use crate::system::peak_rss_kib;
use crate::{ms, rate, say, wait_for_schema};

/// Connections of every load in the comparison.
const CONNECTIONS: u32 = 64;

/// mimalloc's options as the frontend's image sets them (nix/images.nix, `mimallocEnv`): builds
/// with mimalloc run with them, as deployed.
const IMAGE_MIMALLOC_ENV: [(&str, &str); 2] = [
    ("MIMALLOC_PURGE_DELAY", "0"),
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
];

/// `name=path`, as given on the command line.
#[derive(Clone, Debug)]
pub struct Build {
    pub name: String,
    pub path: PathBuf,
}

pub fn parse_build(text: &str) -> Result<Build, String> {
    let (name, path) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PATH, got {text:?}"))?;
    Ok(Build {
        name: name.to_owned(),
        path: PathBuf::from(path),
    })
}

pub struct Measured {
    pub build: Build,
    pub size_bytes: u64,
    pub visits: Run,
    pub recents: Run,
    pub rss_before_fan_out_kib: u64,
    pub private: Run,
    pub rss_end_kib: u64,
}

/// Runs `GET /`, `GET /recent-visits` and then `GET /ecs-private-service` at 64 connections
/// against each build in turn, with the same environment.
pub fn compare(
    builds: &[Build],
    wrk: &Wrk,
    env: &[(OsString, OsString)],
    private_service_url: &str,
    seconds: u32,
) -> Result<Vec<Measured>> {
    builds
        .iter()
        .map(|build| {
            say(&format!("builds compared: {}", build.name));
            let size_bytes = std::fs::metadata(&build.path)
                .with_context(|| format!("the {} build at {}", build.name, build.path.display()))?
                .len();
            let mimalloc_env = IMAGE_MIMALLOC_ENV
                .iter()
                .filter(|_| build.name.contains("mimalloc"));
            let frontend = ServiceCommand::new(&build.path)
                .envs(env.iter().cloned())
                .envs(mimalloc_env.copied())
                .env("ECSPRIVATESERVICE", private_service_url)
                .spawn()?;
            wait_for_schema(&frontend)?;
            let visits = wrk.run(&frontend.url("/"), CONNECTIONS, seconds)?;
            let recents = wrk.run(&frontend.url("/recent-visits"), CONNECTIONS, seconds)?;
            let rss_before_fan_out_kib = peak_rss_kib(frontend.pid())?;
            let private = wrk.run(&frontend.url("/ecs-private-service"), CONNECTIONS, seconds)?;
            Ok(Measured {
                build: build.clone(),
                size_bytes,
                visits,
                recents,
                rss_before_fan_out_kib,
                private,
                rss_end_kib: peak_rss_kib(frontend.pid())?,
            })
        })
        .collect()
}

pub fn markdown(measured: &[Measured]) -> String {
    let mut md = format!(
        "\n## The frontend's builds compared (allocator, C library)\n\n\
         The same loads at {CONNECTIONS} connections on loopback, each build started fresh, one after another \
         (`GET /` and `/recent-visits` on the table as the loopback runs left it, then the private-service fan-out). \
         RSS is the peak (VmHWM) before and after the fan-out. Builds with mimalloc run with the options the image \
         sets (`MIMALLOC_PURGE_DELAY=0`, `MIMALLOC_ARENA_EAGER_COMMIT=0`, nix/images.nix).\n\n\
         | build | binary MiB | GET / req/s | p99 ms | /recent-visits req/s | p99 ms | RSS MiB | /ecs-private-service req/s | p99 ms | RSS after fan-out MiB |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    for row in measured {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {} | {} | {} | {} | {:.1} | {} | {} | {:.1} |",
            row.build.name,
            row.size_bytes as f64 / (1024.0 * 1024.0),
            rate(row.visits.per_second),
            ms(row.visits.p99_us),
            rate(row.recents.per_second),
            ms(row.recents.p99_us),
            mib(row.rss_before_fan_out_kib),
            rate(row.private.per_second),
            ms(row.private.p99_us),
            mib(row.rss_end_kib),
        );
    }
    md
}
