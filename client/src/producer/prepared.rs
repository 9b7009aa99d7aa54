//! A send's checked messages and their ids, and the receipts of a stored send.

use std::time::SystemTime;

use bytes::BytesMut;
use raftmq_proto::send_request::EncodedSendRequest;

use crate::consumer::received::timestamp;
use crate::error::ClientError;
use crate::error::Result;
use crate::message::Message;
use crate::message::new_message_id;
use crate::route::MessageQueue;
use crate::route::TopicRoute;

use super::SendReceipt;
use super::attempt::Stored;
use super::select;
use super::select::Placement;
use super::wire;
use super::wire::Stamp;

/// Checked messages of one send, with their ids.
#[derive(Debug, Clone)]
pub(super) struct Prepared {
    pub topic: String,
    /// How its attempts choose their queue: by the message group (the sharding key) of
    /// an ordered send, else spread; a send with a selector sets the queue chosen.
    pub placement: Placement,
    pub messages: Vec<Message>,
    pub ids: Vec<String>,
}

impl Prepared {
    /// Checks `messages` ([`check_batch`]) and gives each an id.
    pub fn new(messages: Vec<Message>, max_size: usize) -> Result<Self> {
        check_batch(&messages, max_size)?;
        let topic = messages[0].topic.clone();
        let placement = match &messages[0].message_group {
            Some(key) => Placement::Key(key.clone()),
            None => Placement::Spread,
        };
        let ids = messages.iter().map(|_| new_message_id()).collect();
        Ok(Self {
            topic,
            placement,
            messages,
            ids,
        })
    }

    /// The request carrying the messages, `queue_id` in their system properties; all are
    /// born now (one clock read per request, not per message).
    pub fn request(&self, namespace: &str, queue_id: i32) -> EncodedSendRequest {
        let stamp = Stamp {
            namespace,
            queue_id,
            born: timestamp(SystemTime::now()),
            host: crate::rpc::host_name(),
        };
        let mut heads = BytesMut::with_capacity(self.messages.len() * wire::HEAD_BYTES);
        let messages = self
            .messages
            .iter()
            .zip(&self.ids)
            .map(|(m, id)| wire::encode(m, id, &stamp, &mut heads))
            .collect();
        EncodedSendRequest { messages }
    }

    /// Whether the producer chose the queue (and tells the broker so): for every send
    /// but one placed by its key, which goes where the broker's hash of the key puts it.
    pub fn client_queue(&self) -> bool {
        !matches!(self.placement, Placement::Key(_))
    }
}

/// Checks a batch before anything is sent: at least one message, each valid with a body
/// of at most `max_size` bytes, one topic, one message group (or none), and bodies of at
/// most `max_size` bytes in all.
pub fn check_batch(messages: &[Message], max_size: usize) -> Result<()> {
    let invalid = |s: String| Err(ClientError::InvalidArgument(s));
    let Some(first) = messages.first() else {
        return invalid("a batch needs at least one message".into());
    };
    for m in messages {
        m.validate(max_size)?;
        if m.topic != first.topic {
            return invalid(format!("a batch has one topic: {} and {}", first.topic, m.topic));
        }
        if m.message_group != first.message_group {
            return invalid("the messages of a batch share one message group (or none)".into());
        }
    }
    let total: usize = messages.iter().map(|m| m.body.len()).sum();
    if total > max_size {
        return invalid(format!(
            "the batch's bodies are {total} bytes, more than the limit of {max_size}"
        ));
    }
    Ok(())
}

/// How many broker groups have a writable queue in `route`.
pub(super) fn writable_groups(route: &TopicRoute) -> usize {
    let mut groups: Vec<&str> = route
        .queues
        .iter()
        .filter(|q| q.writable())
        .map(|q| q.broker.as_str())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups.len()
}

/// The receipts of `prepared`, stored on `queue`'s group.
pub(super) fn receipts(
    prepared: &Prepared,
    route: &TopicRoute,
    queue: &MessageQueue,
    stored: Stored,
    attempts: u32,
) -> Vec<SendReceipt> {
    // The producer chose the queue (and told the broker so), except for a message placed
    // by its key: it is where the broker's hash of its group puts it.
    let queue_id = Some(match &prepared.placement {
        Placement::Key(key) => {
            let queues = route.queues.iter().filter(|q| q.broker == queue.broker).count();
            select::broker_queue_id(key, queues)
        }
        Placement::Spread | Placement::Chosen(_) => queue.id,
    });
    prepared
        .ids
        .iter()
        .zip(stored.entries)
        .map(|(id, entry)| SendReceipt {
            message_id: id.clone(),
            topic: prepared.topic.clone(),
            broker: queue.broker.clone(),
            queue_id,
            offset: entry.offset,
            endpoint: stored.endpoint.clone(),
            attempts,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_checked_before_sending() {
        let m = |body: &str| Message::new("t", body.to_owned());
        check_batch(&[m("a"), m("bb")], 3).expect("3 bytes in all");
        let cases = [
            (vec![], "at least one"),
            (vec![m("a"), m("bbb")], "more than the limit of 3"),
            (vec![m("a"), Message::new("u", "b")], "one topic"),
            (vec![m("a"), m("b").with_message_group("k")], "message group"),
            (vec![m("")], "empty"),
            (vec![Message::new("", "x")], "topic is empty"),
        ];
        for (batch, why) in cases {
            let e = check_batch(&batch, 3).expect_err(why);
            assert!(matches!(e, ClientError::InvalidArgument(_)), "{e:?}");
            assert!(e.to_string().contains(why), "{e} vs {why}");
        }
    }
}
