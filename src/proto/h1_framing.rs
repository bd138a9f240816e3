//! Follows an HTTP/1.1 request stream's framing as hyper reads it, to find
//! the one kind of head hyper reads safely but leaves no trace of: one with
//! both Content-Length and Transfer-Encoding (RFC 9112 §6.3). hyper takes
//! such a request as chunked, drops the Content-Length and closes the
//! connection after it, so by the time oxgate sees the request nothing
//! says a proxy in front may have framed it by its length instead. Gunicorn
//! refuses it with 400, and the hardening issue asks oxgate to do the same
//! in its own layer, not in a fork of hyper; this is that layer's eyes.
//!
//! Heads and chunk-size lines are parsed by httparse, hyper's own parser,
//! so the two agree on where each head begins. Where hyper would refuse
//! what comes (a malformed head, an unknown transfer coding) the tracker
//! stops following: hyper answers 400 and closes, and no head after it is
//! read. It stops too at an upgrade, after which the bytes are no longer
//! HTTP/1.1, and at anything longer than hyper's limits.
//!
//! Pure: bytes in, the ordinal of the offending head out, no I/O.

/// hyper's limit on a chunk line's extensions (and so on the line).
const LINE_MAX: usize = 16 * 1024 + 64;

/// Where in the stream the next byte falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A request head, or the empty lines before one.
    Head,
    /// This many bytes of a Content-Length body are still to come.
    Body(u64),
    /// A chunk-size line, with any extensions.
    ChunkSize,
    /// This many bytes of a chunk's data are still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer fields after the last chunk, up to an empty line.
    Trailers,
    /// No longer following: hyper refuses what came, reads no head after
    /// it, or the connection was upgraded.
    Lost,
}

/// One connection's request stream, read as hyper reads it.
#[derive(Debug)]
pub struct FramingTracker {
    state: State,
    /// A head or line a read cut short, kept until the rest comes.
    pending: Vec<u8>,
    /// Heads seen so far.
    heads: u64,
    /// hyper's limit on a head's size (`max_buf_size`).
    max_head: usize,
    /// hyper's limit on a head's header count.
    max_headers: usize,
}

impl FramingTracker {
    pub fn new(max_head: usize, max_headers: usize) -> FramingTracker {
        FramingTracker {
            state: State::Head,
            pending: Vec::new(),
            heads: 0,
            max_head,
            max_headers: max_headers.max(1),
        }
    }

    /// Takes the next bytes the connection read. Returns the ordinal
    /// (1 for the connection's first request) of a head among them that has
    /// both Content-Length and Transfer-Encoding. There is at most one in a
    /// connection: hyper reads no request after it.
    pub fn feed(&mut self, data: &[u8]) -> Option<u64> {
        if self.state == State::Lost || data.is_empty() {
            return None;
        }
        if self.pending.is_empty() {
            return self.run(data);
        }
        let mut joined = std::mem::take(&mut self.pending);
        joined.extend_from_slice(data);
        self.run(&joined)
    }

    /// Whether the tracker still follows the stream (for the tests).
    pub fn following(&self) -> bool {
        self.state != State::Lost
    }

