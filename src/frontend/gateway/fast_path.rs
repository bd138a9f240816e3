//! The fast path for uwsgi and SCGI: a connection whose whole request
//! is already in the socket is served without registering it with the
//! event loop; anything else falls back to the async driver.

use crate::request::cgi::{Normalised, normalise};
use crate::request::{ConnInfo, Handler, over_limit_post};
use crate::request::{RequestBody, ResponseBody};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::files::SocketFiles;
use super::oneshot::{OneShot, Parsed, parse_head, serve};
use super::response::{response_head, status_line_version, write_response};
use super::settings::{GatewaySettings, INLINE_BODY_MAX, WATCH_AFTER};
use super::stall::StallGuard;

/// A connection accepted as a raw descriptor: nothing registered with the
/// event loop yet.
pub enum RawConn {
    Tcp(std::os::fd::OwnedFd),
    Unix(std::os::fd::OwnedFd),
}

/// The fast path for one-request-per-connection protocols (uwsgi, SCGI),
/// where a front end such as nginx connects, sends the whole request at
/// once and waits. If the request has arrived and the response goes out in
/// one non-blocking send, the connection never touches the event loop: no
/// registration, no wake-up. Anything that would block takes the ordinary
/// path. (FastCGI, whose connections may carry many requests, gets the same
/// from `LazyStream`.)
pub async fn serve_fast(
    conn: RawConn,
    kind: OneShot,
    host: Arc<dyn Handler>,
    settings: Arc<GatewaySettings>,
) {
    let protocol = kind.protocol();
    use std::os::fd::AsRawFd;
    let fd = match &conn {
        RawConn::Tcp(fd) | RawConn::Unix(fd) => fd.as_raw_fd(),
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // Read into the spare capacity: zeroing 16 KiB first would cost more
    // than the rest of a small request.
    // SAFETY: `fd` is the open connection owned by `conn`; recv writes at
    // most `buf.capacity()` bytes into the buffer's spare capacity, which
    // is that long and owned by `buf`.
    let n = unsafe {
        libc::recv(
            fd,
            buf.spare_capacity_mut().as_mut_ptr().cast(),
            buf.capacity(),
            libc::MSG_DONTWAIT,
        )
    };
    if n > 0 {
        // SAFETY: recv initialised the first `n` bytes (n ≤ capacity).
        unsafe { buf.set_len(n as usize) };
    }
    // Parse a copy: if the request is incomplete, the ordinary path starts
    // again from the same bytes.
    let mut probe = buf.clone();
    let parsed = parse_head(kind, &mut probe, settings.max_vars);
    let Ok(Some(Parsed::Request {
        vars: raw,
        strip_script_name,
    })) = parsed
    else {
        return fallback(conn, kind, host, settings, buf).await;
    };
    let info = ConnInfo::new(None, None);
    // The length the request is served with: `normalise`'s (the last
    // CONTENT_LENGTH, if a peer sends two), so that the body split off
    // below is one the buffer holds.
    let Normalised {
        vars,
        content_length,
        bad_content_length,
        is_head,
        repeated_headers,
    } = normalise(raw, &info, strip_script_name);
    let len = content_length.unwrap_or(0);
    if len > INLINE_BODY_MAX || (probe.len() as u64) < len || bad_content_length {
        return fallback(conn, kind, host, settings, buf).await;
    }
    if over_limit_post(settings.limit_post, content_length) {
        return fallback(conn, kind, host, settings, buf).await;
    }
    let len = content_length.unwrap_or(0) as usize;
    let body = if len == 0 {
        RequestBody::Empty
    } else {
        RequestBody::Full(probe.split_to(len).freeze())
    };
    let version = status_line_version(&vars);
    let mut answering = std::pin::pin!(host.handle(super::oneshot::gateway_request(
        vars,
        is_head,
        repeated_headers,
        body,
        protocol
    )));
    // An app that takes long (a long-poll, a slow query) is watched for the
    // web server closing the connection, as its client left: the
    // connection joins the event loop then, not for every request (nor
    // is the timer made for an answer ready at once).
    let response = tokio::select! {
        biased;
        response = &mut answering => response,
        () = async { tokio::time::sleep(WATCH_AFTER).await } => {
            match conn {
                RawConn::Tcp(fd) => {
                    if let Ok(s) = tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd)) {
                        answer_watched(s, answering, protocol, &version, &settings).await;
                    }
                }
                RawConn::Unix(fd) => {
                    if let Ok(s) = tokio::net::UnixStream::from_std(
                        std::os::unix::net::UnixStream::from(fd),
                    ) {
                        answer_watched(s, answering, protocol, &version, &settings).await;
                    }
                }
            }
            return;
        }
    };
    // A whole response in one buffer goes out with one non-blocking send.
    let whole = match &response.body {
        // Never upgradable: no session to run.
        ResponseBody::Empty | ResponseBody::Upgrade(_) => Some(Bytes::new()),
        ResponseBody::Full(b) => Some(b.clone()),
        ResponseBody::Stream { .. } => None,
    };
    if let Some(body) = whole {
        let mut out = response_head(protocol, &version, &response);
        out.extend_from_slice(&body);
        let mut sent = 0;
        while sent < out.len() {
            use nix::sys::socket::{MsgFlags, send};
            match send(
                fd,
                &out[sent..],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) if n > 0 => sent += n,
                _ => break,
            }
        }
        if sent == out.len() {
            return; // dropping the descriptor closes the connection
        }
        let rest = out.split_off(sent);
        if let Some(wr) = register(conn) {
            let mut wr = StallGuard::new(wr, settings.timeout);
            let _ = wr.write_all(&rest).await;
            let _ = wr.shutdown().await;
        }
        return;
    }
    if let Some(wr) = register(conn) {
        let mut wr = StallGuard::new(wr, settings.timeout);
        // SAFETY: `files` is used only in the call below, while `wr` owns
        // the socket `fd`.
        let mut files = unsafe { SocketFiles::new(fd) }.with_stall_timeout(settings.timeout);
        write_response(&mut wr, &mut files, protocol, &version, response).await;
    }
}

