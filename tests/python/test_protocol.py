"""What the official clients need from QueryRoute, Telemetry and Heartbeat, checked
with hand-built requests on every node (see CLIENT_NOTES.md and DESIGN.md)."""

import pytest
from rocketmq.grpc_protocol import (ClientType, Code, MessageType, Permission,
                                    definition_pb2, service_pb2)

import rmq


@pytest.fixture(scope="module")
def topics(cluster):
    normal = rmq.unique("proto_normal")
    fifo = rmq.unique("proto_fifo")
    rmq.create_topic(cluster, normal, queues=8)
    rmq.create_topic(cluster, fifo, queues=4, kind="fifo")
    return {"normal": normal, "fifo": fifo}


@pytest.mark.timeout(60)
def test_query_route_on_every_node(cluster, topics):
    for addr in cluster.client_addrs(cluster.live_ids()):
        with rmq.Raw(addr) as raw:
            for kind, want_type, want_queues in (("normal", MessageType.NORMAL, 8), ("fifo", MessageType.FIFO, 4)):
                res = raw.query_route(topics[kind])
                assert res.status.code == Code.OK, f"{addr}: {res.status}"
                qs = res.message_queues
                print(f"\n{addr} {kind}: {len(qs)} queues, endpoints "
                      f"{sorted({(a.host, a.port) for q in qs for a in q.broker.endpoints.addresses})}, "
                      f"scheme {qs[0].broker.endpoints.scheme if qs else None}")
                assert len(qs) == want_queues
                assert 0 in {q.id for q in qs}, "a queue with id 0 must exist"
                for q in qs:
                    assert q.topic.name == topics[kind]
                    assert q.broker.id == 0, "the client only uses queues of broker id 0 (master)"
                    assert q.permission == Permission.READ_WRITE
                    assert q.accept_message_types, "accept_message_types must not be empty"
                    assert MessageType.MESSAGE_TYPE_UNSPECIFIED not in q.accept_message_types
                    assert want_type in q.accept_message_types
                    assert len(q.broker.endpoints.addresses) == 1, (
                        "a queue's broker endpoints must be ONE address: the Python client makes "
                        "them one gRPC target ipv4:a,b,c whose :authority 'a,b,c' an h2 (tonic) "
                        "server resets with PROTOCOL_ERROR, so every Send/Receive/Ack fails "
                        "(h2 0.4 src/server.rs 'malformed authority'; see CLIENT_NOTES.md)")
                    assert q.broker.name


def producer_settings(addr):
    s = definition_pb2.Settings()
    s.client_type = ClientType.PRODUCER
    host, port = addr.rsplit(":", 1)
    s.access_point.scheme = definition_pb2.AddressScheme.IPv4
    s.access_point.addresses.add(host=host, port=int(port))
    s.request_timeout.seconds = 3
    s.publishing.max_body_size = 128 * 1024 * 1024
    s.publishing.validate_message_type = True
    s.user_agent.language = definition_pb2.Language.PYTHON
    s.user_agent.version = "5.1.2"
    return s


def consumer_settings(addr, group, topic):
    s = producer_settings(addr)
    s.ClearField("publishing")
    s.client_type = ClientType.SIMPLE_CONSUMER
    s.subscription.group.name = group
    e = s.subscription.subscriptions.add()
    e.topic.name = topic
    e.expression.type = definition_pb2.FilterType.TAG
    e.expression.expression = "*"
    s.subscription.long_polling_timeout.seconds = 20
    return s


@pytest.mark.timeout(60)
def test_telemetry_settings_reply_for_a_producer(cluster, topics):
    """Python producer: Producer.reset_setting copies publishing.max_body_size from the
    reply; 0 there would make every later send fail client-side."""
    for addr in cluster.client_addrs(cluster.live_ids()):
        with rmq.Raw(addr) as raw:
            reply = raw.telemetry_settings(producer_settings(addr), wait_secs=5)
        print(f"\n{addr} producer settings reply: status {rmq.code_name(reply.status.code)}, "
              f"max_body_size {reply.settings.publishing.max_body_size}, "
              f"backoff {reply.settings.backoff_policy.WhichOneof('strategy')} "
              f"x{reply.settings.backoff_policy.max_attempts}")
        assert reply.HasField("status") and reply.status.code == Code.OK, reply.status
        assert reply.HasField("settings")
        s = reply.settings
        assert s.HasField("publishing")
        assert s.publishing.max_body_size >= 4 * 1024 * 1024
        assert s.HasField("backoff_policy") and s.backoff_policy.WhichOneof("strategy") == "exponential_backoff"
        assert s.backoff_policy.max_attempts >= 1


@pytest.mark.timeout(60)
def test_telemetry_settings_reply_for_a_consumer(cluster, topics):
    for addr in cluster.client_addrs(cluster.live_ids()):
        with rmq.Raw(addr) as raw:
            reply = raw.telemetry_settings(consumer_settings(addr, rmq.unique("tcg"), topics["normal"]), wait_secs=5)
        print(f"\n{addr} consumer settings reply: status {rmq.code_name(reply.status.code)}, "
              f"long_polling_timeout {reply.settings.subscription.long_polling_timeout.seconds}s, "
              f"backoff {reply.settings.backoff_policy.WhichOneof('strategy')} "
              f"x{reply.settings.backoff_policy.max_attempts}")
        assert reply.HasField("status") and reply.status.code == Code.OK, reply.status
        s = reply.settings
        assert s.HasField("subscription")
        assert s.HasField("backoff_policy") and s.backoff_policy.WhichOneof("strategy") == "customized_backoff"
        assert s.backoff_policy.max_attempts >= 1


@pytest.mark.timeout(60)
def test_heartbeat_and_termination(cluster):
    for addr in cluster.client_addrs(cluster.live_ids()):
        with rmq.Raw(addr) as raw:
            hb = raw.stub.Heartbeat(service_pb2.HeartbeatRequest(client_type=ClientType.PRODUCER),
                                    metadata=raw.metadata(), timeout=5)
            assert hb.status.code == Code.OK, hb.status
            req = service_pb2.HeartbeatRequest(client_type=ClientType.SIMPLE_CONSUMER)
            req.group.name = rmq.unique("hb_cg")
            hb = raw.stub.Heartbeat(req, metadata=raw.metadata(), timeout=5)
            assert hb.status.code == Code.OK, hb.status
            bye = raw.stub.NotifyClientTermination(service_pb2.NotifyClientTerminationRequest(),
                                                   metadata=raw.metadata(), timeout=5)
            assert bye.status.code == Code.OK, bye.status
