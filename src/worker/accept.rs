//! The one accept loop every listening socket uses: connections come out
//! as raw descriptors, so the one-request protocols' fast path can serve a
//! connection without ever registering it with the event loop; the others
//! turn them into tokio streams.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::dispatch::{Accepted, FrontEnd, Peer, Shared};
use crate::listen::{Address, Listener, Socket};

/// How long a uwsgi or SCGI TCP listener holds a connection back, waiting
/// for its first bytes: the fast path then finds the whole request at once.
const DEFER_ACCEPT_SECS: libc::c_int = 5;

/// Starts the accept loop of one listening socket; it ends with the stop.
pub(super) fn spawn_loop(socket: Socket, shared: Shared) -> Result<(), String> {
    let Socket { addr, listener, .. } = socket;
    let (fd, local, tcp): (OwnedFd, _, _) = match listener {
        Listener::Tcp(l) => {
            let local = l.local_addr().ok();
            (l.into(), local, true)
        }
        Listener::Unix(l, _) => (l.into(), None, false),
    };
    // What the app's requests wait on (its free Python threads): a worker
    // with none free accepts no more, and the idle workers take them.
    let app_room = shared.handler.room();
    // With the request there at accept, it takes its thread at once, and
    // whether to accept more is known then.
    if tcp && (matches!(shared.front_end, FrontEnd::OneShot(..)) || app_room.is_some()) {
        defer_accept(&fd);
    }
    // SAFETY: the AsyncFd takes the descriptor's owner with it, so the
    // descriptor stays open for as long as it is registered.
    let listener = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| format!("cannot use {addr}: {}", e.into_parts().1))?;
    tokio::spawn(async move {
        let mut stop = shared.stop.clone();
        loop {
            if !shared.limit.has_room() {
                tokio::select! {
                    () = shared.limit.room() => {}
                    _ = stop.changed() => break,
                }
            }
            let mut guard = tokio::select! {
                g = listener.readable() => match g {
                    Ok(g) => g,
                    Err(e) => {
                        accept_failed(&addr, e).await;
                        continue;
                    }
                },
                _ = stop.changed() => break,
            };
            // A connection waits. With no thread free, the idle workers
            // have a while to take it (they do at once); after that this
            // one takes what waits, all of it, so that when every worker
            // is busy a health check, a static file or a request that needs
            // no thread is still answered.
            let mut gated = app_room.is_some();
            if let Some(room) = app_room.as_ref().filter(|r| r.available_permits() == 0) {
                tokio::select! {
                    // Given back at once: the request that waits for
                    // it, if any, comes first.
                    _ = room.acquire() => {}
                    () = tokio::time::sleep(BUSY_ACCEPT_DELAY) => gated = false,
                    _ = stop.changed() => break,
                }
            }
            // Accepts what is waiting, up to the limit (the rest stays
            // ready, for once there is room).
            let mut taken = 0;
            while shared.limit.has_room() {
                match accept(listener.get_ref(), tcp) {
                    Ok((fd, remote)) => {
                        let peer = if tcp {
                            Peer::Tcp { local, remote }
                        } else {
                            Peer::Unix
                        };
                        shared.dispatch(Accepted { fd, peer });
                        taken += 1;
                        if let Some(room) = app_room.as_ref().filter(|_| gated)
                            && taken >= room.available_permits()
                        {
                            // As many taken as threads are free: their
                            // requests, read now, take them, and what is
                            // left decides whether to take more.
                            tokio::task::yield_now().await;
                            taken = 0;
                            if room.available_permits() == 0 {
                                break;
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        accept_failed(&addr, e).await;
                        break;
                    }
                }
            }
        }
    });
    Ok(())
}

/// How long a worker whose app has no free thread leaves a waiting
/// connection to the others before it takes it anyway: an idle worker
/// takes it at once.
const BUSY_ACCEPT_DELAY: Duration = Duration::from_millis(50);

/// accept4(2), non-blocking and close-on-exec, with the client's address
/// for TCP.
fn accept(listener: &OwnedFd, tcp: bool) -> std::io::Result<(OwnedFd, Option<SocketAddr>)> {
    let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    let fd = listener.as_raw_fd();
    if !tcp {
        let fd =
            nix::sys::socket::accept4(fd, nix::sys::socket::SockFlag::from_bits_truncate(flags))?;
        // SAFETY: accept4 just returned this descriptor: it is open and
        // nothing else owns it.
        return Ok((unsafe { OwnedFd::from_raw_fd(fd) }, None));
    }
    // SAFETY: socket2 hands accept4 a zeroed sockaddr_storage and its
    // length, which accept4 fills in; the descriptor it returns is open and
    // owned by nothing else, so it is wrapped once.
    let (fd, addr) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let fd = libc::accept4(fd, storage.cast(), len, flags);
            if fd < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(OwnedFd::from_raw_fd(fd))
            }
        })
    }?;
    Ok((fd, addr.as_socket()))
}

/// TCP_DEFER_ACCEPT (neither std, nix nor socket2 has it); a failure only
/// costs the fast path.
fn defer_accept(fd: &OwnedFd) {
    let secs = DEFER_ACCEPT_SECS;
    // SAFETY: a valid socket descriptor, a pointer to a live c_int and its
    // size: setsockopt reads exactly that many bytes.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const secs).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Accept errors (too many open files, say) must not spin the loop.
async fn accept_failed(addr: &Address, e: std::io::Error) {
    crate::say!("oxgate: accept on {addr} failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
