//! Logs are JSON lines on stdout, the format App Runner and CloudWatch index without parsing rules.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Installs the global JSON subscriber; `RUST_LOG` overrides `default_filter`.
///
/// Writes go through a background thread so a slow stdout never stalls a request; keep the guard
/// alive until exit so buffered lines are flushed.
pub fn init(default_filter: &str) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)))
        .with_writer(writer)
        .init();
    guard
}
