//! CGI scripts (RFC 3875): `--cgi [MOUNT=]DIR`, run a process per request,
//! as uWSGI's cgi plugin, Apache's mod_cgi and fcgiwrap do. The scripts run
//! on the worker's event loop, beside the app and outside its GIL: a slow
//! script holds up no other request.
//!
//! The script is found from the request's path under DIR (`script_path`); or,
//! in fcgiwrap's role, from the SCRIPT_FILENAME a web server sends over
//! FastCGI, when that names a file under DIR. A path with no script goes on
//! to the app behind, as a static path with no file does.

mod script;

pub use script::{is_running_script, kill_running_scripts};

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::root_dir::RootDir;
use super::script_path::{Located, climbs, locate};
use crate::config::CgiSettings;
use crate::proto::cgi_response::Reply;
use crate::request::cgi::{ScriptPlace, script_variables};
use crate::request::with_length;
use crate::request::{
    Answered, Handler, Request, RequestBody, RequestObserver, Responding, Response, Var, VarName,
    redirect_to_directory, var,
};
use script::{Failure, Run};

/// How many local redirects (`Location: /path`) one request may follow.
const MAX_REDIRECTS: usize = 10;

/// The app behind its CGI directories.
pub struct CgiScripts {
    /// The longest mount first.
    roots: Vec<CgiRoot>,
    allowed_ext: Vec<String>,
    helpers: Vec<Helper>,
    index: Vec<String>,
    timeout: Duration,
    /// `--env`: the only variables of the server's that scripts see.
    env: Vec<(OsString, OsString)>,
    /// `--cgi-unset`: variables left out.
    unset: Vec<Vec<u8>>,
    limit_post: Option<u64>,
    /// The request log and the counters.
    answered: Answered,
    /// What answers the paths that are not scripts.
    inner: Arc<dyn Handler>,
    /// `inner` is an app (not the 404 of none).
    app_behind: bool,
}

struct CgiRoot {
    mount: Vec<u8>,
    target: Target,
}

enum Target {
    Dir(RootDir),
    /// One script answers the whole mount.
    Script(PathBuf),
}

struct Helper {
    ext: String,
    program: PathBuf,
    args: Vec<OsString>,
}

/// A script found for a request, with the variables that place it.
struct Found {
    file: PathBuf,
    meta: std::fs::Metadata,
    script_name: Bytes,
    path_info: Bytes,
    document_root: Option<PathBuf>,
    /// The SCRIPT_FILENAME it was found by (`by_script_filename`).
    sent_filename: Option<Bytes>,
}

enum Lookup {
    /// Not a CGI path, or no script there: the app answers.
    App,
    Answer(Response),
    Run(Box<Found>),
}

/// What a run made of the request.
enum Ran {
    Response(Response),
    /// A local redirect: the request to serve instead, the cookies the
    /// redirecting script set, and the request as the client asked it,
    /// for the log.
    Redirect(Request, Vec<(Bytes, Bytes)>, Vec<(VarName, Bytes)>),
}

