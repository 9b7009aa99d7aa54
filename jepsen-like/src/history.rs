//! The history of a chaos run: one JSON object per line.
//!
//! Every line is a [`Record`]: a wall-clock timestamp in milliseconds, the id of the
//! logical process that did or saw something, and an [`Event`] tagged by `"type"`:
//!
//! ```text
//! {"time_ms":1000,"process":1,"type":"send","key":"k1","seq":0,"message_id":"M-1-0"}
//! {"time_ms":1012,"process":1,"type":"send_done","message_id":"M-1-0","outcome":{"status":"ok","broker":"g1","queue":3,"offset":17}}
//! {"time_ms":1013,"process":1,"type":"send_done","message_id":"M-1-1","outcome":{"status":"failed","error":"no route"}}
//! {"time_ms":1014,"process":1,"type":"send_done","message_id":"M-1-2","outcome":{"status":"unknown","error":"deadline exceeded"}}
//! {"time_ms":1020,"process":9,"type":"consume","message_id":"M-1-0","key":"k1","seq":0,"consumer":"c1","broker":"g1","queue":3,"offset":17,"attempt":1}
//! {"time_ms":1021,"process":9,"type":"ack","message_id":"M-1-0","consumer":"c1","outcome":{"status":"ok"}}
//! {"time_ms":1500,"process":9,"type":"commit_offset","group":"billing","broker":"g1","queue":3,"offset":18}
//! {"time_ms":2000,"process":0,"type":"fault","kind":"kill-leader","target":"node-2","phase":"start"}
//! ```
//!
//! Sends are operations: a `send` invocation is followed, on the same process, by one
//! `send_done` completion (a process has at most one send in flight). Everything else is
//! an observation. [`HistoryWriter`] appends records; [`read_history`] reads them back,
//! ignoring a torn last line left by a crash.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ChaosError;

/// No encoded record (and so no complete line) is longer than this many bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Identifies a logical process of the run (a producer, a consumer, the nemesis).
pub type ProcessId = u64;

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Wall-clock time of the event, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The process that invoked the operation or made the observation.
    pub process: ProcessId,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// What a [`Record`] says happened, tagged by `"type"` in snake case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A send was invoked.
    Send(SendInvoke),
    /// The send in flight on this process completed.
    SendDone(SendDone),
    /// A message was delivered to a consumer's listener.
    Consume(Delivery),
    /// A consumer's acknowledgement of a delivery completed.
    Ack(AckDone),
    /// A consumer group's committed offset for one queue was observed.
    CommitOffset(CommitOffset),
    /// The nemesis started or ended a fault.
    Fault(Fault),
}

/// The invocation of a send of one unique message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendInvoke {
    /// Sharding key (message group of the FIFO topic).
    pub key: String,
    /// Position of this send among the key's sends; strictly increasing per key.
    pub seq: u64,
    /// Unique id of the message (client-generated).
    pub message_id: String,
}

/// The completion of a send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendDone {
    /// The message of the send in flight on this process.
    pub message_id: String,
    /// How it ended.
    pub outcome: SendOutcome,
}

/// How a send ended, tagged by `"status"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SendOutcome {
    /// Acknowledged by the broker: the message must be delivered.
    Ok {
        /// Broker group that stored it.
        broker: String,
        /// Queue id within the topic on that broker.
        queue: u32,
        /// Queue offset assigned to it.
        offset: u64,
    },
    /// Definitely not stored: the message must never be delivered.
    Failed {
        /// The client's error.
        error: String,
    },
    /// Indeterminate (e.g. a timeout): the message may or may not be delivered.
    Unknown {
        /// The client's error.
        error: String,
    },
}

/// One delivery of a message to a consumer's listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Id of the delivered message.
    pub message_id: String,
    /// Sharding key, as read from the delivered message.
    pub key: String,
    /// Sequence number, as read from the delivered message.
    pub seq: u64,
    /// Consumer instance that received it.
    pub consumer: String,
    /// Broker group it came from.
    pub broker: String,
    /// Queue id it came from.
    pub queue: u32,
    /// Its queue offset.
    pub offset: u64,
    /// Delivery attempt reported by the broker (1 for the first).
    pub attempt: u32,
}

/// The completion of an acknowledgement (optional in a history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckDone {
    /// Id of the acknowledged message.
    pub message_id: String,
    /// Consumer instance that acknowledged it.
    pub consumer: String,
    /// How the acknowledgement ended.
    pub outcome: AckOutcome,
}

/// How an acknowledgement ended, tagged by `"status"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AckOutcome {
    /// The broker confirmed it.
    Ok,
    /// The broker refused it.
    Failed {
        /// The client's error.
        error: String,
    },
    /// Indeterminate.
    Unknown {
        /// The client's error.
        error: String,
    },
}

