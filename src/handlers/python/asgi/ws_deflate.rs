//! permessage-deflate under tungstenite, which has no extension hook and
//! refuses a frame with RSV1 set: the socket is wrapped, and tungstenite
//! sees only uncompressed frames.
//! - In, a message whose first frame has RSV1 set is gathered across its
//!   frames, inflated (`proto::permessage_deflate`), and handed up as one
//!   final frame with RSV1 clear, masked with the client's key as
//!   tungstenite, the server, requires. Uncompressed messages and control
//!   frames pass as they came.
//! - Out, each text or binary message tungstenite writes (it never splits
//!   one into frames) of `COMPRESS_MIN` bytes or more goes out compressed,
//!   with RSV1 set; the rest pass as they are.
//!
//! Frame headers are read and written by tungstenite's own `FrameHeader`.
//! Anything unexpected (RSV1 where it has no place, a frame over the size
//! limit) is passed up as it came, for tungstenite to refuse as it would
//! without the extension; a compressed message that is broken (it does not
//! inflate, or another message cuts in) is passed up as the head of a
//! frame tungstenite refuses (1002), and one that inflates past the limit
//! as the head of one too long (1009).

use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::proto::permessage_deflate::{COMPRESS_MIN, InflateError, compress, inflate};

/// Compressed bytes waiting for the socket past which tungstenite's
/// writes wait.
const OUT_HIGH: usize = 256 * 1024;

/// A compressed message being gathered.
struct Gathering {
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload: Vec<u8>,
}

pub(super) struct DeflateIo<T> {
    inner: T,
    /// The largest message (inflated, or compressed) taken.
    max: usize,
    /// Bytes read, not yet whole frames.
    raw_in: BytesMut,
    /// Frames for tungstenite to read.
    ready_in: BytesMut,
    gathering: Option<Gathering>,
    /// From here on everything passes as it came (tungstenite refuses it).
    passing: bool,
    /// Bytes tungstenite wrote, not yet whole frames.
    raw_out: BytesMut,
    /// Frames for the socket.
    ready_out: BytesMut,
}

impl<T> DeflateIo<T> {
    pub(super) fn new(inner: T, max: usize) -> DeflateIo<T> {
        DeflateIo {
            inner,
            max,
            raw_in: BytesMut::new(),
            ready_in: BytesMut::new(),
            gathering: None,
            passing: false,
            raw_out: BytesMut::new(),
            ready_out: BytesMut::new(),
        }
    }

