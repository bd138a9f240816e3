//! A deadline on writes that make no progress: a front end that stops
//! reading a response must not hold the connection, and with it the
//! response's app thread, for ever (as the HTTP front end's watchdog cuts
//! a client that takes no bytes for `--socket-timeout`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::Sleep;

/// The error a stalled write ends with.
pub(super) fn stalled(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "the front end took no bytes of the response for {}s (--socket-timeout)",
            timeout.as_secs()
        ),
    )
}

/// A writer whose writes fail once the socket has taken nothing for
/// `timeout`; the clock starts when a write finds it full, and any byte
/// taken stops it.
pub(super) struct StallGuard<W> {
    inner: W,
    timeout: Duration,
    since: Option<Pin<Box<Sleep>>>,
}

impl<W> StallGuard<W> {
    pub(super) fn new(inner: W, timeout: Duration) -> StallGuard<W> {
        StallGuard {
            inner,
            timeout,
            since: None,
        }
    }

    /// Pending from the inner writer: an error once that has lasted the
    /// timeout.
    fn waited<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => {
                let timeout = self.timeout;
                let since = self
                    .since
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match since.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(stalled(timeout))),
                    Poll::Pending => Poll::Pending,
                }
            }
            done => {
                self.since = None;
                done
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for StallGuard<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.waited(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.waited(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.waited(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.waited(cx, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_reader_that_stops_fails_the_write_and_one_that_reads_does_not() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut guarded = StallGuard::new(ours, Duration::from_secs(2));
        // Read a piece every 100 ms: far from 2 s without progress, though
        // the whole write takes longer than that.
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 1024];
            while got < 8192 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                got += theirs.read(&mut buf).await.unwrap();
            }
            theirs
        });
        guarded.write_all(&[7u8; 8192]).await.unwrap();
        let _theirs = reader.await.unwrap();
        // Now nobody reads: the write fails after the timeout.
        let e = guarded.write_all(&[7u8; 4096]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("--socket-timeout"), "{e}");
    }
}
