//! The admin listener (`[server] admin`): HTTP/1.1 on hyper, on a current-thread tokio runtime
//! in the admin thread.
//!
//! - `GET /health`: 200 when every shard answers a no-op through its control queue within a
//!   second (the loops are alive), else 503.
//! - `GET /metrics`: Prometheus text (see `metrics.rs`). Always 200: the engine's counters are
//!   read without the shards; a shard that does not answer within a second is marked
//!   `sipfork_shard_up{shard} 0` and its core counters are the last it gave.
//! - `GET /extensions/{number}/devices`: the extension's devices as JSON, answered by the shard
//!   that owns the number; 404 when the number is not an extension served here.
//! - `GET /cluster` (with `[cluster]`): nodes, directory lag and staleness, Redis health; the
//!   device list above then spans every node holding the number (`app::cluster::admin`).
//! - `POST /reload`: re-reads the configuration (`reload.rs`), only with
//!   `Authorization: Bearer <[server] admin_token>`; without a configured token it is refused
//!   (SIGHUP reloads).
//!
//! Slow or many clients cannot block it: every connection is a task; the request head must
//! arrive within [`HEADER_TIMEOUT`] and a connection lives at most [`CONNECTION_TIMEOUT`];
//! beyond [`MAX_CONNECTIONS`] open connections, new ones are closed at once. One request per
//! connection (`Connection: close`). Shard state is read only on the shard threads, through the
//! control path; waiting for a shard's answer is asynchronous, so a stuck shard delays only the
//! requests that need it.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, Semaphore};

use crate::app::devices::DeviceReport;
use crate::app::metrics::{self, Exposition, Value};
use crate::app::persist::PersistStats;
use crate::app::reload::{ReloadError, Reloader};
use crate::app::shard::Shard;
use crate::core::metrics::{MetricSink, Sample};
use crate::core::shard::{owner_of, ShardId};
use crate::engine::control::Controller;
use crate::engine::StatsReader;
use crate::time::Instant;

/// How long a client may take to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection may live in all (request, answer, a slow reader).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections at most; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 256;
/// How long the admin listener waits for the shards' answers.
pub const SHARD_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest request head accepted (bytes).
const MAX_HEAD: usize = 16 << 10;

/// What the admin thread reads from.
pub struct AdminContext {
    /// Runs queries on the shards.
    pub control: Controller<Shard>,
    /// The engine's per-shard counters.
    pub engine_stats: StatsReader,
    /// The persistence thread's counters (absent without `data_dir`).
    pub persist_stats: Option<Arc<PersistStats>>,
    /// The running configuration, and reloads.
    pub reloader: Arc<Reloader>,
    /// When the appliance started (for the uptime gauge).
    pub started: std::time::Instant,
    /// `[cluster]`: the directory thread's state (`/cluster`, cross-node device lists).
    pub cluster: Option<Arc<crate::app::cluster::Shared>>,
}

/// Counters of the admin listener.
#[derive(Debug, Default)]
struct AdminStats {
    requests: AtomicU64,
    refused_connections: AtomicU64,
    timed_out: AtomicU64,
    unauthorized: AtomicU64,
}

struct State {
    ctx: AdminContext,
    stats: AdminStats,
    shards: ShardScraper,
}

/// Collects the shards' core samples for `/metrics`, keeping each shard's last answer for a
/// scrape it does not answer in time.
struct ShardScraper {
    last: Mutex<Vec<Option<Vec<Sample>>>>,
}

impl ShardScraper {
    fn new(shards: usize) -> Self {
        Self {
            last: Mutex::new(vec![None; shards]),
        }
    }

    /// Which shards answered within [`SHARD_TIMEOUT`], and every shard's samples (the last
    /// known ones of a shard that did not answer).
    async fn collect(&self, control: &Controller<Shard>) -> (Vec<bool>, Vec<Sample>) {
        let answers = ask_all(
            control,
            |shard: &mut Shard, _| {
                let mut sink = MetricSink::default();
                shard.export_metrics(&mut sink);
                sink.samples
            },
            SHARD_TIMEOUT,
        )
        .await;
        let mut up = Vec::with_capacity(answers.len());
        let mut samples = Vec::new();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, answer) in answers.into_iter().enumerate() {
            up.push(answer.is_some());
            if let Some(fresh) = answer {
                last[i] = Some(fresh);
            }
            samples.extend(last[i].iter().flatten().cloned());
        }
        (up, samples)
    }
}

