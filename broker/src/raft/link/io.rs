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

/// Room kept free in the receive buffer before a read: most reads fill it in one go.
const READ_CHUNK: usize = 64 * 1024;
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
#[derive(Debug)]
pub struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
    max_body: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads frames whose bodies are at most `max_body` bytes.
    pub fn new(rd: R, max_body: usize) -> Self {
        Self {
            rd,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_body,
        }
    }

    /// The next frame, or `None` when the peer closed the link between frames.
    pub async fn next(&mut self) -> Result<Option<(Kind, Bytes)>, LinkError> {
        loop {
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
