//! Consume-queue entries gathered while a batch of commands is applied ([`super::apply`]):
//! a send's entries per queue ([`SendRun`]) and everything the batch appended to a queue
//! so far ([`BatchRun`]), which later commands of the batch read.

use super::error::SmError;
use super::error::SmResult;
use super::records::CqEntry;

/// The consume-queue entries one batch appended to a queue: offsets `first`,
/// `first + 1`, … (a send takes the queue's next offset, so a batch's offsets of one
/// queue are consecutive; a deleted topic's runs are dropped).
#[derive(Debug, Default)]
pub struct BatchRun {
    first: u64,
    entries: Vec<CqEntry>,
}

impl BatchRun {
    pub fn push(&mut self, offset: u64, entry: CqEntry) -> SmResult<()> {
        if self.entries.is_empty() {
            self.first = offset;
        } else if offset != self.first + self.entries.len() as u64 {
            return Err(SmError::corrupt(
                "consume queue",
                format!(
                    "offset {offset} does not follow {} in one batch",
                    self.first + self.entries.len() as u64 - 1
                ),
            ));
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Appends `entries`, the first of them at offset `first`.
    pub fn extend(&mut self, first: u64, entries: &[CqEntry]) -> SmResult<()> {
        let Some((head, rest)) = entries.split_first() else {
            return Ok(());
        };
        self.push(first, *head)?;
        self.entries.extend_from_slice(rest);
        Ok(())
    }

    /// The entries from offset `start` on (none if `start` is before the run).
    pub fn from(&self, start: u64) -> &[CqEntry] {
        start
            .checked_sub(self.first)
            .and_then(|skip| self.entries.get(usize::try_from(skip).ok()?..))
            .unwrap_or(&[])
    }
}

/// The entries one send appends to a queue, from offset `first` on.
#[derive(Debug)]
pub struct SendRun<'a> {
    pub topic: &'a str,
    pub queue_id: u32,
    pub first: u64,
    pub entries: Vec<CqEntry>,
}

impl SendRun<'_> {
    /// The offset after the run's last entry.
    pub fn next(&self) -> SmResult<u64> {
        self.first
            .checked_add(self.entries.len() as u64)
            .ok_or_else(|| SmError::corrupt("queue counter", "overflow"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> CqEntry {
        CqEntry {
            log_index: n,
            slot: 1,
            size: 10,
            tag_hash: 0,
            store_time_ms: 1,
        }
    }

    #[test]
    fn runs_extend_a_batch_run_at_its_end_only() {
        let mut b = BatchRun::default();
        b.extend(7, &[entry(1), entry(2)]).expect("first run");
        b.extend(9, &[]).expect("empty run");
        b.extend(9, &[entry(3)]).expect("follows");
        assert_eq!(b.from(8), &[entry(2), entry(3)]);
        assert!(b.from(6).is_empty(), "before the run");
        assert!(b.extend(11, &[entry(4)]).is_err(), "a gap is corruption");
        let run = SendRun {
            topic: "t",
            queue_id: 0,
            first: u64::MAX - 1,
            entries: vec![entry(1)],
        };
        assert_eq!(run.next().expect("fits"), u64::MAX);
        let full = SendRun {
            entries: vec![entry(1), entry(2)],
            ..run
        };
        assert!(full.next().is_err(), "the counter would overflow");
    }
}
