//! Stand-ins for HTTP dependencies: a stub that answers (or misbehaves) the same way on every
//! path, and the ECS task metadata endpoint. Each runs a small Tokio runtime on a thread of
//! its own, so they work from plain and from async tests alike.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use poem::endpoint::make_sync;
use poem::http::StatusCode;
use poem::listener::TcpAcceptor;
use poem::{Endpoint, EndpointExt, Response, Route, Server};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const FIXTURE: &str = include_str!("../fixtures/ecs-task-metadata-v4-fargate.json");

/// What an [`HttpStub`] does with every connection.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Answer every request, whatever its method and path, with this status and this JSON body.
    Json(u16, Value),
    /// Like [`Reply::Json`], but only after this delay (a slow dependency; requests in flight).
    JsonAfter(Duration, u16, Value),
    /// Answer every request with this status and this `text/plain` body.
    Text(u16, String),
    /// Accept the connection and never answer (for timeouts).
    Hang,
    /// Answer with bytes that are not HTTP, then close.
    Garbage,
    /// Accept the connection and close it at once, without a byte.
    Close,
}

/// A fake HTTP dependency on `127.0.0.1:<free port>` doing one [`Reply`]; stopped on drop.
///
/// For "the dependency is down", use [`closed_port_url`] instead.
pub struct HttpStub {
    server: Background,
    requests: Arc<AtomicUsize>,
}

impl HttpStub {
    /// Starts a stub that does `reply` to every connection.
    pub fn start(reply: Reply) -> Result<Self> {
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let server = match reply {
            Reply::Json(status, body) => {
                let body = body.to_string();
                let endpoint = counting(
                    Arc::clone(&counter),
                    make_sync(move |_| {
                        Response::builder()
                            .status(to_status(status))
                            .content_type("application/json")
                            .body(body.clone())
                    }),
                );
                Background::poem(endpoint)?
            }
            Reply::JsonAfter(delay, status, body) => {
                let body = body.to_string();
                let endpoint = counting(
                    Arc::clone(&counter),
                    poem::endpoint::make(move |_| {
                        let body = body.clone();
                        async move {
                            tokio::time::sleep(delay).await;
                            Response::builder()
                                .status(to_status(status))
                                .content_type("application/json")
                                .body(body)
                        }
                    }),
                );
                Background::poem(endpoint)?
            }
            Reply::Text(status, body) => {
                let endpoint = counting(
                    Arc::clone(&counter),
                    make_sync(move |_| {
                        Response::builder()
                            .status(to_status(status))
                            .content_type("text/plain")
                            .body(body.clone())
                    }),
                );
                Background::poem(endpoint)?
            }
            Reply::Hang | Reply::Garbage | Reply::Close => Background::raw(reply, counter)?,
        };
        Ok(Self { server, requests })
    }

    /// Shorthand for `HttpStub::start(Reply::Json(status, body))`.
    pub fn json(status: u16, body: Value) -> Result<Self> {
        Self::start(Reply::Json(status, body))
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }

    /// How many requests (for [`Reply::Json`]/[`Reply::Text`]) or connections (for the
    /// misbehaving replies) it has received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// The ECS task metadata endpoint (v4) on loopback, serving the documented Fargate shape
/// (`fixtures/ecs-task-metadata-v4-fargate.json`) or a task document of your choice.
///
/// Like the real one, [`uri_v4`](Self::uri_v4) has a path (`http://127.0.0.1:<port>/v4/<id>`):
/// `<uri>/task` answers the task metadata, `<uri>` the first container's metadata, anything
/// else 404.
pub struct EcsMetadata {
    server: Background,
    base: String,
    requests: Arc<AtomicUsize>,
}

impl EcsMetadata {
    /// Serves the documented Fargate task metadata.
    pub fn start() -> Result<Self> {
        Self::serving(ecs_task_metadata_fixture()?)
    }

