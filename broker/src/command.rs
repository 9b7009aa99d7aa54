//! What one Raft entry of a broker group carries, and what applying it returns.
//!
//! An entry is a [`Command`]: a header plus, for sends, the message records. In the commit
//! log it is stored as slots ([`raft_log::SlottedPayload`]): slot 0 holds the encoded
//! header, slot `i + 1` message record `i`. The consume queue points at (log index, slot),
//! so a consumer's read fetches one record without decoding the rest of the batch, and
//! applying an entry needs only the header.

use bytes::BufMut;
use bytes::Bytes;
use bytes::BytesMut;
use raft_log::SlottedPayload;
use serde::Deserialize;
use serde::Deserializer;
use serde::Serialize;
use serde::Serializer;

/// Who may use a topic's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Permission {
    Read,
    Write,
    ReadWrite,
}

/// The kind of messages a topic accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageKind {
    Normal,
    Fifo,
    Delay,
    Transaction,
}

/// Configuration of a topic; changes only through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub name: String,
    /// Number of queues (RocketMQ's default is 8).
    pub queues: u32,
    pub permission: Permission,
    pub kind: MessageKind,
}

/// Index facts of one message, kept in the entry header so that applying needs no record parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    pub topic: String,
    pub queue_id: u32,
    /// Hash of the message's tag, for tag filtering without reading the record.
    pub tag_hash: u64,
    /// Empty in commands of this build (the message id is in the record). Builds that kept
    /// a per-message id index put the id here; the field stays so that their log entries
    /// still decode.
    pub msg_id: String,
}

/// The part of a command the state machine interprets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Header {
    /// Store messages; record `i` of the command belongs to `messages[i]`. The leader
    /// stamps the store time, so every replica indexes the same value.
    Send {
        store_time_ms: u64,
        messages: Vec<MessageMeta>,
    },
    CreateTopic(TopicConfig),
    UpdateTopic(TopicConfig),
    DeleteTopic {
        name: String,
    },
    /// A consumer group's committed offset on one queue. For a group that pops, this is a
    /// reset: its pop state on the queue restarts at `offset` ("consume from here") and
    /// its in-flight messages are forgotten (their receipts become stale).
    CommitOffset {
        group: String,
        topic: String,
        queue_id: u32,
        offset: u64,
    },
    /// Pop-style receive: hand out up to `max` messages of `topic` to `group`, trying the
    /// queues in `queue_ids` order, and make them invisible until `now_ms + invisible_ms`.
    /// The leader stamps `now_ms`, so every replica decides alike.
    Pop(PopRequest),
    /// Acknowledge popped messages: each leaves the group's in-flight set if its receipt
    /// is current.
    Ack {
        group: String,
        topic: String,
        receipts: Vec<Receipt>,
    },
    /// Move the time a popped message becomes visible again to `now_ms + invisible_ms`.
    ChangeInvisible {
        group: String,
        topic: String,
        receipt: Receipt,
        invisible_ms: u64,
        now_ms: u64,
    },
    /// Move a popped message to the group's dead-letter topic at the consumer's request
    /// (ForwardMessageToDeadLetterQueue: a push consumer gave up on it), if its receipt is
    /// current; the message leaves the in-flight set.
    DeadLetter {
        group: String,
        topic: String,
        receipt: Receipt,
    },
}

/// Which tags a consumer wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TagFilter {
    All,
    /// Messages whose tag hashes to one of these (see [`tag_hash`]).
    Hashes(Vec<u64>),
}

impl TagFilter {
    pub fn matches(&self, hash: u64) -> bool {
        match self {
            Self::All => true,
            Self::Hashes(h) => h.contains(&hash),
        }
    }
}

/// A pop (see [`Header::Pop`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopRequest {
    pub group: String,
    pub topic: String,
    /// Queues in the order to take messages from.
    pub queue_ids: Vec<u32>,
    pub max: u32,
    pub invisible_ms: u64,
    pub now_ms: u64,
    pub filter: TagFilter,
    /// FIFO consumption: a queue with a message in flight hands out nothing new until that
    /// message is acknowledged (or redelivered).
    pub fifo: bool,
    /// Deliveries after which an unacknowledged message goes to the group's dead-letter
    /// topic instead of being delivered again.
    pub max_attempts: u32,
}

