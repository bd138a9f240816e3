//! FastCGI apps behind oxgate: `--fastcgi-pass [MOUNT=]ADDR` sends the
//! requests under MOUNT to a FastCGI server oxgate does not start (a
//! php-fpm pool already running, a Perl or Python FastCGI app), a
//! connection per request ([`client`]).
//!
//! Without a document root, the whole mount is the app's, as a WSGI app's
//! is: SCRIPT_NAME is the mount, PATH_INFO the rest. With
//! `--fastcgi-app-docroot DIR` it is laid out as PHP apps are behind nginx:
//! a path naming a `.php` file under DIR runs that file (what follows it is
//! PATH_INFO), a directory runs its index, a path naming nothing runs
//! `--fastcgi-app-fallback` (the front controller), and other files there
//! are served from disk (see `worker::apps`).

mod client;
mod manager;
mod php;
mod pool;
mod shared;

pub use pool::{COUNTERS, IN_PROCESS, PoolCounters, WORKERS};
pub use shared::{keep_all, release_all};

/// The pools' manager process (forked by the master): runs until the
/// pools are released and unused, or SIGTERM.
pub fn serve_pools(settings: &FastcgiSettings) -> Result<(), String> {
    let pools = pool_specs(settings)?
        .into_iter()
        .map(|spec| {
            let shared =
                shared::get(spec.index).ok_or("a FastCGI pool's shared table is missing")?;
            Ok((Arc::new(spec), &**shared))
        })
        .collect::<Result<manager::Pools, String>>()?;
    manager::run_all(pools)
}

/// Makes the pools' shared parts (their sockets, table and pipes), in the
/// master or the single process, before anything forks.
pub fn prepare(settings: &FastcgiSettings) -> Result<(), String> {
    shared::prepare(
        &settings
            .apps
            .iter()
            .map(|a| a.processes)
            .collect::<Vec<_>>(),
    )
}

use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::root_dir::RootDir;
use super::script_path::{FoundScripts, Located};
use super::static_files::StaticFiles;
use crate::config::{FastcgiSettings, StaticMap, StaticSettings};
use crate::proto::cgi_response::Reply;
use crate::request::cgi::{ScriptPlace, script_variables};
use crate::request::{
    Answered, Handler, Request, RequestBody, RequestObserver, Responding, Response, Var,
    redirect_to_directory, var, with_length,
};
use client::{Call, Failure, Upstream};
use php::PhpCgi;
use pool::{Pool, PoolSpec};
use std::ffi::OsString;
use std::path::PathBuf;

/// What each `--fastcgi-app` pool runs, in order.
pub(crate) fn pool_specs(settings: &FastcgiSettings) -> Result<Vec<PoolSpec>, String> {
    settings
        .apps
        .iter()
        .enumerate()
        .map(|(index, app)| {
            let program = super::find_program(&app.command[0]).ok_or_else(|| {
                format!(
                    "--fastcgi-app {}: no program {:?} in PATH",
                    app.command.join(" "),
                    app.command[0]
                )
            })?;
            let mut env: Vec<(OsString, OsString)> = settings
                .env
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect();
            let runs = php::program_behind(&program, &app.command[1..]);
            let php = PhpCgi::of(&runs, &env, app.max_requests);
            let mut max_requests = app.max_requests;
            if let Some(php) = &php {
                php.set_env(&mut env);
                if php.prefork {
                    // php-cgi's forked child serves the cap, not the process
                    // oxgate started.
                    max_requests = None;
                }
            }
            // php-cgi reads a php.ini from its working directory before
            // the system's: started in the document root, a php.ini
            // dropped there (an upload, a CMS's sample) would set
            // auto_prepend_file or lift disable_functions. It runs each
            // script in the script's directory anyway; `/` as php-fpm.
            let cwd = match &php {
                Some(_) => Some(PathBuf::from("/")),
                None => settings.docroot.clone(),
            };
            Ok(PoolSpec {
                program,
                args: app.command[1..].iter().map(OsString::from).collect(),
                env,
                max_requests,
                php,
                cwd,
                name: app.command.join(" ").into(),
                pm: settings.pm,
                slowlog: settings.slowlog,
                spare: settings.spare,
                idle_timeout: settings.idle_timeout,
                index,
            })
        })
        .collect()
}

/// The extension of the scripts a document root runs (php-fpm's
/// `security.limit_extensions` default).
const SCRIPT_EXT: &[u8] = b".php";

