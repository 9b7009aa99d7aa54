//! The body digest a consumer receives, in the form its client checks.
//!
//! Every official client compares a delivered `body_digest` as a string: MD5 and SHA-1 as
//! upper-case hex (one spelling, so any client accepts them), CRC32 each in its own way —
//! upper-case hex without leading zeros (Java, Go, C#), always eight digits (C++, Python),
//! or a decimal number (Node.js, whose header says `HTTP`). A CRC32 is far cheaper to
//! compute than an MD5 (`crc32fast` uses the CPU's carry-less multiplication), so the
//! broker delivers CRC32 to the clients whose spelling it knows, from the `x-mq-language`
//! header of the call, and MD5 to every other caller:
//!
//! - a producer's CRC32 is parsed and written in the consumer's spelling; to a client whose
//!   spelling is unknown the broker sends an MD5 of the body instead if the CRC32 matches
//!   the body, else the CRC32 as the producer spelt it (which that client then rejects);
//! - a producer's MD5 or SHA-1 passes through unchanged, and so does a CRC32 the broker
//!   cannot parse (the producer's claim stands, and the consumer reports the mismatch);
//! - a message stored without a digest (official producers send none) gets a CRC32 or,
//!   for an unknown client, an MD5 computed at delivery.

use raftmq_proto::digest::crc32;
use raftmq_proto::digest::md5;
use raftmq_proto::rocketmq::v2 as pb;
use serde::Deserialize;
use tonic::metadata::MetadataMap;

use crate::message::BodyDigest;

/// The request header that names the caller's client language.
pub const LANGUAGE_HEADER: &str = "x-mq-language";

/// How the calling client checks a CRC32 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DigestForm {
    /// Upper-case hex, no leading zeros (`Long.toHexString`, `%X`).
    Crc32Unpadded,
    /// Upper-case hex, eight digits.
    Crc32Padded,
    /// Spelling unknown: MD5, which every client checks the same way.
    #[default]
    Md5,
}

impl DigestForm {
    /// The form for a client that names its language `language` (the header's value).
    pub fn of_language(language: Option<&str>) -> Self {
        match language.map(str::trim) {
            // Go's client sends "GO", C#'s "DOTNET" (not the protocol's enum names).
            Some(l)
                if ["JAVA", "GO", "GOLANG", "DOTNET", "DOT_NET"]
                    .iter()
                    .any(|k| l.eq_ignore_ascii_case(k)) =>
            {
                Self::Crc32Unpadded
            }
            // raftmq's client reads either spelling; the official Rust client checks none.
            Some(l)
                if ["CPP", "PYTHON", "RUST"]
                    .iter()
                    .any(|k| l.eq_ignore_ascii_case(k)) =>
            {
                Self::Crc32Padded
            }
            _ => Self::Md5,
        }
    }

    /// The form for the caller of a request with this metadata.
    pub fn of_caller(metadata: &MetadataMap) -> Self {
        Self::of_language(metadata.get(LANGUAGE_HEADER).and_then(|v| v.to_str().ok()))
    }
}

const CRC32: i32 = pb::DigestType::Crc32 as i32;
const MD5: i32 = pb::DigestType::Md5 as i32;

/// A delivered checksum: the producer's, borrowed from the record, or one spelt here.
#[derive(Debug, Clone, Copy)]
pub struct Checksum<'a>(Spelt<'a>);

#[derive(Debug, Clone, Copy)]
enum Spelt<'a> {
    Stored(&'a str),
    /// Upper-case hex digits (ASCII), the first `.1` of them.
    Hex([u8; 32], usize),
}

impl Checksum<'_> {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Spelt::Stored(s) => s,
            // Only ASCII hex digits are written there.
            Spelt::Hex(digits, len) => std::str::from_utf8(&digits[..*len]).unwrap_or_default(),
        }
    }

    /// `bytes` as upper-case hex (at most 16 bytes).
    fn hex(bytes: &[u8]) -> Self {
        let (digits, len) = hex_digits(bytes);
        Self(Spelt::Hex(digits, len))
    }

    /// A CRC32 as eight hex digits, or without its leading zeros (one digit at least).
    fn crc32(crc: u32, padded: bool) -> Self {
        let (mut digits, _) = hex_digits(&crc.to_be_bytes());
        let zeros = if padded {
            0
        } else {
            digits[..7].iter().take_while(|&&d| d == b'0').count()
        };
        digits.copy_within(zeros..8, 0);
        Self(Spelt::Hex(digits, 8 - zeros))
    }
}

/// Upper-case hex digits of (at most 16 of) `bytes`, and how many.
fn hex_digits(bytes: &[u8]) -> ([u8; 32], usize) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut digits = [0u8; 32];
    let n = bytes.len().min(16);
    for (i, &b) in bytes[..n].iter().enumerate() {
        digits[2 * i] = HEX[usize::from(b >> 4)];
        digits[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
    (digits, 2 * n)
}

/// A producer's digest as stored (borrowed from the record: [`BodyDigest`]'s fields, in
/// its order).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct StoredDigest<'a> {
    /// The protocol's `DigestType` number.
    pub kind: i32,
    pub checksum: &'a str,
}

/// The digest to deliver for `body`, stored with the producer's `stored` digest, to a
/// client that checks digests in `form`.
pub fn delivered(stored: Option<&BodyDigest>, body: &[u8], form: DigestForm) -> pb::Digest {
    let stored = stored.map(|d| StoredDigest {
        kind: d.kind,
        checksum: &d.checksum,
    });
    let (kind, checksum) = delivered_parts(stored, body, form);
    pb::Digest {
        r#type: kind,
        checksum: checksum.as_str().to_owned(),
    }
}

