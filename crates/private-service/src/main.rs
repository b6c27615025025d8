use std::process::ExitCode;

use clap::Parser;
use private_service::Config;

fn main() -> ExitCode {
    let config = Config::parse();
    let _log_flush = service_kit::telemetry::init("info");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(private_service::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "private-service stopped");
            ExitCode::FAILURE
        }
    }
}
