//! The streams a connection can be: TCP or unix, with their pending
//! bytes readable without consuming them (to look at a request line or a
//! PROXY header before hyper does).

use std::os::fd::AsRawFd;

use tokio::io::{AsyncRead, AsyncWrite};

/// A connected stream whose pending bytes can be looked at without
/// consuming them.
pub trait Peek:
    AsyncRead + AsyncWrite + super::sendfile::SendFile + AsRawFd + Unpin + Send + Sync + 'static
{
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl Peek for tokio::net::TcpStream {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        tokio::net::TcpStream::readable(self)
    }
}

impl Peek for tokio::net::UnixStream {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        tokio::net::UnixStream::readable(self)
    }
}
