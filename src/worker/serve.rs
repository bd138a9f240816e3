//! The serving loop of a worker (or of a single process): one accept loop
//! per socket, one dispatch on its protocol to the front end, until a stop.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::frontend::gateway::{self, GatewaySettings, RawConn};
use crate::frontend::http::{FlushQueue, HttpSettings, serve_connection};
use crate::listen::{Address, Listener, Protocol, Socket};
use crate::process;
use crate::request::{ConnInfo, Handler};

/// What the front ends need from the configuration.
pub struct FrontEnds {
    pub http: Arc<HttpSettings>,
    pub gateway: Arc<GatewaySettings>,
}

pub fn front_ends(cfg: &Config) -> FrontEnds {
    FrontEnds {
        http: Arc::new(HttpSettings {
            limit_post: cfg.limit_post,
            max_head: cfg.buffer_size,
            head_timeout: cfg.socket_timeout,
        }),
        gateway: Arc::new(GatewaySettings {
            // A uwsgi vars block cannot exceed 65535 bytes.
            max_vars: cfg.buffer_size.min(65535),
            limit_post: cfg.limit_post,
            timeout: cfg.socket_timeout,
        }),
    }
}

/// The runtime is built only after any fork: no runtime thread may exist
/// when a process forks (embedding.md §4).
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the event loop: {e}"))
}

