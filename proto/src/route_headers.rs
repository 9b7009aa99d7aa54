//! The request header by which raftmq's own client asks QueryRoute for every address of a
//! broker group (leader first) instead of one address per queue. One definition for the
//! client and both servers that answer routes (broker, name server).

use tonic::metadata::MetadataMap;

/// `x-raftmq-endpoints: all`.
pub const ENDPOINTS_HEADER: &str = "x-raftmq-endpoints";

/// Whether the caller asked for every address of a group.
pub fn wants_all_addresses(meta: &MetadataMap) -> bool {
    meta.get(ENDPOINTS_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("all"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_all_asks_for_every_address() {
        let mut meta = MetadataMap::new();
        assert!(!wants_all_addresses(&meta));
        meta.insert(ENDPOINTS_HEADER, "ALL".parse().expect("value"));
        assert!(wants_all_addresses(&meta));
        meta.insert(ENDPOINTS_HEADER, "one".parse().expect("value"));
        assert!(!wants_all_addresses(&meta));
    }
}
