//! The Prometheus metrics (text exposition, version 0.0.4).

use super::queue::listen_queue;
use super::snapshot::{PoolFigures, Snapshot, load};
use crate::listen::Protocol;
use crate::master::scoreboard::{BUCKETS, Cause, Counters, HTTP_VERSIONS, LATENCY_BOUNDS_US, Slot};
use crate::request::HandlerKind;

/// Prometheus text exposition (version 0.0.4).
pub fn render_metrics(s: &Snapshot<'_>) -> String {
    use std::fmt::Write as _;
    let sb = s.sb;
    let h = sb.header();
    let live: Vec<_> = s.workers.iter().map(|w| (w, sb.slot(w.slot))).collect();
    let sum = |f: &dyn Fn(&Counters) -> u64| s.total(f);
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
        "http_requests_total",
        "counter",
        "Requests by the HTTP version the client spoke (also behind a web server that passes it on).",
    );
    for (i, version) in HTTP_VERSIONS.iter().enumerate() {
        let n = sum(&|c| load(&c.by_http_version[i]));
        let _ = writeln!(
            out,
            "oxgate_http_requests_total{{version=\"{version}\"}} {n}"
        );
    }
    family(
        &mut out,
        "requests_by_handler_total",
        "counter",
        "Requests by what answered them: the app, a static file, a CGI script, a FastCGI app, or none (a 404 where no app is loaded).",
    );
    for kind in HandlerKind::ALL {
        let n = sum(&|c| load(&c.by_handler[kind as usize]));
        let _ = writeln!(
            out,
            "oxgate_requests_by_handler_total{{handler=\"{}\"}} {n}",
            kind.name()
        );
    }
    counter(
        &mut out,
        "tls_handshake_failures_total",
        "TLS handshakes that failed or timed out.",
        sum(&|c| load(&c.tls_handshake_failures)),
    );
    counter(
        &mut out,
        "max_connections_reached_total",
        "Times a worker stopped accepting at --max-connections (new connections waited in the listen backlog).",
        sum(&|c| load(&c.max_connections_reached)),
    );
    counter(
        &mut out,
        "http2_streams_refused_total",
        "HTTP/2 streams answered 503 because --http2-max-pending requests were already pending in the worker.",
        sum(&|c| load(&c.http2_streams_refused)),
    );
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
    counter(
        &mut out,
        "exceptions_total",
        "Requests whose app raised.",
        sum(&|c| load(&c.exceptions)),
    );
    counter(
        &mut out,
        "response_bytes_total",
        "Response bytes (headers and body).",
        sum(&|c| load(&c.tx)),
    );
    family(
        &mut out,
        "requests_in_flight",
        "gauge",
        "Requests being served now.",
    );
    let busy_cores = |slot: &Slot| slot.busy_cores().count();
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
    counter(
        &mut out,
        "harakiri_total",
        "Requests killed by --harakiri.",
        load(&h.harakiri),
    );
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
            escape_label(&sock.shown_name()),
            sock.protocol.name(),
            listen_queue(sock).0
        );
    }
    let pools = s.pools();
    if !pools.is_empty() {
        render_pools(&mut out, &pools);
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

/// The `--fastcgi-app` pools, labelled with their command and mount.
fn render_pools(out: &mut String, pools: &[PoolFigures]) {
    use std::fmt::Write as _;
    let label = |p: &PoolFigures| {
        format!(
            "pool=\"{}\",mount=\"{}\"",
            escape_label(&p.name),
            escape_label(&p.mount)
        )
    };
    family(
        out,
        "fastcgi_pool_processes",
        "gauge",
        "A FastCGI pool's processes, busy (serving a request) or idle.",
    );
    for p in pools {
        for (state, n) in [("busy", p.busy), ("idle", p.idle)] {
            let _ = writeln!(
                out,
                "oxgate_fastcgi_pool_processes{{{},state=\"{state}\"}} {n}",
                label(p)
            );
        }
    }
    type Figure = (&'static str, &'static str, fn(&PoolFigures) -> u64);
    let gauges: [Figure; 2] = [
        (
            "fastcgi_pool_waiting_requests",
            "Requests waiting for an idle process of the pool.",
            |p| p.waiting,
        ),
        (
            "fastcgi_pool_max_waiting_requests",
            "The most requests that waited at once in one worker (php-fpm's max listen queue).",
            |p| p.max_waiting,
        ),
    ];
    let counters: [Figure; 7] = [
        (
            "fastcgi_pool_requests_total",
            "Requests sent to the pool.",
            |p| p.requests,
        ),
        (
            "fastcgi_pool_slow_requests_total",
            "Requests that ran past --fastcgi-app-slowlog.",
            |p| p.slow_requests,
        ),
        (
            "fastcgi_pool_timeouts_total",
            "Requests stopped at --fastcgi-app-timeout, their process killed.",
            |p| p.timeouts,
        ),
        (
            "fastcgi_pool_max_children_reached_total",
            "Requests that found every process of the pool busy and waited.",
            |p| p.max_children_reached,
        ),
        (
            "fastcgi_pool_process_starts_total",
            "Processes started.",
            |p| p.process_starts,
        ),
        (
            "fastcgi_pool_process_exits_total",
            "Processes that ended unasked (crashed, or at their own request cap).",
            |p| p.process_exits,
        ),
        (
            "fastcgi_pool_process_recycles_total",
            "Processes replaced at --fastcgi-app-max-requests.",
            |p| p.process_recycles,
        ),
    ];
    for (name, help, value, kind) in gauges
        .iter()
        .map(|(n, h, v)| (n, h, v, "gauge"))
        .chain(counters.iter().map(|(n, h, v)| (n, h, v, "counter")))
    {
        family(out, name, kind, help);
        for p in pools {
            let _ = writeln!(out, "oxgate_{name}{{{}}} {}", label(p), value(p));
        }
    }
}

/// A counter family of one unlabelled value.
fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    use std::fmt::Write as _;
    family(out, name, "counter", help);
    let _ = writeln!(out, "oxgate_{name} {value}");
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
