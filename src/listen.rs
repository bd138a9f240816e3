//! Socket addresses as uWSGI writes them, and binding them.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use socket2::{Domain, Type};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(String),
    /// A unix socket path.
    Unix(PathBuf),
    /// A Linux abstract unix socket (`@name`).
    Abstract(String),
    /// A listening socket the process that started us left open on this
    /// descriptor (`fd://N`, as Gunicorn's bind and uvicorn's `--fd` name it).
    Fd(i32),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(a) => f.write_str(a),
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "@{n}"),
            Address::Fd(n) => write!(f, "fd://{n}"),
        }
    }
}

/// Reads `host:port`, `:port`, `[::1]:port`, `@abstract`, `fd://N` or a
/// unix path. Like uWSGI, anything without a colon is a unix socket path.
pub fn parse(addr: &str) -> Result<Address, String> {
    // A comment after the address (`127.0.0.1:8000 # the app`), which
    // uWSGI's reading of the port as a number passes over.
    let addr = addr
        .find([' ', '\t'])
        .filter(|&i| addr[i..].trim_start().starts_with(['#', ';']))
        .map_or(addr, |i| &addr[..i])
        .trim();
    if addr.is_empty() {
        return Err("empty socket address".into());
    }
    if let Some(n) = addr.strip_prefix("fd://") {
        return match n.parse::<i32>() {
            // 0: the socket a supervisor passes as stdin (supervisord's
            // fcgi-program, inetd, systemd's StandardInput=socket).
            Ok(n) if n == 0 || n > 2 => Ok(Address::Fd(n)),
            Ok(1..=2) => Err(format!(
                "{addr:?}: descriptors 1 and 2 are stdout and stderr, which oxgate logs to; pass the socket on 0 (stdin), or 3 or above"
            )),
            _ => Err(format!(
                "cannot understand socket address {addr:?}: {n:?} is not a file descriptor number"
            )),
        };
    }
    if let Some(name) = addr.strip_prefix('@') {
        return Ok(Address::Abstract(name.to_string()));
    }
    if let Some(n) = addr.strip_prefix('=')
        && n.parse::<u32>().is_ok()
    {
        return Err(format!(
            "{addr:?} names uWSGI's --shared-socket {n}, which oxgate does not have: give the address itself (oxgate binds every socket before --uid and --gid drop privileges, so a port below 1024 works as it does with a shared socket)"
        ));
    }
    // Gunicorn's and uvicorn's forms, which uWSGI would take for paths.
    let addr = addr.strip_prefix("tcp://").unwrap_or(addr);
    // `unix://rel.sock` is relative too, as Gunicorn reads it.
    if let Some(path) = addr.strip_prefix("unix:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        return Ok(Address::Unix(PathBuf::from(path)));
    }
    if addr.contains('/') || !addr.contains(':') {
        return Ok(Address::Unix(PathBuf::from(addr)));
    }
    let (host, port) = addr.rsplit_once(':').expect("has a colon");
    // `: 8000`, as uWSGI reads it.
    let port = port.trim_start();
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "cannot understand socket address {addr:?}: the port {port:?} is not a number from 0 to 65535 \
             (expected host:port, :port, [::1]:port or a unix socket path)"
        ));
    }
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok(Address::Tcp(format!("{host}:{port}")))
}

/// What a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Http,
    Uwsgi,
    Scgi,
    Fastcgi,
}

impl Protocol {
    /// In the order of their index (`as usize`), for per-protocol counters.
    pub const ALL: [Protocol; 4] = [
        Protocol::Http,
        Protocol::Uwsgi,
        Protocol::Scgi,
        Protocol::Fastcgi,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Uwsgi => "uwsgi",
            Protocol::Scgi => "scgi",
            Protocol::Fastcgi => "fastcgi",
        }
    }

    pub fn from_name(s: &str) -> Option<Protocol> {
        match s {
            "http" => Some(Protocol::Http),
            "uwsgi" => Some(Protocol::Uwsgi),
            "scgi" => Some(Protocol::Scgi),
            "fastcgi" => Some(Protocol::Fastcgi),
            _ => None,
        }
    }
}

/// A bound socket and the protocol served on it.
pub struct Socket {
    pub addr: Address,
    pub listener: Listener,
    pub protocol: Protocol,
    /// Passed by systemd (socket activation): served whether or not the
    /// configuration names it, across reloads too.
    pub activated: bool,
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, Option<PathBuf>),
}

