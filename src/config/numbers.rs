//! Provisioned extension numbers: ranges, lookup, and per-range policy and credentials.
//!
//! # Width rule
//! A number is a string of 1 to 19 ASCII digits, and its width is part of it: a range's two
//! ends have the same number of digits, and the range holds exactly the numbers of that width
//! between them. `"0100-0199"` holds `0100` … `0199` but not `100`; `"1000-1999"` does not hold
//! `01000`. So a number matches at most one place, and the width never has to be guessed.
//!
//! # Lookup
//! Ranges are never expanded: [`ExtensionIndex`] keeps them sorted by `(width, start)` and
//! finds a number with one binary search (about 20 comparisons for 1,000,000 single-number
//! ranges). Passwords from a template are produced only when asked for.

use std::fmt;
use std::time::Duration;

use super::ForkMode;
use crate::core::registrar::digest::{Algorithm, Ha1};

/// Longest extension number (fits a `u64`).
pub const MAX_NUMBER_WIDTH: usize = 19;

/// An inclusive range of numbers of one width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NumberRange {
    /// Digits of every number in the range.
    pub width: u8,
    /// First number.
    pub start: u64,
    /// Last number.
    pub end: u64,
}

impl NumberRange {
    /// How many numbers the range holds.
    pub fn count(&self) -> u64 {
        self.end - self.start + 1
    }

    fn overlaps(&self, other: &NumberRange) -> bool {
        self.width == other.width && self.start <= other.end && other.start <= self.end
    }
}

impl fmt::Display for NumberRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = usize::from(self.width);
        if self.start == self.end {
            write!(f, "{:0w$}", self.start)
        } else {
            write!(f, "{:0w$}-{:0w$}", self.start, self.end)
        }
    }
}

/// `(width, value)` of a number written in digits, or `None`.
pub(super) fn parse_number(text: &[u8]) -> Option<(u8, u64)> {
    if text.is_empty() || text.len() > MAX_NUMBER_WIDTH || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = text
        .iter()
        .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
    Some((text.len() as u8, value))
}

/// Parses `"1000-1999"` or `"1000"`.
pub(super) fn parse_number_spec(text: &str) -> Result<NumberRange, String> {
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (text.trim(), text.trim()),
    };
    let bad = |which: &str| {
        format!("{text:?}: {which} must be 1 to {MAX_NUMBER_WIDTH} digits (a range is written \"1000-1999\")")
    };
    let (width, start) = parse_number(first.as_bytes()).ok_or_else(|| bad("a number"))?;
    let (end_width, end) =
        parse_number(last.as_bytes()).ok_or_else(|| bad("the end of the range"))?;
    if width != end_width {
        return Err(format!(
            "{text:?}: both ends of a range need the same number of digits (leading zeros count: \"0100-0199\")"
        ));
    }
    if start > end {
        return Err(format!("{text:?}: the range starts after it ends"));
    }
    Ok(NumberRange { width, start, end })
}

/// Public numbers (`[[dids]]`) that lead to an extension: E.164 ranges, a leading `+` kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DidRange {
    /// Written with a leading `+`.
    pub plus: bool,
    /// The digits after it.
    pub range: NumberRange,
    /// The extension calls to these numbers go to.
    pub extension: Vec<u8>,
}

impl DidRange {
    /// Parses `"+31201234000-+31201234999"` (or one number) for `extension`.
    pub(super) fn parse(text: &str, extension: &str) -> Result<DidRange, String> {
        let (a, b) = text.split_once('-').unwrap_or((text, text));
        let (a, b) = (a.trim(), b.trim());
        let plus = a.starts_with('+');
        if plus != b.starts_with('+') {
            return Err(format!(
                "{text:?}: write the + on both ends of the range or on neither"
            ));
        }
        let digits = format!(
            "{}-{}",
            a.trim_start_matches('+'),
            b.trim_start_matches('+')
        );
        Ok(DidRange {
            plus,
            range: parse_number_spec(&digits)?,
            extension: extension.as_bytes().to_vec(),
        })
    }

