//! The process lifecycle as types: the ways a master reloads and stops,
//! each with the signal, option and timeout that go with it. The master's
//! signal handling, `oxgate --reload PIDFILE` and friends, and the handover
//! to a re-executed master all use these, so a signal is mapped once.
//!
//! A leaf: it imports nothing from the crate.

use serde::{Deserialize, Serialize};

/// The variable a master re-executing itself for a reload hands its
/// sockets and workers over in (master/handover.rs); the configuration's
/// `if-reload` looks for it.
pub const HANDOVER_ENV: &str = "OXGATE_INHERIT";

/// Set by a master serving sockets systemd passed (socket activation) for
/// the configuration check of a reload and for its re-executed image: the
/// sockets are there, though LISTEN_FDS, which told the first image of
/// them, is gone, so a configuration that names no socket is whole.
pub const SYSTEMD_SOCKETS_ENV: &str = "OXGATE_SYSTEMD_SOCKETS";

/// How a running master replaces its workers with new ones (new code, new
/// configuration: the master re-executes itself first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadKind {
    /// SIGHUP, `oxgate --reload PIDFILE`, `--touch-reload FILE`: all new
    /// workers start at once; each old worker stops once its replacement
    /// is ready, finishing its requests within `--worker-reload-mercy`.
    Graceful,
    /// SIGRTMIN+1, `oxgate --chain-reload PIDFILE`, `--touch-chain-reload
    /// FILE`: one worker at a time, each replacement ready before its old
    /// worker stops, so capacity never drops.
    Chain,
    /// SIGRTMIN+2, `oxgate --brutal-reload PIDFILE`: the old workers are
    /// killed (SIGKILL) before the master re-executes; requests in flight
    /// are lost.
    Brutal,
}

impl ReloadKind {
    pub fn name(self) -> &'static str {
        match self {
            ReloadKind::Graceful => "graceful",
            ReloadKind::Chain => "chain",
            ReloadKind::Brutal => "brutal",
        }
    }

    /// The signal that asks a master for this reload.
    pub fn signal(self) -> i32 {
        match self {
            ReloadKind::Graceful => libc::SIGHUP,
            ReloadKind::Chain => libc::SIGRTMIN() + 1,
            ReloadKind::Brutal => libc::SIGRTMIN() + 2,
        }
    }
}

/// How a master (or a single process) stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// SIGTERM, SIGINT, SIGQUIT, `oxgate --stop PIDFILE`: no new
    /// connections; requests in flight finish, bounded by `--reload-mercy`
    /// (default 60 s), after which the workers are killed.
    Graceful,
    /// A second SIGINT or SIGQUIT during a graceful stop: the workers are
    /// killed at once. (A second SIGTERM does not: systemd and Kubernetes
    /// repeat it, and mean the graceful stop.)
    Immediate,
}

/// What a signal asks of a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterCommand {
    Reload(ReloadKind),
    /// Graceful the first time; SIGINT and SIGQUIT again are immediate.
    Stop {
        repeatable: bool,
    },
    /// SIGTTIN: one worker more (up to the scoreboard's room).
    AddWorker,
    /// SIGTTOU: one worker fewer (at least one).
    RemoveWorker,
    /// SIGUSR1: reopen the log file here and in every worker (logrotate).
    ReopenLog,
    /// SIGCHLD: a worker or daemon ended; the master reaps it.
    ChildExited,
}

impl MasterCommand {
    /// Every signal a master handles, with what it asks.
    pub fn table() -> [(i32, MasterCommand); 11] {
        [
            // Signals that arrive together are handled in this order. Stops
            // first: a stop makes a reload that came with it moot. Reloads
            // last: one re-executes the master, and what came with it would
            // be lost after it.
            (libc::SIGTERM, MasterCommand::Stop { repeatable: false }),
            (libc::SIGINT, MasterCommand::Stop { repeatable: true }),
            (libc::SIGQUIT, MasterCommand::Stop { repeatable: true }),
            (libc::SIGCHLD, MasterCommand::ChildExited),
            (libc::SIGTTIN, MasterCommand::AddWorker),
            (libc::SIGTTOU, MasterCommand::RemoveWorker),
            (libc::SIGUSR1, MasterCommand::ReopenLog),
            (libc::SIGHUP, MasterCommand::Reload(ReloadKind::Graceful)),
            (
                ReloadKind::Chain.signal(),
                MasterCommand::Reload(ReloadKind::Chain),
            ),
            // Gunicorn's "upgrade on the fly": a new master image with the
            // new code, the workers replaced without a gap. (uWSGI prints
            // its workers' status; before, the default action killed the
            // master.)
            (libc::SIGUSR2, MasterCommand::Reload(ReloadKind::Chain)),
            (
                ReloadKind::Brutal.signal(),
                MasterCommand::Reload(ReloadKind::Brutal),
            ),
        ]
    }

    pub fn from_signal(sig: i32) -> Option<MasterCommand> {
        Self::table()
            .into_iter()
            .find(|(s, _)| *s == sig)
            .map(|(_, c)| c)
    }
}

/// What `oxgate --stop|--reload|--chain-reload|--brutal-reload PIDFILE`
/// asks of the master whose pid the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Stop,
    Reload(ReloadKind),
}

impl Control {
    /// The option that asks for it, without the dashes.
    pub const OPTIONS: [(&'static str, Control); 4] = [
        ("stop", Control::Stop),
        ("reload", Control::Reload(ReloadKind::Graceful)),
        ("chain-reload", Control::Reload(ReloadKind::Chain)),
        ("brutal-reload", Control::Reload(ReloadKind::Brutal)),
    ];

    pub fn signal(self) -> i32 {
        match self {
            Control::Stop => libc::SIGTERM,
            Control::Reload(kind) => kind.signal(),
        }
    }

    /// "stop", "chain reload"…
    pub fn verb(self) -> String {
        match self {
            Control::Stop => "stop".into(),
            Control::Reload(ReloadKind::Graceful) => "reload".into(),
            Control::Reload(kind) => format!("{} reload", kind.name()),
        }
    }
}

/// Why the server did not start, or stopped on its own, with the exit
/// status it ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub status: u8,
}

/// Any failure but the workers'.
pub const EXIT_FAILED: u8 = 1;
/// The app could not be loaded or started in the workers, so the server
/// stopped: 3, as Gunicorn's worker boot error and uvicorn's startup
/// failure, which scripts and supervisors tell from other failures.
pub const EXIT_WORKERS_FAILED: u8 = 3;

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            message,
            status: EXIT_FAILED,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_signal_is_one_the_master_handles() {
        for (_, control) in Control::OPTIONS {
            let command = MasterCommand::from_signal(control.signal());
            match control {
                Control::Stop => {
                    assert_eq!(command, Some(MasterCommand::Stop { repeatable: false }))
                }
                Control::Reload(kind) => assert_eq!(command, Some(MasterCommand::Reload(kind))),
            }
        }
    }

    #[test]
    fn signals_are_distinct() {
        let table = MasterCommand::table();
        for (i, (a, _)) in table.iter().enumerate() {
            assert!(table[i + 1..].iter().all(|(b, _)| a != b));
        }
    }
}
