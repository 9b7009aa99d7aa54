//! The command line, as clap derive types.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// raftmq's command-line tool: administer topics, look at a broker group's Raft cluster
/// and consumer progress, send and receive messages.
#[derive(Debug, Parser)]
#[command(name = "raftmq", version)]
pub struct Cli {
    /// Broker addresses, comma-separated; tried in order until one answers.
    #[arg(
        long,
        global = true,
        env = "RAFTMQ_SERVER",
        default_value = "127.0.0.1:8081",
        value_delimiter = ','
    )]
    pub server: Vec<String>,

    /// Name server addresses, comma-separated; tried in order until one answers. Needed
    /// by `namesrv` and by `topic ... --groups`.
    #[arg(long, global = true, env = "RAFTMQ_NAMESRV", value_delimiter = ',')]
    pub namesrv: Vec<String>,

    /// Deadline of each call (and of each connection attempt), in seconds.
    #[arg(long, global = true, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, update, delete and list topics.
    #[command(subcommand)]
    Topic(TopicCmd),
    /// The broker group's Raft cluster.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Consumer groups.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Send messages (RocketMQ 5 protocol).
    Send(SendArgs),
    /// Receive messages as a simple consumer and acknowledge them (RocketMQ 5 protocol).
    Receive(ReceiveArgs),
    /// What the name server knows: broker groups and topic routes (needs --namesrv).
    #[command(subcommand)]
    Namesrv(NamesrvCmd),
    /// Find a topic's messages by message id or by key, newest first.
    Query(QueryArgs),
}

/// `--groups`: the broker groups a topic command goes to, found through the name server.
const GROUPS_HELP: &str = "Broker groups to run this on, comma-separated, or `all`; \
    found through the name server (needs --namesrv). Without it the command goes to --server";

#[derive(Debug, Subcommand)]
pub enum TopicCmd {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of queues.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
        queues: u32,
        /// Kind of messages the topic accepts.
        #[arg(long, value_enum, default_value_t = KindArg::Normal)]
        kind: KindArg,
        /// Permission: rw (read-write), r (read only), w (write only).
        #[arg(long, value_enum, default_value_t = PermArg::Rw)]
        perm: PermArg,
        #[arg(long, value_delimiter = ',', help = GROUPS_HELP)]
        groups: Option<Vec<String>>,
    },
    /// Change a topic; what is not given stays as it is.
    #[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["queues", "kind", "perm"])))]
    Update {
        /// Topic name.
        name: String,
        /// New number of queues.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        queues: Option<u32>,
        /// New kind of messages.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// New permission: rw, r or w.
        #[arg(long, value_enum)]
        perm: Option<PermArg>,
        #[arg(long, value_delimiter = ',', help = GROUPS_HELP)]
        groups: Option<Vec<String>>,
    },
    /// Delete a topic.
    Delete {
        /// Topic name.
        name: String,
        #[arg(long, value_delimiter = ',', help = GROUPS_HELP)]
        groups: Option<Vec<String>>,
    },
    /// List topics with their queues' max offsets.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, value_delimiter = ',', help = GROUPS_HELP)]
        groups: Option<Vec<String>>,
    },
}

