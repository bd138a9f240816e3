//! What a master image hands to the next one when it re-executes itself
//! for a reload: its listening sockets, the scoreboard, the running workers
//! and daemons. A typed, versioned structure, passed as JSON in one
//! environment variable (descriptors stay open across exec); a value the
//! new image cannot read is an error in its log, never silently dropped.

use std::os::fd::{FromRawFd, RawFd};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::lifecycle::ReloadKind;
use crate::listen::{Address, Listener, Protocol, Socket};

const ENV: &str = crate::lifecycle::HANDOVER_ENV;
/// Bumped whenever a field changes meaning; an image that reads another
/// version says so and starts afresh instead of guessing.
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Handover {
    pub version: u32,
    pub listeners: Vec<HandedSocket>,
    /// The scoreboard's memfd.
    pub scoreboard: RawFd,
    pub workers: Vec<HandedWorker>,
    pub daemons: Vec<HandedDaemon>,
    /// The reload that made this image.
    pub reload: ReloadKind,
    /// When the first image started, in ms since the epoch (for stats).
    pub started_ms: u64,
    /// `--master-fifo`: the FIFO in use, open across exec, so that a
    /// command written during the reload is read by the next image.
    /// (Absent when there is none, so images without the field read the
    /// rest.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_fifo: Option<HandedFifo>,
    /// `--stats` and `--metrics` listeners, open across exec, so that a
    /// monitor polling during the reload is answered (by the next image)
    /// rather than reset or refused. (Absent when there are none.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stats: Vec<HandedStats>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HandedStats {
    pub fd: RawFd,
    /// The address as configured: the next image adopts the descriptor
    /// when its configuration names the same one, and closes it otherwise.
    pub addr: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HandedFifo {
    pub fd: RawFd,
    /// Its place among the `--master-fifo` paths.
    pub slot: usize,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HandedSocket {
    pub fd: RawFd,
    /// `Protocol::name()`: http, uwsgi, scgi, fastcgi.
    pub protocol: String,
    /// As `listen::parse` reads it.
    pub addr: String,
    /// systemd passed it (socket activation). Left out when false, so that
    /// an image without the field reads the rest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub activated: bool,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HandedWorker {
    pub pid: i32,
    pub id: u32,
    pub slot: usize,
    /// Asked to stop already (a reload's old worker, finishing its
    /// requests): it leaves, and is not replaced again. Left out when
    /// false, so that an image without the field reads the rest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub asked: bool,
    /// Its replacement was started already (a recycle, a chain reload
    /// under way): the new image asks it to stop, and replaces only the
    /// replacement.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replaced: bool,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HandedDaemon {
    /// Its place in the configuration's daemon list.
    pub index: usize,
    pub pid: i32,
}

impl Handover {
    pub fn new(reload: ReloadKind, scoreboard: RawFd, started: SystemTime) -> Handover {
        Handover {
            version: VERSION,
            listeners: Vec::new(),
            scoreboard,
            workers: Vec::new(),
            daemons: Vec::new(),
            reload,
            started_ms: started
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
            master_fifo: None,
            stats: Vec::new(),
        }
    }

    /// The variable to set for the next image.
    pub fn to_env(&self) -> (&'static str, String) {
        (
            ENV,
            serde_json::to_string(self).expect("plain data serializes"),
        )
    }

    /// Reads (and removes, so the app never sees it) the handover, if this
    /// image was started by a reload. An unreadable one is logged and
    /// ignored: the image then binds its sockets afresh.
    pub fn take_from_env() -> Option<Handover> {
        let text = std::env::var(ENV).ok()?;
        // SAFETY: start-up is still single-threaded: no other thread reads
        // the environment meanwhile.
        unsafe { std::env::remove_var(ENV) };
        match Handover::parse(&text) {
            Ok(h) => Some(h),
            Err(e) => {
                crate::say!(
                    "oxgate: error: cannot read the state handed over by the previous master image ({e}); starting afresh"
                );
                None
            }
        }
    }

    fn parse(text: &str) -> Result<Handover, String> {
        let h: Handover = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if h.version != VERSION {
            return Err(format!(
                "version {} where this oxgate reads version {VERSION}",
                h.version
            ));
        }
        for s in &h.listeners {
            if Protocol::from_name(&s.protocol).is_none() {
                return Err(format!("unknown protocol {:?}", s.protocol));
            }
            crate::listen::parse(&s.addr).map_err(|e| format!("socket {:?}: {e}", s.addr))?;
        }
        Ok(h)
    }

    pub fn started(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.started_ms)
    }

    /// Every socket the previous image had, systemd's included. Each
    /// descriptor is taken over here, once.
    pub fn listeners(&self) -> Vec<Socket> {
        self.listeners
            .iter()
            .filter_map(|s| {
                // Checked by `parse`.
                let addr = crate::listen::parse(&s.addr).ok()?;
                let protocol = Protocol::from_name(&s.protocol)?;
                set_cloexec(s.fd, true);
                // SAFETY: the previous image left this descriptor open for
                // us across exec and no longer uses it; it is wrapped once,
                // here, so it has one owner.
                let listener = match &addr {
                    Address::Tcp(_) => Listener::Tcp(
                        // SAFETY: as above.
                        unsafe { std::net::TcpListener::from_raw_fd(s.fd) },
                    ),
                    Address::Unix(p) => Listener::Unix(
                        // SAFETY: as above.
                        unsafe { std::os::unix::net::UnixListener::from_raw_fd(s.fd) },
                        Some(p.clone()),
                    ),
                    Address::Abstract(_) => Listener::Unix(
                        // SAFETY: as above.
                        unsafe { std::os::unix::net::UnixListener::from_raw_fd(s.fd) },
                        None,
                    ),
                    Address::Fd(_) => match crate::listen::listener_of(
                        // SAFETY: as above.
                        unsafe { std::os::fd::OwnedFd::from_raw_fd(s.fd) },
                    ) {
                        Ok(l) => l,
                        Err(e) => {
                            crate::say!(
                                "oxgate: error: the socket {} handed over on descriptor {}: {e}",
                                s.addr,
                                s.fd
                            );
                            return None;
                        }
                    },
                };
                Some(Socket {
                    addr,
                    listener,
                    protocol,
                    activated: s.activated,
                })
            })
            .collect()
    }

    /// Hands a listening socket over: its descriptor stays open across exec.
    pub fn add_listener(&mut self, s: &Socket) {
        let fd = s.listener.raw_fd();
        set_cloexec(fd, false);
        self.listeners.push(HandedSocket {
            fd,
            protocol: s.protocol.name().to_string(),
            addr: s.addr.to_string(),
            activated: s.activated,
        });
    }
}

/// Whether `fd` is closed by exec.
pub fn set_cloexec(fd: RawFd, on: bool) {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: the descriptors passed here are open and owned by this
    // process for as long as the call lasts (listeners, the scoreboard).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let Ok(bits) = fcntl(fd, FcntlArg::F_GETFD) else {
        return;
    };
    let mut flags = FdFlag::from_bits_truncate(bits);
    flags.set(FdFlag::FD_CLOEXEC, on);
    let _ = fcntl(fd, FcntlArg::F_SETFD(flags));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Handover {
        let mut h = Handover::new(ReloadKind::Chain, 7, SystemTime::UNIX_EPOCH);
        h.listeners.push(HandedSocket {
            fd: 3,
            protocol: "uwsgi".into(),
            addr: "127.0.0.1:9000".into(),
            activated: false,
        });
        h.workers.push(HandedWorker {
            pid: 100,
            id: 1,
            slot: 0,
            asked: false,
            replaced: false,
        });
        h.daemons.push(HandedDaemon { index: 0, pid: 200 });
        h.stats.push(HandedStats {
            fd: 5,
            addr: "127.0.0.1:9191".into(),
        });
        h
    }

    #[test]
    fn round_trips() {
        let h = sample();
        let (_, text) = h.to_env();
        assert_eq!(Handover::parse(&text).unwrap(), h);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let (_, text) = sample().to_env();
        let other_version = text.replace("\"version\":1", "\"version\":2");
        assert!(
            Handover::parse(&other_version)
                .unwrap_err()
                .contains("version 2")
        );
        let unknown_field = text.replacen('{', "{\"extra\":1,", 1);
        assert!(Handover::parse(&unknown_field).is_err());
        let bad_protocol = text.replace("uwsgi", "gopher");
        assert!(
            Handover::parse(&bad_protocol)
                .unwrap_err()
                .contains("gopher")
        );
        let bad_reload = text.replace("\"chain\"", "\"sideways\"");
        assert!(Handover::parse(&bad_reload).is_err());
        assert!(Handover::parse("listen 3 http 127.0.0.1:1").is_err());
    }
}