impl Socket {
    /// The socket's name in the stats and metrics: the address as given,
    /// with the port the system chose for port 0 (uWSGI shows the bound
    /// one; `127.0.0.1:0` named no socket a client could reach).
    pub fn shown_name(&self) -> String {
        if let (Address::Tcp(given), Listener::Tcp(l)) = (&self.addr, &self.listener)
            && let Some(host) = given.strip_suffix(":0")
            && let Ok(bound) = l.local_addr()
        {
            return format!("{host}:{}", bound.port());
        }
        self.addr.to_string()
    }
}

impl Listener {
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }
}

/// What to do about a failed bind, said after the system's message.
fn bind_failure_hint(addr: &Address, kind: std::io::ErrorKind) -> &'static str {
    match kind {
        std::io::ErrorKind::AddrInUse => {
            " (is another server running there? stop it or choose another address)"
        }
        std::io::ErrorKind::PermissionDenied => match addr {
            Address::Tcp(_) => {
                " (ports below 1024 need root or the CAP_NET_BIND_SERVICE capability; \
                 under systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE)"
            }
            Address::Unix(_) => " (this user cannot create a file in that directory)",
            Address::Abstract(_) | Address::Fd(_) => "",
        },
        std::io::ErrorKind::AddrNotAvailable => " (that IP address is not on this machine)",
        _ => "",
    }
}

/// Binds an address, with messages that say what to do when it fails.
pub fn bind(
    addr: &Address,
    backlog: i32,
    chmod: u32,
    reuse_port: bool,
) -> Result<Listener, String> {
    let fail = |e: std::io::Error| {
        let hint = bind_failure_hint(addr, e.kind());
        format!("cannot listen on {addr}: {e}{hint}")
    };
    match addr {
        Address::Tcp(a) => {
            let sa: SocketAddr = a
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {a}: {e}"))?
                .next()
                .ok_or_else(|| format!("{a} resolves to no address"))?;
            let socket =
                socket2::Socket::new(Domain::for_address(sa), Type::STREAM, None).map_err(fail)?;
            socket.set_reuse_address(true).map_err(fail)?;
            if reuse_port {
                socket.set_reuse_port(true).map_err(fail)?;
            }
            if sa.is_ipv6() {
                let _ = socket.set_only_v6(false);
            }
            socket.bind(&sa.into()).map_err(fail)?;
            socket.listen(backlog).map_err(fail)?;
            socket.set_nonblocking(true).map_err(fail)?;
            Ok(Listener::Tcp(socket.into()))
        }
        Address::Unix(path) => {
            // A socket file left by a previous run would make bind fail;
            // uWSGI removes it too. Anything else at that path is kept,
            // and named for what it is.
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                if meta.file_type().is_socket() {
                    let _ = std::fs::remove_file(path);
                } else {
                    return Err(format!(
                        "cannot listen on {addr}: {} is there and is not a socket (remove it, or choose another path)",
                        path.display()
                    ));
                }
            }
            let socket = socket2::Socket::new(Domain::UNIX, Type::STREAM, None).map_err(fail)?;
            let sa = socket2::SockAddr::unix(path).map_err(fail)?;
            socket.bind(&sa).map_err(fail)?;
            // Before listen(): until then nobody can connect, whatever
            // mode the umask gave the file.
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(chmod))
                    .map_err(fail)?;
            }
            socket.listen(backlog).map_err(fail)?;
            socket.set_nonblocking(true).map_err(fail)?;
            Ok(Listener::Unix(socket.into(), Some(path.clone())))
        }
        Address::Abstract(name) => {
            use std::os::unix::ffi::OsStrExt;
            // A path that starts with a NUL is the abstract name after it.
            let mut path = vec![0u8];
            path.extend_from_slice(name.as_bytes());
            let sa = socket2::SockAddr::unix(std::ffi::OsStr::from_bytes(&path)).map_err(fail)?;
            let socket = socket2::Socket::new(Domain::UNIX, Type::STREAM, None).map_err(fail)?;
            socket.bind(&sa).map_err(fail)?;
            // --listen's backlog, as for every other socket.
            socket.listen(backlog).map_err(fail)?;
            socket.set_nonblocking(true).map_err(fail)?;
            Ok(Listener::Unix(socket.into(), None))
        }
        // Taken over by startup (`adopt_inherited`), before anything is
        // bound: only the sockets that serve requests can be inherited.
        Address::Fd(n) => Err(format!(
            "fd://{n} names an inherited socket, which only the sockets that serve requests can be"
        )),
    }
}

