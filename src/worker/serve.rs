//! The serving loop of a worker (or of a single process): an accept loop
//! per socket (`accept`), one dispatch on its protocol to the front end,
//! until a stop.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::accept;
use super::dispatch::{FrontEnd, Shared};
use crate::config::Config;
use crate::frontend::gateway::{GatewaySettings, OneShot};
use crate::frontend::http::proxy_header::ProxyProtocol;
use crate::frontend::http::strict::HeadLimits;
use crate::frontend::http::{FlushQueue, HttpSettings};
use crate::listen::{Protocol, Socket};
use crate::process;
use crate::request::{BodyTaking, GoingAway, Handler};

/// What the front ends need from the configuration.
pub struct FrontEnds {
    pub http: Arc<HttpSettings>,
    pub gateway: Arc<GatewaySettings>,
    /// `--max-connections`, or the default from the open-files limit.
    pub max_connections: usize,
    /// `--ws-close-at-stop`: upgraded connections are told to close when
    /// the stop begins, not when its mercy is over.
    pub sessions_close_at_stop: bool,
}

pub fn front_ends(cfg: &Config) -> FrontEnds {
    FrontEnds {
        http: Arc::new(HttpSettings {
            server_addr: cfg.cgi.active()
                || !cfg.fastcgi.apps.is_empty()
                || !cfg.fastcgi.passes.is_empty(),
            limit_post: cfg.limit_post,
            max_head: cfg.buffer_size,
            head_timeout: cfg.socket_timeout,
            keepalive: cfg.keepalive_timeout,
            head_limits: HeadLimits {
                request_line: cfg.limit_request_line,
                field_size: cfg.limit_request_field_size,
                fields: cfg.limit_request_fields,
                // As hyper's read buffer is held to (`h1_max_buf`).
                head: cfg.buffer_size.max(8192),
            },
            max_headers: cfg.limit_request_fields,
            read_ahead: cfg.post_buffering,
            min_body_rate: cfg.min_body_rate,
            early_hints: cfg.early_hints,
            script_name_header: cfg.script_name_header.is_some(),
            proxy_protocol: cfg.proxy_protocol.as_ref().map(|p| ProxyProtocol {
                v1: p.v1,
                v2: p.v2,
                allow: p.allow.clone(),
            }),
            tls: None,
            http2_max_streams: cfg
                .tls_http2
                .http2
                .then_some(cfg.tls_http2.http2_max_streams),
            http2_pending: Arc::new(tokio::sync::Semaphore::new(cfg.tls_http2.http2_max_pending)),
        }),
        gateway: Arc::new(GatewaySettings {
            // (A uwsgi vars block cannot exceed 65535 bytes: its size is
            // 16 bits. FastCGI's params and SCGI's netstring can.)
            max_vars: cfg.buffer_size,
            limit_post: cfg.limit_post,
            timeout: cfg.socket_timeout,
            read_ahead: crate::frontend::gateway::INLINE_BODY_MAX,
        }),
        max_connections: match cfg.max_connections {
            0 => super::conn_limit::default_max(),
            n => n,
        },
        sessions_close_at_stop: cfg.asgi.ws.close_at_stop,
    }
}

/// At most this many threads do the event loop's blocking work.
const BLOCKING_THREADS: usize = 32;

/// The runtime is built only after any fork: no runtime thread may exist
/// when a process forks (embedding.md §4).
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // The blocking threads read uncached files into the page cache
        // (request::body::Warmer) and connect to abstract FastCGI sockets:
        // a burst of cold files queues for these, as for nginx's 32 aio
        // threads, rather than start hundreds.
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .map_err(|e| format!("cannot start the event loop: {e}"))
}

/// How long connections closing at the end of a stop's mercy time (a
/// WebSocket's close handshake) have before the worker exits.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How a worker's stop is timed.
#[derive(Clone, Copy)]
pub struct StopTimes {
    /// How long requests in flight may run on.
    pub mercy: Duration,
    /// How long the whole stop may take (the master kills the worker
    /// then): what is left after `mercy` is for the apps' shutdown.
    pub budget: Duration,
}

