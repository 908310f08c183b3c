//! The OData `$filter` subset the alerts API accepts on time properties:
//! `lastUpdateTime` / `alertCreationTime`, `eq ne gt ge lt le`, `and`, `or`,
//! parentheses, unquoted ISO 8601 datetimes compared at full 100 ns precision.
//!
//! Strict on purpose: a quoted datetime, an unknown property or operator is a
//! 400 `ODataError`, as the service answers, so a client writing a filter the
//! service would refuse fails in the tests rather than in production.

use crate::timestamp::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Property {
    LastUpdateTime,
    AlertCreationTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    Cmp(Property, Op, Timestamp),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
}

/// Why a `$filter` was refused; the text goes into the 400's `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid filter clause: {0}")]
pub(crate) struct FilterError(pub String);

impl Filter {
    pub(crate) fn matches(&self, last_update: Timestamp, created: Timestamp) -> bool {
        match self {
            Filter::Cmp(prop, op, v) => {
                let x = match prop {
                    Property::LastUpdateTime => last_update,
                    Property::AlertCreationTime => created,
                };
                match op {
                    Op::Eq => x == *v,
                    Op::Ne => x != *v,
                    Op::Gt => x > *v,
                    Op::Ge => x >= *v,
                    Op::Lt => x < *v,
                    Op::Le => x <= *v,
                }
            }
            Filter::And(a, b) => a.matches(last_update, created) && b.matches(last_update, created),
            Filter::Or(a, b) => a.matches(last_update, created) || b.matches(last_update, created),
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Filter, FilterError> {
        let tokens = tokenize(text);
        if tokens.is_empty() {
            return Err(FilterError("the $filter expression is empty".into()));
        }
        let mut p = Parser { tokens, pos: 0 };
        let f = p.or()?;
        if let Some(t) = p.tokens.get(p.pos) {
            return Err(FilterError(format!("syntax error at '{t}'")));
        }
        Ok(f)
    }
}

fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c.is_whitespace() || c == '(' || c == ')' {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

struct Parser {
    tokens: Vec<String>,
    pos: usize,
}

impl Parser {
    fn next(&mut self) -> Option<&str> {
        let t = self.tokens.get(self.pos)?;
        self.pos += 1;
        Some(t)
    }

    fn peek_is(&self, word: &str) -> bool {
        self.tokens.get(self.pos).is_some_and(|t| t == word)
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        while self.peek_is("or") {
            self.pos += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.atom()?;
        while self.peek_is("and") {
            self.pos += 1;
            left = Filter::And(Box::new(left), Box::new(self.atom()?));
        }
        Ok(left)
    }

    fn atom(&mut self) -> Result<Filter, FilterError> {
        if self.peek_is("(") {
            self.pos += 1;
            let inner = self.or()?;
            if !self.peek_is(")") {
                return Err(FilterError("')' expected".into()));
            }
            self.pos += 1;
            return Ok(inner);
        }
        let prop = match self.next() {
            Some("lastUpdateTime") => Property::LastUpdateTime,
            Some("alertCreationTime") => Property::AlertCreationTime,
            Some(other) => {
                return Err(FilterError(format!(
                    "could not find a property named '{other}' that can be filtered on by time"
                )))
            }
            None => return Err(FilterError("expression expected at the end".into())),
        };
        let op = match self.next() {
            Some("eq") => Op::Eq,
            Some("ne") => Op::Ne,
            Some("gt") => Op::Gt,
            Some("ge") => Op::Ge,
            Some("lt") => Op::Lt,
            Some("le") => Op::Le,
            Some(other) => return Err(FilterError(format!("unknown operator '{other}'"))),
            None => return Err(FilterError("operator expected at the end".into())),
        };
        let value = match self.next() {
            Some(v) => v.to_owned(),
            None => return Err(FilterError("value expected at the end".into())),
        };
        if value.starts_with('\'') {
            return Err(FilterError(format!(
                "a binary operator with incompatible types was detected: found operand types \
                 'Edm.DateTimeOffset' and 'Edm.String' ({value})"
            )));
        }
        let ts = Timestamp::parse(&value).map_err(|_| {
            FilterError(format!(
                "unrecognized 'Edm.DateTimeOffset' literal '{value}'"
            ))
        })?;
        Ok(Filter::Cmp(prop, op, ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn ge_includes_the_bound_and_lt_excludes_it_at_full_precision() {
        let f = Filter::parse(
            "lastUpdateTime ge 2021-01-26T20:33:59.2Z and lastUpdateTime lt 2021-01-26T20:33:59.2000002Z",
        )
        .unwrap();
        let c = ts("2000-01-01T00:00:00Z");
        assert!(f.matches(ts("2021-01-26T20:33:59.2000000Z"), c));
        assert!(f.matches(ts("2021-01-26T20:33:59.2000001Z"), c));
        assert!(!f.matches(ts("2021-01-26T20:33:59.2000002Z"), c));
        assert!(!f.matches(ts("2021-01-26T20:33:59.1999999Z"), c));
    }

    #[test]
    fn or_and_parentheses_and_creation_time() {
        let f = Filter::parse(
            "(alertCreationTime gt 2021-01-01T00:00:00Z or lastUpdateTime eq 2020-01-01T00:00:00.5Z) and lastUpdateTime ne 2022-01-01T00:00:00Z",
        )
        .unwrap();
        assert!(f.matches(
            ts("2020-01-01T00:00:00.5000000Z"),
            ts("2019-01-01T00:00:00Z")
        ));
        assert!(f.matches(ts("2021-06-01T00:00:00Z"), ts("2021-06-01T00:00:00Z")));
        assert!(!f.matches(ts("2022-01-01T00:00:00Z"), ts("2021-06-01T00:00:00Z")));
    }

    #[test]
    fn refuses_what_the_service_refuses() {
        for bad in [
            "",
            "lastUpdateTime ge '2021-01-26T20:33:59Z'",
            "lastUpdateTime ge 2021-01-26",
            "lastUpdateTime >= 2021-01-26T20:33:59Z",
            "severity eq 2021-01-26T20:33:59Z",
            "lastUpdateTime ge 2021-01-26T20:33:59Z and",
            "(lastUpdateTime ge 2021-01-26T20:33:59Z",
            "lastUpdateTime ge 2021-01-26T20:33:59Z extra",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad:?}");
        }
    }
}
