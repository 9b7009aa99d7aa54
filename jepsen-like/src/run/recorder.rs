//! The one writer of a run's history, shared by producers, consumers and the nemesis.
//!
//! Every record is stamped and appended under one lock, so the file's order is the order
//! in which the runner observed things, and timestamps never decrease along the file
//! (the clock is read under the lock and clamped to the previous stamp). A write error
//! does not stop the run at once: the first one is kept and returned by
//! [`Recorder::close`], which also ends recording (later records are dropped).

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use crate::error::ChaosError;
use crate::history::Event;
use crate::history::HistoryWriter;
use crate::history::ProcessId;
use crate::history::Record;
use crate::history::SendOutcome;

/// What the run has seen so far, for progress lines and the drain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Send invocations.
    pub sends: u64,
    /// Sends acknowledged by the broker.
    pub acked: u64,
    /// Deliveries to the consumers (redeliveries included).
    pub deliveries: u64,
    /// Acknowledged messages not consumed yet.
    pub acked_unconsumed: u64,
    /// Fault starts.
    pub faults: u64,
}

#[derive(Debug, Default)]
struct Tally {
    progress: Progress,
    acked: HashSet<String>,
    consumed: HashSet<String>,
}

impl Tally {
    fn note(&mut self, event: &Event) {
        let p = &mut self.progress;
        match event {
            Event::Send(_) => p.sends += 1,
            Event::SendDone(done) if matches!(done.outcome, SendOutcome::Ok { .. }) => {
                p.acked += 1;
                if self.acked.insert(done.message_id.clone()) && !self.consumed.contains(&done.message_id) {
                    p.acked_unconsumed += 1;
                }
            }
            Event::Consume(d) => {
                p.deliveries += 1;
                if self.consumed.insert(d.message_id.clone()) && self.acked.contains(&d.message_id) {
                    p.acked_unconsumed = p.acked_unconsumed.saturating_sub(1);
                }
            }
            Event::Fault(f) if f.phase == crate::history::FaultPhase::Start => p.faults += 1,
            _ => {}
        }
    }
}

#[derive(Debug)]
struct Inner {
    writer: Option<HistoryWriter<File>>,
    first_error: Option<ChaosError>,
    last_ms: u64,
    tally: Tally,
}

/// Appends stamped records to a history file; see the module documentation.
#[derive(Debug)]
pub struct Recorder {
    inner: Mutex<Inner>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Recorder {
    /// Creates the history file at `path`; an existing file is refused (message ids would
    /// repeat those of an earlier run).
    pub fn create(path: &Path) -> Result<Self, ChaosError> {
        if path.exists() {
            return Err(ChaosError::Setup(format!(
                "{} exists already; give a new history path",
                path.display()
            )));
        }
        Ok(Self {
            inner: Mutex::new(Inner {
                writer: Some(HistoryWriter::append_to(path)?),
                first_error: None,
                last_ms: 0,
                tally: Tally::default(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stamps `event` with the time and `process`, and appends it.
    pub fn record(&self, process: ProcessId, event: Event) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(writer) = inner.writer.as_mut() else {
            return;
        };
        inner.last_ms = inner.last_ms.max(now_ms());
        inner.tally.note(&event);
        let record = Record {
            time_ms: inner.last_ms,
            process,
            event,
        };
        if let Err(e) = writer.append(&record)
            && inner.first_error.is_none()
        {
            inner.first_error = Some(e);
        }
    }

    /// What has been recorded so far.
    pub fn progress(&self) -> Progress {
        self.lock().tally.progress
    }

    /// Whether a write has failed (the history is incomplete).
    pub fn failed(&self) -> bool {
        self.lock().first_error.is_some()
    }

    /// Ends recording: fsyncs the file; the first write error if there was one.
    pub fn close(&self) -> Result<(), ChaosError> {
        let mut inner = self.lock();
        if let Some(mut writer) = inner.writer.take() {
            writer.sync()?;
        }
        match inner.first_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Delivery;
    use crate::history::SendDone;
    use crate::history::SendInvoke;

    #[test]
    fn records_are_stamped_in_order_and_tallied() -> Result<(), ChaosError> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("h.jsonl");
        let rec = Recorder::create(&path)?;
        assert!(Recorder::create(&path).is_err(), "an existing history is refused");
        rec.record(
            1,
            Event::Send(SendInvoke {
                key: "k".into(),
                seq: 0,
                message_id: "m0".into(),
            }),
        );
        rec.record(
            1,
            Event::SendDone(SendDone {
                message_id: "m0".into(),
                outcome: SendOutcome::Ok {
                    broker: "g1".into(),
                    queue: 0,
                    offset: 0,
                },
            }),
        );
        assert_eq!(rec.progress().acked_unconsumed, 1);
        let delivery = Delivery {
            message_id: "m0".into(),
            key: "k".into(),
            seq: 0,
            consumer: "c1".into(),
            broker: "g1".into(),
            queue: 0,
            offset: 0,
            attempt: 1,
        };
        rec.record(101, Event::Consume(delivery.clone()));
        rec.record(101, Event::Consume(delivery));
        let p = rec.progress();
        assert_eq!((p.sends, p.acked, p.deliveries, p.acked_unconsumed), (1, 1, 2, 0));
        rec.close()?;
        rec.record(
            1,
            Event::Send(SendInvoke {
                key: "k".into(),
                seq: 1,
                message_id: "m1".into(),
            }),
        );
        let history = crate::history::read_history_file(&path)?;
        assert_eq!(history.records.len(), 4, "nothing is written after close");
        let times: Vec<u64> = history.records.iter().map(|r| r.time_ms).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        Ok(())
    }
}
