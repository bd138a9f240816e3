//! Start-up, shared by every mode: daemonize, bind, pidfile, privileges;
//! then the master, or a single process (`--no-master`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::signal::unix::SignalKind;

use crate::config::{Config, LogLevel};
use crate::handlers::python;
use crate::lifecycle::Failure;
use crate::listen::{self, Address, Protocol, Socket};
use crate::master::{self, Handover};
use crate::process;
use crate::request::health::{Health, HealthSource};
use crate::request::{Outcome, RequestObserver, VarName};
use crate::worker::apps::{app_name, load_app};
use crate::worker::reqlog::{Counts, RequestLog};
use crate::worker::serve::{front_ends, runtime, serve};

/// The sockets the configuration names, with their kind.
fn socket_specs(cfg: &Config) -> impl Iterator<Item = (&String, &'static str)> {
    cfg.http_sockets
        .iter()
        .map(|s| (s, "http"))
        .chain(cfg.https_sockets.iter().map(|s| (&s.addr, "https")))
        .chain(cfg.uwsgi_sockets.iter().map(|s| (s, "uwsgi")))
        .chain(cfg.scgi_sockets.iter().map(|s| (s, "scgi")))
        .chain(cfg.fastcgi_sockets.iter().map(|s| (s, "fastcgi")))
}

/// The users and groups `--uid`, `--gid` and `--chown-socket` name exist.
pub fn check_names(cfg: &Config) -> Result<(), String> {
    let p = &cfg.process;
    process::check_names(
        p.uid.as_deref(),
        p.gid.as_deref(),
        p.chown_socket.as_deref(),
    )
}

