//! `query`: a topic's messages by message id or key (`AdminService.QueryMessages`).

use anyhow::Result;
use raftmq_proto::raftmq::admin::v1::admin_service_client::AdminServiceClient;
use raftmq_proto::raftmq::admin::v1::query_messages_request::By;
use raftmq_proto::raftmq::admin::v1::{FoundMessage, QueryMessagesRequest, QueryMessagesResponse};
use serde_json::{Value, json};

use crate::admin_cmds::pretty;
use crate::args::QueryArgs;
use crate::connect::{Conn, request, rpc_error};
use crate::table::{Align, Table};

pub async fn query(conn: &Conn, args: QueryArgs) -> Result<()> {
    let json = args.json;
    let req = to_request(args);
    let mut admin = AdminServiceClient::new(conn.channel().await?);
    let resp = admin
        .query_messages(request(req, conn.timeout))
        .await
        .map_err(rpc_error("QueryMessages"))?
        .into_inner();
    if json {
        println!("{}", pretty(&response_json(&resp))?);
    } else {
        print!("{}", response_table(&resp));
    }
    Ok(())
}

fn to_request(args: QueryArgs) -> QueryMessagesRequest {
    // clap makes exactly one of --id and --key present.
    let by = match (args.id, args.key) {
        (Some(id), _) => By::MessageId(id),
        (None, key) => By::Key(key.unwrap_or_default()),
    };
    QueryMessagesRequest {
        topic: args.topic,
        by: Some(by),
        max: args.max,
        begin_time_ms: args.begin_ms,
        end_time_ms: args.end_ms.unwrap_or(0),
    }
}

fn response_table(r: &QueryMessagesResponse) -> String {
    if r.messages.is_empty() {
        return format!(
            "no messages found (indexed through log index {})\n",
            r.indexed_through
        );
    }
    let mut table = Table::new(&[
        ("MESSAGE ID", Align::Left),
        ("QUEUE", Align::Right),
        ("OFFSET", Align::Right),
        ("TAG", Align::Left),
        ("KEYS", Align::Left),
        ("STORE TIME MS", Align::Right),
        ("BODY BYTES", Align::Right),
    ]);
    for m in &r.messages {
        table.row(vec![
            m.message_id.clone(),
            m.queue_id.to_string(),
            m.queue_offset.to_string(),
            m.tag.clone(),
            m.keys.join(","),
            m.store_time_ms.to_string(),
            m.body.len().to_string(),
        ]);
    }
    table.render()
}

fn message_json(m: &FoundMessage) -> Value {
    json!({
        "message_id": m.message_id,
        "topic": m.topic,
        "queue_id": m.queue_id,
        "queue_offset": m.queue_offset,
        "tag": m.tag,
        "keys": m.keys,
        "message_group": m.message_group,
        "store_time_ms": m.store_time_ms,
        "born_time_ms": m.born_time_ms,
        "born_host": m.born_host,
        "properties": m.properties,
        "log_index": m.log_index,
        "body": String::from_utf8_lossy(&m.body),
    })
}

fn response_json(r: &QueryMessagesResponse) -> Value {
    json!({
        "indexed_through": r.indexed_through,
        "messages": r.messages.iter().map(message_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::args::{Cli, Command};

    fn parse(args: &[&str]) -> Result<QueryArgs, clap::Error> {
        let cli = Cli::try_parse_from([&["raftmq", "query"], args].concat())?;
        match cli.command {
            Command::Query(q) => Ok(q),
            other => panic!("not a query: {other:?}"),
        }
    }

    #[test]
    fn exactly_one_of_id_and_key_is_taken() {
        let q = to_request(parse(&["--topic", "t", "--key", "k1"]).expect("parse"));
        assert_eq!(q.by, Some(By::Key("k1".into())));
        assert_eq!((q.max, q.end_time_ms), (32, 0));
        let q = to_request(
            parse(&["--topic", "t", "--id", "01AB", "--max", "5", "--end-ms", "9"]).expect("parse"),
        );
        assert_eq!(
            (q.by, q.max, q.end_time_ms),
            (Some(By::MessageId("01AB".into())), 5, 9)
        );
        assert!(parse(&["--topic", "t"]).is_err(), "neither");
        assert!(
            parse(&["--topic", "t", "--id", "a", "--key", "b"]).is_err(),
            "both"
        );
        assert!(parse(&["--topic", "t", "--key", "k", "--max", "0"]).is_err());
    }

    #[test]
    fn answers_render_as_a_table_and_as_json() {
        let empty = QueryMessagesResponse {
            messages: Vec::new(),
            indexed_through: 7,
        };
        assert_eq!(
            response_table(&empty),
            "no messages found (indexed through log index 7)\n"
        );
        let found = QueryMessagesResponse {
            messages: vec![FoundMessage {
                message_id: "01AB".into(),
                topic: "t".into(),
                queue_id: 2,
                queue_offset: 41,
                tag: "TagA".into(),
                keys: vec!["k1".into(), "k2".into()],
                store_time_ms: 1_700_000_000_000,
                body: b"hello".to_vec().into(),
                ..Default::default()
            }],
            indexed_through: 9,
        };
        let text = response_table(&found);
        assert!(text.starts_with("MESSAGE ID"), "{text}");
        assert!(
            text.contains("01AB") && text.contains("k1,k2") && text.contains("41"),
            "{text}"
        );
        let v = response_json(&found);
        assert_eq!(v["messages"][0]["body"], "hello");
        assert_eq!(v["messages"][0]["queue_offset"], 41);
        assert_eq!(v["indexed_through"], 9);
    }
}
