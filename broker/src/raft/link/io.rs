//! Reading and writing frames on a socket: [`FrameReader`] gathers frames from its read
//! half, [`write_parts`] sends buffers with vectored writes, and [`tune`] sets what both
//! ends want of a link's TCP socket.

use std::io;
use std::io::IoSlice;
use std::time::Duration;

use bytes::Buf;
use bytes::Bytes;
use bytes::BytesMut;
use tokio::io::AsyncRead;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWrite;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::frame;
use super::frame::FrameError;
use super::frame::Kind;

/// Room kept free in the shared receive buffer before a read.
const READ_CHUNK: usize = 16 * 1024;
/// Frames with bodies at least this large get memory of their own (see [`FrameReader`]).
pub const OWN_MIN: usize = 4 * 1024;
/// Buffers handed to one `writev` (the kernel takes at most 1024).
const MAX_IOV: usize = 256;

/// Why a link broke.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("link I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    #[error("the peer closed the link in the middle of a frame")]
    Truncated,
    #[error("unexpected {0:?} frame")]
    Unexpected(Kind),
    #[error("malformed {what} frame: {detail}")]
    Malformed { what: &'static str, detail: String },
}

/// Frames read off a stream, one at a time.
///
/// Headers and small frames are read into a receive buffer they share. A frame whose body
/// is at least [`OWN_MIN`] bytes is read into memory of its own, exactly its size (what
/// already came into the shared buffer is moved over, the rest is read straight into it),
/// so a slice of it pins nothing but its own frame. `next` is cancel-safe.
#[derive(Debug)]
pub struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
    /// A large frame being read: header and body so far, and its whole size.
    own: Option<(BytesMut, usize)>,
    max_body: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads frames whose bodies are at most `max_body` bytes.
    pub fn new(rd: R, max_body: usize) -> Self {
        Self {
            rd,
            buf: BytesMut::with_capacity(READ_CHUNK),
            own: None,
            max_body,
        }
    }

    /// Reads bodies of at most `max_body` bytes from now on (a small limit for the hello,
    /// the configured one once the peer is known).
    pub fn set_max_body(&mut self, max_body: usize) {
        self.max_body = max_body;
    }

    /// The next frame, or `None` when the peer closed the link between frames.
    pub async fn next(&mut self) -> Result<Option<(Kind, Bytes)>, LinkError> {
        loop {
            if let Some((own, size)) = &mut self.own
                && own.len() < *size
            {
                let rest = (*size - own.len()) as u64;
                if (&mut self.rd).take(rest).read_buf(own).await? == 0 {
                    return Err(LinkError::Truncated);
                }
                continue;
            }
            if let Some((mut own, _)) = self.own.take() {
                // Exactly one whole frame: it parses to a frame or an error.
                let f = frame::parse(&mut own, self.max_body)?;
                debug_assert!(f.is_some(), "a whole frame parses");
                return Ok(f);
            }
            if let Some((_, len)) = frame::peek(&self.buf, self.max_body)?
                && len >= OWN_MIN
            {
                let size = frame::HEADER_LEN + len;
                let have = self.buf.len().min(size);
                let mut own = BytesMut::with_capacity(size);
                own.extend_from_slice(&self.buf[..have]);
                self.buf.advance(have);
                self.own = Some((own, size));
                continue;
            }
            if let Some(f) = frame::parse(&mut self.buf, self.max_body)? {
                return Ok(Some(f));
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(LinkError::Truncated)
                };
            }
        }
    }

    /// Reads exactly `out.len()` raw bytes (the link's magic) before any frame.
    pub async fn read_raw(&mut self, out: &mut [u8]) -> Result<(), LinkError> {
        debug_assert!(self.buf.is_empty(), "raw bytes come before frames");
        self.rd.read_exact(out).await?;
        Ok(())
    }
}

/// Writes every byte of `parts`, in order, with as few system calls as the socket allows.
pub async fn write_parts<W: AsyncWrite + Unpin>(w: &mut W, mut parts: Vec<Bytes>) -> io::Result<()> {
    let mut i = 0;
    loop {
        while i < parts.len() && parts[i].is_empty() {
            i += 1;
        }
        if i == parts.len() {
            return Ok(());
        }
        let slices: Vec<IoSlice<'_>> = parts[i..].iter().take(MAX_IOV).map(|b| IoSlice::new(b)).collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let len = parts[i].len();
            if n >= len {
                n -= len;
                i += 1;
            } else {
                parts[i].advance(n);
                n = 0;
            }
        }
    }
}

