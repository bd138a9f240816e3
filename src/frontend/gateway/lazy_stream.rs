//! A gateway connection used with direct non-blocking system calls until
//! one would block, and only then registered with the event loop.
//!
//! nginx's FastCGI connections (without `fastcgi_keep_conn`) carry one
//! request each: it has arrived by the time the connection is accepted, and
//! the response fits the socket. Registering such a connection costs two
//! epoll_ctl calls (in and out) and a turn of the event loop before the
//! first read; read and written directly, it never touches the event loop.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// The connection: its descriptor, alone until a call would have blocked,
/// then watched by the event loop. It is the same descriptor throughout:
/// `SocketFiles` writes to its number.
pub struct LazyStream {
    state: State,
}

enum State {
    Direct(OwnedFd),
    Registered(AsyncFd<OwnedFd>),
    /// Only while `register` swaps the other two.
    Swapping,
}

impl LazyStream {
    /// `fd` must be a non-blocking connected socket (TCP or unix).
    pub fn new(fd: OwnedFd) -> LazyStream {
        LazyStream {
            state: State::Direct(fd),
        }
    }

    /// Registers the connection with the event loop. If that fails, the
    /// descriptor stays open and direct: it is closed only when the stream
    /// is dropped, never under another owner's feet.
    fn register(&mut self) -> io::Result<()> {
        let State::Direct(fd) = std::mem::replace(&mut self.state, State::Swapping) else {
            return Ok(());
        };
        // SAFETY: the AsyncFd takes the descriptor's owner with it, so the
        // descriptor stays open for as long as it is registered.
        match unsafe {
            AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE)
        } {
            Ok(registered) => {
                self.state = State::Registered(registered);
                Ok(())
            }
            Err(e) => {
                let (fd, e) = e.into_parts();
                self.state = State::Direct(fd);
                Err(e)
            }
        }
    }

    /// Calls `io` on the socket: at once while it is direct, and after
    /// registering if that would block; then when the event loop finds
    /// the socket ready (`interest`: READABLE or WRITABLE).
    fn poll_io<T>(
        &mut self,
        cx: &mut Context<'_>,
        interest: Interest,
        mut io: impl FnMut(RawFd) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        if let State::Direct(fd) = &self.state {
            match io(fd.as_raw_fd()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.register()?,
                done => return Poll::Ready(done),
            }
        }
        let State::Registered(registered) = &self.state else {
            unreachable!("registered above")
        };
        loop {
            let mut ready = ready!(if interest.is_readable() {
                registered.poll_read_ready(cx)
            } else {
                registered.poll_write_ready(cx)
            })?;
            if let Ok(done) = ready.try_io(|fd| io(fd.as_raw_fd())) {
                return Poll::Ready(done);
            }
        }
    }
}

impl AsRawFd for LazyStream {
    fn as_raw_fd(&self) -> RawFd {
        match &self.state {
            State::Direct(fd) => fd.as_raw_fd(),
            State::Registered(r) => r.get_ref().as_raw_fd(),
            State::Swapping => unreachable!("only within register"),
        }
    }
}

/// recv(2) into the unfilled part of `buf`, without waiting.
fn recv_into(fd: RawFd, buf: &mut ReadBuf<'_>) -> io::Result<()> {
    loop {
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
            return Ok(());
        }
        match Errno::last() {
            Errno::EINTR => {}
            e => return Err(e.into()),
        }
    }
}

/// send(2) of `bytes`, without waiting (and no SIGPIPE: a front end gone
/// is an error).
fn send_from(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    loop {
        match send(fd, bytes, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
            Err(Errno::EINTR) => {}
            r => return r.map_err(io::Error::from),
        }
    }
}

impl AsyncRead for LazyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.poll_io(cx, Interest::READABLE, |fd| recv_into(fd, buf))
    }
}

impl AsyncWrite for LazyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, Interest::WRITABLE, |fd| send_from(fd, bytes))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written straight to the socket: nothing is held back.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(
            nix::sys::socket::shutdown(self.as_raw_fd(), nix::sys::socket::Shutdown::Write)
                .map_err(io::Error::from),
        )
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
        (LazyStream::new(ours.into()), theirs)
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
            // Late: a reader that kept up with the writes from the start
            // let every one of them go through without blocking (a run
            // failed so). The 4 MiB cannot fit the socket's buffer meanwhile.
            std::thread::sleep(std::time::Duration::from_millis(200));
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
