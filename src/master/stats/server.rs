//! The stats listeners and their clients: accepted, read and answered as
//! `poll` finds them ready.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::snapshot::Want;
use crate::config::Config;
use crate::listen::{self, Address, Listener};
use crate::master::handover::{HandedStats, set_cloexec};

/// How long a stats client may take to send its request and read the answer.
const CLIENT_TIME: Duration = Duration::from_secs(3);
/// Clients served at once; more wait in the listen queue.
const MAX_CLIENTS: usize = 32;
/// The largest HTTP request head accepted.
const MAX_HEAD: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// uWSGI's stats socket: the JSON on connect, then close.
    Raw,
    /// The same over HTTP, with /metrics beside it.
    Http,
    /// `--metrics`: Prometheus text over HTTP.
    Metrics,
}

struct Server {
    listener: Listener,
    kind: Kind,
    /// As configured (without `http://`): what a handover matches on.
    addr: String,
}

enum Stream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn shutdown_write(&self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }
}

impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

struct Client {
    stream: Stream,
    kind: Kind,
    /// The request head so far (HTTP); `None` once answered.
    head: Option<Vec<u8>>,
    out: Vec<u8>,
    sent: usize,
    /// All sent and the writing side shut: what the client still sends
    /// is read, until it closes. Closed with its request unread, the
    /// socket would be reset, and the reset can reach the client before it
    /// has read the answer (`curl --http0.9` to the plain socket lost it).
    draining: bool,
    deadline: Instant,
}

#[derive(Default)]
pub struct Stats {
    servers: Vec<Server>,
    clients: Vec<Client>,
}

impl Stats {
    /// Binds `--stats` and `--metrics`, adopting the listeners a previous
    /// master image handed over for the same addresses (closing the rest).
    pub fn bind(cfg: &Config, handed: Vec<HandedStats>) -> Result<Stats, String> {
        // Owned at once, so that those not adopted are closed on every
        // return.
        let mut handed: Vec<(String, OwnedFd)> = handed
            .into_iter()
            .map(|h| {
                // SAFETY: the previous image left this descriptor open for
                // this one and no longer uses it; it is wrapped once, here,
                // so it has one owner.
                (h.addr, unsafe { OwnedFd::from_raw_fd(h.fd) })
            })
            .collect();
        let mut stats = Stats::default();
        let wanted = [
            (
                cfg.stats.addr.as_deref(),
                if cfg.stats.http {
                    Kind::Http
                } else {
                    Kind::Raw
                },
            ),
            (cfg.stats.metrics.as_deref(), Kind::Metrics),
        ];
        for (addr, kind) in wanted {
            let Some(addr) = addr else { continue };
            let addr = addr.strip_prefix("http://").unwrap_or(addr);
            let parsed = listen::parse(addr)?;
            let adopted = handed
                .iter()
                .position(|(a, _)| a == addr)
                .map(|i| handed.swap_remove(i))
                .and_then(|(_, fd)| adopt(fd, addr, &parsed));
            let listener = match adopted {
                Some(l) => l,
                None => listen::bind(&parsed, 64, 0o660, false)
                    .map_err(|e| format!("stats server: {e}"))?,
            };
            // (Not the metrics: counters alone, no request or client,
            // scraped from other hosts by design.)
            if kind != Kind::Metrics
                && let Listener::Tcp(t) = &listener
                && t.local_addr().is_ok_and(|a| !a.ip().is_loopback())
            {
                crate::say!(
                    "oxgate: warning: the stats server on {addr} is reachable from other hosts, and \
                     shows every worker's requests and clients; bind it to 127.0.0.1 or a unix socket"
                );
            }
            stats.servers.push(Server {
                listener,
                kind,
                addr: addr.to_string(),
            });
        }
        Ok(stats)
    }

    /// Their descriptors and addresses, for the next image: left open
    /// across exec.
    pub fn hand_over(&self) -> Vec<HandedStats> {
        self.servers
            .iter()
            .map(|server| {
                let fd = server.listener.raw_fd();
                set_cloexec(fd, false);
                HandedStats {
                    fd,
                    addr: server.addr.clone(),
                }
            })
            .collect()
    }

    /// The descriptors to poll: listeners, then clients.
    pub fn poll_fds(&self) -> Vec<libc::pollfd> {
        let listeners = self.servers.iter().map(|s| libc::pollfd {
            fd: match &s.listener {
                Listener::Tcp(t) => t.as_raw_fd(),
                Listener::Unix(u, _) => u.as_raw_fd(),
            },
            events: if self.clients.len() < MAX_CLIENTS {
                libc::POLLIN
            } else {
                0
            },
            revents: 0,
        });
        let clients = self.clients.iter().map(|c| libc::pollfd {
            fd: c.stream.fd(),
            events: if c.head.is_some() || c.draining {
                libc::POLLIN
            } else {
                libc::POLLOUT
            },
            revents: 0,
        });
        listeners.chain(clients).collect()
    }

