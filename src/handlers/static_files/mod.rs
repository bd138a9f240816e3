//! Static files: `--static-map MOUNT=DIR`, `--static-map2` and
//! `--check-static DIR`, served from disk before the app, as uWSGI does. A
//! path with no file behind it goes on to the app; a path that tries to
//! leave its directory does not.

mod encoding;
mod mime;
pub mod resolve;
mod respond;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::StaticSettings;
use std::time::Instant;

use crate::request::{
    Answered, Handler, Request, RequestObserver, Responding, Response, Var, redirect_to_directory,
    var,
};
use resolve::Resolved;

/// The app behind its static directories.
pub struct StaticFiles {
    /// `--static-map`s, the longest mount first, then the `--check-static`
    /// directories (mount "").
    roots: Vec<Root>,
    index: Vec<String>,
    skip_ext: Vec<String>,
    mime: mime::MimeTypes,
    /// Caching and precompressed files.
    settings: StaticSettings,
    /// The request log and the counters (set once the worker has them).
    /// The request log and the counters.
    answered: Answered,
    inner: Arc<dyn Handler>,
}

struct Root {
    mount: Vec<u8>,
    dir: resolve::RootDir,
    keep_mount: bool,
}

/// What the static layer makes of a request.
enum Lookup {
    /// No static file: the app answers.
    App,
    Answer(Response),
}

impl StaticFiles {
    pub fn new(settings: &StaticSettings, inner: Arc<dyn Handler>) -> Result<StaticFiles, String> {
        let canonical = |dir: &Path| dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let root = |mount: &str, dir: &Path, keep_mount: bool| {
            if !dir.is_dir() {
                crate::say!(
                    "oxgate: warning: static directory {} does not exist (yet); its mount {} passes to the app",
                    dir.display(),
                    if mount.is_empty() { "/" } else { mount }
                );
            }
            Root {
                mount: mount.as_bytes().to_vec(),
                dir: resolve::RootDir::new(dir, &settings.safe),
                keep_mount,
            }
        };
        let mut roots: Vec<Root> = settings
            .maps
            .iter()
            .map(|m| root(&m.mount, &m.dir, m.keep_mount))
            .collect();
        // Stable: among equal mounts, the one given first is tried first.
        roots.sort_by_key(|r| std::cmp::Reverse(r.mount.len()));
        roots.extend(settings.check.iter().map(|d| root("", d, true)));
        Ok(StaticFiles {
            roots,
            index: settings.index.clone(),
            skip_ext: settings.skip_ext.clone(),
            mime: mime::MimeTypes::load(&settings.mimefiles)?,
            settings: StaticSettings {
                gzip_dirs: settings.gzip_dirs.iter().map(|d| canonical(d)).collect(),
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

    fn lookup(&self, req: &Request) -> Lookup {
        let var = |v: Var| var(&req.vars, v).map_or(&b""[..], |value| &value[..]);
        let path = var(Var::PATH_INFO);
        if self
            .skip_ext
            .iter()
            .any(|ext| path.ends_with(ext.as_bytes()))
        {
            return Lookup::App;
        }
        for root in &self.roots {
            let Some(rest) = path.strip_prefix(&root.mount[..]) else {
                continue;
            };
            // At a segment boundary: /static matches /static/a, not /staticx.
            if !(rest.is_empty() || rest.starts_with(b"/") || root.mount.ends_with(b"/")) {
                continue;
            }
            let rel = if root.keep_mount { path } else { rest };
            let answer = match resolve::open(&root.dir, rel, &self.index) {
                Resolved::Missing => continue,
                Resolved::BadPath => Response::plain(400, "Bad Request", "Bad Request\n"),
                Resolved::Forbidden => Response::plain(403, "Forbidden", "Forbidden\n"),
                Resolved::AddSlash => redirect_to_directory(path, var(Var::QUERY_STRING)),
                Resolved::File { file, meta, path } => {
                    let method = var(Var::REQUEST_METHOD);
                    if method != b"GET" && method != b"HEAD" {
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
            };
            return Lookup::Answer(answer);
        }
        Lookup::App
    }
}

impl StaticFiles {
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
        let mut extra = Vec::new();
        if let Some(cache_control) = self.cache_control(req, path, &mime) {
            extra.push((
                Bytes::from_static(b"Cache-Control"),
                Bytes::from(cache_control.0),
            ));
            if let Some(expires) = cache_control.1 {
                extra.push((Bytes::from_static(b"Expires"), Bytes::from(expires)));
            }
        }
        let mut chosen = None;
        if self.precompressed(path) {
            extra.push((
                Bytes::from_static(b"Vary"),
                Bytes::from_static(b"Accept-Encoding"),
            ));
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
        let mut rep = respond::Representation::new(&meta, content_type);
        rep.extra = extra;
        rep.encoding = encoding;
        respond::respond(req, file, &rep)
    }

    /// Whether FILE.br or FILE.gz may stand in for this file.
    fn precompressed(&self, path: &Path) -> bool {
        let s = &self.settings;
        s.gzip_all
            || s.gzip_dirs.iter().any(|d| path.starts_with(d))
            || s.gzip_ext
                .iter()
                .any(|e| path.as_os_str().as_bytes().ends_with(e.as_bytes()))
    }

    /// Cache-Control, and Expires when it has a lifetime: --static-immutable
    /// for a hashed name, else the first --static-expires-uri,
    /// --static-expires or --static-expires-type that matches.
    fn cache_control(
        &self,
        req: &Request,
        file_path: &Path,
        mime: &str,
    ) -> Option<(String, Option<String>)> {
        let s = &self.settings;
        if s.immutable && has_content_hash(file_path) {
            return Some(("public, max-age=31536000, immutable".into(), None));
        }
        if s.expires_uri.is_empty() && s.expires_file.is_empty() && s.expires_type.is_empty() {
            return None;
        }
        let uri = var(&req.vars, Var::REQUEST_URI).map_or(&b""[..], |v| &v[..]);
        let uri = String::from_utf8_lossy(uri);
        let path = file_path.to_string_lossy();
        let seconds = s
            .expires_uri
            .iter()
            .find(|(re, _)| re.is_match(&uri))
            .or_else(|| s.expires_file.iter().find(|(re, _)| re.is_match(&path)))
            .map(|(_, secs)| *secs)
            .or_else(|| {
                s.expires_type
                    .iter()
                    .find(|(t, _)| t.eq_ignore_ascii_case(mime))
                    .map(|(_, secs)| *secs)
            })?;
        let expires = std::time::SystemTime::now() + std::time::Duration::from_secs(seconds);
        Some((
            format!("max-age={seconds}"),
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
                self.answered.response(&req, &resp, since);
                Box::pin(async move { resp })
            }
        }
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }
}
