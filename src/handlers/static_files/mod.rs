//! Static files: `--static-map MOUNT=DIR`, `--static-map2` and
//! `--check-static DIR`, served from disk before the app, as uWSGI does. A
//! path with no file behind it goes on to the app; a path that tries to
//! leave its directory does not.

mod encoding;
mod mime;
pub mod resolve;
mod respond;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::config::StaticSettings;
use std::ffi::OsStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::request::{
    Answered, BodyTaking, Handler, Request, RequestObserver, Responding, Response, Var,
    redirect_to_directory, var,
};
use resolve::Resolved;

/// The app behind its static directories.
pub struct StaticFiles {
    /// The `--check-static` directories (mount ""), then the
    /// `--static-map`s, the longest mount first.
    roots: Vec<Root>,
    index: Vec<String>,
    skip_ext: Vec<String>,
    mime: mime::MimeTypes,
    /// Caching and precompressed files; `gzip_dirs` where their links led
    /// at the start.
    settings: StaticSettings,
    /// `--static-gzip-dir`s as named (absolute), links kept: a `current`
    /// link moved to a new release, which the roots follow, leads the
    /// files found there to these names too.
    gzip_dirs_named: Vec<PathBuf>,
    /// `--manage-script-name`'s mount points, the longest first: the maps
    /// see a path under one without it, as uWSGI strips it before its
    /// static maps look (`/app/static/x` is `/static/x` for them).
    mount_points: Vec<Vec<u8>>,
    /// The request log and the counters.
    answered: Answered,
    inner: Arc<dyn Handler>,
}

struct Root {
    mount: Vec<u8>,
    dir: resolve::RootDir,
    keep_mount: bool,
    /// A `--check-static` directory, the front end's document root, or a
    /// map at `/`: it sees every URL of the app, so what it cannot serve
    /// (a POST, a path no file could have) is the app's, as in uWSGI.
    check: bool,
    /// A map to one file (`--static-map /favicon.ico=/srv/icon.ico`): its
    /// name in `dir`, its directory. It answers for the mount alone.
    file: Option<Vec<u8>>,
}

/// What the static layer makes of a request.
enum Lookup {
    /// No static file: the app answers.
    App,
    Answer(Response),
}

