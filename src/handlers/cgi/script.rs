//! One run of a CGI script: the process in a group of its own, the request
//! body streamed to its stdin, its stderr sent to the log line by line, its
//! stdout read up to the end of the head and then streamed as the body.
//!
//! A task per run owns the process and reaps it, so none is left a zombie;
//! it kills the whole group (the script and whatever it started) when the
//! script has neither taken input nor given output for the timeout, or
//! when the response is dropped before the script's output ended (the
//! client went away). The timeout counts from the last progress, as
//! uWSGI's `cgi-timeout` waits for output: a long upload or download that
//! keeps moving (git-http-backend's pushes and clones) is not cut.

use std::ffi::OsString;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::proto::cgi_response::{self, Head};
use crate::request::{BodyError, ChunkSource, CountedBody, RequestBody};

/// What to run, and how.
pub struct Run {
    /// The program: the script itself, or its `--cgi-helper`.
    pub program: PathBuf,
    /// Its arguments (the helper's, then the script's path).
    pub args: Vec<OsString>,
    /// The whole environment: nothing of oxgate's own leaks in.
    pub env: Vec<(OsString, OsString)>,
    /// The script's directory, as Apache runs scripts.
    pub cwd: PathBuf,
    pub timeout: Duration,
    /// Non-parsed headers: the output starts with an HTTP status line.
    pub nph: bool,
    /// What the log calls it: the script's path.
    pub name: Arc<str>,
}

/// Why a run gave no head.
#[derive(Debug)]
pub enum Failure {
    /// The program could not be started.
    Spawn(std::io::Error),
    /// The timeout passed before the head was complete.
    Timeout,
    /// The output ended, or was not a head.
    NoHead(String),
    /// The request body broke off (the client stalled, left, or sent less
    /// than it declared): the script was killed before it could take the
    /// part it had for the whole.
    Input(BodyError),
}

/// A request body that broke off on its way into the script, said once.
type InputFailure = Arc<std::sync::OnceLock<BodyError>>;

/// When the script last moved: bytes into its stdin or out of its stdout.
struct Progress {
    start: Instant,
    /// Milliseconds from `start`.
    last: AtomicU64,
    timeout: Duration,
    /// A chunk of the output is with the front end, not yet taken by the
    /// client: the script waits for the client, not the other way round,
    /// and the clock does not run (as uWSGI's cgi-timeout waits on the
    /// script alone; a client that takes nothing is the front end's to
    /// cut, at --socket-timeout).
    client_holds: AtomicBool,
}

impl Progress {
    fn new(timeout: Duration) -> Progress {
        Progress {
            start: Instant::now(),
            last: AtomicU64::new(0),
            timeout,
            client_holds: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// When the script is over the timeout, if it does not move before
    /// (a timeout too large to count to is a year: never, in practice).
    fn deadline(&self) -> Instant {
        if self.client_holds.load(Ordering::Relaxed) {
            return Instant::now() + self.timeout;
        }
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start
            .checked_add(last)
            .and_then(|at| at.checked_add(self.timeout))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 86_400))
    }

    fn expired(&self) -> bool {
        !self.client_holds.load(Ordering::Relaxed) && Instant::now() >= self.deadline()
    }
}

/// A script whose head was read: the rest of its output is the body.
pub struct Output {
    stdout: ChildStdout,
    scratch: Box<[u8]>,
    timed_out: Arc<AtomicBool>,
    /// Set when the request body broke off after the response began: the
    /// script was killed, and its output ends cut short.
    input_failed: InputFailure,
    /// Told that the output ended by itself; dropped unsent, it has the
    /// group killed.
    ended: Option<oneshot::Sender<()>>,
    /// Told by the supervisor that the run is over its timeout, though
    /// the output may stay open (a daemon it started in a session of its
    /// own holds it, out of reach of the group's kill).
    cut: Option<oneshot::Receiver<()>>,
    /// Called once with the body bytes read and whether it ended whole.
    on_end: Option<Box<dyn FnOnce(u64, bool) + Send>>,
    sent: u64,
    finished: bool,
    progress: Arc<Progress>,
}