/// The running admin listener.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// Serves `listener` on a new thread.
    pub fn start(listener: TcpListener, ctx: AdminContext) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(4)
            .thread_name("sipfork-admin-blocking")
            .build()?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let shards = ctx.control.shards();
        let state = Arc::new(State {
            ctx,
            stats: AdminStats::default(),
            shards: ShardScraper::new(shards),
        });
        let thread = std::thread::Builder::new()
            .name("sipfork-admin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, state, stop_rx).await,
                        Err(e) => tracing::error!(error = %e, "admin listener unusable"),
                    }
                });
                // Dropping the runtime drops every connection still open: a slow client never
                // delays a stop.
            })?;
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, drops open connections and joins the thread.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    mut stop: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut accept_errors = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, and log sparingly.
                accept_errors += 1;
                if accept_errors.is_power_of_two() {
                    tracing::warn!(error = %e, count = accept_errors, "admin accept failed");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            state
                .stats
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _permit = permit;
            let service = {
                let state = Arc::clone(&state);
                service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, std::convert::Infallible>(handle(req, peer, &state).await) }
                })
            };
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    if e.is_timeout() {
                        state.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!(%peer, error = %e, "admin connection ended early");
                }
                Err(_) => {
                    state.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "admin connection cut after {CONNECTION_TIMEOUT:?}");
                }
            }
        });
    }
}

type Answer = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<String>) -> Answer {
    answer(
        status,
        "text/plain; charset=utf-8",
        body.into().into_bytes(),
    )
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Answer {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            answer(status, "application/json", body)
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode JSON: {e}\n"),
        ),
    }
}

fn answer(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

async fn handle(req: Request<Incoming>, peer: SocketAddr, state: &State) -> Answer {
    let started = std::time::Instant::now();
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let response = route(&req, state, peer).await;
    tracing::debug!(
        %peer,
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "admin request"
    );
    response
}

async fn route(req: &Request<Incoming>, state: &State, peer: SocketAddr) -> Answer {
    let path = req.uri().path();
    if path == "/reload" {
        return match *req.method() {
            Method::POST => reload(req, state, peer).await,
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "use POST /reload\n"),
        };
    }
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served (and POST /reload)\n",
        );
    }
    match path {
        "/health" => health(&state.ctx).await,
        "/metrics" => metrics_page(state).await,
        "/licensing" => json(
            StatusCode::OK,
            &state.ctx.reloader.config().tenancy.licensing_json(),
        ),
        "/tenants" => tenants(&state.ctx, None),
        "/cluster" => match &state.ctx.cluster {
            Some(c) => json(StatusCode::OK, &c.status_json()),
            None => text(StatusCode::NOT_FOUND, "no [cluster] configured\n"),
        },
        _ if path.starts_with(crate::app::cluster::admin::LOCAL_PREFIX) => {
            local_devices(req, path, &state.ctx).await
        }
        _ if path.starts_with("/tenants/") => tenants(&state.ctx, path.strip_prefix("/tenants/")),
        _ => match path
            .strip_prefix("/extensions/")
            .and_then(|rest| rest.strip_suffix("/devices"))
        {
            Some(number) => devices(number, &state.ctx, false).await,
            None => text(
                StatusCode::NOT_FOUND,
                "not found; try /metrics, /health, /extensions/NUMBER/devices, /tenants, /licensing or POST /reload\n",
            ),
        },
    }
}

/// `GET /tenants` (every tenant) or `GET /tenants/{name}`: limits, live public calls and refusals
/// from the shared counters (`core::policy::ledger`), children.
fn tenants(ctx: &AdminContext, name: Option<&str>) -> Answer {
    let cfg = ctx.reloader.config();
    let live = |i: usize| (cfg.ledger.live(i), cfg.ledger.refused(i));
    match name {
        None => {
            let all: Vec<serde_json::Value> = (1..cfg.tenancy.len())
                .map(|i| cfg.tenancy.tenant_json(i, &live))
                .collect();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "server": {
                        "max_public_calls": cfg.server.max_public_calls,
                        "public_calls": cfg.ledger.live(0),
                        "refused": cfg.ledger.refused(0),
                    },
                    "tenants": all,
                }),
            )
        }
        Some(name) => match cfg.tenancy.find(name) {
            Some(i) => json(StatusCode::OK, &cfg.tenancy.tenant_json(i, &live)),
            None => text(StatusCode::NOT_FOUND, format!("no tenant named {name:?}\n")),
        },
    }
}

