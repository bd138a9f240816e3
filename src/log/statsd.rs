//! `--statsd-host`: Gunicorn's StatsD metrics, by Gunicorn's names, so
//! that dashboards made for Gunicorn keep working. Each request sends
//! `gunicorn.request.duration` (a timer, in milliseconds),
//! `gunicorn.requests` and `gunicorn.request.status.CODE` (counters) in one
//! datagram; the master sends the `gunicorn.workers` gauge when the count
//! changes. Sends never block and their errors are dropped: metrics must
//! not slow or fail a request.

use std::fmt::Write as _;
use std::net::{ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

enum Sink {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

struct Statsd {
    sink: Sink,
    /// Empty, or ending in a dot.
    prefix: String,
    /// `|#TAGS`, or empty.
    tags: String,
    /// The worker count last sent (`usize::MAX`: none yet).
    workers: AtomicUsize,
}

static STATSD: OnceLock<Statsd> = OnceLock::new();

/// Gunicorn's reading of `statsd_host`: `unix:PATH` (or `unix://PATH`),
/// `HOST:PORT`, `[V6]:PORT`, or a host alone (port 8125).
fn sink(target: &str) -> Result<Sink, String> {
    if let Some(path) = target.strip_prefix("unix:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        let sock = UnixDatagram::unbound().map_err(|e| e.to_string())?;
        sock.connect(path)
            .map_err(|e| format!("cannot reach {path}: {e}"))?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        return Ok(Sink::Unix(sock));
    }
    let with_port = with_port(target);
    // A name's IPv4 address first, as Gunicorn's socket does (a local
    // agent often listens on 127.0.0.1 alone, and localhost is ::1 first).
    let addrs: Vec<_> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{with_port}: {e}"))?
        .collect();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{with_port}: no address"))?;
    let local = if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let sock = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    sock.connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(Sink::Udp(sock))
}

/// `HOST:PORT`, with Gunicorn's 8125 when the port is not given.
fn with_port(target: &str) -> String {
    if target.starts_with('[') {
        if target.contains("]:") {
            target.to_string()
        } else {
            format!("{target}:8125")
        }
    } else if target.matches(':').count() > 1 {
        // A bare IPv6 address.
        format!("[{target}]:8125")
    } else if target.contains(':') {
        target.to_string()
    } else {
        format!("{target}:8125")
    }
}

/// Opens the socket the metrics go out on: in the master before it forks,
/// so the workers share it.
pub fn install(target: &str, prefix: &str, tags: Option<&str>) -> Result<(), String> {
    let sink = sink(target).map_err(|e| format!("--statsd-host {target}: {e}"))?;
    let _ = STATSD.set(Statsd {
        sink,
        prefix: prefix.to_string(),
        tags: tags.map(|t| format!("|#{t}")).unwrap_or_default(),
        workers: AtomicUsize::new(usize::MAX),
    });
    Ok(())
}

impl Statsd {
    fn send(&self, datagram: &str) {
        let _ = match &self.sink {
            Sink::Udp(s) => s.send(datagram.as_bytes()),
            Sink::Unix(s) => s.send(datagram.as_bytes()),
        };
    }

    /// One metric line (without its newline).
    fn line(&self, out: &mut String, name: std::fmt::Arguments<'_>, value: &str) {
        let _ = write!(out, "{}{name}:{value}{}", self.prefix, self.tags);
    }
}

/// A request answered with `status` after `us` microseconds (`None`: its
/// time is not known, and only the counters go).
pub fn request(status: u16, us: Option<u64>) {
    let Some(s) = STATSD.get() else {
        return;
    };
    let mut out = String::with_capacity(160);
    if let Some(us) = us {
        let ms = us as f64 / 1000.0;
        s.line(
            &mut out,
            format_args!("gunicorn.request.duration"),
            &format!("{ms}|ms"),
        );
        out.push('\n');
    }
    s.line(&mut out, format_args!("gunicorn.requests"), "1|c|@1.0");
    out.push('\n');
    s.line(
        &mut out,
        format_args!("gunicorn.request.status.{status}"),
        "1|c|@1.0",
    );
    s.send(&out);
}

/// The master's worker count, sent when it changes.
pub fn workers(n: usize) {
    let Some(s) = STATSD.get() else {
        return;
    };
    if s.workers.swap(n, Ordering::Relaxed) == n {
        return;
    }
    let mut out = String::new();
    s.line(
        &mut out,
        format_args!("gunicorn.workers"),
        &format!("{n}|g"),
    );
    s.send(&out);
}

/// One more of Gunicorn's log counters: `exception` (an app raised) or
/// `critical` (a worker killed by harakiri).
pub fn log_counter(level: &str) {
    let Some(s) = STATSD.get() else {
        return;
    };
    let mut out = String::new();
    s.line(&mut out, format_args!("gunicorn.log.{level}"), "1|c|@1.0");
    s.send(&out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_gunicorn_reads_them() {
        let local = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = local.local_addr().unwrap().port();
        assert!(matches!(
            sink(&format!("127.0.0.1:{port}")),
            Ok(Sink::Udp(_))
        ));
        let Ok(Sink::Udp(s)) = sink("127.0.0.1") else {
            panic!("a host alone is port 8125");
        };
        assert_eq!(s.peer_addr().unwrap().port(), 8125);
        assert_eq!(with_port("localhost"), "localhost:8125");
        assert_eq!(with_port("stats:9125"), "stats:9125");
        assert_eq!(with_port("::1"), "[::1]:8125");
        assert_eq!(with_port("[::1]"), "[::1]:8125");
        assert_eq!(with_port("[::1]:9125"), "[::1]:9125");
        assert!(sink("unix:/nonexistent/statsd.sock").is_err());
        assert!(sink("no such host.invalid:99").is_err());
    }
}
