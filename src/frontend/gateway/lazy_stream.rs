//! A gateway connection used with direct non-blocking system calls until
//! one would block, and only then registered with the event loop.
//!
//! nginx's FastCGI connections (without `fastcgi_keep_conn`) carry one
//! request each: it has arrived by the time the connection is accepted, and
//! the response fits the socket. Registering such a connection costs two
//! epoll_ctl calls (in and out) and a turn of the event loop before the
//! first read; read and written directly, it never touches the event loop.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::fast_path::RawConn;

/// The connection: its descriptor alone, or its event-loop stream once a
/// call would have blocked.
pub struct LazyStream {
    state: State,
}

enum State {
    Direct(RawConn),
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
    /// Only while `register` swaps the others.
    Swapping,
}

impl LazyStream {
    /// `conn` must be a non-blocking connected socket.
    pub fn new(conn: RawConn) -> LazyStream {
        LazyStream {
            state: State::Direct(conn),
        }
    }

    /// Registers the connection with the event loop: from now on, every
    /// call goes through its tokio stream.
    fn register(&mut self) -> io::Result<()> {
        let State::Direct(conn) = std::mem::replace(&mut self.state, State::Swapping) else {
            return Ok(());
        };
        self.state = match conn {
            RawConn::Tcp(fd) => State::Tcp(tokio::net::TcpStream::from_std(
                std::net::TcpStream::from(fd),
            )?),
            RawConn::Unix(fd) => State::Unix(tokio::net::UnixStream::from_std(
                std::os::unix::net::UnixStream::from(fd),
            )?),
        };
        Ok(())
    }

    fn direct_fd(&self) -> Option<RawFd> {
        match &self.state {
            State::Direct(RawConn::Tcp(fd) | RawConn::Unix(fd)) => Some(fd.as_raw_fd()),
            _ => None,
        }
    }
}

impl AsRawFd for LazyStream {
    fn as_raw_fd(&self) -> RawFd {
        match &self.state {
            State::Direct(RawConn::Tcp(fd) | RawConn::Unix(fd)) => fd.as_raw_fd(),
            State::Tcp(s) => s.as_raw_fd(),
            State::Unix(s) => s.as_raw_fd(),
            State::Swapping => -1,
        }
    }
}

/// A call that would block: the connection is to be registered.
fn would_block(e: &Errno) -> bool {
    *e == Errno::EAGAIN
}

impl AsyncRead for LazyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while let Some(fd) = self.direct_fd() {
            // SAFETY: recv writes at most `unfilled.len()` bytes into the
            // buffer's unfilled part, which is that long; only the bytes it
            // wrote are then marked initialised and filled.
            let n = unsafe {
                let unfilled = buf.unfilled_mut();
                libc::recv(
                    fd,
                    unfilled.as_mut_ptr().cast(),
                    unfilled.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                let n = n as usize;
                // SAFETY: recv initialised the first `n` unfilled bytes.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            match Errno::last() {
                Errno::EINTR => {}
                e if would_block(&e) => self.register()?,
                e => return Poll::Ready(Err(e.into())),
            }
        }
        match &mut self.state {
            State::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            State::Unix(s) => Pin::new(s).poll_read(cx, buf),
            _ => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for LazyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        while let Some(fd) = self.direct_fd() {
            match send(fd, bytes, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(Errno::EINTR) => {}
                Err(e) if would_block(&e) => self.register()?,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        match &mut self.state {
            State::Tcp(s) => Pin::new(s).poll_write(cx, bytes),
            State::Unix(s) => Pin::new(s).poll_write(cx, bytes),
            _ => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.state {
            State::Tcp(s) => Pin::new(s).poll_flush(cx),
            State::Unix(s) => Pin::new(s).poll_flush(cx),
            // Written straight to the socket: nothing is held back.
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(fd) = self.direct_fd() {
            return Poll::Ready(
                nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Write)
                    .map_err(io::Error::from),
            );
        }
        match &mut self.state {
            State::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            State::Unix(s) => Pin::new(s).poll_shutdown(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (LazyStream, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        (LazyStream::new(RawConn::Unix(ours.into())), theirs)
    }

    fn direct(s: &LazyStream) -> bool {
        matches!(s.state, State::Direct(_))
    }

    #[tokio::test]
    async fn a_request_that_has_arrived_is_served_without_the_event_loop() {
        let (mut lazy, mut peer) = pair();
        peer.write_all(b"request").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(lazy.read(&mut buf).await.unwrap(), 7);
        assert_eq!(&buf[..7], b"request");
        lazy.write_all(b"response").await.unwrap();
        lazy.shutdown().await.unwrap();
        assert!(direct(&lazy));
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap(); // the shutdown ends it
        assert_eq!(got, b"response");
    }

    #[tokio::test]
    async fn a_read_that_would_block_registers_and_waits() {
        let (mut lazy, mut peer) = pair();
        let mut buf = [0u8; 64];
        let pending = std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut buf);
            Poll::Ready(Pin::new(&mut lazy).poll_read(cx, &mut rb).is_pending())
        })
        .await;
        assert!(pending);
        assert!(!direct(&lazy));
        peer.write_all(b"later").unwrap();
        assert_eq!(lazy.read(&mut buf).await.unwrap(), 5);
        assert_eq!(&buf[..5], b"later");
        drop(peer);
        assert_eq!(lazy.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_write_past_the_socket_buffer_registers_and_completes() {
        let (mut lazy, mut peer) = pair();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            got
        });
        let big: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        lazy.write_all(&big).await.unwrap();
        assert!(!direct(&lazy), "4 MiB fit a unix socket's buffer");
        lazy.shutdown().await.unwrap();
        drop(lazy);
        assert!(reader.join().unwrap() == big);
    }

    #[tokio::test]
    async fn the_end_of_the_peer_is_read_directly() {
        let (mut lazy, peer) = pair();
        drop(peer);
        let mut buf = [0u8; 8];
        assert_eq!(lazy.read(&mut buf).await.unwrap(), 0);
        assert!(direct(&lazy));
    }
}
