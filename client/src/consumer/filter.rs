//! Filter expressions of consumers: which messages of a topic a subscription wants.
//!
//! raftmq filters by tag, as RocketMQ's TAG expressions do: `*` wants every message, `a`
//! the messages tagged `a`, `a || b || c` those tagged with any of them. Expressions are
//! checked here, before anything is sent: an empty one, an empty side of `||`, a lone
//! `|`, a control character, a tag over [`MAX_TAG_LEN`] bytes or more than
//! [`MAX_FILTER_TAGS`] tags is [`ClientError::InvalidArgument`]. SQL92 expressions are
//! refused the same way: raftmq brokers do not evaluate them.
//!
//! Brokers match tag hashes, so a hash collision can let an unwanted message through; the
//! consumers check the tag itself again ([`FilterExpression::matches`]).

use std::fmt;

use raftmq_proto::rocketmq::v2 as pb;

use crate::error::ClientError;
use crate::error::Result;

/// Most tags in one expression (as the broker accepts).
pub const MAX_FILTER_TAGS: usize = 64;
/// Longest tag in an expression (as the broker accepts).
pub const MAX_TAG_LEN: usize = 1024;

/// A checked TAG filter expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum FilterExpression {
    /// Every message (`*`); the default.
    #[default]
    All,
    /// Messages tagged with any of these tags (`a || b`), without duplicates, in the
    /// order written.
    Tags(Vec<String>),
}

impl FilterExpression {
    /// Every message of the topic.
    pub fn all() -> Self {
        Self::All
    }

    /// Parses a TAG expression: `*`, `a`, `a || b || c`. A `*` among tags wants every
    /// message. Anything else is [`ClientError::InvalidArgument`].
    pub fn tag(expression: &str) -> Result<Self> {
        let expression = expression.trim();
        if expression.is_empty() {
            return Err(bad(expression, "it is empty; use \"*\" for every message"));
        }
        if expression == "*" {
            return Ok(Self::All);
        }
        let mut tags: Vec<String> = Vec::new();
        for part in expression.split("||") {
            let tag = part.trim();
            if tag == "*" {
                return Ok(Self::All);
            }
            check_tag(expression, tag)?;
            if !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_owned());
            }
            if tags.len() > MAX_FILTER_TAGS {
                return Err(bad(expression, &format!("more than {MAX_FILTER_TAGS} tags")));
            }
        }
        Ok(Self::Tags(tags))
    }

    /// A SQL92 expression: always [`ClientError::InvalidArgument`], as raftmq brokers do
    /// not support SQL92 filtering.
    pub fn sql92(expression: &str) -> Result<Self> {
        Err(ClientError::InvalidArgument(format!(
            "SQL92 filter expressions are not supported by raftmq ({expression:?}); use a TAG \
             expression such as \"a || b\""
        )))
    }

    /// Whether a message with `tag` is wanted. A message without a tag matches only
    /// [`FilterExpression::All`].
    pub fn matches(&self, tag: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::Tags(tags) => tag.is_some_and(|t| tags.iter().any(|w| w == t)),
        }
    }

    /// The expression as sent: `*` or the tags joined by ` || `.
    pub fn expression(&self) -> String {
        match self {
            Self::All => "*".to_owned(),
            Self::Tags(tags) => tags.join(" || "),
        }
    }

    /// The protocol's form.
    pub fn to_wire(&self) -> pb::FilterExpression {
        pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: self.expression(),
        }
    }
}

impl fmt::Display for FilterExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression())
    }
}

impl std::str::FromStr for FilterExpression {
    type Err = ClientError;

    /// [`FilterExpression::tag`].
    fn from_str(s: &str) -> Result<Self> {
        Self::tag(s)
    }
}

fn check_tag(expression: &str, tag: &str) -> Result<()> {
    if tag.is_empty() {
        return Err(bad(expression, "a side of \"||\" is empty"));
    }
    if tag.contains('|') {
        return Err(bad(expression, "tags are separated by \"||\", not \"|\""));
    }
    if tag.chars().any(char::is_control) {
        return Err(bad(expression, "a tag contains a control character"));
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(bad(expression, &format!("a tag is over {MAX_TAG_LEN} bytes")));
    }
    Ok(())
}

fn bad(expression: &str, why: &str) -> ClientError {
    ClientError::InvalidArgument(format!("illegal tag expression {expression:?}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> FilterExpression {
        FilterExpression::Tags(t.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn tag_expressions_parse() {
        assert_eq!(FilterExpression::tag("*").expect("*"), FilterExpression::All);
        assert_eq!(FilterExpression::tag(" * ").expect("* "), FilterExpression::All);
        assert_eq!(
            FilterExpression::tag("a || *").expect("a||*"),
            FilterExpression::All
        );
        assert_eq!(FilterExpression::tag("a").expect("a"), tags(&["a"]));
        assert_eq!(
            FilterExpression::tag(" a ||b|| c || a").expect("a||b||c"),
            tags(&["a", "b", "c"])
        );
        let f: FilterExpression = "x || y".parse().expect("parse");
        assert_eq!(f.expression(), "x || y");
        assert_eq!(f.to_string(), "x || y");
        assert_eq!(f.to_wire().r#type, pb::FilterType::Tag as i32);
        assert_eq!(FilterExpression::default().expression(), "*");
    }

    #[test]
    fn illegal_expressions_are_invalid_arguments() {
        let many: Vec<String> = (0..=MAX_FILTER_TAGS).map(|i| format!("t{i}")).collect();
        let long = "x".repeat(MAX_TAG_LEN + 1);
        for bad in [
            "",
            "  ",
            "|",
            "||",
            "a ||",
            "|| a",
            "a |||| b",
            "a | b",
            "a||b|",
            "a\nb",
            &many.join("||"),
            &long,
        ] {
            match FilterExpression::tag(bad) {
                Err(ClientError::InvalidArgument(m)) => assert!(m.contains("illegal"), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        match FilterExpression::sql92("a > 1") {
            Err(ClientError::InvalidArgument(m)) => assert!(m.contains("not supported"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn matching_is_by_tag() {
        let f = tags(&["a", "b"]);
        assert!(f.matches(Some("a")) && f.matches(Some("b")));
        assert!(!f.matches(Some("c")) && !f.matches(None));
        assert!(FilterExpression::All.matches(None));
        assert!(FilterExpression::All.matches(Some("z")));
    }
}