const CHUNK: usize = 32 * 1024;
/// The most output held while the request body is still going in.
const HOLD_MAX: usize = 1 << 20;
/// The most of a request body read and dropped after the script stopped
/// taking it.
const DRAIN_MAX: usize = 64 << 20;

/// Starts the script and reads its head; the first body bytes read with it
/// come back beside it.
pub async fn run(run: Run, body: RequestBody) -> Result<(Head, Bytes, Output), Failure> {
    let mut command = Command::new(&run.program);
    command
        .args(&run.args)
        .env_clear()
        .envs(run.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&run.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: a timeout kills what it started, too. (No
        // pre_exec: std then spawns with posix_spawn, not fork, which is
        // most of a script's cost; the worker catches rather than ignores
        // signals so that none stays ignored across the exec.)
        .process_group(0);
    let mut child = command.spawn().map_err(Failure::Spawn)?;
    let progress = Arc::new(Progress::new(run.timeout));
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let timed_out = Arc::new(AtomicBool::new(false));
    let group = child.id().map(|id| Pid::from_raw(id as i32));
    let (ended_tx, ended_rx) = oneshot::channel();
    let (cut_tx, cut_rx) = oneshot::channel();
    tokio::spawn(supervise(
        child,
        progress.clone(),
        ended_rx,
        Cut {
            timed_out: timed_out.clone(),
            tell: Some(cut_tx),
        },
        run.name.clone(),
    ));
    let input_failed = InputFailure::default();
    let mut feeding = tokio::spawn(feed(
        stdin,
        body,
        progress.clone(),
        (group, input_failed.clone()),
    ));
    if let Some(stderr) = stderr {
        tokio::spawn(log_stderr(stderr, run.name.clone()));
    }
    let Some(mut stdout) = stdout else {
        return Err(Failure::NoHead("no stdout".into()));
    };
    let mut buf = BytesMut::with_capacity(8192);
    let heard = async {
        let head = loop {
            match cgi_response::parse(&buf, run.nph) {
                Ok(Some(head)) => {
                    if let Some(said) = head.dropped_said() {
                        crate::say!("oxgate: CGI {}: {said}", run.name);
                    }
                    break head;
                }
                Ok(None) => {}
                Err(e) => return Err(Failure::NoHead(e.to_string())),
            }
            // (read_buf is cancel-safe: a timeout that finds progress made
            // meanwhile reads on, losing nothing.)
            match tokio::time::timeout_at(progress.deadline(), stdout.read_buf(&mut buf)).await {
                Err(_) if progress.expired() => return Err(Failure::Timeout),
                Err(_) => {}
                Ok(Ok(0)) if timed_out.load(Ordering::Relaxed) => return Err(Failure::Timeout),
                Ok(Ok(0)) if buf.is_empty() => {
                    return Err(Failure::NoHead("it wrote nothing".into()));
                }
                Ok(Ok(0)) => {
                    return Err(Failure::NoHead("its output ended in the headers".into()));
                }
                Ok(Ok(_)) => progress.touch(),
                Ok(Err(e)) => return Err(Failure::NoHead(format!("reading its output: {e}"))),
            }
        };
        // The response waits until the script has the whole request body
        // (or stopped reading it), as under fcgiwrap and Apache: nginx stops
        // sending a FastCGI request body once the response begins, and a
        // script that reads to EOF would wait for the rest forever. Its
        // output is read meanwhile, so it cannot block on a full pipe.
        let mut output_ended = false;
        // A script with this much written before it took its whole input
        // waits for its output to be read (a filter, `cat`): the response
        // starts, and the body goes on going in beside it.
        while !feeding.is_finished() && buf.len() < HOLD_MAX {
            let step = tokio::time::timeout_at(progress.deadline(), async {
                tokio::select! {
                    _ = &mut feeding => Ok(None),
                    read = stdout.read_buf(&mut buf), if !output_ended => read.map(Some),
                }
            });
            match step.await {
                // Its head is in: it answered, and what it wrote goes out
                // (cut short at the end, as it was killed), as with a small
                // body, whose response has begun by then. A 504 said "no
                // response".
                Err(_) if progress.expired() => break,
                Err(_) => {}
                Ok(Err(e)) => return Err(Failure::NoHead(format!("reading its output: {e}"))),
                Ok(Ok(Some(0))) => output_ended = true,
                Ok(Ok(Some(_))) => progress.touch(),
                Ok(Ok(None)) => {}
            }
        }
        Ok(head)
    }
    .await;
    // Whatever else went wrong, a body that broke off is why: the script
    // was killed for it.
    let head = match (heard, input_failed.get()) {
        (_, Some(e)) => return Err(Failure::Input(e.clone())),
        (heard, None) => heard?,
    };
    let first = buf.split_off(head.len).freeze();
    Ok((
        head,
        first,
        Output {
            stdout,
            scratch: vec![0; CHUNK].into_boxed_slice(),
            timed_out,
            input_failed,
            ended: Some(ended_tx),
            cut: Some(cut_rx),
            on_end: None,
            sent: 0,
            finished: false,
            progress,
        },
    ))
}

impl Output {
    /// Reads the rest of the output and lets it go, in a task of its own,
    /// for a response whose body is not sent (HEAD, 204, 304, a local
    /// redirect): the script runs to its end, as under Apache, rather
    /// than having its group killed as when the client leaves. Its
    /// timeout still applies. The request is logged now, as sent.
    pub fn drain_unwanted(mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.sent, true);
        }
        // (Outside a runtime, as the worker stops, it is dropped: killed.)
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.finished {
            return;
        }
        runtime.spawn(async move {
            while let Some(Ok(_)) = std::future::poll_fn(|cx| self.poll_chunk(cx)).await {}
        });
    }

    /// Ends the output cut short: the client must not take it for the
    /// whole.
    fn timed_out_error(&mut self) -> BodyError {
        self.end(false);
        let secs = self.progress.timeout.as_secs();
        BodyError::new(
            504,
            format!("the CGI script made no progress for --cgi-timeout {secs}s and was killed"),
        )
    }

    fn end(&mut self, whole: bool) {
        self.finished = true;
        if whole && let Some(tx) = self.ended.take() {
            let _ = tx.send(());
        }
        if let Some(f) = self.on_end.take() {
            f(self.sent, whole);
        }
    }
}