/// Identifies one delivery of a popped message: the incarnation of its topic, the message
/// and its delivery attempt. A receipt of an earlier attempt, or of an earlier incarnation
/// of the topic (deleted and created again since), no longer acknowledges anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Receipt {
    pub queue_id: u32,
    pub offset: u64,
    pub attempt: u32,
    /// The creation index of the topic incarnation the message was popped from.
    pub topic_created_at: u64,
}

/// The hash of a message tag stored in consume-queue entries (64-bit FNV-1a; a message
/// without a tag hashes the empty string). Stable across versions: it is persisted.
pub fn tag_hash(tag: &str) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    tag.bytes()
        .fold(OFFSET_BASIS, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// Why a command could not be built or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("a send of {metas} messages carries {records} records")]
    RecordCountMismatch { metas: usize, records: usize },
    #[error("records only belong to sends")]
    UnexpectedRecords,
    #[error("cannot encode command header: {0}")]
    Encode(String),
    #[error("cannot encode message record: {0}")]
    Record(String),
    #[error("cannot decode command header: {0}")]
    Decode(String),
}

/// A header with its encoding (slot 0) and the message records (slots 1..). Cheap to
/// clone (a proposal is cloned for each try): the parts are shared.
///
/// A command keeps its whole slot encoding (laid out by [`Self::new`], or as read from
/// the log or received from the leader) and decodes its header only when asked
/// ([`Self::header`]): the leader reads every entry back to replicate it and a follower
/// receives it whole, and neither needs more than the bytes. Only applying looks inside.
#[derive(Clone)]
pub struct Command {
    header: std::sync::Arc<std::sync::OnceLock<Header>>,
    encoded_header: Bytes,
    records: std::sync::Arc<Vec<Bytes>>,
    /// The slot encoding of the whole command; `None` only for one rebuilt from separate
    /// slots (`SlottedPayload::from_slots`).
    encoded: Option<Bytes>,
}

/// Names the parts instead of printing every byte (the encoding repeats the records).
impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Command")
            .field("header", &self.header())
            .field("records", &self.records.len())
            .field(
                "record_bytes",
                &self.records.iter().map(Bytes::len).sum::<usize>(),
            )
            .field("encoded", &self.encoded.as_ref().map(Bytes::len))
            .finish()
    }
}

impl PartialEq for Command {
    fn eq(&self, other: &Self) -> bool {
        self.encoded_header == other.encoded_header && self.records == other.records
    }
}

impl Eq for Command {}

impl Command {
    /// Builds a command; a send needs exactly one record per message meta, others none.
    ///
    /// The command is laid out at once in its slot encoding, one buffer, and its parts
    /// are slices of it: the log writes that buffer, its read cache keeps it from the
    /// append on (`LogRecord::shared_payload`), and replication sends it as it is to every
    /// follower instead of encoding the slots again for each.
    pub fn new(header: Header, records: Vec<Bytes>) -> Result<Self, CommandError> {
        let bytes = records.iter().map(Bytes::len).sum();
        Self::with_records(header, records.len(), bytes, |i, out| {
            out.extend_from_slice(&records[i]);
            Ok(())
        })
    }

    /// Builds a command whose `count` records `write` appends to the command's buffer
    /// (record `i` on call `i`; `capacity` is about their total size). A record is then
    /// laid out once, in place, instead of encoded on its own and copied in.
    pub fn with_records(
        header: Header,
        count: usize,
        capacity: usize,
        mut write: impl FnMut(usize, &mut BytesMut) -> Result<(), CommandError>,
    ) -> Result<Self, CommandError> {
        check_records(&header, count)?;
        let too_many = || CommandError::Encode(format!("{count} records do not fit one command"));
        let slots = u32::try_from(count + 1).map_err(|_| too_many())?;
        let table = 4 + 4 * (count + 1);
        let mut buf = BytesMut::with_capacity(table + 64 + capacity);
        buf.put_u32_le(slots);
        buf.put_bytes(0, table - 4);
        // Where each slot lands, so the parts are sliced without parsing the table again.
        let mut ranges = Vec::with_capacity(count + 1);
        for slot in 0..=count {
            let start = buf.len();
            if slot == 0 {
                buf = crate::postcard_out::append(&header, buf)
                    .map_err(|e| CommandError::Encode(e.to_string()))?;
            } else {
                write(slot - 1, &mut buf)?;
            }
            let len = u32::try_from(buf.len() - start).map_err(|_| too_many())?;
            buf[4 + 4 * slot..8 + 4 * slot].copy_from_slice(&len.to_le_bytes());
            ranges.push(start..buf.len());
        }
        let encoded = buf.freeze();
        let encoded_header = encoded.slice(ranges[0].clone());
        let records: Vec<Bytes> = ranges[1..].iter().map(|r| encoded.slice(r.clone())).collect();
        Ok(Self {
            header: std::sync::Arc::new(header.into()),
            encoded_header,
            records: records.into(),
            encoded: Some(encoded),
        })
    }