    /// Accepts, reads and answers what `poll` found ready.
    pub fn serve(&mut self, ready: &[libc::pollfd], render: &dyn Fn(Want) -> String) {
        let now = Instant::now();
        let (servers, clients) = ready.split_at(self.servers.len().min(ready.len()));
        for (i, c) in clients.iter().enumerate().rev() {
            if c.revents == 0 {
                continue;
            }
            let Some(client) = self.clients.get_mut(i) else {
                continue;
            };
            if client.fd_matches(c.fd) && !client.progress(render) {
                self.clients.remove(i);
            }
        }
        self.clients.retain(|c| c.deadline > now);
        for (server, p) in self.servers.iter().zip(servers) {
            if p.revents & libc::POLLIN == 0 {
                continue;
            }
            for _ in 0..MAX_CLIENTS {
                if self.clients.len() >= MAX_CLIENTS {
                    break;
                }
                let stream = match &server.listener {
                    Listener::Tcp(t) => t.accept().map(|(s, _)| Stream::Tcp(s)),
                    Listener::Unix(u, _) => u.accept().map(|(s, _)| Stream::Unix(s)),
                };
                let Ok(stream) = stream else { break };
                let nonblocking = match &stream {
                    Stream::Tcp(s) => s.set_nonblocking(true),
                    Stream::Unix(s) => s.set_nonblocking(true),
                };
                if nonblocking.is_err() {
                    continue;
                }
                let mut client = Client {
                    stream,
                    kind: server.kind,
                    head: (server.kind != Kind::Raw).then(Vec::new),
                    out: Vec::new(),
                    sent: 0,
                    draining: false,
                    deadline: now + CLIENT_TIME,
                };
                if server.kind == Kind::Raw {
                    client.out = render(Want::Json).into_bytes();
                }
                if client.progress(render) {
                    self.clients.push(client);
                }
            }
        }
    }

    /// Serves the clients already accepted, for `within` at most, without
    /// accepting more: a reload's exec would close them mid-exchange (a
    /// request left unread there resets the connection). The listeners
    /// pass to the next image, whose clients wait in their queues.
    pub fn finish_clients(&mut self, within: Duration, render: &dyn Fn(Want) -> String) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let end = Instant::now() + within;
        while self.has_clients() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let wanted = self.poll_fds();
            let mut fds: Vec<PollFd> = self
                .clients
                .iter()
                .zip(&wanted[self.servers.len()..])
                .map(|(c, p)| {
                    PollFd::new(c.stream.as_fd(), PollFlags::from_bits_truncate(p.events))
                })
                .collect();
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            if poll(&mut fds, PollTimeout::from(ms)).is_err() {
                break;
            }
            let revents: Vec<i16> = fds
                .iter()
                .map(|f| f.revents().map_or(0, |r| r.bits()))
                .collect();
            drop(fds);
            let mut ready = wanted;
            for p in &mut ready[..self.servers.len()] {
                p.revents = 0;
            }
            for (p, r) in ready[self.servers.len()..].iter_mut().zip(revents) {
                p.revents = r;
            }
            self.serve(&ready, render);
        }
    }

    pub fn has_clients(&self) -> bool {
        !self.clients.is_empty()
    }
}

/// A handed-over stats listener, as `Listener` (keeping a unix socket's
/// path, which is this configuration's).
fn adopt(fd: OwnedFd, name: &str, addr: &Address) -> Option<Listener> {
    let raw = fd.as_raw_fd();
    match listen::listener_of(fd) {
        Ok(Listener::Unix(l, _)) => Some(Listener::Unix(
            l,
            match addr {
                Address::Unix(p) => Some(p.clone()),
                _ => None,
            },
        )),
        Ok(l) => Some(l),
        Err(e) => {
            crate::say!(
                "oxgate: the stats socket {name} handed over on descriptor {raw}: {e}; binding it again"
            );
            None
        }
    }
}

impl Client {
    fn fd_matches(&self, fd: RawFd) -> bool {
        self.stream.fd() == fd
    }

    /// Moves the exchange on; false once it is over.
    fn progress(&mut self, render: &dyn Fn(Want) -> String) -> bool {
        if self.draining {
            let mut buf = [0u8; 2048];
            // A little at a time: a client that keeps sending does not
            // hold the master's loop (its deadline ends it).
            for _ in 0..32 {
                match self.stream.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            return true;
        }
        if let Some(head) = &mut self.head {
            let mut buf = [0u8; 2048];
            loop {
                match self.stream.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return false,
                }
                if head.len() > MAX_HEAD {
                    break;
                }
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let (status, ctype, body) = match req.parse(head) {
                Ok(httparse::Status::Partial) if head.len() <= MAX_HEAD => return true,
                Ok(httparse::Status::Complete(_)) => {
                    let path = req.path.unwrap_or("/");
                    let path = path.split('?').next().unwrap_or(path);
                    if self.kind == Kind::Metrics || path == "/metrics" {
                        (
                            "200 OK",
                            "text/plain; version=0.0.4; charset=utf-8",
                            render(Want::Metrics),
                        )
                    } else {
                        ("200 OK", "application/json", render(Want::Json))
                    }
                }
                _ => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
            };
            self.head = None;
            self.out = format!(
                "HTTP/1.0 {status}\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes();
        }
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.stream.shutdown_write().is_err() {
            return false;
        }
        self.draining = true;
        self.progress(render)
    }
}
