//! Wire types and gRPC stubs of the RocketMQ 5 gRPC protocol (`apache.rocketmq.v2`),
//! generated from raftmq's own .proto files under `proto/apache/rocketmq/v2/`.
//!
//! The generated module keeps the protocol's package path:
//! [`rocketmq::v2`] holds the messages and enums, `rocketmq::v2::messaging_service_server`
//! the server trait and `rocketmq::v2::messaging_service_client` the client, so gRPC paths
//! are `/apache.rocketmq.v2.MessagingService/<Method>` exactly as the official clients
//! expect. Well-known types (`Timestamp`, `Duration`) are [`prost_types`].
//!
//! raftmq's own services live under [`raftmq`]: [`raftmq::raft::v1`] is the Raft
//! service between the members of a broker group (its payloads are `bytes::Bytes`),
//! [`raftmq::admin::v1`] the operator service (`AdminService`: topics, cluster status,
//! consumer group progress).

pub use prost;
pub use prost_types;
pub use tonic;

/// The `apache.*` protobuf package tree.
pub mod apache {
    /// The `apache.rocketmq.*` packages.
    pub mod rocketmq {
        /// Generated code for package `apache.rocketmq.v2`.
        #[allow(
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            missing_debug_implementations,
            missing_docs,
            rustdoc::all
        )]
        pub mod v2 {
            include!(concat!(env!("OUT_DIR"), "/apache.rocketmq.v2.rs"));

            pub use crate::encoded_message::EncodedMessage;
            pub use crate::pull_answer::PullMessageResponse;

            /// The content of a [`PullMessageResponse`] (written by hand, see
            /// [`crate::pull_answer`]).
            pub mod pull_message_response {
                pub use crate::pull_answer::Content;
            }
        }
    }
}

/// raftmq's own protobuf packages (internal and admin services).
pub mod raftmq {
    /// The `raftmq.admin.*` packages: the operator service on the client port.
    pub mod admin {
        /// Generated code for package `raftmq.admin.v1`: `admin_service_server`,
        /// `admin_service_client` and the request/response messages.
        #[allow(
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            missing_debug_implementations,
            missing_docs,
            rustdoc::all
        )]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/raftmq.admin.v1.rs"));
        }
    }

    /// The `raftmq.namesrv.*` packages: registration with, and reads of, a name server.
    pub mod namesrv {
        /// Generated code for package `raftmq.namesrv.v1`: `namesrv_service_server`,
        /// `namesrv_service_client` and the request/response messages.
        #[allow(
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            missing_debug_implementations,
            missing_docs,
            rustdoc::all
        )]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/raftmq.namesrv.v1.rs"));
        }
    }

    /// The `raftmq.raft.*` packages: Raft traffic inside a broker group.
    pub mod raft {
        /// Generated code for package `raftmq.raft.v1`: `raft_service_server`,
        /// `raft_service_client` and the request/response messages.
        #[allow(
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            missing_debug_implementations,
            missing_docs,
            rustdoc::all
        )]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/raftmq.raft.v1.rs"));
        }
    }
}

/// Short path to the generated `apache.rocketmq.v2` package.
pub use apache::rocketmq;

/// Encoded `FileDescriptorSet` of the `apache.rocketmq.v2` files (for gRPC reflection or
/// descriptor-level checks).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/apache.rocketmq.v2.bin"));

/// Encoded `FileDescriptorSet` of raftmq's own services (`raftmq.raft.v1`,
/// `raftmq.admin.v1`); kept apart from [`FILE_DESCRIPTOR_SET`] so that the client port
/// never advertises them.
pub const INTERNAL_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/raftmq.internal.bin"));

/// Largest HTTP/2 frame payload raftmq's bulk connections advertise they accept
/// (`SETTINGS_MAX_FRAME_SIZE`; the protocol's default is 16 KiB): the broker's client and
/// Raft ports, its channels to a group's leader and peers, and the client library's
/// channels. The name server's small route messages keep the default.
///
/// An HTTP/2 sender writes each DATA frame with its own `writev`. At 16 KiB a 1 MiB pull
/// answer or replication request took 64 of them, and on loopback each one also runs
/// the receiver's TCP path. At window 1024 (`raftmq-bench`) this limit took the leader
/// from about 12,400 `writev`s a second to 4,500, and each follower from 6,400 reads to
/// 1,000 (docs/BENCHMARKS.md). Peers that keep the default get 16 KiB frames from us, as
/// the protocol requires.
pub const H2_MAX_FRAME_BYTES: u32 = 256 * 1024;

pub mod codec;
pub mod digest;
pub mod encoded_message;
pub mod names;
pub mod pull_answer;
pub mod route_headers;
pub mod send_request;
pub mod settings;
pub mod wire_fields;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod admin_tests {
    use prost::Message as _;

    use crate::raftmq::admin::v1 as admin;

    #[test]
    fn admin_service_is_generated_and_kept_off_the_client_descriptor_set() {
        assert_eq!(
            admin::admin_service_server::SERVICE_NAME,
            "raftmq.admin.v1.AdminService"
        );
        let internal =
            prost_types::FileDescriptorSet::decode(crate::INTERNAL_FILE_DESCRIPTOR_SET).expect("fds");
        let service = internal
            .file
            .iter()
            .flat_map(|f| f.service.iter())
            .find(|s| s.name() == "AdminService")
            .expect("AdminService in the internal descriptor set");
        let mut methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        methods.sort_unstable();
        assert_eq!(
            methods,
            [
                "ClusterStatus",
                "CreateTopic",
                "DeleteTopic",
                "GroupProgress",
                "ListTopics",
                "QueryMessages",
                "UpdateTopic"
            ]
        );
        let public = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).expect("fds");
        assert!(public.file.iter().all(|f| f.package() != "raftmq.admin.v1"));
        // Optional fields keep presence: "no leader known" differs from leader 0.
        let status = admin::ClusterStatusResponse {
            leader_id: Some(0),
            ..Default::default()
        };
        let back = admin::ClusterStatusResponse::decode(status.encode_to_vec().as_slice()).expect("decode");
        assert_eq!(back.leader_id, Some(0));
        assert_eq!(back.commit_index, None);
    }
}
