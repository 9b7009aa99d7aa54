//! Tag filters of consumers (ReceiveMessage and PullMessage): parsing a request's
//! `FilterExpression` into the tag hashes consume queues are matched against, and the tags
//! themselves, to recognise tag-hash collisions once a message is read.
//!
//! A TAG (or unspecified) expression is `*` or blank for every message, else tags separated
//! by `||`. Anything else — empty segments, a lone `|`, control characters, over-long tags,
//! more than [`MAX_FILTER_TAGS`] tags, SQL92, an unknown type — is refused with
//! `ILLEGAL_FILTER_EXPRESSION`, as RocketMQ answers a filter it cannot evaluate.

use raftmq_proto::rocketmq::v2 as pb;

use crate::command::TagFilter;
use crate::command::tag_hash;
use crate::error::BrokerError;
use crate::error::BrokerResult;
use crate::error::InvalidCode;
use crate::message::MAX_NAME_LEN;

/// Most tags in one filter expression.
pub const MAX_FILTER_TAGS: usize = 64;

/// A consumer's tag filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// What pops match (consume queues hold tag hashes).
    pub hashes: TagFilter,
    /// The tags themselves (none for "all"), to recognise hash collisions after reading.
    pub tags: Vec<String>,
}

impl Filter {
    fn all() -> Self {
        Self {
            hashes: TagFilter::All,
            tags: Vec::new(),
        }
    }

    /// Whether a message with `tag` is wanted (a message without a tag matches only "all").
    pub fn wants(&self, tag: Option<&str>) -> bool {
        match self.hashes {
            TagFilter::All => true,
            TagFilter::Hashes(_) => tag.is_some_and(|t| self.tags.iter().any(|w| w == t)),
        }
    }
}

/// Parses a filter expression: TAG (or unspecified) type, `*` or empty for all, else tags
/// separated by `||`. SQL92 is refused with `ILLEGAL_FILTER_EXPRESSION`.
pub fn parse_filter(f: Option<&pb::FilterExpression>) -> BrokerResult<Filter> {
    let Some(f) = f else {
        return Ok(Filter::all());
    };
    match pb::FilterType::try_from(f.r#type) {
        Ok(pb::FilterType::Tag | pb::FilterType::Unspecified) => parse_tags(&f.expression),
        Ok(pb::FilterType::Sql) => Err(bad_filter(
            "SQL92 filter expressions are not supported by raftmq; use a TAG expression such as \"A || B\"",
        )),
        Err(_) => Err(bad_filter(format!("unknown filter type {}", f.r#type))),
    }
}

fn bad_filter(message: impl Into<String>) -> BrokerError {
    BrokerError::invalid(InvalidCode::IllegalFilter, message)
}

fn parse_tags(expression: &str) -> BrokerResult<Filter> {
    let expression = expression.trim();
    if expression.is_empty() || expression == "*" {
        return Ok(Filter::all());
    }
    let mut tags: Vec<String> = Vec::new();
    for part in expression.split("||") {
        let tag = part.trim();
        if tag == "*" {
            return Ok(Filter::all());
        }
        if tag.is_empty()
            || tag.contains('|')
            || tag.len() > MAX_NAME_LEN
            || tag.chars().any(char::is_control)
        {
            return Err(bad_filter(format!(
                "bad tag expression {expression:?}: tags separated by \"||\", each non-empty, at most \
                 {MAX_NAME_LEN} bytes, without '|' or control characters"
            )));
        }
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
        if tags.len() > MAX_FILTER_TAGS {
            return Err(bad_filter(format!(
                "at most {MAX_FILTER_TAGS} tags in one filter expression"
            )));
        }
    }
    let hashes = TagFilter::Hashes(tags.iter().map(|t| tag_hash(t)).collect());
    Ok(Filter { hashes, tags })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag_filter(expression: &str) -> BrokerResult<Filter> {
        parse_filter(Some(&pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: expression.into(),
        }))
    }

    fn code<T: std::fmt::Debug>(r: BrokerResult<T>) -> InvalidCode {
        match r {
            Err(BrokerError::Invalid { code, .. }) => code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn tag_expressions_parse_to_hashes_and_tags() {
        for all in ["", "*", "  * ", "A || *"] {
            assert_eq!(tag_filter(all).expect(all), Filter::all(), "{all:?}");
        }
        assert_eq!(parse_filter(None).expect("none"), Filter::all());
        let f = tag_filter(" A ||B|| A ").expect("A||B");
        assert_eq!(f.tags, vec!["A".to_owned(), "B".to_owned()]);
        assert_eq!(f.hashes, TagFilter::Hashes(vec![tag_hash("A"), tag_hash("B")]));
        assert!(f.wants(Some("B")) && !f.wants(Some("C")) && !f.wants(None));
        assert!(Filter::all().wants(None));
        let unspecified = pb::FilterExpression {
            r#type: pb::FilterType::Unspecified as i32,
            expression: "A".into(),
        };
        assert_eq!(
            parse_filter(Some(&unspecified)).expect("tag").tags,
            vec!["A".to_owned()]
        );
    }

    #[test]
    fn bad_and_sql_filters_are_refused() {
        for bad in ["A ||", "|| A", "A |||| B", "A | B", "A\nB"] {
            assert_eq!(code(tag_filter(bad)), InvalidCode::IllegalFilter, "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_FILTER_TAGS).map(|i| format!("t{i}")).collect();
        assert_eq!(code(tag_filter(&many.join("||"))), InvalidCode::IllegalFilter);
        assert_eq!(
            code(tag_filter(&"x".repeat(MAX_NAME_LEN + 1))),
            InvalidCode::IllegalFilter
        );
        let sql = pb::FilterExpression {
            r#type: pb::FilterType::Sql as i32,
            expression: "a > 1".into(),
        };
        match parse_filter(Some(&sql)) {
            Err(e) => assert!(e.to_string().contains("SQL92"), "{e}"),
            Ok(f) => panic!("{f:?}"),
        }
        let unknown = pb::FilterExpression {
            r#type: 9,
            expression: "A".into(),
        };
        assert_eq!(code(parse_filter(Some(&unknown))), InvalidCode::IllegalFilter);
    }
}
