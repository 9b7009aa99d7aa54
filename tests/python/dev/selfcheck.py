"""Runs this folder's client helpers against dev/fake_broker.py with the real official
client, and demonstrates the client facts in CLIENT_NOTES.md. No raftmq binary needed.

    $(scripts/python_env.sh) tests/python/dev/selfcheck.py
"""

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from rocketmq.grpc_protocol import Code  # noqa: E402
from rocketmq.v5.exception import IllegalArgumentException  # noqa: E402

import fake_broker  # noqa: E402
import rmq  # noqa: E402


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        check.failed += 1


check.failed = 0


def main():
    broker, server = fake_broker.serve("full")
    try:
        broker.create_topic("t_normal", 8)
        broker.create_topic("t_fifo", 4, "fifo")

        broker.calls.clear()
        with rmq.producer(broker.addr, ["t_normal"]) as p:
            startup_calls = list(broker.calls)
            time.sleep(1.5)
            startup_calls.append("| 1.5s later:")
            startup_calls += broker.calls[len(startup_calls) - 1:]
            bodies = [f"m-{i:05d}".encode() for i in range(2000)]
            sent = rmq.send_many(p, "t_normal", bodies, in_flight=64, deadline_secs=60)
        print(f"     producer startup RPCs: {startup_calls}")
        check(not sent.failed and len(sent.acked) == 2000, f"send_many 2000 in {sent.elapsed:.1f}s")

        with rmq.simple_consumer(broker.addr, "cg1", ["t_normal"], await_secs=1) as c:
            got = rmq.receive_until(c, want=bodies, deadline_secs=60, linger_secs=1)
        check(all(got.counts[b] for b in bodies), f"receive_until got all 2000 in {got.elapsed:.1f}s, "
              f"dups {got.duplicates}, errors {got.receive_errors[:2]} {got.ack_errors[:2]}")
        check(all(sent.acked[b] in got.ids[b] for b in bodies), "message ids echoed")

        with rmq.producer(broker.addr, ["t_fifo"]) as p:
            for i in range(30):
                for g in ("a", "b", "c"):
                    p.send(rmq.message("t_fifo", f"{g}:{i:04d}".encode(), group=g))
        with rmq.simple_consumer(broker.addr, "cg_fifo", ["t_fifo"], await_secs=1) as c:
            got = rmq.receive_until(c, want=[f"{g}:{i:04d}".encode() for g in "abc" for i in range(30)],
                                    deadline_secs=30, receivers=1, ackers=1)
        check(len(got.counts) == 90 and all(g for _, g in got.order), "fifo messages carry message_group")

        with rmq.Raw(broker.addr) as raw:
            reply = raw.telemetry_settings(rmq_settings_producer(broker.addr))
            check(reply.status.code == Code.OK and reply.settings.publishing.max_body_size > 0,
                  "Raw.telemetry_settings reads the first reply")
            check(raw.query_route("nope").status.code == Code.TOPIC_NOT_FOUND, "Raw.query_route")
            res = raw.send_bodies("t_normal", [b"raw-1"])
            check(res.status.code == Code.OK and res.entries[0].message_id, "Raw.send_bodies")

        # Unknown topic through the client: a plain Exception, the code is lost.
        with rmq.producer(broker.addr) as p:
            try:
                p.send(rmq.message("nope", b"x"))
                check(False, "unknown topic refused")
            except Exception as e:  # noqa: BLE001
                check(type(e) is Exception and "failed to fetch topic:nope route" in str(e),
                      f"unknown topic -> {type(e).__name__}: {e}")
            try:
                p.send(rmq.message("t_normal", b"x" * (4 * 1024 * 1024 + 1)))
                check(False, "4 MiB + 1 refused")
            except IllegalArgumentException as e:
                check("exceeds" in str(e), f"4 MiB + 1 refused client-side: {e}")
    finally:
        server.stop(0)

    # No Telemetry reply at all: Producer and SimpleConsumer still work.
    broker, server = fake_broker.serve("none")
    try:
        broker.create_topic("t", 2)
        with rmq.producer(broker.addr, ["t"]) as p:
            p.send(rmq.message("t", b"x"))
        with rmq.simple_consumer(broker.addr, "cg", ["t"], await_secs=1) as c:
            got = rmq.receive_until(c, want=[b"x"], deadline_secs=15)
        check(got.counts[b"x"] == 1, "works without any Telemetry reply")
    finally:
        server.stop(0)

    # A Telemetry reply with publishing.max_body_size = 0 breaks every later send.
    broker, server = fake_broker.serve("zero_body")
    try:
        broker.create_topic("t", 2)
        with rmq.producer(broker.addr, ["t"]) as p:
            time.sleep(1.0)  # the settings reply arrives asynchronously (here: during startup)
            try:
                p.send(rmq.message("t", b"y"))
                check(False, "max_body_size 0 in the Telemetry reply breaks sends")
            except IllegalArgumentException as e:
                check(True, f"max_body_size 0 in the Telemetry reply breaks sends: {e}")
    finally:
        server.stop(0)

    print("selfcheck: " + ("all ok" if not check.failed else f"{check.failed} failed"))
    return 1 if check.failed else 0


def rmq_settings_producer(addr):
    from test_protocol import producer_settings
    return producer_settings(addr)


if __name__ == "__main__":
    sys.exit(main())