/// The apps behind their mounts.
pub struct FastcgiApps {
    /// The longest mount first.
    mounts: Vec<(Vec<u8>, Backend)>,
    docroot: Option<RootDir>,
    /// The scripts found lately under the document root, and the
    /// fallback's (found with no index: apart).
    found: FoundScripts,
    found_fallback: FoundScripts,
    /// The document root's other files, served from disk.
    files: Option<Arc<StaticFiles>>,
    index: Vec<String>,
    fallback: Option<Vec<u8>>,
    timeout: Option<Duration>,
    limit_post: Option<u64>,
    /// The request log and the counters.
    answered: Answered,
    inner: Arc<dyn Handler>,
}

/// A server requests go to.
#[derive(Clone)]
enum Backend {
    /// `--fastcgi-pass`.
    Pass(Arc<Upstream>),
    /// `--fastcgi-app`.
    Pool(Arc<Pool>),
}

impl Backend {
    /// A pool of php-cgi, which runs whatever file SCRIPT_FILENAME names.
    /// (An upstream php-fpm checks the name itself.)
    fn runs_php(&self) -> bool {
        matches!(self, Backend::Pool(p) if p.spec().php.is_some())
    }

    fn name(&self) -> Arc<str> {
        match self {
            Backend::Pass(u) => format!("{}", u.addr).into(),
            Backend::Pool(p) => p.name().clone(),
        }
    }
}

/// Where a request goes.
struct Target {
    backend: Backend,
    script_name: Vec<u8>,
    path_info: Vec<u8>,
    script_filename: Option<Vec<u8>>,
}

enum Lookup {
    App,
    /// A file of the document root that is not a script.
    File,
    Answer(Response),
    Call(Box<Target>),
}

impl FastcgiApps {
    /// `safe`: where the document root's symbolic links may lead besides
    /// it (`--static-safe`), as for static files.
    pub fn new(
        settings: &FastcgiSettings,
        safe: &[std::path::PathBuf],
        limit_post: Option<u64>,
        inner: Arc<dyn Handler>,
    ) -> Result<FastcgiApps, String> {
        let docroot = match &settings.docroot {
            Some(dir) if !dir.is_dir() => {
                return Err(format!(
                    "--fastcgi-app-docroot {}: not a directory",
                    dir.display()
                ));
            }
            Some(dir) => Some(RootDir::new(dir, safe)),
            None => None,
        };
        let mut mounts: Vec<(Vec<u8>, Backend)> = settings
            .passes
            .iter()
            .map(|p| {
                (
                    p.mount.as_bytes().to_vec(),
                    // Not kept: see `client`.
                    Backend::Pass(Arc::new(Upstream::new(p.addr.clone(), false))),
                )
            })
            .collect();
        for (spec, app) in pool_specs(settings)?.into_iter().zip(&settings.apps) {
            mounts.push((
                app.mount.as_bytes().to_vec(),
                Backend::Pool(Arc::new(Pool::new(spec))),
            ));
        }
        mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
        let index = if settings.index.is_empty() {
            vec!["index.php".to_string()]
        } else {
            settings.index.clone()
        };
        let files = match &settings.docroot {
            Some(dir) => {
                let statics = StaticSettings {
                    maps: settings
                        .passes
                        .iter()
                        .map(|p| &p.mount)
                        .chain(settings.apps.iter().map(|a| &a.mount))
                        .map(|mount| StaticMap {
                            mount: mount.clone(),
                            dir: dir.clone(),
                            keep_mount: false,
                        })
                        .collect(),
                    skip_ext: vec![String::from_utf8_lossy(SCRIPT_EXT).into_owned()],
                    // A directory whose index is no script (index.html
                    // after index.php, as nginx's `index` lists them).
                    index: index
                        .iter()
                        .filter(|name| !name.as_bytes().ends_with(SCRIPT_EXT))
                        .cloned()
                        .collect(),
                    safe: safe.to_vec(),
                    ..StaticSettings::default()
                };
                Some(Arc::new(StaticFiles::new(&statics, inner.clone(), true)?))
            }
            None => None,
        };
        Ok(FastcgiApps {
            mounts,
            docroot,
            found: FoundScripts::default(),
            found_fallback: FoundScripts::default(),
            files,
            index,
            fallback: settings.fallback.as_ref().map(|f| f.as_bytes().to_vec()),
            timeout: settings.timeout,
            limit_post,
            answered: Answered::new(crate::request::HandlerKind::FastCgi),
            inner,
        })
    }

    /// Whether a pool's processes cannot be started now (a broken command,
    /// php.ini or extension): the server cannot serve what is mounted
    /// there, which `--health-path` says, as php-fpm's ping page (answered
    /// by a pool process) fails then.
    pub fn a_pool_cannot_start(&self) -> bool {
        self.mounts
            .iter()
            .any(|(_, backend)| matches!(backend, Backend::Pool(pool) if pool.start_failing()))
    }

