//! Receipt handles: the opaque string a consumer gets with a popped message and returns to
//! acknowledge it, change its invisibility or forward it to the dead-letter queue. It names
//! one delivery: `r2.<queue id>.<queue offset>.<attempt>.<topic created at>` (hex numbers;
//! the last is the creation index of the topic incarnation the message was popped from). A
//! handle of an earlier delivery of the same message, or of an earlier incarnation of the
//! topic, no longer counts (the state machine checks both). Handles of the older `r1` form
//! (without the incarnation) are refused as invalid.

use crate::command::Receipt;
use crate::error::BrokerError;
use crate::error::InvalidCode;

const PREFIX: &str = "r2";

/// The handle of a delivery.
pub fn encode(r: &Receipt) -> String {
    format!(
        "{PREFIX}.{:x}.{:x}.{:x}.{:x}",
        r.queue_id, r.offset, r.attempt, r.topic_created_at
    )
}

/// Parses a handle; anything else is `INVALID_RECEIPT_HANDLE`.
pub fn decode(handle: &str) -> Result<Receipt, BrokerError> {
    let bad = || {
        BrokerError::invalid(
            InvalidCode::InvalidReceiptHandle,
            format!("invalid receipt handle {handle:?}"),
        )
    };
    let mut parts = handle.split('.');
    if parts.next() != Some(PREFIX) {
        return Err(bad());
    }
    let mut next = || parts.next().and_then(hex).ok_or_else(bad);
    let queue_id = u32::try_from(next()?).map_err(|_| bad())?;
    let offset = next()?;
    let attempt = u32::try_from(next()?).map_err(|_| bad())?;
    let topic_created_at = next()?;
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Receipt {
        queue_id,
        offset,
        attempt,
        topic_created_at,
    })
}

/// A hex number of hex digits only (no sign, no prefix).
fn hex(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_roundtrip_and_garbage_is_refused() {
        let r = Receipt {
            queue_id: 7,
            offset: u64::MAX,
            attempt: 3,
            topic_created_at: 0x2a,
        };
        assert_eq!(encode(&r), "r2.7.ffffffffffffffff.3.2a");
        assert_eq!(decode(&encode(&r)).expect("valid"), r);
        for bad in [
            "",
            "r2",
            "r2.1.2.3",
            "r2.1.2.3.4.5",
            "r2.1.2.3.",
            "r2.x.2.3.4",
            "r2.-1.2.3.4",
            "r2.1.2.3.+4",
            "r2.1.2.3.10000000000000000",
            "r2.100000000.2.3.4",
            "r3.1.2.3.4",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn handles_without_the_topic_incarnation_are_refused() {
        for old in ["r1.1.2.3", "r1.1.2.3.4"] {
            match decode(old) {
                Err(BrokerError::Invalid { code, .. }) => assert_eq!(code, InvalidCode::InvalidReceiptHandle),
                other => panic!("{old:?}: {other:?}"),
            }
        }
    }
}
