//! The leader's end of a replication link: dial, say who it wants, wait for the accept.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::tcp::OwnedWriteHalf;

use super::frame;
use super::frame::Hello;
use super::frame::Kind;
use super::frame::Refusal;
use super::io::FrameReader;
use super::io::LinkError;
use super::io::tune;

/// Why a link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Connecting, or the exchange after it, failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The follower refused the link (wrong node, another build, Raft stopped).
    #[error("refused: {}", .0.message)]
    Refused(Refusal),
}

/// An open link: answers come in on the reader, appends go out on the writer.
pub type Link = (FrameReader<OwnedReadHalf>, OwnedWriteHalf);

/// How a link is dialled.
#[derive(Debug, Clone, Copy)]
pub struct DialOptions {
    /// Largest frame body the follower may send.
    pub max_body: usize,
    /// TCP keep-alive idle time (see [`tune`]).
    pub keepalive: Duration,
    /// Time allowed for the TCP connection itself.
    pub connect_timeout: Duration,
}

/// Connects to `addr` and sets up a link to the node `hello` names.
pub async fn dial(addr: &str, hello: &Hello, opt: DialOptions) -> Result<Link, DialError> {
    let stream = match tokio::time::timeout(opt.connect_timeout, TcpStream::connect(addr)).await {
        Ok(s) => s.map_err(LinkError::from)?,
        Err(_) => return Err(LinkError::Io(std::io::ErrorKind::TimedOut.into()).into()),
    };
    let (keepalive, max_body) = (opt.keepalive, opt.max_body);
    tune(&stream, keepalive).map_err(LinkError::from)?;
    let (rd, mut wr) = stream.into_split();
    let body = postcard::to_stdvec(hello).map_err(|e| LinkError::Malformed {
        what: "Hello",
        detail: e.to_string(),
    })?;
    let mut out = BytesMut::with_capacity(frame::MAGIC.len() + frame::HEADER_LEN + body.len());
    out.extend_from_slice(&frame::MAGIC);
    frame::put_frame(&mut out, Kind::Hello, &body);
    wr.write_all(&out).await.map_err(LinkError::from)?;

    let mut reader = FrameReader::new(rd, max_body);
    match reader.next().await? {
        Some((Kind::Accept, _)) => Ok((reader, wr)),
        Some((Kind::Refuse, body)) => Err(DialError::Refused(decode_refusal(&body)?)),
        Some((other, _)) => Err(LinkError::Unexpected(other).into()),
        None => Err(LinkError::Truncated.into()),
    }
}

/// The body of a `Refuse` frame.
pub fn decode_refusal(body: &[u8]) -> Result<Refusal, LinkError> {
    postcard::from_bytes(body).map_err(|e| LinkError::Malformed {
        what: "Refuse",
        detail: e.to_string(),
    })
}