impl CountedBody for Output {
    fn on_end(mut self, f: Box<dyn FnOnce(u64, bool) + Send>) -> Output {
        self.on_end = Some(f);
        self
    }

    fn add_sent(&mut self, n: u64) {
        self.sent += n;
    }
}

impl ChunkSource for Output {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        // Asked for more: the client took what it was given.
        if self.progress.client_holds.swap(false, Ordering::Relaxed) {
            self.progress.touch();
        }
        let mut read = ReadBuf::new(&mut self.scratch);
        match Pin::new(&mut self.stdout).poll_read(cx, &mut read) {
            // Nothing to read, and the pipe still open: told to cut (what
            // holds it is out of the group's kill), the output ends here.
            Poll::Pending => match self.cut.as_mut().map(|cut| Pin::new(cut).poll(cx)) {
                Some(Poll::Ready(Ok(()))) => {
                    self.cut = None;
                    // A group killed for the timeout was logged as such; its
                    // pipe may just not have closed yet.
                    if !self.timed_out.load(Ordering::Relaxed) {
                        crate::say!(
                            "oxgate: CGI: a process outside the script's group held its output, idle, for --cgi-timeout {}s; the response is cut",
                            self.progress.timeout.as_secs()
                        );
                    }
                    Poll::Ready(Some(Err(self.timed_out_error())))
                }
                Some(Poll::Ready(Err(_))) => {
                    self.cut = None;
                    Poll::Pending
                }
                _ => Poll::Pending,
            },
            Poll::Ready(Ok(())) if read.filled().is_empty() => {
                if self.timed_out.load(Ordering::Relaxed) {
                    Poll::Ready(Some(Err(self.timed_out_error())))
                } else if let Some(e) = self.input_failed.get() {
                    let e = e.clone();
                    self.end(false);
                    Poll::Ready(Some(Err(e)))
                } else {
                    self.end(true);
                    Poll::Ready(None)
                }
            }
            Poll::Ready(Ok(())) => {
                self.progress.touch();
                self.progress.client_holds.store(true, Ordering::Relaxed);
                let chunk = Bytes::copy_from_slice(read.filled());
                self.sent += chunk.len() as u64;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Err(e)) => {
                self.end(false);
                Poll::Ready(Some(Err(BodyError::new(
                    502,
                    format!("reading the CGI script's output: {e}"),
                ))))
            }
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        // Dropped before the end: `ended` goes unsent, and the group dies.
        if !self.finished {
            self.end(false);
        }
    }
}