impl StaticFiles {
    /// `app_behind`: an app answers what no file does (a map at `/` then
    /// shares its URLs); without one, the map is a static server's.
    pub fn new(
        settings: &StaticSettings,
        inner: Arc<dyn Handler>,
        app_behind: bool,
    ) -> Result<StaticFiles, String> {
        let canonical = |dir: &Path| dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let root = |mount: &str, dir: &Path, keep_mount: bool| {
            // A map to a file is a root at its directory that names it. A
            // file that is a link (to a shared icon) is taken at its real
            // place, followed now, as uWSGI does, not refused as a link out
            // at each request; else its directory as named, looked up
            // again as a directory root is (a `current` link moved to a
            // new release is followed).
            let linked = dir
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink());
            let real = if linked {
                canonical(dir)
            } else {
                std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
            };
            if let (true, Some(parent), Some(name)) =
                (real.is_file(), real.parent(), real.file_name())
            {
                return Root {
                    mount: mount.as_bytes().to_vec(),
                    dir: resolve::RootDir::new(parent, &settings.safe),
                    keep_mount: false,
                    check: false,
                    file: Some(name.as_bytes().to_vec()),
                };
            }
            let mount_name = if mount.is_empty() { "/" } else { mount };
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => crate::say!(
                    "oxgate: warning: static directory {} does not exist (yet); its mount {mount_name} passes to the app",
                    dir.display(),
                ),
                // There, but not for this user (--uid): its files are 403.
                Err(e) => crate::say!(
                    "oxgate: warning: static directory {}: {e} (uid {}); its mount {mount_name} answers 403",
                    dir.display(),
                    nix::unistd::geteuid(),
                ),
                Ok(_) => crate::say!(
                    "oxgate: warning: static directory {} is not a directory; its mount {mount_name} passes to the app",
                    dir.display(),
                ),
            }
            Root {
                mount: mount.as_bytes().to_vec(),
                dir: resolve::RootDir::new(dir, &settings.safe),
                keep_mount,
                // `--static-map /=dist` (a single-page app beside its API).
                check: mount.is_empty() && app_behind,
                file: None,
            }
        };
        let mut maps: Vec<Root> = settings
            .maps
            .iter()
            .map(|m| root(&m.mount, &m.dir, m.keep_mount))
            .collect();
        // Stable: among equal mounts, the one given first is tried first.
        maps.sort_by_key(|r| std::cmp::Reverse(r.mount.len()));
        // uWSGI looks in the --check-static directories first, then in the
        // maps: a file at the same URL in both is the check directory's.
        let mut roots: Vec<Root> = settings
            .check
            .iter()
            .map(|d| Root {
                check: true,
                ..root("", d, true)
            })
            .collect();
        roots.extend(maps);
        // Compared as prefixes, as uWSGI does: a trailing slash given stays
        // (/srv/static/ must not match /srv/static2).
        let keep_slash = |given: &Path, mut c: std::ffi::OsString| {
            if given.as_os_str().as_bytes().ends_with(b"/") && !c.as_bytes().ends_with(b"/") {
                c.push("/");
            }
            PathBuf::from(c)
        };
        Ok(StaticFiles {
            mount_points: Vec::new(),
            gzip_dirs_named: settings
                .gzip_dirs
                .iter()
                .map(|d| {
                    let abs = std::path::absolute(d).unwrap_or_else(|_| d.clone());
                    keep_slash(d, abs.into_os_string())
                })
                .collect(),
            roots,
            index: settings.index.clone(),
            skip_ext: settings.skip_ext.clone(),
            mime: mime::MimeTypes::load(&settings.mimefiles)?,
            settings: StaticSettings {
                gzip_dirs: settings
                    .gzip_dirs
                    .iter()
                    .map(|d| keep_slash(d, canonical(d).into_os_string()))
                    .collect(),
                ..settings.clone()
            },
            answered: Answered::new(crate::request::HandlerKind::Static),
            inner,
        })
    }

    /// Lets the request log and the counters see static requests too.
    pub fn set_observer(&self, observer: Arc<dyn RequestObserver>) {
        self.answered.set(observer);
    }

    /// With `--manage-script-name`: the maps see paths under these mount
    /// points without them (see `mount_points`).
    pub fn strip_mounts(mut self, mut points: Vec<Vec<u8>>) -> StaticFiles {
        points.retain(|p| !p.is_empty());
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        self.mount_points = points;
        self
    }

    /// PATH_INFO as the maps see it: under a `--mount` point with
    /// `--manage-script-name`, without it, as uWSGI strips it first.
    fn mapped_path<'a>(&self, path_info: &'a [u8]) -> &'a [u8] {
        self.mount_points
            .iter()
            .find_map(|point| {
                path_info
                    .strip_prefix(&point[..])
                    .filter(|rest| rest.is_empty() || rest.starts_with(b"/"))
            })
            .unwrap_or(path_info)
    }

    fn lookup(&self, req: &Request) -> Lookup {
        let var = |v: Var| var(&req.vars, v).map_or(&b""[..], |value| &value[..]);
        let path = self.mapped_path(var(Var::PATH_INFO));
        if self.skips(path) {
            return Lookup::App;
        }
        let mut no_index = None;
        for root in &self.roots {
            let Some(rest) = path.strip_prefix(&root.mount[..]) else {
                continue;
            };
            // At a segment boundary: /static matches /static/a, not /staticx.
            if !(rest.is_empty() || rest.starts_with(b"/") || root.mount.ends_with(b"/")) {
                continue;
            }
            let rel = match &root.file {
                Some(name) if rest.is_empty() => &name[..],
                Some(_) => continue,
                None if root.keep_mount => path,
                None => rest,
            };
            match self.find(req, root, rel) {
                Found::Answer(answer) => return Lookup::Answer(answer),
                // A mount given again tries its next directory, as uWSGI
                // moves on to the next map: that one may have the index.
                Found::NoIndex(forbidden) => {
                    no_index.get_or_insert(forbidden);
                    continue;
                }
                Found::Nothing => {}
            }
            // A map to a file that did not exist at startup was taken for
            // a directory; uWSGI, which looks at each request, serves the
            // file once it is there.
            if root.file.is_none()
                && !root.check
                && rest.is_empty()
                && let Some(answer) = self.file_made_since(req, root)
            {
                return Lookup::Answer(answer);
            }
        }
        if let Some(forbidden) = no_index {
            return Lookup::Answer(forbidden);
        }
        // --check-static-docroot: the front end's DOCUMENT_ROOT, opened for
        // this request (it may differ from one request to the next).
        if self.settings.check_docroot
            && let Some(docroot) = crate::request::var(&req.vars, Var::DOCUMENT_ROOT)
                .filter(|d| d.starts_with(b"/") && !d.contains(&0))
            && let Some(answer) = self.answer(req, &self.docroot_root(docroot), path)
        {
            return Lookup::Answer(answer);
        }
        Lookup::App
    }

    /// The answer for a directory root's own path, if it is a file now.
    fn file_made_since(&self, req: &Request, root: &Root) -> Option<Response> {
        let named = root.dir.named();
        let (parent, name) = (named.parent()?, named.file_name()?);
        if !std::fs::metadata(named).is_ok_and(|m| m.is_file()) {
            return None;
        }
        let as_file = Root {
            mount: root.mount.clone(),
            dir: resolve::RootDir::new(parent, &self.settings.safe),
            keep_mount: false,
            check: false,
            file: Some(name.as_bytes().to_vec()),
        };
        self.answer(req, &as_file, name.as_bytes())
    }

    /// The front end's DOCUMENT_ROOT as a root, opened for this request:
    /// kept, it would pin the directory a deploy's symbolic link pointed
    /// to then.
    fn docroot_root(&self, docroot: &Bytes) -> Root {
        Root {
            mount: Vec::new(),
            dir: resolve::RootDir::new(Path::new(OsStr::from_bytes(docroot)), &self.settings.safe),
            keep_mount: true,
            check: true,
            file: None,
        }
    }

    /// The answer for `rel` under `root`; None when no file is there (the
    /// next root, or the app, answers).
    fn answer(&self, req: &Request, root: &Root, rel: &[u8]) -> Option<Response> {
        match self.find(req, root, rel) {
            Found::Answer(answer) | Found::NoIndex(answer) => Some(answer),
            Found::Nothing => None,
        }
    }

    /// What `answer` finds, telling a directory without its index apart.
    fn find(&self, req: &Request, root: &Root, rel: &[u8]) -> Found {
        let var = |v: Var| var(&req.vars, v).map_or(&b""[..], |value| &value[..]);
        Found::Answer(match resolve::open(&root.dir, rel, &self.index) {
            Resolved::Missing => return Found::Nothing,
            // A --check-static directory (no mount) sees every app URL: one
            // no file could have (`/api/a%5Cb`) is the app's, as in uWSGI.
            Resolved::BadPath if root.check => return Found::Nothing,
            Resolved::BadPath => Response::plain(400, "Bad Request", "Bad Request\n"),
            // What a --check-static directory cannot serve (a link out
            // of it, a FIFO, an unreadable file) is the app's URL, as in
            // uWSGI.
            Resolved::Forbidden(path, why) if root.check => {
                why.log_left_to_app(&path);
                return Found::Nothing;
            }
            Resolved::Forbidden(path, why) => {
                why.log(&path);
                Response::plain(403, "Forbidden", "Forbidden\n")
            }
            Resolved::Unavailable => crate::request::unavailable(),
            // Under a mount, nginx's answer. A --check-static directory is
            // the app's whole URL space: its directories (`/` first) are
            // the app's, as in uWSGI.
            Resolved::NoIndex { .. } if root.mount.is_empty() => return Found::Nothing,
            // A POST to a --check-static directory without its slash is the
            // app's too: a redirect would lose the form (a browser follows
            // a 301 with a GET).
            Resolved::NoIndex { slash: false } | Resolved::AddSlash
                if root.check && !is_get_or_head(var(Var::REQUEST_METHOD)) =>
            {
                return Found::Nothing;
            }
            // nginx sends a directory to its slash first, index or not.
            Resolved::NoIndex { slash: false } | Resolved::AddSlash => {
                // Under the app's prefix (behind a proxy that strips it:
                // SCRIPT_NAME, or --root-path). A PATH_INFO that holds the prefix already (a web server
                // that sends SCRIPT_NAME and the whole path, uWSGI's
                // modifier1 0) is not given it twice.
                let (path, prefix) = (var(Var::PATH_INFO), var(Var::SCRIPT_NAME));
                let holds = path
                    .strip_prefix(prefix)
                    .is_some_and(|r| r.is_empty() || r.starts_with(b"/"));
                let url = if holds {
                    path.to_vec()
                } else {
                    [prefix, path].concat()
                };
                redirect_to_directory(&url, var(Var::QUERY_STRING))
            }
            Resolved::NoIndex { slash: true } => {
                return Found::NoIndex(Response::plain(403, "Forbidden", "Forbidden\n"));
            }
            // An extension kept from static serving, found by where the
            // path led (an index file, a link with another name): the app's,
            // as in uWSGI, which checks the real file's name too.
            Resolved::File { path, file, .. } if self.skipped(&path, &file) => {
                return Found::Nothing;
            }
            Resolved::File { file, meta, path } => {
                if !is_get_or_head(var(Var::REQUEST_METHOD)) {
                    // A --check-static directory shares the app's URLs: a
                    // POST to one of them is the app's, as in uWSGI.
                    if root.check {
                        return Found::Nothing;
                    }
                    let mut resp =
                        Response::plain(405, "Method Not Allowed", "Method Not Allowed\n");
                    resp.headers.push((
                        Bytes::from_static(b"Allow"),
                        Bytes::from_static(b"GET, HEAD"),
                    ));
                    resp
                } else {
                    self.serve(req, root, file, *meta, &path)
                }
            }
        })
    }
}

