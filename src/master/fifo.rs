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
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
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
            // uWSGI's w and W reload the workers only; oxgate's reloads
            // always re-execute the master too (docs/migrating.md).
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
    /// The FIFO the previous master image handed over (after a reload),
    /// still in its slot; else the first slot's, made anew (replacing a
    /// FIFO, or a file a command left when nobody was reading, at that
    /// path).
    pub(super) fn open_or_adopt(
        slots: &[PathBuf],
        handed: Option<super::handover::HandedFifo>,
    ) -> Result<Option<MasterFifo>, String> {
        let handed = handed.map(|h| {
            // SAFETY: the previous image left this descriptor open for us
            // across exec and no longer uses it; it is wrapped once, here.
            let fd = unsafe { OwnedFd::from_raw_fd(h.fd) };
            let _ = nix::fcntl::fcntl(
                &fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            (fd, h.slot)
        });
        if slots.is_empty() {
            // No longer configured: the handed descriptor is closed.
            return Ok(None);
        }
        if let Some((fd, slot)) = handed
            && slot < slots.len()
            && same_file(&slots[slot], &fd)
        {
            return Ok(Some(MasterFifo {
                slots: slots.to_vec(),
                active: slot,
                fd,
            }));
        }
        let fd = make(&slots[0])?;
        Ok(Some(MasterFifo {
            slots: slots.to_vec(),
            active: 0,
            fd,
        }))
    }

    pub(super) fn slot(&self) -> usize {
        self.active
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

    /// The FIFO in use, removed at the master's end, unless another
    /// server has made its own at that path since.
    pub(super) fn remove(&self) {
        let path = &self.slots[self.active];
        if same_file(path, &self.fd) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A FIFO at `path` (any FIFO already there is replaced, as uWSGI does),
/// opened for reading without blocking. Opened read-write, so that it
/// never reads as ended when the last writer closes.
fn make(path: &Path) -> Result<OwnedFd, String> {
    let fail = |e: nix::errno::Errno| format!("--master-fifo {}: {e}", path.display());
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        // A regular file is what `echo q > PATH` leaves when no server
        // was reading: replaced, as uWSGI does. Anything else is kept.
        let t = meta.file_type();
        if !(t.is_fifo() || t.is_file()) {
            return Err(format!(
                "--master-fifo {}: something other than a FIFO or a file is there; not replaced",
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

/// Whether `path` is the file open on `fd`.
fn same_file(path: &Path, fd: &OwnedFd) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(open) = nix::sys::stat::fstat(fd) else {
        return false;
    };
    std::fs::metadata(path).is_ok_and(|m| m.dev() == open.st_dev && m.ino() == open.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_from_the_fifo() {
        let dir = std::env::temp_dir().join(format!("oxgate-fifo-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let (a, b) = (dir.join("a.fifo"), dir.join("b.fifo"));
        let mut fifo = MasterFifo::open_or_adopt(&[a.clone(), b.clone()], None)
            .unwrap()
            .unwrap();
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
        // A file a command left while nobody read is replaced; a
        // directory is not.
        std::fs::write(dir.join("file"), "q").unwrap();
        assert!(make(&dir.join("file")).is_ok());
        std::fs::create_dir_all(dir.join("dir")).unwrap();
        assert!(make(&dir.join("dir")).unwrap_err().contains("not replaced"));
        // The end removes the FIFO in use, but not one another server
        // made since at that path.
        fifo.remove();
        assert!(!b.exists());
        let fifo = MasterFifo::open_or_adopt(std::slice::from_ref(&a), None)
            .unwrap()
            .unwrap();
        make(&a).unwrap();
        fifo.remove();
        assert!(a.exists(), "another server's FIFO is kept");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
