"""The official Python client sends and receives through a raftmq group: 10,000
normal messages over 8 queues, FIFO order per message group, and the fields of a
delivered message on the wire."""

import os
import threading
import time
import zlib
from collections import defaultdict

import pytest
from rocketmq.grpc_protocol import Code, DigestType, Encoding, MessageType

import rmq

N_MESSAGES = int(os.environ.get("RAFTMQ_PY_MESSAGES", "10000"))


@pytest.mark.timeout(600)
def test_send_and_receive_10000(healthy):
    c = healthy
    topic = rmq.unique("normal")
    rmq.create_topic(c, topic, queues=8)
    bodies = [f"{topic}-{i:06d}".encode() for i in range(N_MESSAGES)]

    with rmq.producer(c.endpoint(), [topic]) as p:
        sent = rmq.send_many(p, topic, bodies, in_flight=64, deadline_secs=300)
    print(f"\nsent {len(sent.acked)}/{N_MESSAGES} in {sent.elapsed:.1f}s "
          f"({len(sent.acked) / max(sent.elapsed, 1e-9):.0f} msg/s), failed {len(sent.failed)}")
    assert not sent.failed, f"{len(sent.failed)} sends failed, e.g. {list(sent.failed.items())[:3]}"
    assert len(set(sent.acked.values())) == N_MESSAGES, "message ids in send receipts are not unique"

    group = rmq.unique("cg")
    with rmq.simple_consumer(c.endpoint(), group, [topic], await_secs=1) as consumer:
        got = rmq.receive_until(consumer, want=bodies, deadline_secs=300, batch=32,
                                receivers=8, ackers=8, linger_secs=2)
    missing = [b for b in bodies if got.counts[b] == 0]
    extra = set(got.counts) - set(bodies)
    wrong_id = [b for b in bodies if got.counts[b] and sent.acked[b] not in got.ids[b]]
    print(f"received {len(got.counts)} distinct in {got.elapsed:.1f}s "
          f"({len(got.counts) / max(got.elapsed, 1e-9):.0f} msg/s), duplicates {got.duplicates}, "
          f"missing {len(missing)}, extra {len(extra)}, receive errors {len(got.receive_errors)}, "
          f"ack errors {len(got.ack_errors)}")
    if got.receive_errors:
        print(f"first receive errors: {got.receive_errors[:3]}")
    assert not missing, f"{len(missing)} messages never delivered, e.g. {missing[:5]}"
    assert not extra, f"messages nobody sent: {list(extra)[:5]}"
    assert not wrong_id, f"delivered with another message id than the receipt's: {wrong_id[:5]}"
    assert not got.corrupted, f"body digest mismatch: {got.corrupted[:5]}"
    assert not got.ack_errors, f"acks failed: {got.ack_errors[:3]}"


@pytest.mark.timeout(300)
def test_fifo_order_per_message_group(healthy):
    c = healthy
    topic = rmq.unique("fifo")
    rmq.create_topic(c, topic, queues=4, kind="fifo")
    groups = [f"order-{g}" for g in range(6)]
    per_group = 40
    errors = []

    with rmq.producer(c.endpoint(), [topic]) as p:
        def send_group(g):
            # In order, one at a time: message k+1 only after k was acknowledged.
            for i in range(per_group):
                body = f"{g}:{i:04d}".encode()
                for attempt in range(5):
                    try:
                        p.send(rmq.message(topic, body, group=g))
                        break
                    except Exception as e:  # noqa: BLE001
                        if attempt == 4:
                            errors.append((body, repr(e)))
                            return
                        time.sleep(0.5)

        threads = [threading.Thread(target=send_group, args=(g,), daemon=True) for g in groups]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errors, f"FIFO sends failed: {errors[:3]}"

    bodies = [f"{g}:{i:04d}".encode() for g in groups for i in range(per_group)]
    with rmq.simple_consumer(c.endpoint(), rmq.unique("fifo_cg"), [topic], await_secs=1) as consumer:
        # One receiver so that the recorded order is the delivery order; acks are
        # synchronous so the next message of a group can be released.
        got = rmq.receive_until(consumer, want=bodies, deadline_secs=180, batch=16,
                                receivers=1, ackers=1, linger_secs=1)

    missing = [b for b in bodies if got.counts[b] == 0]
    assert not missing, f"{len(missing)} FIFO messages never delivered, e.g. {missing[:5]}"
    first_seen = defaultdict(list)
    seen = set()
    for body, msg_group in got.order:
        g, i = body.decode().split(":")
        assert msg_group == g, f"message {body!r} delivered with message_group {msg_group!r}"
        if body not in seen:
            seen.add(body)
            first_seen[g].append(int(i))
    for g in groups:
        assert first_seen[g] == sorted(first_seen[g]), f"group {g} delivered out of order: {first_seen[g]}"
    print(f"\nFIFO: {len(groups)} groups x {per_group} in order; duplicates {got.duplicates}")


