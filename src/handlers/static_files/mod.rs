//! Static files: `--static-map MOUNT=DIR`, `--static-map2` and
//! `--check-static DIR`, served from disk before the app, as uWSGI does. A
//! path with no file behind it goes on to the app; a path that tries to
//! leave its directory does not.

mod mime;
mod resolve;
mod respond;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::config::StaticSettings;
use crate::request::{Handler, Request, Responding, Response, Var, VarName};
use resolve::Resolved;

/// The app behind its static directories.
pub struct StaticFiles {
    /// `--static-map`s, the longest mount first, then the `--check-static`
    /// directories (mount "").
    roots: Vec<Root>,
    index: Vec<String>,
    skip_ext: Vec<String>,
    mime: mime::MimeTypes,
    inner: Arc<dyn Handler>,
}

struct Root {
    mount: Vec<u8>,
    dir: PathBuf,
    keep_mount: bool,
    /// Where its files may really be: its canonical path, then
    /// `--static-safe`'s.
    allowed: Vec<PathBuf>,
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
        let safe: Vec<PathBuf> = settings.safe.iter().map(|d| canonical(d)).collect();
        let root = |mount: &str, dir: &Path, keep_mount: bool| {
            if !dir.is_dir() {
                crate::say!(
                    "oxgate: warning: static directory {} does not exist (yet); its mount {} passes to the app",
                    dir.display(),
                    if mount.is_empty() { "/" } else { mount }
                );
            }
            let dir = canonical(dir);
            Root {
                mount: mount.as_bytes().to_vec(),
                allowed: std::iter::once(dir.clone())
                    .chain(safe.iter().cloned())
                    .collect(),
                dir,
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
            inner,
        })
    }

    fn lookup(&self, req: &Request) -> Lookup {
        let var = |v: Var| {
            req.vars
                .iter()
                .find(|(k, _)| *k == VarName::Known(v))
                .map_or(&b""[..], |(_, value)| &value[..])
        };
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
            let answer = match resolve::open(&root.dir, rel, &root.allowed, &self.index) {
                Resolved::Missing => continue,
                Resolved::BadPath => Response::plain(400, "Bad Request", "Bad Request\n"),
                Resolved::Forbidden => Response::plain(403, "Forbidden", "Forbidden\n"),
                Resolved::AddSlash => redirect_to_directory(path, var(Var::QUERY_STRING)),
                Resolved::File { file, meta, real } => {
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
                        let content_type = mime::content_type(&self.mime.for_name(&real));
                        let rep = respond::Representation::new(&meta, content_type);
                        respond::respond(req, file, &rep)
                    }
                }
            };
            return Lookup::Answer(answer);
        }
        Lookup::App
    }
}

/// 301 to the directory's path with its slash (the query kept).
fn redirect_to_directory(path: &[u8], query: &[u8]) -> Response {
    // Encoded again: PATH_INFO was decoded, and a name with a space or a
    // `?` must come back as the same path.
    const PATH: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}');
    let mut location = percent_encoding::percent_encode(path, PATH)
        .to_string()
        .into_bytes();
    location.push(b'/');
    if !query.is_empty() {
        location.push(b'?');
        location.extend_from_slice(query);
    }
    let mut resp = Response::plain(301, "Moved Permanently", "Moved Permanently\n");
    resp.headers
        .push((Bytes::from_static(b"Location"), Bytes::from(location)));
    resp
}

impl Handler for StaticFiles {
    fn handle(self: Arc<Self>, req: Request) -> Responding {
        match self.lookup(&req) {
            Lookup::App => self.inner.clone().handle(req),
            Lookup::Answer(resp) => Box::pin(async move { resp }),
        }
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }
}