/// How the supervisor says a run is over its timeout.
struct Cut {
    timed_out: Arc<AtomicBool>,
    /// Ends the output even if something keeps the pipe open.
    tell: Option<oneshot::Sender<()>>,
}

impl Cut {
    /// The run was killed for the timeout: its output ends cut short.
    fn now(&mut self) {
        self.timed_out.store(true, Ordering::Relaxed);
        self.tell();
    }

    /// The output ends once it has nothing more to read yet is not closed
    /// (what holds it is out of reach); what is in the pipe still goes out.
    fn tell(&mut self) {
        if let Some(tell) = self.tell.take() {
            let _ = tell.send(());
        }
    }
}

/// Owns the process until it is reaped; kills its group once it has made
/// no progress for the timeout, or when the output is abandoned.
async fn supervise(
    mut child: Child,
    progress: Arc<Progress>,
    ended: oneshot::Receiver<()>,
    mut cut: Cut,
    name: Arc<str>,
) {
    let timeout = progress.timeout;
    let Some(pid) = child.id() else {
        return;
    };
    let group = Pid::from_raw(pid as i32);
    let _running = Running::note(group);
    let kill = |why: &str| {
        if !why.is_empty() {
            crate::say!("oxgate: CGI {name}: {why}; killing its process group");
        }
        let _ = killpg(group, Signal::SIGKILL);
    };
    let over = |cut: &mut Cut| {
        cut.now();
        kill(&format!(
            "no input taken nor output given for --cgi-timeout {}s",
            timeout.as_secs()
        ));
    };
    let mut ended = Some(ended);
    loop {
        tokio::select! {
            status = child.wait() => {
                // A crash (SIGSEGV, an OOM kill) is the operator's to know
                // of, as lighttpd logs it: what the script wrote before is
                // sent, and may look whole to the client.
                if let Some(sig) = status.ok().and_then(|s| {
                    use std::os::unix::process::ExitStatusExt;
                    s.signal()
                }) {
                    let sig = Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
                    crate::say!("oxgate: CGI {name}: the script was killed by {sig}");
                }
                break;
            }
            _ = tokio::time::sleep_until(progress.deadline()) => {
                if !progress.expired() {
                    continue;
                }
                over(&mut cut);
                let _ = child.wait().await;
                return;
            }
            r = async { ended.as_mut().expect("checked").await }, if ended.is_some() => {
                ended = None;
                if r.is_err() {
                    // The response was dropped: nobody reads the rest.
                    kill("");
                    let _ = child.wait().await;
                    return;
                }
            }
        }
    }
    // Reaped. What it started may still hold the output open: that, too,
    // ends once it makes no progress for the timeout, or when the response
    // is dropped. The response is marked cut only if something of the
    // group was still there to kill (a script that ended, its last bytes
    // still in the pipe for a slow client, ran to its end).
    if let Some(mut ended) = ended {
        loop {
            tokio::select! {
                r = &mut ended => {
                    if r.is_err() {
                        let _ = killpg(group, Signal::SIGKILL);
                    }
                    return;
                }
                _ = tokio::time::sleep_until(progress.deadline()) => {
                    if !progress.expired() {
                        continue;
                    }
                    // Idle, and the output not ended: what the script started
                    // in its group holds it (killed), or something in a
                    // session of its own (out of reach: the output ends once
                    // the pipe is empty), or only a slow client is reading
                    // the last of it (which then goes out whole).
                    if killpg(group, Signal::SIGKILL).is_ok() {
                        cut.now();
                        crate::say!(
                            "oxgate: CGI {name}: what it started still held its output, idle, after --cgi-timeout {}s; killed",
                            timeout.as_secs()
                        );
                    } else {
                        cut.tell();
                    }
                    return;
                }
            }
        }
    }
}