/// Runs `f` on each shard; each answer, or `None` for a shard that did not answer by `timeout`.
async fn ask_all<R: Send + 'static>(
    control: &Controller<Shard>,
    f: impl Fn(&mut Shard, Instant) -> R + Send + Sync + 'static,
    timeout: Duration,
) -> Vec<Option<R>> {
    let f = Arc::new(f);
    let pending: Vec<_> = (0..control.shards())
        .map(|i| {
            let (tx, rx) = oneshot::channel();
            let f = Arc::clone(&f);
            control
                .post(ShardId(i as u16), move |shard, now| {
                    let _ = tx.send(f(shard, now));
                })
                .ok()
                .map(|()| rx)
        })
        .collect();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut answers = Vec::with_capacity(pending.len());
    for rx in pending {
        answers.push(match rx {
            Some(rx) => tokio::time::timeout_at(deadline, rx)
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        });
    }
    answers
}

/// 200 when every shard answers within [`SHARD_TIMEOUT`] and every journal takes records; else
/// 503 naming the silent shards or the journals' problems.
async fn health(ctx: &AdminContext) -> Answer {
    let answers = ask_all(
        &ctx.control,
        |s: &mut Shard, _| s.journal_problem(),
        SHARD_TIMEOUT,
    )
    .await;
    let silent: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i].is_none())
        .collect();
    let problems: Vec<String> = answers.iter().flatten().flatten().cloned().collect();
    if silent.is_empty() && problems.is_empty() {
        json(
            StatusCode::OK,
            &serde_json::json!({ "status": "ok", "shards": answers.len() }),
        )
    } else {
        let mut errors = problems;
        if !silent.is_empty() {
            errors.push(format!(
                "shards {silent:?} did not answer within {SHARD_TIMEOUT:?}"
            ));
        }
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "unavailable", "error": errors.join("; ") }),
        )
    }
}

async fn metrics_page(state: &State) -> Answer {
    let (up, per_shard) = state.shards.collect(&state.ctx.control).await;
    let ctx = &state.ctx;
    let mut out = Exposition::default();
    scrape(
        &mut out,
        &Scrape {
            up: &up,
            uptime_s: ctx.started.elapsed().as_secs(),
            per_shard,
        },
    );
    metrics::export_engine(&ctx.engine_stats.snapshot(), &mut out);
    metrics::export_steering(ctx.engine_stats.steering(), &mut out);
    metrics::export_heap(&mut out);
    if let Some(p) = &ctx.persist_stats {
        p.export(&mut out);
    }
    ctx.reloader.export(&mut out);
    state.stats.export(&mut out);
    if let Some(c) = &ctx.cluster {
        let mut sink = MetricSink::default();
        c.export_metrics(&mut sink);
        out.add_samples(sink.samples);
    }
    answer(
        StatusCode::OK,
        metrics::CONTENT_TYPE,
        out.render().into_bytes(),
    )
}

/// What a scrape got from the shards.
struct Scrape<'a> {
    /// Which shards answered.
    up: &'a [bool],
    uptime_s: u64,
    /// The shards' core and journal samples (the last known for a shard that did not answer).
    per_shard: Vec<Sample>,
}

/// The appliance-level families and the shards' samples, in page order.
fn scrape(out: &mut Exposition, s: &Scrape<'_>) {
    let n = s.up.len() as u64;
    out.add("sipfork_shards", "Shard threads", &[], Value::Gauge(n));
    out.add(
        "sipfork_uptime_seconds",
        "Seconds since the appliance started",
        &[],
        Value::Gauge(s.uptime_s),
    );
    out.add(
        "sipfork_build_info",
        "The running version",
        &[("version", env!("CARGO_PKG_VERSION"))],
        Value::Gauge(1),
    );
    for (i, up) in s.up.iter().enumerate() {
        out.add(
            "sipfork_shard_up",
            "1 when the shard answered this scrape within a second; 0 marks a slow or stuck shard, whose core counters are then the last it gave",
            &[("shard", &i.to_string())],
            Value::Gauge(u64::from(*up)),
        );
    }
    out.add_samples(s.per_shard.iter().cloned());
}

impl AdminStats {
    fn export(&self, out: &mut Exposition) {
        let counters = [
            (
                "sipfork_admin_requests_total",
                "HTTP requests the admin listener answered",
                &self.requests,
            ),
            (
                "sipfork_admin_connections_refused_total",
                "Admin connections closed on accept because MAX_CONNECTIONS (256) were open",
                &self.refused_connections,
            ),
            (
                "sipfork_admin_timeouts_total",
                "Admin connections cut for sending their request too slowly or living too long",
                &self.timed_out,
            ),
            (
                "sipfork_admin_unauthorized_total",
                "POST /reload refused for a missing or wrong bearer token, or no token configured",
                &self.unauthorized,
            ),
        ];
        for (name, help, value) in counters {
            out.add(
                name,
                help,
                &[],
                Value::Counter(value.load(Ordering::Relaxed)),
            );
        }
    }
}

