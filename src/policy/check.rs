//! Checking a rules file: errors collected against the source text, each at its place, and
//! the readers of TOML tables and values that report unknown keys (with the valid ones and the
//! nearest), values of the wrong type and numbers out of range, so that one run finds every
//! problem in a file.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeInteger, DeTable, DeValue};

use super::error::{PolicyError, locate};
use super::hint::{Scale, nearest, scaled, split_number};

/// A byte range in the rules file.
pub(super) type Span = Range<usize>;

/// A value of the parsed file, with its place.
pub(super) type Value<'i> = Spanned<DeValue<'i>>;

/// The keys one kind of table takes.
pub(super) struct Shape {
    /// The table as help text names it: `[[rule]]`, `[timeouts]`, `the top level`.
    pub(super) name: &'static str,
    /// Appended to unknown-key messages whose prefix does not say where: ` in [timeouts]`.
    pub(super) place: &'static str,
    /// Where a key of this table goes, for a key written in another table.
    pub(super) home: &'static str,
    /// Its keys, in the order the README lists them.
    pub(super) keys: &'static [&'static str],
}

/// A whole-number setting: how it is named, its range, its unit.
pub(super) struct Whole<'a> {
    /// The setting as messages name it: `timeouts.icmp`, `rule "t": tftp.dally`.
    pub(super) what: &'a str,
    /// The key as written in the file.
    pub(super) key: &'a str,
    /// Whom the help speaks of: `timeouts are`, `ftp.max_line is`.
    pub(super) subject: &'a str,
    /// Smallest value accepted.
    pub(super) min: i64,
    /// Largest value accepted.
    pub(super) max: i64,
    /// What it counts, for the range help: `seconds`, `entries`.
    pub(super) unit: &'a str,
    /// How a unit written after the number is read.
    pub(super) scale: Scale,
    /// The default, shown as an example when the written value suggests none.
    pub(super) default: u64,
}

impl Whole<'_> {
    /// The help for a value that is not a bare whole number: the form, with the number
    /// `written` stands for (`3600s`: 3600) or the default as the example.
    fn form_help(&self, written: &str) -> String {
        let form = match self.scale {
            Scale::Seconds => "whole seconds written as a bare number",
            Scale::Count => "a bare whole number",
            Scale::Bytes => "a bare whole number of bytes",
            Scale::Port => "a port number written as a bare number",
        };
        let example = split_number(written)
            .and_then(|(number, unit)| scaled(number, unit, self.scale))
            .or_else(|| scaled(written, "", self.scale))
            .filter(|n| i64::try_from(*n).is_ok_and(|n| (self.min..=self.max).contains(&n)))
            .unwrap_or(self.default);
        format!("{} {form}: {} = {example}", self.subject, self.key)
    }

    fn range_help(&self) -> String {
        format!(
            "{} is a whole number of {} from {} to {}",
            self.what, self.unit, self.min, self.max
        )
    }
}

/// A malformed value (`3600s`, `allow` without quotes) that the syntax pass replaced by a
/// placeholder, so the rest of the file could still be checked. The reader of the value
/// reports it, in the words of its setting.
struct Repair {
    /// Where the value starts.
    start: usize,
    /// The value as written.
    written: String,
    reported: bool,
}

/// Collects errors against the source text.
pub(super) struct Checker<'a> {
    text: &'a str,
    origin: &'a str,
    /// Every kind of table, to say where a key written in the wrong one belongs.
    shapes: &'a [&'a Shape],
    /// Errors with the byte offset they are at, to sort them into file order.
    errors: Vec<(usize, PolicyError)>,
    repairs: Vec<Repair>,
}

