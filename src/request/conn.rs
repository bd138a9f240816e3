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
    /// REMOTE_ADDR and REMOTE_PORT (none on unix sockets).
    peer: Option<(Bytes, Bytes)>,
    peer_addr: Option<SocketAddr>,
    /// What the TLS handshake settled; none on a cleartext connection.
    tls: Option<Arc<TlsInfo>>,
}

/// What a connection's TLS handshake settled, as the CGI variables every
/// request on it gets (`HTTPS`, `SSL_PROTOCOL`, `SSL_CLIENT_VERIFY`...).
#[derive(Debug, Default)]
pub struct TlsInfo {
    pub vars: Vec<(VarName, Bytes)>,
}

impl ConnInfo {
    /// The same connection, with the client a PROXY header named.
    pub fn with_peer(self, peer: SocketAddr) -> ConnInfo {
        ConnInfo {
            peer: Some((
                Bytes::from(peer.ip().to_string()),
                Bytes::from(peer.port().to_string()),
            )),
            peer_addr: Some(peer),
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

    pub fn local_name(&self) -> Bytes {
        self.local_name.clone()
    }

    pub fn local_port(&self) -> Bytes {
        self.local_port.clone()
    }

    /// REMOTE_ADDR and REMOTE_PORT, formatted.
    pub fn peer(&self) -> Option<&(Bytes, Bytes)> {
        self.peer.as_ref()
    }

    pub fn new(local: Option<SocketAddr>, peer: Option<SocketAddr>) -> ConnInfo {
        ConnInfo {
            local_name: local.map_or_else(
                || Bytes::from_static(b"localhost"),
                |a| Bytes::from(a.ip().to_string()),
            ),
            local_port: local.map_or_else(
                || Bytes::from_static(b"80"),
                |a| Bytes::from(a.port().to_string()),
            ),
            peer: peer.map(|p| {
                (
                    Bytes::from(p.ip().to_string()),
                    Bytes::from(p.port().to_string()),
                )
            }),
            peer_addr: peer,
            tls: None,
        }
    }
}
