//! A directory that requests name files under, held open: the static
//! files' roots and the CGI directories. A path under it is opened safely:
//! the file opened must lie under the root once every symbolic link is
//! followed. The kernel checks that: openat2(2) with RESOLVE_BENEATH from
//! the root's descriptor fails rather than leave it, so a link swapped in
//! meanwhile cannot escape. A path it refuses (a link out, which an allowed
//! directory may permit, or an absolute link) is opened by name instead and
//! checked by where the descriptor really points (`/proc/self/fd`); so is
//! every path on a kernel without openat2.
//!
//! The directory is looked up by its configured name again at most once a
//! second (`RECHECK`): a deploy that puts another directory in its place,
//! or one made after start-up, is served from as nginx, which opens by
//! name, would serve it.

use std::fs::{File, Metadata, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

/// Why a path under the root gave no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Nothing there.
    Missing,
    /// There, but not to be opened: a link out of the root, no permission.
    Forbidden(Denied),
    /// Not opened for want of resources (descriptors, memory): the
    /// server's trouble, not the path's; a 503 rather than a 403.
    Unavailable,
}

/// Why a path that is there is not served: said in the log with its 403,
/// as nginx logs the open() that failed and uWSGI a link out of the root;
/// a 403 alone leaves whoever deployed the files guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// A link to a place outside the root (and any allowed directory).
    OutOfRoot,
    /// Neither a file nor a directory: a FIFO, a socket, a device.
    NotAFile,
    /// The kernel refused to open it (no permission, a loop of links).
    Open(Errno),
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::OutOfRoot => f.write_str("a link out of the directory it is served from"),
            Denied::NotAFile => f.write_str("not a regular file"),
            Denied::Open(e) => write!(f, "cannot be opened: {}", e.desc()),
        }
    }
}

impl Denied {
    /// Says why `path` was answered 403.
    pub fn log(self, path: &Path) {
        crate::say!("oxgate: {}: {self}; answered 403 Forbidden", path.display());
    }

    /// Says why, where the request goes on to the app (--check-static).
    pub fn log_left_to_app(self, path: &Path) {
        crate::say!("oxgate: {}: {self}; left to the app", path.display());
    }
}

/// A directory, held open.
pub struct RootDir {
    /// The directory as configured, links kept (a deploy's `current`):
    /// what is looked up again.
    named: PathBuf,
    /// The `--static-safe` directories, canonical.
    safe: Vec<PathBuf>,
    /// The directory as last looked up, and when.
    held: Mutex<(Arc<Held>, Option<Instant>)>,
    /// How long a lookup stands.
    recheck: Duration,
    /// Never hold a descriptor (as on a kernel without openat2).
    by_name: bool,
}

/// What a lookup of the directory found.
struct Held {
    /// The directory (`None` if it does not exist: then paths are opened
    /// by name, and none is there).
    fd: Option<OwnedFd>,
    /// Its device and inode, to tell a directory put in its place.
    id: Option<(u64, u64)>,
    /// Where a file may really be when links are followed by name: the
    /// directory's canonical path, then the allowed ones (`--static-safe`).
    allowed: Vec<PathBuf>,
}

/// A deploy that puts a new directory in the old one's place (`mv static
/// static.old; mv static.new static`, or a `current` link moved to a new
/// release) is served from within this long, as nginx, which opens by name,
/// serves it at once; and one that did not exist at start-up is found.
const RECHECK: Duration = Duration::from_secs(1);

const OPEN_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_CLOEXEC)
    // A FIFO must not block the open (it is refused right after).
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY);

/// The device and inode of the directory at `path`, links followed.
fn dir_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

fn canonical(d: &Path) -> PathBuf {
    d.canonicalize().unwrap_or_else(|_| d.to_path_buf())
}

impl RootDir {
    pub fn new(dir: &Path, safe: &[PathBuf]) -> RootDir {
        let named = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let safe: Vec<PathBuf> = safe.iter().map(|d| canonical(d)).collect();
        let held = Held::look_up(&named, &safe, false);
        RootDir {
            named,
            safe,
            held: Mutex::new((Arc::new(held), Some(Instant::now()))),
            recheck: RECHECK,
            by_name: false,
        }
    }