impl<'a> Checker<'a> {
    /// A checker for `text`, named `origin` in errors; `shapes` are all the tables of the format.
    pub(super) fn new(text: &'a str, origin: &'a str, shapes: &'a [&'a Shape]) -> Self {
        Checker {
            text,
            origin,
            shapes,
            errors: Vec::new(),
            repairs: Vec::new(),
        }
    }

    /// Errors found so far.
    pub(super) fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// An error at `span`.
    pub(super) fn error(
        &mut self,
        span: Span,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let (line, column) = locate(self.text, span.start);
        self.errors.push((
            span.start,
            PolicyError {
                origin: self.origin.to_owned(),
                line,
                column,
                message: message.into(),
                help: help.into(),
            },
        ));
    }

    /// The source text at `span`, trimmed.
    pub(super) fn written(&self, span: &Span) -> &'a str {
        self.text.get(span.clone()).unwrap_or("").trim()
    }

    /// Records that the value written at `start..end` was replaced by a placeholder.
    pub(super) fn add_repair(&mut self, start: usize, end: usize) {
        let written = self.written(&(start..end)).to_owned();
        self.repairs.push(Repair {
            start,
            written,
            reported: false,
        });
    }

    /// The value at `span` as written, if the syntax pass repaired it; the caller reports it.
    pub(super) fn repaired(&mut self, span: &Span) -> Option<String> {
        let repair = self
            .repairs
            .iter_mut()
            .find(|r| r.start == span.start && !r.reported)?;
        repair.reported = true;
        Some(repair.written.clone())
    }

    /// Every error, in file order; repaired values no reader reported are reported here.
    pub(super) fn finish(mut self) -> Vec<PolicyError> {
        let unreported: Vec<(usize, String)> = self
            .repairs
            .iter()
            .filter(|r| !r.reported)
            .map(|r| (r.start, r.written.clone()))
            .collect();
        for (start, written) in unreported {
            let (message, help) = if written
                .starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
            {
                (format!("{written} is not a number"), NUMBER_HELP.to_owned())
            } else if written.eq_ignore_ascii_case("true") || written.eq_ignore_ascii_case("false")
            {
                (
                    format!("{written} is not true or false"),
                    "write true or false in lowercase".to_owned(),
                )
            } else {
                (
                    format!("{written} is not in double quotes"),
                    format!("write text in double quotes: \"{written}\""),
                )
            };
            self.error(start..start, message, help);
        }
        self.errors.sort_by_key(|(offset, _)| *offset);
        self.errors.into_iter().map(|(_, error)| error).collect()
    }

    /// Reports every key of `table` that `shape` does not take, with the valid keys and the
    /// nearest one, or the table it belongs in. `prefix` starts each message (`rule "x": `).
    /// Returns the known keys the help pointed to, so that a required key reported as
    /// misspelt is not reported missing as well.
    pub(super) fn unknown_keys(
        &mut self,
        table: &DeTable<'_>,
        shape: &Shape,
        prefix: &str,
    ) -> Vec<&'static str> {
        let mut pointed = Vec::new();
        for key in table.keys() {
            let name: &str = key.get_ref();
            if shape.keys.contains(&name) {
                continue;
            }
            let takes = format!("{} takes: {}", shape.name, shape.keys.join(", "));
            let elsewhere = self
                .shapes
                .iter()
                .filter(|other| other.name != shape.name)
                .find_map(|other| Some((other, *other.keys.iter().find(|k| **k == name)?)));
            let help = if let Some((other, key)) = elsewhere {
                pointed.push(key);
                format!("\"{name}\" belongs {}; {takes}", other.home)
            } else if let Some(near) = nearest(name, shape.keys) {
                pointed.push(near);
                format!("did you mean \"{near}\"? {}", capitalized(&takes))
            } else {
                capitalized(&takes)
            };
            self.error(
                key.span(),
                format!("{prefix}unknown key \"{name}\"{}", shape.place),
                help,
            );
        }
        pointed
    }

    /// `value` as a table, or an error naming `what` with `help`.
    pub(super) fn table<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        what: &str,
        help: &str,
    ) -> Option<&'v DeTable<'i>> {
        if let DeValue::Table(table) = value.get_ref() {
            return Some(table);
        }
        let found = self.found(value);
        self.error(
            value.span(),
            format!("{what} must be a table, not {found}"),
            help,
        );
        None
    }

    /// `value` as a string, or an error naming `what` with `help`.
    pub(super) fn string<'v>(
        &mut self,
        value: &'v Value<'_>,
        what: &str,
        help: &str,
    ) -> Option<&'v str> {
        if let Some(written) = self.repaired(&value.span()) {
            self.error(
                value.span(),
                format!("{what} = {written} is not in double quotes"),
                help,
            );
            return None;
        }
        if let DeValue::String(text) = value.get_ref() {
            return Some(text);
        }
        let found = self.found(value);
        self.error(
            value.span(),
            format!("{what} must be a string in double quotes, not {found}"),
            help,
        );
        None
    }

    /// `value` as a boolean, or an error naming `what` (written `key` in the file).
    pub(super) fn boolean(&mut self, value: &Value<'_>, what: &str, key: &str) -> Option<bool> {
        if let DeValue::Boolean(b) = value.get_ref() {
            return Some(*b);
        }
        let found = self.found(value);
        self.error(
            value.span(),
            format!("{what} must be true or false, not {found}"),
            format!("write {key} = true or {key} = false, without quotes"),
        );
        None
    }

    /// `value` as a list of strings with their places, or an error naming `what` (written
    /// `key` in the file) with `help`. A wrong item is reported and left out.
    pub(super) fn strings<'v>(
        &mut self,
        value: &'v Value<'_>,
        what: &str,
        key: &str,
        help: &str,
    ) -> Option<Vec<(&'v str, Span)>> {
        let DeValue::Array(items) = value.get_ref() else {
            let found = self.found(value);
            let help = match value.get_ref() {
                DeValue::String(text) => format!("write a list in brackets: {key} = [\"{text}\"]"),
                _ => help.to_owned(),
            };
            self.error(
                value.span(),
                format!("{what} must be a list of strings, not {found}"),
                help,
            );
            return None;
        };
        let mut out = Vec::new();
        for item in items {
            if let DeValue::String(text) = item.get_ref() {
                out.push((&**text, item.span()));
            } else {
                let found = self.found(item);
                self.error(
                    item.span(),
                    format!("{what}: each item must be a string in double quotes, not {found}"),
                    help,
                );
            }
        }
        Some(out)
    }

    /// `value` as a whole number in the range of `spec`, or an error.
    pub(super) fn whole(&mut self, value: &Value<'_>, spec: &Whole<'_>) -> Option<u64> {
        let span = value.span();
        if let Some(written) = self.repaired(&span) {
            self.not_a_number(span, spec, &written);
            return None;
        }
        match value.get_ref() {
            DeValue::Integer(n) => {
                let written = self.written(&span);
                match integer(n) {
                    Some(n) if (spec.min..=spec.max).contains(&n) => u64::try_from(n).ok(),
                    // The parser lets an underscore through before a unit: `3_600s`.
                    None if split_number(written).is_some_and(|(_, unit)| !unit.is_empty()) => {
                        self.not_a_number(span, spec, written);
                        None
                    }
                    _ => {
                        self.error(
                            span,
                            format!("{} = {written} is out of range", spec.what),
                            spec.range_help(),
                        );
                        None
                    }
                }
            }
            other => {
                let written = match other {
                    DeValue::String(text) => text,
                    DeValue::Float(_) => self.written(&span),
                    _ => "",
                };
                let help = spec.form_help(written);
                let found = self.found(value);
                self.error(
                    span,
                    format!("{} must be a whole number, not {found}", spec.what),
                    help,
                );
                None
            }
        }
    }

    fn not_a_number(&mut self, span: Span, spec: &Whole<'_>, written: &str) {
        self.error(
            span,
            format!("{} = {written} is not a number", spec.what),
            spec.form_help(written),
        );
    }

    /// What `value` is, for "must be X, not Y" messages: its type, or for a repaired value
    /// the text as written.
    pub(super) fn found(&mut self, value: &Value<'_>) -> String {
        match self.repaired(&value.span()) {
            Some(written) => written,
            None => value.get_ref().type_str().to_owned(),
        }
    }
}

/// Help for a number written with a unit, where the setting is not known.
pub(super) const NUMBER_HELP: &str =
    "write numbers bare, without a unit or suffix (timeouts are whole seconds, such as 3600)";

/// The value of a TOML integer, if it fits.
pub(super) fn integer(n: &DeInteger<'_>) -> Option<i64> {
    i64::from_str_radix(n.as_str(), n.radix()).ok()
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
