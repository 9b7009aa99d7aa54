use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::Semaphore;

use super::*;
use crate::config::ClientConfig;
use crate::consumer::Preferred;
use crate::consumer::push::options::Listener;
use crate::consumer::push::options::PushOptions;
use crate::session::ClientKind;
use crate::session::Session;

fn message(offset: i64) -> ReceivedMessage {
    ReceivedMessage {
        message_id: format!("m{offset}"),
        topic: "t".into(),
        body: Default::default(),
        tag: None,
        keys: vec![],
        properties: BTreeMap::new(),
        message_group: None,
        broker: "g1".into(),
        queue_id: 0,
        queue_offset: offset,
        delivery_attempt: 1,
        born_timestamp: None,
        born_host: String::new(),
        store_timestamp: None,
        invisible_duration: None,
        receipt_handle: None,
        endpoints: Arc::from(["127.0.0.1:1".to_owned()]),
        corrupted: false,
    }
}

fn batch() -> Vec<ReceivedMessage> {
    (0..3).map(message).collect()
}

/// A consumer's shared part (no call leaves it: dispatch only talks to the acker's
/// channel) with `listener`, one worker and a 100 ms shutdown timeout.
fn shared(mode: ConsumeMode, listener: Listener) -> Arc<Shared> {
    let config = ClientConfig::builder()
        .access_points(["127.0.0.1:1"])
        .build()
        .expect("config");
    let session = Session::start(config, ClientKind::PushConsumer { group: "g".into() }).expect("session");
    let options = PushOptions {
        mode,
        workers: 1,
        shutdown_timeout: Duration::from_millis(100),
        ..PushOptions::default()
    };
    Arc::new(Shared {
        session,
        group: "g".into(),
        preferred: Preferred::default(),
        listener,
        queue_listener: None,
        options,
        workers: Arc::new(Semaphore::new(1)),
    })
}

/// Listener calls that reached the point where they never return.
#[derive(Default)]
struct Hung {
    count: AtomicUsize,
    reached: Notify,
}

impl Hung {
    fn add(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.reached.notify_one();
    }

    /// Waits until every listener call left in `listeners` is one that hangs: the
    /// others have finished and sent their outcomes.
    async fn settle(&self, listeners: &mut JoinSet<()>) {
        while listeners.len() > self.count.load(Ordering::SeqCst) {
            tokio::select! {
                Some(_) = listeners.join_next() => {}
                () = self.reached.notified() => {}
            }
        }
    }
}

/// A listener that records the offsets it is called with, asks the poller to stop
/// when `stop_at` comes, and never returns from the offsets in `hang` (counted in
/// `hung` once it gets there).
fn listener(
    calls: Arc<Mutex<Vec<i64>>>,
    stop: Arc<watch::Sender<Option<Instant>>>,
    stop_at: Option<i64>,
    hang: &'static [i64],
    hung: Arc<Hung>,
) -> Listener {
    Arc::new(move |m: ReceivedMessage| {
        let (calls, stop, hung) = (calls.clone(), stop.clone(), hung.clone());
        Box::pin(async move {
            calls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(m.queue_offset);
            if Some(m.queue_offset) == stop_at {
                stop.send_replace(Some(Instant::now()));
            }
            if hang.contains(&m.queue_offset) {
                hung.add();
                std::future::pending::<()>().await;
            }
            ConsumeResult::Success
        })
    })
}

struct Run {
    end: Option<End>,
    calls: Vec<i64>,
    outcomes: Vec<(i64, Outcome)>,
    took: Duration,
}

