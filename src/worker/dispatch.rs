//! One dispatch on a listener's protocol: each accepted connection goes to
//! its front end.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::conn_limit::ConnLimit;
use crate::frontend::gateway::{self, GatewaySettings, LazyStream, OneShot, RawConn};
use crate::frontend::http::{FlushQueue, HttpSettings, serve_connection};
use crate::request::{ConnInfo, GoingAway, Handler};

/// A connection as accepted.
pub(super) struct Accepted {
    pub(super) fd: OwnedFd,
    pub(super) peer: Peer,
}

pub(super) enum Peer {
    /// The listener's own address and the client's, when the kernel gave it.
    Tcp {
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
    },
    Unix,
}

pub(super) enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// The connection's own address: the listener's, unless that is every
/// address (`:8080`, `[::]:8080`), when the one the client reached is
/// asked of the kernel. SERVER_ADDR (and ASGI's `server`) said 0.0.0.0,
/// where nginx and Apache give the address the connection came in on.
fn own_address(local: Option<SocketAddr>, fd: &OwnedFd) -> Option<SocketAddr> {
    match local {
        Some(addr) if addr.ip().is_unspecified() => socket2::SockRef::from(fd)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .or(local),
        other => other,
    }
}

impl Accepted {
    /// The connection registered with the event loop, with what the CGI
    /// variables need to know of its ends.
    pub(super) fn into_tokio(self) -> std::io::Result<(Stream, ConnInfo)> {
        Ok(match self.peer {
            Peer::Tcp { local, remote } => {
                let local = own_address(local, &self.fd);
                (
                    Stream::Tcp(tokio::net::TcpStream::from_std(self.fd.into())?),
                    ConnInfo::new(local, remote),
                )
            }
            Peer::Unix => (
                Stream::Unix(tokio::net::UnixStream::from_std(self.fd.into())?),
                ConnInfo::new(None, None),
            ),
        })
    }

    /// The connection, to be registered with the event loop only when a
    /// call on it would block (TCP gets TCP_NODELAY, as on the event loop).
    pub(super) fn into_lazy(self) -> (LazyStream, ConnInfo) {
        let info = match self.peer {
            Peer::Tcp { local, remote } => {
                let _ = socket2::SockRef::from(&self.fd).set_tcp_nodelay(true);
                ConnInfo::new(own_address(local, &self.fd), remote)
            }
            Peer::Unix => ConnInfo::new(None, None),
        };
        (LazyStream::new(self.fd), info)
    }
}

/// How a listener's connections are served: chosen once per socket, from
/// its protocol.
pub(super) enum FrontEnd {
    Http(Arc<HttpSettings>, Arc<FlushQueue>),
    FastCgi(Arc<GatewaySettings>),
    /// uwsgi and SCGI: one request per connection, on the fast path.
    OneShot(OneShot, Arc<GatewaySettings>),
}

/// What every connection of a listener shares.
pub(super) struct Shared {
    pub(super) handler: Arc<dyn Handler>,
    pub(super) front_end: FrontEnd,
    pub(super) stop: watch::Receiver<bool>,
    /// Fires once the stop's mercy time is over: upgraded connections
    /// (WebSockets) close then.
    pub(super) going_away: GoingAway,
    /// Dropped when the connection ends: the stop waits for all of them.
    pub(super) alive: mpsc::Sender<()>,
    /// The worker's `--max-connections`, across its listeners.
    pub(super) limit: Arc<ConnLimit>,
}

/// Spawns `$serve` on the accepted connection made a tokio stream: the
/// same body for the two stream types (TCP gets TCP_NODELAY: responses go
/// out as the app produces them).
macro_rules! spawn_on_stream {
    ($conn:expr, |$stream:ident, $info:ident| $serve:expr) => {
        match $conn.into_tokio() {
            Ok((Stream::Tcp($stream), $info)) => {
                let _ = $stream.set_nodelay(true);
                tokio::spawn($serve);
            }
            Ok((Stream::Unix($stream), $info)) => {
                tokio::spawn($serve);
            }
            Err(e) => crate::say!("oxgate: cannot serve a connection: {e}"),
        }
    };
}

impl Shared {
    /// Serves one accepted connection with the listener's front end.
    pub(super) fn dispatch(&self, conn: Accepted) {
        let handler = self.handler.clone();
        let slot = self.limit.take(self.alive.clone());
        match &self.front_end {
            FrontEnd::Http(settings, flush) => {
                let (settings, flush, stop) = (settings.clone(), flush.clone(), self.stop.clone());
                let going_away = self.going_away.clone();
                spawn_on_stream!(conn, |s, info| async move {
                    serve_connection(s, info, handler, settings, flush, stop, going_away).await;
                    drop(slot);
                });
            }
            FrontEnd::FastCgi(settings) => {
                let (settings, stop) = (settings.clone(), self.stop.clone());
                let threads = handler.concurrency();
                // Registered with the event loop only once a call would
                // block: a request per connection (nginx's default) never is.
                let (conn, info) = conn.into_lazy();
                tokio::spawn(async move {
                    gateway::serve_fastcgi(conn, info, handler, settings, threads, stop).await;
                    drop(slot);
                    // Its buffers go back to the system once a burst of
                    // connections is over, as the HTTP side's do.
                    crate::frontend::release_freed_memory_soon();
                });
            }
            FrontEnd::OneShot(kind, settings) => {
                let (kind, settings) = (*kind, settings.clone());
                let raw = match conn.peer {
                    Peer::Tcp { .. } => RawConn::Tcp(conn.fd),
                    Peer::Unix => RawConn::Unix(conn.fd),
                };
                tokio::spawn(async move {
                    gateway::serve_fast(raw, kind, handler, settings).await;
                    drop(slot);
                    crate::frontend::release_freed_memory_soon();
                });
            }
        }
    }
}