impl CgiScripts {
    pub fn new(
        settings: &CgiSettings,
        env: &[(String, String)],
        limit_post: Option<u64>,
        inner: Arc<dyn Handler>,
        app_behind: bool,
    ) -> Result<CgiScripts, String> {
        let mut roots = Vec::new();
        for dir in &settings.dirs {
            let meta = std::fs::metadata(&dir.path)
                .map_err(|e| format!("--cgi {}: {e}", dir.path.display()))?;
            let target = if meta.is_dir() {
                Target::Dir(RootDir::new(&dir.path, &[]))
            } else {
                // Found again at each request, as Apache's ScriptAlias and
                // uWSGI (its realpath) do: a deploy that moves a `current`
                // link runs the new release's script.
                Target::Script(
                    std::path::absolute(&dir.path)
                        .map_err(|e| format!("--cgi {}: {e}", dir.path.display()))?,
                )
            };
            roots.push(CgiRoot {
                mount: dir.mount.as_bytes().to_vec(),
                target,
            });
        }
        // Stable: among equal mounts, the one given first is tried first.
        roots.sort_by_key(|r| std::cmp::Reverse(r.mount.len()));
        let helpers = settings
            .helpers
            .iter()
            .map(|(ext, words)| {
                let program = super::find_program(&words[0]).ok_or_else(|| {
                    format!(
                        "--cgi-helper {ext}={}: no program {:?} in PATH",
                        words.join(" "),
                        words[0]
                    )
                })?;
                Ok(Helper {
                    ext: ext.clone(),
                    program,
                    args: words[1..].iter().map(OsString::from).collect(),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(CgiScripts {
            roots,
            allowed_ext: settings.allowed_ext.clone(),
            helpers,
            index: settings.index.clone(),
            timeout: settings.timeout,
            env: script_env(env),
            unset: settings
                .unset
                .iter()
                .map(|n| n.as_bytes().to_vec())
                .collect(),
            limit_post,
            answered: Answered::new(crate::request::HandlerKind::Cgi),
            inner,
            app_behind,
        })
    }

    /// Lets the request log and the counters see CGI requests too.
    pub fn set_observer(&self, observer: Arc<dyn RequestObserver>) {
        self.answered.set(observer);
    }

    fn lookup(&self, req: &Request) -> Lookup {
        let get = |v: Var| var(&req.vars, v).map_or(&b""[..], |value| &value[..]);
        let mut path = get(Var::SCRIPT_NAME).to_vec();
        path.extend_from_slice(get(Var::PATH_INFO));
        if let Some(found) = self.by_script_filename(req, &path) {
            return found;
        }
        for root in &self.roots {
            let Some(rest) = path.strip_prefix(&root.mount[..]) else {
                continue;
            };
            // At a segment boundary: /cgi-bin matches /cgi-bin/a, not /cgi-binx.
            if !(rest.is_empty() || rest.starts_with(b"/")) {
                continue;
            }
            let script_name = |url_path: &[u8]| {
                let mut name = root.mount.clone();
                name.extend_from_slice(url_path);
                Bytes::from(name)
            };
            let found = match &root.target {
                // A `..`, or a NUL no environment can hold (a 400, as
                // `locate` answers it under a directory, not a failed run).
                Target::Script(_) if rest.contains(&0) || climbs(rest) => {
                    return Lookup::Answer(bad_path());
                }
                Target::Script(named) => match named
                    .canonicalize()
                    .and_then(|file| std::fs::metadata(&file).map(|meta| (file, meta)))
                {
                    Ok((file, meta)) => Found {
                        meta,
                        script_name: Bytes::from(root.mount.clone()),
                        path_info: Bytes::from(super::script_path::clean_path_info(rest)),
                        document_root: file.parent().map(Path::to_path_buf),
                        sent_filename: None,
                        file,
                    },
                    Err(_) => return Lookup::Answer(not_found()),
                },
                Target::Dir(dir) => match locate(dir, rest, &self.index) {
                    Located::Missing => continue,
                    Located::BadPath => return Lookup::Answer(bad_path()),
                    Located::Forbidden(path, why) => {
                        why.log(&path);
                        return Lookup::Answer(forbidden());
                    }
                    // A directory of no script (the site's root, when the
                    // scripts are mounted at /) is the app's to answer, if
                    // there is one, as any path that is not a script is.
                    Located::NoIndex if self.app_behind => continue,
                    Located::NoIndex => return Lookup::Answer(forbidden()),
                    Located::Unavailable => return Lookup::Answer(crate::request::unavailable()),
                    Located::AddSlash => {
                        return Lookup::Answer(redirect_to_directory(
                            &path,
                            get(Var::QUERY_STRING),
                        ));
                    }
                    Located::Script(s) => Found {
                        file: s.file,
                        meta: s.meta,
                        script_name: script_name(&s.url_path),
                        path_info: Bytes::from(s.path_info),
                        document_root: Some(dir.dir()),
                        sent_filename: None,
                    },
                },
            };
            return self.check(found);
        }
        Lookup::App
    }

    /// fcgiwrap's role: a web server that names the script
    /// (`fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name`)
    /// is followed when the name is under one of the CGI directories.
    fn by_script_filename(&self, req: &Request, url_path: &[u8]) -> Option<Lookup> {
        let filename = req
            .vars
            .iter()
            .find(|(k, _)| k.as_bytes() == b"SCRIPT_FILENAME")?
            .1
            .clone();
        // The directory as configured (`root $D/current` in nginx, links
        // kept; a trailing slash or `.` given left out) or where it really
        // is.
        let under = |root: &Path| {
            let root: PathBuf = root.components().collect();
            filename
                .strip_prefix(root.as_os_str().as_bytes())
                .filter(|rel| rel.starts_with(b"/"))
        };
        let (dir, rel) = self.roots.iter().find_map(|root| match &root.target {
            Target::Dir(dir) => under(dir.named())
                .or_else(|| under(&dir.dir()))
                .map(|rel| (dir, rel)),
            Target::Script(_) => None,
        })?;
        let found = match locate(dir, rel, &self.index) {
            Located::Script(s) => *s,
            Located::Missing => return Some(Lookup::Answer(not_found())),
            Located::Forbidden(path, why) => {
                why.log(&path);
                return Some(Lookup::Answer(forbidden()));
            }
            Located::AddSlash | Located::NoIndex => return Some(Lookup::Answer(forbidden())),
            Located::Unavailable => return Some(Lookup::Answer(crate::request::unavailable())),
            Located::BadPath => {
                return Some(Lookup::Answer(Response::plain(
                    400,
                    "Bad Request",
                    "Bad Request\n",
                )));
            }
        };
        // A server that split the path itself sent SCRIPT_NAME and
        // PATH_INFO; otherwise the path info is what followed the script
        // in SCRIPT_FILENAME.
        let (script_name, path_info) = match var(&req.vars, Var::SCRIPT_NAME) {
            Some(name) if !name.is_empty() => (
                name.clone(),
                var(&req.vars, Var::PATH_INFO).cloned().unwrap_or_default(),
            ),
            _ => {
                let info = &found.path_info[..];
                let split = url_path
                    .strip_suffix(info)
                    .map_or(url_path.len(), |name| name.len());
                (
                    Bytes::copy_from_slice(&url_path[..split]),
                    Bytes::copy_from_slice(&url_path[split..]),
                )
            }
        };
        Some(self.check(Found {
            file: found.file,
            meta: found.meta,
            script_name,
            path_info,
            document_root: Some(dir.dir()),
            sent_filename: Some(filename.clone()),
        }))
    }

    /// A script may run if its name is allowed, and it is executable or
    /// has a helper.
    fn check(&self, found: Found) -> Lookup {
        let name = found.file.as_os_str().as_bytes();
        if !self.allowed_ext.is_empty()
            && !self
                .allowed_ext
                .iter()
                .any(|ext| name.ends_with(ext.as_bytes()))
        {
            crate::say!(
                "oxgate: CGI {}: its name is not one --cgi-allowed-ext allows ({}); answered 403",
                found.file.display(),
                self.allowed_ext.join(", ")
            );
            return Lookup::Answer(forbidden());
        }
        if self.helper(&found.file).is_none()
            && (found.meta.permissions().mode() & 0o111 == 0
                || nix::unistd::access(&found.file, nix::unistd::AccessFlags::X_OK).is_err())
        {
            crate::say!(
                "oxgate: CGI {}: not executable (chmod +x it, or give a --cgi-helper)",
                found.file.display()
            );
            return Lookup::Answer(forbidden());
        }
        Lookup::Run(Box::new(found))
    }

    fn helper(&self, file: &Path) -> Option<&Helper> {
        let name = file.as_os_str().as_bytes();
        self.helpers
            .iter()
            .find(|h| name.ends_with(h.ext.as_bytes()))
    }

    /// Serves a request the lookup claimed, following local redirects.
    /// The cookies a redirecting script set go out with the response to
    /// the path it redirected to, as Apache's mod_cgi keeps them: "set the
    /// session, then go to the page" must not lose the session.
    async fn respond(self: Arc<Self>, req: Request, lookup: Lookup) -> Response {
        let mut cookies = Vec::new();
        let mut resp = self.follow(req, lookup, &mut cookies).await;
        resp.headers.append(&mut cookies);
        resp
    }

    async fn follow(
        self: Arc<Self>,
        mut req: Request,
        mut lookup: Lookup,
        cookies: &mut Vec<(Bytes, Bytes)>,
    ) -> Response {
        let since = Instant::now();
        // After a local redirect, the request as the client asked it: the
        // access line names it, with the final status, as Apache's does.
        let mut asked = None;
        for _ in 0..=MAX_REDIRECTS {
            match lookup {
                Lookup::App => return self.inner.clone().handle(req).await,
                Lookup::Answer(resp) => {
                    if let Some(vars) = asked {
                        req.vars = vars;
                    }
                    self.answered.response(&req, &resp, since);
                    return resp;
                }
                Lookup::Run(found) => match self.run(req, *found, since, asked.take()).await {
                    Ran::Response(resp) => return resp,
                    Ran::Redirect(next, set, vars) => {
                        req = next;
                        cookies.extend(set);
                        asked = Some(vars);
                    }
                },
            }
            lookup = self.lookup(&req);
        }
        if let Some(vars) = asked {
            req.vars = vars;
        }
        crate::say!("oxgate: CGI: more than {MAX_REDIRECTS} local redirects; 500");
        let resp = Response::plain(
            500,
            "Internal Server Error",
            "Internal Server Error: a redirect loop\n",
        );
        self.answered.response(&req, &resp, since);
        resp
    }

    /// Runs the script `found`; `asked`, after a local redirect, is the
    /// request as the client asked it, which the access line names.
    async fn run(
        &self,
        mut req: Request,
        found: Found,
        since: Instant,
        asked: Option<Vec<(VarName, Bytes)>>,
    ) -> Ran {
        let name: Arc<str> = found.file.to_string_lossy().into();
        let body = std::mem::replace(&mut req.body, RequestBody::Empty);
        let declared = var(&req.vars, Var::CONTENT_LENGTH)
            .and_then(|v| crate::request::cgi::content_length(v));
        let (body, length) = match with_length(declared, body, self.limit_post).await {
            Ok(pair) => pair,
            Err(resp) => {
                self.answered.response(&req, &resp, since);
                return Ran::Response(resp);
            }
        };
        // A helper is told the script; a script run itself gets no
        // arguments (as from fcgiwrap and lighttpd): not its own path as
        // `$1`, nor RFC 3875's search words, which let a query string
        // become options (php-cgi's CVE-2012-1823).
        let (program, args) = match self.helper(&found.file) {
            Some(h) => {
                let mut args = h.args.clone();
                args.push(found.file.clone().into_os_string());
                (h.program.clone(), args)
            }
            None => (found.file.clone(), Vec::new()),
        };
        let nph = found
            .file
            .file_name()
            .is_some_and(|n| n.as_bytes().starts_with(b"nph-"));
        let run = Run {
            program,
            args,
            env: self.environment(&req, &found, length),
            cwd: found
                .file
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
            timeout: self.timeout,
            nph,
            name: name.clone(),
        };
        // From here the request's variables only name it in the log (or
        // are carried by a redirect, which replaces every one naming the
        // path). A redirected request has no body, so no answer above
        // needed them.
        if let Some(vars) = asked {
            req.vars = vars;
        }
        let (head, first, output) = match script::run(run, body).await {
            Ok(ran) => ran,
            Err(failure) => {
                let resp = failed(&name, failure, self.timeout);
                self.answered.response(&req, &resp, since);
                return Ran::Response(resp);
            }
        };
        // A local redirect is followed here only when oxgate is the front
        // end. Behind a web server, whose access rules (auth_basic,
        // allow/deny, `internal`) chose this script and not the path
        // redirected to, the client is sent there (302) and passes them
        // again, as fcgiwrap leaves it to nginx.
        let status = match &head.reply {
            Reply::LocalRedirect(location) if req.protocol == crate::listen::Protocol::Http => {
                output.drain_unwanted();
                let cookies = head
                    .headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(b"set-cookie"))
                    .cloned()
                    .collect();
                let (next, asked) = redirected(req, location);
                return Ran::Redirect(next, cookies, asked);
            }
            Reply::LocalRedirect(_) => 302,
            _ => head.status,
        };
        let output = Unsent {
            output: Some(output),
            unwanted: req.is_head || matches!(status, 204 | 304),
        };
        Ran::Response(self.answered.streamed(
            req,
            (status, head.reason, head.headers),
            first,
            output,
            since,
        ))
    }

    /// The script's environment: the CGI variables, then `--env`, and
    /// nothing else.
    fn environment(
        &self,
        req: &Request,
        found: &Found,
        length: Option<u64>,
    ) -> Vec<(OsString, OsString)> {
        let root = found
            .document_root
            .as_ref()
            .map(|r| r.as_os_str().as_bytes());
        let place = ScriptPlace {
            script_name: &found.script_name,
            path_info: &found.path_info,
            script_filename: Some(found.file.as_os_str().as_bytes()),
            document_root: root,
            sent_filename: found.sent_filename.as_deref(),
        };
        script_variables(&req.vars, &place, length)
            .into_iter()
            .filter(|(k, _)| !self.unset.contains(k))
            .map(|(k, v)| (OsString::from_vec(k), OsString::from_vec(v)))
            // Last, so that they win.
            .chain(self.env.iter().cloned())
            .collect()
    }
}

/// What a script's environment has beside its request's variables: oxgate's
/// own PATH, as Apache, fcgiwrap and uWSGI pass theirs (`#!/usr/bin/env
/// python3` must find a python3 in /usr/local/bin, as in Python's Docker
/// images), then `--env`'s, which win.
fn script_env(env: &[(String, String)]) -> Vec<(OsString, OsString)> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::iter::once((OsString::from("PATH"), path))
        .chain(
            env.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
        .collect()
}

/// The request a local redirect asks for: GET of the new path, no body;
/// and the variables of the request redirected, for the log.
fn redirected(req: Request, location: &[u8]) -> (Request, Vec<(VarName, Bytes)>) {
    let (path, query) = match location.iter().position(|&b| b == b'?') {
        Some(i) => (&location[..i], &location[i + 1..]),
        None => (location, &b""[..]),
    };
    let decoded: Vec<u8> = percent_encoding::percent_decode(path).collect();
    let mut vars: Vec<(VarName, Bytes)> = req
        .vars
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_bytes(),
                b"SCRIPT_NAME"
                    | b"PATH_INFO"
                    | b"QUERY_STRING"
                    | b"REQUEST_URI"
                    | b"REQUEST_METHOD"
                    | b"CONTENT_LENGTH"
                    | b"CONTENT_TYPE"
                    | b"SCRIPT_FILENAME"
            )
        })
        .cloned()
        .collect();
    let known = |v: Var, b: Bytes| (VarName::Known(v), b);
    vars.push(known(Var::REQUEST_METHOD, Bytes::from_static(b"GET")));
    vars.push(known(Var::PATH_INFO, Bytes::from(decoded)));
    vars.push(known(Var::QUERY_STRING, Bytes::copy_from_slice(query)));
    vars.push(known(Var::REQUEST_URI, Bytes::copy_from_slice(location)));
    let next = Request {
        vars,
        body: RequestBody::Empty,
        is_head: req.is_head,
        protocol: req.protocol,
        upgradable: false,
        early_hints: None,
        repeated_headers: req.repeated_headers,
        local_addr: req.local_addr,
        proxied_by: req.proxied_by,
        script_name_header: None,
    };
    (next, req.vars)
}

