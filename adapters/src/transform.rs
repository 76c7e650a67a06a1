//! Value transforms between the bus's values and an agency's, as agencies commonly need them:
//! date and time patterns (`dd/MM/yyyy`, `yyyyMMdd`, `dd/MM/yyyy HH:mm:ss`, both ways) and
//! code tables (bus code ↔ agency code, with an error naming an unknown value unless a default
//! is configured).
//!
//! The bus's side is fixed: dates are ISO 8601 `YYYY-MM-DD` (the envelope's `ngay_sinh`),
//! times RFC 3339 (`sent_at`); an agency's times carry no offset and are Vietnam time
//! (UTC+07:00), as in the reference interfaces.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

impl Token {
    fn width(self) -> usize {
        if self == Token::Year { 4 } else { 2 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Field(Token),
    Literal(char),
}

/// An agency's date or time pattern: `yyyy` (year, 4 digits), `MM` (month), `dd` (day),
/// `HH` (hour, 00–23), `mm` (minute), `ss` (second), each zero-padded to its width; any other
/// character that is not a letter stands for itself (`dd/MM/yyyy`, `yyyyMMdd`,
/// `dd/MM/yyyy HH:mm:ss`, `yyyy-MM-dd'T'`… is not supported: no quoted letters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatePattern {
    text: String,
    pieces: Vec<Piece>,
}

impl DatePattern {
    /// Compile a pattern.
    ///
    /// Errors: another letter than the tokens, or no year, month and day.
    pub fn parse(text: &str) -> Result<DatePattern, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        'scan: while let Some(c) = rest.chars().next() {
            for (tok, t) in [
                ("yyyy", Token::Year),
                ("MM", Token::Month),
                ("dd", Token::Day),
                ("HH", Token::Hour),
                ("mm", Token::Minute),
                ("ss", Token::Second),
            ] {
                if let Some(r) = rest.strip_prefix(tok) {
                    pieces.push(Piece::Field(t));
                    rest = r;
                    continue 'scan;
                }
            }
            if c.is_alphabetic() {
                return Err(format!(
                    "date pattern {text:?}: {c:?} is not one of yyyy, MM, dd, HH, mm, ss"
                ));
            }
            pieces.push(Piece::Literal(c));
            rest = &rest[c.len_utf8()..];
        }
        for t in [Token::Year, Token::Month, Token::Day] {
            if !pieces.contains(&Piece::Field(t)) {
                return Err(format!("date pattern {text:?} needs yyyy, MM and dd"));
            }
        }
        Ok(DatePattern {
            text: text.to_string(),
            pieces,
        })
    }

    /// Whether the pattern has a time of day.
    pub fn has_time(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Field(Token::Hour | Token::Minute | Token::Second)))
    }

    /// A bus value in the agency's pattern. The value is a date `YYYY-MM-DD` (midnight when
    /// the pattern has a time), an RFC 3339 time (in Vietnam time), or the DVCQG form
    /// `yyyyMMddHHmmss` (`$now`).
    ///
    /// Errors: a value of none of these shapes, naming it.
    pub fn to_agency(&self, bus: &str) -> Result<String, String> {
        let t = bus.trim();
        let at = if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
            d.and_time(NaiveTime::MIN)
        } else if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(t) {
            dt.with_timezone(&lienthong_core::clock::vn_offset())
                .naive_local()
        } else if let Ok(dt) = NaiveDateTime::parse_from_str(t, "%Y%m%d%H%M%S") {
            dt
        } else {
            return Err(format!(
                "{bus:?} is neither a date YYYY-MM-DD nor an RFC 3339 time"
            ));
        };
        let mut out = String::with_capacity(self.text.len());
        for p in &self.pieces {
            match p {
                Piece::Literal(c) => out.push(*c),
                Piece::Field(Token::Year) => out.push_str(&format!("{:04}", at.year())),
                Piece::Field(Token::Month) => out.push_str(&format!("{:02}", at.month())),
                Piece::Field(Token::Day) => out.push_str(&format!("{:02}", at.day())),
                Piece::Field(Token::Hour) => out.push_str(&format!("{:02}", at.hour())),
                Piece::Field(Token::Minute) => out.push_str(&format!("{:02}", at.minute())),
                Piece::Field(Token::Second) => out.push_str(&format!("{:02}", at.second())),
            }
        }
        Ok(out)
    }

    /// An agency's value in the bus's form: `YYYY-MM-DD`, or, when the pattern has a time,
    /// RFC 3339 with Vietnam's offset (`2026-11-29T14:30:00+07:00`).
    ///
    /// Errors: the value does not match the pattern or is not a real date, naming both.
    pub fn to_bus(&self, agency: &str) -> Result<String, String> {
        let bad = || format!("{agency:?} is not a date of the form {:?}", self.text);
        let mut rest = agency.trim();
        // year, month, day, hour, minute, second (by `Token as usize`)
        let mut n = [0u32; 6];
        for p in &self.pieces {
            match p {
                Piece::Literal(c) => rest = rest.strip_prefix(*c).ok_or_else(bad)?,
                Piece::Field(t) => {
                    let w = t.width();
                    let digits = rest
                        .get(..w)
                        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()));
                    let v: u32 = digits.and_then(|d| d.parse().ok()).ok_or_else(bad)?;
                    n[*t as usize] = v;
                    rest = &rest[w..];
                }
            }
        }
        if !rest.is_empty() {
            return Err(bad());
        }
        let date = NaiveDate::from_ymd_opt(n[0] as i32, n[1], n[2]).ok_or_else(bad)?;
        if !self.has_time() {
            return Ok(date.format("%Y-%m-%d").to_string());
        }
        let time = NaiveTime::from_hms_opt(n[3], n[4], n[5]).ok_or_else(bad)?;
        date.and_time(time)
            .and_local_timezone(lienthong_core::clock::vn_offset())
            .single()
            .map(|t| t.to_rfc3339())
            .ok_or_else(bad)
    }
}

