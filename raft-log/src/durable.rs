//! Vote, commit point and write epoch: the small state kept beside the segments.

use crate::error::Result;
use crate::log::CommitLog;
use crate::log::Durable;
use crate::log::lock;

impl CommitLog {
    /// Stores the encoded vote; durable (fdatasync'ed) before it returns.
    pub fn save_vote(&self, vote: &[u8]) -> Result<()> {
        self.inner.poison.check()?;
        let mut d = lock(&self.inner.meta);
        let prev = d.state.vote.replace(vote.to_vec());
        let r = persist(&mut d);
        if r.is_err() {
            d.state.vote = prev;
        }
        self.poison_on_err(r)
    }

    /// The last saved vote.
    pub fn read_vote(&self) -> Result<Option<Vec<u8>>> {
        self.inner.poison.check()?;
        Ok(lock(&self.inner.meta).state.vote.clone())
    }

    /// Records the commit point. Not fsynced: losing it only makes a restart re-learn it.
    pub fn save_committed(&self, committed: &[u8]) -> Result<()> {
        self.inner.poison.check()?;
        let mut c = lock(&self.inner.committed);
        c.0.write(committed)?;
        c.1 = Some(committed.to_vec());
        Ok(())
    }

    /// The last recorded commit point, if one survived.
    pub fn read_committed(&self) -> Result<Option<Vec<u8>>> {
        self.inner.poison.check()?;
        Ok(lock(&self.inner.committed).1.clone())
    }

    /// The index from which recovery (which sets it) found entries this node had made
    /// durable lost, until
    /// [`CommitLog::clear_vote_fence`]: while it is set, the node must neither vote nor
    /// stand for election, since an entry committed with its acknowledgement may now be
    /// missing from its log (the broker's vote fence reads this).
    pub fn vote_fence(&self) -> Option<u64> {
        lock(&self.inner.meta).state.vote_fence
    }

    /// Records (durably) that the node holds everything committed again.
    pub fn clear_vote_fence(&self) -> Result<()> {
        self.inner.poison.check()?;
        let mut d = lock(&self.inner.meta);
        if d.state.vote_fence.take().is_none() {
            return Ok(());
        }
        let r = persist(&mut d);
        self.poison_on_err(r)
    }

    /// Starts a new write epoch and persists it; records written before stay older, so a
    /// scan can tell stale bytes past the cut from the log's real continuation.
    pub(crate) fn bump_epoch(&self) -> Result<u64> {
        let mut d = lock(&self.inner.meta);
        d.state.epoch += 1;
        let r = persist(&mut d).map(|_| d.state.epoch);
        self.poison_on_err(r)
    }

    pub(crate) fn persist_purged(&self, purged: crate::index::LogPos) -> Result<()> {
        let mut d = lock(&self.inner.meta);
        d.state.purged = Some(purged);
        let r = persist(&mut d);
        self.poison_on_err(r)
    }

    pub(crate) fn poison_on_err<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            self.inner.poison.set(e.to_string());
        }
        r
    }
}

pub(crate) fn persist(d: &mut Durable) -> Result<()> {
    let bytes = serde_json::to_vec(&d.state).map_err(|e| crate::error::LogError::Config(e.to_string()))?;
    d.file.write(&bytes)
}
