//! A producer's message as a SendMessage request carries it: its encoding, and where each
//! field the broker keeps lies in it.
//!
//! A send used to be decoded into a protocol `Message` per message (a dozen strings and a
//! map allocated), converted into a [`crate::message::StoredMessage`], laid out as its
//! record and then freed. Here the request's messages stay the bytes they were read into
//! ([`raftmq_proto::send_request::EncodedSendRequest`]); [`Parsed::read`] finds the fields,
//! [`Parsed::check`] applies the rules every stored message obeys, and
//! [`IncomingMessage::append_record`] writes the record straight from the encoding.
//!
//! Reading follows protobuf's rules as prost applies them: a field seen twice keeps its
//! last value, an embedded message seen twice is merged, a map keeps the last value of a
//! key, repeated strings accumulate, fields the broker does not know are skipped, and
//! strings must be UTF-8. The tests hold the records against the ones the broker laid
//! out from prost's decoding, byte for byte.

use bytes::Bytes;
use bytes::BytesMut;
use raftmq_proto::prost_types::Timestamp;

use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::error::InvalidCode;
use crate::message::BodyDigest;
use crate::message::Names;
use crate::message::StoredKind;
use crate::message::check_body;
use crate::message::check_message_id;
use crate::message::check_properties;
use crate::message::kind_of;
use crate::message::timestamp_ms;
use crate::message_record;
use crate::sm::keys;
use crate::wire_reader::Fields;
use crate::wire_reader::Span;
use crate::wire_reader::delimited;
use crate::wire_reader::string;
use crate::wire_reader::text;
use crate::wire_reader::varint;

/// A producer's message read, not yet checked.
#[derive(Debug, Default)]
pub struct Parsed {
    bytes: Bytes,
    topic: Span,
    system_properties: bool,
    message_id: Span,
    tag: Option<Span>,
    keys: Vec<Span>,
    message_group: Option<Span>,
    born_host: Span,
    /// `seconds` and `nanos` of the born timestamp.
    born: Option<(i64, i32)>,
    delayed: bool,
    message_type: i32,
    queue_id: i32,
    /// The digest's type number and checksum.
    digest: Option<(i32, Span)>,
    /// In arrival order, keys possibly repeated.
    properties: Vec<(Span, Span)>,
    body: Span,
}

/// A producer's message, checked: what a send stores.
#[derive(Debug)]
pub struct IncomingMessage {
    parsed: Parsed,
    kind: StoredKind,
    born_timestamp_ms: u64,
}

impl Parsed {
    /// Reads the encoding of a protocol `Message`.
    pub fn read(bytes: Bytes) -> BrokerResult<Self> {
        let mut p = Self {
            bytes,
            ..Self::default()
        };
        let b = p.bytes.clone();
        let mut fields = Fields::new(&b, Span::all(&b));
        while let Some((n, v)) = fields.next_field()? {
            match n {
                1 => p.read_topic(&b, delimited(v, "topic")?)?,
                2 => p.read_property(&b, delimited(v, "user_properties")?)?,
                3 => p.read_system_properties(&b, delimited(v, "system_properties")?)?,
                4 => p.body = delimited(v, "body")?,
                _ => {}
            }
        }
        Ok(p)
    }

    /// The message id ("" if the message has none).
    pub fn message_id(&self) -> &str {
        text(&self.bytes, self.message_id)
    }

    /// The queue id the client may have chosen (`system_properties.queue_id`).
    pub fn queue_id(&self) -> i32 {
        self.queue_id
    }

    /// Checks the message against the rules every stored message obeys; `max_body` is the
    /// body limit.
    pub fn check(mut self, max_body: usize) -> BrokerResult<IncomingMessage> {
        let properties = std::mem::take(&mut self.properties);
        self.properties = in_key_order(&self.bytes, properties);
        let kind = self.check_fields(max_body)?;
        let b = &self.bytes[..];
        if !self
            .digest
            .is_some_and(|(kind, checksum)| BodyDigest::acceptable(kind, text(b, checksum)))
        {
            self.digest = None;
        }
        let born_timestamp_ms = self
            .born
            .map_or(0, |(seconds, nanos)| timestamp_ms(&Timestamp { seconds, nanos }));
        Ok(IncomingMessage {
            parsed: self,
            kind,
            born_timestamp_ms,
        })
    }

