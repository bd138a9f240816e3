//! A directory that requests name files under, held open: the static
//! files' roots and the CGI directories. A path under it is opened safely:
//! the file opened must lie under the root once every symbolic link is
//! followed. The kernel checks that: openat2(2) with RESOLVE_BENEATH from
//! the root's descriptor fails rather than leave it, so a link swapped in
//! meanwhile cannot escape. A path it refuses (a link out, which an allowed
//! directory may permit, or an absolute link) is opened by name instead and
//! checked by where the descriptor really points (`/proc/self/fd`); so is
//! every path on a kernel without openat2.

use std::fs::{File, Metadata, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

/// Why a path under the root gave no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Nothing there.
    Missing,
    /// There, but not to be opened: a link out of the root, no permission.
    Forbidden,
}

/// A directory, held open.
pub struct RootDir {
    pub dir: PathBuf,
    /// The directory, opened at start-up (`None` if it did not exist then,
    /// or openat2 is missing: then paths are opened by name).
    fd: Option<OwnedFd>,
    /// Where a file may really be when links are followed by name: the
    /// root's canonical path, then the allowed directories (`--static-safe`).
    allowed: Vec<PathBuf>,
}

const OPEN_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_CLOEXEC)
    // A FIFO must not block the open (it is refused right after).
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY);

impl RootDir {
    pub fn new(dir: &Path, safe: &[PathBuf]) -> RootDir {
        let canonical = |d: &Path| d.canonicalize().unwrap_or_else(|_| d.to_path_buf());
        let dir = canonical(dir);
        let fd = nix::fcntl::open(
            &dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok();
        RootDir {
            allowed: std::iter::once(dir.clone())
                .chain(safe.iter().map(|d| canonical(d)))
                .collect(),
            dir,
            fd,
        }
    }

    /// Opens `rel` (relative, no `..`) under the root: the file and its
    /// metadata.
    pub fn open_rel(&self, rel: &Path) -> Result<(File, Metadata), Refused> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        if let Some(root) = &self.fd {
            let how = OpenHow::new()
                .flags(OPEN_FLAGS)
                .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            match nix::fcntl::openat2(root, rel, how) {
                Ok(fd) => {
                    let file = File::from(fd);
                    let meta = file.metadata().map_err(|_| Refused::Forbidden)?;
                    return Ok((file, meta));
                }
                // Leaves the root, or goes through an absolute link (which
                // RESOLVE_BENEATH refuses even when it points back inside):
                // followed by name, then checked by where it lands.
                Err(Errno::EXDEV | Errno::ENOSYS) => {}
                Err(e) => return Err(refusal(e as i32)),
            }
        }
        let (file, meta) = open_by_name(&self.dir.join(rel))?;
        if really_under(&file, &self.allowed) {
            Ok((file, meta))
        } else {
            Err(Refused::Forbidden)
        }
    }

    /// Opens `rel` as `open_rel` does, and says whether no link was on the
    /// way under the root (a file so opened is named by `script_name`
    /// without asking the kernel).
    pub fn open_plain(&self, rel: &Path) -> Result<(File, Metadata, bool), Refused> {
        if let Some(root) = &self.fd
            && !rel.as_os_str().is_empty()
        {
            let how = OpenHow::new().flags(OPEN_FLAGS).resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS
                    | ResolveFlag::RESOLVE_NO_SYMLINKS,
            );
            match nix::fcntl::openat2(root, rel, how) {
                Ok(fd) => {
                    let file = File::from(fd);
                    let meta = file.metadata().map_err(|_| Refused::Forbidden)?;
                    return Ok((file, meta, true));
                }
                // A link on the way: followed as `open_rel` follows it.
                Err(Errno::ELOOP | Errno::EXDEV | Errno::ENOSYS) => {}
                Err(e) => return Err(refusal(e as i32)),
            }
        }
        let (file, meta) = self.open_rel(rel)?;
        Ok((file, meta, false))
    }

    /// Where a script `open_plain` opened really is (every link followed),
    /// for it to be run by name. With no link on the way, the root's path
    /// joined with `rel` (which holds no `.` or `..`), if that name still
    /// leads to the file opened: a root renamed since start-up (`mv www
    /// www.old`) leaves the descriptor on the old tree and the name on
    /// another, which must not be run unchecked. A stat of the name is
    /// cheaper than the readlink of /proc/self/fd that answers otherwise.
    pub fn script_name(
        &self,
        rel: &Path,
        file: &File,
        meta: &Metadata,
        plain: bool,
    ) -> Option<PathBuf> {
        if plain {
            let named = self.dir.join(rel);
            if std::fs::metadata(&named)
                .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
            {
                return Some(named);
            }
        }
        RootDir::real_path(file)
    }

    /// Where an open file really is, after every link.
    pub fn real_path(file: &File) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
    }

    /// As if the kernel had no openat2: every path is opened by name.
    #[cfg(test)]
    pub fn by_name_only(mut self) -> RootDir {
        self.fd = None;
        self
    }
}

/// Whether an open file is really under one of `allowed`: the kernel's
/// answer after every link was followed.
fn really_under(file: &File, allowed: &[PathBuf]) -> bool {
    RootDir::real_path(file).is_some_and(|real| allowed.iter().any(|dir| real.starts_with(dir)))
}

/// What a failed open means for the request.
fn refusal(errno: i32) -> Refused {
    match errno {
        libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG => Refused::Missing,
        _ => Refused::Forbidden,
    }
}

fn open_by_name(path: &Path) -> Result<(File, Metadata), Refused> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound | ErrorKind::NotADirectory => Refused::Missing,
            _ => refusal(e.raw_os_error().unwrap_or(0)),
        })?;
    let meta = file.metadata().map_err(|_| Refused::Forbidden)?;
    Ok((file, meta))
}