    /// The command's slot encoding, as the log stores it and replication sends it: the
    /// buffer it was built or read as, shared; encoded only if it was rebuilt from slots.
    pub fn encoding(&self) -> Bytes {
        match &self.encoded {
            Some(e) => e.clone(),
            None => {
                let mut buf = Vec::with_capacity(raft_log::slots::encoded_len(self));
                raft_log::slots::encode(self, &mut buf);
                Bytes::from(buf)
            }
        }
    }

    /// A command without records (topic and offset changes).
    pub fn control(header: Header) -> Result<Self, CommandError> {
        Self::new(header, Vec::new())
    }

    /// The header, decoded on first use. Fails if its encoding is malformed or does not
    /// match the number of records (every replica fails alike: the bytes are the same).
    pub fn header(&self) -> Result<&Header, CommandError> {
        if let Some(h) = self.header.get() {
            return Ok(h);
        }
        let h: Header =
            postcard::from_bytes(&self.encoded_header).map_err(|e| CommandError::Decode(e.to_string()))?;
        check_records(&h, self.records.len())?;
        Ok(self.header.get_or_init(|| h))
    }

    pub fn records(&self) -> &[Bytes] {
        &self.records
    }

    /// The slot of record `i` in the entry.
    pub fn slot_of_record(i: usize) -> u32 {
        i as u32 + 1
    }
}

/// A send needs exactly one record per message meta; other commands none.
fn check_records(header: &Header, records: usize) -> Result<(), CommandError> {
    match header {
        Header::Send { messages, .. } if messages.len() != records => {
            Err(CommandError::RecordCountMismatch {
                metas: messages.len(),
                records,
            })
        }
        Header::Send { .. } => Ok(()),
        _ if records != 0 => Err(CommandError::UnexpectedRecords),
        _ => Ok(()),
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header = match self.header() {
            Ok(h) => h,
            Err(e) => return write!(f, "Malformed({e})"),
        };
        match header {
            Header::Send { messages, .. } => write!(f, "Send({} messages)", messages.len()),
            Header::CreateTopic(t) => write!(f, "CreateTopic({})", t.name),
            Header::UpdateTopic(t) => write!(f, "UpdateTopic({})", t.name),
            Header::DeleteTopic { name } => write!(f, "DeleteTopic({name})"),
            Header::CommitOffset {
                group,
                topic,
                queue_id,
                offset,
            } => {
                write!(f, "CommitOffset({group} {topic}:{queue_id}={offset})")
            }
            Header::Pop(p) => write!(f, "Pop({} {} max={})", p.group, p.topic, p.max),
            Header::Ack {
                group,
                topic,
                receipts,
            } => {
                write!(f, "Ack({group} {topic} {} receipts)", receipts.len())
            }
            Header::ChangeInvisible { group, topic, .. } => write!(f, "ChangeInvisible({group} {topic})"),
            Header::DeadLetter { group, topic, .. } => write!(f, "DeadLetter({group} {topic})"),
        }
    }
}

impl SlottedPayload for Command {
    fn slot_count(&self) -> usize {
        1 + self.records.len()
    }

    fn slot(&self, i: usize) -> &[u8] {
        if i == 0 {
            &self.encoded_header
        } else {
            &self.records[i - 1]
        }
    }

    fn from_slots(mut slots: Vec<Bytes>) -> Result<Self, String> {
        if slots.is_empty() {
            return Err("command without header slot".into());
        }
        let records = slots.split_off(1);
        let encoded_header = slots.swap_remove(0);
        Ok(Self {
            header: Default::default(),
            encoded_header,
            records: records.into(),
            encoded: None,
        })
    }

    fn encoded(&self) -> Option<&Bytes> {
        self.encoded.as_ref()
    }

    fn from_encoded(payload: Bytes) -> Result<Self, String> {
        let slots = raft_log::slots::decode(&payload).map_err(|e| e.to_string())?;
        let mut c = Self::from_slots(slots)?;
        c.encoded = Some(payload);
        Ok(c)
    }
}

