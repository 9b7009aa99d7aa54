use std::collections::BTreeSet;
use std::io::Write;

use proptest::prelude::*;

use super::entry::IndexEntry;
use super::entry::KeyKind;
use super::entry::key_hash;
use super::segment::IndexItem;
use super::*;

fn cfg(entries: u32, slots: u32) -> IndexConfig {
    IndexConfig {
        enabled: true,
        entries_per_file: entries,
        slots_per_file: slots,
        max_query_results: 64,
    }
}

fn item(key: &str, log_index: u64, slot: u32) -> IndexItem {
    IndexItem {
        hash: key_hash(KeyKind::Key, "t", key),
        log_index,
        store_time_ms: 1_000 + log_index,
        slot,
        queue_id: slot % 4,
    }
}

fn hits(ix: &MessageIndex, key: &str) -> Vec<(u64, u32)> {
    let found = ix
        .lookup(key_hash(KeyKind::Key, "t", key), 0, u64::MAX, usize::MAX)
        .expect("lookup");
    found.iter().map(|e| (e.log_index, e.slot)).collect()
}

#[test]
fn lookups_find_newest_first_across_segments_and_survive_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ix = MessageIndex::open(dir.path(), cfg(5, 3))?;
    for i in 1..=12u64 {
        let key = if i % 3 == 0 { "a" } else { "b" };
        ix.append(&[item(key, i, 1)])?;
    }
    assert_eq!(ix.segment_count(), 3, "5 + 5 + 2 entries");
    assert_eq!(hits(&ix, "a"), [(12, 1), (9, 1), (6, 1), (3, 1)]);
    assert_eq!(hits(&ix, "c"), []);
    assert_eq!(ix.last_log_index(), Some(12));
    drop(ix);
    // Reopened with another slot count: the files keep the one they were made with.
    let ix = MessageIndex::open(dir.path(), cfg(5, 7))?;
    assert_eq!(hits(&ix, "a"), [(12, 1), (9, 1), (6, 1), (3, 1)]);
    assert_eq!(ix.last_log_index(), Some(12));
    ix.append(&[item("a", 13, 2)])?;
    assert_eq!(hits(&ix, "a")[0], (13, 2));
    Ok(())
}

#[test]
fn time_range_and_max_bound_the_answer_and_duplicates_count_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ix = MessageIndex::open(dir.path(), cfg(100, 16))?;
    let items: Vec<_> = (1..=10).map(|i| item("k", i, 1)).collect();
    ix.append(&items)?;
    // Indexing resumes at the newest entry after a restart: the same entry again.
    ix.append(&items[9..])?;
    let h = key_hash(KeyKind::Key, "t", "k");
    let got: Vec<u64> = ix
        .lookup(h, 1_003, 1_005, 10)?
        .iter()
        .map(|e| e.log_index)
        .collect();
    assert_eq!(got, [5, 4, 3]);
    let got: Vec<u64> = ix
        .lookup(h, 0, u64::MAX, 2)?
        .iter()
        .map(|e| e.log_index)
        .collect();
    assert_eq!(got, [10, 9]);
    assert_eq!(ix.lookup(h, 0, u64::MAX, 100)?.len(), 10);
    Ok(())
}

#[test]
fn a_torn_tail_is_cut_and_indexing_goes_on_after_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ix = MessageIndex::open(dir.path(), cfg(100, 8))?;
    ix.append(&(1..=6).map(|i| item("k", i, 1)).collect::<Vec<_>>())?;
    drop(ix);
    let path = std::fs::read_dir(dir.path())?
        .filter_map(Result::ok)
        .map(|d| d.path())
        .find(|p| p.extension().is_some_and(|e| e == "idx"))
        .ok_or_else(|| anyhow::anyhow!("no segment"))?;
    // A half-written seventh entry and a damaged sixth.
    let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
    f.write_all(&item("k", 7, 1).hash.to_le_bytes())?;
    drop(f);
    let mut bytes = std::fs::read(&path)?;
    bytes[5 * IndexEntry::LEN + 9] ^= 0x40;
    std::fs::write(&path, &bytes)?;

    let ix = MessageIndex::open(dir.path(), cfg(100, 8))?;
    assert_eq!(std::fs::metadata(&path)?.len(), 5 * IndexEntry::LEN as u64);
    assert_eq!(ix.last_log_index(), Some(5));
    ix.append(&[item("k", 6, 1), item("k", 7, 1)])?;
    let got: Vec<u64> = hits(&ix, "k").iter().map(|h| h.0).collect();
    assert_eq!(got, [7, 6, 5, 4, 3, 2, 1]);
    Ok(())
}

#[test]
fn an_unsealed_older_segment_is_sealed_on_open_and_old_segments_are_deleted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ix = MessageIndex::open(dir.path(), cfg(4, 4))?;
    ix.append(&(1..=10).map(|i| item("k", i, 1)).collect::<Vec<_>>())?;
    drop(ix);
    // A crash while rolling over: the first segment's slot table never got written.
    let slots: Vec<_> = std::fs::read_dir(dir.path())?
        .filter_map(Result::ok)
        .map(|d| d.path())
        .filter(|p| p.extension().is_some_and(|e| e == "slots"))
        .collect();
    assert_eq!(slots.len(), 2);
    std::fs::remove_file(slots.iter().min().ok_or_else(|| anyhow::anyhow!("none"))?)?;

    let ix = MessageIndex::open(dir.path(), cfg(4, 4))?;
    assert_eq!(hits(&ix, "k").len(), 10);
    assert_eq!(
        ix.retain_from(5)?,
        1,
        "entries 1..=4 are below the log's first index"
    );
    assert_eq!(hits(&ix, "k").len(), 6);
    assert_eq!(
        ix.retain_from(11)?,
        2,
        "the active segment goes too once all of it is purged"
    );
    assert_eq!(ix.last_log_index(), None);
    ix.append(&[item("k", 12, 1)])?;
    assert_eq!(hits(&ix, "k"), [(12, 1)]);
    Ok(())
}

#[test]
fn configuration_is_checked() {
    assert!(IndexConfig::default().validate().is_ok());
    assert!(cfg(0, 1).validate().is_err());
    assert!(cfg(1, 0).validate().is_err());
    let c = IndexConfig {
        max_query_results: 0,
        ..IndexConfig::default()
    };
    assert!(c.validate().is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against a model (every item ever appended): each key's hits are exactly the
    /// model's distinct positions of that key, newest first, across roll-overs and a
    /// reopen at any point.
    #[test]
    fn lookups_match_a_model(
        keys in proptest::collection::vec(0u8..12, 1..120),
        per_file in 1u32..20,
        slots in 1u32..9,
        reopen_at in 0usize..120,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ix = MessageIndex::open(dir.path(), cfg(per_file, slots)).expect("open");
        let mut model: Vec<(String, u64, u32)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            if i == reopen_at {
                drop(ix);
                ix = MessageIndex::open(dir.path(), cfg(per_file, slots)).expect("reopen");
            }
            let key = format!("key-{k}");
            let (log_index, slot) = (i as u64 / 3 + 1, (i % 3) as u32 + 1);
            ix.append(&[item(&key, log_index, slot)]).expect("append");
            model.push((key, log_index, slot));
        }
        let distinct: BTreeSet<&String> = model.iter().map(|m| &m.0).collect();
        for key in distinct {
            let mut want: Vec<(u64, u32)> = model.iter().filter(|m| &m.0 == key).map(|m| (m.1, m.2)).collect();
            want.reverse();
            prop_assert_eq!(hits(&ix, key), want);
        }
    }
}
