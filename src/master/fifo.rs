//! uWSGI's master FIFO (`--master-fifo PATH`): one-character commands
//! written to a named pipe, such as `echo r > /run/app.fifo` for a
//! graceful reload. Deploy scripts use it where sending a signal needs the
//! pid and the right signal number; its commands are the same as the
//! signals', so both take the same path through the master.
//!
//! Several `--master-fifo` paths are slots: the first is opened at start,
//! and the commands `0` to `9` close the one in use and open that slot
//! instead (uWSGI's way to hand a FIFO name from an old instance to a new
//! one during a reload).

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use crate::lifecycle::ReloadKind;

/// What a command character asks the master to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FifoCommand {
    /// The same as receiving this signal.
    Signal(i32),
    /// `Q`: stop now, killing the workers.
    StopNow,
    /// `0`-`9`: use another slot.
    Slot(usize),
}

impl FifoCommand {
    /// uWSGI's command characters that mean something here.
    pub(super) fn parse(c: u8) -> Option<(FifoCommand, &'static str)> {
        use FifoCommand::*;
        Some(match c {
            b'r' | b'w' => (Signal(libc::SIGHUP), "graceful reload"),
            b'R' | b'W' => (Signal(ReloadKind::Brutal.signal()), "brutal reload"),
            b'c' => (Signal(ReloadKind::Chain.signal()), "chain reload"),
            b'q' => (Signal(libc::SIGTERM), "graceful stop"),
            b'Q' => (StopNow, "immediate stop"),
            b'l' => (Signal(libc::SIGUSR1), "reopen the logs"),
            b'+' => (Signal(libc::SIGTTIN), "one worker more"),
            b'-' => (Signal(libc::SIGTTOU), "one worker fewer"),
            b'0'..=b'9' => (Slot(usize::from(c - b'0')), "switch the FIFO slot"),
            _ => return None,
        })
    }
}

pub(super) struct MasterFifo {
    slots: Vec<PathBuf>,
    active: usize,
    fd: OwnedFd,
}

impl MasterFifo {
    /// Makes the first slot's FIFO (replacing whatever FIFO is at that
    /// path) and opens it.
    pub(super) fn open(slots: &[PathBuf]) -> Result<Option<MasterFifo>, String> {
        if slots.is_empty() {
            return Ok(None);
        }
        let fd = make(&slots[0])?;
        Ok(Some(MasterFifo {
            slots: slots.to_vec(),
            active: 0,
            fd,
        }))
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The commands waiting in the FIFO, with what each character was.
    pub(super) fn read(&mut self) -> Vec<(u8, Option<(FifoCommand, &'static str)>)> {
        let mut buf = [0u8; 256];
        let mut out = Vec::new();
        while let Ok(n) = nix::unistd::read(self.fd.as_fd(), &mut buf) {
            if n == 0 {
                break;
            }
            out.extend(
                buf[..n]
                    .iter()
                    .filter(|c| !c.is_ascii_whitespace())
                    .map(|&c| (c, FifoCommand::parse(c))),
            );
            if n < buf.len() {
                break;
            }
        }
        out
    }

    /// Moves to another slot; an error leaves the one in use as it is.
    pub(super) fn switch(&mut self, slot: usize) -> Result<&Path, String> {
        let Some(path) = self.slots.get(slot) else {
            return Err(format!(
                "there is no slot {slot} ({} --master-fifo given)",
                self.slots.len()
            ));
        };
        self.fd = make(path)?;
        self.active = slot;
        Ok(&self.slots[slot])
    }

    /// The FIFO in use, removed at the master's end.
    pub(super) fn remove(&self) {
        let _ = std::fs::remove_file(&self.slots[self.active]);
    }
}

/// A FIFO at `path` (any FIFO already there is replaced, as uWSGI does),
/// opened for reading without blocking. Opened read-write, so that it
/// never reads as ended when the last writer closes.
fn make(path: &Path) -> Result<OwnedFd, String> {
    let fail = |e: nix::errno::Errno| format!("--master-fifo {}: {e}", path.display());
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_fifo() {
            return Err(format!(
                "--master-fifo {}: something other than a FIFO is there; not replaced",
                path.display()
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("--master-fifo {}: a NUL byte in the path", path.display()))?;
    nix::unistd::mkfifo(c.as_c_str(), Mode::from_bits_truncate(0o600)).map_err(fail)?;
    open(
        c.as_c_str(),
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_from_the_fifo() {
        let dir = std::env::temp_dir().join(format!("oxgate-fifo-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let (a, b) = (dir.join("a.fifo"), dir.join("b.fifo"));
        let mut fifo = MasterFifo::open(&[a.clone(), b.clone()]).unwrap().unwrap();
        std::fs::write(&a, "r\nc+x").unwrap();
        let got: Vec<_> = fifo
            .read()
            .into_iter()
            .map(|(c, cmd)| (c, cmd.map(|x| x.0)))
            .collect();
        assert_eq!(
            got,
            [
                (b'r', Some(FifoCommand::Signal(libc::SIGHUP))),
                (b'c', Some(FifoCommand::Signal(ReloadKind::Chain.signal()))),
                (b'+', Some(FifoCommand::Signal(libc::SIGTTIN))),
                (b'x', None),
            ]
        );
        assert!(fifo.read().is_empty(), "nothing more, and no end either");
        assert_eq!(fifo.switch(1).unwrap(), b.as_path());
        std::fs::write(&b, "q").unwrap();
        assert_eq!(fifo.read()[0].0, b'q');
        assert!(fifo.switch(5).is_err());
        std::fs::write(dir.join("file"), "").unwrap();
        assert!(
            make(&dir.join("file"))
                .unwrap_err()
                .contains("not replaced")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
