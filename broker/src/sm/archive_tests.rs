//! Tests of the snapshot archive format.

use std::collections::BTreeSet;
use std::fs;

use openraft::LogId;
use openraft::Membership;
use openraft::StoredMembership;
use openraft::impls::leader_id_adv::LeaderId;

use super::*;

fn meta() -> SnapshotMeta {
    let log_id = LogId::new(LeaderId { term: 3, node_id: 1 }, 42);
    let membership = Membership::new_with_defaults(vec![BTreeSet::from([1, 2, 3])], []);
    SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
    }
}

/// A source dir with a few files, and the archive packed from it.
fn packed(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let src = dir.join("src");
    fs::create_dir(&src)?;
    fs::write(src.join("CURRENT"), b"MANIFEST-000001\n")?;
    fs::write(src.join("000007.sst"), vec![7u8; 3 * CHUNK + 5])?;
    fs::write(src.join("empty"), b"")?;
    let out = dir.join("snap");
    write_archive(&src, &meta(), &out)?;
    Ok(out)
}

#[test]
fn roundtrip_restores_every_file_and_the_meta() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let archive = packed(dir.path())?;
    let mut f = File::open(&archive)?;
    assert_eq!(read_meta(&mut f)?, meta());
    let dest = dir.path().join("dest");
    assert_eq!(unpack(&mut f, &dest)?, meta());
    for name in ["CURRENT", "000007.sst", "empty"] {
        assert_eq!(
            fs::read(dest.join(name))?,
            fs::read(dir.path().join("src").join(name))?,
            "{name}"
        );
    }
    assert_eq!(fs::read_dir(&dest)?.count(), 3);
    Ok(())
}

/// Unpacks a modified copy of the archive; returns the error text.
fn unpack_modified(dir: &Path, modify: impl FnOnce(&mut Vec<u8>)) -> anyhow::Result<String> {
    let mut bytes = fs::read(packed(dir)?)?;
    modify(&mut bytes);
    let bad = dir.join("bad");
    fs::write(&bad, &bytes)?;
    let err = unpack(&mut File::open(&bad)?, &dir.join("dest")).expect_err("must be refused");
    assert!(matches!(err, SmError::BadSnapshot(_)), "{err}");
    Ok(err.to_string())
}

/// A way to damage archive bytes.
type Damage = Box<dyn FnOnce(&mut Vec<u8>)>;

#[test]
fn damage_is_detected() -> anyhow::Result<()> {
    let cases: Vec<(&str, Damage)> = vec![
        ("magic", Box::new(|b| b[0] ^= 1)),
        ("header checksum", Box::new(|b| b[17] ^= 1)),
        ("checksum mismatch in 000007.sst", Box::new(|b| b[1000] ^= 1)),
        ("file entry", Box::new(|b| b.truncate(b.len() - 2))),
        ("trailing", Box::new(|b| b.push(0))),
    ];
    for (want, modify) in cases {
        let dir = tempfile::tempdir()?;
        let msg = unpack_modified(dir.path(), modify)?;
        assert!(msg.contains(want), "{want}: {msg}");
    }
    Ok(())
}

#[test]
fn unsafe_names_are_refused() -> anyhow::Result<()> {
    for name in ["../evil", "a/b", "..", ""] {
        let dir = tempfile::tempdir()?;
        let mut bytes = header(&meta(), 1)?;
        let mut entry = Vec::new();
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name.as_bytes());
        entry.extend_from_slice(&1u64.to_be_bytes());
        entry.push(b'x');
        let crc = crc32c::crc32c(&entry);
        bytes.extend_from_slice(&entry);
        bytes.extend_from_slice(&crc.to_be_bytes());
        let path = dir.path().join("a");
        fs::write(&path, &bytes)?;
        let err = unpack(&mut File::open(&path)?, &dir.path().join("dest")).expect_err("unsafe");
        assert!(err.to_string().contains("unsafe file name"), "{name}: {err}");
        assert!(!dir.path().join("evil").exists());
    }
    Ok(())
}
