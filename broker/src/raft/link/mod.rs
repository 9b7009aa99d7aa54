//! The replication link: the pipelined AppendEntries stream from a leader to one follower,
//! carried in plain frames over a TCP connection of its own on the follower's Raft port,
//! instead of as a gRPC stream. Everything else between members (heartbeats, votes,
//! snapshots, leader transfers) stays on the gRPC `RaftService`.
//!
//! Why: replication is most of the bytes a leader sends. Over HTTP/2 each request went
//! through tonic's encoder, h2's framing and flow control and a connection task of its
//! own; a profile of the leader at full load put 13 % of its samples in HTTP/2 client
//! code on these connections (docs/BENCHMARKS.md). A link writes a
//! request with one vectored write of the buffers it is made of (the commands are not
//! copied) and reads answers in the task that waits for them.
//!
//! # The protocol
//!
//! - The leader connects and sends [`frame::MAGIC`] (8 bytes; the first, `0xA7`, tells the
//!   port's listener a link from an HTTP/2 connection), then a `Hello` frame: postcard of
//!   the payload format of its build, the broker group and the node id it wants.
//! - The follower checks them as it checks a gRPC call's metadata. If they are wrong, it
//!   sends a `Refuse` frame (a gRPC status code and message, e.g. `FAILED_PRECONDITION`)
//!   and closes; otherwise an empty `Accept` frame.
//! - Then the leader sends `Append` frames (a protobuf `AppendRequest`, the same message
//!   as the unary `AppendEntries` call carries) without waiting, and the follower answers
//!   each with an `Answer` frame (postcard of openraft's `StreamAppendResult`), in order.
//!   After a refusal (conflict, higher vote) it sends nothing more. An append that does
//!   not decode ends the link with `Refuse(INVALID_ARGUMENT)` after the answers to the
//!   appends before it; a stopped Raft with `Refuse(UNAVAILABLE)`.
//! - The leader half-closes the connection when openraft's input ends; the follower
//!   answers what it received and closes its side.
//!
//! Every frame is a 9-byte header (kind, body length, CRC32C of the body) and the body;
//! a frame that is too large, of an unknown kind or whose checksum fails breaks the link.
//! Both ends set TCP keep-alive from the network's keep-alive interval, so a peer that
//! vanishes without closing breaks the link even while it is idle.

pub mod dial;
pub mod frame;
pub mod io;
pub mod listener;
mod serve;

pub use serve::LinkService;
