"""Helpers around the official RocketMQ Python client (rocketmq-python-client 5.1.2)
and raw gRPC calls through the stubs it ships (rocketmq.grpc_protocol).

Every wait here is bounded. See CLIENT_NOTES.md for how the client behaves.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, wait as wait_futures
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
from rocketmq import (ClientConfiguration, Credentials, FilterExpression, Message,
                      Producer, SimpleConsumer)
from rocketmq.grpc_protocol import (Code, Encoding, MessageType, definition_pb2,
                                    service_pb2, service_pb2_grpc)
from rocketmq.v5.util import MessageIdCodec

REQUEST_TIMEOUT = 5  # seconds: the client's gRPC deadline for unary calls


def code_name(code: int) -> str:
    try:
        return Code.Name(code)
    except ValueError:
        return str(code)


# ---- the official client ---------------------------------------------------------


def config(endpoints: str, request_timeout: float = REQUEST_TIMEOUT) -> ClientConfiguration:
    """ENDPOINTS is "host:port" or "h1:p1;h2:p2" (plaintext; the client's default)."""
    return ClientConfiguration(endpoints, Credentials(), request_timeout=request_timeout)


def shutdown_bounded(client, secs: float = 20.0) -> None:
    """client.shutdown() in a daemon thread so a hung shutdown cannot hang the test."""
    t = threading.Thread(target=client.shutdown, daemon=True, name="client-shutdown")
    t.start()
    t.join(secs)
    if t.is_alive():
        print(f"warning: {client} shutdown did not finish in {secs}s")


@contextmanager
def producer(endpoints: str, topics=(), request_timeout: float = REQUEST_TIMEOUT):
    p = Producer(config(endpoints, request_timeout), topics=list(topics) or None)
    p.startup()
    try:
        yield p
    finally:
        shutdown_bounded(p)


@contextmanager
def simple_consumer(endpoints: str, group: str, topics, await_secs: int = 2,
                    request_timeout: float = REQUEST_TIMEOUT):
    """AWAIT_SECS is the long-polling time per receive (must be >= 1: the client leaves
    the field unset when it is 0). One receive() polls one queue."""
    c = SimpleConsumer(config(endpoints, request_timeout), group,
                       {t: FilterExpression() for t in topics}, await_duration=await_secs)
    c.startup()
    try:
        yield c
    finally:
        shutdown_bounded(c)


def message(topic: str, body: bytes, tag=None, keys=(), group=None, props=None) -> Message:
    m = Message()
    m.topic = topic
    m.body = body
    if tag:
        m.tag = tag
    for k in keys:
        m.keys = k
    if group:
        m.message_group = group
    for k, v in (props or {}).items():
        m.add_property(k, v)
    return m


@dataclass
class SendOutcome:
    acked: dict = field(default_factory=dict)  # body -> message id from the receipt
    failed: dict = field(default_factory=dict)  # body -> last exception
    elapsed: float = 0.0


def send_many(p: Producer, topic: str, bodies, in_flight: int = 64, attempts: int = 3,
              deadline_secs: float = 180.0, **msg_kwargs) -> SendOutcome:
    """Sends every body with send_async, at most IN_FLIGHT at a time, each body tried up
    to ATTEMPTS times (each try of ours is itself up to 3 tries inside the client)."""
    out = SendOutcome()
    lock = threading.Lock()
    slots = threading.BoundedSemaphore(in_flight)
    done = threading.Event()
    pending = [0]
    t0 = time.monotonic()
    deadline = t0 + deadline_secs

    def submit(body, attempt):
        slots.acquire()
        try:
            fut = p.send_async(message(topic, body, **msg_kwargs))
        except Exception as e:  # failed before reaching the wire (route, size, ...)
            slots.release()
            finish(body, attempt, None, e)
            return
        fut.add_done_callback(lambda f: on_done(body, attempt, f))

    def on_done(body, attempt, f):
        slots.release()
        try:
            receipt = f.result()
            finish(body, attempt, receipt, None)
        except Exception as e:
            finish(body, attempt, None, e)

    def finish(body, attempt, receipt, exc):
        if receipt is not None:
            with lock:
                out.acked[body] = receipt.message_id
                out.failed.pop(body, None)
        elif attempt < attempts and time.monotonic() < deadline:
            # Retried from a short-lived thread: the callback runs on the client's
            # callback pool, which must not block on our semaphore.
            threading.Thread(target=submit, args=(body, attempt + 1), daemon=True).start()
            return
        else:
            with lock:
                out.failed[body] = exc
        with lock:
            pending[0] -= 1
            if pending[0] == 0:
                done.set()

    bodies = list(bodies)
    pending[0] = len(bodies)
    if not bodies:
        return out
    for b in bodies:
        if time.monotonic() > deadline:
            break
        submit(b, 1)
    done.wait(max(0.0, deadline - time.monotonic()) + 2 * REQUEST_TIMEOUT)
    with lock:
        missing = [b for b in bodies if b not in out.acked and b not in out.failed]
        for b in missing:
            out.failed[b] = TimeoutError("no answer before the deadline")
    out.elapsed = time.monotonic() - t0
    return out


@dataclass
class Received:
    counts: Counter = field(default_factory=Counter)  # body -> deliveries
    ids: dict = field(default_factory=lambda: defaultdict(set))  # body -> message ids seen
    order: list = field(default_factory=list)  # (body, message_group) in receive order
    corrupted: list = field(default_factory=list)
    ack_errors: list = field(default_factory=list)
    receive_errors: list = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def duplicates(self) -> int:
        return sum(c - 1 for c in self.counts.values() if c > 1)


def receive_until(c: SimpleConsumer, want=None, deadline_secs: float = 120.0, batch: int = 32,
                  invisible_secs: int = 60, receivers: int = 4, ackers: int = 8,
                  linger_secs: float = 0.0, idle_secs: float = 5.0, do_ack: bool = True) -> Received:
    """Receives (and acks) messages.

    With WANT (a collection of bodies): until every body in it was seen, then LINGER_SECS
    more (to catch duplicates). Without WANT: until IDLE_SECS pass without a message.
    Never past DEADLINE_SECS. Acks are synchronous calls on a pool (ack_async in 5.1.2
    returns None, see CLIENT_NOTES.md).
    """
    want_given = want is not None
    want = set(want or ())
    r = Received()
    lock = threading.Lock()
    stop = threading.Event()
    t0 = time.monotonic()
    deadline = t0 + deadline_secs
    state = {"last_msg": t0, "satisfied_at": t0 if not want else None}
    pool = ThreadPoolExecutor(max_workers=ackers, thread_name_prefix="acker")
    acks = []

    def ack(m):
        for attempt in range(3):
            try:
                c.ack(m)
                return
            except Exception as e:  # noqa: BLE001 - recorded, callers check
                if attempt == 2:
                    with lock:
                        r.ack_errors.append((m.body, repr(e)))
                else:
                    time.sleep(0.3)

    def finished(now):
        if want_given:
            return state["satisfied_at"] is not None and now - state["satisfied_at"] >= linger_secs
        return now - state["last_msg"] >= idle_secs

    def loop():
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                msgs = c.receive(batch, invisible_secs)
            except Exception as e:  # noqa: BLE001
                with lock:
                    r.receive_errors.append(repr(e))
                time.sleep(0.2)
                msgs = []
            now = time.monotonic()
            with lock:
                for m in msgs:
                    r.counts[m.body] += 1
                    r.ids[m.body].add(m.message_id)
                    r.order.append((m.body, m.message_group))
                    if m.corrupted:
                        r.corrupted.append(m.body)
                    if m.body in want:
                        want.discard(m.body)
                        if not want:
                            state["satisfied_at"] = now
                if msgs:
                    state["last_msg"] = now
                if do_ack:
                    for m in msgs:
                        acks.append(pool.submit(ack, m))
                if finished(now):
                    stop.set()

    threads = [threading.Thread(target=loop, daemon=True, name=f"receiver-{i}")
               for i in range(receivers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 3 * REQUEST_TIMEOUT + 30)
    stop.set()
    wait_futures(acks, timeout=60)
    pool.shutdown(wait=False, cancel_futures=True)
    r.elapsed = time.monotonic() - t0
    return r


# ---- raw gRPC through the client's generated stubs --------------------------------


class Raw:
    """Unary/streaming calls to one broker address with hand-built requests."""

    def __init__(self, addr: str, client_id: str | None = None, language: str = "PYTHON"):
        self.addr = addr
        self.language = language
        self.client_id = client_id or f"raftmq-pytest-{uuid.uuid4().hex[:12]}"
        self.channel = grpc.insecure_channel(addr, options=[
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", -1),
            ("grpc.enable_retries", 0),
        ])
        self.stub = service_pb2_grpc.MessagingServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def metadata(self):
        # What the official client sends (rocketmq/v5/util/signature.py), unsigned.
        return [
            ("x-mq-language", self.language),
            ("x-mq-protocol", "GRPC_V2"),
            ("x-mq-client-version", "5.1.2"),
            ("x-mq-date-time", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())),
            ("x-mq-request-id", str(uuid.uuid4())),
            ("x-mq-client-id", self.client_id),
            ("x-mq-namespace", ""),
        ]

    def endpoints_pb(self) -> definition_pb2.Endpoints:
        host, port = self.addr.rsplit(":", 1)
        e = definition_pb2.Endpoints(scheme=definition_pb2.AddressScheme.IPv4)
        e.addresses.add(host=host, port=int(port))
        return e

    def query_route(self, topic: str, timeout: float = REQUEST_TIMEOUT):
        req = service_pb2.QueryRouteRequest()
        req.topic.name = topic
        req.endpoints.CopyFrom(self.endpoints_pb())
        return self.stub.QueryRoute(req, metadata=self.metadata(), timeout=timeout)

    @staticmethod
    def build_message(topic: str, body: bytes, msg_type=MessageType.NORMAL, group=None,
                      tag=None) -> definition_pb2.Message:
        m = definition_pb2.Message()
        m.topic.name = topic
        m.body = body
        sp = m.system_properties
        sp.message_id = MessageIdCodec().next_message_id()
        sp.message_type = msg_type
        sp.body_encoding = Encoding.IDENTITY
        sp.born_host = "127.0.0.1"
        sp.born_timestamp.seconds = int(time.time())
        if group:
            sp.message_group = group
        if tag:
            sp.tag = tag
        return m

    def send(self, messages, timeout: float = REQUEST_TIMEOUT):
        req = service_pb2.SendMessageRequest()
        req.messages.extend(messages)
        return self.stub.SendMessage(req, metadata=self.metadata(), timeout=timeout)

    def send_bodies(self, topic: str, bodies, **kw):
        return self.send([self.build_message(topic, b, **kw) for b in bodies])

    def receive(self, group: str, queue: definition_pb2.MessageQueue, batch: int = 16,
                invisible_secs: int = 30, long_poll_secs: int = 1, timeout: float | None = None):
        """Returns the list of ReceiveMessageResponse items of one ReceiveMessage call."""
        req = service_pb2.ReceiveMessageRequest()
        req.group.name = group
        req.message_queue.CopyFrom(queue)
        req.filter_expression.type = definition_pb2.FilterType.TAG
        req.filter_expression.expression = "*"
        req.batch_size = batch
        req.invisible_duration.seconds = invisible_secs
        req.long_polling_timeout.seconds = long_poll_secs
        req.auto_renew = False
        timeout = timeout if timeout is not None else REQUEST_TIMEOUT + long_poll_secs
        return list(self.stub.ReceiveMessage(req, metadata=self.metadata(), timeout=timeout))

    def ack(self, group: str, topic: str, pairs, timeout: float = REQUEST_TIMEOUT):
        """PAIRS: (message_id, receipt_handle)."""
        req = service_pb2.AckMessageRequest()
        req.group.name = group
        req.topic.name = topic
        for mid, handle in pairs:
            req.entries.add(message_id=mid, receipt_handle=handle)
        return self.stub.AckMessage(req, metadata=self.metadata(), timeout=timeout)

    def telemetry_settings(self, settings: definition_pb2.Settings, wait_secs: float = 5.0):
        """Opens a Telemetry stream, writes SETTINGS, returns the first reply (or raises
        TimeoutError). The stream is cancelled afterwards."""
        sent = threading.Event()

        def requests():
            yield service_pb2.TelemetryCommand(settings=settings)
            sent.set()
            # Keep the client half open, like the official client does.
            time.sleep(wait_secs + 1)

        call = self.stub.Telemetry(requests(), metadata=self.metadata(), timeout=wait_secs + 2)
        result = {}

        def read():
            try:
                result["reply"] = next(call)
            except Exception as e:  # noqa: BLE001
                result["error"] = e

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(wait_secs)
        call.cancel()
        if "reply" in result:
            return result["reply"]
        if "error" in result:
            raise result["error"]
        raise TimeoutError(f"no Telemetry reply from {self.addr} within {wait_secs}s")


def md5_upper(data: bytes) -> str:
    return hashlib.md5(data).hexdigest().upper()


def crc32_upper8(data: bytes) -> str:
    """A CRC32 digest as the official Python client spells it (eight upper-case digits)."""
    return format(zlib.crc32(data) & 0xFFFFFFFF, "08X")


def wait_routable(addrs, topic: str, timeout: float = 15.0, min_queues: int = 1) -> dict:
    """Waits until QueryRoute for TOPIC answers OK on every address; returns
    {addr: QueryRouteResponse}."""
    deadline = time.monotonic() + timeout
    got = {}
    last = {}
    while True:
        for a in addrs:
            if a in got:
                continue
            try:
                with Raw(a) as raw:
                    res = raw.query_route(topic)
                if res.status.code == Code.OK and len(res.message_queues) >= min_queues:
                    got[a] = res
                else:
                    last[a] = f"{code_name(res.status.code)} {res.status.message}"
            except grpc.RpcError as e:
                last[a] = f"grpc {e.code()} {e.details()}"
        if len(got) == len(list(addrs)):
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} not routable on all of {addrs} after {timeout}s: {last}")
        time.sleep(0.2)


def create_topic(cluster, name: str, queues: int = 8, kind: str = "normal") -> None:
    """Creates the topic through the CLI and waits until every live node routes it."""
    cluster.create_topic(name, queues=queues, kind=kind)
    wait_routable(cluster.client_addrs(cluster.live_ids()), name, min_queues=1)


def unique(prefix: str) -> str:
    """A topic/group name valid for the client's regex ^[%a-zA-Z0-9_-]+$."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"