/// The answer for a script that gave no head, and the log line saying why.
fn failed(name: &str, failure: Failure, timeout: Duration) -> Response {
    match failure {
        Failure::Timeout => {
            crate::say!(
                "oxgate: CGI {name}: no response, and idle for --cgi-timeout {}s; answered 504",
                timeout.as_secs()
            );
            Response::plain(504, "Gateway Timeout", "Gateway Timeout\n")
        }
        Failure::NoHead(why) => {
            crate::say!("oxgate: CGI {name}: no valid response head ({why}); answered 502");
            Response::plain(502, "Bad Gateway", "Bad Gateway\n")
        }
        Failure::Input(e) => {
            let resp = Response::for_body_error(&e);
            crate::say!(
                "oxgate: CGI {name}: the request body broke off ({}): the script was stopped before it could take the part for the whole; answered {}",
                e.message,
                resp.status
            );
            resp
        }
        // Out of descriptors, processes or memory: the server's trouble,
        // not the script's, for a moment; said at most once a minute (a
        // flood must not flood the log too), as for static files.
        Failure::Spawn(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM)
            ) =>
        {
            static LOGGED: crate::log::say::Throttle = crate::log::say::Throttle::new();
            if LOGGED.ready(60) {
                crate::say!(
                    "oxgate: CGI {name}: cannot run it: {e}; answering 503 (said at most once a minute)"
                );
            }
            crate::request::unavailable()
        }
        Failure::Spawn(e) => {
            let hint = match e.raw_os_error() {
                Some(libc::ENOENT) => " (is its #! interpreter installed?)",
                Some(libc::ENOEXEC) => " (no #! line?)",
                _ => "",
            };
            crate::say!("oxgate: CGI {name}: cannot run it: {e}{hint}");
            match e.kind() {
                std::io::ErrorKind::PermissionDenied => forbidden(),
                _ => Response::plain(502, "Bad Gateway", "Bad Gateway\n"),
            }
        }
    }
}

