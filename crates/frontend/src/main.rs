use std::process::ExitCode;

use clap::Parser;
use frontend::Config;

// The images link musl statically, and musl's malloc is slow under multi-threaded load. Measured
// (tests/bench/RESULTS.md, "builds compared": static musl builds at 64 connections, same run):
// musl's malloc 12.2 k GET / and 8.2 k /recent-visits req/s, 1.3 k private-service calls/s, peak
// RSS 20 MiB (37 MiB after the private-service fan-out); mimalloc 12.7 k, 12.1 k and 1.5 k, 22 MiB
// (61 MiB), with MIMALLOC_PURGE_DELAY=0 and MIMALLOC_ARENA_EAGER_COMMIT=0. Without those options
// mimalloc held 60 MiB under load and 367 MiB after the fan-out (run b185182). So the image build
// enables this feature and sets the options in the image's environment (nix/rust.nix,
// nix/images.nix). mimalloc v2 did no better in a shorter run.
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