/// Takes over a listening socket that the process which started us left
/// open on descriptor `fd`: Gunicorn's `fd://N` bind, uvicorn's `--fd`.
/// Refuses a descriptor that is not open or not a listening socket, so a
/// wrong number is an error at start, never a file of ours served as a
/// socket.
///
/// Call it before this process binds any socket of its own: an inherited
/// descriptor was open when we were executed, so nothing we opened since
/// can have its number, and a listening socket at that number before our
/// own binds can only be the inherited one.
pub fn adopt_inherited(fd: i32) -> Result<(Address, Listener), String> {
    use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
    let what = format!("fd://{fd}");
    // Checked on the bare number first: no owner is made for a descriptor
    // that is not open.
    // SAFETY: F_GETFD only reads the descriptor's flags; on a number that
    // is not open it fails with EBADF and changes nothing.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(format!(
            "{what}: descriptor {fd} is not open (the program that starts oxgate must leave the listening socket open on it)"
        ));
    }
    // SAFETY: the descriptor is open (checked just above) and stays open
    // while this borrow lives: nothing closes descriptors meanwhile on this
    // single thread.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let listening = socket2::SockRef::from(&borrowed)
        .is_listener()
        .map_err(|e| format!("{what}: descriptor {fd} is not a socket ({e})"))?;
    if !listening {
        return Err(format!(
            "{what}: descriptor {fd} is a socket but not a listening one (call listen() on it before starting oxgate)"
        ));
    }
    // SAFETY: the descriptor is an open listening socket, and by this
    // function's contract no socket of this process's own is bound yet,
    // so it is the inherited one, which nothing else in the process owns.
    // The caller takes each number once (startup refuses a repeated one).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Stdin is not kept as the socket: the app's sys.stdin, and every
    // program it runs, would read from it. The socket moves to a number of
    // its own and stdin reads /dev/null, as under a daemon.
    let owned = match fd {
        0 => {
            let moved = owned
                .try_clone()
                .map_err(|e| format!("{what}: cannot move the socket off stdin: {e}"))?;
            crate::sys::void_fd(std::os::fd::IntoRawFd::into_raw_fd(owned));
            moved
        }
        _ => owned,
    };
    let listener = listener_of(owned).map_err(|e| format!("{what}: {e}"))?;
    Ok((Address::Fd(fd), listener))
}

/// Wraps an open listening socket as the listener its family calls for,
/// close-on-exec and non-blocking like the ones `bind` makes.
pub fn listener_of(owned: std::os::fd::OwnedFd) -> std::io::Result<Listener> {
    let socket = socket2::Socket::from(owned);
    socket.set_cloexec(true)?;
    socket.set_nonblocking(true)?;
    let unix = socket.local_addr()?.is_unix();
    let fd = std::os::fd::OwnedFd::from(socket);
    Ok(if unix {
        // No path to remove at the end: the program that made the socket
        // owns its file.
        Listener::Unix(UnixListener::from(fd), None)
    } else {
        Listener::Tcp(TcpListener::from(fd))
    })
}