/// `..`, NUL or a backslash in the path.
fn bad_path() -> Response {
    Response::plain(400, "Bad Request", "Bad Request\n")
}

fn forbidden() -> Response {
    Response::plain(403, "Forbidden", "Forbidden\n")
}

fn not_found() -> Response {
    Response::plain(404, "Not Found", "Not Found\n")
}

impl Handler for CgiScripts {
    fn handle(self: Arc<Self>, req: Request) -> Responding {
        match self.lookup(&req) {
            Lookup::App => self.inner.clone().handle(req),
            lookup => Box::pin(self.respond(req, lookup)),
        }
    }

    fn concurrency(&self) -> usize {
        // Scripts run beside each other, and beside the app.
        self.inner.concurrency().max(64)
    }
}

/// The script's output as the response body. One the front end drops
/// unread because the response has no body (HEAD, 204, 304) is drained,
/// and its script runs to its end; any other dropped early (the client
/// left) has its script killed.
struct Unsent {
    output: Option<script::Output>,
    unwanted: bool,
}

impl crate::request::ChunkSource for Unsent {
    fn poll_chunk(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Bytes, crate::request::BodyError>>> {
        match &mut self.output {
            Some(o) => o.poll_chunk(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}

impl crate::request::CountedBody for Unsent {
    fn on_end(mut self, f: Box<dyn FnOnce(u64, bool) + Send>) -> Unsent {
        self.output = self.output.take().map(|o| o.on_end(f));
        self
    }

    fn add_sent(&mut self, n: u64) {
        if let Some(o) = &mut self.output {
            o.add_sent(n);
        }
    }
}

impl Drop for Unsent {
    fn drop(&mut self) {
        if self.unwanted
            && let Some(o) = self.output.take()
        {
            o.drain_unwanted();
        }
    }
}