/// No Nagle delay, TCP keep-alive probes after `idle` without traffic, and a limit of ten
/// times `idle` on sent data going unacknowledged, so that a peer that vanished without
/// closing (a partition, a powered-off host) breaks the link: after `idle` plus three
/// probes `idle` apart while the link is quiet, after `10 × idle` while data waits.
pub fn tune(stream: &TcpStream, idle: Duration) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let idle = idle.max(Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(idle)
        .with_retries(3);
    let sock = socket2::SockRef::from(stream);
    sock.set_tcp_keepalive(&keepalive)?;
    sock.set_tcp_user_timeout(Some(idle * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `cap` bytes per call, as a full socket buffer does.
    struct Trickle {
        out: Vec<u8>,
        cap: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = buf.len().min(self.cap);
            self.out.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_resume_where_they_stopped() {
        let parts: Vec<Bytes> = (0u8..40)
            .map(|i| Bytes::from(vec![i; usize::from(i) * 7]))
            .collect();
        let want: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        for cap in [1, 5, 13, 4096] {
            let mut w = Trickle { out: Vec::new(), cap };
            write_parts(&mut w, parts.clone()).await.expect("written");
            assert_eq!(w.out, want, "cap {cap}");
        }
    }

    /// A reader that hands out its bytes `cap` at a time, as a socket does.
    struct Chunks {
        data: Bytes,
        cap: usize,
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let n = self.data.len().min(self.cap).min(buf.remaining());
            let chunk = self.data.split_to(n);
            buf.put_slice(&chunk);
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn frames_of(sizes: &[usize]) -> (Bytes, Vec<Bytes>) {
        let mut wire = BytesMut::new();
        let bodies: Vec<Bytes> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from((0..n).map(|j| (i * 31 + j) as u8).collect::<Vec<u8>>()))
            .collect();
        for b in &bodies {
            frame::put_frame(&mut wire, Kind::Append, b);
        }
        (wire.freeze(), bodies)
    }

    #[tokio::test]
    async fn large_frames_get_memory_of_their_own_however_the_bytes_arrive() {
        let sizes = [10, OWN_MIN - 1, OWN_MIN, 3, 70_000, 200, 5_000, 40_000, 0, 9_000];
        let (wire, bodies) = frames_of(&sizes);
        for cap in [1, 7, 1000, 4096, 16 * 1024, 100_000] {
            let mut r = FrameReader::new(
                Chunks {
                    data: wire.clone(),
                    cap,
                },
                1 << 20,
            );
            let mut got = Vec::new();
            while let Some((kind, body)) = r.next().await.expect("valid") {
                assert_eq!(kind, Kind::Append);
                got.push(body);
            }
            assert_eq!(got, bodies, "cap {cap}");
            // A large frame's body is the only user of its memory, and that memory is
            // exactly the frame: nothing after the body to grow into.
            for body in got.into_iter().filter(|b| b.len() >= OWN_MIN) {
                assert!(body.is_unique(), "cap {cap}, body of {}", body.len());
                let exact = body.try_into_mut().is_ok_and(|m| m.capacity() == m.len());
                assert!(exact, "cap {cap}: a large frame's memory is its own, exactly");
            }
        }
    }

    #[tokio::test]
    async fn a_read_abandoned_halfway_loses_nothing() {
        use futures_util::FutureExt;
        let (wire, bodies) = frames_of(&[50_000, 20]);
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let mut r = FrameReader::new(rx, 1 << 20);
        // Cut inside the header, right after it, and twice inside the body.
        for w in [0, 5, 9, 10_000, 30_000].windows(2) {
            tx.write_all(&wire[w[0]..w[1]]).await.expect("write");
            assert!(r.next().now_or_never().is_none(), "incomplete at {}", w[1]);
        }
        tx.write_all(&wire[30_000..]).await.expect("write");
        drop(tx);
        assert_eq!(r.next().await.expect("ok").map(|f| f.1), Some(bodies[0].clone()));
        assert_eq!(r.next().await.expect("ok").map(|f| f.1), Some(bodies[1].clone()));
        assert!(r.next().await.expect("clean end").is_none());

        // Cut inside a header, right after a large frame's header, inside its body.
        let (wire, _) = frames_of(&[50_000]);
        for cut in [5, frame::HEADER_LEN, 40_000] {
            let data = wire.slice(..cut);
            let mut r = FrameReader::new(Chunks { data, cap: 4096 }, 1 << 20);
            assert!(
                matches!(r.next().await, Err(LinkError::Truncated)),
                "cut at {cut}"
            );
        }
        // A header announcing more than the limit is refused before anything is read for it.
        let data = wire.slice(..frame::HEADER_LEN);
        let mut r = FrameReader::new(Chunks { data, cap: 4096 }, 1024);
        let too_large = FrameError::TooLarge {
            len: 50_000,
            max: 1024,
        };
        assert!(matches!(r.next().await, Err(LinkError::Frame(e)) if e == too_large));
    }

    #[tokio::test]
    async fn a_reader_tells_a_clean_end_from_a_cut_frame() {
        let mut wire = BytesMut::new();
        frame::put_frame(&mut wire, Kind::Answer, b"one");
        let whole = wire.clone().freeze();
        let mut r = FrameReader::new(&whole[..], 1024);
        assert_eq!(
            r.next().await.expect("ok"),
            Some((Kind::Answer, Bytes::from_static(b"one")))
        );
        assert!(r.next().await.expect("clean end").is_none());

        let cut = whole.slice(..whole.len() - 1);
        let mut r = FrameReader::new(&cut[..], 1024);
        assert!(matches!(r.next().await, Err(LinkError::Truncated)));
    }
}
