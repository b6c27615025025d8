//! Binding and serving with a graceful drain.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use poem::listener::TcpListener;
use poem::{Endpoint, EndpointExt, Server};

use crate::{problem, request_log};

/// How long in-flight requests may take to finish once draining begins. App Runner and ECS wait
/// 30 s after SIGTERM before SIGKILL by default (the private service's task definition raises
/// it to cover its linger too); finishing well within that leaves room for our own cleanup.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `app` on `addr` with the request log and problem+json errors, until SIGTERM or SIGINT;
/// then keeps answering for `linger` (clients may still hold this address: see the private
/// service's `STOP_LINGER`), stops accepting, lets in-flight requests finish, and returns.
pub async fn serve<E: Endpoint + 'static>(app: E, addr: SocketAddr, linger: Duration) -> anyhow::Result<()> {
    let app = with_common_middleware(app);
    let listener = TcpListener::bind(addr);
    let stop = async move {
        shutdown_signal().await;
        if !linger.is_zero() {
            tracing::info!(
                linger_ms = linger.as_millis(),
                "still answering while clients forget this address, then draining"
            );
            tokio::time::sleep(linger).await;
        }
    };
    Server::new(listener)
        .run_with_graceful_shutdown(app, stop, Some(DRAIN_TIMEOUT))
        .await
        .with_context(|| format!("serving on {addr}"))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received, draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, draining"),
    }
}

/// The middleware every service runs behind; public so in-process tests see what clients see.
pub fn with_common_middleware<E: Endpoint + 'static>(app: E) -> impl Endpoint {
    app.catch_all_error(problem::from_poem_error)
        .around(request_log::log_request)
}