/// Serves the listeners until one of `stop_on` arrives, then lets requests
/// in flight finish (bounded by `mercy`; a second signal stops at once).
pub async fn serve(
    listeners: Vec<Socket>,
    host: Arc<dyn Handler>,
    front: FrontEnds,
    stop_on: &[(SignalKind, &'static str)],
    mercy: Duration,
    ready: impl FnOnce(),
) -> Result<(), String> {
    let mut signals = Vec::new();
    for (kind, name) in stop_on {
        signals.push((signal(*kind).map_err(|e| e.to_string())?, *name));
    }
    // A worker's stop may have arrived since its fork, blocked: it is
    // delivered now, to the handler just installed.
    crate::sys::signals::unblock_all();
    let (stop_tx, stop_rx) = watch::channel(false);
    let flush = Arc::new(FlushQueue::default());
    tokio::spawn(flush.clone().run());
    // Every connection holds a clone; when all are gone, so are the requests.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    for Socket {
        addr,
        listener,
        protocol,
    } in listeners
    {
        let conn = Conn {
            host: host.clone(),
            settings: front.http.clone(),
            gateway: front.gateway.clone(),
            protocol,
            flush: flush.clone(),
            stop: stop_rx.clone(),
            alive: alive_tx.clone(),
        };
        // One request per connection (uwsgi, SCGI): accepted as raw
        // descriptors for the gateway's fast path.
        if matches!(protocol, Protocol::Uwsgi | Protocol::Scgi) {
            match listener {
                Listener::Tcp(l) => {
                    // Accept only once the request's bytes are there: the
                    // fast path then finds the whole request at once.
                    let secs: libc::c_int = 5;
                    unsafe {
                        libc::setsockopt(
                            std::os::fd::AsRawFd::as_raw_fd(&l),
                            libc::IPPROTO_TCP,
                            libc::TCP_DEFER_ACCEPT,
                            (&raw const secs).cast(),
                            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                        );
                    }
                    accept_raw(l, false, conn, addr)?
                }
                Listener::Unix(l, _) => accept_raw(l, true, conn, addr)?,
            }
            continue;
        }
        match listener {
            Listener::Tcp(l) => {
                let l = tokio::net::TcpListener::from_std(l)
                    .map_err(|e| format!("cannot use {addr}: {e}"))?;
                tokio::spawn(async move {
                    let local = l.local_addr().ok();
                    let mut stop = conn.stop.clone();
                    loop {
                        let accepted = tokio::select! {
                            r = l.accept() => r,
                            _ = stop.changed() => break,
                        };
                        match accepted {
                            Ok((stream, peer)) => {
                                let _ = stream.set_nodelay(true);
                                conn.spawn(stream, ConnInfo::new(local, Some(peer)));
                            }
                            Err(e) => accept_failed(&addr, e).await,
                        }
                    }
                });
            }
            Listener::Unix(l, _) => {
                let l = tokio::net::UnixListener::from_std(l)
                    .map_err(|e| format!("cannot use {addr}: {e}"))?;
                tokio::spawn(async move {
                    let mut stop = conn.stop.clone();
                    loop {
                        let accepted = tokio::select! {
                            r = l.accept() => r,
                            _ = stop.changed() => break,
                        };
                        match accepted {
                            Ok((stream, _)) => conn.spawn(stream, ConnInfo::new(None, None)),
                            Err(e) => accept_failed(&addr, e).await,
                        }
                    }
                });
            }
        }
    }
    drop(alive_tx);
    ready();

    let why = next_signal(&mut signals).await;
    if process::is_worker() {
        // The master logs the stop; a worker says nothing more.
    } else {
        crate::say!(
            "oxgate: {why} received, finishing requests in flight (a second one stops at once)"
        );
    }
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = alive_rx.recv() => {}
        why = next_signal(&mut signals) => crate::say!("oxgate: second {why}, stopping now"),
        _ = tokio::time::sleep(mercy) => {
            crate::say!("oxgate: requests still running after {}s, stopping anyway", mercy.as_secs());
        }
    }
    Ok(())
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

/// What every connection of a listener shares.
struct Conn {
    host: Arc<dyn Handler>,
    settings: Arc<HttpSettings>,
    gateway: Arc<GatewaySettings>,
    protocol: Protocol,
    flush: Arc<FlushQueue>,
    stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
}

impl Conn {
    fn spawn<S: crate::frontend::http::Peek>(&self, stream: S, info: ConnInfo) {
        let (h, s, f, st, a) = (
            self.host.clone(),
            self.settings.clone(),
            self.flush.clone(),
            self.stop.clone(),
            self.alive.clone(),
        );
        match self.protocol {
            Protocol::Http => {
                tokio::spawn(async move {
                    serve_connection(stream, info, h, s, f, st).await;
                    drop(a);
                });
            }
            Protocol::Fastcgi => {
                let g = self.gateway.clone();
                let threads = self.host.concurrency();
                tokio::spawn(async move {
                    gateway::serve_fastcgi(stream, info, h, g, threads, st).await;
                    drop((a, f, s));
                });
            }
            protocol => {
                let g = self.gateway.clone();
                tokio::spawn(async move {
                    gateway::serve(stream, protocol, info, h, g, bytes::BytesMut::new()).await;
                    drop((a, f, st, s));
                });
            }
        }
    }
}

/// An accept loop that hands out raw descriptors: a connection is not
/// registered with the event loop unless it has to wait.
fn accept_raw<L>(listener: L, unix: bool, conn: Conn, addr: Address) -> Result<(), String>
where
    L: std::os::fd::AsRawFd + Send + Sync + 'static,
{
    use std::os::fd::FromRawFd;
    // SAFETY: the listener owns its descriptor and keeps it for as long
    // as the AsyncFd (which owns the listener) lives.
    let afd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE)
    }
    .map_err(|e| format!("cannot use {addr}: {}", e.into_parts().1))?;
    tokio::spawn(async move {
        let mut stop = conn.stop.clone();
        loop {
            let mut guard = tokio::select! {
                g = afd.readable() => match g {
                    Ok(g) => g,
                    Err(e) => {
                        accept_failed(&addr, e).await;
                        continue;
                    }
                },
                _ = stop.changed() => break,
            };
            loop {
                let fd = unsafe {
                    libc::accept4(
                        afd.get_ref().as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    )
                };
                if fd < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::WouldBlock {
                        guard.clear_ready();
                    } else if e.kind() != std::io::ErrorKind::Interrupted {
                        accept_failed(&addr, e).await;
                    }
                    break;
                }
                let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
                let raw = if unix {
                    RawConn::Unix(fd)
                } else {
                    RawConn::Tcp(fd)
                };
                let (h, g, a, protocol) = (
                    conn.host.clone(),
                    conn.gateway.clone(),
                    conn.alive.clone(),
                    conn.protocol,
                );
                tokio::spawn(async move {
                    gateway::serve_fast(raw, protocol, h, g).await;
                    drop(a);
                });
            }
        }
    });
    Ok(())
}

/// Accept errors (too many open files, say) must not spin the loop.
async fn accept_failed(addr: &Address, e: std::io::Error) {
    crate::say!("oxgate: accept on {addr} failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
