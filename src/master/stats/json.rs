//! uWSGI's stats document (core/master_utils.c), field for field.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::queue::listen_queue;
use super::snapshot::{Snapshot, WorkerView, load};
use crate::master::scoreboard::CORES;
use crate::request::HandlerKind;
use crate::sys::clock::now_us;

/// "GET /slow from 10.0.0.1" back into its parts.
fn split_info(info: &str) -> (String, String, String) {
    let (request, client) = info.rsplit_once(" from ").unwrap_or((info, ""));
    let (method, uri) = request.split_once(' ').unwrap_or((request, ""));
    (method.to_string(), uri.to_string(), client.to_string())
}

/// A row per worker id, as uWSGI's stats have (its replacement takes the
/// old worker's place): while a reload or a recycle has an old process and
/// its replacement under one id, the one serving, else the newer.
/// uwsgitop keys its rows by id, and two of them showed negative rates.
fn one_per_id(all: &[WorkerView]) -> Vec<&WorkerView> {
    let mut workers: Vec<&WorkerView> = all.iter().collect();
    // Best last for each id: not stopping, then ready, then the newer.
    workers.sort_by_key(|w| (w.id, !w.stopping, w.ready, w.pid));
    let mut kept: Vec<&WorkerView> = Vec::with_capacity(workers.len());
    for w in workers {
        match kept.last_mut() {
            Some(last) if last.id == w.id => *last = w,
            _ => kept.push(w),
        }
    }
    kept
}

/// uWSGI's stats document.
pub fn render_json(s: &Snapshot<'_>) -> String {
    let threads = s.cfg.threads.min(CORES);
    let now = now_us();
    let wall_now = crate::sys::clock::unix_now();
    let queues: Vec<(u64, u64)> = s.sockets.iter().map(listen_queue).collect();
    let lq = queues.iter().map(|q| q.0).max().unwrap_or(0);
    let workers = one_per_id(&s.workers);
    let workers: Vec<Value> = workers
        .iter()
        .map(|w| {
            let slot = s.sb.slot(w.slot);
            let idstats = s.sb.id_stats(w.id);
            let c = &slot.counters;
            let (vsz, rss) = crate::sys::procfs::memory(Some(w.pid));
            let cores: Vec<Value> = slot
                .cores_used(threads)
                .iter()
                .enumerate()
                .map(|(i, core)| {
                    let started = core.started_us.load(Ordering::Acquire);
                    let busy = started != 0;
                    let mut v = json!({
                        "id": i,
                        "requests": load(&core.requests),
                        // Static files are answered by the worker's event
                        // loop, not by a core: its count goes with core 0.
                        "static_requests": if i == 0 {
                            load(&c.by_handler[HandlerKind::Static as usize])
                        } else {
                            0
                        },
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
            let busy = slot.busy_cores().next().is_some();
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
                // The app's counts, as uWSGI's, span the worker's respawns
                // (the worker's, one app).
                "apps": [{
                    "id": 0,
                    "modifier1": 0,
                    "mountpoint": "",
                    "startup_time": 0,
                    "requests": load(&idstats.requests) + requests,
                    "exceptions": load(&idstats.exceptions) + exceptions,
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
        "uid": nix::unistd::getuid().as_raw(),
        "gid": nix::unistd::getgid().as_raw(),
        "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        "locks": [],
        "sockets": s.sockets.iter().zip(&queues).map(|(sock, q)| json!({
            "name": sock.shown_name(),
            "proto": sock.protocol.name(),
            "queue": q.0,
            "max_queue": q.1,
            "shared": 0,
            "can_offload": 0,
        })).collect::<Vec<_>>(),
        "workers": workers,
        // Beyond uWSGI's document.
        "tls_handshake_failures": s.total(&|c| load(&c.tls_handshake_failures)),
        "max_connections_reached": s.total(&|c| load(&c.max_connections_reached)),
        "http2_streams_refused": s.total(&|c| load(&c.http2_streams_refused)),
        // php-fpm's status page, for each --fastcgi-app pool.
        "fastcgi_pools": s.pools().iter().map(|p| json!({
            "name": p.name,
            "mount": p.mount,
            "processes": p.processes,
            "active_processes": p.busy,
            "idle_processes": p.idle,
            "listen_queue": p.waiting,
            "max_listen_queue": p.max_waiting,
            "accepted_conn": p.requests,
            "slow_requests": p.slow_requests,
            "timeouts": p.timeouts,
            "max_children_reached": p.max_children_reached,
            "process_starts": p.process_starts,
            "process_exits": p.process_exits,
            "process_recycles": p.process_recycles,
        })).collect::<Vec<_>>(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_worker_id_the_serving_one() {
        let w = |id, pid, ready, stopping| WorkerView {
            id,
            pid,
            slot: 0,
            ready,
            stopping,
        };
        // A reload: worker 1's old process finishing, its replacement
        // serving; worker 2's replacement not ready yet.
        let all = [
            w(1, 100, true, true),
            w(1, 200, true, false),
            w(2, 101, true, false),
            w(2, 201, false, false),
            w(3, 102, true, false),
        ];
        let kept: Vec<(u32, i32)> = one_per_id(&all).iter().map(|w| (w.id, w.pid)).collect();
        assert_eq!(kept, [(1, 200), (2, 101), (3, 102)]);
    }
}
