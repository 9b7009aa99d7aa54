//! The short chaos run of CI: `raftmq-chaos run` for 95 s against a real cluster, with a
//! leader kill, a paused leader, a partitioned leader, a power failure of the whole group,
//! and bit flips in and a truncation of one node's log (in turn), then heal, drain and
//! check. Fails on any lost acknowledged message or order violation (the binary's exit
//! status) and when a planned fault was not injected.

use std::io::Read;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use raftmq_testkit::netns;

/// The whole run may take this long (95 s of workload, start, heal, drain, teardown).
const RUN_LIMIT: Duration = Duration::from_secs(230);

#[test]
fn kills_pauses_partitions_power_failures_and_damaged_logs_lose_nothing() -> anyhow::Result<()> {
    let partitions = netns::available();
    if !partitions {
        anyhow::ensure!(
            std::env::var_os(netns::REQUIRE_ENV).is_none(),
            "{} is set but partitions need root, ip and iptables",
            netns::REQUIRE_ENV
        );
        eprintln!("partition left out: needs root, ip and iptables");
    }
    let kinds: &[&str] = if partitions {
        &[
            "kill-leader",
            "pause-leader",
            "partition-leader",
            "power-failure",
            "flip-bits",
            "truncate-segment",
        ]
    } else {
        &[
            "kill-leader",
            "pause-leader",
            "power-failure",
            "flip-bits",
            "truncate-segment",
        ]
    };
    let dir = tempfile::tempdir()?;
    let history = dir.path().join("history.jsonl");
    let mut child = Command::new(raftmq_testkit::bin("raftmq-chaos")?)
        .args(["run", "--duration", "95s", "--seed", "1", "--cycle", "--faults"])
        .arg(kinds.join(","))
        .arg("--history")
        .arg(&history)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            // SIGTERM: the harness stops, heals and tears its cluster down; SIGKILL if it
            // does not end within 30 s.
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait()?.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the chaos run took over {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = reader
        .join()
        .map_err(|_| anyhow::anyhow!("stdout reader panicked"))?;
    println!("{report}");
    eprintln!("chaos run took {:.1} s", started.elapsed().as_secs_f64());
    anyhow::ensure!(status.success(), "raftmq-chaos run failed ({status})");
    for kind in kinds {
        let row = report
            .lines()
            .find(|l| l.split_whitespace().next() == Some(kind))
            .ok_or_else(|| anyhow::anyhow!("no {kind} row in the report"))?;
        let faults: u32 = row.split_whitespace().nth(1).unwrap_or("0").parse()?;
        anyhow::ensure!(faults >= 1, "{kind} was never injected: {row}");
    }
    anyhow::ensure!(report.contains("verdict               PASS"), "no PASS verdict");
    Ok(())
}
