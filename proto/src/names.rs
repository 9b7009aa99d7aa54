//! RocketMQ's naming rule for topics, consumer groups and broker groups: the alphabet
//! `[A-Za-z0-9_%|-]`, at least one byte, at most a per-kind length. One implementation for
//! every server that checks names (broker, name server).

/// Longest topic name RocketMQ accepts.
pub const TOPIC_MAX_LEN: usize = 127;
/// Longest consumer group name RocketMQ accepts.
pub const GROUP_MAX_LEN: usize = 255;

/// Whether `c` belongs to RocketMQ's name alphabet.
pub fn valid_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'%' | b'|' | b'-')
}

/// Checks a name of `kind` ("topic", "group", ...) of at most `max` bytes; the error says
/// what is wrong in a sentence naming the kind.
pub fn check_name(kind: &str, name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{kind} name is empty"));
    }
    if name.len() > max {
        return Err(format!(
            "{kind} name is {} bytes long, at most {max} allowed",
            name.len()
        ));
    }
    match name.bytes().find(|c| !valid_name_char(*c)) {
        Some(c) => Err(format!(
            "{kind} name {name:?} contains {:?}; allowed: A-Z a-z 0-9 _ % | -",
            c as char
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_alphabet_and_length() {
        check_name("topic", "Orders_1%|-x", TOPIC_MAX_LEN).expect("valid");
        assert_eq!(
            check_name("topic", "", 5).expect_err("empty"),
            "topic name is empty"
        );
        assert!(
            check_name("group", "abcdef", 5)
                .expect_err("long")
                .contains("6 bytes long, at most 5")
        );
        assert!(
            check_name("topic", "a b", 5)
                .expect_err("space")
                .contains("contains ' '")
        );
    }
}