/// "http://127.0.0.1:8000, uwsgi://unix:/run/app.sock" for the log.
pub fn describe(sockets: &[Socket], is_tls: impl Fn(&Address) -> bool) -> String {
    sockets
        .iter()
        .map(|s| {
            let scheme = match s.protocol {
                Protocol::Http if is_tls(&s.addr) => "https",
                p => p.name(),
            };
            match (&s.addr, &s.listener) {
                // Port 0: the one the kernel picked, which a client needs.
                (Address::Tcp(a), Listener::Tcp(l)) if a.ends_with(":0") => match l.local_addr() {
                    Ok(bound) => format!("{scheme}://{bound}"),
                    Err(_) => format!("{scheme}://{a}"),
                },
                (Address::Tcp(a), _) => format!("{scheme}://{a}"),
                (Address::Fd(n), _) => format!("{scheme} on inherited fd {n}"),
                (other, _) => format!("{scheme}://unix:{other}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_forms() {
        assert_eq!(
            parse("127.0.0.1:8000").unwrap(),
            Address::Tcp("127.0.0.1:8000".into())
        );
        assert_eq!(parse(":8000").unwrap(), Address::Tcp("0.0.0.0:8000".into()));
        assert_eq!(
            parse("[::1]:8000").unwrap(),
            Address::Tcp("[::1]:8000".into())
        );
        assert_eq!(
            parse("localhost:80").unwrap(),
            Address::Tcp("localhost:80".into())
        );
        assert_eq!(
            parse("/tmp/app.sock").unwrap(),
            Address::Unix("/tmp/app.sock".into())
        );
        assert_eq!(parse("app.sock").unwrap(), Address::Unix("app.sock".into()));
        assert_eq!(
            parse("@oxgate").unwrap(),
            Address::Abstract("oxgate".into())
        );
        assert_eq!(parse("fd://3").unwrap(), Address::Fd(3));
        assert_eq!(parse("fd://3").unwrap().to_string(), "fd://3");
        assert!(parse("fd://-1").is_err());
        assert!(parse("fd://2").unwrap_err().contains("stderr"));
        assert!(parse("fd://1").unwrap_err().contains("stdout"));
        assert_eq!(parse("fd://0").unwrap(), Address::Fd(0));
        assert!(parse("fd://three").is_err());
        assert!(parse("127.0.0.1:http").unwrap_err().contains("port"));
        assert!(parse("1.2.3.4:99999").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn a_refused_bind_says_what_would_allow_it() {
        use std::io::ErrorKind::PermissionDenied;
        let port = bind_failure_hint(&parse(":80").unwrap(), PermissionDenied);
        assert!(port.contains("CAP_NET_BIND_SERVICE"), "{port}");
        let path = bind_failure_hint(&parse("/run/app/app.sock").unwrap(), PermissionDenied);
        assert!(path.contains("directory"), "{path}");
        assert!(!path.contains("CAP_NET"), "{path}");
    }

    #[test]
    fn what_uwsgi_reads_past_is_read_past() {
        // Both shapes are in real files; uWSGI reads the port with atoi.
        for (written, meant) in [
            ("127.0.0.1:8000 # the app", "127.0.0.1:8000"),
            ("127.0.0.1:8000\t; note: main", "127.0.0.1:8000"),
            (": 8001", "0.0.0.0:8001"),
        ] {
            assert_eq!(
                parse(written).unwrap(),
                Address::Tcp(meant.into()),
                "{written}"
            );
        }
        assert!(parse("127.0.0.1:8000 main").is_err());
        assert!(parse("127.0.0.1:80x").is_err());
    }

    #[test]
    fn an_inherited_descriptor_must_be_a_listening_socket() {
        use std::os::fd::AsRawFd;
        // Far above anything a test opens (a just-closed number could be
        // taken again by another test's thread).
        let err = adopt_inherited(1 << 20).err().unwrap();
        assert!(err.contains("not open"), "{err}");
        let file = std::fs::File::open("/dev/null").unwrap();
        let err = adopt_inherited(file.as_raw_fd()).err().unwrap();
        assert!(err.contains("not a socket"), "{err}");
        let unbound = socket2::Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let err = adopt_inherited(unbound.as_raw_fd()).err().unwrap();
        assert!(err.contains("not a listening one"), "{err}");
        // A listening one is taken over: its number now belongs to the
        // listener returned, so the original owner lets go of it.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(l);
        let (addr, listener) = adopt_inherited(fd).unwrap();
        assert_eq!(addr, Address::Fd(fd));
        let Listener::Tcp(t) = listener else { panic!() };
        assert_eq!(t.local_addr().unwrap().port(), port);
    }

    #[test]
    fn address_in_use_is_explained() {
        let a = bind(&parse("127.0.0.1:0").unwrap(), 16, 0o660, false).unwrap();
        let Listener::Tcp(l) = a else { panic!() };
        let port = l.local_addr().unwrap().port();
        let err = bind(
            &parse(&format!("127.0.0.1:{port}")).unwrap(),
            16,
            0o660,
            false,
        )
        .err()
        .unwrap();
        assert!(err.contains("in use"), "{err}");
        assert!(err.contains("another server"), "{err}");
    }
}
