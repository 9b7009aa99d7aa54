//! The openraft adapter: [`RaftLogStore`] implements `RaftLogStorage` and `RaftLogReader`
//! over a [`CommitLog`].
//!
//! It serves every type config whose entries are openraft's standard `Entry` with the
//! advanced leader id (term, node id) and `u64` ids, and whose application data is a
//! [`SlottedPayload`]. Normal entries are stored as slot tables, so the broker can read
//! one message by (log index, slot) through [`CommitLog::read_slot`].

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::Bound;
use std::ops::RangeBounds;

use bytes::Bytes;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::LogState;
use openraft::Membership;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::RaftTypeConfig;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::type_config::alias::VoteOf;

use crate::index::LogPos;
use crate::log::CommitLog;
use crate::log::LogRecord;
use crate::log::StoredEntry;
use crate::record::EntryKind;
use crate::record::RecordMeta;
use crate::slots;
use crate::slots::SlottedPayload;

/// The leader id this store understands: (term, node id), committed form identical.
pub type StoreLeaderId = LeaderId<u64, u64>;
type StoreEntry<D, N> = openraft::Entry<StoreLeaderId, EntryPayload<D, u64, N>>;

/// openraft log storage backed by the commit log. Cheap to clone; clones share the log.
pub struct RaftLogStore<C> {
    log: CommitLog,
    _c: PhantomData<fn() -> C>,
}

impl<C> Clone for RaftLogStore<C> {
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            _c: PhantomData,
        }
    }
}

impl<C> Debug for RaftLogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftLogStore").field("log", &self.log).finish()
    }
}

impl<C> RaftLogStore<C> {
    pub fn new(log: CommitLog) -> Self {
        Self { log, _c: PhantomData }
    }

    /// The underlying commit log (for payload reads by the broker).
    pub fn log(&self) -> &CommitLog {
        &self.log
    }
}

fn to_log_id(p: LogPos) -> LogId<StoreLeaderId> {
    LogId::new(
        LeaderId {
            term: p.term,
            node_id: p.leader,
        },
        p.index,
    )
}

fn to_pos(id: &LogId<StoreLeaderId>) -> LogPos {
    LogPos {
        index: id.index,
        term: id.leader_id.term,
        leader: id.leader_id.node_id,
    }
}

/// The recorded commit point, lowered to the last entry when recovery cut the log below it
/// (damage): the kept entries up to it are a prefix of committed ones, and the rest must
/// be re-learnt from the leader. openraft would otherwise try to re-apply entries the log
/// no longer has and refuse to start.
fn clamp_committed(
    stored: Option<LogId<StoreLeaderId>>,
    last: Option<LogPos>,
) -> Option<LogId<StoreLeaderId>> {
    match (stored, last) {
        (Some(c), Some(l)) if c.index > l.index => {
            tracing::warn!(
                committed = c.index,
                last = l.index,
                "commit point beyond the recovered log; lowering it"
            );
            Some(to_log_id(l))
        }
        (Some(_), None) => None,
        (c, _) => c,
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// An openraft entry viewed as a log record.
struct EntryRecord<'a, D, N>(&'a StoreEntry<D, N>)
where
    D: openraft::AppData,
    N: openraft::Node;

impl<D, N> LogRecord for EntryRecord<'_, D, N>
where
    D: openraft::AppData + SlottedPayload,
    N: openraft::Node,
{
    fn meta(&self) -> RecordMeta {
        let id = &self.0.log_id;
        let kind = match &self.0.payload {
            EntryPayload::Blank => EntryKind::Blank,
            EntryPayload::Normal(_) => EntryKind::Normal,
            EntryPayload::Membership(_) => EntryKind::Membership,
        };
        RecordMeta {
            index: id.index,
            term: id.leader_id.term,
            leader: id.leader_id.node_id,
            kind,
        }
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        match &self.0.payload {
            EntryPayload::Blank => {}
            EntryPayload::Normal(d) => slots::encode(d, out),
            // Serializing plain maps and sets of ids cannot fail.
            EntryPayload::Membership(m) => serde_json::to_writer(out, m).unwrap_or_default(),
        }
    }

    fn shared_payload(&self) -> Option<Bytes> {
        match &self.0.payload {
            EntryPayload::Normal(d) => d.encoded().cloned(),
            _ => None,
        }
    }
}

fn decode_entry<D, N>(e: StoredEntry) -> io::Result<StoreEntry<D, N>>
where
    D: openraft::AppData + SlottedPayload,
    N: openraft::Node,
{
    let m = e.meta;
    let log_id = LogId::new(
        LeaderId {
            term: m.term,
            node_id: m.leader,
        },
        m.index,
    );
    let payload = match m.kind {
        EntryKind::Blank => EntryPayload::Blank,
        EntryKind::Normal => EntryPayload::Normal(D::from_encoded(e.payload).map_err(invalid)?),
        EntryKind::Membership => {
            let mem: Membership<u64, N> = serde_json::from_slice(&e.payload).map_err(invalid)?;
            EntryPayload::Membership(mem)
        }
    };
    Ok(openraft::Entry { log_id, payload })
}

fn range_to(range: &impl RangeBounds<u64>, first: u64, next: u64) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start.max(first), end.min(next))
}