/// An observation of a consumer group's committed offset for one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitOffset {
    /// Consumer group.
    pub group: String,
    /// Broker group holding the queue.
    pub broker: String,
    /// Queue id.
    pub queue: u32,
    /// The committed offset (next offset to consume).
    pub offset: u64,
}

/// The start or end of a fault injected by the nemesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Kind of fault, e.g. `kill-leader`, `pause-leader`, `partition-leader`.
    pub kind: String,
    /// What it was applied to, e.g. `node-2`; a start and its end name the same target.
    pub target: String,
    /// Whether it starts or ends here.
    pub phase: FaultPhase,
}

/// Start or end of a [`Fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPhase {
    /// The fault is injected.
    Start,
    /// The fault is healed.
    End,
}

/// Appends records to a history, one line each, flushed as soon as it is written.
///
/// Each record is encoded into a buffer of at most [`MAX_LINE_BYTES`] and written with a
/// single `write_all`, so a crash leaves at most a torn last line.
#[derive(Debug)]
pub struct HistoryWriter<W: Write> {
    out: W,
    line: Vec<u8>,
}

impl HistoryWriter<File> {
    /// Opens (or creates) a history file for appending. A torn last line left by an
    /// earlier crash is cut off first, so the new records start on a fresh line.
    pub fn append_to(path: &Path) -> Result<Self, ChaosError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        cut_torn_tail(&mut file)?;
        Ok(Self::new(file))
    }

    /// Flushes and fsyncs the file.
    pub fn sync(&mut self) -> Result<(), ChaosError> {
        self.out.flush()?;
        self.out.sync_data()?;
        Ok(())
    }
}

impl<W: Write> HistoryWriter<W> {
    /// Writes records to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            line: Vec::with_capacity(1024),
        }
    }

    /// Appends one record as a line and flushes it.
    pub fn append(&mut self, record: &Record) -> Result<(), ChaosError> {
        self.line.clear();
        let mut bounded = BoundedBuf {
            buf: &mut self.line,
            limit: MAX_LINE_BYTES - 1,
        };
        serde_json::to_writer(&mut bounded, record).map_err(ChaosError::Encode)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        self.out.flush()?;
        Ok(())
    }

    /// Gives back the underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// A `Vec` writer that refuses to grow beyond `limit` bytes.
struct BoundedBuf<'a> {
    buf: &'a mut Vec<u8>,
    limit: usize,
}

impl Write for BoundedBuf<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            return Err(io::Error::other(format!(
                "record longer than {} bytes",
                self.limit
            )));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Cuts an unterminated last line off `file`; a tail longer than any record is refused.
fn cut_torn_tail(file: &mut File) -> Result<(), ChaosError> {
    let len = file.metadata()?.len();
    let window = len.min(MAX_LINE_BYTES as u64 + 1);
    file.seek(SeekFrom::Start(len - window))?;
    let mut tail = Vec::with_capacity(window as usize);
    file.read_to_end(&mut tail)?;
    if tail.last().is_none_or(|&b| b == b'\n') {
        return Ok(());
    }
    match tail.iter().rposition(|&b| b == b'\n') {
        Some(pos) => file.set_len(len - window + pos as u64 + 1)?,
        None if window == len => file.set_len(0)?,
        None => return Err(ChaosError::BadTail { bytes: tail.len() }),
    }
    Ok(())
}

/// A history read back from its lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The records, in file order; record `i` is on line `i + 1`.
    pub records: Vec<Record>,
    /// Whether an unparsable, unterminated last line (a torn write) was ignored.
    pub torn_tail: bool,
}

/// Reads a history file; see [`read_history`].
pub fn read_history_file(path: &Path) -> Result<History, ChaosError> {
    read_history(BufReader::new(File::open(path)?))
}

/// Reads a history, one record per line.
///
/// An unterminated last line that does not parse is a torn write and is ignored
/// ([`History::torn_tail`]); any other line that does not parse, blank lines included,
/// is an error naming its line number.
pub fn read_history<R: BufRead>(mut input: R) -> Result<History, ChaosError> {
    let mut history = History::default();
    let mut buf = Vec::with_capacity(1024);
    let mut line = 0;
    loop {
        buf.clear();
        let n = input
            .by_ref()
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(history);
        }
        line += 1;
        let terminated = buf.last() == Some(&b'\n');
        if !terminated && buf.len() > MAX_LINE_BYTES {
            return Err(ChaosError::LineTooLong {
                line,
                max: MAX_LINE_BYTES,
            });
        }
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        match serde_json::from_slice::<Record>(text) {
            Ok(record) => history.records.push(record),
            // Unterminated and shorter than the limit: this is the end of the input.
            Err(_) if !terminated => {
                history.torn_tail = true;
                return Ok(history);
            }
            Err(error) => return Err(ChaosError::Parse { line, error }),
        }
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
