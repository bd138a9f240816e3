//! `--uid`/`--gid` and `--chown-socket`: user and group names or numbers.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

/// `--uid`/`--gid`: names or numbers; the group first, while still root.
/// With `initgroups`, the user's supplementary groups too, as uWSGI sets
/// them (its `--no-initgroups` turns that off).
pub fn drop_privileges(
    uid: Option<&str>,
    gid: Option<&str>,
    initgroups: bool,
) -> Result<(), String> {
    let user = uid.map(|u| lookup_user(u, "--uid")).transpose()?;
    let group = match gid {
        Some(g) => Some(lookup_group(g, "--gid")?),
        None => None,
    };
    if user.is_none() && group.is_none() {
        return Ok(());
    }
    // root's supplementary groups (disk, adm, ...) never outlive a drop.
    if let Err(e) = nix::unistd::setgroups(&[])
        && nix::unistd::geteuid().is_root()
    {
        return Err(format!(
            "cannot drop supplementary groups: {}",
            std::io::Error::from(e)
        ));
    }
    if let Some(gid) = group
        && let Err(e) = nix::unistd::setgid(gid)
    {
        return Err(format!("--gid {}: {}", gid, std::io::Error::from(e)));
    }
    if let Some((uid, name)) = user {
        // The user's own groups, as su would give them (and uWSGI's
        // initgroups(3)): a user that reaches a socket or a key through a
        // supplementary group (ssl-cert, redis) keeps it. --gid's group,
        // when given, is the primary one.
        match User::from_uid(uid) {
            Ok(Some(pw)) => {
                let primary = group.unwrap_or(pw.gid);
                let c = CString::new(pw.name.as_str()).map_err(|e| e.to_string())?;
                let taken = if initgroups {
                    nix::unistd::initgroups(&c, primary)
                } else {
                    Ok(())
                };
                if let Err(e) = taken.and_then(|()| nix::unistd::setgid(primary))
                    && nix::unistd::geteuid().is_root()
                {
                    return Err(format!(
                        "--uid {name}: taking its groups: {}",
                        std::io::Error::from(e)
                    ));
                }
            }
            _ if group.is_none() => crate::say!(
                "oxgate: warning: --uid {name} has no passwd entry and no --gid was given: \
                 the group stays {}",
                nix::unistd::getgid()
            ),
            _ => {}
        }
        if let Err(e) = nix::unistd::setuid(uid) {
            return Err(format!("--uid {name}: {}", std::io::Error::from(e)));
        }
    }
    Ok(())
}

/// A user name or number, and how it was written (for messages), given
/// as `option`.
fn lookup_user(u: &str, option: &str) -> Result<(Uid, String), String> {
    if let Ok(n) = u.parse::<libc::uid_t>() {
        return Ok((Uid::from_raw(n), u.to_string()));
    }
    if u.contains('\0') {
        return Err(format!("NUL in {option}"));
    }
    // getpwnam_r underneath: thread-safe, unlike getpwnam.
    match User::from_name(u) {
        Ok(Some(pw)) => Ok((pw.uid, u.to_string())),
        _ => Err(format!("{option} {u}: no such user")),
    }
}

/// A group name or number, given as `option`.
fn lookup_group(g: &str, option: &str) -> Result<Gid, String> {
    if let Ok(n) = g.parse::<libc::gid_t>() {
        return Ok(Gid::from_raw(n));
    }
    if g.contains('\0') {
        return Err(format!("NUL in {option}"));
    }
    // getgrnam_r underneath: thread-safe, unlike getgrnam.
    match Group::from_name(g) {
        Ok(Some(gr)) => Ok(gr.gid),
        _ => Err(format!("{option} {g}: no such group")),
    }
}

/// Said after the start's banner when oxgate runs as root with no
/// `--uid`: the app, and the PHP and CGI scripts a request names, run as
/// root then. uWSGI says so at every start; php-fpm refuses to start.
pub fn root_without_uid_notice(uid: Option<&str>) -> Option<&'static str> {
    (uid.is_none() && nix::unistd::geteuid().is_root()).then_some(
        "oxgate: running as root with no --uid: the app and any script it runs have every privilege; \
         set --uid and --gid to a user of their own",
    )
}

/// The users and groups `--uid`, `--gid` and `--chown-socket` name, looked
/// up before anything is bound or written: a name that does not exist
/// stops the start (and `--check-config`) with nothing left behind.
pub fn check_names(
    uid: Option<&str>,
    gid: Option<&str>,
    chown_socket: Option<&str>,
) -> Result<(), String> {
    if let Some(u) = uid {
        lookup_user(u, "--uid")?;
    }
    if let Some(g) = gid {
        lookup_group(g, "--gid")?;
    }
    if let Some(spec) = chown_socket {
        owner_of(spec)?;
    }
    Ok(())
}

/// `--chown-socket`'s USER[:GROUP]: the user, and the group if given.
fn owner_of(spec: &str) -> Result<(Uid, Option<Gid>), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, _) = lookup_user(user, "--chown-socket")?;
    let gid = match group {
        Some(g) if !g.is_empty() => Some(lookup_group(g, "--chown-socket")?),
        _ => None, // leave the group
    };
    Ok((uid, gid))
}

/// `--logfile-chown`: the log files, opened as root, go to the user and
/// group `--uid` and `--gid` name (the group is left without `--gid`), so
/// that the master and workers, no longer root, can open them again after
/// a rotation (SIGUSR1): logrotate's `create` makes the new file as the
/// old one was owned. Gunicorn does this for its log files.
pub fn chown_logs(paths: &[&Path], uid: Option<&str>, gid: Option<&str>) -> Result<(), String> {
    chown_to_ids(paths, uid, gid, "--logfile-chown")
}

/// A unix socket oxgate bound, with `--uid` or `--gid` and no
/// `--chown-socket`: it goes to that user and group, as uWSGI's sockets
/// do (it binds them as that user), so that a web server running as them
/// (nginx as www-data, `chmod-socket = 660`) can connect.
pub fn chown_socket_to_ids(
    path: &Path,
    uid: Option<&str>,
    gid: Option<&str>,
) -> Result<(), String> {
    chown_to_ids(&[path], uid, gid, "--uid/--gid on the socket")
}

fn chown_to_ids(
    paths: &[&Path],
    uid: Option<&str>,
    gid: Option<&str>,
    what: &str,
) -> Result<(), String> {
    let user = uid.map(|u| lookup_user(u, "--uid")).transpose()?;
    let group = gid.map(|g| lookup_group(g, "--gid")).transpose()?;
    if user.is_none() && group.is_none() {
        return Ok(());
    }
    for path in paths {
        std::os::unix::fs::chown(
            path,
            user.as_ref().map(|(u, _)| u.as_raw()),
            group.map(Gid::as_raw),
        )
        .map_err(|e| format!("{what} on {}: {e}", path.display()))?;
    }
    Ok(())
}

/// `--chown-socket USER[:GROUP]` on a unix socket path.
pub fn chown_path(path: &Path, spec: &str) -> Result<(), String> {
    let (uid, gid) = owner_of(spec)?;
    let gid = gid.map(Gid::as_raw);
    if path.as_os_str().as_bytes().contains(&0) {
        return Err("NUL in path".to_string());
    }
    std::os::unix::fs::chown(path, Some(uid.as_raw()), gid)
        .map_err(|e| format!("--chown-socket {spec} on {}: {e}", path.display()))
}