/// On the wire (Raft replication) a command travels as its slot encoding, one byte
/// string: the receiver slices it instead of allocating per message.
impl Serialize for Command {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.encoding())
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let encoded: Bytes = Deserialize::deserialize(d)?;
        Self::from_encoded(encoded).map_err(serde::de::Error::custom)
    }
}

/// Where a stored message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePosition {
    pub queue_id: u32,
    /// Offset in the queue, assigned at apply time (deterministic on every replica).
    pub offset: u64,
}

/// A deterministic refusal at apply time (every replica refuses the same way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("topic {topic} has no queue {queue_id}")]
    NoSuchQueue { topic: String, queue_id: u32 },
    #[error("topic {0} is not writable")]
    NotWritable(String),
    #[error("topic {0} is not readable")]
    NotReadable(String),
    #[error("invalid topic config: {0}")]
    InvalidTopic(String),
    #[error("invalid group name: {0}")]
    InvalidGroup(String),
    #[error("malformed command: {0}")]
    Malformed(String),
}

/// A message handed out by a pop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Popped {
    pub receipt: Receipt,
    /// Where its record is: log index and slot.
    pub log_index: u64,
    pub slot: u32,
    pub store_time_ms: u64,
    /// When it becomes visible again unless acknowledged.
    pub visible_at_ms: u64,
}

/// What applying a command returns to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Per message of a send, in order.
    Sent(Vec<QueuePosition>),
    Done,
    Rejected(Rejection),
    Popped(Vec<Popped>),
    /// Per receipt of an ack (or the one of a change of invisibility or a dead-lettering):
    /// whether it was current (`false`: the message was delivered again since, or already acknowledged).
    Acked(Vec<bool>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str) -> MessageMeta {
        MessageMeta {
            topic: "t".into(),
            queue_id: 3,
            tag_hash: 7,
            msg_id: id.into(),
        }
    }

    fn send() -> Command {
        let header = Header::Send {
            store_time_ms: 42,
            messages: vec![meta("id-1")],
        };
        Command::new(header, vec![Bytes::from_static(b"record")]).expect("valid send")
    }

    #[test]
    fn slots_roundtrip() {
        let c = send();
        assert_eq!(c.slot_count(), 2);
        assert_eq!(c.slot(1), b"record");
        let slots = (0..c.slot_count())
            .map(|i| Bytes::copy_from_slice(c.slot(i)))
            .collect();
        assert_eq!(Command::from_slots(slots).expect("decode"), c);
    }

    #[test]
    fn serde_roundtrip_through_postcard() {
        let c = send();
        let bytes = postcard::to_stdvec(&c).expect("encode");
        let back: Command = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, c);
        assert_eq!(back.header().expect("header"), c.header().expect("header"));
        // Received whole, it goes on in one piece, with the same bytes on the wire.
        assert_eq!(
            back.encoded().map(|e| e.len()),
            Some(raft_log::slots::encoded_len(&c))
        );
        assert_eq!(postcard::to_stdvec(&back).expect("encode again"), bytes);
        let mut stored = Vec::new();
        raft_log::slots::encode(&back, &mut stored);
        let mut built = Vec::new();
        raft_log::slots::encode(&c, &mut built);
        assert_eq!(stored, built);
    }

    #[test]
    fn malformed_commands_are_refused() {
        let header = Header::Send {
            store_time_ms: 1,
            messages: vec![],
        };
        assert!(Command::new(header, vec![Bytes::new()]).is_err());
        let del = Header::DeleteTopic { name: "t".into() };
        assert_eq!(
            Command::new(del, vec![Bytes::new()]),
            Err(CommandError::UnexpectedRecords)
        );
        assert!(Command::from_slots(vec![]).is_err());
        let garbled = Command::from_slots(vec![Bytes::from_static(b"\xff\xff\xff")]).expect("slots");
        assert!(matches!(garbled.header(), Err(CommandError::Decode(_))));
        // A header that names more messages than the command carries records.
        let two = Command::new(
            Header::Send {
                store_time_ms: 1,
                messages: vec![meta("a"), meta("b")],
            },
            vec![Bytes::new(), Bytes::new()],
        )
        .expect("valid");
        let short =
            Command::from_slots(vec![Bytes::copy_from_slice(two.slot(0)), Bytes::new()]).expect("slots");
        assert!(matches!(
            short.header(),
            Err(CommandError::RecordCountMismatch { metas: 2, records: 1 })
        ));
    }
}