    /// Leaves the pools, as the worker ends. Without a master, this
    /// process is their manager: their processes are stopped (and reaped)
    /// and their sockets removed.
    pub fn stop(&self) {
        for (_, backend) in &self.mounts {
            if let Backend::Pool(pool) = backend
                && let Some(shared) = pool.clean_up()
                && IN_PROCESS.load(Ordering::Relaxed)
            {
                manager::stop_now(pool.spec(), shared);
            }
        }
    }

    /// Joins the pools, on the worker's event loop; without a master, runs
    /// their managers there too.
    pub fn on_runtime(&self) {
        for (_, backend) in &self.mounts {
            if let Backend::Pool(pool) = backend
                && let Some(shared) = pool.start()
                && IN_PROCESS.load(Ordering::Relaxed)
            {
                tokio::spawn(manager::manage(pool.spec().clone(), shared, false));
            }
        }
    }

    pub fn set_observer(&self, observer: Arc<dyn RequestObserver>) {
        if let Some(files) = &self.files {
            files.set_observer(observer.clone());
        }
        self.answered.set(observer);
    }

    /// A path that names no file under the document root: the front
    /// controller (`--fastcgi-app-fallback`) if there is one, else the app
    /// behind.
    fn missing(
        &self,
        root: &RootDir,
        path: &[u8],
        script: &dyn Fn(&super::script_path::Script, &[u8]) -> Target,
        now: Instant,
    ) -> Lookup {
        let Some(front) = &self.fallback else {
            return Lookup::App;
        };
        // A PHP script that is not there is a 404, as nginx's `location ~
        // \.php$` sites answer it (`try_files $uri =404`, or php-fpm's
        // "File not found."): a bot's probe of /wp-login.php does not boot
        // the whole app. (A path after it, `/old.php/x`, is not matched by
        // `\.php$`, and goes to the front controller there too.)
        let last = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
        if last.len() > SCRIPT_EXT.len() && last.ends_with(SCRIPT_EXT) {
            return Lookup::Answer(Response::plain(404, "Not Found", "File not found.\n"));
        }
        match self.found_fallback.locate(root, front, &[], now) {
            Located::Script(s) => {
                let mut t = script(&s, &s.url_path);
                // The front controller reads the path from REQUEST_URI;
                // PATH_INFO stays empty, as with nginx's try_files.
                t.path_info.clear();
                Lookup::Call(Box::new(t))
            }
            _ => {
                crate::say!(
                    "oxgate: --fastcgi-app-fallback {}: no such script under the document root",
                    String::from_utf8_lossy(front)
                );
                Lookup::Answer(Response::plain(404, "Not Found", "Not Found\n"))
            }
        }
    }