impl TopicCmd {
    /// The `--groups` of the command, if given.
    pub fn groups(&self) -> Option<&[String]> {
        match self {
            TopicCmd::Create { groups, .. }
            | TopicCmd::Update { groups, .. }
            | TopicCmd::Delete { groups, .. }
            | TopicCmd::List { groups, .. } => groups.as_deref(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum NamesrvCmd {
    /// Every broker group with a live member: leader, term, topics and members.
    Groups {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Where a topic's queues are: each hosting group, its spec and its endpoints.
    Route {
        /// Topic name.
        topic: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Raft state of the broker group, as the answering node sees it.
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// A consumer group's offsets, lag and in-flight messages per queue.
    Progress {
        /// Consumer group.
        group: String,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Topic to send to.
    #[arg(long)]
    pub topic: String,
    /// Message tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Message key (repeatable).
    #[arg(long = "key")]
    pub keys: Vec<String>,
    /// Message group: makes the message FIFO, ordered within its group.
    #[arg(long)]
    pub message_group: Option<String>,
    /// Number of messages to send (each with the same body and its own id).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Message body (UTF-8 text).
    pub body: String,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("by").required(true).args(["id", "key"])))]
pub struct QueryArgs {
    /// Topic the messages were sent to.
    #[arg(long)]
    pub topic: String,
    /// Message id (as a send printed it).
    #[arg(long)]
    pub id: Option<String>,
    /// Message key.
    #[arg(long)]
    pub key: Option<String>,
    /// Most messages to show (the broker caps it, 64 by default).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max: u32,
    /// Only messages stored at or after this time (ms since the Unix epoch).
    #[arg(long, default_value_t = 0)]
    pub begin_ms: u64,
    /// Only messages stored at or before this time (ms since the Unix epoch).
    #[arg(long)]
    pub end_ms: Option<u64>,
    /// Print JSON (bodies included) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Topic to receive from.
    #[arg(long)]
    pub topic: String,
    /// Consumer group.
    #[arg(long)]
    pub group: String,
    /// Most messages to receive.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max: u32,
    /// How long the broker may wait for messages (long polling), in seconds.
    #[arg(long, default_value_t = 5)]
    pub wait_secs: u64,
    /// How long received messages stay invisible to other consumers, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub invisible_secs: u64,
    /// Do not acknowledge the received messages (they come back after --invisible-secs).
    #[arg(long)]
    pub no_ack: bool,
}

/// `--kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Normal,
    Fifo,
    Delay,
    Transaction,
}

/// `--perm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PermArg {
    #[value(alias = "read-write")]
    Rw,
    #[value(alias = "read")]
    R,
    #[value(alias = "write")]
    W,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("raftmq").chain(args.iter().copied()))
    }

    #[test]
    fn topic_create_defaults_and_options() {
        let cli = parse(&["topic", "create", "orders"]).expect("parse");
        assert_eq!(cli.timeout_secs, 10);
        match cli.command {
            Command::Topic(TopicCmd::Create {
                name,
                queues,
                kind,
                perm,
                groups,
            }) => {
                assert_eq!(groups, None);
                assert_eq!(name, "orders");
                assert_eq!(queues, 8);
                assert_eq!(kind, KindArg::Normal);
                assert_eq!(perm, PermArg::Rw);
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = parse(&[
            "topic", "create", "t", "--queues", "3", "--kind", "fifo", "--perm", "r",
        ])
        .expect("parse");
        assert!(matches!(
            cli.command,
            Command::Topic(TopicCmd::Create {
                queues: 3,
                kind: KindArg::Fifo,
                perm: PermArg::R,
                ..
            })
        ));
    }

    #[test]
    fn servers_are_comma_separated_and_global() {
        let cli = parse(&[
            "cluster",
            "status",
            "--json",
            "--server",
            "a:1,b:2",
            "--timeout-secs",
            "3",
        ])
        .expect("parse");
        assert_eq!(cli.server, vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(cli.timeout_secs, 3);
        assert!(matches!(
            cli.command,
            Command::Cluster(ClusterCmd::Status { json: true })
        ));
    }

    #[test]
    fn update_takes_only_what_is_given() {
        let cli = parse(&["topic", "update", "t", "--perm", "w"]).expect("parse");
        assert!(matches!(
            cli.command,
            Command::Topic(TopicCmd::Update {
                queues: None,
                kind: None,
                perm: Some(PermArg::W),
                ..
            })
        ));
    }

    #[test]
    fn send_and_receive() {
        let cli = parse(&[
            "send",
            "--topic",
            "t",
            "--tag",
            "A",
            "--key",
            "k1",
            "--key",
            "k2",
            "--message-group",
            "g",
            "--count",
            "4",
            "hello",
        ])
        .expect("parse");
        let Command::Send(send) = cli.command else {
            panic!("not send")
        };
        assert_eq!(send.keys, vec!["k1".to_string(), "k2".to_string()]);
        assert_eq!(send.count, 4);
        assert_eq!(send.message_group.as_deref(), Some("g"));
        assert_eq!(send.body, "hello");

        let cli = parse(&["receive", "--topic", "t", "--group", "g", "--no-ack"]).expect("parse");
        let Command::Receive(recv) = cli.command else {
            panic!("not receive")
        };
        assert_eq!(
            (recv.max, recv.wait_secs, recv.invisible_secs, recv.no_ack),
            (16, 5, 30, true)
        );
    }

    #[test]
    fn namesrv_and_groups() {
        let cli = parse(&[
            "--namesrv",
            "a:1,b:2",
            "topic",
            "create",
            "t",
            "--groups",
            "g1,g2",
            "--groups",
            "g3",
        ])
        .expect("parse");
        assert_eq!(cli.namesrv, vec!["a:1".to_string(), "b:2".to_string()]);
        let Command::Topic(cmd) = cli.command else {
            panic!("not topic")
        };
        assert_eq!(
            cmd.groups(),
            Some(["g1".to_string(), "g2".to_string(), "g3".to_string()].as_slice())
        );

        let cli = parse(&["topic", "list", "--groups", "all", "--json"]).expect("parse");
        let Command::Topic(cmd) = cli.command else {
            panic!("not topic")
        };
        assert_eq!(cmd.groups(), Some(["all".to_string()].as_slice()));
        let cli = parse(&["topic", "delete", "t"]).expect("parse");
        let Command::Topic(cmd) = cli.command else {
            panic!("not topic")
        };
        assert_eq!(cmd.groups(), None);

        let cli = parse(&["namesrv", "route", "orders", "--json"]).expect("parse");
        assert!(matches!(
            cli.command,
            Command::Namesrv(NamesrvCmd::Route { ref topic, json: true }) if topic == "orders"
        ));
        let cli = parse(&["namesrv", "groups", "--namesrv", "x:1"]).expect("parse");
        assert!(matches!(
            cli.command,
            Command::Namesrv(NamesrvCmd::Groups { json: false })
        ));
        assert_eq!(cli.namesrv, vec!["x:1".to_string()]);
        assert!(parse(&["namesrv", "route"]).is_err(), "topic is required");
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(parse(&["topic", "create", "t", "--queues", "0"]).is_err());
        assert!(parse(&["topic", "create", "t", "--kind", "weird"]).is_err());
        assert!(parse(&["send", "--topic", "t"]).is_err(), "body is required");
        assert!(parse(&["send", "--topic", "t", "--count", "0", "x"]).is_err());
        assert!(parse(&["receive", "--topic", "t"]).is_err(), "group is required");
        assert!(parse(&["topic", "frobnicate"]).is_err());
        assert!(
            parse(&["topic", "update", "t"]).is_err(),
            "an update must change something"
        );
    }
}