/// The process groups of the scripts this worker supervises: a worker on
/// its way out (a stop or reload whose mercy ran out) kills them, which
/// were left running for ever otherwise, with no one to time them out.
static RUNNING: std::sync::Mutex<Vec<Pid>> = std::sync::Mutex::new(Vec::new());

/// A script's group in `RUNNING` while its supervisor runs.
struct Running(Pid);

impl Running {
    fn note(group: Pid) -> Running {
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(group);
        Running(group)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = running.iter().position(|g| *g == self.0) {
            running.swap_remove(i);
        }
    }
}

/// Kills a script's group while its supervisor still watches it (until
/// just after the reap): once the supervisor is gone, the id may be
/// another group's.
fn kill_if_running(group: Pid) {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    if running.contains(&group) {
        let _ = killpg(group, Signal::SIGKILL);
    }
}

/// Whether `pid` is a CGI script this worker runs (its supervisor reaps
/// it: `--reaper` must not).
pub fn is_running_script(pid: i32) -> bool {
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|g| g.as_raw() == pid)
}

/// Kills the process group of every script still running: the worker is
/// leaving, and they would outlive it unsupervised.
pub fn kill_running_scripts() {
    let running = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(|e| e.into_inner()));
    if !running.is_empty() {
        crate::say!(
            "oxgate: the worker is leaving: killing {} CGI script(s) still running",
            running.len()
        );
    }
    for group in running {
        let _ = killpg(group, Signal::SIGKILL);
    }
}

/// Streams the request body into the script's stdin, then closes it. A
/// script that exits without reading it all ends the copy (EPIPE). A body
/// that breaks off (a client that stalls, leaves, or sends less than it
/// declared) kills the script's group before its stdin closes: closed
/// first, it read the end of a cut upload as the end of the whole, and
/// saved or acted on the part (Apache answers 408 and stops it too).
async fn feed(
    stdin: Option<ChildStdin>,
    body: RequestBody,
    progress: Arc<Progress>,
    (group, failed): (Option<Pid>, InputFailure),
) {
    let Some(mut stdin) = stdin else {
        return;
    };
    // Every write is progress: a script reading a large body slowly is
    // still moving.
    let mut write = async |mut bytes: &[u8]| {
        while !bytes.is_empty() {
            let n = stdin.write(bytes).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            progress.touch();
            bytes = &bytes[n..];
        }
        Ok::<(), std::io::Error>(())
    };
    match body {
        RequestBody::Empty => {}
        RequestBody::Full(bytes) => {
            let _ = write(&bytes).await;
        }
        RequestBody::Stream(mut stream) => {
            while let Some(next) = stream.chunk().await {
                let chunk = match next {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        let _ = failed.set(e);
                        if let Some(group) = group {
                            kill_if_running(group);
                        }
                        return;
                    }
                };
                if write(&chunk).await.is_err() {
                    // The script takes no more. The rest is read and
                    // dropped (within reason), beside the response, which
                    // does not wait for it: a client still sending to a
                    // connection that closes gets a reset, which takes the
                    // response in flight with it. (The front end's body
                    // timeouts bound a client that stalls.)
                    tokio::spawn(async move {
                        let mut left = DRAIN_MAX;
                        while let Some(Ok(chunk)) = stream.chunk().await {
                            let Some(l) = left.checked_sub(chunk.len()) else {
                                break;
                            };
                            left = l;
                        }
                    });
                    break;
                }
            }
        }
    }
}

/// The script's stderr, a log line per line, with its name.
async fn log_stderr(mut stderr: ChildStderr, name: Arc<str>) {
    const MAX_LINE: usize = 8192;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        // An error ends the log as the end of the output does.
        let n: usize = stderr.read_buf(&mut buf).await.unwrap_or_default();
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line = buf.split_to(nl + 1);
            say_line(&name, &line[..nl]);
        }
        if n == 0 || buf.len() >= MAX_LINE {
            if !buf.is_empty() {
                say_line(&name, &buf.split());
            }
            if n == 0 {
                return;
            }
        }
    }
}

fn say_line(name: &str, line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    crate::say!("oxgate: CGI {name}: {}", String::from_utf8_lossy(line));
}
