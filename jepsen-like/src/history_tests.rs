use std::fs;
use std::io::Write;

use super::*;

/// The example lines of the module documentation, one of each kind.
const EXAMPLES: &str = r#"{"time_ms":1000,"process":1,"type":"send","key":"k1","seq":0,"message_id":"M-1-0"}
{"time_ms":1012,"process":1,"type":"send_done","message_id":"M-1-0","outcome":{"status":"ok","broker":"g1","queue":3,"offset":17}}
{"time_ms":1013,"process":1,"type":"send_done","message_id":"M-1-1","outcome":{"status":"failed","error":"no route"}}
{"time_ms":1014,"process":1,"type":"send_done","message_id":"M-1-2","outcome":{"status":"unknown","error":"deadline exceeded"}}
{"time_ms":1020,"process":9,"type":"consume","message_id":"M-1-0","key":"k1","seq":0,"consumer":"c1","broker":"g1","queue":3,"offset":17,"attempt":1}
{"time_ms":1021,"process":9,"type":"ack","message_id":"M-1-0","consumer":"c1","outcome":{"status":"ok"}}
{"time_ms":1500,"process":9,"type":"commit_offset","group":"billing","broker":"g1","queue":3,"offset":18}
{"time_ms":2000,"process":0,"type":"fault","kind":"kill-leader","target":"node-2","phase":"start"}
"#;

fn examples() -> Vec<Record> {
    read_history(EXAMPLES.as_bytes()).expect("examples parse").records
}

fn write_all(records: &[Record]) -> Vec<u8> {
    let mut writer = HistoryWriter::new(Vec::new());
    for record in records {
        writer.append(record).expect("in-memory write");
    }
    writer.into_inner()
}

#[test]
fn documented_examples_parse_and_write_back_identically() {
    let records = examples();
    assert_eq!(records.len(), 8);
    assert!(matches!(
        records[1].event,
        Event::SendDone(SendDone {
            outcome: SendOutcome::Ok { offset: 17, .. },
            ..
        })
    ));
    assert!(matches!(&records[7].event, Event::Fault(f) if f.phase == FaultPhase::Start));
    assert_eq!(String::from_utf8(write_all(&records)).expect("utf-8"), EXAMPLES);
}

#[test]
fn torn_last_line_is_ignored() {
    let mut bytes = write_all(&examples());
    bytes.extend_from_slice(br#"{"time_ms":2100,"process":0,"type":"fau"#);
    let history = read_history(bytes.as_slice()).expect("torn tail tolerated");
    assert!(history.torn_tail);
    assert_eq!(history.records, examples());
}

#[test]
fn complete_last_line_without_newline_is_kept() {
    let text = EXAMPLES.trim_end_matches('\n');
    let history = read_history(text.as_bytes()).expect("parses");
    assert!(!history.torn_tail);
    assert_eq!(history.records.len(), 8);
}

#[test]
fn garbage_before_the_last_line_is_refused_with_its_line_number() {
    let mut lines: Vec<&str> = EXAMPLES.lines().collect();
    lines.insert(3, r#"{"time_ms":1,"process":1,"type":"teleport"}"#);
    let text = lines.join("\n");
    match read_history(text.as_bytes()) {
        Err(ChaosError::Parse { line: 4, .. }) => {}
        other => panic!("expected a parse error on line 4, got {other:?}"),
    }
    // A torn line followed by more lines is garbage too.
    let text = format!("{}\n{EXAMPLES}", r#"{"time_ms":1,"proc"#);
    assert!(matches!(
        read_history(text.as_bytes()),
        Err(ChaosError::Parse { line: 1, .. })
    ));
}

#[test]
fn blank_lines_and_invalid_utf8_are_refused() {
    let text = format!("{}\n\n{}", EXAMPLES.lines().next().unwrap_or_default(), EXAMPLES);
    assert!(matches!(
        read_history(text.as_bytes()),
        Err(ChaosError::Parse { line: 2, .. })
    ));
    let mut bytes = b"{\"time_ms\":1,\xff}\n".to_vec();
    bytes.extend_from_slice(EXAMPLES.as_bytes());
    assert!(matches!(
        read_history(bytes.as_slice()),
        Err(ChaosError::Parse { line: 1, .. })
    ));
}

#[test]
fn overlong_lines_are_refused() {
    let long = format!("{EXAMPLES}{}\n{EXAMPLES}", "x".repeat(MAX_LINE_BYTES + 10));
    assert!(matches!(
        read_history(long.as_bytes()),
        Err(ChaosError::LineTooLong { line: 9, .. })
    ));
}

#[test]
fn writer_refuses_records_longer_than_a_line() {
    let event = Event::Fault(Fault {
        kind: "k".repeat(MAX_LINE_BYTES),
        target: "n".into(),
        phase: FaultPhase::End,
    });
    let mut writer = HistoryWriter::new(Vec::new());
    let err = writer
        .append(&Record {
            time_ms: 0,
            process: 0,
            event,
        })
        .expect_err("too long");
    assert!(matches!(err, ChaosError::Encode(_)));
    writer.append(&examples()[0]).expect("still usable");
    assert_eq!(writer.into_inner().iter().filter(|&&b| b == b'\n').count(), 1);
}

#[test]
fn appending_to_a_file_cuts_a_torn_tail_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.jsonl");
    let records = examples();
    let mut writer = HistoryWriter::append_to(&path).expect("create");
    writer.append(&records[0]).expect("append");
    writer.sync().expect("sync");
    drop(writer);
    let mut file = fs::OpenOptions::new().append(true).open(&path).expect("open");
    file.write_all(br#"{"time_ms":5,"pro"#).expect("tear");
    drop(file);
    assert!(read_history_file(&path).expect("torn tail tolerated").torn_tail);
    let mut writer = HistoryWriter::append_to(&path).expect("reopen");
    writer.append(&records[1]).expect("append");
    drop(writer);
    let history = read_history_file(&path).expect("clean");
    assert!(!history.torn_tail);
    assert_eq!(history.records, records[..2]);
}

#[test]
fn appending_to_a_file_holding_only_a_torn_line_empties_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.jsonl");
    fs::write(&path, b"{\"time_ms").expect("write");
    let mut writer = HistoryWriter::append_to(&path).expect("open");
    writer.append(&examples()[0]).expect("append");
    assert_eq!(read_history_file(&path).expect("read").records, examples()[..1]);
}

#[test]
fn appending_refuses_an_unterminated_tail_longer_than_a_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.jsonl");
    fs::write(&path, "y".repeat(MAX_LINE_BYTES + 100)).expect("write");
    assert!(matches!(
        HistoryWriter::append_to(&path),
        Err(ChaosError::BadTail { .. })
    ));
}