/// A code table: one side's code → the other's, with an optional default for a code it
/// lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeTable {
    /// Its name in reasons (`code_tables.gioi_tinh`, or the field's inline table).
    pub name: String,
    map: BTreeMap<String, String>,
    default: Option<String>,
}

impl CodeTable {
    /// A table from its entries (`from` → `to`; values may be strings, numbers or booleans,
    /// taken as their text) and a default.
    ///
    /// Errors: an entry whose value is not a scalar.
    pub fn new(
        name: &str,
        entries: &serde_json::Map<String, serde_json::Value>,
        default: Option<String>,
    ) -> Result<CodeTable, String> {
        let mut map = BTreeMap::new();
        for (k, v) in entries {
            let to = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => v.to_string(),
                _ => {
                    return Err(format!(
                        "{name}: the code for {k:?} is not a string or number"
                    ));
                }
            };
            map.insert(k.clone(), to);
        }
        Ok(CodeTable {
            name: name.to_string(),
            map,
            default,
        })
    }

    /// The same table read the other way (agency code → bus code), for reading answers.
    ///
    /// Errors: two codes that map to the same one (the reverse would be ambiguous).
    pub fn reversed(&self) -> Result<CodeTable, String> {
        let mut map = BTreeMap::new();
        for (k, v) in &self.map {
            if let Some(other) = map.insert(v.clone(), k.clone()) {
                return Err(format!(
                    "{}: {other:?} and {k:?} both map to {v:?}, so it cannot be read back",
                    self.name
                ));
            }
        }
        Ok(CodeTable {
            name: format!("{} (reversed)", self.name),
            map,
            default: None,
        })
    }

    /// With `default` for codes the table lacks.
    pub fn with_default(mut self, default: Option<String>) -> CodeTable {
        if default.is_some() {
            self.default = default;
        }
        self
    }

    /// The code for `from`.
    ///
    /// Errors: `from` has no entry and there is no default; the reason names the value and
    /// the codes the table knows.
    pub fn lookup(&self, from: &str) -> Result<String, String> {
        if let Some(to) = self.map.get(from) {
            return Ok(to.clone());
        }
        self.default.clone().ok_or_else(|| {
            format!(
                "{from:?} has no entry in {} (it knows {}) and no default is configured",
                self.name,
                self.map
                    .keys()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_go_to_the_agencys_patterns_and_back() {
        let dmy = DatePattern::parse("dd/MM/yyyy").expect("pattern");
        assert_eq!(dmy.to_agency("2026-11-20").as_deref(), Ok("20/11/2026"));
        assert_eq!(dmy.to_bus("20/11/2026").as_deref(), Ok("2026-11-20"));
        let compact = DatePattern::parse("yyyyMMdd").expect("pattern");
        assert_eq!(compact.to_agency("2026-11-20").as_deref(), Ok("20261120"));
        assert_eq!(compact.to_bus("20261120").as_deref(), Ok("2026-11-20"));
        let full = DatePattern::parse("dd/MM/yyyy HH:mm:ss").expect("pattern");
        assert!(full.has_time() && !dmy.has_time());
        // An RFC 3339 time is written in Vietnam time.
        assert_eq!(
            full.to_agency("2026-11-29T02:30:05Z").as_deref(),
            Ok("29/11/2026 09:30:05")
        );
        assert_eq!(
            full.to_agency("20261129093005").as_deref(),
            Ok("29/11/2026 09:30:05")
        );
        assert_eq!(
            full.to_bus("29/11/2026 09:30:05").as_deref(),
            Ok("2026-11-29T09:30:05+07:00")
        );
    }

    #[test]
    fn bad_dates_and_patterns_are_named() {
        let dmy = DatePattern::parse("dd/MM/yyyy").expect("pattern");
        let e = dmy.to_agency("20/11/2026").expect_err("not ISO");
        assert!(e.contains("\"20/11/2026\""), "{e}");
        let e = dmy.to_bus("31/02/2026").expect_err("no such day");
        assert!(e.contains("31/02/2026") && e.contains("dd/MM/yyyy"), "{e}");
        assert!(dmy.to_bus("2026-11-20").is_err());
        assert!(dmy.to_bus("20/11/2026 trailing").is_err());
        let e = DatePattern::parse("dd/MMM/yy").expect_err("letters");
        assert!(e.contains("'M'") || e.contains("'y'"), "{e}");
        assert!(DatePattern::parse("HH:mm").is_err(), "no date");
    }

    #[test]
    fn code_tables_map_both_ways_and_name_unknown_values() {
        let entries = json!({"nam": "1", "nu": 2})
            .as_object()
            .cloned()
            .expect("object");
        let t = CodeTable::new("code_tables.gioi_tinh", &entries, None).expect("table");
        assert_eq!(t.lookup("nu").as_deref(), Ok("2"));
        let e = t.lookup("khac").expect_err("unknown");
        assert!(
            e.contains("\"khac\"") && e.contains("code_tables.gioi_tinh"),
            "{e}"
        );
        assert_eq!(
            t.clone()
                .with_default(Some("0".into()))
                .lookup("khac")
                .as_deref(),
            Ok("0")
        );
        let back = t.reversed().expect("reversible");
        assert_eq!(back.lookup("1").as_deref(), Ok("nam"));
        let twice = json!({"a": "1", "b": "1"})
            .as_object()
            .cloned()
            .expect("object");
        let e = CodeTable::new("x", &twice, None)
            .expect("table")
            .reversed()
            .expect_err("ambiguous");
        assert!(e.contains("\"1\""), "{e}");
    }
}