    /// Does `number` (as dialled, `+` included) fall in the range?
    pub fn contains(&self, number: &[u8]) -> bool {
        let (plus, digits) = match number.strip_prefix(b"+") {
            Some(d) => (true, d),
            None => (false, number),
        };
        plus == self.plus
            && parse_number(digits).is_some_and(|(w, v)| {
                w == self.range.width && (self.range.start..=self.range.end).contains(&v)
            })
    }
}

/// A password template: literal text with `{number}` placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<TemplatePart>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TemplatePart {
    Literal(String),
    Number,
}

impl Template {
    /// True when the template contains `{number}`.
    pub fn uses_number(&self) -> bool {
        self.parts.contains(&TemplatePart::Number)
    }

    /// The password for a number of `width` digits.
    pub fn expand(&self, width: u8, number: u64) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Literal(text) => out.push_str(text),
                TemplatePart::Number => {
                    out.push_str(&format!("{number:0w$}", w = usize::from(width)))
                }
            }
        }
        out
    }
}

/// Parses a template; `{{` and `}}` write literal braces.
pub(super) fn parse_template(text: &str) -> Result<Template, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("{number}") {
            if !literal.is_empty() {
                parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(TemplatePart::Number);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("{{").or_else(|| rest.strip_prefix("}}")) {
            literal.push(c);
            rest = after;
        } else if c == '{' || c == '}' {
            return Err(format!(
                "{text:?}: the only placeholder is {{number}} (write {{{{ or }}}} for a literal brace)"
            ));
        } else {
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !literal.is_empty() {
        parts.push(TemplatePart::Literal(literal));
    }
    if parts.is_empty() {
        return Err("the password is empty".into());
    }
    Ok(Template { parts })
}

/// Where a table's credentials come from.
#[derive(Clone, Debug)]
pub(super) enum Secret {
    /// `auth.mode = "none"`, or no credential given.
    None,
    Template(Template),
    Ha1 {
        md5: Option<[u8; 16]>,
        sha256: Option<[u8; 32]>,
    },
}

/// One `[[extensions]]` table: its overrides and credential source.
#[derive(Clone, Debug)]
pub(super) struct ExtensionTable {
    pub secret: Secret,
    pub max_contacts: Option<u32>,
    pub fork: Option<ForkMode>,
    pub group_timeout: Option<Duration>,
    pub single_answer: Option<bool>,
    /// The tenancy level the numbers belong to (`None`: directly under the server).
    pub tenant: Option<usize>,
    /// A trunk's static addresses (a PBX that never registers), first preferred.
    pub trunk: Vec<std::net::SocketAddr>,
    /// The transport each of `trunk`'s addresses is reached over (same order): UDP for a bare
    /// `IP:port`, else its URI's `;transport=tcp|tls`.
    pub trunk_transports: Vec<crate::core::transport::Transport>,
    /// Simultaneous calls all devices of one number may place.
    pub max_outgoing_calls: Option<u32>,
    /// While a device of the number is in a confirmed call, new calls to it get 486.
    pub all_busy: bool,
    /// Per device class (id), how many devices of that class a number may register.
    pub class_limits: Vec<(u8, u32)>,
}

impl ExtensionTable {
    /// Do its numbers need per-number call counters (`core::policy::ledger::Lines`)?
    pub fn needs_lines(&self) -> bool {
        self.max_outgoing_calls.is_some() || self.all_busy
    }
}

/// Per-number counters allowed at most (over every table that needs them).
pub const MAX_LINES: u64 = 1 << 20;

/// The global defaults a table's overrides fall back to.
#[derive(Clone, Copy, Debug)]
pub(super) struct PolicyDefaults {
    pub max_contacts: u32,
    pub fork: ForkMode,
    pub group_timeout: Duration,
    pub single_answer: bool,
}

#[derive(Clone, Copy, Debug)]
struct IndexedRange {
    range: NumberRange,
    table: u32,
    /// First per-number counter of the range, when its table needs them.
    line_base: Option<u32>,
}

/// Every provisioned number, as sorted ranges.
#[derive(Clone, Debug, Default)]
pub(super) struct ExtensionIndex {
    ranges: Vec<IndexedRange>,
    tables: Vec<ExtensionTable>,
    lines: usize,
}

/// Two ranges that overlap: `(table, range)` of the earlier and the later one.
pub(super) struct Overlap {
    pub first: (usize, NumberRange),
    pub second: (usize, NumberRange),
}

impl ExtensionIndex {
    /// Builds the index; fails on the first overlap (in file order of the later table).
    pub(super) fn build(
        tables: Vec<(ExtensionTable, Vec<NumberRange>)>,
    ) -> Result<Self, Box<Overlap>> {
        let mut ranges = Vec::new();
        let mut kept = Vec::with_capacity(tables.len());
        for (i, (table, table_ranges)) in tables.into_iter().enumerate() {
            ranges.extend(table_ranges.into_iter().map(|range| IndexedRange {
                range,
                table: i as u32,
                line_base: None,
            }));
            kept.push(table);
        }
        ranges.sort_by_key(|r| (r.range.width, r.range.start, r.table));
        let mut worst: Option<Overlap> = None;
        // Sorted by start, a range can only overlap the furthest-reaching one before it.
        let mut reach: Option<IndexedRange> = None;
        for &r in &ranges {
            if let Some(prev) = reach.filter(|p| p.range.overlaps(&r.range)) {
                let (a, b) = if prev.table <= r.table {
                    (prev, r)
                } else {
                    (r, prev)
                };
                let candidate = Overlap {
                    first: (a.table as usize, a.range),
                    second: (b.table as usize, b.range),
                };
                if worst
                    .as_ref()
                    .is_none_or(|w| candidate.second.0 < w.second.0)
                {
                    worst = Some(candidate);
                }
            }
            if reach.is_none_or(|p| p.range.width != r.range.width || p.range.end < r.range.end) {
                reach = Some(r);
            }
        }
        if let Some(overlap) = worst {
            return Err(Box::new(overlap));
        }
        let mut lines = 0u64;
        for r in &mut ranges {
            if kept[r.table as usize].needs_lines() && lines + r.range.count() <= MAX_LINES {
                r.line_base = Some(lines as u32);
                lines += r.range.count();
            }
        }
        Ok(ExtensionIndex {
            ranges,
            tables: kept,
            lines: lines as usize,
        })
    }

    /// Per-number counters the tables need.
    pub(super) fn lines(&self) -> usize {
        self.lines
    }

    /// Numbers that need per-number counters beyond [`MAX_LINES`] (a configuration error).
    pub(super) fn lines_wanted(&self) -> u64 {
        self.ranges
            .iter()
            .filter(|r| self.tables[r.table as usize].needs_lines())
            .map(|r| r.range.count())
            .sum()
    }

    /// The table index and parsed number, when `number` is provisioned.
    pub(super) fn find(&self, number: &[u8]) -> Option<(usize, u8, u64)> {
        self.find_range(number)
            .map(|(r, width, value)| (r.table as usize, width, value))
    }

    fn find_range(&self, number: &[u8]) -> Option<(&IndexedRange, u8, u64)> {
        let (width, value) = parse_number(number)?;
        let after = self
            .ranges
            .partition_point(|r| (r.range.width, r.range.start) <= (width, value));
        let candidate = self.ranges.get(after.checked_sub(1)?)?;
        (candidate.range.width == width && value <= candidate.range.end)
            .then_some((candidate, width, value))
    }

    /// The per-number counter of `number`, when its table needs them.
    pub(super) fn line(&self, number: &[u8]) -> Option<usize> {
        let (r, _, value) = self.find_range(number)?;
        Some(r.line_base? as usize + (value - r.range.start) as usize)
    }

    pub(super) fn table(&self, index: usize) -> &ExtensionTable {
        &self.tables[index]
    }

    /// Numbers provisioned in total.
    pub(super) fn count(&self) -> u64 {
        self.ranges.iter().map(|r| r.range.count()).sum()
    }

    /// Ranges in total.
    pub(super) fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Ranges in number order.
    pub(super) fn ranges(&self) -> impl Iterator<Item = NumberRange> + '_ {
        self.ranges.iter().map(|r| r.range)
    }
}

/// What applies to one provisioned number: the global settings with its table's overrides.
#[derive(Clone, Copy, Debug)]
pub struct ExtensionPolicy<'a> {
    /// Most devices (bindings) the number may have.
    pub max_contacts: u32,
    /// How calls to the number fork.
    pub fork: ForkMode,
    /// How long one q-group rings before the next.
    pub group_timeout: Duration,
    /// Whether only the first 2xx is passed to the caller.
    pub single_answer: bool,
    table: &'a ExtensionTable,
    table_index: usize,
    width: u8,
    number: u64,
}

