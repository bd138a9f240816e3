//! What a connection knows of its socket, for every front end.

use std::net::SocketAddr;

use std::sync::Arc;

use bytes::Bytes;

use super::VarName;

/// What a connection knows about its socket, formatted once per connection
/// for the CGI variables of each of its requests.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// SERVER_NAME and SERVER_PORT when the request has no Host.
    local_name: Bytes,
    local_port: Bytes,
    /// SERVER_ADDR: the local IP address (none on unix sockets).
    local_ip: Option<Bytes>,
    /// REMOTE_ADDR and REMOTE_PORT (none on unix sockets).
    peer: Option<(Bytes, Bytes)>,
    peer_addr: Option<SocketAddr>,
    /// The socket's peer, when a PROXY protocol header named another
    /// client (`peer`): the balancer.
    proxied_by: Option<ProxiedBy>,
    /// The socket's own address (none on unix sockets).
    local_addr: Option<SocketAddr>,
    /// What the TLS handshake settled; none on a cleartext connection.
    tls: Option<Arc<TlsInfo>>,
}

/// Who sent a PROXY protocol header: the connection's own peer, which
/// settings that trust a proxy's headers (--forwarded-allow-ips) trust,
/// not the client the header names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxiedBy {
    Ip(std::net::IpAddr),
    /// A balancer on a unix socket, trusted as any unix socket's client
    /// is (Gunicorn trusts it).
    UnixSocket,
}

/// What a connection's TLS handshake settled, as the CGI variables every
/// request on it gets (`HTTPS`, `SSL_PROTOCOL`, `SSL_CLIENT_VERIFY`...).
#[derive(Debug, Default)]
pub struct TlsInfo {
    pub vars: Vec<(VarName, Bytes)>,
}

/// The TLS cipher suites oxgate can negotiate: OpenSSL's name (what
/// `SSL_CIPHER` says, as under Apache and nginx), the IANA name (rustls's),
/// and the IANA number (the ASGI `tls` extension's `cipher_suite`).
pub const TLS_SUITES: &[(&str, &str, u16)] = &[
    ("TLS_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256", 0x1301),
    ("TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384", 0x1302),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS13_CHACHA20_POLY1305_SHA256",
        0x1303,
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xC02B,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        0xC02C,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        0xC02F,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        0xC030,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        0xCCA8,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        0xCCA9,
    ),
];

/// `SSL_PROTOCOL`'s value as the TLS version number (`TLSv1.3`: 0x0304).
pub fn tls_version_code(name: &[u8]) -> Option<u16> {
    match name {
        b"TLSv1.3" => Some(0x0304),
        b"TLSv1.2" => Some(0x0303),
        _ => None,
    }
}

impl ConnInfo {
    /// The same connection, with the client a PROXY header named.
    pub fn with_peer(self, peer: SocketAddr) -> ConnInfo {
        let peer = canonical(peer);
        ConnInfo {
            peer: Some((
                shared(peer.ip().to_string()),
                shared(peer.port().to_string()),
            )),
            peer_addr: Some(peer),
            proxied_by: Some(
                self.peer_addr
                    .map_or(ProxiedBy::UnixSocket, |p| ProxiedBy::Ip(p.ip())),
            ),
            ..self
        }
    }

    /// The same connection, over TLS.
    pub fn with_tls(self, tls: TlsInfo) -> ConnInfo {
        ConnInfo {
            tls: Some(Arc::new(tls)),
            ..self
        }
    }

    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_deref()
    }

    /// The client's address, unformatted (none on unix sockets).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    pub fn proxied_by(&self) -> Option<ProxiedBy> {
        self.proxied_by
    }

    pub fn local_name(&self) -> Bytes {
        self.local_name.clone()
    }

    pub fn local_port(&self) -> Bytes {
        self.local_port.clone()
    }

    /// The socket's own address: none on a unix socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The local IP address, formatted (none on unix sockets).
    pub fn local_ip(&self) -> Option<&Bytes> {
        self.local_ip.as_ref()
    }

    /// REMOTE_ADDR and REMOTE_PORT, formatted.
    pub fn peer(&self) -> Option<&(Bytes, Bytes)> {
        self.peer.as_ref()
    }

    pub fn new(local: Option<SocketAddr>, peer: Option<SocketAddr>) -> ConnInfo {
        let (local, peer) = (local.map(canonical), peer.map(canonical));
        let local_ip = local.map(|a| shared(a.ip().to_string()));
        ConnInfo {
            local_name: local_ip
                .clone()
                .unwrap_or_else(|| Bytes::from_static(b"localhost")),
            local_ip,
            local_port: local.map_or_else(
                || Bytes::from_static(b"80"),
                |a| shared(a.port().to_string()),
            ),
            peer: peer.map(|p| (shared(p.ip().to_string()), shared(p.port().to_string()))),
            peer_addr: peer,
            proxied_by: None,
            local_addr: local,
            tls: None,
        }
    }
}

/// An IPv4 client of a dual-stack socket (`[::]:8000`) as the IPv4 address
/// it is (127.0.0.1, not ::ffff:127.0.0.1), as uWSGI names it: allow-lists,
/// Django's INTERNAL_IPS and log parsers expect that.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// A value every request of the connection gets a copy of: reference
/// counted from the start. A `Bytes` made from a `String` allocates its
/// count at its first clone, which would be at the first request, amid
/// memory the request frees: the small block would outlive it there, and
/// keep a page of it resident while the connection is idle.
fn shared(text: String) -> Bytes {
    Bytes::from_owner(text)
}
