//! The stats server (`--stats`, `--stats-http`) and the Prometheus metrics
//! (`/metrics` on the stats HTTP server, or `--metrics ADDR`), served by the
//! master from the scoreboard.
//!
//! The JSON is uWSGI's (core/master_utils.c), field for field, so the real
//! `uwsgitop` reads it; each core also carries the request it is running.
//! Connections are non-blocking and polled by the master's loop: a slow
//! client can never stall supervision.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::scoreboard::{BUCKETS, CORES, Cause, LATENCY_BOUNDS_US, Scoreboard};
use crate::config::Config;
use crate::listen::{self, Listener, Protocol, Socket};
use crate::sys::clock::now_us;

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
}

struct Client {
    stream: Stream,
    kind: Kind,
    /// The request head so far (HTTP); `None` once answered.
    head: Option<Vec<u8>>,
    out: Vec<u8>,
    sent: usize,
    deadline: Instant,
}

/// A worker as the master sees it, for the stats.
pub struct WorkerView {
    pub id: u32,
    pub pid: i32,
    pub slot: usize,
    pub ready: bool,
    pub stopping: bool,
}

/// What a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Json,
    Metrics,
}

/// What the stats are made from.
pub struct Snapshot<'a> {
    pub cfg: &'a Config,
    pub sb: &'a Scoreboard,
    pub workers: Vec<WorkerView>,
    pub sockets: &'a [Socket],
}

#[derive(Default)]
pub struct Stats {
    servers: Vec<Server>,
    clients: Vec<Client>,
}

impl Stats {
    /// Binds `--stats` and `--metrics`.
    pub fn bind(cfg: &Config) -> Result<Stats, String> {
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
            let listener =
                listen::bind(&parsed, 64, None).map_err(|e| format!("stats server: {e}"))?;
            stats.servers.push(Server { listener, kind });
        }
        Ok(stats)
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
            events: if c.head.is_some() {
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

    pub fn has_clients(&self) -> bool {
        !self.clients.is_empty()
    }
}

impl Client {
    fn fd_matches(&self, fd: RawFd) -> bool {
        self.stream.fd() == fd
    }

    /// Moves the exchange on; false once it is over.
    fn progress(&mut self, render: &dyn Fn(Want) -> String) -> bool {
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
        false
    }
}

/// The accept queue of a listener now, and its limit: TCP_INFO for TCP,
/// sock_diag for unix sockets.
fn listen_queue(s: &Socket) -> (u64, u64) {
    let t = match &s.listener {
        Listener::Tcp(t) => t,
        Listener::Unix(u, _) => return unix_queue(u.as_raw_fd()).unwrap_or((0, 0)),
    };
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            t.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return (0, 0);
    }
    (u64::from(info.tcpi_unacked), u64::from(info.tcpi_sacked))
}