    fn lookup(&self, req: &Request) -> Lookup {
        let get = |v: Var| var(&req.vars, v).map_or(&b""[..], |value| &value[..]);
        let mut path = get(Var::SCRIPT_NAME).to_vec();
        path.extend_from_slice(get(Var::PATH_INFO));
        let Some((mount, backend)) = self.mounts.iter().find(|(m, _)| {
            path.strip_prefix(&m[..])
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
        }) else {
            return Lookup::App;
        };
        let rest = &path[mount.len()..];
        if super::script_path::climbs(rest) {
            return Lookup::Answer(Response::plain(400, "Bad Request", "Bad Request\n"));
        }
        // The script the web server in front names (nginx's fastcgi_params
        // send SCRIPT_FILENAME) is the one run, as php-fpm takes it: oxgate
        // in php-fpm's place behind an unchanged site, whose `root` or
        // `alias` may differ from --fastcgi-app-docroot (one pool for many
        // sites). One that is not there (the web server in a container of
        // its own, its paths not ours) is looked for under the document
        // root, if there is one. (Over HTTP no client can name one: its
        // headers are HTTP_ variables.)
        let named = req
            .vars
            .iter()
            .find(|(k, v)| k.as_bytes() == b"SCRIPT_FILENAME" && v.starts_with(b"/"))
            .filter(|(_, file)| {
                self.docroot.is_none()
                    || std::path::Path::new(std::ffi::OsStr::from_bytes(file)).exists()
            });
        let Some(root) = self.docroot.as_ref().filter(|_| named.is_none()) else {
            if let Some((_, file)) = named {
                // php-fpm's security.limit_extensions: only a script that is
                // there and ends in .php runs. php-cgi would otherwise walk
                // back from /uploads/evil.jpg/x.php to run the image, and
                // any file the front end names would be read. Another
                // program (a flup app, fcgiwrap) is given it as sent, as
                // spawn-fcgi's are: nginx's stock fastcgi_params send it to
                // every FastCGI app.
                let path = std::path::Path::new(std::ffi::OsStr::from_bytes(file));
                if backend.runs_php() && (!file.ends_with(SCRIPT_EXT) || !path.is_file()) {
                    return Lookup::Answer(Response::plain(404, "Not Found", "File not found.\n"));
                }
                // A front end that made no split (nginx's fastcgi.conf
                // without fastcgi_split_path_info) sent the script's URL
                // as SCRIPT_NAME and no PATH_INFO, which the request took
                // as a WSGI app's at the root (SCRIPT_NAME "", PATH_INFO
                // the path): PHP is given them as sent, as by php-fpm (a
                // PHP script is never at SCRIPT_NAME ""). Another program
                // gets what the request has, as spawn-fcgi's do: a flup
                // app behind `fastcgi_param PATH_INFO` and no SCRIPT_NAME
                // routes on PATH_INFO.
                let (script_name, path_info) = match (get(Var::SCRIPT_NAME), get(Var::PATH_INFO)) {
                    ([], path) if backend.runs_php() => (path, &b""[..]),
                    pair => pair,
                };
                return Lookup::Call(Box::new(Target {
                    backend: backend.clone(),
                    script_name: script_name.to_vec(),
                    path_info: path_info.to_vec(),
                    script_filename: Some(file.to_vec()),
                }));
            }
            return Lookup::Call(Box::new(Target {
                backend: backend.clone(),
                script_name: mount.clone(),
                path_info: rest.to_vec(),
                script_filename: None,
            }));
        };
        let script = |s: &super::script_path::Script, url: &[u8]| Target {
            backend: backend.clone(),
            script_name: [&mount[..], url].concat(),
            path_info: s.path_info.clone(),
            script_filename: Some(s.file.as_os_str().as_bytes().to_vec()),
        };
        let now = Instant::now();
        match self.found.locate(root, rest, &self.index, now) {
            Located::Script(s) if s.file.as_os_str().as_bytes().ends_with(SCRIPT_EXT) => {
                Lookup::Call(Box::new(script(&s, &s.url_path)))
            }
            // Another file: served from disk, never run. With a path after
            // it (`/style.css/x`), no file is named: nginx's `try_files
            // $uri $uri/ /index.php` goes on to the front controller.
            Located::Script(s) if !s.path_info.is_empty() => self.missing(root, rest, &script, now),
            Located::Script(_) => Lookup::File,
            Located::AddSlash => {
                Lookup::Answer(redirect_to_directory(&path, get(Var::QUERY_STRING)))
            }
            // Apache's `ProxyPass /shop uwsgi://...` sends the prefix it
            // took off as SCRIPT_NAME, and the rest as PATH_INFO: the site
            // is mounted there, and PATH_INFO names the script under the
            // document root (every page was a 404 behind it).
            Located::Missing if mount.is_empty() && !get(Var::SCRIPT_NAME).is_empty() => {
                let front = get(Var::SCRIPT_NAME);
                let under = |s: &super::script_path::Script, url: &[u8]| Target {
                    script_name: [front, url].concat(),
                    ..script(s, url)
                };
                match self
                    .found
                    .locate(root, get(Var::PATH_INFO), &self.index, now)
                {
                    Located::Script(s) if s.file.as_os_str().as_bytes().ends_with(SCRIPT_EXT) => {
                        Lookup::Call(Box::new(under(&s, &s.url_path)))
                    }
                    _ => self.missing(root, get(Var::PATH_INFO), &under, now),
                }
            }
            Located::Missing => self.missing(root, rest, &script, now),
            // nginx's `try_files $uri $uri/` finds the directory, and its
            // index module nothing in it: 403.
            Located::Forbidden(path, why) => {
                why.log(&path);
                Lookup::Answer(Response::plain(403, "Forbidden", "Forbidden\n"))
            }
            Located::NoIndex => Lookup::Answer(Response::plain(403, "Forbidden", "Forbidden\n")),
            Located::Unavailable => Lookup::Answer(crate::request::unavailable()),
            Located::BadPath => {
                Lookup::Answer(Response::plain(400, "Bad Request", "Bad Request\n"))
            }
        }
    }

