//! Reads of the state machine's database: what the broker's handlers and the apply logic
//! look up. Names that are not valid topic or group names are never stored, so reads for
//! them answer "not found" without touching the database.

use super::apply::StateView;
use super::cq_runs;
use super::error::SmError;
use super::error::SmResult;
use super::keys;
use super::keys::GroupName;
use super::keys::TopicName;
use super::meta_cache::MetaCache;
use super::records;
use super::records::CqEntry;
use super::records::OffsetRecord;
use super::records::PopState;
use super::records::TopicRecord;
use super::store::CF_CQ;
use super::store::CF_OFFSETS;
use super::store::CF_POP;
use super::store::CF_QUEUES;
use super::store::CF_TOPICS;
use super::store::Store;
use crate::command::TopicConfig;

impl StateView for Store {
    /// From memory: the cache holds every topic record (`meta_cache`).
    fn topic(&self, name: &str) -> SmResult<Option<TopicRecord>> {
        Ok(self.meta.topic(name))
    }

    /// From memory: the cache holds every queue counter (`meta_cache`).
    fn next_offset(&self, topic: &str, queue_id: u32) -> SmResult<u64> {
        Ok(self.meta.next_offset(topic, queue_id))
    }

    fn cq_entries(&self, topic: &str, queue_id: u32, from: u64, max: usize) -> SmResult<Vec<CqEntry>> {
        self.read_cq(topic, queue_id, from, max)
    }

    fn offset_record(&self, group: &str, topic: &str, queue_id: u32) -> SmResult<Option<OffsetRecord>> {
        let (Ok(g), Ok(t)) = (GroupName::new(group), TopicName::new(topic)) else {
            return Ok(None);
        };
        match self.get(CF_OFFSETS, &keys::offset_key(g, t, queue_id))? {
            Some(v) => Ok(Some(OffsetRecord::decode(&v)?)),
            None => Ok(None),
        }
    }

    fn pop_state(&self, group: &str, topic: &str, queue_id: u32) -> SmResult<Option<PopState>> {
        let (Ok(g), Ok(t)) = (GroupName::new(group), TopicName::new(topic)) else {
            return Ok(None);
        };
        match self.get(CF_POP, &keys::pop_key(g, t, queue_id))? {
            Some(v) => Ok(Some(records::from_postcard("pop state", &v)?)),
            None => Ok(None),
        }
    }
}

impl Store {
    /// Every topic record and queue counter, for [`MetaCache`] (read once, at open).
    pub(super) fn load_meta(&self) -> SmResult<MetaCache> {
        let mut topics = Vec::new();
        let mut it = self.db().raw_iterator_cf(self.cf(CF_TOPICS)?);
        it.seek_to_first();
        while let Some(v) = it.value() {
            topics.push(records::from_postcard::<TopicRecord>("topic", v)?);
            it.next();
        }
        it.status()?;
        let mut counters = Vec::new();
        let mut it = self.db().raw_iterator_cf(self.cf(CF_QUEUES)?);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (topic, queue_id) = keys::split_queue_key(k)
                .ok_or_else(|| SmError::corrupt("queue counter key", format!("{k:?}")))?;
            counters.push((topic, queue_id, records::decode_counter(v)?));
            it.next();
        }
        it.status()?;
        Ok(MetaCache::load(topics, counters))
    }

    /// All topics, ordered by name (from memory, like [`StateView::topic`]).
    pub fn topics(&self) -> SmResult<Vec<TopicConfig>> {
        Ok(self.meta.topics())
    }

    /// Consume-queue entries of offsets `from, from + 1, …`: at most `max`, ending early at
    /// the end of the queue (or at the first missing offset). From memory when the queue's
    /// tail holds `from` (ending early at the tail's end, [`super::cq_tail`]); else from
    /// rows holding runs of entries ([`super::cq_runs`]): the first row read is the last
    /// one starting at or before `from`.
    pub fn read_cq(&self, topic: &str, queue_id: u32, from: u64, max: usize) -> SmResult<Vec<CqEntry>> {
        if let Some(entries) = self.meta.tail_entries(topic, queue_id, from, max) {
            return Ok(entries);
        }
        let Ok(t) = TopicName::new(topic) else {
            return Ok(Vec::new());
        };
        let prefix = keys::queue_key(t, queue_id);
        let start = keys::cq_key(t, queue_id, from);
        let mut it = self.db().raw_iterator_cf(self.cf(CF_CQ)?);
        it.seek_for_prev(&start);
        let covers = match (it.key(), it.value()) {
            (Some(k), Some(v)) => keys::cq_key_offset(&prefix, k)
                .and_then(|first| from.checked_sub(first))
                .is_some_and(|into| into < (v.len() / CqEntry::LEN) as u64),
            _ => false,
        };
        if !covers {
            it.seek(&start);
        }
        let mut out = Vec::with_capacity(max.min(1024));
        let mut expected = from;
        while out.len() < max {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            let Some(first) = keys::cq_key_offset(&prefix, k).filter(|&f| f <= expected) else {
                break;
            };
            let run = cq_runs::entries_from(first, v, expected, max - out.len())?;
            if run.is_empty() {
                break;
            }
            expected = expected.saturating_add(run.len() as u64);
            out.extend(run);
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// A consumer group's committed offset on a queue of the topic as it exists now (an
    /// offset committed for a deleted earlier incarnation of the topic does not count).
    pub fn committed_offset(&self, group: &str, topic: &str, queue_id: u32) -> SmResult<Option<u64>> {
        let Some(record) = self.offset_record(group, topic, queue_id)? else {
            return Ok(None);
        };
        let current = self.topic(topic)?;
        Ok(current
            .filter(|c| c.created_at == record.topic_created_at)
            .map(|_| record.offset))
    }
}

impl Store {
    /// A group's pop state on a queue of the topic as it exists now.
    pub fn current_pop_state(&self, group: &str, topic: &str, queue_id: u32) -> SmResult<Option<PopState>> {
        let Some(state) = self.pop_state(group, topic, queue_id)? else {
            return Ok(None);
        };
        let current = self.topic(topic)?;
        Ok(current
            .filter(|c| c.created_at == state.topic_created_at)
            .map(|_| state))
    }
}

/// A group's pop state on one queue, as found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopEntry {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
    pub state: PopState,
}

impl Store {
    /// Pop states in key order, starting after `after` (a previous page's last key), at
    /// most `limit`; states of deleted topic incarnations are skipped.
    pub fn scan_pop_states(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> SmResult<(Vec<PopEntry>, Option<Vec<u8>>)> {
        let mut it = self.db().raw_iterator_cf(self.cf(CF_POP)?);
        match after {
            Some(k) => {
                it.seek(k);
                if it.key() == Some(k) {
                    it.next();
                }
            }
            None => it.seek_to_first(),
        }
        let mut out = Vec::new();
        let mut last = None;
        while out.len() < limit {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            last = Some(k.to_vec());
            if let Some((group, topic, queue_id)) = keys::split_pop_key(k) {
                let state: PopState = records::from_postcard("pop state", v)?;
                let current = self.topic(&topic)?;
                if current.is_some_and(|t| t.created_at == state.topic_created_at) {
                    out.push(PopEntry {
                        group,
                        topic,
                        queue_id,
                        state,
                    });
                }
            }
            it.next();
        }
        it.status()?;
        Ok((out, last))
    }
}