    /// Turns the whole frames in `raw_in` into frames for tungstenite.
    fn take_frames_in(&mut self) {
        loop {
            if self.passing {
                let rest = self.raw_in.split();
                self.ready_in.unsplit(rest);
                return;
            }
            let mut cursor = Cursor::new(&self.raw_in[..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(_) => {
                    self.passing = true;
                    continue;
                }
            };
            let head_len = cursor.position() as usize;
            if len > self.max as u64 {
                self.passing = true;
                continue;
            }
            let whole = head_len + len as usize;
            if self.raw_in.len() < whole {
                self.raw_in.reserve(whole - self.raw_in.len());
                return;
            }
            let frame = self.raw_in.split_to(whole);
            let starts = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
            let continues = header.opcode == OpCode::Data(Data::Continue);
            // What may be taken into a compressed message: RSV2 and RSV3
            // mean nothing here, and a client's frames are masked.
            let fit = !header.rsv2 && !header.rsv3 && header.mask.is_some();
            match (&mut self.gathering, header.rsv1) {
                _ if !fit => {
                    self.refuse_gathered();
                    self.ready_in.unsplit(frame);
                    self.passing = true;
                    continue;
                }
                (None, true) if starts => {
                    let mut payload = frame[head_len..].to_vec();
                    unmask(&mut payload, header.mask);
                    self.gathering = Some(Gathering {
                        opcode: header.opcode,
                        mask: header.mask,
                        payload,
                    });
                }
                (Some(g), false) if continues => {
                    if g.payload.len() + len as usize > self.max {
                        let (opcode, mask) = (g.opcode, g.mask);
                        self.too_big(opcode, mask);
                        continue;
                    }
                    let start = g.payload.len();
                    g.payload.extend_from_slice(&frame[head_len..]);
                    unmask(&mut g.payload[start..], header.mask);
                }
                (Some(_), _) if !matches!(header.opcode, OpCode::Control(_)) => {
                    // A new message before the compressed one ended.
                    self.refuse_gathered();
                    self.ready_in.unsplit(frame);
                    self.passing = true;
                    continue;
                }
                (_, false) => {
                    // Uncompressed: a message, its continuations, control
                    // frames; tungstenite checks their order.
                    self.ready_in.unsplit(frame);
                    continue;
                }
                _ => {
                    // RSV1 on a control or continuation frame.
                    self.ready_in.unsplit(frame);
                    self.passing = true;
                    continue;
                }
            }
            if header.is_final
                && let Some(g) = self.gathering.take()
            {
                self.inflated(g);
            }
        }
    }

    /// Tells tungstenite of a compressed message being gathered that it
    /// must refuse (a protocol error, 1002): the head of an empty frame of
    /// it with RSV1 set, which tungstenite sees as its first.
    fn refuse_gathered(&mut self) {
        if let Some(g) = self.gathering.take() {
            self.refuse(g.opcode, g.mask);
        }
    }

    fn refuse(&mut self, opcode: OpCode, mask: Option<[u8; 4]>) {
        put_head(&mut self.ready_in, opcode, mask, true, 0);
        self.passing = true;
    }

    /// A gathered message, inflated, as one frame for tungstenite.
    fn inflated(&mut self, g: Gathering) {
        let mut payload = Vec::with_capacity((g.payload.len() * 3).min(self.max + 16 * 1024));
        match inflate(&g.payload, self.max, &mut payload) {
            Ok(()) => {
                unmask(&mut payload, g.mask);
                put_head(
                    &mut self.ready_in,
                    g.opcode,
                    g.mask,
                    false,
                    payload.len() as u64,
                );
                self.ready_in.extend_from_slice(&payload);
            }
            Err(InflateError::TooBig) => self.too_big(g.opcode, g.mask),
            Err(InflateError::Corrupt) => self.refuse(g.opcode, g.mask),
        }
    }

    /// Says to tungstenite that a message is over the limit: the head of a
    /// frame longer than it allows, which it refuses (1009) at once.
    fn too_big(&mut self, opcode: OpCode, mask: Option<[u8; 4]>) {
        put_head(&mut self.ready_in, opcode, mask, false, self.max as u64 + 1);
        self.gathering = None;
        self.passing = true;
    }

    /// Turns the whole frames tungstenite wrote into frames for the socket.
    fn take_frames_out(&mut self) {
        loop {
            let mut cursor = Cursor::new(&self.raw_out[..]);
            let Ok(Some((header, len))) = FrameHeader::parse(&mut cursor) else {
                return;
            };
            let head_len = cursor.position() as usize;
            let whole = head_len + len as usize;
            if self.raw_out.len() < whole {
                return;
            }
            let frame = self.raw_out.split_to(whole);
            let message = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
            if !message
                || !header.is_final
                || header.mask.is_some()
                || (len as usize) < COMPRESS_MIN
            {
                self.ready_out.unsplit(frame);
                continue;
            }
            let mut packed = Vec::with_capacity(len as usize / 2 + 64);
            compress(&frame[head_len..], &mut packed);
            put_head(
                &mut self.ready_out,
                header.opcode,
                None,
                true,
                packed.len() as u64,
            );
            self.ready_out.extend_from_slice(&packed);
        }
    }
}

/// Appends the head of a final frame (tungstenite formats it), RSV1 set
/// or not, for a payload of `len` bytes.
fn put_head(out: &mut BytesMut, opcode: OpCode, mask: Option<[u8; 4]>, rsv1: bool, len: u64) {
    let header = FrameHeader {
        is_final: true,
        rsv1,
        rsv2: false,
        rsv3: false,
        opcode,
        mask,
    };
    let mut head = Vec::with_capacity(14);
    // Writing into a Vec cannot fail.
    let _ = header.format(len, &mut head);
    out.extend_from_slice(&head);
}

/// Lets an emptied buffer's memory go: an idle socket then holds none.
fn release(b: &mut BytesMut) {
    if b.is_empty() && b.capacity() > 0 {
        *b = BytesMut::new();
    }
}

/// XORs a payload with its masking key (RFC 6455 §5.3): masking and
/// unmasking are the same.
fn unmask(payload: &mut [u8], mask: Option<[u8; 4]>) {
    if let Some(key) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i & 3];
        }
    }
}