    /// Serves `task` at `<uri>/task` (e.g. the fixture with a field removed).
    pub fn serving(task: Value) -> Result<Self> {
        let container = task["Containers"][0].clone();
        let id = "0123456789abcdef0123456789abcdef-1234567890";
        let task_body = task.to_string();
        let container_body = container.to_string();
        let requests = Arc::new(AtomicUsize::new(0));
        let routes = Route::new()
            .at(
                format!("/v4/{id}/task"),
                make_sync(move |_| json_response(&task_body)),
            )
            .at(
                format!("/v4/{id}"),
                make_sync(move |_| json_response(&container_body)),
            );
        let server = Background::poem(counting(Arc::clone(&requests), routes))?;
        let base = format!("http://{}/v4/{id}", server.addr);
        Ok(Self {
            server,
            base,
            requests,
        })
    }

    /// The value for `ECS_CONTAINER_METADATA_URI_V4` (without `/task`).
    pub fn uri_v4(&self) -> &str {
        &self.base
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }

    /// How many requests it has answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// The documented Fargate task metadata document (placeholder values) that [`EcsMetadata`] serves.
pub fn ecs_task_metadata_fixture() -> Result<Value> {
    serde_json::from_str(FIXTURE).context("parsing fixtures/ecs-task-metadata-v4-fargate.json")
}

/// `http://127.0.0.1:<port>` where nothing listens (a port that was just free): "the dependency is down".
pub fn closed_port_url() -> Result<String> {
    Ok(format!("http://127.0.0.1:{}", crate::free_port()?))
}

fn to_status(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn json_response(body: &str) -> Response {
    Response::builder()
        .content_type("application/json")
        .body(body.to_string())
}

/// `endpoint`, counting the requests it sees.
fn counting<E: Endpoint + 'static>(counter: Arc<AtomicUsize>, endpoint: E) -> impl Endpoint + 'static {
    endpoint.before(move |request| {
        counter.fetch_add(1, Ordering::SeqCst);
        let ready: poem::Result<poem::Request> = Ok(request);
        std::future::ready(ready)
    })
}

/// A listener on 127.0.0.1 served by a current-thread Tokio runtime on its own thread.
/// Dropping it signals the server, joins the thread, and the runtime is dropped there.
struct Background {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    fn poem(endpoint: impl Endpoint + 'static) -> Result<Self> {
        Self::spawn(move |listener, stop| async move {
            let acceptor = match TcpAcceptor::from_std(listener) {
                Ok(acceptor) => acceptor,
                Err(error) => {
                    eprintln!("harness: stub listener failed: {error}");
                    return;
                }
            };
            let shutdown = async {
                let _ = stop.await;
            };
            let served = Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(endpoint, shutdown, Some(Duration::from_millis(100)))
                .await;
            if let Err(error) = served {
                eprintln!("harness: stub server failed: {error}");
            }
        })
    }

    fn raw(reply: Reply, counter: Arc<AtomicUsize>) -> Result<Self> {
        Self::spawn(move |listener, mut stop| async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(error) => {
                    eprintln!("harness: stub listener failed: {error}");
                    return;
                }
            };
            // Connections of a hanging stub are held here until the stub is dropped.
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    accepted = listener.accept() => {
                        let Ok((mut stream, _)) = accepted else { continue };
                        counter.fetch_add(1, Ordering::SeqCst);
                        match reply {
                            Reply::Garbage => {
                                tokio::spawn(async move {
                                    let mut request = [0_u8; 4096];
                                    let _ = tokio::time::timeout(
                                        Duration::from_millis(500),
                                        stream.read(&mut request),
                                    )
                                    .await;
                                    let _ = stream.write_all(b"\x00\xffthis is not HTTP\r\n\r\n").await;
                                    let _ = stream.shutdown().await;
                                });
                            }
                            Reply::Close => drop(stream),
                            _ => held.push(stream),
                        }
                    }
                }
            }
        })
    }

    fn spawn<F, Fut>(serve: F) -> Result<Self>
    where
        F: FnOnce(TcpListener, oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a stub port")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the stub's Tokio runtime")?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("harness-stub-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(serve(listener, stop_rx));
                runtime.shutdown_background();
            })
            .map_err(|error| anyhow!("spawning the stub thread: {error}"))?;
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