/// The rest of a request whose app is taking long, on the connection now
/// in the event loop: its answer, unless the web server closes first.
async fn answer_watched<S>(
    stream: S,
    answering: std::pin::Pin<
        &mut (impl std::future::Future<Output = crate::request::Response> + ?Sized),
    >,
    protocol: crate::listen::Protocol,
    version: &[u8],
    settings: &GatewaySettings,
) where
    S: tokio::io::AsyncRead + AsyncWrite + std::os::fd::AsRawFd + Unpin,
{
    // SAFETY: `files` is used only below, while `wr` holds the stream that
    // owns the socket.
    let mut files =
        unsafe { SocketFiles::new(stream.as_raw_fd()) }.with_stall_timeout(settings.timeout);
    let (mut rd, wr) = tokio::io::split(stream);
    let mut wr = StallGuard::new(wr, settings.timeout);
    super::oneshot::answer_unless_closed(
        &mut rd, &mut wr, &mut files, answering, protocol, version,
    )
    .await;
}

/// The connection as an event-loop stream, to await what would block.
pub(super) fn register(conn: RawConn) -> Option<Box<dyn AsyncWriteUnpin>> {
    match conn {
        RawConn::Tcp(fd) => {
            let s = std::net::TcpStream::from(fd);
            Some(Box::new(tokio::net::TcpStream::from_std(s).ok()?))
        }
        RawConn::Unix(fd) => {
            let s = std::os::unix::net::UnixStream::from(fd);
            Some(Box::new(tokio::net::UnixStream::from_std(s).ok()?))
        }
    }
}

pub(super) trait AsyncWriteUnpin: AsyncWrite + Unpin + Send {}

impl<T: AsyncWrite + Unpin + Send> AsyncWriteUnpin for T {}

pub(super) async fn fallback(
    conn: RawConn,
    kind: OneShot,
    host: Arc<dyn Handler>,
    settings: Arc<GatewaySettings>,
    buf: BytesMut,
) {
    let info = ConnInfo::new(None, None);
    match conn {
        RawConn::Tcp(fd) => {
            if let Ok(s) = tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd)) {
                serve(s, kind, info, host, settings, buf).await;
            }
        }
        RawConn::Unix(fd) => {
            if let Ok(s) =
                tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))
            {
                serve(s, kind, info, host, settings, buf).await;
            }
        }
    }
}
