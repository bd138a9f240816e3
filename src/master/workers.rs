//! The workers as the master sees them: reaping, respawn back-off,
//! readiness, recycling, harakiri, and replacing them during reloads.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::scoreboard::{CORES, Cause, Retire};
use super::state::{
    EXIT_APP_LOAD, HARAKIRI_DUMP_TIME, MAX_BACKOFF, Master, QUICK_DEATH, State, Worker,
    describe_status, send,
};
use crate::lifecycle::ReloadKind;
use crate::process;

impl Master<'_> {
    pub(super) fn reap(&mut self) {
        loop {
            let mut status = 0;
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if let Some(d) = self.daemons.iter_mut().find(|d| d.pid == Some(pid)) {
                d.pid = None;
                let lived = d.started.elapsed();
                let smart = d.pidfile.is_some();
                // A smart daemon's launcher exits 0 once it has detached.
                let expected =
                    matches!(self.state, State::Stopping { .. }) || (smart && status == 0);
                if !expected {
                    d.failures = if lived < QUICK_DEATH {
                        d.failures + 1
                    } else {
                        0
                    };
                    let backoff = if d.failures == 0 {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(100 << d.failures.min(7)).min(MAX_BACKOFF)
                    };
                    d.next_start = Instant::now() + backoff;
                    crate::say!(
                        "oxgate: daemon {:?} (pid {pid}) {}; restarting in {:.1}s",
                        d.command,
                        describe_status(status),
                        backoff.as_secs_f64()
                    );
                }
                continue;
            }
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let w = self.workers.remove(i);
            self.sb.release(w.slot);
            self.on_exit(w, status);
        }
    }

    fn on_exit(&mut self, w: Worker, status: i32) {
        let how = describe_status(status);
        let lived = w.started.elapsed();
        // Whoever this worker was replacing, or was replaced by, moves on.
        for other in &mut self.workers {
            if other.replaced_by == Some(w.pid) {
                other.replaced_by = None;
            }
        }
        let stopping = matches!(self.state, State::Stopping { .. });
        if w.harakiri_info.is_some() && !stopping {
            self.count_respawn(Cause::Harakiri, 1);
        } else if w.stop_sent.is_none() && !stopping {
            self.count_respawn(Cause::Crash, 1);
        }
        if let Some(info) = &w.harakiri_info {
            crate::say!(
                "oxgate: worker {} (pid {}) {how} by harakiri while running {info}",
                w.id,
                w.pid
            );
        } else if w.stop_sent.is_some() {
            if !matches!(self.state, State::Stopping { .. }) && !w.killed {
                crate::say!("oxgate: worker {} (pid {}) stopped ({how})", w.id, w.pid);
            }
            return;
        } else {
            let doing = self.sb.slot(w.slot).cores[..self.cfg.threads.min(CORES)]
                .iter()
                .filter(|c| c.started_us.load(Ordering::Acquire) != 0)
                .map(|c| c.info())
                .collect::<Vec<_>>();
            let doing = if doing.is_empty() {
                "while idle".to_string()
            } else {
                format!("while running {}", doing.join("; "))
            };
            crate::say!(
                "oxgate: worker {} (pid {}) {how} {doing}, after {:.1}s",
                w.id,
                w.pid,
                lived.as_secs_f64()
            );
        }
        if matches!(self.state, State::Stopping { .. }) {
            return;
        }
        let load_failed = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == EXIT_APP_LOAD;
        if load_failed && !self.ever_ready {
            self.fatal = Some("the app could not be loaded in the workers (see above)".into());
            self.state = State::Stopping {
                since: Instant::now(),
            };
            self.kill_all(Signal::SIGTERM);
            return;
        }
        if lived < QUICK_DEATH || !w.ready {
            self.failures += 1;
            let backoff = Duration::from_millis(100 << self.failures.min(7)).min(MAX_BACKOFF);
            self.next_spawn = Instant::now() + backoff;
            crate::say!(
                "oxgate: worker {} died {:.1}s after it started ({} in a row); next start in {:.1}s",
                w.id,
                lived.as_secs_f64(),
                self.failures,
                backoff.as_secs_f64()
            );
        } else {
            self.failures = 0;
        }
    }

    /// Readiness, recycling and limits.
    pub(super) fn supervise(&mut self) {
        let p = &self.cfg.process;
        let now_us = crate::sys::clock::now_us();
        for w in &mut self.workers {
            let slot = self.sb.slot(w.slot);
            if !w.ready && slot.ready.load(Ordering::Acquire) != 0 {
                w.ready = true;
                self.ever_ready = true;
                self.failures = 0;
            }
            if w.stop_sent.is_some() {
                if !w.killed
                    && w.stop_sent
                        .is_some_and(|t| t.elapsed() > p.worker_reload_mercy)
                {
                    crate::say!(
                        "oxgate: worker {} (pid {}) still busy after --worker-reload-mercy {}s, killing it",
                        w.id,
                        w.pid,
                        p.worker_reload_mercy.as_secs()
                    );
                    w.killed = true;
                    send(w.pid, Signal::SIGKILL);
                }
                continue;
            }
            // Harakiri: dump the stack first, kill a moment later.
            if let Some(limit) = p.harakiri {
                if let Some(sent) = w.harakiri_sent {
                    if sent.elapsed() > HARAKIRI_DUMP_TIME && !w.killed {
                        w.killed = true;
                        send(w.pid, Signal::SIGKILL);
                    }
                } else if let Some(core) =
                    slot.cores[..self.cfg.threads.min(CORES)].iter().find(|c| {
                        let s = c.started_us.load(Ordering::Acquire);
                        s != 0 && now_us.saturating_sub(s) > limit.as_micros() as u64
                    })
                {
                    let info = core.info();
                    let ran = now_us.saturating_sub(core.started_us.load(Ordering::Acquire));
                    crate::say!(
                        "oxgate: HARAKIRI: worker {} (pid {}) has run {info} for {:.1}s (--harakiri {}s); its Python stack follows, then it is killed",
                        w.id,
                        w.pid,
                        ran as f64 / 1e6,
                        limit.as_secs()
                    );
                    w.harakiri_sent = Some(Instant::now());
                    w.harakiri_info = Some(info);
                    self.sb.header().harakiri.fetch_add(1, Ordering::Relaxed);
                    self.sb
                        .id_stats(w.id)
                        .harakiri
                        .fetch_add(1, Ordering::Relaxed);
                    send(w.pid, Signal::SIGUSR2);
                }
            }
            if w.replace {
                continue;
            }
            let mut why = None;
            let mut cause = Cause::MaxRequests;
            if slot.retire.load(Ordering::Acquire) == Retire::MaxRequests as u32 {
                why = Some(format!(
                    "served {} requests (--max-requests)",
                    slot.counters.requests.load(Ordering::Relaxed)
                ));
            } else if let Some(life) = p.max_worker_lifetime
                && w.started.elapsed() > life
            {
                cause = Cause::Lifetime;
                why = Some(format!(
                    "has run {}s (--max-worker-lifetime)",
                    life.as_secs()
                ));
            } else if p.reload_on_rss.is_some() || p.evil_reload_on_rss.is_some() {
                let rss = process::memory(Some(w.pid)).1;
                if p.evil_reload_on_rss.is_some_and(|l| rss > l) {
                    crate::say!(
                        "oxgate: worker {} (pid {}) uses {} MB (--evil-reload-on-rss), killing it",
                        w.id,
                        w.pid,
                        rss >> 20
                    );
                    w.replace = true;
                    w.killed = true;
                    w.stop_sent = Some(Instant::now());
                    send(w.pid, Signal::SIGKILL);
                    self.sb.header().respawns[Cause::Rss as usize].fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if p.reload_on_rss.is_some_and(|l| rss > l) {
                    cause = Cause::Rss;
                    why = Some(format!("uses {} MB (--reload-on-rss)", rss >> 20));
                }
            }
            if let Some(why) = why {
                self.sb.header().respawns[cause as usize].fetch_add(1, Ordering::Relaxed);
                crate::say!(
                    "oxgate: worker {} (pid {}) {why}, replacing it",
                    w.id,
                    w.pid
                );
                w.replace = true;
            }
        }
    }

    /// Starts replacements and new workers; stops the replaced ones.
    pub(super) fn schedule(&mut self) {
        if self.broken {
            return;
        }
        let now = Instant::now();
        let chain = matches!(self.reload, Some((ReloadKind::Chain, _)));
        // A replaced worker stops once its replacement is ready.
        let ready: Vec<libc::pid_t> = self
            .workers
            .iter()
            .filter(|w| w.ready)
            .map(|w| w.pid)
            .collect();
        for w in &mut self.workers {
            if w.replace
                && w.stop_sent.is_none()
                && w.replaced_by.is_some_and(|r| ready.contains(&r))
            {
                w.stop_sent = Some(now);
                send(w.pid, Signal::SIGTERM);
            }
        }
        // Replacements: all at once, or one at a time in a chain reload.
        let in_flight = self
            .workers
            .iter()
            .any(|w| w.replace && w.replaced_by.is_some() && !w.killed);
        let waiting: Vec<usize> = (0..self.workers.len())
            .filter(|&i| {
                let w = &self.workers[i];
                w.replace && w.replaced_by.is_none() && w.stop_sent.is_none()
            })
            .collect();
        for (n, i) in waiting.into_iter().enumerate() {
            if now < self.next_spawn || (chain && (in_flight || n > 0)) {
                break;
            }
            let id = self.workers[i].id;
            if let Some(pid) = self.spawn(id) {
                self.workers[i].replaced_by = Some(pid);
            }
        }
        // Keep --processes workers that are not on their way out.
        let serving = self
            .workers
            .iter()
            .filter(|w| !w.replace && w.stop_sent.is_none())
            .count();
        let to_replace = self
            .workers
            .iter()
            .filter(|w| w.replace && w.replaced_by.is_none() && w.stop_sent.is_none())
            .count();
        let missing = self.processes.saturating_sub(serving + to_replace);
        for _ in 0..missing {
            if now < self.next_spawn {
                break;
            }
            let id = (1..)
                .find(|id| !self.workers.iter().any(|w| w.id == *id && !w.replace))
                .expect("ids are unbounded");
            self.spawn(id);
        }
        // A reload is done when no old worker is left.
        if let Some((mode, since)) = self.reload
            && !self.workers.iter().any(|w| w.replace)
            && self.workers.iter().all(|w| w.ready)
        {
            crate::say!(
                "oxgate: {} reload done in {:.2}s: {} worker(s) serving",
                mode.name(),
                since.elapsed().as_secs_f64(),
                self.workers.len()
            );
            self.reload = None;
        }
        if !self.notified
            && !self.workers.is_empty()
            && self.workers.iter().all(|w| w.ready)
            && self.reload.is_none()
        {
            self.notified = true;
            process::sd_notify(&format!("READY=1\nMAINPID={}", std::process::id()));
        }
    }

    pub(super) fn count_respawn(&self, cause: Cause, n: u64) {
        self.sb.header().respawns[cause as usize].fetch_add(n, Ordering::Relaxed);
    }
}
