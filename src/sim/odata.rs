//! The OData `$filter` subsets the two alert APIs accept, in two dialects:
//! MDE (`lastUpdateTime` / `alertCreationTime`) and Graph (`lastUpdateDateTime`
//! / `createdDateTime` / `serviceSource`); `eq ne gt ge lt le`, `and`, `or`,
//! parentheses, Graph's `serviceSource in ('a','b')`, unquoted ISO 8601
//! datetimes compared at full 100 ns precision, single-quoted strings.
//!
//! Strict on purpose: a quoted datetime, an unknown property or operator, an
//! unknown `serviceSource` member is a 400, as the service answers, so a client
//! writing a filter the service would refuse fails in the tests rather than in
//! production.

use crate::timestamp::Timestamp;

/// Which API's property names a filter is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Mde,
    Graph,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeProperty {
    LastUpdate,
    Created,
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
    Time(TimeProperty, Op, Timestamp),
    /// `serviceSource eq|ne '…'`.
    Source(Op, String),
    /// `serviceSource in ('…', …)`.
    SourceIn(Vec<String>),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
}

/// What a filter looks at in one alert.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub last_update: Timestamp,
    pub created: Timestamp,
    /// Graph's spelling (`microsoftDefenderForEndpoint` for every MDE alert).
    pub service_source: &'a str,
}

/// Why a `$filter` was refused; the text goes into the 400's `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid filter clause: {0}")]
pub(crate) struct FilterError(pub String);

impl Filter {
    pub(crate) fn matches(&self, a: &Fields<'_>) -> bool {
        match self {
            Filter::Time(prop, op, v) => {
                let x = match prop {
                    TimeProperty::LastUpdate => a.last_update,
                    TimeProperty::Created => a.created,
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
            Filter::Source(Op::Ne, v) => a.service_source != v,
            Filter::Source(_, v) => a.service_source == v,
            Filter::SourceIn(list) => list.iter().any(|v| v == a.service_source),
            Filter::And(x, y) => x.matches(a) && y.matches(a),
            Filter::Or(x, y) => x.matches(a) || y.matches(a),
        }
    }

    /// A filter of `GET /api/alerts`.
    pub(crate) fn parse(text: &str) -> Result<Filter, FilterError> {
        Self::parse_in(Dialect::Mde, text)
    }

    /// A filter of `GET /v1.0/security/alerts_v2`.
    pub(crate) fn parse_graph(text: &str) -> Result<Filter, FilterError> {
        Self::parse_in(Dialect::Graph, text)
    }

    fn parse_in(dialect: Dialect, text: &str) -> Result<Filter, FilterError> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Err(FilterError("the $filter expression is empty".into()));
        }
        let mut p = Parser {
            tokens,
            pos: 0,
            dialect,
        };
        let f = p.or()?;
        if let Some(t) = p.tokens.get(p.pos) {
            return Err(FilterError(format!("syntax error at '{t}'")));
        }
        Ok(f)
    }
}

/// Words, `(`, `)`, `,`, and single-quoted strings kept whole with their
/// quotes (`''` inside one is a quote).
fn tokenize(text: &str) -> Result<Vec<String>, FilterError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' && cur.is_empty() {
            let mut s = String::from('\'');
            loop {
                match chars.next() {
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        s.push('\'');
                    }
                    Some('\'') => break,
                    Some(ch) => s.push(ch),
                    None => return Err(FilterError(format!("unterminated string literal {s}"))),
                }
            }
            s.push('\'');
            out.push(s);
        } else if c.is_whitespace() || matches!(c, '(' | ')' | ',') {
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
    Ok(out)
}

struct Parser {
    tokens: Vec<String>,
    pos: usize,
    dialect: Dialect,
}

enum Prop {
    Time(TimeProperty),
    ServiceSource,
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