/// A shard of the reference configuration (for the metrics reference and tests).
fn reference_shard() -> (Arc<crate::config::Config>, Shard) {
    use crate::config::Config;
    use crate::core::transaction::TimerValues;
    use crate::core::{Core, CoreParams};
    let cfg = Config::from_toml(
        "[server]\nlisten = \"127.0.0.1:5060\"\nshards = 1\n\n[[tenants]]\nname = \"example\"\n",
    )
    .expect("the reference configuration is valid");
    let cfg = Arc::new(cfg);
    let core = Core::new(
        Arc::clone(&cfg),
        CoreParams {
            shard: ShardId(0),
            shards: 1,
            local: cfg.server.listen,
            secret: [0; 32],
            wall_epoch_us: 0,
            timers: TimerValues::default(),
        },
        Instant::ZERO,
    );
    (cfg, Shard::new(core, None))
}

/// Every metric family the appliance exposes, from a core, a journal, an engine snapshot, the
/// persistence thread and the listener built for the purpose (`docs/metrics.md`).
pub fn reference() -> Exposition {
    let (cfg, shard) = reference_shard();
    let mut sink = MetricSink::default();
    shard.export_metrics(&mut sink);
    Shard::export_journal_reference(&mut sink);
    let mut out = Exposition::default();
    scrape(
        &mut out,
        &Scrape {
            up: &[true],
            uptime_s: 0,
            per_shard: sink.samples,
        },
    );
    metrics::export_engine(&[crate::engine::shard::ShardSnapshot::default()], &mut out);
    metrics::export_steering(&crate::engine::steer::SteeringState::Off, &mut out);
    metrics::export_heap(&mut out);
    PersistStats::default().export(&mut out);
    Reloader::new("reference.toml".into(), cfg, Controller::new(Vec::new())).export(&mut out);
    crate::app::cdr::CdrSink::export_reference(&mut out);
    AdminStats::default().export(&mut out);
    out
}

/// `GET /cluster/local/extensions/{number}/devices`: another node asks for this node's devices
/// (authenticated with the cluster secret; answers the local devices only, so no loops).
async fn local_devices(req: &Request<Incoming>, path: &str, ctx: &AdminContext) -> Answer {
    use crate::app::cluster::admin::{token_ok, LOCAL_PREFIX, TOKEN_HEADER};
    let Some(c) = &ctx.cluster else {
        return text(StatusCode::NOT_FOUND, "no [cluster] configured\n");
    };
    let token = req.headers().get(TOKEN_HEADER).map(HeaderValue::as_bytes);
    if !token_ok(&c.cfg.secret, path, token) {
        return text(StatusCode::FORBIDDEN, "bad cluster token\n");
    }
    match path
        .strip_prefix(LOCAL_PREFIX)
        .and_then(|rest| rest.strip_suffix("/devices"))
    {
        Some(number) => devices(number, ctx, true).await,
        None => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `GET /extensions/{number}/devices`; with `[cluster]` (and not `local_only`) the devices on
/// every node holding the number, each marked with its node.
async fn devices(number: &str, ctx: &AdminContext, local_only: bool) -> Answer {
    let not_here = || {
        json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": format!("{number} is not an extension served here") }),
        )
    };
    if ctx.reloader.config().extension(number.as_bytes()).is_none() {
        return not_here();
    }
    let owner = owner_of(number.as_bytes(), ctx.control.shards() as u16);
    let key = number.to_owned();
    let (tx, rx) = oneshot::channel();
    let posted = ctx.control.post(owner, move |shard: &mut Shard, now| {
        let _ = tx.send(DeviceReport::from_core(shard.core(), now, &key));
    });
    let answer = match posted {
        Ok(()) => tokio::time::timeout(SHARD_TIMEOUT, rx)
            .await
            .map_err(|_| "the shard did not answer in time".to_owned())
            .and_then(|r| r.map_err(|_| "the shard stopped".to_owned())),
        Err(e) => Err(e.to_string()),
    };
    match answer {
        Ok(Some(report)) => match (&ctx.cluster, local_only) {
            (Some(c), false) => {
                let local = serde_json::to_value(&report).unwrap_or_default();
                json(
                    StatusCode::OK,
                    &crate::app::cluster::admin::merged_devices(c, number, local).await,
                )
            }
            _ => json(StatusCode::OK, &report),
        },
        Ok(None) => not_here(),
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("shard {} did not answer: {e}\n", owner.0),
        ),
    }
}

