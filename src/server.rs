//! Runs the server in this process: bind, start Python, load the app, serve
//! until a stop signal. (The master/worker process model builds on this.)

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::http::{ConnInfo, FlushQueue, HttpSettings, serve_connection};
use crate::listen::{self, Listener};
use crate::python::{self, WsgiHost};

/// How long a graceful stop waits for requests in flight before giving up
/// on them (uWSGI's --reload-mercy default is 60 s; 30 s keeps stops brisk).
const STOP_MERCY: Duration = Duration::from_secs(30);

pub fn run(cfg: Config) -> Result<(), String> {
    // Bind first: a taken address fails fast, before the app is imported.
    let mut listeners = Vec::new();
    for spec in &cfg.http_sockets {
        let addr = listen::parse(spec)?;
        listeners.push((
            addr.clone(),
            listen::bind(&addr, cfg.listen_backlog, cfg.chmod_socket)?,
        ));
    }

    for (k, v) in &cfg.env {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var(k, v) };
    }
    if let Some(dir) = &cfg.chdir {
        std::env::set_current_dir(dir).map_err(|e| format!("--chdir {}: {e}", dir.display()))?;
    }
    python::initialize(cfg.home.as_deref())?;
    let host = Arc::new(python::load(&python::LoadOptions {
        app: &cfg.app,
        pythonpath: &cfg.pythonpath,
        threads: cfg.threads,
    })?);

    let app_name = match &cfg.app.source {
        crate::config::AppSource::File(f) => format!("{}:{}", f.display(), cfg.app.callable),
        crate::config::AppSource::Module(m) => format!("{m}:{}", cfg.app.callable),
    };
    let addrs: Vec<String> = listeners.iter().map(|(a, _)| a.to_string()).collect();
    eprintln!(
        "oxgate {}: serving {app_name} on http://{} (pid {}, {} Python thread{})",
        env!("CARGO_PKG_VERSION"),
        addrs.join(", http://"),
        std::process::id(),
        cfg.threads,
        if cfg.threads == 1 { "" } else { "s" }
    );

    let settings = Arc::new(HttpSettings {
        limit_post: cfg.limit_post,
        max_head: cfg.buffer_size,
        head_timeout: cfg.socket_timeout,
    });
    // The runtime is built only now: no runtime thread may exist before a
    // fork, and this process may one day be a forked worker.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    rt.block_on(serve(listeners, host, settings))?;
    python::run_atexit();
    Ok(())
}

async fn serve(
    listeners: Vec<(listen::Address, Listener)>,
    host: Arc<WsgiHost>,
    settings: Arc<HttpSettings>,
) -> Result<(), String> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let flush = Arc::new(FlushQueue::default());
    tokio::spawn(flush.clone().run());
    // Every connection holds a clone; when all are gone, so are the requests.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    for (addr, listener) in listeners {
        let host = host.clone();
        let settings = settings.clone();
        let stop = stop_rx.clone();
        let alive = alive_tx.clone();
        let flush = flush.clone();
        match listener {
            Listener::Tcp(l) => {
                let l = tokio::net::TcpListener::from_std(l)
                    .map_err(|e| format!("cannot use {addr}: {e}"))?;
                tokio::spawn(async move {
                    let local = l.local_addr().ok();
                    let mut stop_accepting = stop.clone();
                    loop {
                        let accepted = tokio::select! {
                            r = l.accept() => r,
                            _ = stop_accepting.changed() => break,
                        };
                        match accepted {
                            Ok((stream, peer)) => {
                                let _ = stream.set_nodelay(true);
                                let info = ConnInfo::new(local, Some(peer));
                                let (h, s, st, a, f) = (
                                    host.clone(),
                                    settings.clone(),
                                    stop.clone(),
                                    alive.clone(),
                                    flush.clone(),
                                );
                                tokio::spawn(async move {
                                    serve_connection(stream, info, h, s, f, st).await;
                                    drop(a);
                                });
                            }
                            Err(e) => accept_failed(&addr, e).await,
                        }
                    }
                });
            }
            Listener::Unix(l, _path) => {
                let l = tokio::net::UnixListener::from_std(l)
                    .map_err(|e| format!("cannot use {addr}: {e}"))?;
                tokio::spawn(async move {
                    let mut stop_accepting = stop.clone();
                    loop {
                        let accepted = tokio::select! {
                            r = l.accept() => r,
                            _ = stop_accepting.changed() => break,
                        };
                        match accepted {
                            Ok((stream, _)) => {
                                let info = ConnInfo::new(None, None);
                                let (h, s, st, a, f) = (
                                    host.clone(),
                                    settings.clone(),
                                    stop.clone(),
                                    alive.clone(),
                                    flush.clone(),
                                );
                                tokio::spawn(async move {
                                    serve_connection(stream, info, h, s, f, st).await;
                                    drop(a);
                                });
                            }
                            Err(e) => accept_failed(&addr, e).await,
                        }
                    }
                });
            }
        }
    }
    drop(alive_tx);

    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut quit = signal(SignalKind::quit()).map_err(|e| e.to_string())?;
    let why = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = quit.recv() => "SIGQUIT",
    };
    eprintln!(
        "oxgate: {why} received, finishing requests in flight (a second SIGINT stops at once)"
    );
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = alive_rx.recv() => {}
        _ = int.recv() => eprintln!("oxgate: second SIGINT, stopping now"),
        _ = tokio::time::sleep(STOP_MERCY) => {
            eprintln!("oxgate: requests still running after {}s, stopping anyway", STOP_MERCY.as_secs());
        }
    }
    Ok(())
}

/// Accept errors (too many open files, say) must not spin the loop.
async fn accept_failed(addr: &listen::Address, e: std::io::Error) {
    eprintln!("oxgate: accept on {addr} failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
