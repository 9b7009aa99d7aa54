//! Runs the `raftmq` binary against an in-process mock broker (AdminService and
//! MessagingService on a loopback port chosen at run time) and checks what it sends,
//! prints and exits with.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::process::Output;
use std::sync::{Arc, Mutex};

use raftmq_proto::raftmq::admin::v1::admin_service_server::{AdminService, AdminServiceServer};
use raftmq_proto::raftmq::admin::v1::*;
use raftmq_proto::rocketmq::v2 as mq;
use raftmq_proto::rocketmq::v2::messaging_service_server::{MessagingService, MessagingServiceServer};
use tonic::codegen::tokio_stream::{self, Stream};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
struct State {
    topics: BTreeMap<String, TopicSpec>,
    updates: Vec<TopicSpec>,
    sent: Vec<mq::Message>,
    receives: Vec<(mq::ReceiveMessageRequest, Option<String>)>,
    acks: Vec<mq::AckMessageEntry>,
}

#[derive(Debug, Clone, Default)]
struct Mock(Arc<Mutex<State>>);

impl Mock {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().expect("mock state lock")
    }
}

#[tonic::async_trait]
impl AdminService for Mock {
    async fn create_topic(
        &self,
        r: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        let spec = r
            .into_inner()
            .topic
            .ok_or_else(|| Status::invalid_argument("no topic"))?;
        let mut st = self.state();
        if st.topics.contains_key(&spec.name) {
            return Err(Status::already_exists(format!("topic {} exists", spec.name)));
        }
        st.topics.insert(spec.name.clone(), spec);
        Ok(Response::new(CreateTopicResponse {}))
    }

    async fn update_topic(
        &self,
        r: Request<UpdateTopicRequest>,
    ) -> Result<Response<UpdateTopicResponse>, Status> {
        let spec = r
            .into_inner()
            .topic
            .ok_or_else(|| Status::invalid_argument("no topic"))?;
        let mut st = self.state();
        st.updates.push(spec.clone());
        st.topics.insert(spec.name.clone(), spec);
        Ok(Response::new(UpdateTopicResponse {}))
    }

    async fn delete_topic(
        &self,
        r: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        let name = r.into_inner().name;
        match self.state().topics.remove(&name) {
            Some(_) => Ok(Response::new(DeleteTopicResponse {})),
            None => Err(Status::not_found(format!("topic {name} does not exist"))),
        }
    }