    /// The checks in the order the broker has always made them; the message's kind.
    fn check_fields(&self, max_body: usize) -> BrokerResult<StoredKind> {
        let b = &self.bytes[..];
        keys::validate_topic_name(text(b, self.topic))
            .map_err(|e| BrokerError::invalid(InvalidCode::IllegalTopic, e))?;
        if !self.system_properties {
            return Err(BrokerError::invalid(
                InvalidCode::BadRequest,
                "message without system properties",
            ));
        }
        check_message_id(self.message_id())?;
        let keys: Vec<&str> = self.keys.iter().map(|k| text(b, *k)).collect();
        let names = Names {
            tag: self.tag.map(|s| text(b, s)),
            keys: &keys,
            message_group: self.message_group.map(|s| text(b, s)),
            born_host: text(b, self.born_host),
        };
        names.check()?;
        let props = self.properties.iter().map(|(k, v)| (text(b, *k), text(b, *v)));
        check_properties(props, names.metadata_bytes())?;
        check_body(self.body.of(b), max_body)?;
        kind_of(self.delayed, self.message_type, self.message_group.is_some())
    }

    /// A `Resource`: the topic's name (its namespace is read and ignored).
    fn read_topic(&mut self, b: &[u8], span: Span) -> BrokerResult<()> {
        let mut fields = Fields::new(b, span);
        while let Some((n, v)) = fields.next_field()? {
            match n {
                1 => drop(string(b, v, "topic.resource_namespace")?),
                2 => self.topic = string(b, v, "topic.name")?,
                _ => {}
            }
        }
        Ok(())
    }

    /// One entry of the `user_properties` map (a key or value left out is "").
    fn read_property(&mut self, b: &[u8], span: Span) -> BrokerResult<()> {
        let mut entry = (Span::default(), Span::default());
        let mut fields = Fields::new(b, span);
        while let Some((n, v)) = fields.next_field()? {
            match n {
                1 => entry.0 = string(b, v, "user_properties key")?,
                2 => entry.1 = string(b, v, "user_properties value")?,
                _ => {}
            }
        }
        self.properties.push(entry);
        Ok(())
    }

