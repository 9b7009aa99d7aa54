//! The producer side of a run, the same for every system: `producers` tasks, each keeping
//! up to its share of the window in flight, at full speed or on a fixed schedule; and the
//! consumer-side recorder of end-to-end latency.
//!
//! Send latency is measured from when a send was due (fixed rate) or issued (max rate) to
//! its acknowledgment, so a stalled producer does not hide its own delay (no coordinated
//! omission at a fixed rate). Only sends issued inside the measured window count.

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use crate::stats::Histogram;
use crate::workload;
use crate::workload::Workload;

/// Sends one message and resolves when the system acknowledged it.
pub trait Sender: Clone + Send + Sync + 'static {
    fn send(&self, body: Vec<u8>) -> impl Future<Output = anyhow::Result<()>> + Send + 'static;

    /// Stops the client (waits for what it still has in flight).
    fn close(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Microseconds since the run's start: the clock producers stamp bodies with and
/// consumers read them by (one process, one clock).
#[derive(Debug, Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }

    pub fn us_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.0).as_micros() as u64
    }
}

/// When a producer stops and what it counts.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Sends issued from here on are measured.
    pub measure_from: Instant,
    /// No send is issued after this.
    pub stop_at: Instant,
    /// At most this many sends per producer.
    pub max_per_producer: u64,
}

/// What the producers did.
#[derive(Debug, Clone, Default)]
pub struct Produced {
    pub latency: Histogram,
    /// Acks of measured sends.
    pub measured_acks: u64,
    /// Acks of every send.
    pub acks: u64,
    pub errors: u64,
    /// The first error, as text.
    pub first_error: Option<String>,
}

impl Produced {
    fn merge(&mut self, o: Produced) {
        self.latency.merge(&o.latency);
        self.measured_acks += o.measured_acks;
        self.acks += o.acks;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

/// Runs the workload's producers to completion (every in-flight send answered).
pub async fn produce<S: Sender>(senders: Vec<S>, w: &Workload, clock: Clock, b: Bounds) -> Produced {
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let w = w.clone();
            tokio::spawn(async move { one_producer(s, &w, clock, b, i as u8).await })
        })
        .collect();
    let mut out = Produced::default();
    for t in tasks {
        match t.await {
            Ok(p) => out.merge(p),
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(format!("producer task: {e}"));
            }
        }
    }
    out
}

async fn one_producer<S: Sender>(s: S, w: &Workload, clock: Clock, b: Bounds, id: u8) -> Produced {
    let window = w.window_per_producer();
    let rate = w.rate_per_producer();
    let start = Instant::now();
    let mut out = Produced::default();
    let mut in_flight = FuturesUnordered::new();
    let mut issued = 0u64;
    // One timer for the whole run, moved only when its deadline changes: a new one per
    // loop would register and cancel a timer per acknowledgement.
    let timer = tokio::time::sleep_until(b.stop_at);
    tokio::pin!(timer);
    loop {
        let now = Instant::now();
        let more = now < b.stop_at && issued < b.max_per_producer;
        let due_at = rate.map(|r| start + workload::due(issued, r));
        if more && in_flight.len() < window && due_at.is_none_or(|d| d <= now) {
            // At a fixed rate latency counts from when the send was due.
            let t0 = due_at.unwrap_or(now);
            let body = workload::body(w.size, clock.us_at(t0), b'a' + id % 26);
            let fut = s.send(body);
            in_flight.push(async move { (fut.await, t0) });
            issued += 1;
            continue;
        }
        if in_flight.is_empty() && !more {
            return out;
        }
        let wake = due_at
            .filter(|_| more && in_flight.len() < window)
            .unwrap_or(b.stop_at);
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            Some((r, t0)) = in_flight.next() => record(&mut out, r, t0, b.measure_from),
            _ = timer.as_mut(), if more => {}
        }
    }
}

fn record(out: &mut Produced, r: anyhow::Result<()>, t0: Instant, measure_from: Instant) {
    match r {
        Ok(()) => {
            out.acks += 1;
            if t0 >= measure_from {
                out.measured_acks += 1;
                out.latency.record(t0.elapsed().as_micros() as u64);
            }
        }
        Err(e) => {
            out.errors += 1;
            out.first_error.get_or_insert(format!("{e:#}"));
        }
    }
}

/// What a consumer saw; shared between its task and the run.
#[derive(Debug, Default)]
pub struct Consumed {
    pub latency: Histogram,
    pub count: u64,
    /// When the last message arrived.
    pub last: Option<Instant>,
}

/// The consumer's recorder.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub clock: Clock,
    /// Messages sent before this (µs on the clock) are counted but not measured; shared
    /// with the consumer's copies, so that it can be set once the consumer runs.
    pub measure_from_us: Arc<AtomicU64>,
    pub state: Arc<Mutex<Consumed>>,
}

impl Recorder {
    pub fn new(clock: Clock, measure_from_us: u64) -> Self {
        Self {
            clock,
            measure_from_us: Arc::new(AtomicU64::new(measure_from_us)),
            state: Arc::default(),
        }
    }

    /// Measures messages sent from `us` on (µs on the clock).
    pub fn measure_from(&self, us: u64) {
        self.measure_from_us.store(us, Ordering::Relaxed);
    }

    /// Records a batch of bodies received now.
    pub fn bodies<'a>(&self, bodies: impl IntoIterator<Item = &'a [u8]>) {
        let now = self.clock.us();
        let from = self.measure_from_us.load(Ordering::Relaxed);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for b in bodies {
            st.count += 1;
            if let Some(sent) = workload::sent_us(b)
                && sent >= from
            {
                st.latency.record(now.saturating_sub(sent));
            }
        }
        st.last = Some(Instant::now());
    }

    pub fn count(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).count
    }

    /// Waits until `target` messages arrived, or nothing arrived for `idle`.
    pub async fn wait_for(&self, target: u64, idle: Duration) {
        let mut last_count = self.count();
        let mut last_change = Instant::now();
        loop {
            let c = self.count();
            if c >= target {
                return;
            }
            if c != last_count {
                (last_count, last_change) = (c, Instant::now());
            } else if last_change.elapsed() > idle {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn snapshot(&self) -> (Histogram, u64, Option<Instant>) {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (st.latency.clone(), st.count, st.last)
    }
}