@pytest.mark.timeout(120)
def test_delivered_message_fields_on_the_wire(healthy):
    """Receive through raw gRPC and check what the official clients rely on."""
    c = healthy
    topic = rmq.unique("fields")
    rmq.create_topic(c, topic, queues=2)
    sent = {}
    with rmq.producer(c.endpoint(), [topic]) as p:
        for i in range(4):
            body = f"fields-{i}".encode()
            r = p.send(rmq.message(topic, body, tag="TagA", keys=[f"key-{i}"], props={"n": str(i)}))
            sent[body] = r.message_id

    group = rmq.unique("raw_cg")
    addr = c.client_addrs([c.leader_id()])[0]
    got = {}
    with rmq.Raw(addr) as raw:
        route = raw.query_route(topic)
        assert route.status.code == Code.OK
        deadline = time.monotonic() + 60
        while len(got) < len(sent) and time.monotonic() < deadline:
            for q in route.message_queues:
                responses = raw.receive(group, q, batch=16, long_poll_secs=1)
                statuses = [x.status for x in responses if x.HasField("status")]
                msgs = [x.message for x in responses if x.HasField("message")]
                assert len(statuses) == 1, f"want exactly one status in a receive stream, got {responses}"
                st = statuses[0]
                if msgs:
                    assert st.code == Code.OK, f"status {rmq.code_name(st.code)} with messages"
                else:
                    assert st.code in (Code.OK, Code.MESSAGE_NOT_FOUND), rmq.code_name(st.code)
                for m in msgs:
                    got[m.body] = m
                if msgs:
                    ack = raw.ack(group, topic, [(m.system_properties.message_id,
                                                  m.system_properties.receipt_handle) for m in msgs])
                    assert ack.status.code == Code.OK, f"ack: {ack.status}"
                    assert len(ack.entries) == len(msgs), "Ack response must have one entry per message"
    assert set(got) == set(sent), f"got {set(got)} want {set(sent)}"
    for body, m in got.items():
        sp = m.system_properties
        assert m.topic.name == topic
        assert sp.message_id == sent[body], "the client-generated message id must be echoed"
        assert sp.body_encoding == Encoding.IDENTITY
        # The official producer sent no digest; the broker computes the CRC32 this
        # client checks (eight digits: Raw says it is Python's).
        assert sp.body_digest.type == DigestType.CRC32, f"body_digest {sp.body_digest}"
        assert sp.body_digest.checksum == rmq.crc32_upper8(body), f"body_digest {sp.body_digest}"
        assert sp.receipt_handle, "no receipt handle"
        assert sp.tag == "TagA"
        assert list(sp.keys) == [f"key-{body.decode().split('-')[1]}"]
        assert dict(m.user_properties).get("n") == body.decode().split("-")[1]
        assert sp.message_type == MessageType.NORMAL
        assert sp.HasField("queue_offset")
        assert sp.delivery_attempt >= 1


@pytest.mark.timeout(120)
def test_a_crc32_digest_reaches_each_client_in_its_spelling(healthy):
    """A producer's CRC32, spelt without leading zeros as Java's client would, reaches the
    official Python consumer in the spelling it checks (eight digits) and passes, leading
    zero included; a wrong one is reported corrupted. A client whose spelling the broker
    does not know (Node.js's says HTTP) gets an MD5 of the body instead, or the producer's
    CRC32 as sent where it does not match the body."""
    c = healthy
    topic = rmq.unique("crc")
    rmq.create_topic(c, topic, queues=1)
    good = [b"hello world!", b"foobar"]  # CRC32 03B4C26D (a leading zero) and 9EF61F95
    bad = b"tampered"
    addr = c.client_addrs([c.leader_id()])[0]
    with rmq.Raw(addr) as raw:
        msgs = []
        for body, digested in [(b, b) for b in good] + [(bad, b"not this body")]:
            m = raw.build_message(topic, body)
            m.system_properties.body_digest.type = DigestType.CRC32
            m.system_properties.body_digest.checksum = format(zlib.crc32(digested), "X")
            msgs.append(m)
        assert msgs[0].system_properties.body_digest.checksum == "3B4C26D"
        r = raw.send(msgs)
        assert r.status.code == Code.OK, f"send: {r.status}"

    group = rmq.unique("crc_cg")
    with rmq.simple_consumer(c.endpoint(), group, [topic], await_secs=1) as consumer:
        got = rmq.receive_until(consumer, want=good + [bad], deadline_secs=60, do_ack=False)
    assert set(got.counts) == set(good + [bad]), f"received {set(got.counts)}"
    assert got.corrupted == [bad], f"corrupted: {got.corrupted}"

    with rmq.Raw(addr, language="HTTP") as raw:
        q = raw.query_route(topic).message_queues[0]
        node_group = rmq.unique("crc_node")
        seen = {}
        deadline = time.monotonic() + 60
        while len(seen) < len(good) + 1 and time.monotonic() < deadline:
            for x in raw.receive(node_group, q, batch=16):
                if x.HasField("message"):
                    seen[x.message.body] = x.message.system_properties.body_digest
    for body in good:
        d = seen.get(body)
        assert d is not None, f"{body!r} not received"
        assert d.type == DigestType.MD5 and d.checksum == rmq.md5_upper(body), f"{body!r}: {d}"
    d = seen.get(bad)
    assert d is not None and d.type == DigestType.CRC32, f"{bad!r}: {d}"
    assert d.checksum == format(zlib.crc32(b"not this body"), "X"), f"{bad!r}: {d}"
