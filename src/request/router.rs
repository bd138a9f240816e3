//! Routing between handlers: uWSGI's mountpoints (`--mount`,
//! `--manage-script-name`). A mount may be any kind of handler.

use std::sync::Arc;

use bytes::Bytes;

use super::handler::{BodyTaking, Handler, Request, RequestObserver, Responding};
use super::response::Response;
use super::vars::{Var, VarName};

/// Picks the handler for each request, as uWSGI does: with
/// `--manage-script-name`, the longest mountpoint that prefixes PATH_INFO
/// (moved to SCRIPT_NAME); otherwise the mountpoint equal to SCRIPT_NAME;
/// else the default handler; else 404.
pub struct Router {
    default: Option<Arc<dyn Handler>>,
    /// `--no-default-app`: what answers a request whose SCRIPT_NAME names
    /// an app that is not mounted, instead of the default app. (The
    /// default app itself is mounted at "": an empty SCRIPT_NAME, as
    /// every request has with `--manage-script-name` when no mountpoint
    /// takes it, still goes to it, as in uWSGI.)
    unmatched: Option<Arc<dyn Handler>>,
    /// Longest mountpoint first, without a trailing slash.
    mounts: Vec<(Bytes, Arc<dyn Handler>)>,
    manage_script_name: bool,
    /// `--vhost`: a request that names its app (nginx's `uwsgi_param
    /// UWSGI_SCRIPT`, `UWSGI_MODULE` or `UWSGI_FILE`) goes to the default
    /// handler, which loads that app, whatever its path.
    vhost: bool,
}

/// What answers when no app is loaded (only scripts or static files are):
/// every path they do not serve is 404, logged and counted.
pub struct NoApp {
    answered: super::answered::Answered,
}

impl Default for NoApp {
    fn default() -> NoApp {
        NoApp {
            answered: super::answered::Answered::new(super::HandlerKind::Unrouted),
        }
    }
}

impl NoApp {
    pub fn set_observer(&self, observer: Arc<dyn RequestObserver>) {
        self.answered.set(observer);
    }
}

impl Handler for NoApp {
    fn handle(self: Arc<Self>, req: Request) -> Responding {
        let resp = Response::plain(404, "Not Found", "Not Found\n");
        self.answered
            .response(&req, &resp, std::time::Instant::now());
        Box::pin(async { resp })
    }

    fn body_taking(&self) -> BodyTaking {
        BodyTaking::Unread
    }
}

impl Router {
    pub fn new(
        default: Option<Arc<dyn Handler>>,
        unmatched: Option<Arc<dyn Handler>>,
        mut mounts: Vec<(Bytes, Arc<dyn Handler>)>,
        manage_script_name: bool,
        vhost: bool,
    ) -> Router {
        mounts.sort_by_key(|(point, _)| std::cmp::Reverse(point.len()));
        Router {
            default,
            unmatched,
            mounts,
            manage_script_name,
            vhost,
        }
    }

    /// The handler for a request, after moving the mountpoint from
    /// PATH_INFO to SCRIPT_NAME where `--manage-script-name` asks.
    pub fn route(&self, vars: &mut Vec<(VarName, Bytes)>) -> Option<&Arc<dyn Handler>> {
        if self.mounts.is_empty() || (self.vhost && names_its_app(vars)) {
            return self.default.as_ref();
        }
        let find = |vars: &[(VarName, Bytes)], v: Var| {
            vars.iter().position(|(k, _)| *k == VarName::Known(v))
        };
        let script = find(vars, Var::SCRIPT_NAME);
        let path = find(vars, Var::PATH_INFO);
        if self.manage_script_name
            && let Some(p) = path
        {
            let info = vars[p].1.clone();
            for (point, handler) in &self.mounts {
                let under = info.starts_with(point)
                    && (info.len() == point.len() || info[point.len()] == b'/');
                if under && !point.is_empty() {
                    vars[p].1 = info.slice(point.len()..);
                    match script {
                        Some(s) => vars[s].1 = point.clone(),
                        None => vars.push((VarName::Known(Var::SCRIPT_NAME), point.clone())),
                    }
                    return Some(handler);
                }
            }
        }
        // Without --manage-script-name, and with it when no mountpoint
        // prefixes PATH_INFO (nginx stripped it: a rewrite, or modifier1
        // 30), the front end's SCRIPT_NAME picks the app, as in uWSGI.
        if let Some(s) = script {
            let name = &vars[s].1;
            let name = name.strip_suffix(b"/").unwrap_or(name);
            if let Some((_, handler)) = self.mounts.iter().find(|(point, _)| point[..] == *name) {
                return Some(handler);
            }
            if !self.manage_script_name
                && !name.is_empty()
                && let Some(unmatched) = &self.unmatched
            {
                return Some(unmatched);
            }
        }
        self.default.as_ref()
    }
}