    fn run(&mut self, mut data: &[u8]) -> Option<u64> {
        while !data.is_empty() {
            match self.state {
                State::Lost => return None,
                State::Head => match self.head(data) {
                    Step::Took(n) => data = &data[n..],
                    Step::Short => return self.keep(data, self.max_head),
                    Step::Crossed(ordinal) => {
                        self.state = State::Lost;
                        return Some(ordinal);
                    }
                },
                State::Body(left) | State::ChunkData(left) => {
                    let n = left.min(data.len() as u64);
                    data = &data[n as usize..];
                    self.state = match (self.state, left - n) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), rest) => State::Body(rest),
                        (_, 0) => State::ChunkEnd,
                        (_, rest) => State::ChunkData(rest),
                    };
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let Some(end) = data.iter().position(|&b| b == b'\n') else {
                        return self.keep(data, LINE_MAX);
                    };
                    let (line, rest) = data.split_at(end + 1);
                    self.state = self.after_line(line);
                    data = rest;
                }
            }
        }
        None
    }

    /// Keeps an unfinished head or line for the next read, unless it is
    /// already past what hyper would read.
    fn keep(&mut self, data: &[u8], limit: usize) -> Option<u64> {
        if data.len() > limit {
            self.state = State::Lost;
        } else {
            self.pending.extend_from_slice(data);
        }
        None
    }

    fn after_line(&self, line: &[u8]) -> State {
        match self.state {
            _ if line.len() > LINE_MAX => State::Lost,
            State::ChunkSize => match httparse::parse_chunk_size(line) {
                Ok(httparse::Status::Complete((_, 0))) => State::Trailers,
                Ok(httparse::Status::Complete((_, size))) => State::ChunkData(size),
                _ => State::Lost,
            },
            State::ChunkEnd if line == b"\r\n" => State::ChunkSize,
            State::Trailers if line == b"\r\n" => State::Head,
            State::Trailers if line.ends_with(b"\r\n") => State::Trailers,
            _ => State::Lost,
        }
    }

    /// Reads one head from the start of `data`, and sets what follows it.
    fn head(&mut self, data: &[u8]) -> Step {
        const ON_STACK: usize = 100;
        let mut stack = [httparse::EMPTY_HEADER; ON_STACK];
        let mut heap = Vec::new();
        let headers = if self.max_headers <= ON_STACK {
            &mut stack[..self.max_headers]
        } else {
            heap.resize(self.max_headers, httparse::EMPTY_HEADER);
            &mut heap[..]
        };
        let mut req = httparse::Request::new(headers);
        let taken = match req.parse(data) {
            Ok(httparse::Status::Complete(n)) if n <= self.max_head => n,
            Ok(httparse::Status::Partial) if data.len() <= self.max_head => return Step::Short,
            _ => {
                self.state = State::Lost;
                return Step::Took(data.len());
            }
        };
        self.heads += 1;
        let framing = framing(&req);
        self.state = match framing {
            Framing::Both => return Step::Crossed(self.heads),
            Framing::Length(0) | Framing::Nothing => State::Head,
            Framing::Length(n) => State::Body(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Refused | Framing::Upgrade => State::Lost,
        };
        Step::Took(taken)
    }
}

enum Step {
    /// A whole head, this long.
    Took(usize),
    /// The head goes on past the data.
    Short,
    /// The head with this ordinal has both lengths.
    Crossed(u64),
}

/// How hyper frames a request's body, from its head.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Nothing,
    Length(u64),
    Chunked,
    /// Content-Length and Transfer-Encoding together.
    Both,
    /// hyper refuses the head (a bad length, a coding other than chunked
    /// last, Transfer-Encoding in HTTP/1.0).
    Refused,
    /// After the answer, the connection may be something else.
    Upgrade,
}

