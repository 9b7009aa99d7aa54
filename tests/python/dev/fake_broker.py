"""A minimal in-memory apache.rocketmq.v2.MessagingService, single node, no
persistence. Not a test of raftmq: it exists to check this folder's client helpers
(rmq.py) and the facts in CLIENT_NOTES.md against the real official client while the
broker is not there. Run dev/selfcheck.py.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from concurrent import futures

import grpc
from rocketmq.grpc_protocol import (ClientType, Code, DigestType, Encoding, MessageType,
                                    Permission, definition_pb2, service_pb2,
                                    service_pb2_grpc)


class FakeBroker(service_pb2_grpc.MessagingServiceServicer):
    def __init__(self, telemetry_mode: str = "full"):
        # telemetry_mode: "full" (a proper reply), "none" (never reply),
        # "zero_body" (reply with publishing.max_body_size = 0)
        self.telemetry_mode = telemetry_mode
        self.lock = threading.Condition()
        self.topics = {}  # name -> (queues, kind)
        self.queues = {}  # (topic, qid) -> [Message]
        self.inflight = {}  # handle -> (group, topic, qid, offset, expiry)
        self.acked = set()  # (group, topic, qid, offset)
        self.addr = None
        self.calls = []
        self.on_call = None  # optional hook run at the start of every RPC

    def create_topic(self, name, queues=8, kind="normal"):
        with self.lock:
            self.topics[name] = (queues, kind)
            for q in range(queues):
                self.queues.setdefault((name, q), [])

    def _called(self, name):
        self.calls.append(name)
        if self.on_call:
            self.on_call(name)

    def _status(self, code=Code.OK, msg="OK"):
        return definition_pb2.Status(code=code, message=msg)

    def _queue(self, topic, qid):
        n, kind = self.topics[topic]
        q = definition_pb2.MessageQueue(id=qid, permission=Permission.READ_WRITE)
        q.topic.name = topic
        q.broker.name = "fake"
        q.broker.id = 0
        host, port = self.addr.rsplit(":", 1)
        q.broker.endpoints.scheme = definition_pb2.AddressScheme.IPv4
        q.broker.endpoints.addresses.add(host=host, port=int(port))
        q.accept_message_types.append(MessageType.FIFO if kind == "fifo" else MessageType.NORMAL)
        return q

    def QueryRoute(self, request, context):
        self._called("QueryRoute")
        t = request.topic.name
        if t not in self.topics:
            return service_pb2.QueryRouteResponse(status=self._status(Code.TOPIC_NOT_FOUND, f"topic {t} not found"))
        res = service_pb2.QueryRouteResponse(status=self._status())
        res.message_queues.extend(self._queue(t, i) for i in range(self.topics[t][0]))
        return res

    def Heartbeat(self, request, context):
        self._called("Heartbeat")
        return service_pb2.HeartbeatResponse(status=self._status())

    def NotifyClientTermination(self, request, context):
        self._called("NotifyClientTermination")
        return service_pb2.NotifyClientTerminationResponse(status=self._status())

    def Telemetry(self, request_iterator, context):
        self._called("Telemetry")
        for cmd in request_iterator:
            if not cmd.HasField("settings") or self.telemetry_mode == "none":
                continue
            s = definition_pb2.Settings()
            s.CopyFrom(cmd.settings)
            if s.client_type == ClientType.PRODUCER:
                s.backoff_policy.max_attempts = 3
                s.backoff_policy.exponential_backoff.initial.nanos = 10_000_000
                s.backoff_policy.exponential_backoff.max.seconds = 1
                s.backoff_policy.exponential_backoff.multiplier = 2.0
                s.publishing.max_body_size = 0 if self.telemetry_mode == "zero_body" else 4 * 1024 * 1024
                s.publishing.validate_message_type = True
            else:
                s.backoff_policy.max_attempts = 16
                s.backoff_policy.customized_backoff.next.add(seconds=1)
            yield service_pb2.TelemetryCommand(status=self._status(), settings=s)

    def SendMessage(self, request, context):
        self._called("SendMessage")
        if not request.messages:
            return service_pb2.SendMessageResponse(status=self._status(Code.BAD_REQUEST, "no messages"))
        res = service_pb2.SendMessageResponse(status=self._status())
        with self.lock:
            for m in request.messages:
                t = m.topic.name
                e = res.entries.add(message_id=m.system_properties.message_id)
                if t not in self.topics:
                    e.status.CopyFrom(self._status(Code.TOPIC_NOT_FOUND, f"topic {t} not found"))
                    res.status.CopyFrom(e.status)
                    continue
                n, _ = self.topics[t]
                if m.system_properties.message_group:
                    qid = int(hashlib.sha256(m.system_properties.message_group.encode()).hexdigest(), 16) % n
                else:
                    qid = sum(len(self.queues[(t, i)]) for i in range(n)) % n
                q = self.queues[(t, qid)]
                stored = definition_pb2.Message()
                stored.CopyFrom(m)
                stored.system_properties.queue_id = qid
                stored.system_properties.queue_offset = len(q)
                q.append(stored)
                e.offset = len(q) - 1
                e.status.CopyFrom(self._status())
            self.lock.notify_all()
        return res

    def ReceiveMessage(self, request, context):
        self._called("ReceiveMessage")
        g, t, qid = request.group.name, request.message_queue.topic.name, request.message_queue.id
        poll = request.long_polling_timeout.seconds if request.HasField("long_polling_timeout") else 20
        remaining = context.time_remaining()
        if remaining is not None:
            poll = min(poll, max(0.0, remaining - 0.5))
        deadline = time.monotonic() + poll
        out = []
        with self.lock:
            while True:
                now = time.monotonic()
                busy = {(v[0], v[1], v[2], v[3]) for v in self.inflight.values() if v[4] > now}
                for off, m in enumerate(self.queues.get((t, qid), [])):
                    key = (g, t, qid, off)
                    if key in self.acked or key in busy:
                        continue
                    out.append((off, m))
                    if len(out) >= request.batch_size:
                        break
                if out or now >= deadline:
                    break
                self.lock.wait(min(0.1, deadline - now))
            msgs = []
            for off, m in out:
                handle = uuid.uuid4().hex
                self.inflight[handle] = (g, t, qid, off, time.monotonic() + request.invisible_duration.seconds)
                d = definition_pb2.Message()
                d.CopyFrom(m)
                sp = d.system_properties
                sp.receipt_handle = handle
                sp.body_encoding = Encoding.IDENTITY
                sp.body_digest.type = DigestType.MD5
                sp.body_digest.checksum = hashlib.md5(d.body).hexdigest().upper()
                sp.delivery_attempt = 1
                msgs.append(d)
        if msgs:
            yield service_pb2.ReceiveMessageResponse(status=self._status())
            for d in msgs:
                yield service_pb2.ReceiveMessageResponse(message=d)
        else:
            yield service_pb2.ReceiveMessageResponse(status=self._status(Code.MESSAGE_NOT_FOUND, "no new message"))

    def AckMessage(self, request, context):
        self._called("AckMessage")
        res = service_pb2.AckMessageResponse(status=self._status())
        with self.lock:
            for e in request.entries:
                r = res.entries.add(message_id=e.message_id, receipt_handle=e.receipt_handle)
                v = self.inflight.pop(e.receipt_handle, None)
                if v is None:
                    r.status.CopyFrom(self._status(Code.INVALID_RECEIPT_HANDLE, "unknown receipt handle"))
                    res.status.CopyFrom(r.status)
                else:
                    self.acked.add(v[:4])
                    r.status.CopyFrom(self._status())
        return res


def serve(telemetry_mode="full", port=0):
    broker = FakeBroker(telemetry_mode)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=[
        ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    service_pb2_grpc.add_MessagingServiceServicer_to_server(broker, server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    broker.addr = f"127.0.0.1:{port}"
    server.start()
    return broker, server