impl StaticFiles {
    /// Whether the file opened, by the name it was found under or where
    /// every link led, has an extension `--static-skip-ext` keeps from
    /// static serving.
    fn skipped(&self, path: &Path, file: &std::fs::File) -> bool {
        !self.skip_ext.is_empty()
            && (self.skips(path.as_os_str().as_bytes())
                || resolve::RootDir::real_path(file)
                    .is_some_and(|real| self.skips(real.as_os_str().as_bytes())))
    }

    /// Whether a name ends with an extension `--static-skip-ext` keeps from
    /// static serving.
    fn skips(&self, name: &[u8]) -> bool {
        self.skip_ext
            .iter()
            .any(|ext| name.ends_with(ext.as_bytes()))
    }

    /// GET or HEAD of a file: in its precompressed form if there is one the
    /// client takes, with the caching headers the options give it.
    fn serve(
        &self,
        req: &Request,
        root: &Root,
        file: std::fs::File,
        meta: std::fs::Metadata,
        path: &Path,
    ) -> Response {
        let (mime, content_type) = self.mime.lookup(path);
        // The file by the names its root was given, links kept.
        let named = path.strip_prefix(root.dir.dir()).ok().map(|rel| {
            let named = std::path::absolute(root.dir.named())
                .unwrap_or_else(|_| root.dir.named().to_path_buf());
            named.join(rel)
        });
        let precompressed = self.precompressed(path, named.as_deref());
        let mut chosen = None;
        if precompressed {
            let accept = var(&req.vars, Var::HTTP_ACCEPT_ENCODING).map_or(&b""[..], |v| &v[..]);
            chosen = encoding::Coding::PREFERRED
                .into_iter()
                .filter(|c| encoding::accepts(accept, *c))
                .find_map(|c| {
                    resolve::open_variant(&root.dir, path, c.suffix()).map(|(f, m)| (c, f, m))
                });
        }
        let (file, meta, encoding) = match chosen {
            Some((c, f, m)) => (f, m, Some(c.name())),
            None => (file, meta, None),
        };
        let mut extra = Vec::new();
        // The -mtime lifetimes count from the file sent, whose date
        // Last-Modified gives.
        if let Some(cache_control) = self.cache_control(req, path, &mime, &meta) {
            extra.push((
                Bytes::from_static(b"Cache-Control"),
                Bytes::from(cache_control.0),
            ));
            if let Some(expires) = cache_control.1 {
                extra.push((Bytes::from_static(b"Expires"), Bytes::from(expires)));
            }
        }
        if precompressed {
            extra.push((
                Bytes::from_static(b"Vary"),
                Bytes::from_static(b"Accept-Encoding"),
            ));
        }
        let mut rep = respond::Representation::new(&meta, content_type);
        rep.extra = extra;
        rep.encoding = encoding;
        respond::respond(req, file, &rep)
    }

