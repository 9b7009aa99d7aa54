//! The replication link's framing, without I/O: a frame is a 9-byte header (kind, body
//! length, CRC32C of the body, both little-endian) and its body. [`parse`] takes complete
//! frames off the front of a receive buffer; [`append_parts`] lays an `AppendRequest` out
//! as the buffers one vectored write sends, the commands' bytes shared, not copied.

use bytes::Buf;
use bytes::BufMut;
use bytes::Bytes;
use bytes::BytesMut;
use raftmq_proto::raftmq::raft::v1 as pb;
use serde::Deserialize;
use serde::Serialize;

/// The first bytes a leader sends on a replication link. Its first byte tells the Raft
/// port's listener a link from an HTTP/2 connection, whose preface starts with `P`.
pub const MAGIC: [u8; 8] = *b"\xA7RMQLNK1";

/// Bytes of a frame header: kind (1), body length (4), body CRC32C (4).
pub const HEADER_LEN: usize = 9;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Leader → follower, once, right after [`MAGIC`]: postcard of [`Hello`].
    Hello = 1,
    /// Follower → leader: the link is set up (empty body).
    Accept = 2,
    /// Leader → follower: a protobuf `AppendRequest` (one piece of an AppendEntries).
    Append = 3,
    /// Follower → leader: postcard of openraft's `StreamAppendResult`, one per append.
    Answer = 4,
    /// Follower → leader: postcard of [`Refusal`]; the follower sends nothing after it.
    Refuse = 5,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Hello,
            2 => Self::Accept,
            3 => Self::Append,
            4 => Self::Answer,
            5 => Self::Refuse,
            _ => return None,
        })
    }
}

/// Who the leader wants to reach, and the payload format it speaks: what the gRPC calls
/// carry as metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub format: String,
    pub group: String,
    pub target: u64,
}

/// Why the follower ends a link: a gRPC status code (as `tonic::Code` numbers it) and a
/// message, so that the leader maps it exactly as it maps a failed gRPC call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: i32,
    pub message: String,
}

/// A frame that breaks the rules: the link is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame body of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame body checksum mismatch (sent {sent:#010x}, computed {computed:#010x})")]
    Checksum { sent: u32, computed: u32 },
}

/// The header of a frame whose body is `parts`, in order.
pub fn header<'a>(kind: Kind, parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; HEADER_LEN] {
    let (mut len, mut crc) = (0usize, 0u32);
    for p in parts {
        len += p.len();
        crc = crc32c::crc32c_append(crc, p);
    }
    let mut h = [0u8; HEADER_LEN];
    h[0] = kind as u8;
    h[1..5].copy_from_slice(&(len as u32).to_le_bytes());
    h[5..9].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Appends a whole frame with a contiguous `body` to `out`.
pub fn put_frame(out: &mut BytesMut, kind: Kind, body: &[u8]) {
    out.reserve(HEADER_LEN + body.len());
    out.put_slice(&header(kind, [body]));
    out.put_slice(body);
}

/// Appends a `Refuse` frame with a gRPC status `code` and `message` to `out`.
pub fn put_refusal(out: &mut BytesMut, code: i32, message: &str) {
    let refusal = Refusal {
        code,
        message: message.to_owned(),
    };
    // A struct of an integer and a string always encodes.
    if let Ok(body) = postcard::to_stdvec(&refusal) {
        put_frame(out, Kind::Refuse, &body);
    }
}

/// The kind and body length of the frame at the front of `buf`, once its header is there:
/// `Ok(None)` while it is not, an error when the header breaks the rules.
pub fn peek(buf: &[u8], max_body: usize) -> Result<Option<(Kind, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let kind = Kind::from_byte(buf[0]).ok_or(FrameError::UnknownKind(buf[0]))?;
    let len = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > max_body {
        return Err(FrameError::TooLarge { len, max: max_body });
    }
    Ok(Some((kind, len)))
}

/// Takes the next complete frame off the front of `buf`: `Ok(None)` while it is
/// incomplete, an error when it breaks the rules. The body is a slice of `buf`'s memory.
pub fn parse(buf: &mut BytesMut, max_body: usize) -> Result<Option<(Kind, Bytes)>, FrameError> {
    let Some((kind, len)) = peek(buf, max_body)? else {
        return Ok(None);
    };
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    let sent = u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]);
    buf.advance(HEADER_LEN);
    let body = buf.split_to(len).freeze();
    let computed = crc32c::crc32c(&body);
    if computed != sent {
        return Err(FrameError::Checksum { sent, computed });
    }
    Ok(Some((kind, body)))
}

/// Protobuf's header of a length-delimited field: its key and the length varint.
fn put_field_header(out: &mut BytesMut, field: u32, len: usize) {
    put_varint(out, u64::from(field << 3 | 2));
    put_varint(out, len as u64);
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8(v as u8 | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// An `Append` frame as the buffers to send in order: the frame header, then the protobuf
/// encoding of `msg` (field headers interleaved with `payload` and each command, which
/// are shared, not copied). The same bytes as `prost::Message::encode` would produce.
pub fn append_parts(msg: &pb::AppendRequest) -> Vec<Bytes> {
    let mut heads = BytesMut::with_capacity(12 * (msg.commands.len() + 1));
    let mut body: Vec<Bytes> = Vec::with_capacity(2 * msg.commands.len() + 2);
    if !msg.payload.is_empty() {
        put_field_header(&mut heads, 1, msg.payload.len());
        body.push(heads.split().freeze());
        body.push(msg.payload.clone());
    }
    for c in &msg.commands {
        put_field_header(&mut heads, 2, c.len());
        body.push(heads.split().freeze());
        if !c.is_empty() {
            body.push(c.clone());
        }
    }
    let head = header(Kind::Append, body.iter().map(|b| &b[..]));
    let mut parts = Vec::with_capacity(body.len() + 1);
    parts.push(Bytes::copy_from_slice(&head));
    parts.extend(body);
    parts
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