/// Whether the front end named the app to load (uWSGI's dynamic apps).
fn names_its_app(vars: &[(VarName, Bytes)]) -> bool {
    vars.iter().any(|(name, value)| {
        !value.is_empty()
            && matches!(
                name.as_bytes(),
                b"UWSGI_SCRIPT" | b"UWSGI_MODULE" | b"UWSGI_FILE"
            )
    })
}

impl Handler for Router {
    fn handle(self: Arc<Self>, mut req: Request) -> Responding {
        match self.route(&mut req.vars) {
            Some(handler) => handler.clone().handle(req),
            None => Box::pin(async {
                Response::plain(404, "Not Found", "No app is mounted at this path\n")
            }),
        }
    }

    /// Which handler takes a request is known only once its head is
    /// read: together, they read ahead if any of them wants it.
    fn body_taking(&self) -> BodyTaking {
        self.default
            .iter()
            .chain(&self.unmatched)
            .chain(self.mounts.iter().map(|(_, h)| h))
            .fold(BodyTaking::Unread, |all, h| all.with(h.body_taking()))
    }

    fn concurrency(&self) -> usize {
        self.default
            .iter()
            .chain(self.mounts.iter().map(|(_, h)| h))
            .map(|h| h.concurrency())
            .max()
            .unwrap_or(1)
    }

