use std::process::ExitCode;

use clap::Parser;
use frontend::Config;

// The images link musl statically, and musl's malloc is slow under multi-threaded load. Measured
// (tests/bench, "builds compared", 64 connections, static musl builds, two runs minutes apart):
// musl's malloc 12.7 k GET / and 8.5 k /recent-visits req/s, p99 15 ms, peak RSS 20 MiB (38 MiB
// after 64 concurrent private-service calls); mimalloc 15.5 k and 14.8 k req/s, p99 10 ms, 22 MiB
// (61 MiB) with MIMALLOC_PURGE_DELAY=0 and MIMALLOC_ARENA_EAGER_COMMIT=0 — without those options
// 54 MiB (362 MiB). So the image build enables this feature and sets the options in the image's
// environment (nix/rust.nix, nix/images.nix). mimalloc v2 did no better (15.0 k, 14.0 k, 23 MiB).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let settings = match Config::parse().validate() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}\n\nFor more information, try '--help'.");
            return ExitCode::from(2);
        }
    };
    // refinery narrates each migration; our own line per applied migration says it once.
    let _log_flush = service_kit::telemetry::init("info,refinery_core=warn");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(settings.blocking_threads)
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(frontend::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "frontend stopped");
            ExitCode::FAILURE
        }
    }
}