/// Serves the listeners until one of `stop_on` arrives, then lets requests
/// in flight finish (bounded by the mercy of the `times` of that stop, told
/// when it comes; without a master, a second signal stops at once).
pub async fn serve(
    listeners: Vec<Socket>,
    host: Arc<dyn Handler>,
    front: FrontEnds,
    stop_on: &[(SignalKind, &'static str)],
    times: impl Fn() -> StopTimes,
    ready: impl FnOnce(),
    going_away: impl Fn(),
) -> Result<(), String> {
    let mut front = front;
    if host.body_taking() == BodyTaking::AsItComes {
        front.http = Arc::new(HttpSettings {
            read_ahead: 0,
            ..(*front.http).clone()
        });
        front.gateway = Arc::new(GatewaySettings {
            read_ahead: 0,
            ..(*front.gateway).clone()
        });
    }
    let mut signals = Vec::new();
    for (kind, name) in stop_on {
        signals.push((signal(*kind).map_err(|e| e.to_string())?, *name));
    }
    // A worker's stop that came before these handlers was counted since its
    // fork (`stop_signal`).
    let (stop_tx, stop_rx) = watch::channel(false);
    let (going_away_tx, going_away_rx) = watch::channel(false);
    let flush = Arc::new(FlushQueue::default());
    tokio::spawn(flush.clone().run());
    // Every connection holds a clone; when all are gone, so are the requests.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let limit = super::conn_limit::ConnLimit::new(front.max_connections);
    for socket in listeners {
        let front_end = match socket.protocol {
            Protocol::Http => match crate::frontend::tls::listener_for(&socket.addr) {
                Some(tls) => FrontEnd::Http(
                    Arc::new(HttpSettings {
                        tls: Some(tls),
                        ..(*front.http).clone()
                    }),
                    flush.clone(),
                ),
                None => FrontEnd::Http(front.http.clone(), flush.clone()),
            },
            Protocol::Fastcgi => FrontEnd::FastCgi(front.gateway.clone()),
            Protocol::Uwsgi => FrontEnd::OneShot(OneShot::Uwsgi, front.gateway.clone()),
            Protocol::Scgi => FrontEnd::OneShot(OneShot::Scgi, front.gateway.clone()),
        };
        let shared = Shared {
            handler: host.clone(),
            front_end,
            stop: stop_rx.clone(),
            alive: alive_tx.clone(),
            limit: limit.clone(),
            going_away: GoingAway::new(going_away_rx.clone()),
        };
        accept::spawn_loop(socket, shared)?;
    }
    drop(alive_tx);
    ready();

    let why = stop_signal(&mut signals, 1).await;
    let stop_began = std::time::Instant::now();
    let first = times();
    crate::sys::signals::set_stop_deadline(stop_began + first.budget);
    if process::is_worker() {
        // The master logs the stop; a worker says nothing more.
    } else {
        crate::note!(
            "oxgate: {why} received, finishing requests in flight (a second one stops at once)"
        );
        // The single process (no master): systemd sees the stop begin.
        process::sd_notify("STOPPING=1");
    }
    let _ = stop_tx.send(true);
    if front.sessions_close_at_stop {
        let _ = going_away_tx.send(true);
        going_away();
    }
    // A worker's second SIGTERM is most often the process group's copy
    // of the master's stop (systemd's KillMode=control-group, `kill -TERM
    // -PGID`, supervisord's stopasgroup): it must not cut the requests in
    // flight. The master stops its workers at once itself, with SIGKILL.
    let second_stops_now = !process::is_worker();
    tokio::select! {
        _ = alive_rx.recv() => {}
        why = stop_signal(&mut signals, 2), if second_stops_now => {
            crate::say!("oxgate: second {why}, stopping now")
        }
        (mercy, close_grace) = mercy_over(stop_began, first, &times) => {
            // Open WebSockets close with 1001 ("going away") rather than
            // being cut; they get a moment for the close handshake, as
            // event streams the app can end do.
            let _ = going_away_tx.send(true);
            going_away();
            // CGI scripts still running will not end in time: killed
            // while this worker can (the master's kill would leave them
            // running, unsupervised).
            crate::handlers::cgi::kill_running_scripts();
            tokio::select! {
                _ = alive_rx.recv() => {}
                _ = tokio::time::sleep(close_grace) => crate::say!(
                    "oxgate: requests still running after {}s, stopping anyway",
                    mercy.as_secs()
                ),
            }
        }
    }
    Ok(())
}

/// Waits until the stop's mercy is over, but for the last `close_grace`
/// of it, which it returns with the mercy. The times are looked at again
/// while it waits: a worker's first SIGTERM may be the process group's
/// copy of the master's stop (systemd's KillMode=control-group), come
/// before the master has said it is stopping, when the times were a
/// reload's (--worker-reload-mercy); the master then kills the worker at
/// --reload-mercy, and the stop must be over by then.
async fn mercy_over(
    began: std::time::Instant,
    first: StopTimes,
    times: &impl Fn() -> StopTimes,
) -> (Duration, Duration) {
    let mut now_times = first;
    loop {
        let mercy = now_times.mercy;
        // Within the mercy, so that what is after it (an ASGI app's
        // lifespan shutdown) keeps its part of a short stop (uvicorn's
        // --timeout-graceful-shutdown 2: the worker was killed before it).
        let close_grace = CLOSE_GRACE.min(mercy / 4);
        let end = began + (mercy - close_grace);
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return (mercy, close_grace);
        }
        tokio::time::sleep(left.min(TIMES_LOOKED_AT_EVERY)).await;
        let next = times();
        if next.budget < now_times.budget {
            crate::sys::signals::set_stop_deadline(began + next.budget);
            now_times = next;
        }
    }
}

/// How often a stop's times are looked at again (`mercy_over`).
const TIMES_LOOKED_AT_EVERY: Duration = Duration::from_millis(100);

/// The `nth` stop signal. A worker counts its SIGTERMs from its fork on
/// (`sys::signals::count_stops`), so one that came before these handlers
/// counts too; the handlers only wake the loop.
async fn stop_signal(
    signals: &mut [(tokio::signal::unix::Signal, &'static str)],
    nth: usize,
) -> &'static str {
    if crate::sys::signals::stops().is_none() {
        return next_signal(signals).await;
    }
    while crate::sys::signals::stops().is_some_and(|n| n < nth) {
        next_signal(signals).await;
    }
    "SIGTERM"
}

async fn next_signal(signals: &mut [(tokio::signal::unix::Signal, &'static str)]) -> &'static str {
    std::future::poll_fn(|cx| {
        for (s, name) in signals.iter_mut() {
            if s.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready(*name);
            }
        }
        std::task::Poll::Pending
    })
    .await
}