impl<'a> ExtensionPolicy<'a> {
    pub(super) fn new(
        index: &'a ExtensionIndex,
        found: (usize, u8, u64),
        defaults: PolicyDefaults,
    ) -> Self {
        let (table_index, width, number) = found;
        let table = index.table(table_index);
        ExtensionPolicy {
            max_contacts: table.max_contacts.unwrap_or(defaults.max_contacts),
            fork: table.fork.unwrap_or(defaults.fork),
            group_timeout: table.group_timeout.unwrap_or(defaults.group_timeout),
            single_answer: table.single_answer.unwrap_or(defaults.single_answer),
            table,
            table_index,
            width,
            number,
        }
    }

    /// Which `[[extensions]]` table (0-based, file order) provisions the number.
    pub fn table_index(&self) -> usize {
        self.table_index
    }

    /// The tenancy level the number belongs to (0: directly under the server).
    pub fn tenant(&self) -> usize {
        self.table.tenant.unwrap_or(0)
    }

    /// The trunk's static addresses when the number is a trunk (a PBX), else empty.
    pub fn trunk(&self) -> &'a [std::net::SocketAddr] {
        &self.table.trunk
    }

    /// The transport the trunk's address `addr` is configured with (UDP when not a trunk's).
    pub fn trunk_transport(&self, addr: std::net::SocketAddr) -> crate::core::transport::Transport {
        let i = self.table.trunk.iter().position(|&a| a == addr);
        i.and_then(|i| self.table.trunk_transports.get(i).copied())
            .unwrap_or(crate::core::transport::Transport::Udp)
    }

    /// Simultaneous calls the number's devices may place (`None`: no limit).
    pub fn max_outgoing_calls(&self) -> Option<u32> {
        self.table.max_outgoing_calls
    }

    /// New calls get 486 while a device of the number is in a confirmed call.
    pub fn all_busy(&self) -> bool {
        self.table.all_busy
    }

    /// How many devices of class `class` the number may register (`None`: only `max_contacts`
    /// limits them).
    pub fn class_limit(&self, class: u8) -> Option<u32> {
        self.table
            .class_limits
            .iter()
            .find(|(c, _)| *c == class)
            .map(|(_, l)| *l)
    }

    /// The number's credential; a template password is expanded here, on demand.
    pub fn credential(&self) -> Credential<'a> {
        match &self.table.secret {
            Secret::None => Credential::None,
            Secret::Template(t) => Credential::Password(t.expand(self.width, self.number)),
            Secret::Ha1 { md5, sha256 } => Credential::Ha1 {
                md5: md5.as_ref(),
                sha256: sha256.as_ref(),
            },
        }
    }
}