impl<C, D, N> RaftLogReader<C> for RaftLogStore<C>
where
    C: RaftTypeConfig<
            D = D,
            NodeId = u64,
            Node = N,
            Term = u64,
            LeaderId = StoreLeaderId,
            Entry = StoreEntry<D, N>,
        >,
    D: openraft::AppData + SlottedPayload,
    N: openraft::Node,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let b = self.log.bounds();
        let Some(next) = b.next else { return Ok(Vec::new()) };
        let (from, to) = range_to(&range, b.first, next);
        if from >= to {
            return Ok(Vec::new());
        }
        let stored = self.log.read(from, to)?;
        stored.into_iter().map(decode_entry::<D, N>).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        match self.log.read_vote()? {
            Some(b) => serde_json::from_slice(&b).map(Some).map_err(invalid),
            None => Ok(None),
        }
    }
}

impl<C, D, N> RaftLogStorage<C> for RaftLogStore<C>
where
    C: RaftTypeConfig<
            D = D,
            NodeId = u64,
            Node = N,
            Term = u64,
            LeaderId = StoreLeaderId,
            Entry = StoreEntry<D, N>,
        >,
    D: openraft::AppData + SlottedPayload,
    N: openraft::Node,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        self.log.check()?;
        let b = self.log.bounds();
        Ok(LogState {
            last_purged_log_id: b.purged.map(to_log_id),
            last_log_id: b.last.map(to_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let bytes = serde_json::to_vec(vote).map_err(invalid)?;
        Ok(self.log.save_vote(&bytes)?)
    }

    async fn save_committed(&mut self, committed: Option<LogId<StoreLeaderId>>) -> Result<(), io::Error> {
        let bytes = serde_json::to_vec(&committed).map_err(invalid)?;
        Ok(self.log.save_committed(&bytes)?)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<StoreLeaderId>>, io::Error> {
        let stored = match self.log.read_committed()? {
            Some(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring unreadable commit point");
                None
            }),
            None => None,
        };
        Ok(clamp_committed(stored, self.log.bounds().last))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        let done =
            Box::new(move |r: Result<(), crate::LogError>| callback.io_completed(r.map_err(io::Error::from)));
        self.log.append(entries.iter().map(EntryRecord), done)?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId<StoreLeaderId>>) -> Result<(), io::Error> {
        Ok(self.log.truncate_after(last_log_id.map(|l| l.index))?)
    }

    async fn purge(&mut self, log_id: LogId<StoreLeaderId>) -> Result<(), io::Error> {
        Ok(self.log.purge(to_pos(&log_id))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(index: u64, term: u64) -> LogPos {
        LogPos {
            index,
            term,
            leader: 1,
        }
    }

    #[test]
    fn a_commit_point_beyond_the_log_is_lowered_to_its_last_entry() {
        let c = |index| Some(to_log_id(pos(index, 3)));
        assert_eq!(clamp_committed(c(10), Some(pos(20, 3))), c(10));
        assert_eq!(clamp_committed(c(20), Some(pos(20, 3))), c(20));
        assert_eq!(
            clamp_committed(c(30), Some(pos(20, 2))),
            Some(to_log_id(pos(20, 2)))
        );
        assert_eq!(clamp_committed(c(30), None), None);
        assert_eq!(clamp_committed(None, Some(pos(20, 3))), None);
    }
}