    async fn list_topics(
        &self,
        _: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        let topics = self
            .state()
            .topics
            .values()
            .map(|s| TopicInfo {
                spec: Some(s.clone()),
                queues: (0..s.queues)
                    .map(|q| QueueInfo {
                        queue_id: q,
                        max_offset: u64::from(q) * 10,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    async fn cluster_status(
        &self,
        _: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        Ok(Response::new(ClusterStatusResponse {
            group: "broker-a".into(),
            node_id: 2,
            leader_id: None,
            term: 7,
            commit_index: Some(100),
            applied_index: Some(99),
            last_log_index: 101,
            members: vec![Member {
                id: 2,
                raft_addr: "127.0.0.1:9002".into(),
                client_addr: "127.0.0.1:8082".into(),
                role: "follower".into(),
                voter: true,
                matched_index: None,
                lag: None,
            }],
            last_quorum_acked_ms_ago: None,
        }))
    }

    async fn group_progress(
        &self,
        r: Request<GroupProgressRequest>,
    ) -> Result<Response<GroupProgressResponse>, Status> {
        let r = r.into_inner();
        if r.group != "g1" {
            return Err(Status::not_found(format!("group {} does not exist", r.group)));
        }
        Ok(Response::new(GroupProgressResponse {
            queues: vec![QueueProgress {
                topic: r.topic,
                queue_id: 0,
                broker_offset: 10,
                consumer_offset: Some(4),
                lag: 6,
                inflight: 1,
            }],
        }))
    }

    async fn query_messages(
        &self,
        r: Request<QueryMessagesRequest>,
    ) -> Result<Response<QueryMessagesResponse>, Status> {
        let r = r.into_inner();
        let Some(query_messages_request::By::Key(key)) = r.by else {
            return Err(Status::invalid_argument("this mock answers keys only"));
        };
        let messages = (0..r.max.min(2))
            .map(|i| FoundMessage {
                message_id: format!("id-{i}"),
                topic: r.topic.clone(),
                queue_id: i,
                queue_offset: 40 + u64::from(i),
                keys: vec![key.clone()],
                body: b"hello".to_vec().into(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(QueryMessagesResponse {
            messages,
            indexed_through: 12,
        }))
    }
}

fn ok() -> Option<mq::Status> {
    Some(mq::Status {
        code: mq::Code::Ok as i32,
        message: "OK".into(),
    })
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl MessagingService for Mock {
    type ReceiveMessageStream = BoxStream<mq::ReceiveMessageResponse>;
    type PullMessageStream = BoxStream<mq::PullMessageResponse>;
    type TelemetryStream = BoxStream<mq::TelemetryCommand>;

    async fn send_message(
        &self,
        r: Request<mq::SendMessageRequest>,
    ) -> Result<Response<mq::SendMessageResponse>, Status> {
        let mut st = self.state();
        let mut entries = Vec::new();
        for m in r.into_inner().messages {
            let topic = m.topic.clone().unwrap_or_default().name;
            if !st.topics.contains_key(&topic) {
                let status = mq::Status {
                    code: mq::Code::TopicNotFound as i32,
                    message: format!("no topic {topic}"),
                };
                return Ok(Response::new(mq::SendMessageResponse {
                    status: Some(status.clone()),
                    entries: vec![mq::SendResultEntry {
                        status: Some(status),
                        ..Default::default()
                    }],
                }));
            }
            let id = m.system_properties.clone().unwrap_or_default().message_id;
            st.sent.push(m);
            entries.push(mq::SendResultEntry {
                status: ok(),
                message_id: id,
                offset: i64::try_from(st.sent.len()).unwrap_or(0) - 1,
                ..Default::default()
            });
        }
        Ok(Response::new(mq::SendMessageResponse {
            status: ok(),
            entries,
        }))
    }

    async fn receive_message(
        &self,
        r: Request<mq::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        let timeout = r
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let req = r.into_inner();
        let mut st = self.state();
        st.receives.push((req, timeout));
        let items: Vec<Result<mq::ReceiveMessageResponse, Status>> = st
            .sent
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut m = m.clone();
                if let Some(p) = m.system_properties.as_mut() {
                    p.receipt_handle = Some(format!("handle-{i}"));
                    p.queue_offset = Some(i64::try_from(i).unwrap_or(0));
                    p.delivery_attempt = Some(1);
                }
                Ok(mq::ReceiveMessageResponse {
                    content: Some(mq::receive_message_response::Content::Message(m)),
                })
            })
            .chain(std::iter::once(Ok(mq::ReceiveMessageResponse {
                content: Some(mq::receive_message_response::Content::Status(
                    if st.sent.is_empty() {
                        mq::Status {
                            code: mq::Code::MessageNotFound as i32,
                            message: "no new message".into(),
                        }
                    } else {
                        mq::Status {
                            code: mq::Code::Ok as i32,
                            message: "OK".into(),
                        }
                    },
                )),
            })))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn ack_message(
        &self,
        r: Request<mq::AckMessageRequest>,
    ) -> Result<Response<mq::AckMessageResponse>, Status> {
        let r = r.into_inner();
        let entries = r
            .entries
            .iter()
            .map(|e| mq::AckMessageResultEntry {
                message_id: e.message_id.clone(),
                receipt_handle: e.receipt_handle.clone(),
                status: ok(),
            })
            .collect();
        self.state().acks.extend(r.entries);
        Ok(Response::new(mq::AckMessageResponse {
            status: ok(),
            entries,
        }))
    }

    async fn pull_message(
        &self,
        _: Request<mq::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, Status> {
        Err(Status::unimplemented("pull_message"))
    }

    async fn telemetry(
        &self,
        _: Request<tonic::Streaming<mq::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        Err(Status::unimplemented("telemetry"))
    }

    async fn query_route(
        &self,
        _: Request<mq::QueryRouteRequest>,
    ) -> Result<Response<mq::QueryRouteResponse>, Status> {
        Err(Status::unimplemented("query_route"))
    }
    async fn heartbeat(
        &self,
        _: Request<mq::HeartbeatRequest>,
    ) -> Result<Response<mq::HeartbeatResponse>, Status> {
        Err(Status::unimplemented("heartbeat"))
    }
    async fn query_assignment(
        &self,
        _: Request<mq::QueryAssignmentRequest>,
    ) -> Result<Response<mq::QueryAssignmentResponse>, Status> {
        Err(Status::unimplemented("query_assignment"))
    }
    async fn forward_message_to_dead_letter_queue(
        &self,
        _: Request<mq::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<mq::ForwardMessageToDeadLetterQueueResponse>, Status> {
        Err(Status::unimplemented("forward_message_to_dead_letter_queue"))
    }
    async fn update_offset(
        &self,
        _: Request<mq::UpdateOffsetRequest>,
    ) -> Result<Response<mq::UpdateOffsetResponse>, Status> {
        Err(Status::unimplemented("update_offset"))
    }
    async fn get_offset(
        &self,
        _: Request<mq::GetOffsetRequest>,
    ) -> Result<Response<mq::GetOffsetResponse>, Status> {
        Err(Status::unimplemented("get_offset"))
    }
    async fn query_offset(
        &self,
        _: Request<mq::QueryOffsetRequest>,
    ) -> Result<Response<mq::QueryOffsetResponse>, Status> {
        Err(Status::unimplemented("query_offset"))
    }
    async fn end_transaction(
        &self,
        _: Request<mq::EndTransactionRequest>,
    ) -> Result<Response<mq::EndTransactionResponse>, Status> {
        Err(Status::unimplemented("end_transaction"))
    }
    async fn notify_client_termination(
        &self,
        _: Request<mq::NotifyClientTerminationRequest>,
    ) -> Result<Response<mq::NotifyClientTerminationResponse>, Status> {
        Err(Status::unimplemented("notify_client_termination"))
    }
    async fn change_invisible_duration(
        &self,
        _: Request<mq::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<mq::ChangeInvisibleDurationResponse>, Status> {
        Err(Status::unimplemented("change_invisible_duration"))
    }
    async fn recall_message(
        &self,
        _: Request<mq::RecallMessageRequest>,
    ) -> Result<Response<mq::RecallMessageResponse>, Status> {
        Err(Status::unimplemented("recall_message"))
    }
    async fn sync_lite_subscription(
        &self,
        _: Request<mq::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<mq::SyncLiteSubscriptionResponse>, Status> {
        Err(Status::unimplemented("sync_lite_subscription"))
    }
}

/// Starts the mock on a free loopback port; it stops with the test's runtime.
async fn start() -> (String, Mock) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    let mock = Mock::default();
    let server = Server::builder()
        .add_service(AdminServiceServer::new(mock.clone()))
        .add_service(MessagingServiceServer::new(mock.clone()))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    (addr, mock)
}

/// Runs `raftmq --server <servers> <args>`.
async fn raftmq(servers: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_raftmq"))
        .env_remove("RAFTMQ_SERVER")
        .args(["--server", servers, "--timeout-secs", "5"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run raftmq")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_commands_and_failover_to_the_next_server() {
    let (addr, mock) = start().await;
    // Nothing listens on port 1: the CLI must move on to the mock.
    let servers = format!("127.0.0.1:1,{addr}");

    let out = raftmq(
        &servers,
        &["topic", "create", "orders", "--queues", "4", "--kind", "fifo"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let spec = mock.state().topics.get("orders").cloned().expect("created");
    assert_eq!(spec.queues, 4);
    assert_eq!(spec.kind, MessageKind::Fifo as i32);
    assert_eq!(spec.permission, Permission::ReadWrite as i32);

    // A gRPC error is an answer: exit 1, one line naming the code.
    let out = raftmq(&servers, &["topic", "create", "orders"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("ALREADY_EXISTS") && err.contains("topic orders exists"),
        "{err}"
    );

    // Update keeps what is not given.
    let out = raftmq(&servers, &["topic", "update", "orders", "--perm", "r"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let update = mock.state().updates.last().cloned().expect("update sent");
    assert_eq!(
        update,
        TopicSpec {
            name: "orders".into(),
            queues: 4,
            permission: Permission::Read as i32,
            kind: MessageKind::Fifo as i32
        }
    );
    let out = raftmq(&servers, &["topic", "update", "nope", "--queues", "2"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));

    let out = raftmq(&servers, &["topic", "list", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v[0]["name"], "orders");
    assert_eq!(v[0]["perm"], "r");
    assert_eq!(v[0]["queue_offsets"][3]["max_offset"], 30);

    let out = raftmq(&servers, &["topic", "list"]).await;
    assert!(stdout(&out).starts_with("NAME "), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("orders       4  fifo  r         60"),
        "{}",
        stdout(&out)
    );

    let out = raftmq(&servers, &["topic", "delete", "orders"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = raftmq(&servers, &["topic", "delete", "orders"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_and_group_progress() {
    let (addr, _mock) = start().await;
    let out = raftmq(&addr, &["cluster", "status", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["group"], "broker-a");
    assert_eq!(v["node_id"], 2);
    assert_eq!(v["leader_id"], serde_json::Value::Null);
    assert_eq!(v["term"], 7);
    assert_eq!(v["commit_index"], 100);
    assert_eq!(v["applied_index"], 99);
    assert_eq!(v["last_log_index"], 101);
    assert_eq!(v["members"][0]["role"], "follower");
    assert_eq!(v["members"][0]["lag"], serde_json::Value::Null);

    let out = raftmq(&addr, &["cluster", "status"]).await;
    let text = stdout(&out);
    assert!(text.contains("leader:     none known"), "{text}");
    assert!(
        text.contains("*2  follower  yes    127.0.0.1:9002  127.0.0.1:8082"),
        "{text}"
    );

    let out = raftmq(&addr, &["group", "progress", "g1", "--topic", "orders", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["queues"][0]["topic"], "orders");
    assert_eq!(v["queues"][0]["consumer_offset"], 4);
    let out = raftmq(&addr, &["group", "progress", "g1"]).await;
    assert!(
        stdout(&out).contains("total lag 6, in flight 1"),
        "{}",
        stdout(&out)
    );
    let out = raftmq(&addr, &["group", "progress", "other"]).await;
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_by_key_prints_a_table_or_json_and_refusals_exit_1() {
    let (addr, _mock) = start().await;
    let out = raftmq(&addr, &["query", "--topic", "orders", "--key", "k7"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("MESSAGE ID"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    let out = raftmq(
        &addr,
        &[
            "query", "--topic", "orders", "--key", "k7", "--max", "1", "--json",
        ],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["messages"][0]["keys"][0], "k7");
    assert_eq!(v["messages"][0]["body"], "hello");
    assert_eq!(v["indexed_through"], 12);
    let out = raftmq(&addr, &["query", "--topic", "orders", "--id", "x"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("INVALID_ARGUMENT"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_receive_and_ack() {
    let (addr, mock) = start().await;
    mock.state().topics.insert(
        "t".into(),
        TopicSpec {
            name: "t".into(),
            queues: 4,
            permission: 0,
            kind: 0,
        },
    );

    let out = raftmq(
        &addr,
        &[
            "send", "--topic", "t", "--tag", "A", "--key", "k1", "--count", "3", "hi",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| l.starts_with("sent message_id="))
            .count(),
        3
    );
    {
        let st = mock.state();
        // Three distinct messages; the broker chooses their queues.
        let ids: std::collections::HashSet<String> = st
            .sent
            .iter()
            .map(|m| m.system_properties.clone().unwrap_or_default().message_id)
            .collect();
        assert_eq!(ids.len(), 3);
        let p = st.sent[0].system_properties.clone().expect("properties");
        assert_eq!(p.tag.as_deref(), Some("A"));
        assert_eq!(p.keys, vec!["k1".to_string()]);
        assert_eq!(p.message_type, mq::MessageType::Normal as i32);
        assert_eq!(
            p.body_digest.map(|d| d.checksum).as_deref(),
            Some("49F68A5C8493EC2C0BF489821C21FC3B")
        );
        assert_eq!(p.message_id.len(), 32);
    }

    // FIFO: one group, one queue.
    let out = raftmq(
        &addr,
        &[
            "send",
            "--topic",
            "t",
            "--message-group",
            "g",
            "--count",
            "2",
            "x",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    {
        let st = mock.state();
        let fifo: Vec<_> = st.sent[3..]
            .iter()
            .map(|m| m.system_properties.clone().unwrap_or_default())
            .collect();
        assert_eq!(fifo[0].queue_id, fifo[1].queue_id);
        assert_eq!(fifo[0].message_type, mq::MessageType::Fifo as i32);
    }

    // An unknown topic: the broker's code is printed and the exit code is 1.
    let out = raftmq(&addr, &["send", "--topic", "missing", "x"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("TOPIC_NOT_FOUND (40402)"),
        "{}",
        stderr(&out)
    );

    let out = raftmq(
        &addr,
        &[
            "receive",
            "--topic",
            "t",
            "--group",
            "g1",
            "--max",
            "8",
            "--wait-secs",
            "2",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("message_id=")).count(),
        5,
        "{text}"
    );
    assert!(text.contains("tag=A keys=k1"), "{text}");
    assert!(text.contains("  body: hi"), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("acked message_id="))
            .count(),
        5,
        "{text}"
    );
    let st = mock.state();
    let (req, timeout) = st.receives.last().cloned().expect("receive");
    assert_eq!(req.group.map(|g| g.name).as_deref(), Some("g1"));
    assert_eq!(req.batch_size, 8);
    assert_eq!(req.message_queue.as_ref().map(|q| q.id), Some(-1));
    assert_eq!(req.long_polling_timeout.map(|d| d.seconds), Some(2));
    assert_eq!(req.invisible_duration.map(|d| d.seconds), Some(30));
    assert!(timeout.is_some(), "receive carries a deadline");
    assert_eq!(st.acks.len(), 5);
    assert_eq!(st.acks[0].receipt_handle, "handle-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_without_messages_and_without_ack() {
    let (addr, mock) = start().await;
    let out = raftmq(
        &addr,
        &["receive", "--topic", "t", "--group", "g1", "--wait-secs", "1"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("no messages within 1s"), "{}", stdout(&out));

    mock.state().sent.push(mq::Message::default());
    let out = raftmq(&addr, &["receive", "--topic", "t", "--group", "g1", "--no-ack"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(mock.state().acks.is_empty());
}

#[tokio::test]
async fn no_reachable_server_is_one_clear_line() {
    let out = raftmq("127.0.0.1:1", &["cluster", "status"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("raftmq: no server reachable (127.0.0.1:1:"),
        "{err}"
    );
}