/// What `--check-app` finds on this machine that the start would fail on
/// before it serves: a user or group that does not exist (`--uid`,
/// `--gid`, `--chown-socket`), and a unix socket, pidfile or log file in
/// a directory that does not exist.
pub fn check_start(cfg: &Config) -> Result<(), String> {
    check_names(cfg)?;
    let p = &cfg.process;
    let mut paths = Vec::new();
    for (spec, kind) in socket_specs(cfg) {
        if let Ok(Address::Unix(path)) = listen::parse(spec) {
            paths.push((format!("the {kind} socket"), path));
        }
    }
    for (option, path) in [
        ("--pidfile", &p.pidfile),
        ("--pidfile2", &p.pidfile2),
        ("--logto", &p.logto),
        ("--logto2", &p.logto2),
        ("--daemonize", &p.daemonize),
        ("--daemonize2", &p.daemonize2),
    ] {
        if let Some(path) = path {
            paths.push((option.to_string(), path.clone()));
        }
    }
    for (what, path) in paths {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(format!(
                "{what} {}: the directory {} does not exist",
                path.display(),
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Whether a logger writes to stdout, which `--logto` must then leave be.
fn keeps_stdout(cfg: &Config) -> bool {
    cfg.log_files
        .loggers
        .as_ref()
        .is_some_and(|plan| plan.writes_to_stdout())
}

pub fn run(cfg: Config) -> Result<(), Failure> {
    let inherited = Handover::take_from_env();
    // First, while this process has one thread: the room rewrites the
    // environment's pointers (`sys::proctitle`).
    // SAFETY: no thread has started yet: the interpreter hosting oxgate
    // (the pip-installed command) was checked to run one alone
    // (`python::Host::read`), and oxgate starts its own later.
    if cfg.process.titles.wanted() && !unsafe { crate::sys::proctitle::make_room() } {
        crate::say!("oxgate: warning: cannot set process titles: /proc/self/stat is unreadable");
    }
    if cfg.process.master {
        // Before the pidfile or a socket is visible: a reload or stop sent
        // the moment they appear waits for the master's handlers.
        master::block_signals_early();
    }
    let p = &cfg.process;
    if let Some(format) = &cfg.log_files.date {
        crate::log::say::set_date_format(format);
    }
    crate::log::say::set_encoders(&cfg.log_files.encoders);
    if let Some(prefix) = &cfg.log_files.prefix {
        crate::log::say::set_prefix(prefix);
    }
    let level = cfg.log_files.level;
    crate::log::say::set_quiet(level > LogLevel::Info, level > LogLevel::Warning);
    if let Some(mask) = p.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    let daemonized = match &p.daemonize {
        Some(log) if inherited.is_none() => {
            process::daemonize(log)?;
            true
        }
        _ => false,
    };
    // A file logger after --daemonize's file: the log goes there, as
    // uWSGI's loggers take it over (the resolved --logto is that logger
    // alone when there is a --daemonize).
    if let Some(log) = &p.logto {
        if inherited.is_some() && process::stderr_is(log) {
            // Re-executed on reload: the log is already behind stderr.
            process::remember_log_path(log);
        } else {
            carry_on(
                &inherited,
                process::redirect_output(log, keeps_stdout(&cfg)),
            )?;
        }
    } else if !daemonized && let Some(log) = p.daemonize.as_ref().or(p.daemonize2.as_ref()) {
        // Re-executed on reload: the log is already behind stderr.
        process::remember_log_path(log);
    }

    if let Some(path) = &cfg.log_files.requests {
        carry_on(&inherited, crate::log::file::open_request_log(path))?;
    }
    if let Some(plan) = &cfg.log_files.loggers {
        crate::log::route::install(plan)?;
        if cfg.log_files.maxsize.is_some()
            || plan
                .loggers
                .iter()
                .chain(&plan.request_loggers)
                .any(|l| l.rotate.is_some())
        {
            crate::say!(
                "oxgate: warning: --log-maxsize (and a file logger's maxsize=) rotates the log file (--logto, --daemonize, a lone file logger) only; rotate the loggers' files with logrotate and SIGUSR1, which reopens them"
            );
        }
    }

    // Bind first: a taken address fails fast, before the app is imported.
    // After a reload the sockets come from the previous master image.
    // Sockets from systemd (socket activation), or from the master image
    // that re-executed into this one, are used as they are.
    let wanted = socket_specs(&cfg)
        .map(|(spec, kind)| Ok((listen::parse(spec)?, kind)))
        .collect::<Result<Vec<_>, String>>()?;
    let wanted = one_socket_per_address(wanted)?;
    // Certificates are read before any socket is bound or app loaded: a
    // bad one stops the start with the reason.
    let here = std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?;
    crate::frontend::tls::install(&cfg, &here)?;
    // As in Gunicorn, a StatsD server that cannot be reached yet (an
    // agent that starts later) does not stop the start.
    if let Some(statsd) = &cfg.statsd
        && let Err(e) =
            crate::log::statsd::install(&statsd.target, &statsd.prefix, statsd.tags.as_deref())
    {
        crate::say!("oxgate: warning: {e}; no StatsD metrics are sent");
    }
    // Before anything is bound or written: a failed start leaves nothing.
    if inherited.is_none() {
        check_names(&cfg)?;
    }
    // Before any socket is bound: a second start by mistake must not take
    // over a unix socket the running server listens on.
    if inherited.is_none()
        && p.pidfile_exclusive
        && let Some(pidfile) = &p.pidfile
    {
        process::refuse_live_pidfile(pidfile)?;
    }
    // Gunicorn calls on_starting before it binds (real hooks make the
    // unix socket's directory there), with its settings applied: the
    // environment, chdir and pythonpath. The binds' paths were resolved
    // from here (`unix_sockets_within_chdir`): back here for them.
    if inherited.is_none()
        && p.master
        && (python::has_gunicorn_hook("on_starting")
            || python::has_gunicorn_hook("nworkers_changed"))
    {
        enter_app_environment(&cfg)?;
        master::starting_hooks(&cfg)?;
        std::env::set_current_dir(&here).map_err(|e| format!("back to {}: {e}", here.display()))?;
    }
    let mut listeners: Vec<Socket> = match &inherited {
        Some(inh) => {
            // Its work is done (config::resolve read it): the app must not
            // see it.
            // SAFETY: startup::run runs before any thread exists; no
            // other thread reads or writes the environment meanwhile.
            unsafe { std::env::remove_var(crate::lifecycle::SYSTEMD_SOCKETS_ENV) };
            inh.listeners()
        }
        None => process::systemd_sockets(&wanted, cfg.activated_protocol),
    };
    let named = |a: &Address| wanted.iter().any(|(w, _)| w == a);
    if inherited.is_some() {
        // A socket the configuration no longer names is closed: served on
        // as the previous image served it, an HTTPS one would now speak
        // cleartext. One systemd passed is served on, named or not, as at
        // the start (systemd holds it, and would keep queueing connections
        // to it that no one answers), unless HTTPS sockets are configured
        // now, which want every socket named.
        let keep = |s: &Socket| named(&s.addr) || (s.activated && cfg.https_sockets.is_empty());
        listeners.retain(|s| {
            if !keep(s) {
                crate::say!("oxgate: {} is no longer configured: closed", s.addr);
            }
            keep(s)
        });
    } else if !cfg.https_sockets.is_empty()
        && let Some(s) = listeners.iter().find(|s| !named(&s.addr))
    {
        return Err(format!(
            "systemd passed a socket at {}, which no --http-socket or --https-socket names: \
             with HTTPS sockets, name every socket systemd passes, so that none is served in cleartext by mistake",
            s.addr
        )
        .into());
    }
    // Inherited descriptors (fd://N) are taken before anything is bound
    // here: a socket of our own could otherwise get a number the user
    // named and be taken for the inherited one.
    let (mut inherited_fds, to_bind): (Vec<_>, Vec<_>) = wanted
        .into_iter()
        .partition(|(a, _)| matches!(a, Address::Fd(_)));
    // Stdin's socket last: it moves to the lowest free number, which
    // must not be one another fd://N names.
    inherited_fds.sort_by_key(|(a, _)| *a == Address::Fd(0));
    if inherited.is_none()
        && let Some(max) = crate::sys::procfs::somaxconn()
        && cfg.listen_backlog > max
    {
        // uWSGI refuses to start; the kernel would cap it without a word.
        crate::say!(
            "oxgate: warning: --listen {} is over net.core.somaxconn ({max}): each socket's backlog is {max} (raise it with sysctl net.core.somaxconn={})",
            cfg.listen_backlog,
            cfg.listen_backlog
        );
    }
    for (addr, protocol) in inherited_fds.into_iter().chain(to_bind) {
        if listeners.iter().any(|s| s.addr == addr) {
            continue;
        }
        if let Address::Fd(n) = addr
            && listeners.iter().any(|s| s.listener.raw_fd() == n)
        {
            return Err(format!(
                "fd://{n}: systemd passed that descriptor already (LISTEN_FDS); name it once"
            )
            .into());
        }
        let listener = match addr {
            Address::Fd(n) => listen::adopt_inherited(n).map(|(_, l)| l),
            _ => listen::bind(&addr, cfg.listen_backlog, cfg.chmod_socket, cfg.reuse_port),
        };
        // A socket newly named in a reload's configuration that cannot be
        // bound leaves the others served.
        let Some(listener) = carry_on(&inherited, listener)? else {
            continue;
        };
        if let (Address::Unix(path), Some(owner)) = (&addr, &p.chown_socket) {
            process::chown_path(path, owner)?;
        } else if let Address::Unix(path) = &addr
            && let Err(e) = process::chown_socket_to_ids(path, p.uid.as_deref(), p.gid.as_deref())
        {
            // Not asked for by name (--chown-socket): a filesystem or user
            // namespace that refuses chown leaves the socket as it is.
            crate::say!("oxgate: warning: {e}; the socket keeps its owner");
        }
        listeners.push(Socket {
            addr,
            listener,
            protocol,
            activated: false,
        });
    }
    if listeners.is_empty() {
        return Err("no socket to listen on: add --http-socket ADDR".into());
    }
    // A pidfile that names this master already (a reload re-executes it
    // under its pid) is kept: after --uid it may not be opened again.
    let write_pidfile = |pidfile: &std::path::Path| {
        if inherited.is_some() && process::names_this_process(pidfile) {
            return Ok(None);
        }
        carry_on(&inherited, process::write_pidfile(pidfile))
    };
    if let Some(pidfile) = &p.pidfile {
        write_pidfile(pidfile)?;
    }
    if python::host().is_some() || python::python_running() {
        // Not when the interpreter started with the value already (a
        // reload's re-executed master has the environment --env made).
        let started_without = |k: &str, v: &str| std::env::var_os(k).is_none_or(|now| now != *v);
        for (k, _) in cfg
            .env
            .iter()
            .filter(|(k, v)| k.starts_with("PYTHON") && started_without(k, v))
        {
            crate::say!(
                "oxgate: warning: --env {k}: the interpreter running oxgate has started already and reads {k} only when it starts: after a reload (which starts it again) it will, now it does not. Set it in the environment that runs the oxgate command"
            );
        }
    }
    // Here, where they were opened: --chdir comes next.
    if cfg.log_files.chown && inherited.is_none() {
        process::chown_logs(&log_files(&cfg), p.uid.as_deref(), p.gid.as_deref())?;
    }
    enter_app_environment(&cfg)?;
    process::drop_privileges(p.uid.as_deref(), p.gid.as_deref(), !p.no_initgroups)?;
    if let Some(log) = &p.logto2 {
        carry_on(
            &inherited,
            process::redirect_output(log, keeps_stdout(&cfg)),
        )?;
    }
    // What --vacuum may remove at the end: the socket files as they are
    // now, which another server may have replaced by then.
    let bound = p.vacuum.then(|| bound_unix_sockets(&listeners));
    if let Some(pidfile) = &p.pidfile2
        && let Err(e) = write_pidfile(pidfile)
    {
        if let Some(bound) = &bound {
            vacuum(&cfg, bound);
        }
        return Err(e.into());
    }
    if let Some(bound) = &bound {
        // A stop while the app loads ends the process from its signal
        // handler, before the vacuum below.
        let files = bound
            .iter()
            .map(|(path, _)| path.clone())
            .chain(pidfiles_written(&cfg))
            .filter_map(|path| {
                std::ffi::CString::new(path.into_os_string().into_encoded_bytes()).ok()
            })
            .collect();
        crate::master::vacuum_if_stopped_loading(files);
    }
    // --daemonize: bound and written, so the command may return.
    process::detached();
    let result = if p.master {
        if let Some(title) = p.titles.master() {
            crate::sys::proctitle::set(&title);
        }
        master::run(&cfg, listeners, inherited)
    } else {
        single(&cfg, listeners)
    };
    if let Some(bound) = bound {
        vacuum(&cfg, &bound);
    }
    result
}

/// The log files opened before the privileges are dropped (`--logto`,
/// `--daemonize`, `--req-logger file:`, the loggers' files), from the
/// directory they were opened in.
fn log_files(cfg: &Config) -> Vec<&std::path::Path> {
    use crate::log::route::Target;
    let p = &cfg.process;
    let mut paths: Vec<&std::path::Path> = [&p.logto, &p.daemonize, &cfg.log_files.requests]
        .into_iter()
        .flatten()
        .map(|p| p.as_path())
        .filter(|p| process::udp_log_address(p).is_none())
        .collect();
    if let Some(plan) = &cfg.log_files.loggers {
        for logger in plan.loggers.iter().chain(&plan.request_loggers) {
            if let Target::File(path) = &logger.target {
                paths.push(path);
            }
        }
    }
    paths
}

/// The unix socket paths of `listeners`, with the file each is now.
fn bound_unix_sockets(listeners: &[Socket]) -> Vec<(std::path::PathBuf, (u64, u64))> {
    use std::os::unix::fs::MetadataExt;
    let start = process::start_dir();
    listeners
        .iter()
        // systemd's: it made the file and keeps the socket for the next
        // start (Gunicorn and uWSGI leave them too).
        .filter(|s| !s.activated)
        .filter_map(|s| match &s.addr {
            Address::Unix(path) => {
                let path = start.join(path);
                let meta = std::fs::metadata(&path).ok()?;
                Some((path, (meta.dev(), meta.ino())))
            }
            _ => None,
        })
        .collect()
}

/// `--check-app`: imports the apps as a worker would, in this process,
/// with no socket bound and nothing served.
pub fn check_app(cfg: &Config) -> Result<(), String> {
    enter_app_environment(cfg)?;
    load_app(cfg).map(drop)
}

/// What the app is imported in: --env, --chdir and --pythonpath.
fn enter_app_environment(cfg: &Config) -> Result<(), String> {
    for (k, v) in &cfg.env {
        // SAFETY: set_var races only with another thread reading or writing
        // the environment at the same time, and no other thread exists yet:
        // the runtime, the Python thread pool and the workers all start
        // later, and an interpreter hosting oxgate runs no other thread
        // (python::Host::read refuses to start otherwise).
        unsafe { std::env::set_var(k, v) };
    }
    for k in &cfg.unenv {
        // SAFETY: as for set_var above: no other thread exists yet.
        unsafe { std::env::remove_var(k) };
    }
    if let Some(dir) = &cfg.chdir {
        std::env::set_current_dir(dir).map_err(|e| format!("--chdir {}: {e}", dir.display()))?;
    }
    // Python may have started already (to run a Gunicorn config file, or
    // hosting oxgate): its hooks see --env, --chdir and --pythonpath.
    python::prepare_started_python(&cfg.pythonpath)
}

/// Each address once, with the protocol it serves: the same socket named
/// twice for one protocol (in a file and on the command line) is one
/// socket, but an address named for two protocols is refused: only the
/// first would be served, and the other's clients would be turned away in
/// a protocol they do not speak.
fn one_socket_per_address(
    wanted: Vec<(Address, &'static str)>,
) -> Result<Vec<(Address, Protocol)>, String> {
    let mut once: Vec<(Address, &'static str)> = Vec::with_capacity(wanted.len());
    for (addr, kind) in wanted {
        match once.iter().find(|(a, _)| *a == addr) {
            Some((_, k)) if *k == kind => {}
            Some((_, k)) => {
                return Err(format!(
                    "{addr} is named as a {k} socket and as a {kind} socket: one address serves one protocol"
                ));
            }
            None => once.push((addr, kind)),
        }
    }
    Ok(once
        .into_iter()
        .map(|(addr, kind)| {
            let protocol = match kind {
                "uwsgi" => Protocol::Uwsgi,
                "scgi" => Protocol::Scgi,
                "fastcgi" => Protocol::Fastcgi,
                _ => Protocol::Http,
            };
            (addr, protocol)
        })
        .collect())
}

/// `--vacuum`: the unix sockets and pidfiles this server created, where
/// it created them: a relative path from the directory oxgate started in
/// (or, for --pidfile2, written after it, from --chdir's), not from the
/// one it is in now, where a file of that name may be someone else's.
/// A socket file that is no longer the one bound (another server started
/// on the same path) and a pidfile naming another process are left, as
/// uWSGI leaves them: removing them cut the other server off.
pub fn vacuum(cfg: &Config, bound: &[(std::path::PathBuf, (u64, u64))]) {
    use std::os::unix::fs::MetadataExt;
    let start = process::start_dir();
    let remove = |path: &std::path::Path| match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            crate::say!("oxgate: --vacuum: cannot remove {}: {e}", path.display());
        }
        _ => {}
    };
    for (path, file) in bound {
        match std::fs::metadata(path) {
            Ok(now) if (now.dev(), now.ino()) == *file => remove(path),
            Ok(_) => crate::say!(
                "oxgate: --vacuum: {} is another socket now (another server's?): left in place",
                path.display()
            ),
            Err(_) => {}
        }
    }
    // The stats and metrics sockets, closed by now: removed unless a
    // server listens there (another one, started on the same path).
    for addr in [&cfg.stats.addr, &cfg.stats.metrics].into_iter().flatten() {
        let addr = addr.strip_prefix("http://").unwrap_or(addr);
        if let Ok(crate::listen::Address::Unix(path)) = crate::listen::parse(addr) {
            let path = start.join(path);
            let is_socket = std::fs::symlink_metadata(&path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
            if is_socket && std::os::unix::net::UnixStream::connect(&path).is_err() {
                remove(&path);
            }
        }
    }
    let ours = std::process::id().to_string();
    for path in pidfiles_written(cfg) {
        match std::fs::read_to_string(&path) {
            Ok(pid) if pid.trim() == ours => remove(&path),
            Ok(_) => crate::say!(
                "oxgate: --vacuum: {} names another process now: left in place",
                path.display()
            ),
            Err(_) => {}
        }
    }
}

/// Where --pidfile and --pidfile2 were written: a relative path from the
/// directory oxgate started in, or (--pidfile2, written after it) from
/// --chdir's.
fn pidfiles_written(cfg: &Config) -> impl Iterator<Item = std::path::PathBuf> {
    let start = process::start_dir();
    let chdir = cfg.chdir.as_ref().map_or(start.clone(), |d| start.join(d));
    [
        cfg.process.pidfile.as_ref().map(|f| start.join(f)),
        cfg.process.pidfile2.as_ref().map(|f| chdir.join(f)),
    ]
    .into_iter()
    .flatten()
}

/// `--no-master`: this process serves.
fn single(cfg: &Config, listeners: Vec<Socket>) -> Result<(), Failure> {
    // The master feeds it; one process serving has no loop of its own to.
    if std::env::var_os("NOTIFY_SOCKET").is_some() && std::env::var_os("WATCHDOG_USEC").is_some() {
        crate::say!(
            "oxgate: warning: systemd's watchdog (WatchdogSec=) is fed by the master alone: with --no-master nothing feeds it, and systemd will stop the service; remove WatchdogSec= or run with the master"
        );
    }
    // uWSGI's single process is its worker 1.
    if let Some(title) = cfg.process.titles.worker(1) {
        crate::sys::proctitle::set(&title);
    }
    // First: the app's threads, the output reader and the runtime inherit it.
    if cfg.process.sched_batch {
        process::sched_batch_or_say("the single process");
    }
    let apps = load_app(cfg)?;
    if let Some(kinds) = apps.describe(cfg) {
        crate::note!("oxgate: {kinds}");
    }
    if let Some(log) = &cfg.process.daemonize2 {
        process::daemonize(log)?;
        process::write_pidfiles(&cfg.process)?;
        process::detached();
    }
    // This process runs the pools' managers; their parts are named for it,
    // so made once it has daemonized.
    crate::handlers::fastcgi::IN_PROCESS.store(true, std::sync::atomic::Ordering::Relaxed);
    crate::handlers::fastcgi::prepare(&cfg.fastcgi)?;
    // After the last fork, which would not keep the reader's thread.
    crate::log::route::capture_output()?;
    crate::note!(
        "oxgate {}: serving {} on {} (pid {}, single process, {})",
        env!("CARGO_PKG_VERSION"),
        app_name(cfg),
        listen::describe(&listeners, |a| crate::frontend::tls::listener_for(a)
            .is_some()),
        std::process::id(),
        if cfg.needs_python() {
            format!(
                "{} Python thread{}",
                cfg.threads,
                if cfg.threads == 1 { "" } else { "s" }
            )
        } else {
            "no Python app".to_string()
        }
    );
    if let Some(notice) = process::root_without_uid_notice(cfg.process.uid.as_deref()) {
        crate::note!("{notice}");
    }
    if cfg.process.processes > 1 && cfg.process.processes_given {
        // uWSGI forks them unsupervised; here one process serves. Said,
        // so a migrated `master = false` does not lose workers unseen.
        crate::say!(
            "oxgate: warning: --processes {} needs the master (--master), which starts and watches the workers; --no-master serves in this one process",
            cfg.process.processes
        );
    }
    if cfg.process.drain_delay.is_some() {
        crate::say!("oxgate: warning: --drain-delay needs the master; --no-master stops at once");
    }
    if !cfg.process.master_fifo.is_empty() {
        crate::say!("oxgate: warning: --master-fifo is the master's; --no-master has none");
    }
    if cfg.stats.addr.is_some() || cfg.stats.metrics.is_some() || cfg.statsd.is_some() {
        crate::say!(
            "oxgate: warning: --stats, --metrics and --statsd-host are the master's; --no-master has none"
        );
    }
    let p = &cfg.process;
    let masters: Vec<&str> = [
        (p.harakiri.is_some(), "--harakiri"),
        (p.max_requests.is_some(), "--max-requests"),
        (p.max_worker_lifetime.is_some(), "--max-worker-lifetime"),
        (p.reload_on_rss.is_some(), "--reload-on-rss"),
        (p.evil_reload_on_rss.is_some(), "--evil-reload-on-rss"),
        (p.reload_on_as.is_some(), "--reload-on-as"),
        // uWSGI starts a master for these; here they would do nothing.
        (
            !p.touch_reload.is_empty(),
            "--touch-reload (or --touch-workers-reload)",
        ),
        (!cfg.log_files.touch_reopen.is_empty(), "--touch-logreopen"),
        (!p.touch_chain_reload.is_empty(), "--touch-chain-reload"),
        (!p.attach_daemons.is_empty(), "--attach-daemon"),
        (!p.smart_attach_daemons.is_empty(), "--smart-attach-daemon"),
        (p.py_autoreload.is_some(), "--py-autoreload"),
    ]
    .into_iter()
    .filter_map(|(given, name)| given.then_some(name))
    .collect();
    if !masters.is_empty() {
        crate::say!(
            "oxgate: warning: {} {} the master, which starts, watches and replaces workers; --no-master serves in this one process without {}",
            masters.join(", "),
            if masters.len() == 1 { "needs" } else { "need" },
            if masters.len() == 1 { "it" } else { "them" }
        );
    }
    // A startup that fails (an ASGI lifespan's) is uvicorn's 3, as in the
    // workers of a master.
    apps.start(None).map_err(|message| Failure {
        message,
        status: crate::lifecycle::EXIT_WORKERS_FAILED,
    })?;
    if cfg.log.active() {
        apps.set_observer(Arc::new(SingleLog {
            log: RequestLog::new(cfg.log.clone(), apps.cores(), 1),
            requests: AtomicU64::new(0),
        }));
    }
    crate::log::file::install_reopen_handler(libc::SIGUSR1);
    let main_rotation = cfg
        .log_files
        .maxsize
        .map(|max| (max, cfg.log_files.backupname.clone()));
    if main_rotation.is_some() || cfg.log_files.requests_rotation.is_some() {
        crate::log::file::spawn_rotator(main_rotation, cfg.log_files.requests_rotation.clone());
    }
    let rt = runtime()?;
    let served = rt.block_on(async {
        apps.on_runtime();
        ignore_master_signals();
        serve(
            listeners,
            apps.front_handler(cfg, Arc::new(ServingWhileUp)),
            front_ends(cfg),
            &[
                (SignalKind::terminate(), "SIGTERM"),
                (SignalKind::interrupt(), "SIGINT"),
                (SignalKind::quit(), "SIGQUIT"),
            ],
            // No master kills this process: the apps' shutdown comes after
            // the requests' mercy.
            || crate::worker::serve::StopTimes {
                mercy: cfg.process.reload_mercy,
                budget: cfg.process.reload_mercy + std::time::Duration::from_secs(5),
            },
            // Serving: a `Type=notify` unit is started (without it, it
            // never was, and systemd killed it at TimeoutStartSec).
            || process::sd_notify("READY=1"),
            || apps.going_away(),
        )
        .await
    });
    // The runtime's last tasks (connections the stop cut) may leave work
    // for after their writes (a WSGI result's close(), the log line).
    drop(rt);
    crate::request::after_write::finish();
    apps.stop();
    served?;
    python::run_atexit(cfg.process.reload_mercy);
    Ok(())
}

/// After a reload (`inherited`), a step that fails (a log file or pidfile
/// the dropped privileges cannot write, say) is a warning: the new image
/// serves on as the old one did, where at a first start it is an error.
fn carry_on<T>(inherited: &Option<Handover>, step: Result<T, String>) -> Result<Option<T>, String> {
    match step {
        Ok(done) => Ok(Some(done)),
        Err(e) if inherited.is_some() => {
            crate::say!("oxgate: warning: after the reload: {e}; serving on without it");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Without a master, the signals that ask one for a reload (SIGHUP,
/// SIGUSR2, and SIGRTMIN+1/+2 from `oxgate --reload`/`--chain-reload`)
/// would end the process at their default, mid-request: they are logged
/// and ignored. So are SIGTTIN and SIGTTOU, a worker more or less, which
/// would stop it; those are ignored by disposition, not caught: a caught
/// one would restart, for ever, the read from the terminal (an app's
/// `breakpoint()` in a background job) that raised it, where ignored the
/// read fails.
fn ignore_master_signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let reloads = [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGRTMIN() + 1, "SIGRTMIN+1"),
        (libc::SIGRTMIN() + 2, "SIGRTMIN+2"),
    ];
    for (raw, name) in reloads {
        let Ok(mut stream) = signal(SignalKind::from_raw(raw)) else {
            continue;
        };
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                crate::say!("oxgate: {name} ignored: reloads need the master (--master)");
            }
        });
    }
    for sig in [libc::SIGTTIN, libc::SIGTTOU] {
        // SAFETY: setting a disposition to SIG_IGN runs no code of ours.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// `--health-path` without a master: the app is loaded before the sockets
/// are served, and there is no drain.
struct ServingWhileUp;

impl HealthSource for ServingWhileUp {
    fn health(&self) -> Health {
        Health::Serving
    }
}

/// The request log of a process without a master (no scoreboard).
struct SingleLog {
    log: RequestLog,
    requests: AtomicU64,
}

impl RequestObserver for SingleLog {
    fn started(&self, core: usize, vars: &[(VarName, Bytes)], protocol: Protocol) {
        self.log.started(core, vars, protocol);
    }

    fn answered(&self, vars: &[(VarName, Bytes)], outcome: &Outcome, elapsed_us: u64) {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let counts = Counts {
            worker: n,
            total: n,
        };
        self.log.answered(vars, outcome, elapsed_us, counts);
    }

    fn finished(&self, core: usize, outcome: &Outcome) {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        self.log.finished(
            core,
            outcome,
            Counts {
                worker: n,
                total: n,
            },
        );
    }
}