    /// The directory as looked up at most `recheck` ago, looked up again
    /// if that was longer ago (a stat of its name, and a new descriptor
    /// only if another directory is there now).
    fn held(&self) -> Arc<Held> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // A directory not there is looked for at every request: caught
        // between the unlink and the new link of `ln -sfn`, a second of
        // 403s would follow.
        if held.0.id.is_some()
            && held
                .1
                .is_some_and(|at| now.saturating_duration_since(at) < self.recheck)
        {
            return held.0.clone();
        }
        let id = dir_id(&self.named);
        if id != held.0.id || (id.is_some() && held.0.fd.is_none() && !self.by_name) {
            held.0 = Arc::new(Held::look_up(&self.named, &self.safe, self.by_name));
        }
        held.1 = Some(now);
        held.0.clone()
    }

    /// Where the directory is now, every link followed: the name requests'
    /// paths are joined to (DOCUMENT_ROOT, SCRIPT_FILENAME), which follows
    /// a deploy as the descriptor does.
    pub fn dir(&self) -> PathBuf {
        self.held().allowed[0].clone()
    }

    /// The directory as configured, links kept.
    pub fn named(&self) -> &Path {
        &self.named
    }

    /// Opens `rel` (relative, no `..`) under the root: the file and its
    /// metadata.
    pub fn open_rel(&self, rel: &Path) -> Result<(File, Metadata), Refused> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let held = self.held();
        if let Some(root) = &held.fd {
            let beneath = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
            let how = OpenHow::new().flags(OPEN_FLAGS).resolve(beneath);
            match nix::fcntl::openat2(root, rel, how) {
                Ok(fd) => {
                    let file = File::from(fd);
                    let meta = file.metadata().map_err(denied)?;
                    return Ok((file, meta));
                }
                // Leaves the root, or goes through an absolute link (which
                // RESOLVE_BENEATH refuses even when it points back inside):
                // followed by name, then checked by where it lands. EAGAIN:
                // a `..` was resolved while something was renamed anywhere
                // on the machine (openat2(2) asks for a retry): the same.
                Err(Errno::EXDEV | Errno::ENOSYS | Errno::EAGAIN) => {}
                // A directory that may be searched, not listed (mode 711,
                // a home directory's docroot): its index may still be
                // served, as nginx, which needs only search, serves it.
                Err(Errno::EACCES) => {
                    let how = OpenHow::new()
                        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
                        .resolve(beneath);
                    let dir = nix::fcntl::openat2(root, rel, how)
                        .map(File::from)
                        .ok()
                        .and_then(|f| f.metadata().ok().filter(|m| m.is_dir()).map(|m| (f, m)));
                    return dir.ok_or(Refused::Forbidden(Denied::Open(Errno::EACCES)));
                }
                Err(e) => return Err(refusal(e as i32)),
            }
        }
        open_by_name(&held.allowed[0].join(rel), &held.allowed)
    }

    /// The name a script `open_rel` opened is run by: the root's path
    /// joined with `rel` (which holds no `.` or `..`), links in it kept, as
    /// Apache and nginx name it (a multi-call script reads its `$0`, an
    /// `nph-` link is an NPH script), if that name still leads to the
    /// file opened; else where the file really is. A root renamed since
    /// start-up (`mv www www.old`) leaves the descriptor on the old tree
    /// and the name on another, which must not be run unchecked.
    pub fn script_name(&self, rel: &Path, file: &File, meta: &Metadata) -> Option<PathBuf> {
        let named = self.dir().join(rel);
        if std::fs::metadata(&named).is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino())) {
            return Some(named);
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
        self.by_name = true;
        self.held = Mutex::new((
            Arc::new(Held::look_up(&self.named, &self.safe, true)),
            Some(Instant::now()),
        ));
        self
    }

    /// Looks the directory up again at every open.
    #[cfg(test)]
    pub fn rechecked_always(mut self) -> RootDir {
        self.recheck = Duration::ZERO;
        self
    }
}

impl Held {
    fn look_up(named: &Path, safe: &[PathBuf], by_name: bool) -> Held {
        let real = canonical(named);
        let fd = if by_name {
            None
        } else {
            nix::fcntl::open(
                &real,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok()
        };
        // The descriptor's own: a directory swapped in between the open
        // and a stat of the name would otherwise be taken for the one held.
        let id = match &fd {
            Some(fd) => nix::sys::stat::fstat(fd).ok().map(|s| (s.st_dev, s.st_ino)),
            None => dir_id(&real),
        };
        Held {
            fd,
            id,
            allowed: std::iter::once(real).chain(safe.iter().cloned()).collect(),
        }
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
        libc::EMFILE | libc::ENFILE | libc::ENOMEM => {
            log_unavailable(errno);
            Refused::Unavailable
        }
        e => Refused::Forbidden(Denied::Open(Errno::from_raw(e))),
    }
}

/// A failed fstat of an open file (which should not fail).
fn denied(e: std::io::Error) -> Refused {
    Refused::Forbidden(Denied::Open(Errno::from_raw(e.raw_os_error().unwrap_or(0))))
}

/// Says, at most once a minute, that files could not be opened for want
/// of resources (a flood must not flood the log too).
fn log_unavailable(errno: i32) {
    static LOGGED: crate::log::say::Throttle = crate::log::say::Throttle::new();
    if LOGGED.ready(60) {
        crate::say!(
            "oxgate: worker {}: cannot open files: {}; answering 503 (said at most once a minute)",
            std::process::id(),
            Errno::from_raw(errno).desc()
        );
    }
}

/// Opens `path`, every link followed, if it lands under one of `allowed`
/// and is a file or a directory. Looked at first through an `O_PATH`
/// descriptor, which opens nothing: a FIFO or a device a link points at
/// (outside the root, or not a file) is never opened for reading, which
/// would wake a FIFO's waiting writer, then kill it with SIGPIPE at the
/// close, or arm a device such as a watchdog.
fn open_by_name(path: &Path, allowed: &[PathBuf]) -> Result<(File, Metadata), Refused> {
    let not_opened = |e: std::io::Error| match e.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory => Refused::Missing,
        _ => refusal(e.raw_os_error().unwrap_or(0)),
    };
    let place = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .map_err(not_opened)?;
    let meta = place.metadata().map_err(denied)?;
    if !(meta.is_file() || meta.is_dir()) {
        return Err(Refused::Forbidden(Denied::NotAFile));
    }
    if !really_under(&place, allowed) {
        return Err(Refused::Forbidden(Denied::OutOfRoot));
    }
    // The same file, through the descriptor: a rename meanwhile does not
    // swap another in.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", place.as_raw_fd()))
        .map_err(not_opened)?;
    let meta = file.metadata().map_err(denied)?;
    Ok((file, meta))
}