    /// Whether FILE.br or FILE.gz may stand in for this file.
    fn precompressed(&self, path: &Path, named: Option<&Path>) -> bool {
        let s = &self.settings;
        let bytes = path.as_os_str().as_bytes();
        let under = |dirs: &[PathBuf], file: &[u8]| {
            dirs.iter()
                .any(|d| file.starts_with(d.as_os_str().as_bytes()))
        };
        s.gzip_all
            // A prefix of the path, as uWSGI compares (a directory or not).
            || under(&s.gzip_dirs, bytes)
            || named.is_some_and(|n| under(&self.gzip_dirs_named, n.as_os_str().as_bytes()))
            || s.gzip_ext.iter().any(|e| bytes.ends_with(e.as_bytes()))
            || (!s.gzip_regex.is_empty()
                && s.gzip_regex.iter().any(|re| re.is_match(&path.to_string_lossy())))
    }

    /// Cache-Control, and Expires when it has a lifetime: --static-immutable
    /// for a hashed name, else the first --static-expires-uri,
    /// --static-expires-path-info, --static-expires or
    /// --static-expires-type rule that matches (each before its -mtime
    /// form).
    fn cache_control(
        &self,
        req: &Request,
        file_path: &Path,
        mime: &str,
        meta: &std::fs::Metadata,
    ) -> Option<(String, Option<String>)> {
        let s = &self.settings;
        if s.immutable && has_content_hash(file_path) {
            return Some(("public, max-age=31536000, immutable".into(), None));
        }
        if s.expires_uri.is_empty()
            && s.expires_path_info.is_empty()
            && s.expires_file.is_empty()
            && s.expires_type.is_empty()
        {
            return None;
        }
        let text = |v: Var| String::from_utf8_lossy(var(&req.vars, v).map_or(&b""[..], |v| &v[..]));
        let uri = text(Var::REQUEST_URI);
        let path_info = var(&req.vars, Var::PATH_INFO).map_or(&b""[..], |v| &v[..]);
        let path_info = String::from_utf8_lossy(self.mapped_path(path_info));
        let path = file_path.to_string_lossy();
        let rule = s
            .expires_uri
            .iter()
            .find(|r| r.on.is_match(&uri))
            .or_else(|| {
                s.expires_path_info
                    .iter()
                    .find(|r| r.on.is_match(&path_info))
            })
            .or_else(|| s.expires_file.iter().find(|r| r.on.is_match(&path)))
            .map(|r| (r.seconds, r.after_mtime))
            .or_else(|| {
                s.expires_type
                    .iter()
                    .find(|r| r.on.eq_ignore_ascii_case(mime))
                    .map(|r| (r.seconds, r.after_mtime))
            })?;
        // An HTTP date ends with the year 9999: a later one (a lifetime of
        // centuries, a file dated in the far future) is said then.
        let last = UNIX_EPOCH + Duration::from_secs(respond::LAST_HTTP_DATE as u64);
        let after = |from: SystemTime, seconds: u64| {
            from.checked_add(Duration::from_secs(seconds))
                .map_or(last, |t| t.min(last))
        };
        let now = SystemTime::now();
        let (expires, max_age) = match rule {
            (seconds, false) => (after(now, seconds), seconds),
            (seconds, true) => {
                use std::os::unix::fs::MetadataExt;
                let modified =
                    UNIX_EPOCH + Duration::from_secs(respond::modified_secs(meta.mtime()));
                let expires = after(modified, seconds);
                let left = expires.duration_since(now).map_or(0, |d| d.as_secs());
                (expires, left)
            }
        };
        Some((
            format!("max-age={max_age}"),
            Some(httpdate::fmt_http_date(expires)),
        ))
    }
}

