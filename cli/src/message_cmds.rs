//! `send` and `receive`: the RocketMQ 5 protocol (`apache.rocketmq.v2.MessagingService`),
//! spoken as a producer and as a simple consumer.

use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};
use raftmq_proto::prost_types;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use raftmq_proto::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, Code, Digest, DigestType, Encoding, FilterExpression, FilterType,
    Message, MessageQueue, MessageType, ReceiveMessageRequest, Resource, SendMessageRequest, Status,
    SystemProperties, receive_message_response,
};
use tonic::transport::Channel;

use crate::args::{ReceiveArgs, SendArgs};
use crate::connect::{Conn, host_name, request, rpc_error};

/// How much longer than the long poll the client waits for a receive to end.
const RECEIVE_GRACE: Duration = Duration::from_secs(5);

/// Queue id meaning "any queue of the topic in this broker group" in a receive: the
/// broker picks the queues, as RocketMQ's proxy does for simple consumers.
const ANY_QUEUE: i32 = -1;

pub async fn send(conn: &Conn, args: SendArgs) -> Result<()> {
    // The broker picks the queue (a message group's messages always land on one queue);
    // the reply names the offset in it.
    let channel = conn.channel().await?;
    let mut client = MessagingServiceClient::new(channel);
    let mut failed = false;
    for _ in 0..args.count {
        let message = build_message(&args);
        let message_id = message
            .system_properties
            .as_ref()
            .map(|p| p.message_id.clone())
            .unwrap_or_default();
        let resp = client
            .send_message(request(
                SendMessageRequest {
                    messages: vec![message],
                },
                conn.timeout,
            ))
            .await
            .map_err(rpc_error("SendMessage"))?
            .into_inner();
        // The entry's status is the message's outcome; the top-level one covers the call.
        let entry = resp.entries.first();
        let status = entry.and_then(|e| e.status.clone()).or(resp.status);
        match status {
            Some(s) if s.code == Code::Ok as i32 => {
                let entry = entry.cloned().unwrap_or_default();
                let id = if entry.message_id.is_empty() {
                    message_id
                } else {
                    entry.message_id
                };
                println!("sent message_id={id} offset={}", entry.offset);
            }
            other => {
                eprintln!(
                    "send failed: message_id={message_id} {}",
                    describe_status(other.as_ref())
                );
                failed = true;
                break;
            }
        }
    }
    if failed {
        bail!("send to topic {:?} failed", args.topic);
    }
    Ok(())
}

fn build_message(args: &SendArgs) -> Message {
    let body = args.body.as_bytes().to_vec();
    let message_type = if args.message_group.is_some() {
        MessageType::Fifo
    } else {
        MessageType::Normal
    };
    Message {
        topic: Some(resource(&args.topic)),
        user_properties: Default::default(),
        system_properties: Some(SystemProperties {
            tag: args.tag.clone(),
            keys: args.keys.clone(),
            message_id: raftmq_client::message::new_message_id(),
            body_digest: Some(Digest {
                r#type: DigestType::Md5 as i32,
                checksum: raftmq_proto::digest::md5_upper_hex(&body),
            }),
            body_encoding: Encoding::Identity as i32,
            message_type: message_type as i32,
            born_timestamp: Some(prost_types::Timestamp::from(SystemTime::now())),
            born_host: host_name().to_string(),
            message_group: args.message_group.clone(),
            ..Default::default()
        }),
        body: body.into(),
    }
}