impl<T: AsyncWrite + Unpin> DeflateIo<T> {
    /// Writes what is ready for the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.ready_out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.ready_out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.ready_out.advance(n);
        }
        release(&mut self.ready_out);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeflateIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready_in.is_empty() {
                let n = buf.remaining().min(this.ready_in.len());
                buf.put_slice(&this.ready_in.split_to(n));
                release(&mut this.ready_in);
                release(&mut this.raw_in);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The end: what is left (part of a frame) goes up as it
                // is, for tungstenite to see the connection cut.
                let rest = this.raw_in.split();
                this.ready_in.unsplit(rest);
                if this.ready_in.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.raw_in.extend_from_slice(read.filled());
            this.take_frames_in();
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeflateIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.ready_out.len() >= OUT_HIGH {
            ready!(this.poll_drain(cx))?;
        }
        this.raw_out.extend_from_slice(buf);
        this.take_frames_out();
        release(&mut this.raw_out);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client's frame: masked, RSV1 as given.
    fn client_frame(opcode: OpCode, fin: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
        let key = [1, 2, 3, 4];
        let header = FrameHeader {
            is_final: fin,
            rsv1,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: Some(key),
        };
        let mut out = Vec::new();
        header.format(payload.len() as u64, &mut out).unwrap();
        let mut p = payload.to_vec();
        unmask(&mut p, Some(key));
        out.extend_from_slice(&p);
        out
    }

    /// What a client's bytes become for tungstenite.
    async fn up_through(wire: &[u8], max: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(wire).await.unwrap();
        drop(client);
        let mut io = DeflateIo::new(server, max);
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        got
    }

    fn parse_all(mut bytes: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let mut c = Cursor::new(bytes);
            let (h, len) = FrameHeader::parse(&mut c).unwrap().unwrap();
            let start = c.position() as usize;
            let mut p = bytes[start..start + len as usize].to_vec();
            unmask(&mut p, h.mask);
            bytes = &bytes[start + len as usize..];
            frames.push((h, p));
        }
        frames
    }

    #[tokio::test]
    async fn a_compressed_message_in_two_frames_with_a_ping_between_comes_up_whole() {
        let text = "hello hello hello hello hello hello hello hello hello hello hello".repeat(3);
        let mut packed = Vec::new();
        compress(text.as_bytes(), &mut packed);
        let (a, b) = packed.split_at(packed.len() / 2);
        let mut wire = client_frame(OpCode::Data(Data::Text), false, true, a);
        wire.extend(client_frame(
            OpCode::Control(tokio_tungstenite::tungstenite::protocol::frame::coding::Control::Ping),
            true,
            false,
            b"p",
        ));
        wire.extend(client_frame(OpCode::Data(Data::Continue), true, false, b));
        wire.extend(client_frame(
            OpCode::Data(Data::Binary),
            true,
            false,
            b"plain",
        ));
        let frames = parse_all(&up_through(&wire, 1 << 20).await);
        assert_eq!(frames.len(), 3);
        assert!(matches!(frames[0].0.opcode, OpCode::Control(_)) && frames[0].1 == b"p");
        assert_eq!(frames[1].0.opcode, OpCode::Data(Data::Text));
        assert!(frames[1].0.is_final && !frames[1].0.rsv1 && frames[1].0.mask.is_some());
        assert_eq!(frames[1].1, text.as_bytes());
        assert_eq!(frames[2].1, b"plain");
    }

    #[tokio::test]
    async fn a_message_cutting_into_a_compressed_one_makes_a_head_tungstenite_refuses() {
        let mut packed = Vec::new();
        compress(&[b'a'; 500], &mut packed);
        let mut wire = client_frame(OpCode::Data(Data::Text), false, true, &packed);
        wire.extend(client_frame(
            OpCode::Data(Data::Text),
            true,
            false,
            b"cut in",
        ));
        let frames = parse_all(&up_through(&wire, 1 << 20).await);
        assert_eq!(frames.len(), 2);
        assert!(frames[0].0.rsv1 && frames[0].1.is_empty());
        assert_eq!(frames[1].1, b"cut in");
    }

    #[tokio::test]
    async fn an_inflated_message_over_the_limit_becomes_a_frame_head_over_it() {
        let mut packed = Vec::new();
        compress(&[b'a'; 5000], &mut packed);
        let wire = client_frame(OpCode::Data(Data::Binary), true, true, &packed);
        let got = up_through(&wire, 1000).await;
        let (h, len) = FrameHeader::parse(&mut Cursor::new(&got)).unwrap().unwrap();
        assert_eq!(h.opcode, OpCode::Data(Data::Binary));
        assert_eq!(len, 1001);
    }

    #[tokio::test]
    async fn messages_out_are_compressed_and_small_ones_and_control_frames_are_not() {
        let (server_side, mut client) = tokio::io::duplex(1 << 16);
        let mut io = DeflateIo::new(server_side, 1 << 20);
        let big = vec![b'x'; 10_000];
        let mut wire = Vec::new();
        for (opcode, payload) in [
            (OpCode::Data(Data::Binary), &big[..]),
            (OpCode::Data(Data::Text), &b"tiny"[..]),
        ] {
            let header = FrameHeader {
                opcode,
                ..FrameHeader::default()
            };
            header.format(payload.len() as u64, &mut wire).unwrap();
            wire.extend_from_slice(payload);
        }
        // Written in odd pieces, as a writer may.
        for piece in wire.chunks(777) {
            io.write_all(piece).await.unwrap();
        }
        io.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let frames = parse_all(&got);
        assert_eq!(frames.len(), 2);
        assert!(frames[0].0.rsv1 && frames[0].1.len() < 200);
        let mut inflated = Vec::new();
        inflate(&frames[0].1, 1 << 20, &mut inflated).unwrap();
        assert_eq!(inflated, big);
        assert!(!frames[1].0.rsv1 && frames[1].1 == b"tiny");
    }
}