/// `app.3f2a9c1b.css`, `base.5af66c1b1797.css`, `main-9c1b3f2a.js`: a run of
/// 8 to 64 hex digits, with a letter and a digit among them, just before the
/// extension.
fn has_content_hash(path: &Path) -> bool {
    static HASHED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"[.-]([0-9a-fA-F]{8,64})\.[A-Za-z0-9]+$").expect("a valid regex")
    });
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    HASHED.captures(name).is_some_and(|c| {
        let hex = c[1].as_bytes();
        hex.iter().any(u8::is_ascii_digit) && hex.iter().any(u8::is_ascii_alphabetic)
    })
}

impl Handler for StaticFiles {
    fn handle(self: Arc<Self>, req: Request) -> Responding {
        let since = Instant::now();
        match self.lookup(&req) {
            Lookup::App => self.inner.clone().handle(req),
            Lookup::Answer(resp) => {
                let resp = self.answered.answer(req, resp, since);
                Box::pin(async move { resp })
            }
        }
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    fn room(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        self.inner.room()
    }

    /// Files need no request body; the app behind may.
    fn body_taking(&self) -> BodyTaking {
        self.inner.body_taking()
    }
}

/// The methods a file answers.
fn is_get_or_head(method: &[u8]) -> bool {
    method == b"GET" || method == b"HEAD"
}

/// What a root holds for a path.
enum Found {
    Answer(Response),
    /// A directory without its index: the 403, unless a later root with
    /// the same mount has it.
    NoIndex(Response),
    Nothing,
}
