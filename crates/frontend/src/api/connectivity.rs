use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use service_kit::Problem;

use crate::config::ConnectionTestSettings;
use crate::db::Database;

/// `GET /test-connection`: can this instance open a TCP connection to the configured target
/// (by default the database)? The target comes from configuration only, never from the request,
/// so the route cannot be used to probe other hosts.
pub struct ConnectivityApi {
    /// TARGET; when unset, the endpoint the database connections use.
    host: Option<String>,
    port: u16,
    timeout: Duration,
    database: Option<Arc<Database>>,
}

#[derive(Object)]
struct ConnectionSucceeded {
    /// e.g. "Connection to db.example:5432 succeeded"
    #[oai(rename = "Response")]
    response: String,
    /// The address that accepted the connection.
    #[oai(rename = "Address")]
    address: String,
}

#[derive(ApiResponse)]
enum ConnectionTestResponse {
    #[oai(status = 200)]
    Ok(Json<ConnectionSucceeded>),
    /// The target did not accept a connection in time, or none is configured.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unreachable(Json<Problem>),
}

#[OpenApi]
impl ConnectivityApi {
    /// Checks TCP reachability of TARGET:TARGETPORT (default: the database endpoint).
    #[oai(path = "/test-connection", method = "get")]
    async fn test_connection(&self) -> ConnectionTestResponse {
        let configured = self.host.clone().map(|host| (host, self.port));
        let (database, timeout) = (self.database.clone(), self.timeout);
        let outcome = tokio::task::spawn_blocking(move || {
            let (host, port) = configured
                .or_else(|| database.and_then(|database| database.endpoint()))
                .ok_or_else(|| "No target is configured: set TARGET or DB_HOST.".to_owned())?;
            connect(&host, port, timeout).map(|address| (host, port, address))
        })
        .await;
        match outcome {
            Ok(Ok((host, port, address))) => ConnectionTestResponse::Ok(Json(ConnectionSucceeded {
                response: format!("Connection to {host}:{port} succeeded"),
                address: address.to_string(),
            })),
            Ok(Err(reason)) => unreachable(reason),
            Err(join_error) => unreachable(format!("The connection test failed: {join_error}")),
        }
    }
}

impl ConnectivityApi {
    pub fn new(settings: &ConnectionTestSettings, database: Option<Arc<Database>>) -> Self {
        Self {
            host: settings.host.clone(),
            port: settings.port,
            timeout: settings.timeout,
            database,
        }
    }
}

fn unreachable(detail: String) -> ConnectionTestResponse {
    ConnectionTestResponse::Unreachable(Json(Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail)))
}

/// Tries each resolved address in turn within one overall deadline.
fn connect(host: &str, port: u16, timeout: Duration) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + timeout;
    let addresses = (host, port)
        .to_socket_addrs()
        .map_err(|error| format!("Connection to {host}:{port} failed: cannot resolve {host}: {error}"))?;
    let mut last_error = format!("Connection to {host}:{port} failed: {host} has no address");
    for address in addresses {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(format!(
                "Connection to {host}:{port} failed: no answer within {} ms",
                timeout.as_millis()
            ));
        }
        match TcpStream::connect_timeout(&address, remaining) {
            Ok(_) => return Ok(address),
            Err(error) => last_error = format!("Connection to {host}:{port} ({address}) failed: {error}"),
        }
    }
    Err(last_error)
}