    fn expect(&mut self, word: &str) -> Result<(), FilterError> {
        if self.peek_is(word) {
            self.pos += 1;
            Ok(())
        } else {
            Err(FilterError(format!("'{word}' expected")))
        }
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
            self.expect(")")?;
            return Ok(inner);
        }
        let dialect = self.dialect;
        let prop = match (dialect, self.next()) {
            (Dialect::Mde, Some("lastUpdateTime"))
            | (Dialect::Graph, Some("lastUpdateDateTime")) => Prop::Time(TimeProperty::LastUpdate),
            (Dialect::Mde, Some("alertCreationTime"))
            | (Dialect::Graph, Some("createdDateTime")) => Prop::Time(TimeProperty::Created),
            (Dialect::Graph, Some("serviceSource")) => Prop::ServiceSource,
            (_, Some(other)) => return Err(FilterError(format!(
                "could not find a property named '{other}' that can be filtered on{}",
                match dialect {
                    Dialect::Mde => " by time",
                    Dialect::Graph =>
                        " (the simulator models lastUpdateDateTime, createdDateTime, serviceSource)",
                }
            ))),
            (_, None) => return Err(FilterError("expression expected at the end".into())),
        };
        let op = match self.next() {
            Some("eq") => Op::Eq,
            Some("ne") => Op::Ne,
            Some("gt") => Op::Gt,
            Some("ge") => Op::Ge,
            Some("lt") => Op::Lt,
            Some("le") => Op::Le,
            Some("in") if matches!(prop, Prop::ServiceSource) => {
                self.expect("(")?;
                let mut list = vec![self.source_value()?];
                while self.peek_is(",") {
                    self.pos += 1;
                    list.push(self.source_value()?);
                }
                self.expect(")")?;
                return Ok(Filter::SourceIn(list));
            }
            Some(other) => return Err(FilterError(format!("unknown operator '{other}'"))),
            None => return Err(FilterError("operator expected at the end".into())),
        };
        match prop {
            Prop::ServiceSource => {
                if !matches!(op, Op::Eq | Op::Ne) {
                    return Err(FilterError(
                        "serviceSource is an enumeration: only eq, ne and in apply".into(),
                    ));
                }
                Ok(Filter::Source(op, self.source_value()?))
            }
            Prop::Time(t) => Ok(Filter::Time(t, op, self.datetime()?)),
        }
    }

    fn datetime(&mut self) -> Result<Timestamp, FilterError> {
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
        Timestamp::parse(&value).map_err(|_| {
            FilterError(format!(
                "unrecognized 'Edm.DateTimeOffset' literal '{value}'"
            ))
        })
    }

    fn source_value(&mut self) -> Result<String, FilterError> {
        let value = match self.next() {
            Some(v) => v.to_owned(),
            None => return Err(FilterError("value expected at the end".into())),
        };
        let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) else {
            return Err(FilterError(format!(
                "serviceSource takes a single-quoted string, not {value}"
            )));
        };
        if !super::graph::is_service_source(inner) {
            return Err(FilterError(format!(
                "The string '{inner}' is not a valid enumeration type constant for \
                 microsoft.graph.security.serviceSource."
            )));
        }
        Ok(inner.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn at(last_update: Timestamp, created: Timestamp) -> Fields<'static> {
        Fields {
            last_update,
            created,
            service_source: "microsoftDefenderForEndpoint",
        }
    }

    fn src(s: &str) -> Fields<'_> {
        let t = ts("2026-01-01T00:00:00Z");
        Fields {
            last_update: t,
            created: t,
            service_source: s,
        }
    }

    #[test]
    fn ge_includes_the_bound_and_lt_excludes_it_at_full_precision() {
        let f = Filter::parse(
            "lastUpdateTime ge 2021-01-26T20:33:59.2Z and lastUpdateTime lt 2021-01-26T20:33:59.2000002Z",
        )
        .unwrap();
        let c = ts("2000-01-01T00:00:00Z");
        assert!(f.matches(&at(ts("2021-01-26T20:33:59.2000000Z"), c)));
        assert!(f.matches(&at(ts("2021-01-26T20:33:59.2000001Z"), c)));
        assert!(!f.matches(&at(ts("2021-01-26T20:33:59.2000002Z"), c)));
        assert!(!f.matches(&at(ts("2021-01-26T20:33:59.1999999Z"), c)));
    }

    #[test]
    fn or_and_parentheses_and_creation_time() {
        let f = Filter::parse(
            "(alertCreationTime gt 2021-01-01T00:00:00Z or lastUpdateTime eq 2020-01-01T00:00:00.5Z) and lastUpdateTime ne 2022-01-01T00:00:00Z",
        )
        .unwrap();
        assert!(f.matches(&at(
            ts("2020-01-01T00:00:00.5000000Z"),
            ts("2019-01-01T00:00:00Z")
        )));
        assert!(f.matches(&at(ts("2021-06-01T00:00:00Z"), ts("2021-06-01T00:00:00Z"))));
        assert!(!f.matches(&at(ts("2022-01-01T00:00:00Z"), ts("2021-06-01T00:00:00Z"))));
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
            // Graph's names are not MDE's.
            "lastUpdateDateTime ge 2021-01-26T20:33:59Z",
            "serviceSource eq 'microsoftDefenderForEndpoint'",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn graph_dialect_filters_time_and_service_source() {
        let f = Filter::parse_graph(
            "lastUpdateDateTime ge 2021-01-26T20:33:59.2Z and (serviceSource eq 'microsoftDefenderForOffice365' or serviceSource in ('microsoftDefenderForIdentity','dataLossPrevention'))",
        )
        .unwrap();
        let c = ts("2000-01-01T00:00:00Z");
        let mut a = Fields {
            last_update: ts("2021-01-26T20:33:59.2Z"),
            created: c,
            service_source: "dataLossPrevention",
        };
        assert!(f.matches(&a));
        a.service_source = "microsoftDefenderForOffice365";
        assert!(f.matches(&a));
        a.service_source = "microsoftDefenderForEndpoint";
        assert!(!f.matches(&a));
        a.service_source = "dataLossPrevention";
        a.last_update = ts("2021-01-26T20:33:59.1999999Z");
        assert!(!f.matches(&a));

        let ne = Filter::parse_graph("serviceSource ne 'microsoftDefenderForEndpoint'").unwrap();
        assert!(!ne.matches(&src("microsoftDefenderForEndpoint")));
        assert!(ne.matches(&src("microsoftDefenderForCloud")));
        let created =
            Filter::parse_graph("createdDateTime lt 2026-01-01T00:00:00.0000001Z").unwrap();
        assert!(created.matches(&src("x")));
    }

    #[test]
    fn graph_dialect_refuses_what_graph_refuses() {
        for bad in [
            "lastUpdateTime ge 2021-01-26T20:33:59Z",
            "lastUpdateDateTime ge '2021-01-26T20:33:59Z'",
            "serviceSource eq microsoftDefenderForEndpoint",
            "serviceSource eq 'microsoftDefenderForEndpoin'",
            "serviceSource gt 'microsoftDefenderForEndpoint'",
            "serviceSource in ()",
            "serviceSource in ('dataLossPrevention'",
            "serviceSource eq 'dataLossPrevention",
            "lastUpdateDateTime in ('x')",
            "status eq 'new'",
        ] {
            assert!(Filter::parse_graph(bad).is_err(), "{bad:?}");
        }
    }
}