    async fn respond(self: Arc<Self>, mut req: Request, target: Target) -> Response {
        let since = Instant::now();
        let declared = var(&req.vars, Var::CONTENT_LENGTH)
            .and_then(|v| crate::request::cgi::content_length(v));
        let body = std::mem::replace(&mut req.body, RequestBody::Empty);
        let (body, length) = match with_length(declared, body, self.limit_post).await {
            Ok(pair) => pair,
            Err(resp) => return self.answered(&req, resp, since),
        };
        // Whole before a process is taken for it (request/body.rs).
        let body = match crate::request::spooled(body).await {
            Ok(body) => body,
            Err(resp) => return self.answered(&req, resp, since),
        };
        let root = self.docroot.as_ref().map(RootDir::dir);
        let root = root.as_ref().map(|r| r.as_os_str().as_bytes());
        let place = ScriptPlace {
            script_name: &target.script_name,
            path_info: &target.path_info,
            script_filename: target.script_filename.as_deref(),
            document_root: root.filter(|_| target.script_filename.is_some()),
            sent_filename: None,
        };
        let name = target.backend.name();
        let mut params = script_variables(&req.vars, &place, length);
        // What nginx's fastcgi_params always send, which PHP code reads
        // without a check: the body's type and length empty when there is
        // none, and the path without its query.
        for (name, value) in [
            (&b"CONTENT_TYPE"[..], Vec::new()),
            (b"CONTENT_LENGTH", Vec::new()),
            (
                b"DOCUMENT_URI",
                [&target.script_name[..], &target.path_info].concat(),
            ),
        ] {
            if !params.iter().any(|(k, _)| k == name) {
                params.push((name.to_vec(), value));
            }
        }
        // The name and the request, for the log lines of its failure, as
        // nginx's say which request failed.
        let serving = client::serving(&name, &params);
        let called = match &target.backend {
            Backend::Pass(upstream) => {
                let call = Call {
                    name: serving.clone(),
                    params,
                    body,
                    timeout: self.timeout,
                };
                client::call(upstream, call).await
            }
            Backend::Pool(pool) => pool.call(&params, body, self.timeout).await,
        };
        match called {
            Ok((head, first, output)) => {
                // `Location: /path` with no Status: the client is
                // redirected, as nginx does for FastCGI apps (only CGI
                // scripts get local redirects).
                let status = match head.reply {
                    Reply::LocalRedirect(_) => 302,
                    _ => head.status,
                };
                let head = (status, head.reason, head.headers);
                // Read ahead of the client, so that a slow one does not
                // hold the process (nginx's fastcgi_buffering).
                let output = crate::request::read_ahead(output);
                self.answered.streamed(req, head, first, output, since)
            }
            Err(failure) => {
                let resp = failed(&serving, failure, self.timeout);
                self.answered(&req, resp, since)
            }
        }
    }

    /// Counts and logs a response the server made itself.
    fn answered(&self, req: &Request, resp: Response, since: Instant) -> Response {
        self.answered.response(req, &resp, since);
        resp
    }
}

fn failed(name: &str, failure: Failure, timeout: Option<Duration>) -> Response {
    match failure {
        Failure::Connect(e) => {
            crate::say!("oxgate: FastCGI {name}: cannot connect: {e}; answered 502");
            Response::plain(502, "Bad Gateway", "Bad Gateway\n")
        }
        Failure::Unsent(why) | Failure::NoReply(why) | Failure::Broken(why) => {
            crate::say!("oxgate: FastCGI {name}: {why}; answered 502");
            Response::plain(502, "Bad Gateway", "Bad Gateway\n")
        }
        Failure::NoHead(why) => {
            crate::say!("oxgate: FastCGI {name}: no valid response head ({why}); answered 502");
            Response::plain(502, "Bad Gateway", "Bad Gateway\n")
        }
        Failure::Timeout => {
            crate::say!(
                "oxgate: FastCGI {name}: no response within --fastcgi-app-timeout {}s; answered 504",
                timeout.map_or(0, |t| t.as_secs())
            );
            Response::plain(504, "Gateway Timeout", "Gateway Timeout\n")
        }
    }
}

impl Handler for FastcgiApps {
    fn handle(self: Arc<Self>, req: Request) -> Responding {
        match self.lookup(&req) {
            Lookup::App => self.inner.clone().handle(req),
            Lookup::File => match &self.files {
                Some(files) => files.clone().handle(req),
                None => self.inner.clone().handle(req),
            },
            Lookup::Answer(resp) => {
                let resp = self.answered(&req, resp, Instant::now());
                Box::pin(async move { resp })
            }
            Lookup::Call(target) => Box::pin(self.respond(req, *target)),
        }
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency().max(64)
    }
}