fn framing(req: &httparse::Request<'_, '_>) -> Framing {
    // hyper's own walk over the headers (role.rs), in order: which of
    // them count depends on what came before.
    let (mut coding, mut chunked, mut length_named) = (false, false, false);
    let mut length: Option<u64> = None;
    let mut upgrade = req.method == Some("CONNECT");
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if req.version != Some(1) {
                return Framing::Refused;
            }
            coding = true;
            length = None;
            // Only the last line's last coding counts.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            length_named = true;
            if coding {
                continue; // hyper does not even parse it
            }
            let Some(n) = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
            else {
                return Framing::Refused;
            };
            if length.is_some_and(|prev| prev != n) {
                return Framing::Refused;
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if coding && !chunked {
        Framing::Refused
    } else if coding && length_named {
        Framing::Both
    } else if upgrade {
        Framing::Upgrade
    } else if chunked {
        Framing::Chunked
    } else {
        length.map_or(Framing::Nothing, Framing::Length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tracker() -> FramingTracker {
        FramingTracker::new(64 * 1024, 100)
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const POST_CL: &[u8] = b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    const POST_CHUNKED: &[u8] = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
    const CL_TE: &[u8] = b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    const TE_CL: &[u8] = b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n";

    #[test]
    fn both_lengths_are_found_in_either_order() {
        assert_eq!(tracker().feed(CL_TE), Some(1));
        assert_eq!(tracker().feed(TE_CL), Some(1));
        // After the coding, hyper does not parse the length at all.
        let bogus = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n";
        assert_eq!(tracker().feed(bogus), Some(1));
        let mut t = tracker();
        assert_eq!(t.feed(CL_TE), Some(1));
        assert!(!t.following(), "hyper reads nothing after it");
    }

    #[test]
    fn the_ordinal_counts_heads_across_bodies_of_every_kind() {
        let stream = [GET, POST_CL, POST_CHUNKED, GET, TE_CL].concat();
        assert_eq!(tracker().feed(&stream), Some(5));
    }

    #[test]
    fn a_head_inside_a_body_is_not_a_head() {
        // The bodies carry what would be an offending head.
        let body = CL_TE;
        let mut post =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        post.extend_from_slice(body);
        let mut chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        chunked.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        chunked.extend_from_slice(body);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        let mut t = tracker();
        assert_eq!(t.feed(&[&post[..], &chunked[..], GET].concat()), None);
        assert!(t.following());
        assert_eq!(t.feed(CL_TE), Some(4));
    }

    #[test]
    fn it_stops_following_where_hyper_stops_reading() {
        for refused in [
            &b"GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"CONNECT a:1 HTTP/1.1\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXY",
        ] {
            let mut t = tracker();
            assert_eq!(
                t.feed(&[refused, CL_TE].concat()),
                None,
                "{:?}",
                String::from_utf8_lossy(refused)
            );
            assert!(!t.following());
        }
    }

    #[test]
    fn a_head_longer_than_hyper_reads_stops_it() {
        let mut t = FramingTracker::new(100, 100);
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(200));
        assert_eq!(t.feed(long.as_bytes()), None);
        assert!(!t.following());
        let mut t = FramingTracker::new(1 << 16, 2);
        assert_eq!(
            t.feed(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"),
            None
        );
        assert!(!t.following(), "more headers than hyper takes");
    }

    #[test]
    fn leading_empty_lines_are_skipped_as_hyper_skips_them() {
        assert_eq!(tracker().feed(&[b"\r\n", CL_TE].concat()), Some(1));
    }

    fn stream() -> impl Strategy<Value = (Vec<u8>, Option<u64>)> {
        let message = prop_oneof![
            Just(GET),
            Just(POST_CL),
            Just(POST_CHUNKED),
            Just(CL_TE),
            Just(TE_CL)
        ];
        proptest::collection::vec(message, 1..8).prop_map(|messages| {
            let found = messages
                .iter()
                .position(|m| *m == CL_TE || *m == TE_CL)
                .map(|i| i as u64 + 1);
            (messages.concat(), found)
        })
    }

    proptest! {
        #[test]
        fn any_split_of_a_stream_finds_the_same_head((wire, found) in stream(), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6)) {
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            at.push(0);
            at.push(wire.len());
            at.sort_unstable();
            let mut t = tracker();
            let mut seen = None;
            for w in at.windows(2) {
                if let Some(n) = t.feed(&wire[w[0]..w[1]]) {
                    prop_assert!(seen.is_none());
                    seen = Some(n);
                }
            }
            prop_assert_eq!(seen, found);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600), cut in any::<prop::sample::Index>()) {
            let cut = cut.index(data.len() + 1);
            let whole = tracker().feed(&data);
            let mut t = tracker();
            let split = t.feed(&data[..cut]).or(t.feed(&data[cut..]));
            prop_assert_eq!(whole, split);
        }
    }
}
