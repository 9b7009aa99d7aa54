//! Push-consumer members as real processes (the `push_consumer` example), their event
//! lines collected, and the checks of ownership run over them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::BufRead;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;

/// One line a member printed.
#[derive(Debug, Clone)]
pub struct Event {
    pub member: usize,
    pub kind: String,
    pub ms: u128,
    pub queue: (String, i32),
    pub offset: i64,
    pub message_id: String,
    pub message_group: String,
    pub body: String,
}

fn parse(member: usize, line: &str) -> Option<Event> {
    let f: Vec<&str> = line.split(' ').collect();
    let kind = (*f.first()?).to_owned();
    let ms = f.get(1)?.parse().ok()?;
    let queue =
        |i: usize| -> Option<(String, i32)> { Some(((*f.get(i)?).to_owned(), f.get(i + 1)?.parse().ok()?)) };
    let mut e = Event {
        member,
        kind: kind.clone(),
        ms,
        queue: (String::new(), -1),
        offset: -1,
        message_id: String::new(),
        message_group: String::new(),
        body: String::new(),
    };
    match kind.as_str() {
        "ASSIGNED" | "RELEASED" => e.queue = queue(2)?,
        "CONSUMED" => {
            e.queue = queue(2)?;
            e.offset = f.get(4)?.parse().ok()?;
            e.message_id = (*f.get(6)?).to_owned();
            e.message_group = (*f.get(7)?).to_owned();
            e.body = (*f.get(8)?).to_owned();
        }
        "STOPPED" => {}
        _ => return None,
    }
    Some(e)
}

/// The example binary, next to the test's target folder (`cargo test` builds examples).
fn example_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("test binary folder")?;
    let path = profile_dir.join("examples").join("push_consumer");
    anyhow::ensure!(
        path.exists(),
        "{} is missing: cargo build -p raftmq-client --examples",
        path.display()
    );
    Ok(path)
}

/// A member process and everything it printed.
#[derive(Debug)]
pub struct Members {
    children: BTreeMap<usize, Child>,
    pub events: Arc<Mutex<Vec<Event>>>,
}

impl Drop for Members {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.children) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Members {
    pub fn new() -> Self {
        Self {
            children: BTreeMap::new(),
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Starts member `n` consuming `topic` in `group`.
    pub fn start(
        &mut self,
        n: usize,
        namesrv: &str,
        topic: &str,
        group: &str,
        extra: &[&str],
    ) -> anyhow::Result<()> {
        let mut child = Command::new(example_bin()?)
            .arg(topic)
            .arg(group)
            .args(extra)
            .env("RAFTMQ_NAMESRV", namesrv)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn push_consumer")?;
        let out = child.stdout.take().context("stdout")?;
        let events = self.events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(e) = parse(n, &line) {
                    events.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                }
            }
        });
        self.children.insert(n, child);
        Ok(())
    }

    /// SIGKILLs member `n`.
    pub fn kill(&mut self, n: usize) -> anyhow::Result<()> {
        if let Some(mut c) = self.children.remove(&n) {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERMs every member and waits for each to exit cleanly.
    pub fn stop_all(&mut self) -> anyhow::Result<()> {
        for (n, mut c) in std::mem::take(&mut self.children) {
            Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status()?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(st) = c.try_wait()? {
                    anyhow::ensure!(st.success(), "member {n} exited with {st}");
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "member {n} ignored SIGTERM");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    pub fn snapshot(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The queues each member holds now (assigned and not released), from the events.
pub fn holdings(events: &[Event]) -> BTreeMap<usize, Vec<(String, i32)>> {
    let mut held: BTreeMap<(String, i32), usize> = BTreeMap::new();
    for e in events {
        match e.kind.as_str() {
            "ASSIGNED" => {
                held.insert(e.queue.clone(), e.member);
            }
            "RELEASED" if held.get(&e.queue) == Some(&e.member) => {
                held.remove(&e.queue);
            }
            _ => {}
        }
    }
    let mut out: BTreeMap<usize, Vec<(String, i32)>> = BTreeMap::new();
    for (q, m) in held {
        out.entry(m).or_default().push(q);
    }
    out
}

/// A queue: broker group and queue id.
pub type Queue = (String, i32);
/// One ownership: member, from, until (Unix ms).
pub type Owned = (usize, u128, u128);

/// Ownership intervals `[assigned, released)` per queue; a member killed at `killed` ends
/// its open intervals there.
pub fn intervals(events: &[Event], killed: &BTreeMap<usize, u128>) -> BTreeMap<Queue, Vec<Owned>> {
    let mut open: BTreeMap<((String, i32), usize), u128> = BTreeMap::new();
    let mut out: BTreeMap<Queue, Vec<Owned>> = BTreeMap::new();
    for e in events {
        let key = (e.queue.clone(), e.member);
        match e.kind.as_str() {
            "ASSIGNED" => {
                open.insert(key, e.ms);
            }
            "RELEASED" => {
                if let Some(start) = open.remove(&key) {
                    out.entry(e.queue.clone())
                        .or_default()
                        .push((e.member, start, e.ms));
                }
            }
            _ => {}
        }
    }
    for ((queue, member), start) in open {
        let end = killed.get(&member).copied().unwrap_or(u128::MAX);
        out.entry(queue).or_default().push((member, start, end));
    }
    out
}

/// Checks that no queue had two owners at once and that every consumption happened while
/// its member owned the queue.
pub fn check_ownership(events: &[Event], killed: &BTreeMap<usize, u128>) -> anyhow::Result<()> {
    let all = intervals(events, killed);
    for (queue, list) in &all {
        let mut list = list.clone();
        list.sort_by_key(|i| i.1);
        for w in list.windows(2) {
            anyhow::ensure!(
                w[1].1 >= w[0].2,
                "queue {queue:?} had two owners: member {} [{}, {}) and member {} [{}, {})",
                w[0].0,
                w[0].1,
                w[0].2,
                w[1].0,
                w[1].1,
                w[1].2
            );
        }
    }
    for e in events.iter().filter(|e| e.kind == "CONSUMED") {
        let owned = all.get(&e.queue).is_some_and(|l| {
            l.iter()
                .any(|(m, s, end)| *m == e.member && *s <= e.ms && e.ms <= *end)
        });
        anyhow::ensure!(
            owned,
            "member {} consumed from {:?} at {} without owning it",
            e.member,
            e.queue,
            e.ms
        );
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