fn resource(name: &str) -> Resource {
    Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

/// Upper-case hex MD5 of `body`, the digest the protocol carries.
/// A RocketMQ status as `CODE_NAME (number): message`.
fn describe_status(status: Option<&Status>) -> String {
    let Some(s) = status else {
        return "no status in the answer".to_string();
    };
    let name =
        Code::try_from(s.code).map_or_else(|_| "UNKNOWN_CODE".to_string(), |c| c.as_str_name().to_string());
    let message = s.message.replace(['\n', '\r'], " ");
    if message.is_empty() {
        format!("{name} ({})", s.code)
    } else {
        format!("{name} ({}): {message}", s.code)
    }
}

pub async fn receive(conn: &Conn, args: ReceiveArgs) -> Result<()> {
    let mut client = MessagingServiceClient::new(conn.channel().await?);
    let wait = Duration::from_secs(args.wait_secs);
    let req = ReceiveMessageRequest {
        group: Some(resource(&args.group)),
        message_queue: Some(MessageQueue {
            topic: Some(resource(&args.topic)),
            id: ANY_QUEUE,
            ..Default::default()
        }),
        filter_expression: Some(FilterExpression {
            r#type: FilterType::Tag as i32,
            expression: "*".to_string(),
        }),
        batch_size: i32::try_from(args.max).unwrap_or(i32::MAX),
        invisible_duration: Some(duration(Duration::from_secs(args.invisible_secs))),
        auto_renew: false,
        long_polling_timeout: Some(duration(wait)),
        attempt_id: Some(format!("{:032x}", rand::random::<u128>())),
    };
    let deadline = (wait + RECEIVE_GRACE).max(conn.timeout);
    let mut stream = client
        .receive_message(request(req, deadline))
        .await
        .map_err(rpc_error("ReceiveMessage"))?
        .into_inner();

    let mut received: Vec<Message> = Vec::new();
    let mut final_status: Option<Status> = None;
    while let Some(item) = stream.message().await.map_err(rpc_error("ReceiveMessage"))? {
        match item.content {
            Some(receive_message_response::Content::Message(m)) => {
                print_message(&m);
                received.push(m);
            }
            Some(receive_message_response::Content::Status(s)) => final_status = Some(s),
            Some(receive_message_response::Content::DeliveryTimestamp(_)) | None => {}
        }
    }
    let status_ok = match &final_status {
        Some(s) => s.code == Code::Ok as i32 || s.code == Code::MessageNotFound as i32,
        None => true,
    };
    if received.is_empty() && status_ok {
        println!("no messages within {}s", args.wait_secs);
    }

    let mut ack_failed = false;
    if !args.no_ack && !received.is_empty() {
        ack_failed = !ack(conn, &mut client, &args, &received).await?;
    }
    if !status_ok {
        bail!(
            "ReceiveMessage failed: {}",
            describe_status(final_status.as_ref())
        );
    }
    if ack_failed {
        bail!("some acknowledgements failed");
    }
    Ok(())
}

/// Acknowledges `messages`; prints one line per message. True when all succeeded.
async fn ack(
    conn: &Conn,
    client: &mut MessagingServiceClient<Channel>,
    args: &ReceiveArgs,
    messages: &[Message],
) -> Result<bool> {
    let entries: Vec<AckMessageEntry> = messages
        .iter()
        .filter_map(|m| m.system_properties.as_ref())
        .map(|p| AckMessageEntry {
            message_id: p.message_id.clone(),
            receipt_handle: p.receipt_handle.clone().unwrap_or_default(),
            lite_topic: None,
        })
        .collect();
    let req = AckMessageRequest {
        group: Some(resource(&args.group)),
        topic: Some(resource(&args.topic)),
        entries,
    };
    let resp = client
        .ack_message(request(req, conn.timeout))
        .await
        .map_err(rpc_error("AckMessage"))?
        .into_inner();
    if resp.entries.is_empty() {
        let ok = resp.status.as_ref().is_some_and(|s| s.code == Code::Ok as i32);
        println!("ack: {}", describe_status(resp.status.as_ref()));
        return Ok(ok);
    }
    let mut all_ok = true;
    for e in &resp.entries {
        let status = e.status.as_ref().or(resp.status.as_ref());
        if status.is_some_and(|s| s.code == Code::Ok as i32) {
            println!("acked message_id={}", e.message_id);
        } else {
            all_ok = false;
            println!(
                "ack failed message_id={} {}",
                e.message_id,
                describe_status(status)
            );
        }
    }
    Ok(all_ok)
}

fn print_message(m: &Message) {
    let p = m.system_properties.clone().unwrap_or_default();
    let offset = p.queue_offset.map_or_else(|| "-".to_string(), |o| o.to_string());
    let mut line = format!("message_id={} queue={} offset={offset}", p.message_id, p.queue_id);
    if let Some(tag) = &p.tag {
        line.push_str(&format!(" tag={tag}"));
    }
    if !p.keys.is_empty() {
        line.push_str(&format!(" keys={}", p.keys.join(",")));
    }
    if let Some(group) = &p.message_group {
        line.push_str(&format!(" message_group={group}"));
    }
    if let Some(attempt) = p.delivery_attempt {
        line.push_str(&format!(" attempt={attempt}"));
    }
    println!("{line}");
    println!("  body: {}", String::from_utf8_lossy(&m.body));
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn message_ids_are_32_upper_hex_and_unique() {
        let ids: Vec<String> = (0..1000)
            .map(|_| raftmq_client::message::new_message_id())
            .collect();
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.chars().all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
                "{id}"
            );
        }
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    }

    #[test]
    fn md5_digest_is_upper_hex() {
        let md5_hex = raftmq_proto::digest::md5_upper_hex;
        assert_eq!(md5_hex(b""), "D41D8CD98F00B204E9800998ECF8427E");
        assert_eq!(md5_hex(b"hello"), "5D41402ABC4B2A76B9719D911017C592");
    }

    #[test]
    fn built_message_carries_the_protocol_fields() {
        let args = SendArgs {
            topic: "t".into(),
            tag: Some("A".into()),
            keys: vec!["k".into()],
            message_group: Some("g".into()),
            count: 1,
            body: "hello".into(),
        };
        let m = build_message(&args);
        let p = m.system_properties.expect("properties");
        assert_eq!(p.message_type, MessageType::Fifo as i32);
        assert_eq!(p.body_encoding, Encoding::Identity as i32);
        assert_eq!(
            p.body_digest.map(|d| d.checksum).as_deref(),
            Some("5D41402ABC4B2A76B9719D911017C592")
        );
        assert_eq!(p.message_group.as_deref(), Some("g"));
        assert!(p.born_timestamp.is_some());
        assert_eq!(m.body, &b"hello"[..]);
    }

    #[test]
    fn statuses_are_described() {
        let s = Status {
            code: Code::TopicNotFound as i32,
            message: "no topic t".into(),
        };
        assert_eq!(describe_status(Some(&s)), "TOPIC_NOT_FOUND (40402): no topic t");
        assert_eq!(describe_status(None), "no status in the answer");
    }
}