/// `POST /reload`: only with `Authorization: Bearer <admin_token>`.
async fn reload(req: &Request<Incoming>, state: &State, peer: SocketAddr) -> Answer {
    let reloader = &state.ctx.reloader;
    let Some(token) = reloader.config().server.admin_token.clone() else {
        state.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%peer, "POST /reload refused: no [server] admin_token is configured");
        return text(
            StatusCode::FORBIDDEN,
            "reload over HTTP is off: set [server] admin_token (SIGHUP reloads)\n",
        );
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if !given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
        state.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            %peer,
            token = if given.is_some() { "wrong" } else { "missing" },
            "POST /reload refused: bad bearer token"
        );
        let mut r = text(StatusCode::UNAUTHORIZED, "a valid bearer token is needed\n");
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let reloader = Arc::clone(reloader);
    let by = format!("POST /reload from {peer}");
    // The reload reads a file and waits for the shards: off the runtime's thread.
    match tokio::task::spawn_blocking(move || reloader.reload(&by)).await {
        Ok(Ok(report)) => text(StatusCode::OK, report.text() + "\n"),
        Ok(Err(e @ ReloadError::Invalid(_))) => {
            text(StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n"))
        }
        Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed: {e}\n"),
        ),
    }
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdef", b"0123456789abcdeF"));
        assert!(!same_secret(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!same_secret(b"", b"x"));
    }

    #[test]
    fn a_silent_shard_is_marked_down_and_keeps_its_last_samples() {
        use crate::engine::control::ControlQueue;
        use crate::engine::mailbox::Waker;
        use std::sync::atomic::AtomicBool;
        let queues: Vec<Arc<ControlQueue<Shard>>> =
            (0..2).map(|_| Arc::new(ControlQueue::new())).collect();
        let control = Controller::new(
            queues
                .iter()
                .map(|q| (Arc::clone(q), Arc::new(Waker::new().unwrap())))
                .collect(),
        );
        // Shard 0 runs its control jobs; shard 1 does too until it "hangs" (and says so, so
        // that no job posted after the hang can still be run by a turn that began before it).
        let hang = Arc::new(AtomicBool::new(false));
        let hung = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let servers: Vec<_> = queues
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let (q, hang, hung, stop) = (
                    Arc::clone(q),
                    Arc::clone(&hang),
                    Arc::clone(&hung),
                    Arc::clone(&stop),
                );
                std::thread::spawn(move || {
                    let (_, mut shard) = reference_shard();
                    while !stop.load(Ordering::SeqCst) {
                        if i == 1 && hang.load(Ordering::SeqCst) {
                            hung.store(true, Ordering::SeqCst);
                        } else {
                            q.run_pending(&mut shard, Instant::ZERO);
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let scraper = ShardScraper::new(2);
        let (up, samples) = rt.block_on(scraper.collect(&control));
        assert_eq!(up, [true, true]);
        let n = samples.len();
        assert!(n > 0);
        hang.store(true, Ordering::SeqCst);
        while !hung.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let t0 = std::time::Instant::now();
        let (up, samples) = rt.block_on(scraper.collect(&control));
        assert!(t0.elapsed() < SHARD_TIMEOUT + Duration::from_millis(500));
        assert_eq!(up, [true, false]);
        assert_eq!(samples.len(), n, "the silent shard's last samples are kept");
        let mut out = Exposition::default();
        scrape(
            &mut out,
            &Scrape {
                up: &up,
                uptime_s: 1,
                per_shard: samples,
            },
        );
        let text = out.render();
        assert!(text.contains("sipfork_shard_up{shard=\"0\"} 1\n"), "{text}");
        assert!(text.contains("sipfork_shard_up{shard=\"1\"} 0\n"), "{text}");
        assert!(
            text.contains("sipfork_requests_total{shard=\"0\"} 0\n"),
            "{text}"
        );
        stop.store(true, Ordering::SeqCst);
        servers.into_iter().for_each(|t| t.join().unwrap());
    }

    #[test]
    fn the_reference_names_every_family_once() {
        let r = reference().reference();
        let mut names: Vec<_> = r.iter().map(|d| d.name).collect();
        for expected in [
            "sipfork_shard_up",
            "sipfork_requests_total",
            "sipfork_journal_puts_total",
            "sipfork_journal_fsync_seconds",
            "sipfork_loop_turn_seconds",
            "sipfork_loop_batch_size",
            "sipfork_config_reloads_total",
            "sipfork_drain_refused_total",
        ] {
            assert!(names.contains(&expected), "{expected} missing: {names:?}");
        }
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
