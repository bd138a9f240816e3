//! The PROXY protocol (HAProxy's, v1 text and v2 binary): a balancer that
//! passes TCP through (HAProxy's `send-proxy`, stunnel, AWS NLB) puts the
//! client's address in a header before the first request. `ppp` parses it;
//! this module finds it on the connection, takes exactly its bytes off,
//! and leaves the rest to hyper.

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::socket::{MsgFlags, recv};
use ppp::{HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;

use super::peek::Peek;
use crate::request::wrappers::Trusted;

/// `--proxy-protocol`: which versions are read, and from whom.
#[derive(Clone)]
pub struct ProxyProtocol {
    pub v1: bool,
    pub v2: bool,
    /// `--proxy-allow-from`: the peers whose header is believed (a unix
    /// socket's always are).
    pub allow: Vec<Trusted>,
}

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// Room for a header: a v1 line is at most 107 bytes; a v2 one carries
/// TLVs (TLS details, a unique id) besides the addresses.
const MAX_HEADER: usize = 1024;

impl ProxyProtocol {
    pub fn believes(&self, peer: Option<SocketAddr>) -> bool {
        peer.is_none_or(|p| self.allow.iter().any(|t| t.contains(p.ip())))
    }

    /// Whether the connection starts with what begins a PROXY header
    /// (a peer's whose header is not believed: said, rather than taken for
    /// a malformed request).
    pub async fn starts_with_header<S: Peek>(stream: &S) -> bool {
        let mut buf = [0u8; 12];
        loop {
            if stream.readable().await.is_err() {
                return false;
            }
            let n = match recv(
                stream.as_raw_fd(),
                &mut buf,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Err(_) => return false,
            };
            let seen = &buf[..n];
            if seen.starts_with(V1_PREFIX) || seen.starts_with(V2_SIGNATURE) {
                return true;
            }
            let may_be = |sig: &[u8]| sig.starts_with(&seen[..n.min(sig.len())]);
            if !may_be(V1_PREFIX) && !may_be(V2_SIGNATURE) {
                return false;
            }
            // A few bytes that may yet be one: more.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Reads the header, if the connection starts with one: the client's
    /// address it names (`None` for a header without one: LOCAL, UNKNOWN,
    /// or a unix client). Bytes that do not start a header are left alone:
    /// the header is optional, as in Gunicorn.
    pub async fn read<S: Peek>(&self, stream: &mut S) -> Result<Option<SocketAddr>, &'static str> {
        let mut buf = vec![0u8; MAX_HEADER];
        loop {
            stream
                .readable()
                .await
                .map_err(|_| "the connection failed")?;
            let n = match recv(
                stream.as_raw_fd(),
                &mut buf,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => return Ok(None), // closed: hyper sees it
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Err(_) => return Err("the connection failed"),
            };
            let seen = &buf[..n];
            let starts = |sig: &[u8]| sig.starts_with(&seen[..n.min(sig.len())]);
            let (v1, v2) = (starts(V1_PREFIX), starts(V2_SIGNATURE));
            if !v1 && !v2 {
                return Ok(None);
            }
            // Whole, by the framing of its version (a part may parse as
            // an error, or as incomplete forever): v1 ends with CRLF within
            // 107 bytes; v2 is 16 bytes and the length they give.
            let whole = if v2 {
                n >= 16 && n >= 16 + usize::from(u16::from_be_bytes([seen[14], seen[15]]))
            } else {
                seen.windows(2).any(|w| w == b"\r\n") || n >= 108
            };
            if !whole {
                if n == MAX_HEADER {
                    return Err("a PROXY header too long");
                }
                // Peeking leaves the bytes readable: wait for more rather
                // than spin on them. (A header split over packets is rare.)
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let header = HeaderResult::parse(seen);
            if header.is_incomplete() {
                return Err("an invalid PROXY header");
            }
            let (len, source) = match header {
                HeaderResult::V1(Ok(h)) if self.v1 => (h.header.len(), v1_source(&h.addresses)),
                HeaderResult::V2(Ok(h)) if self.v2 => (h.len(), v2_source(&h)),
                HeaderResult::V1(Ok(_)) => return Err("a PROXY v1 header, and only v2 is read"),
                HeaderResult::V2(Ok(_)) => return Err("a PROXY v2 header, and only v1 is read"),
                HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => {
                    return Err("an invalid PROXY header");
                }
            };
            let mut header = vec![0u8; len];
            stream
                .read_exact(&mut header)
                .await
                .map_err(|_| "the connection failed")?;
            return Ok(source);
        }
    }
}

fn v1_source(a: &ppp::v1::Addresses) -> Option<SocketAddr> {
    match a {
        ppp::v1::Addresses::Tcp4(ip) => Some((ip.source_address, ip.source_port).into()),
        ppp::v1::Addresses::Tcp6(ip) => Some((ip.source_address, ip.source_port).into()),
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_source(h: &ppp::v2::Header<'_>) -> Option<SocketAddr> {
    // LOCAL: the balancer's own connection (a health check): no client.
    if h.command == ppp::v2::Command::Local {
        return None;
    }
    match &h.addresses {
        ppp::v2::Addresses::IPv4(ip) => Some((ip.source_address, ip.source_port).into()),
        ppp::v2::Addresses::IPv6(ip) => Some((ip.source_address, ip.source_port).into()),
        _ => None,
    }
}