/// A listening unix socket's queue, asked of the kernel by inode over
/// NETLINK_SOCK_DIAG (UNIX_DIAG_RQLEN: pending connections, backlog).
fn unix_queue(fd: RawFd) -> Option<(u64, u64)> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_RQLEN: u32 = 0x10;
    const UNIX_DIAG_RQLEN: u16 = 4;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    let nl = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if nl < 0 {
        return None;
    }
    let nl = unsafe { std::os::fd::OwnedFd::from_raw_fd(nl) };
    // nlmsghdr (16 bytes) + unix_diag_req (24 bytes)
    let mut req = [0u8; 40];
    req[0..4].copy_from_slice(&40u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[16] = libc::AF_UNIX as u8;
    req[20..24].copy_from_slice(&(1u32 << 10).to_ne_bytes()); // TCP_LISTEN
    req[24..28].copy_from_slice(&(st.st_ino as u32).to_ne_bytes());
    req[28..32].copy_from_slice(&UDIAG_SHOW_RQLEN.to_ne_bytes());
    req[32..40].copy_from_slice(&[0xff; 8]); // no cookie
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    unsafe {
        libc::setsockopt(
            nl.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        if libc::send(nl.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) != req.len() as isize {
            return None;
        }
    }
    let mut buf = [0u8; 1024];
    let n = unsafe { libc::recv(nl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 16 + 16 {
        return None;
    }
    let msg = &buf[..n as usize];
    let kind = u16::from_ne_bytes([msg[4], msg[5]]);
    if kind != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    // Attributes follow the 16-byte unix_diag_msg.
    let mut at = 32;
    while at + 4 <= msg.len() {
        let len = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]);
        if len < 4 || at + len > msg.len() {
            break;
        }
        if kind == UNIX_DIAG_RQLEN && len >= 12 {
            let word = |i: usize| u32::from_ne_bytes(msg[i..i + 4].try_into().expect("4 bytes"));
            return Some((u64::from(word(at + 4)), u64::from(word(at + 8))));
        }
        at += len.next_multiple_of(4);
    }
    None
}

/// "GET /slow from 10.0.0.1" back into its parts.
fn split_info(info: &str) -> (String, String, String) {
    let (request, client) = info.rsplit_once(" from ").unwrap_or((info, ""));
    let (method, uri) = request.split_once(' ').unwrap_or((request, ""));
    (method.to_string(), uri.to_string(), client.to_string())
}

fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// uWSGI's stats document.
pub fn render_json(s: &Snapshot<'_>) -> String {
    let threads = s.cfg.threads.min(CORES);
    let now = now_us();
    let wall_now = crate::sys::clock::unix_now();
    let queues: Vec<(u64, u64)> = s.sockets.iter().map(listen_queue).collect();
    let lq = queues.iter().map(|q| q.0).max().unwrap_or(0);
    let mut workers: Vec<&WorkerView> = s.workers.iter().collect();
    workers.sort_by_key(|w| (w.id, w.pid));
    let workers: Vec<Value> = workers
        .iter()
        .map(|w| {
            let slot = s.sb.slot(w.slot);
            let idstats = s.sb.id_stats(w.id);
            let c = &slot.counters;
            let (vsz, rss) = crate::sys::procfs::memory(Some(w.pid));
            let cores: Vec<Value> = slot.cores[..threads]
                .iter()
                .enumerate()
                .map(|(i, core)| {
                    let started = core.started_us.load(Ordering::Acquire);
                    let busy = started != 0;
                    let mut v = json!({
                        "id": i,
                        "requests": load(&core.requests),
                        "static_requests": 0,
                        "routed_requests": 0,
                        "offloaded_requests": 0,
                        "write_errors": 0,
                        "read_errors": 0,
                        "in_request": u8::from(busy),
                        "vars": [],
                        "req_info": {},
                    });
                    if busy {
                        let ran_us = now.saturating_sub(started);
                        let (method, uri, client) = split_info(&core.info());
                        v["req_info"] = json!({
                            "request_start": wall_now.saturating_sub(ran_us / 1_000_000),
                        });
                        // Beyond uWSGI: what the core runs, and for how long.
                        v["request"] = json!({
                            "method": method,
                            "uri": uri,
                            "client": client,
                            "running_ms": ran_us / 1000,
                        });
                    }
                    v
                })
                .collect();
            let busy = slot.cores[..threads]
                .iter()
                .any(|c| c.started_us.load(Ordering::Acquire) != 0);
            let requests = load(&c.requests);
            let exceptions = load(&c.exceptions);
            json!({
                "id": w.id,
                "pid": w.pid,
                "accepting": u8::from(w.ready && !w.stopping),
                "requests": load(&idstats.requests) + requests,
                "delta_requests": requests,
                "exceptions": load(&idstats.exceptions) + exceptions,
                "harakiri_count": load(&idstats.harakiri),
                "signals": 0,
                "signal_queue": 0,
                "status": if busy { "busy" } else { "idle" },
                "rss": rss,
                "vsz": vsz,
                "running_time": load(&idstats.rt_us) + load(&c.rt_us),
                "last_spawn": load(&slot.born),
                "respawn_count": load(&idstats.respawns),
                "tx": load(&idstats.tx) + load(&c.tx),
                "avg_rt": load(&slot.avg_rt),
                "apps": [{
                    "id": 0,
                    "modifier1": 0,
                    "mountpoint": "",
                    "startup_time": 0,
                    "requests": requests,
                    "exceptions": exceptions,
                    "chdir": s.cfg.chdir.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
                }],
                "cores": cores,
            })
        })
        .collect();
    let doc = json!({
        "version": concat!("oxgate-", env!("CARGO_PKG_VERSION")),
        "listen_queue": lq,
        "listen_queue_errors": 0,
        "signal_queue": 0,
        "load": lq,
        "pid": std::process::id(),
        "uid": unsafe { libc::getuid() },
        "gid": unsafe { libc::getgid() },
        "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        "locks": [],
        "sockets": s.sockets.iter().zip(&queues).map(|(sock, q)| json!({
            "name": sock.addr.to_string(),
            "proto": sock.protocol.name(),
            "queue": q.0,
            "max_queue": q.1,
            "shared": 0,
            "can_offload": 0,
        })).collect::<Vec<_>>(),
        "workers": workers,
    });
    if s.cfg.stats.minified {
        doc.to_string()
    } else {
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        serde::Serialize::serialize(&doc, &mut ser).expect("JSON into memory");
        String::from_utf8(out).expect("JSON is UTF-8")
    }
}

/// Prometheus text exposition (version 0.0.4).
pub fn render_metrics(s: &Snapshot<'_>) -> String {
    use std::fmt::Write as _;
    let sb = s.sb;
    let h = sb.header();
    let threads = s.cfg.threads.min(CORES);
    let live: Vec<_> = s.workers.iter().map(|w| (w, sb.slot(w.slot))).collect();
    let sum = |f: &dyn Fn(&super::scoreboard::Counters) -> u64| {
        f(&h.retired) + live.iter().map(|(_, slot)| f(&slot.counters)).sum::<u64>()
    };
    let mut out = String::new();
    family(
        &mut out,
        "requests_total",
        "counter",
        "Requests served, by protocol and status class.",
    );
    for p in Protocol::ALL {
        for class in 0..5 {
            let n = sum(&|c| load(&c.by_status[p as usize][class]));
            let _ = writeln!(
                out,
                "oxgate_requests_total{{protocol=\"{}\",status=\"{}xx\"}} {n}",
                p.name(),
                class + 1
            );
        }
    }
    family(
        &mut out,
        "request_duration_seconds",
        "histogram",
        "Time from the start of a request to the end of its response.",
    );
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BOUNDS_US
        .iter()
        .map(|b| format!("{}", *b as f64 / 1e6))
        .chain(std::iter::once("+Inf".to_string()))
        .enumerate()
    {
        cumulative += sum(&|c| load(&c.latency[i]));
        let _ = writeln!(
            out,
            "oxgate_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    debug_assert_eq!(LATENCY_BOUNDS_US.len() + 1, BUCKETS);
    let _ = writeln!(
        out,
        "oxgate_request_duration_seconds_sum {}\noxgate_request_duration_seconds_count {cumulative}",
        sum(&|c| load(&c.rt_us)) as f64 / 1e6
    );
    family(
        &mut out,
        "exceptions_total",
        "counter",
        "Requests whose app raised.",
    );
    let _ = writeln!(
        out,
        "oxgate_exceptions_total {}",
        sum(&|c| load(&c.exceptions))
    );
    family(
        &mut out,
        "response_bytes_total",
        "counter",
        "Response bytes (headers and body).",
    );
    let _ = writeln!(out, "oxgate_response_bytes_total {}", sum(&|c| load(&c.tx)));
    family(
        &mut out,
        "requests_in_flight",
        "gauge",
        "Requests being served now.",
    );
    let busy_cores = |slot: &super::scoreboard::Slot| {
        slot.cores[..threads]
            .iter()
            .filter(|c| c.started_us.load(Ordering::Acquire) != 0)
            .count()
    };
    let in_flight: usize = live.iter().map(|(_, slot)| busy_cores(slot)).sum();
    let _ = writeln!(out, "oxgate_requests_in_flight {in_flight}");
    family(&mut out, "workers", "gauge", "Worker processes, by state.");
    let mut states = [("starting", 0), ("idle", 0), ("busy", 0), ("stopping", 0)];
    for (w, slot) in &live {
        let i = if w.stopping {
            3
        } else if !w.ready {
            0
        } else if busy_cores(slot) > 0 {
            2
        } else {
            1
        };
        states[i].1 += 1;
    }
    for (state, n) in states {
        let _ = writeln!(out, "oxgate_workers{{state=\"{state}\"}} {n}");
    }
    family(
        &mut out,
        "worker_respawns_total",
        "counter",
        "Workers replaced, by cause.",
    );
    for cause in Cause::ALL {
        let _ = writeln!(
            out,
            "oxgate_worker_respawns_total{{cause=\"{}\"}} {}",
            cause.name(),
            load(&h.respawns[cause as usize])
        );
    }
    family(
        &mut out,
        "harakiri_total",
        "counter",
        "Requests killed by --harakiri.",
    );
    let _ = writeln!(out, "oxgate_harakiri_total {}", load(&h.harakiri));
    family(
        &mut out,
        "listen_queue",
        "gauge",
        "Connections waiting in a socket's accept queue.",
    );
    for sock in s.sockets {
        let _ = writeln!(
            out,
            "oxgate_listen_queue{{socket=\"{}\",protocol=\"{}\"}} {}",
            escape_label(&sock.addr.to_string()),
            sock.protocol.name(),
            listen_queue(sock).0
        );
    }
    family(
        &mut out,
        "worker_resident_memory_bytes",
        "gauge",
        "Resident memory of each worker.",
    );
    for (w, _) in &live {
        let _ = writeln!(
            out,
            "oxgate_worker_resident_memory_bytes{{worker=\"{}\",pid=\"{}\"}} {}",
            w.id,
            w.pid,
            crate::sys::procfs::memory(Some(w.pid)).1
        );
    }
    family(
        &mut out,
        "worker_requests_total",
        "counter",
        "Requests served by each worker process since it started.",
    );
    for (w, slot) in &live {
        let _ = writeln!(
            out,
            "oxgate_worker_requests_total{{worker=\"{}\",pid=\"{}\"}} {}",
            w.id,
            w.pid,
            load(&slot.counters.requests)
        );
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP oxgate_{name} {help}\n# TYPE oxgate_{name} {kind}"
    );
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