/// [`delivered`] as its parts, the `DigestType` number and the checksum, without
/// allocating.
pub fn delivered_parts<'a>(
    stored: Option<StoredDigest<'a>>,
    body: &[u8],
    form: DigestForm,
) -> (i32, Checksum<'a>) {
    let stored_crc = match stored {
        Some(d) if d.kind == CRC32 => match u32::from_str_radix(d.checksum.trim(), 16) {
            // An MD5 in place of a CRC32 that does not match would hide the corruption.
            Ok(crc) if form != DigestForm::Md5 || crc == crc32(body) => Some(crc),
            _ => return (d.kind, Checksum(Spelt::Stored(d.checksum))),
        },
        Some(d) => return (d.kind, Checksum(Spelt::Stored(d.checksum))),
        None => None,
    };
    let crc = || stored_crc.unwrap_or_else(|| crc32(body));
    match form {
        DigestForm::Crc32Unpadded => (CRC32, Checksum::crc32(crc(), false)),
        DigestForm::Crc32Padded => (CRC32, Checksum::crc32(crc(), true)),
        DigestForm::Md5 => (MD5, Checksum::hex(&md5(body))),
    }
}

#[cfg(test)]
mod tests {
    use raftmq_proto::digest::md5_upper_hex;

    use super::*;

    fn stored(kind: pb::DigestType, checksum: &str) -> Option<BodyDigest> {
        Some(BodyDigest {
            kind: kind as i32,
            checksum: checksum.to_owned(),
        })
    }

    fn pair(d: pb::Digest) -> (i32, String) {
        (d.r#type, d.checksum)
    }

    // The IEEE CRC-32 of "foobar" is 0x9EF61F95, of "hello world!" 0x03B4C26D.
    const LEADING_ZERO_BODY: &[u8] = b"hello world!";

    #[test]
    fn each_language_gets_the_crc32_spelling_it_compares_against() {
        let cases = [
            (Some("JAVA"), "3B4C26D"),
            (Some("GO"), "3B4C26D"),
            (Some("GOLANG"), "3B4C26D"),
            (Some("DOTNET"), "3B4C26D"),
            (Some("CPP"), "03B4C26D"),
            (Some("PYTHON"), "03B4C26D"),
            (Some(" rust "), "03B4C26D"),
        ];
        for (language, want) in cases {
            let form = DigestForm::of_language(language);
            for digest in [
                None,
                stored(pb::DigestType::Crc32, "3b4c26d"),
                stored(pb::DigestType::Crc32, "03B4C26D"),
            ] {
                assert_eq!(
                    pair(delivered(digest.as_ref(), LEADING_ZERO_BODY, form)),
                    (CRC32, want.to_owned()),
                    "{language:?}"
                );
            }
        }
    }

    #[test]
    fn an_unknown_client_gets_an_md5_of_the_body() {
        let md5 = md5_upper_hex(b"foobar");
        for language in [None, Some("NODE_JS"), Some("HTTP"), Some(""), Some("PHP")] {
            let form = DigestForm::of_language(language);
            assert_eq!(form, DigestForm::Md5);
            for digest in [None, stored(pb::DigestType::Crc32, "9ef61f95")] {
                assert_eq!(
                    pair(delivered(digest.as_ref(), b"foobar", form)),
                    (pb::DigestType::Md5 as i32, md5.clone())
                );
            }
        }
    }

    #[test]
    fn a_wrong_crc32_reaches_an_unknown_client_as_it_was_sent() {
        let wrong = stored(pb::DigestType::Crc32, "9ef61f96");
        assert_eq!(
            pair(delivered(wrong.as_ref(), b"foobar", DigestForm::Md5)),
            (CRC32, "9ef61f96".to_owned())
        );
    }

    #[test]
    fn md5_sha1_and_unparsable_crc32_pass_through() {
        for form in [
            DigestForm::Crc32Unpadded,
            DigestForm::Crc32Padded,
            DigestForm::Md5,
        ] {
            for (kind, checksum) in [
                (pb::DigestType::Md5, "3858F62230AC3C915F300C664312C63F"),
                (pb::DigestType::Sha1, "8843D7F92416211DE9EBB963FF4CE28125932878"),
                (pb::DigestType::Crc32, "not hex"),
                (pb::DigestType::Crc32, "1FFFFFFFF"),
            ] {
                assert_eq!(
                    pair(delivered(stored(kind, checksum).as_ref(), b"foobar", form)),
                    (kind as i32, checksum.to_owned())
                );
            }
        }
    }

    #[test]
    fn crc32_spellings_match_the_format_ones() {
        for crc in [0, 0xABC, 0x03B4_C26D, u32::MAX] {
            assert_eq!(Checksum::crc32(crc, false).as_str(), format!("{crc:X}"));
            assert_eq!(Checksum::crc32(crc, true).as_str(), format!("{crc:08X}"));
        }
    }

    #[test]
    fn a_computed_crc32_is_the_ieee_one() {
        let d = delivered(None, b"foobar", DigestForm::Crc32Unpadded);
        assert_eq!(pair(d), (CRC32, "9EF61F95".to_owned()));
    }

    #[test]
    fn the_form_comes_from_the_language_header() {
        let mut md = MetadataMap::new();
        assert_eq!(DigestForm::of_caller(&md), DigestForm::Md5);
        md.insert(LANGUAGE_HEADER, "JAVA".parse().expect("ascii"));
        assert_eq!(DigestForm::of_caller(&md), DigestForm::Crc32Unpadded);
    }
}
