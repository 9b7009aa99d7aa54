"""kill -9 the leader under the official Python client: acknowledged sends survive,
sending resumes within 10 s, the killed node catches up after a restart, and acks
(consume state) survive a failover."""

import threading
import time

import pytest

import rmq

MAX_GAP_SECS = 10.0


@pytest.mark.timeout(420)
def test_kill_leader_while_sending(healthy):
    c = healthy
    topic = rmq.unique("failover")
    rmq.create_topic(c, topic, queues=8)
    events = []  # (monotonic time, ok, body, message id or error)
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(10**9))

    # The access point is a follower that stays up: a Python client can name only one
    # address (see CLIENT_NOTES.md), and nothing helps it if that one dies.
    access = c.follower_ids()[0]
    print(f"\naccess point: node {access} ({c.endpoint(access)})")
    with rmq.producer(c.endpoint(access), [topic], request_timeout=3) as p:
        def sender():
            while not stop.is_set():
                with lock:
                    i = next(counter)
                if i >= 50_000:  # bound, whatever happens
                    return
                body = f"{topic}-{i:06d}".encode()
                t0 = time.monotonic()
                try:
                    r = p.send(rmq.message(topic, body))
                    with lock:
                        events.append((time.monotonic(), True, body, r.message_id, t0,
                                       str(r.message_queue.endpoints)))
                except Exception as e:  # noqa: BLE001
                    with lock:
                        events.append((time.monotonic(), False, body, repr(e), t0, None))
                    time.sleep(0.05)

        threads = [threading.Thread(target=sender, daemon=True, name=f"sender-{k}") for k in range(4)]
        for t in threads:
            t.start()
        try:
            # Run past the client's first route refresh (10 s after startup, then every
            # 30 s) so that the gap does not depend on a refresh that happens to be near.
            started = time.monotonic()
            wait_until(lambda: sum(1 for e in events if e[1]) >= 300, 60, "300 sends before the kill")
            time.sleep(max(0.0, 12.0 - (time.monotonic() - started)))
            leader, t_kill = c.kill_leader()
            print(f"killed leader node {leader} after {sum(1 for e in events if e[1])} acknowledged sends")
            wait_until(lambda: any(e[1] and e[4] > t_kill for e in list(events)), 60,
                       "a successful send started after the kill")
            time.sleep(2)  # some more traffic on the new leader
        finally:
            stop.set()
            for t in threads:
                t.join(30)

    # Sends started after the kill: a send the old leader committed just before dying
    # may still complete after it.
    first_ok = min((e for e in events if e[1] and e[4] > t_kill), key=lambda e: e[0])
    gap = first_ok[0] - t_kill
    failures = [e for e in events if not e[1]]
    acked = {e[2]: e[3] for e in events if e[1]}
    before = sorted({e[5] for e in events if e[1] and e[0] < t_kill})
    print(f"gap between kill and next acknowledged send: {gap:.2f}s (sent to {first_ok[5]}; before the "
          f"kill sends went to {before}); acknowledged {len(acked)}, failed {len(failures)}; "
          f"first failures: {[e[3][:100] for e in failures[:2]]}")
    # The gap is asserted last, so that durability and catch-up are checked either way.

    new_leader = c.wait_for_leader(timeout=30, exclude=(leader,))
    c.restart_node(leader)
    node_st, leader_st = c.wait_caught_up(leader, timeout=90)
    print(f"node {leader} caught up: applied {node_st.get('applied_index')}, "
          f"leader {new_leader} commit {leader_st.get('commit_index')}")

    with rmq.simple_consumer(c.endpoint(), rmq.unique("fo_cg"), [topic], await_secs=1) as consumer:
        got = rmq.receive_until(consumer, want=list(acked), deadline_secs=180, linger_secs=2)
    lost = [b for b in acked if got.counts[b] == 0]
    unacked_delivered = sum(1 for e in failures if got.counts[e[2]])
    print(f"received {len(got.counts)} distinct, duplicates {got.duplicates}, "
          f"failed-but-stored sends {unacked_delivered}/{len(failures)}")
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:5]}"
    wrong_id = [b for b in acked if acked[b] not in got.ids[b]]
    assert not wrong_id, f"delivered under another id than the receipt's: {wrong_id[:5]}"
    assert gap < MAX_GAP_SECS, (
        f"sending resumed only {gap:.1f}s after the kill. The Python client sends where the "
        f"route's queues point and re-queries routes only every 30 s: a route naming the "
        f"leader itself stalls it until then (see CLIENT_NOTES.md)")


@pytest.mark.timeout(300)
def test_acks_survive_failover(healthy):
    c = healthy
    topic = rmq.unique("acks")
    rmq.create_topic(c, topic, queues=4)
    bodies = [f"{topic}-{i:04d}".encode() for i in range(200)]
    with rmq.producer(c.endpoint(), [topic]) as p:
        sent = rmq.send_many(p, topic, bodies, in_flight=16)
    assert not sent.failed, f"sends failed: {list(sent.failed.items())[:3]}"

    group = rmq.unique("acks_cg")
    acked = set()
    access = c.endpoint(c.follower_ids()[0])  # stays up
    with rmq.simple_consumer(access, group, [topic], await_secs=1) as consumer:
        deadline = time.monotonic() + 60
        while len(acked) < len(bodies) // 2 and time.monotonic() < deadline:
            for m in consumer.receive(16, 60):
                consumer.ack(m)  # synchronous: acknowledged before the kill
                acked.add(m.body)
    assert len(acked) >= len(bodies) // 2, f"only {len(acked)} received in 60s"

    leader, _ = c.kill_leader()
    new_leader = c.wait_for_leader(timeout=30, exclude=(leader,))
    print(f"\nacked {len(acked)}; killed leader {leader}, new leader {new_leader}")

    rest = [b for b in bodies if b not in acked]
    with rmq.simple_consumer(access, group, [topic], await_secs=1) as consumer:
        got = rmq.receive_until(consumer, want=rest, deadline_secs=120, linger_secs=3)
    again = [b for b in acked if got.counts[b]]
    missing = [b for b in rest if got.counts[b] == 0]
    print(f"after failover: received {len(got.counts)} distinct, redelivered acked {len(again)}, "
          f"missing {len(missing)}")
    assert not again, f"{len(again)} acked messages delivered again after failover, e.g. {again[:5]}"
    assert not missing, f"{len(missing)} unacked messages not delivered, e.g. {missing[:5]}"

    c.restart_node(leader)
    c.wait_caught_up(leader, timeout=90)


def wait_until(cond, secs, what):
    deadline = time.monotonic() + secs
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {secs}s waiting for {what}")
        time.sleep(0.05)