/// Dispatches three messages (offsets 0, 1, 2) valid for `valid_for`.
async fn run_dispatch(
    mode: ConsumeMode,
    valid_for: Duration,
    stop_at: Option<i64>,
    hang: &'static [i64],
) -> Run {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, mut stop) = watch::channel(None);
    let stop_tx = Arc::new(stop_tx);
    let hung = Arc::new(Hung::default());
    let shared = shared(
        mode,
        listener(calls.clone(), stop_tx.clone(), stop_at, hang, hung.clone()),
    );
    let valid = Validity::new(Instant::now() + valid_for);
    let (tx, mut rx) = mpsc::channel(16);
    let mut listeners = JoinSet::new();
    let started = Instant::now();
    let ctx = Dispatch {
        shared: &shared,
        tx: &tx,
        valid: &valid,
    };
    let end = tokio::time::timeout(
        Duration::from_secs(5),
        dispatch(&ctx, batch(), &mut stop, &mut listeners),
    )
    .await
    .expect("dispatch ends");
    let took = started.elapsed();
    // Ordered mode calls the listener inline; concurrent mode's calls that can finish
    // are awaited, so that every outcome is in before the channel is read.
    tokio::time::timeout(Duration::from_secs(5), hung.settle(&mut listeners))
        .await
        .expect("listener calls finish");
    listeners.abort_all();
    drop(tx);
    let mut outcomes = Vec::new();
    while let Some(f) = rx.recv().await {
        outcomes.push((f.message.queue_offset, f.outcome));
    }
    shared.session.shutdown().await;
    let calls = calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Run {
        end,
        calls,
        outcomes,
        took,
    }
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn every_message_goes_to_the_listener_while_the_queue_is_valid() {
    for mode in [ConsumeMode::Ordered, ConsumeMode::Concurrent] {
        let r = run_dispatch(mode, LONG, None, &[]).await;
        assert_eq!(r.end, None, "{mode:?}");
        assert_eq!(r.calls, [0, 1, 2], "{mode:?}");
        assert_eq!(
            r.outcomes,
            [(0, Outcome::Ack), (1, Outcome::Ack), (2, Outcome::Ack)],
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn past_its_deadline_a_batch_is_handed_back_unprocessed() {
    for mode in [ConsumeMode::Ordered, ConsumeMode::Concurrent] {
        let r = run_dispatch(mode, Duration::ZERO, None, &[]).await;
        assert_eq!(r.end, Some(End::Expired), "{mode:?}");
        assert!(r.calls.is_empty(), "{mode:?}");
        assert_eq!(
            r.outcomes,
            [
                (0, Outcome::HandBack),
                (1, Outcome::HandBack),
                (2, Outcome::HandBack)
            ],
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn a_deadline_passing_while_waiting_for_a_worker_hands_the_rest_back() {
    // One worker, stuck on the first message; the queue is valid for 100 ms more.
    let r = run_dispatch(ConsumeMode::Concurrent, Duration::from_millis(100), None, &[0]).await;
    assert_eq!(r.end, Some(End::Expired));
    assert_eq!(r.calls, [0]);
    assert_eq!(r.outcomes, [(1, Outcome::HandBack), (2, Outcome::HandBack)]);
    assert!(r.took >= Duration::from_millis(90), "{:?}", r.took);
}

#[tokio::test]
async fn ordered_mode_hands_the_rest_of_a_batch_back_once_asked_to_stop() {
    let r = run_dispatch(ConsumeMode::Ordered, LONG, Some(0), &[]).await;
    assert_eq!(r.end, Some(End::Stopped));
    assert_eq!(
        r.calls,
        [0],
        "the message being processed is finished, no later one"
    );
    assert_eq!(
        r.outcomes,
        [(0, Outcome::Ack), (1, Outcome::HandBack), (2, Outcome::HandBack)]
    );
}

#[tokio::test]
async fn a_stuck_listener_is_given_up_on_a_shutdown_timeout_after_the_stop() {
    // Ordered: the listener call itself never returns.
    let r = run_dispatch(ConsumeMode::Ordered, LONG, Some(0), &[0]).await;
    assert_eq!(r.end, Some(End::Stopped));
    assert_eq!(
        r.outcomes,
        [
            (0, Outcome::HandBack),
            (1, Outcome::HandBack),
            (2, Outcome::HandBack)
        ]
    );
    assert!(r.took >= Duration::from_millis(90), "{:?}", r.took);
    // Concurrent: the only worker never comes free; the stop lets the call run on
    // but gives up on the messages waiting for a worker.
    let r = run_dispatch(ConsumeMode::Concurrent, LONG, Some(0), &[0]).await;
    assert_eq!(r.end, Some(End::Stopped));
    assert_eq!(r.calls, [0]);
    assert_eq!(r.outcomes, [(1, Outcome::HandBack), (2, Outcome::HandBack)]);
    assert!(r.took >= Duration::from_millis(90), "{:?}", r.took);
}