/// How a number authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    /// No credential: `auth.mode = "none"`.
    None,
    /// A plain password (expanded from the table's template).
    Password(String),
    /// Precomputed `H(number:realm:password)` per base algorithm.
    Ha1 {
        /// For `MD5` and `MD5-sess`.
        md5: Option<&'a [u8; 16]>,
        /// For `SHA-256` and `SHA-256-sess`.
        sha256: Option<&'a [u8; 32]>,
    },
}

impl Credential<'_> {
    /// The HA1 digest verification needs for `algorithm`'s base, or `None` when this credential
    /// has none for it.
    pub fn ha1(&self, algorithm: Algorithm, username: &[u8], realm: &[u8]) -> Option<Ha1> {
        match self {
            Credential::None => None,
            Credential::Password(password) => Some(Ha1::from_password(
                algorithm,
                username,
                realm,
                password.as_bytes(),
            )),
            Credential::Ha1 { md5, sha256 } => match algorithm.base() {
                Algorithm::Sha256 => sha256.and_then(|h| Ha1::from_bytes(algorithm, h)),
                _ => md5.and_then(|h| Ha1::from_bytes(algorithm, h)),
            },
        }
    }
}

impl fmt::Debug for Credential<'_> {
    // Secrets stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::None => f.write_str("None"),
            Credential::Password(_) => f.write_str("Password(…)"),
            Credential::Ha1 { md5, sha256 } => write!(
                f,
                "Ha1 {{ md5: {}, sha256: {} }}",
                md5.is_some(),
                sha256.is_some()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> NumberRange {
        parse_number_spec(text).unwrap()
    }

    fn table() -> ExtensionTable {
        ExtensionTable {
            secret: Secret::None,
            max_contacts: None,
            fork: None,
            group_timeout: None,
            single_answer: None,
            tenant: None,
            trunk: Vec::new(),
            trunk_transports: Vec::new(),
            max_outgoing_calls: None,
            all_busy: false,
            class_limits: Vec::new(),
        }
    }

    #[test]
    fn number_specs() {
        assert_eq!(
            range("1000-1999"),
            NumberRange {
                width: 4,
                start: 1000,
                end: 1999
            }
        );
        assert_eq!(
            range("0100-0199"),
            NumberRange {
                width: 4,
                start: 100,
                end: 199
            }
        );
        assert_eq!(
            range("42"),
            NumberRange {
                width: 2,
                start: 42,
                end: 42
            }
        );
        assert_eq!(
            range(" 7 - 9 "),
            NumberRange {
                width: 1,
                start: 7,
                end: 9
            }
        );
        assert_eq!(range("0100-0199").to_string(), "0100-0199");
        for bad in [
            "",
            "-",
            "100-1999",
            "1999-1000",
            "12a",
            "+49",
            "1-2-3",
            "12345678901234567890",
        ] {
            assert!(parse_number_spec(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse_number_spec("1234567890123456789").is_ok(),
            "19 digits fit"
        );
    }

    #[test]
    fn lookup_respects_width() {
        let index = ExtensionIndex::build(vec![
            (table(), vec![range("0100-0199")]),
            (table(), vec![range("1000-1999"), range("5")]),
            (table(), vec![range("100-150")]),
        ])
        .unwrap_or_else(|_| panic!("no overlap"));
        assert_eq!(index.find(b"0100").map(|f| f.0), Some(0));
        assert_eq!(index.find(b"0199").map(|f| f.0), Some(0));
        assert_eq!(index.find(b"0200"), None);
        assert_eq!(index.find(b"100").map(|f| f.0), Some(2));
        assert_eq!(index.find(b"151"), None);
        assert_eq!(index.find(b"1500").map(|f| f.0), Some(1));
        assert_eq!(index.find(b"01500"), None);
        assert_eq!(index.find(b"5").map(|f| f.0), Some(1));
        assert_eq!(index.find(b"4"), None);
        for junk in [&b""[..], b"abc", b"10 0", b"99999999999999999999999"] {
            assert_eq!(index.find(junk), None);
        }
        assert_eq!(index.count(), 100 + 1000 + 1 + 51);
    }

    #[test]
    fn overlaps_are_found_even_behind_a_long_range() {
        let result = ExtensionIndex::build(vec![
            (table(), vec![range("1000-1999")]),
            (table(), vec![range("1100")]),
            (table(), vec![range("1500-1600")]),
        ]);
        let overlap = result.expect_err("overlap");
        assert_eq!(overlap.first, (0, range("1000-1999")));
        assert_eq!(overlap.second, (1, range("1100")));
        // Same digits, other width: no overlap.
        assert!(
            ExtensionIndex::build(vec![(table(), vec![range("100-199"), range("0100-0199")])])
                .is_ok()
        );
        // Adjacent is fine.
        assert!(
            ExtensionIndex::build(vec![(table(), vec![range("100-199"), range("200-299")])])
                .is_ok()
        );
        // Within one table too.
        assert!(
            ExtensionIndex::build(vec![(table(), vec![range("100-199"), range("199")])]).is_err()
        );
    }

    #[test]
    fn templates() {
        let t = parse_template("pw-{number}").unwrap();
        assert_eq!(t.expand(4, 42), "pw-0042");
        assert!(t.uses_number());
        let t = parse_template("{{x}}{number}{number}").unwrap();
        assert_eq!(t.expand(2, 7), "{x}0707");
        let t = parse_template("shared secret ü").unwrap();
        assert!(!t.uses_number());
        assert_eq!(t.expand(4, 1000), "shared secret ü");
        for bad in ["", "pw-{num}", "pw-{", "}"] {
            assert!(parse_template(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_million_numbers_without_expansion() {
        // 1,000,000 provisioned numbers as 1,000 ranges and 1,000 single numbers beside them.
        let tables = (0..1000u64)
            .map(|i| {
                let start = 10_000_000 + i * 1000;
                let r = NumberRange {
                    width: 8,
                    start,
                    end: start + 999,
                };
                (
                    table(),
                    vec![
                        r,
                        NumberRange {
                            width: 6,
                            start: 100_000 + i,
                            end: 100_000 + i,
                        },
                    ],
                )
            })
            .collect();
        let index = ExtensionIndex::build(tables).unwrap_or_else(|_| panic!("no overlap"));
        assert_eq!(index.count(), 1_001_000);
        assert_eq!(index.range_count(), 2000);
        assert_eq!(index.find(b"10000000").map(|f| f.0), Some(0));
        assert_eq!(index.find(b"10999999").map(|f| f.0), Some(999));
        assert_eq!(index.find(b"10500123").map(|f| f.0), Some(500));
        assert_eq!(index.find(b"11000000"), None);
        assert_eq!(index.find(b"100999").map(|f| f.0), Some(999));
        assert_eq!(index.find(b"101000"), None);
    }

    /// Lookup cost, not a pass/fail test:
    /// `cargo test --release --lib config::numbers -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn lookup_figures() {
        let singles: Vec<(ExtensionTable, Vec<NumberRange>)> = vec![(
            table(),
            (0..1_000_000u64)
                .map(|i| NumberRange {
                    width: 7,
                    start: 1_000_000 + 3 * i,
                    end: 1_000_000 + 3 * i,
                })
                .collect(),
        )];
        let clock = std::time::Instant::now();
        let index = ExtensionIndex::build(singles).unwrap_or_else(|_| panic!("no overlap"));
        let build = clock.elapsed();
        let queries: Vec<String> = (0..1_000_000u64)
            .map(|i| (1_000_000 + (i * 7919) % 3_000_000).to_string())
            .collect();
        let clock = std::time::Instant::now();
        let hits = queries
            .iter()
            .filter(|q| index.find(q.as_bytes()).is_some())
            .count();
        let per_lookup = clock.elapsed().as_nanos() as f64 / queries.len() as f64;
        let ranges: Vec<(ExtensionTable, Vec<NumberRange>)> = (0..1000u64)
            .map(|i| {
                (
                    table(),
                    vec![NumberRange {
                        width: 7,
                        start: 1_000_000 + i * 3000,
                        end: 1_000_000 + i * 3000 + 999,
                    }],
                )
            })
            .collect();
        let ranged = ExtensionIndex::build(ranges).unwrap_or_else(|_| panic!("no overlap"));
        let clock = std::time::Instant::now();
        let ranged_hits = queries
            .iter()
            .filter(|q| ranged.find(q.as_bytes()).is_some())
            .count();
        let per_ranged = clock.elapsed().as_nanos() as f64 / queries.len() as f64;
        println!(
            "extension index: 1,000,000 single-number ranges built in {:.0} ms, {} bytes/range; \
             lookup {per_lookup:.0} ns ({hits} hits of {}); 1,000,000 numbers as 1,000 ranges: lookup \
             {per_ranged:.0} ns ({ranged_hits} hits)",
            build.as_secs_f64() * 1e3,
            std::mem::size_of::<IndexedRange>(),
            queries.len()
        );
    }
}