    /// The one every app waits on (the apps of one interpreter share its
    /// threads); none when one of them waits on nothing, or on another.
    fn room(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        let mut all = self
            .default
            .iter()
            .chain(self.mounts.iter().map(|(_, h)| h))
            .map(|h| h.room());
        let first = all.next()??;
        all.all(|r| r.is_some_and(|r| Arc::ptr_eq(&r, &first)))
            .then_some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::vars::test_vars as vars;

    /// Answers with its name.
    struct Named(&'static str);

    impl Handler for Named {
        fn handle(self: Arc<Self>, _req: Request) -> Responding {
            let name = self.0;
            Box::pin(async move { Response::plain(200, "OK", name) })
        }
    }

    fn router(manage_script_name: bool, vhost: bool) -> Router {
        Router::new(
            Some(Arc::new(Named("default"))),
            None,
            vec![
                (
                    Bytes::from_static(b"/blog"),
                    Arc::new(Named("blog")) as Arc<dyn Handler>,
                ),
                (Bytes::from_static(b"/blog/admin"), Arc::new(Named("admin"))),
            ],
            manage_script_name,
            vhost,
        )
    }

    /// Takes bodies as they come, as an ASGI app does.
    struct Streaming;

    impl Handler for Streaming {
        fn handle(self: Arc<Self>, _req: Request) -> Responding {
            Box::pin(async { Response::plain(200, "OK", "") })
        }

        fn body_taking(&self) -> BodyTaking {
            BodyTaking::AsItComes
        }
    }

    #[test]
    fn bodies_are_read_ahead_unless_every_handler_takes_them_as_they_come() {
        let streaming = || Arc::new(Streaming) as Arc<dyn Handler>;
        let with = |default: Arc<dyn Handler>, mount: Arc<dyn Handler>| {
            Router::new(
                Some(default),
                None,
                vec![(Bytes::from_static(b"/m"), mount)],
                true,
                false,
            )
            .body_taking()
        };
        assert_eq!(with(streaming(), streaming()), BodyTaking::AsItComes);
        assert_eq!(
            with(streaming(), Arc::new(NoApp::default())),
            BodyTaking::AsItComes
        );
        assert_eq!(
            with(streaming(), Arc::new(Named("wsgi"))),
            BodyTaking::ReadAhead
        );
        assert_eq!(
            with(Arc::new(Named("wsgi")), streaming()),
            BodyTaking::ReadAhead
        );
        assert_eq!(
            with(Arc::new(NoApp::default()), Arc::new(NoApp::default())),
            BodyTaking::Unread
        );
    }

    fn value(vars: &[(VarName, Bytes)], name: &str) -> String {
        vars.iter()
            .find(|(k, _)| k.as_bytes() == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }

    fn routed(r: &Router, v: &mut Vec<(VarName, Bytes)>) -> &'static str {
        let h = r.route(v).expect("a handler");
        [("default", 0), ("blog", 1), ("admin", 2)]
            .iter()
            .find(|(_, i)| match i {
                0 => Arc::ptr_eq(h, r.default.as_ref().unwrap()),
                i => Arc::ptr_eq(h, &r.mounts[2 - i].1),
            })
            .map(|(n, _)| *n)
            .unwrap()
    }

    #[test]
    fn script_name_picks_the_mount() {
        let r = router(false, false);
        assert_eq!(
            routed(
                &r,
                &mut vars(&[("SCRIPT_NAME", "/blog/"), ("PATH_INFO", "/x")])
            ),
            "blog"
        );
        assert_eq!(
            routed(
                &r,
                &mut vars(&[("SCRIPT_NAME", "/other"), ("PATH_INFO", "/x")])
            ),
            "default"
        );
        assert_eq!(
            routed(&r, &mut vars(&[("PATH_INFO", "/blog/x")])),
            "default"
        );
    }

    #[test]
    fn no_default_app_answers_a_script_name_no_app_has() {
        let mut r = router(false, false);
        let missing: Arc<dyn Handler> = Arc::new(Named("missing"));
        r.unmatched = Some(missing.clone());
        let mut other = vars(&[("SCRIPT_NAME", "/other"), ("PATH_INFO", "/x")]);
        assert!(Arc::ptr_eq(r.route(&mut other).unwrap(), &missing));
        // The default app is the one mounted at "".
        let empty = &mut vars(&[("SCRIPT_NAME", ""), ("PATH_INFO", "/x")]);
        assert_eq!(routed(&r, empty), "default");
        assert_eq!(routed(&r, &mut vars(&[("PATH_INFO", "/x")])), "default");
        let blog = &mut vars(&[("SCRIPT_NAME", "/blog"), ("PATH_INFO", "/x")]);
        assert_eq!(routed(&r, blog), "blog");
        // With --manage-script-name, a path no mountpoint takes keeps an
        // empty SCRIPT_NAME: the default app's.
        let mut r = router(true, false);
        r.unmatched = Some(missing);
        assert_eq!(
            routed(&r, &mut vars(&[("PATH_INFO", "/elsewhere")])),
            "default"
        );
    }

    #[test]
    fn manage_script_name_takes_the_longest_prefix_of_path_info() {
        let r = router(true, false);
        let mut v = vars(&[("PATH_INFO", "/blog/admin/users")]);
        assert_eq!(routed(&r, &mut v), "admin");
        assert_eq!(
            (value(&v, "SCRIPT_NAME"), value(&v, "PATH_INFO")),
            ("/blog/admin".into(), "/users".into())
        );
        let mut v = vars(&[("SCRIPT_NAME", ""), ("PATH_INFO", "/blog")]);
        assert_eq!(routed(&r, &mut v), "blog");
        assert_eq!(
            (value(&v, "SCRIPT_NAME"), value(&v, "PATH_INFO")),
            ("/blog".into(), "".into())
        );
        // A prefix that is not a whole path segment does not match.
        assert_eq!(
            routed(&r, &mut vars(&[("PATH_INFO", "/blogger")])),
            "default"
        );
        // No mountpoint prefixes PATH_INFO (nginx stripped it): the front
        // end's SCRIPT_NAME picks, as without the option.
        let mut v = vars(&[("SCRIPT_NAME", "/blog/admin"), ("PATH_INFO", "/x")]);
        assert_eq!(routed(&r, &mut v), "admin");
        assert_eq!(
            (value(&v, "SCRIPT_NAME"), value(&v, "PATH_INFO")),
            ("/blog/admin".into(), "/x".into())
        );
        let mut v = vars(&[("SCRIPT_NAME", "/other"), ("PATH_INFO", "/x")]);
        assert_eq!(routed(&r, &mut v), "default");
    }

    #[test]
    fn with_vhost_a_request_that_names_its_app_goes_to_the_default() {
        let named = [("SCRIPT_NAME", "/blog"), ("UWSGI_SCRIPT", "other.wsgi")];
        assert_eq!(routed(&router(false, true), &mut vars(&named)), "default");
        assert_eq!(routed(&router(false, false), &mut vars(&named)), "blog");
        let empty = [("SCRIPT_NAME", "/blog"), ("UWSGI_SCRIPT", "")];
        assert_eq!(routed(&router(false, true), &mut vars(&empty)), "blog");
    }

    #[test]
    fn no_default_and_no_mount_is_a_404() {
        let r = Router::new(
            None,
            None,
            vec![(
                Bytes::from_static(b"/a"),
                Arc::new(Named("a")) as Arc<dyn Handler>,
            )],
            false,
            false,
        );
        assert!(r.route(&mut vars(&[("SCRIPT_NAME", "/b")])).is_none());
    }
}
