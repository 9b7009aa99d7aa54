//! Receipt handles: the opaque string a consumer gets with a popped message and returns to
//! acknowledge it or change its invisibility. It names one delivery:
//! `r1.<queue id>.<queue offset>.<attempt>` (hex numbers). A handle of an earlier delivery
//! of the same message no longer counts (the state machine checks the attempt).

use crate::command::Receipt;
use crate::error::BrokerError;
use crate::error::InvalidCode;

const PREFIX: &str = "r1";

/// The handle of a delivery.
pub fn encode(r: &Receipt) -> String {
    format!("{PREFIX}.{:x}.{:x}.{:x}", r.queue_id, r.offset, r.attempt)
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
    let mut next = || parts.next().ok_or_else(bad);
    let queue_id = u32::from_str_radix(next()?, 16).map_err(|_| bad())?;
    let offset = u64::from_str_radix(next()?, 16).map_err(|_| bad())?;
    let attempt = u32::from_str_radix(next()?, 16).map_err(|_| bad())?;
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Receipt {
        queue_id,
        offset,
        attempt,
    })
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
        };
        assert_eq!(decode(&encode(&r)).expect("valid"), r);
        for bad in [
            "",
            "r1",
            "r1.1.2",
            "r1.1.2.3.4",
            "r2.1.2.3",
            "r1.x.2.3",
            "r1.-1.2.3",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