    fn read_system_properties(&mut self, b: &[u8], span: Span) -> BrokerResult<()> {
        self.system_properties = true;
        let mut fields = Fields::new(b, span);
        while let Some((n, v)) = fields.next_field()? {
            match n {
                1 => self.tag = Some(string(b, v, "tag")?),
                2 => self.keys.push(string(b, v, "keys")?),
                3 => self.message_id = string(b, v, "message_id")?,
                4 => self.read_digest(b, delimited(v, "body_digest")?)?,
                6 => self.message_type = varint(v, "message_type")? as i32,
                7 => {
                    let born = self.born.get_or_insert((0, 0));
                    read_time(b, delimited(v, "born_timestamp")?, born)?;
                }
                8 => self.born_host = string(b, v, "born_host")?,
                11 => {
                    read_time(b, delimited(v, "delivery_timestamp")?, &mut (0, 0))?;
                    self.delayed = true;
                }
                13 => self.queue_id = varint(v, "queue_id")? as i32,
                17 => self.message_group = Some(string(b, v, "message_group")?),
                // Read as prost reads them, then ignored: what the broker sets itself or
                // does not keep.
                5 | 14 | 16 | 22 => drop(varint(v, "a numeric system property")?),
                10 | 12 | 18 | 21 => drop(string(b, v, "a string system property")?),
                9 | 15 | 19 => read_time(b, delimited(v, "a time system property")?, &mut (0, 0))?,
                20 => read_strings(b, delimited(v, "dead_letter_queue")?)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn read_digest(&mut self, b: &[u8], span: Span) -> BrokerResult<()> {
        let digest = self.digest.get_or_insert((0, Span::default()));
        let mut fields = Fields::new(b, span);
        while let Some((n, v)) = fields.next_field()? {
            match n {
                1 => digest.0 = varint(v, "body_digest.type")? as i32,
                2 => digest.1 = string(b, v, "body_digest.checksum")?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// A `Timestamp` or `Duration` (`seconds` 1, `nanos` 2) merged into `time`.
fn read_time(b: &[u8], span: Span, time: &mut (i64, i32)) -> BrokerResult<()> {
    let mut fields = Fields::new(b, span);
    while let Some((n, v)) = fields.next_field()? {
        match n {
            1 => time.0 = varint(v, "seconds")? as i64,
            2 => time.1 = varint(v, "nanos")? as i32,
            _ => {}
        }
    }
    Ok(())
}

/// A message of string fields 1 and 2 (`DeadLetterQueue`), read and ignored.
fn read_strings(b: &[u8], span: Span) -> BrokerResult<()> {
    let mut fields = Fields::new(b, span);
    while let Some((n, v)) = fields.next_field()? {
        if n == 1 || n == 2 {
            string(b, v, "dead_letter_queue")?;
        }
    }
    Ok(())
}

/// User properties as a map holds them: in key order, each key once with its last value.
fn in_key_order(b: &[u8], mut props: Vec<(Span, Span)>) -> Vec<(Span, Span)> {
    // A stable sort keeps equal keys in arrival order; of each run the last one stays.
    props.sort_by(|x, y| x.0.of(b).cmp(y.0.of(b)));
    props.dedup_by(|later, kept| {
        let same = later.0.of(b) == kept.0.of(b);
        if same {
            *kept = *later;
        }
        same
    });
    props
}

impl IncomingMessage {
    pub fn message_id(&self) -> &str {
        self.parsed.message_id()
    }

    pub fn topic(&self) -> &str {
        text(&self.parsed.bytes, self.parsed.topic)
    }

    pub fn message_group(&self) -> Option<&str> {
        self.parsed.message_group.map(|s| text(&self.parsed.bytes, s))
    }

    pub fn kind(&self) -> StoredKind {
        self.kind
    }

    /// The tag's hash as indexed in consume queues.
    pub fn tag_hash(&self) -> u64 {
        let tag = self.parsed.tag.map_or("", |s| text(&self.parsed.bytes, s));
        crate::command::tag_hash(tag)
    }

    pub fn body_len(&self) -> usize {
        self.parsed.body.len()
    }

    /// The record's size, about (as [`message_record::capacity`] estimates it).
    pub fn record_capacity(&self) -> usize {
        64 + self.parsed.message_id.len() + self.parsed.topic.len() + self.parsed.body.len()
    }

    /// Appends the message's record (version 2) to `out`: the same bytes
    /// [`message_record::encode`] writes for the message.
    pub fn append_record(&self, out: &mut BytesMut) -> BrokerResult<()> {
        let p = &self.parsed;
        let b = &p.bytes[..];
        let raw = |s: Span| message_record::Raw(s.of(b));
        let header = message_record::IncomingHeader {
            msg_id: raw(p.message_id),
            topic: raw(p.topic),
            tag: p.tag.map(raw),
            keys: message_record::RawList {
                bytes: b,
                spans: &p.keys,
            },
            message_group: p.message_group.map(raw),
            properties: message_record::RawMap {
                bytes: b,
                pairs: &p.properties,
            },
            kind: self.kind,
            born_timestamp_ms: self.born_timestamp_ms,
            born_host: raw(p.born_host),
            digest: p.digest.map(|(kind, checksum)| message_record::RawDigest {
                kind,
                checksum: raw(checksum),
            }),
        };
        message_record::append_incoming(&header, p.body.of(b), out)
    }
}

#[cfg(test)]
impl IncomingMessage {
    /// `m` as a send carries it, checked with no body limit.
    pub(crate) fn of(m: &raftmq_proto::rocketmq::v2::Message) -> BrokerResult<Self> {
        use raftmq_proto::prost::Message as _;
        Parsed::read(Bytes::from(m.encode_to_vec()))?.check(usize::MAX)
    }
}

#[cfg(test)]
#[path = "incoming_message_tests.rs"]
mod tests;
