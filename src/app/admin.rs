//! The admin listener (`[server] admin`): a small HTTP/1.1 server on its own thread.
//!
//! - `GET /health`: 200 when every shard answers a no-op through its control queue within a
//!   second (the loops are alive), else 503.
//! - `GET /metrics`: Prometheus text (see `metrics.rs`).
//! - `GET /extensions/{number}/devices`: the extension's devices as JSON, answered by the shard
//!   that owns the number; 404 when the number is not an extension served here.
//!
//! One request per connection (`Connection: close`), handled in turn: the admin API is for
//! operators and scrapers, not a data path. A slow or silent client is cut off after
//! [`IO_TIMEOUT`], so it cannot hold the listener. Shard state is read only on the shard threads,
//! through the control path: nothing here takes a lock the hot path takes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::app::devices::DeviceReport;
use crate::app::metrics;
use crate::app::persist::PersistStats;
use crate::app::shard::Shard;
use crate::config::Config;
use crate::core::metrics::MetricSink;
use crate::core::shard::owner_of;
use crate::engine::control::Controller;
use crate::engine::StatsReader;

/// How long a client may take to send its request or read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the admin thread waits for the shards' answers.
pub const SHARD_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest request head accepted.
const MAX_HEAD: usize = 8 << 10;

/// What the admin thread reads from.
pub struct AdminContext {
    /// Runs queries on the shards.
    pub control: Controller<Shard>,
    /// The engine's per-shard counters.
    pub engine_stats: StatsReader,
    /// The persistence thread's counters (absent without `data_dir`).
    pub persist_stats: Option<Arc<PersistStats>>,
    /// The running configuration.
    pub config: Arc<Config>,
    /// When the appliance started (for the uptime gauge).
    pub started: std::time::Instant,
}

/// The running admin listener.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// Serves `listener` on a new thread.
    pub fn start(listener: TcpListener, ctx: AdminContext) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("sipfork-admin".into())
                .spawn(move || serve(&listener, &ctx, &stop))?
        };
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and joins the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The thread blocks in accept(): one connection wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: &TcpListener, ctx: &AdminContext, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            Ok(stream) => {
                if let Err(e) = handle_connection(stream, ctx) {
                    tracing::debug!(error = %e, "admin connection ended early");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// An answer: status, content type, body.
pub struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }

    fn json(status: u16, value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec_pretty(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Self {
                    status,
                    content_type: "application/json",
                    body,
                }
            }
            Err(e) => Self::text(500, format!("cannot encode JSON: {e}\n")),
        }
    }
}

fn handle_connection(mut stream: TcpStream, ctx: &AdminContext) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let response = match parse_request_line(&head) {
        Some((method, path)) => route(method, path, ctx),
        None => Response::text(400, "bad request\n"),
    };
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    out.extend_from_slice(&response.body);
    stream.write_all(&out)?;
    stream.flush()
}

/// Reads up to the blank line ending the request head.
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(head)
}

/// `(method, path)` of the request line, without the query string.
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    Some((method, target.split('?').next().unwrap_or(target)))
}

/// Answers one request.
pub fn route(method: &str, path: &str, ctx: &AdminContext) -> Response {
    if method != "GET" {
        return Response::text(405, "only GET is served\n");
    }
    match path {
        "/health" => health(ctx),
        "/metrics" => metrics_page(ctx),
        _ => match path
            .strip_prefix("/extensions/")
            .and_then(|rest| rest.strip_suffix("/devices"))
        {
            Some(number) => devices(number, ctx),
            None => Response::text(
                404,
                "not found; try /metrics, /health or /extensions/NUMBER/devices\n",
            ),
        },
    }
}

fn health(ctx: &AdminContext) -> Response {
    match ctx
        .control
        .ask_all(|s: &mut Shard, _| s.journal_problem(), SHARD_TIMEOUT)
    {
        Ok(answers) if answers.iter().any(Option::is_some) => Response::json(
            503,
            &serde_json::json!({ "status": "unavailable", "error": answers.into_iter().flatten().collect::<Vec<_>>().join("; ") }),
        ),
        Ok(answers) => Response::json(
            200,
            &serde_json::json!({ "status": "ok", "shards": answers.len() }),
        ),
        Err(e) => Response::json(
            503,
            &serde_json::json!({ "status": "unavailable", "error": e.to_string() }),
        ),
    }
}

fn metrics_page(ctx: &AdminContext) -> Response {
    let per_shard = ctx.control.ask_all(
        |shard: &mut Shard, _| {
            let mut sink = MetricSink::default();
            shard.export_metrics(&mut sink);
            sink.samples
        },
        SHARD_TIMEOUT,
    );
    let per_shard = match per_shard {
        Ok(samples) => samples,
        Err(e) => return Response::text(503, format!("a shard did not answer: {e}\n")),
    };
    let mut sink = MetricSink::default();
    sink.gauge(
        "sipfork_shards",
        "Shard threads running",
        &[],
        ctx.control.shards() as u64,
    );
    sink.gauge(
        "sipfork_uptime_seconds",
        "Seconds since the appliance started",
        &[],
        ctx.started.elapsed().as_secs(),
    );
    sink.gauge(
        "sipfork_build_info",
        "The running version",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    sink.samples.extend(per_shard.into_iter().flatten());
    metrics::export_engine(&ctx.engine_stats.snapshot(), &mut sink);
    if let Some(p) = &ctx.persist_stats {
        p.export(&mut sink);
    }
    Response {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        body: metrics::render(&sink.samples).into_bytes(),
    }
}

fn devices(number: &str, ctx: &AdminContext) -> Response {
    if ctx.config.extension(number.as_bytes()).is_none() {
        return Response::json(
            404,
            &serde_json::json!({ "error": format!("{number} is not an extension served here") }),
        );
    }
    let owner = owner_of(number.as_bytes(), ctx.control.shards() as u16);
    let key = number.to_owned();
    let answer = ctx
        .control
        .ask(owner, move |shard: &mut Shard, now| {
            DeviceReport::from_core(shard.core(), now, &key)
        })
        .and_then(|reply| reply.wait(SHARD_TIMEOUT));
    match answer {
        Ok(Some(report)) => Response::json(200, &report),
        Ok(None) => Response::json(
            404,
            &serde_json::json!({ "error": format!("{number} is not an extension served here") }),
        ),
        Err(e) => Response::text(503, format!("shard {} did not answer: {e}\n", owner.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_strictly() {
        assert_eq!(
            parse_request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            parse_request_line(b"GET /health HTTP/1.0\n\n"),
            Some(("GET", "/health"))
        );
        assert_eq!(parse_request_line(b"GET /health\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"GET  /health HTTP/1.1\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"\xff\xfe HTTP/1.1\r\n"), None);
        assert_eq!(parse_request_line(b""), None);
    }
}
