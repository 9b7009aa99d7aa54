//! Key encodings of the state machine's column families.
//!
//! Every key is built so that RocksDB's bytewise order is the order we scan in: names are
//! followed by a `0x00` separator and integers are big-endian. Names never contain `0x00`
//! (they are validated into [`TopicName`] / [`GroupName`] first), so the separator ends a
//! name unambiguously: all keys of topic `a` start with `a\0`, and no key of another topic
//! does, which also makes `[a\0, a\x01)` exactly topic `a`'s range.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `meta` | [`META_APPLIED`], [`META_MEMBERSHIP`], [`META_FORMAT`] | postcard |
//! | `topics` | topic | [`TopicRecord`](super::records::TopicRecord) |
//! | `queues` | topic `0x00` queue id (u32) | next offset (u64) |
//! | `cq` | topic `0x00` queue id (u32) first offset (u64) | a run of [`CqEntry`](super::records::CqEntry) encodings (`cq_runs`) |
//! | `offsets` | group `0x00` topic `0x00` queue id (u32) | [`OffsetRecord`](super::records::OffsetRecord) |
//! | `pop` | group `0x00` topic `0x00` queue id (u32) | [`PopState`](super::records::PopState) |

pub use raftmq_proto::names::GROUP_MAX_LEN;
pub use raftmq_proto::names::TOPIC_MAX_LEN;
use raftmq_proto::names::check_name;

/// `meta` key: the last applied log id.
pub const META_APPLIED: &[u8] = b"applied";
/// `meta` key: the last applied membership.
pub const META_MEMBERSHIP: &[u8] = b"membership";
/// `meta` key: the on-disk format version of this database.
pub const META_FORMAT: &[u8] = b"format";

/// Checks a topic name against RocketMQ's rules (`[A-Za-z0-9_%|-]`, 1..=127 bytes).
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    check_name("topic", name, TOPIC_MAX_LEN)
}

/// Checks a consumer group name against RocketMQ's rules (`[A-Za-z0-9_%|-]`, 1..=255 bytes).
pub fn validate_group_name(name: &str) -> Result<(), String> {
    check_name("group", name, GROUP_MAX_LEN)
}

/// A validated topic name: safe to use as a key component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicName<'a>(&'a str);

