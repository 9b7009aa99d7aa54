//! Body digests as the protocol carries them (`SystemProperties.body_digest`).

use md5::Digest as _;

/// MD5 of `body` as upper-case hex: what a producer puts in `body_digest` (type MD5) and
/// what a consumer verifies a delivered body against.
pub fn md5_upper_hex(body: &[u8]) -> String {
    upper_hex(&md5(body))
}

/// The IEEE CRC-32 of `body` (`body_digest` type CRC32 carries it as hex; see
/// [`crc32_hex`]).
pub fn crc32(body: &[u8]) -> u32 {
    crc32fast::hash(body)
}

/// A CRC-32 as eight upper-case hex digits.
pub fn crc32_hex(crc: u32) -> String {
    format!("{crc:08X}")
}

/// A CRC-32 as eight upper-case hex digits (ASCII), spelt without an allocation.
pub fn crc32_hex_digits(crc: u32) -> [u8; 8] {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = [0u8; 8];
    for (i, d) in out.iter_mut().enumerate() {
        *d = DIGITS[((crc >> (28 - 4 * i)) & 0xF) as usize];
    }
    out
}

/// MD5 of `body`.
pub fn md5(body: &[u8]) -> [u8; 16] {
    md5::Md5::digest(body).into()
}

/// SHA-1 of `body`.
pub fn sha1(body: &[u8]) -> [u8; 20] {
    sha1::Sha1::digest(body).into()
}

/// Whether `hex` spells `bytes` (two digits a byte, either case): what
/// `hex.eq_ignore_ascii_case(&upper_hex(bytes))` tells, without building the string.
pub fn hex_eq(hex: &str, bytes: &[u8]) -> bool {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let hex = hex.as_bytes();
    hex.len() == 2 * bytes.len()
        && hex
            .chunks_exact(2)
            .zip(bytes)
            .all(|(pair, &b)| digit(pair[0]) == Some(b >> 4) && digit(pair[1]) == Some(b & 0x0f))
}

/// `bytes` as upper-case hex.
pub fn upper_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn crc32_digits_spell_what_format_spells(crc in any::<u32>()) {
            let digits = super::crc32_hex_digits(crc);
            let spelt = super::crc32_hex(crc);
            prop_assert_eq!(std::str::from_utf8(&digits).ok(), Some(spelt.as_str()));
        }

        #[test]
        fn hex_eq_agrees_with_comparing_strings(
            bytes in prop::collection::vec(any::<u8>(), 0..24),
            hex in "[0-9a-fA-FxG ]{0,48}",
            lower in any::<bool>(),
        ) {
            let upper = super::upper_hex(&bytes);
            prop_assert_eq!(super::hex_eq(&hex, &bytes), hex.eq_ignore_ascii_case(&upper));
            let own = if lower { upper.to_ascii_lowercase() } else { upper };
            prop_assert!(super::hex_eq(&own, &bytes));
        }
    }

    #[test]
    fn md5_is_upper_case_hex() {
        assert_eq!(super::md5_upper_hex(b""), "D41D8CD98F00B204E9800998ECF8427E");
        assert_eq!(super::md5_upper_hex(b"abc"), "900150983CD24FB0D6963F7D28E17F72");
    }

    #[test]
    fn crc32_is_the_ieee_one_in_eight_upper_case_digits() {
        assert_eq!(super::crc32_hex(super::crc32(b"foobar")), "9EF61F95");
        assert_eq!(super::crc32_hex(super::crc32(b"hello world!")), "03B4C26D");
    }

    #[test]
    fn sha1_is_upper_case_hex() {
        assert_eq!(
            super::upper_hex(&super::sha1(b"")),
            "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709"
        );
        assert_eq!(
            super::upper_hex(&super::sha1(b"abc")),
            "A9993E364706816ABA3E25717850C26C9CD0D89D"
        );
    }
}