impl<'a> TopicName<'a> {
    pub fn new(name: &'a str) -> Result<Self, String> {
        validate_topic_name(name).map(|()| Self(name))
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// A validated consumer group name: safe to use as a key component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupName<'a>(&'a str);

impl<'a> GroupName<'a> {
    pub fn new(name: &'a str) -> Result<Self, String> {
        validate_group_name(name).map(|()| Self(name))
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// `topics` key.
pub fn topic_key(topic: TopicName<'_>) -> Vec<u8> {
    topic.0.as_bytes().to_vec()
}

/// The prefix of all `queues` and `cq` keys of a topic: topic `0x00`.
pub fn topic_prefix(topic: TopicName<'_>) -> Vec<u8> {
    prefix_with_room(topic, 0)
}

/// The topic prefix in a buffer with room for `extra` more bytes (one allocation per
/// key: a consume-queue row's key is written for every send).
fn prefix_with_room(topic: TopicName<'_>, extra: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.0.len() + 1 + extra);
    k.extend_from_slice(topic.0.as_bytes());
    k.push(0);
    k
}

/// `[start, end)` covering exactly the `queues` and `cq` keys of a topic.
pub fn topic_range(topic: TopicName<'_>) -> (Vec<u8>, Vec<u8>) {
    let start = topic_prefix(topic);
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last = 1;
    }
    (start, end)
}

/// `queues` key: topic `0x00` queue id.
pub fn queue_key(topic: TopicName<'_>, queue_id: u32) -> Vec<u8> {
    // Room for the offset that makes it a `cq` key.
    let mut k = prefix_with_room(topic, 4 + 8);
    k.extend_from_slice(&queue_id.to_be_bytes());
    k
}

/// `cq` key: topic `0x00` queue id, offset.
pub fn cq_key(topic: TopicName<'_>, queue_id: u32, offset: u64) -> Vec<u8> {
    let mut k = queue_key(topic, queue_id);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// The queue offset of a `cq` key of the queue whose `queue_key` is `queue_prefix`, or
/// `None` if the key belongs to another queue.
pub fn cq_key_offset(queue_prefix: &[u8], key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(queue_prefix)?;
    let bytes: [u8; 8] = rest.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// `offsets` key: group `0x00` topic `0x00` queue id.
pub fn offset_key(group: GroupName<'_>, topic: TopicName<'_>, queue_id: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(group.0.len() + topic.0.len() + 6);
    k.extend_from_slice(group.0.as_bytes());
    k.push(0);
    k.extend_from_slice(&queue_key(topic, queue_id));
    k
}

/// `pop` key: group `0x00` topic `0x00` queue id (the same shape as an `offsets` key).
pub fn pop_key(group: GroupName<'_>, topic: TopicName<'_>, queue_id: u32) -> Vec<u8> {
    offset_key(group, topic, queue_id)
}

/// Splits a `queues` key into topic and queue id.
pub fn split_queue_key(key: &[u8]) -> Option<(String, u32)> {
    let (rest, queue) = key.split_at_checked(key.len().checked_sub(4)?)?;
    let queue_id = u32::from_be_bytes(queue.try_into().ok()?);
    let topic = std::str::from_utf8(rest.strip_suffix(&[0])?).ok()?;
    Some((topic.to_owned(), queue_id))
}

/// Splits a `pop` (or `offsets`) key into group, topic and queue id.
pub fn split_pop_key(key: &[u8]) -> Option<(String, String, u32)> {
    let (rest, queue) = key.split_at_checked(key.len().checked_sub(4)?)?;
    let queue_id = u32::from_be_bytes(queue.try_into().ok()?);
    let rest = rest.strip_suffix(&[0])?;
    let sep = rest.iter().position(|b| *b == 0)?;
    let group = std::str::from_utf8(&rest[..sep]).ok()?;
    let topic = std::str::from_utf8(&rest[sep + 1..]).ok()?;
    Some((group.to_owned(), topic.to_owned(), queue_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TopicName<'_> {
        TopicName::new(name).expect("valid topic")
    }

    #[test]
    fn topic_names_follow_rocketmq_rules() {
        assert!(validate_topic_name("TopicTest_1%RETRY%|a-b").is_ok());
        assert!(validate_topic_name(&"a".repeat(127)).is_ok());
        assert!(validate_topic_name(&"a".repeat(128)).is_err());
        assert!(validate_topic_name("").is_err());
        for bad in ["a\0", "a\0b", "a b", "a/b", "a.b", "é", "a:b"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} must be refused");
            assert!(TopicName::new(bad).is_err());
        }
        assert!(validate_group_name(&"g".repeat(255)).is_ok());
        assert!(validate_group_name(&"g".repeat(256)).is_err());
        assert!(GroupName::new("g\0").is_err());
    }

    #[test]
    fn integers_are_big_endian_so_keys_sort_numerically() {
        let mut keys: Vec<Vec<u8>> = [(1, 256), (0, 1), (1, 2), (0, u64::MAX), (2, 0), (256, 0)]
            .iter()
            .map(|&(q, o)| cq_key(t("a"), q, o))
            .collect();
        keys.sort();
        let decoded: Vec<(u32, u64)> = keys
            .iter()
            .map(|k| {
                let q = u32::from_be_bytes(k[2..6].try_into().expect("4 bytes"));
                (q, cq_key_offset(&queue_key(t("a"), q), k).expect("same queue"))
            })
            .collect();
        assert_eq!(
            decoded,
            vec![(0, 1), (0, u64::MAX), (1, 2), (1, 256), (2, 0), (256, 0)]
        );
    }

    #[test]
    fn a_topic_range_holds_exactly_that_topic() {
        let (start, end) = topic_range(t("a"));
        let inside = |k: &[u8]| k >= start.as_slice() && k < end.as_slice();
        assert!(inside(&cq_key(t("a"), 0, 0)));
        assert!(inside(&cq_key(t("a"), u32::MAX, u64::MAX)));
        assert!(inside(&queue_key(t("a"), 7)));
        for other in ["ab", "a-", "a%", "A", "b", "a_b"] {
            assert!(!inside(&cq_key(t(other), 0, 0)), "{other}");
            assert!(!inside(&queue_key(t(other), u32::MAX)), "{other}");
        }
    }

    #[test]
    fn keys_of_distinct_names_never_collide() {
        // With names free of 0x00, the separator fixes where the name ends.
        assert_ne!(queue_key(t("a"), 0x6200_0000), queue_key(t("ab"), 0));
        assert!(!cq_key(t("ab"), 0, 0).starts_with(&topic_prefix(t("a"))));
        let g = |s| GroupName::new(s).expect("valid group");
        assert_ne!(offset_key(g("g"), t("ab"), 1), offset_key(g("g-a"), t("b"), 1));
        assert_ne!(offset_key(g("g"), t("a"), 1), offset_key(g("ga"), t("a"), 1));
    }

    #[test]
    fn pop_keys_split_back_into_their_parts() {
        let g = GroupName::new("group-1").expect("valid group");
        let k = pop_key(g, t("topic_a"), 0x0100_0007);
        assert_eq!(
            split_pop_key(&k),
            Some(("group-1".into(), "topic_a".into(), 0x0100_0007))
        );
        assert_eq!(split_pop_key(b"ab"), None);
        assert_eq!(split_pop_key(b"nosep\0\0\0\0\x01"), None);
    }

    #[test]
    fn queue_keys_split_back_into_their_parts() {
        let k = queue_key(t("topic_a"), 0x0100_0007);
        assert_eq!(split_queue_key(&k), Some(("topic_a".into(), 0x0100_0007)));
        assert_eq!(split_queue_key(b"ab"), None);
        assert_eq!(split_queue_key(b"nosep\0\0\0\x01"), None);
    }

    #[test]
    fn cq_key_offset_refuses_other_queues() {
        let prefix = queue_key(t("a"), 1);
        assert_eq!(cq_key_offset(&prefix, &cq_key(t("a"), 1, 42)), Some(42));
        assert_eq!(cq_key_offset(&prefix, &cq_key(t("a"), 2, 42)), None);
        assert_eq!(cq_key_offset(&prefix, &queue_key(t("a"), 1)), None);
    }
}
