//! The TOML syntax of a rules file.
//!
//! A malformed value written as a bare token (`3600s`, `10 k`, `1.5h`, `allow` without quotes,
//! `True`) is replaced by a placeholder number of the same length, so every place in the file
//! stays where it was, and is reported by whoever reads the value, in the words of that
//! setting; so the rest of the file is still checked. Any other syntax error stops the reading
//! and is reported with what to do about it.

use toml::de::{DeTable, Error};

use super::check::{Checker, NUMBER_HELP, Span};

/// How many values one file may have repaired (each costs a parse of the file).
const MAX_REPAIRS: usize = 256;

/// Help for a syntax error this module has no better advice for.
const FORMAT_HELP: &str = "see the rules format in the README (section \"Rules\"); rules/edge-router.toml is a commented example";

/// Parser errors about a value token that is malformed as a whole: only these are repaired.
const VALUE_ERRORS: &[&str] = &[
    "string values must be quoted",
    "invalid boolean",
    "invalid float",
    "invalid integer number",
    "invalid hexadecimal number",
    "invalid octal number",
    "invalid binary number",
    "unexpected leading zero",
    "`_` may only go between digits",
    "radix must be lowercase",
    "integers with a radix cannot be signed",
    "redundant numeric sign",
    "redundant integer number prefix",
    "unexpected sign",
    "invalid fraction",
    "invalid exponent",
    "invalid mantissa",
    "invalid date",
    "invalid time",
    "invalid date-time",
];

/// The text to parse: `text` with each malformed value token replaced by a placeholder (each
/// recorded in `check`), or `None` after a syntax error that cannot be repaired (reported in
/// `check`).
pub(super) fn repair(text: &str, check: &mut Checker<'_>) -> Option<String> {
    let mut source = text.to_owned();
    // The last repair, with the error it answered: the next parse must get past it, or the
    // error was something else and is reported as it was.
    let mut pending: Option<(Span, Error)> = None;
    for _ in 0..=MAX_REPAIRS {
        let first = first_error(&source);
        if let Some((token, error)) = pending.take() {
            if first.as_ref().is_some_and(|e| start(e) <= token.start) {
                report(check, text, &error);
                return None;
            }
            check.add_repair(token.start, token.end);
        }
        let Some(error) = first else {
            return Some(source);
        };
        let Some(token) = value_token(&source, &error) else {
            report(check, text, &error);
            return None;
        };
        let placeholder = format!("0{}", " ".repeat(token.len() - 1));
        source.replace_range(token.clone(), &placeholder);
        pending = Some((token, error));
    }
    if let Some((_, error)) = pending {
        report(check, text, &error);
    }
    None
}

/// The error that comes first in the file: the parser's later ones may follow from it.
fn first_error(source: &str) -> Option<Error> {
    let (_, errors) = DeTable::parse_recoverable(source);
    errors.into_iter().min_by_key(start)
}

fn start(error: &Error) -> usize {
    error.span().map_or(usize::MAX, |span| span.start)
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-' | ':')
}

/// The bare token around `span` (a number, a word), widened to take in all of `span`.
fn token_around(text: &str, span: &Span) -> Span {
    let at = span.start.min(text.len());
    let before = text.get(..at).unwrap_or("");
    let start = before.trim_end_matches(is_token_char).len();
    let after = text.get(at..).unwrap_or("");
    let end = at + (after.len() - after.trim_start_matches(is_token_char).len());
    start..end.max(span.end.min(text.len()))
}

/// The value token `error` is about, if it is a malformed value written as a bare token on one
/// line: after `=`, `[` or `,` (a key that looks like a number is not a value), before the end
/// of the line, a comment, `,`, `]` or `}`.
fn value_token(source: &str, error: &Error) -> Option<Span> {
    let message = error.message();
    if !VALUE_ERRORS.iter().any(|m| message.starts_with(m)) {
        return None;
    }
    let span = token_around(source, &error.span()?);
    let raw = source.get(span.clone())?;
    let start = span.start + (raw.len() - raw.trim_start().len());
    let end = span.start + raw.trim_end().len();
    let token = source.get(start..end)?;
    let bare = !token.is_empty()
        && token
            .chars()
            .all(|c| is_token_char(c) || c == ' ' || c == '\t');
    let before = source
        .get(..start)?
        .trim_end_matches([' ', '\t', '\r', '\n']);
    let after = source.get(end..)?.trim_start_matches([' ', '\t']);
    let value = before.ends_with(['=', '[', ','])
        && (after.is_empty() || after.starts_with(['\n', '\r', '#', ',', ']', '}']));
    (bare && value).then_some(start..end)
}

/// The key of the `key = ` in front of `at` on its line, if there is one.
fn key_before(text: &str, at: usize) -> Option<&str> {
    let before = text.get(..at)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let key = line.trim_end().strip_suffix('=')?.trim();
    let simple = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\''));
    simple.then_some(key)
}

/// The table header a line at `at` is in (`rule` for `[[rule]]`), and whether it is the header
/// line itself.
fn header_at(text: &str, at: usize) -> Option<(&str, bool)> {
    let line_start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let mut on_header = true;
    for line in text[..line_end].lines().rev() {
        let line = line.trim_start();
        if line.starts_with('[') {
            let name = line.trim_start_matches('[');
            let name = name.get(..name.find(']').unwrap_or(name.len()))?.trim();
            return Some((name, on_header));
        }
        on_header = false;
    }
    None
}

/// Reports a syntax error with the fix where it can tell.
pub(super) fn report(check: &mut Checker<'_>, text: &str, error: &Error) {
    let span = error.span().unwrap_or(text.len()..text.len());
    let full = error.message().trim();
    let found = Found {
        text,
        at: span.start,
        full,
        what: full.split(", expected").next().unwrap_or(full),
        written: text.get(span.clone()).unwrap_or("").trim(),
        token: text.get(token_around(text, &span)).unwrap_or("").trim(),
    };
    let (message, help) = value_advice(&found)
        .or_else(|| layout_advice(&found))
        .unwrap_or_else(|| (full.to_owned(), FORMAT_HELP.to_owned()));
    check.error(span, message, help);
}

/// A syntax error and its surroundings.
struct Found<'a> {
    text: &'a str,
    /// Where the error is.
    at: usize,
    /// The parser's message.
    full: &'a str,
    /// The parser's message without what it expected.
    what: &'a str,
    /// The text the error points at.
    written: &'a str,
    /// The bare token around the error.
    token: &'a str,
}

/// The message and help for an error in a value: a string, a number, a boolean.
fn value_advice(found: &Found<'_>) -> Option<(String, String)> {
    let Found {
        full,
        what,
        written,
        token,
        ..
    } = *found;
    let key = key_before(found.text, found.at);
    let advice = match what {
        "string values must be quoted" | "missing value" | "missing value for key"
            if written.is_empty() =>
        {
            (
                key.map_or_else(|| "a value is missing".to_owned(), |k| format!("{k} has no value")),
                "write a value after \"=\": a \"quoted string\", a number, true or false, or a [list]".to_owned(),
            )
        }
        "string values must be quoted"
            if written.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-') =>
        {
            (format!("{written} is not a number"), NUMBER_HELP.to_owned())
        }
        "string values must be quoted" => (
            format!("{written} is not in double quotes"),
            match key {
                Some(key) => format!("write text in double quotes: {key} = \"{written}\""),
                None => format!("write text in double quotes: \"{written}\""),
            },
        ),
        "invalid basic string" if full.contains("expected `\"`") => (
            "unclosed string".to_owned(),
            "end the string with \" on the same line (inside it, write \\\" for a quote)".to_owned(),
        ),
        "invalid literal string" if full.contains("expected `'`") => (
            "unclosed string".to_owned(),
            "end the string with ' on the same line (a '...' string cannot hold a ')".to_owned(),
        ),
        "invalid multi-line basic string" | "invalid multi-line literal string"
            if full.contains("expected `\"`") || full.contains("expected `'`") =>
        {
            (
                "unclosed multi-line string".to_owned(),
                "end it with the three quotes it starts with".to_owned(),
            )
        }
        "invalid basic string"
        | "invalid literal string"
        | "invalid multi-line basic string"
        | "invalid multi-line literal string" => (
            "a control character in a string".to_owned(),
            "remove it, or write it as an escape such as \\t in a \"...\" string".to_owned(),
        ),
        "missing escaped value" | "too few unicode value digits" | "invalid escape value" => (
            what.to_owned(),
            "in \"...\" a backslash starts an escape such as \\n or \\\\: write \\\\ for a backslash, or use '...' for text without escapes".to_owned(),
        ),
        "invalid boolean" => (
            format!("{token} is not true or false"),
            "write true or false in lowercase, or put text in double quotes".to_owned(),
        ),
        _ if VALUE_ERRORS.contains(&what) => (
            format!("{token} is not a number"),
            "numbers are whole numbers in digits only: no leading zeros, units or suffixes (timeouts are whole seconds, such as 3600)".to_owned(),
        ),
        _ => return None,
    };
    Some(advice)
}

/// The message and help for an error in the layout: keys, tables, lists, lines.
fn layout_advice(found: &Found<'_>) -> Option<(String, String)> {
    let Found {
        text,
        at,
        what,
        written,
        ..
    } = *found;
    let line_help = "write one key = value per line; anything after a value must be a # comment";
    let (message, help) = match what {
        "key with no value" | "missing assignment between key-value pairs" => (
            match key_on_line(text, at) {
                Some(key) => format!("{key} has no \"=\""),
                None => what.to_owned(),
            },
            "write key = value, with \"=\" between the key and its value",
        ),
        "duplicate key" => return Some(duplicate(text, at, written)),
        "unclosed table" => (
            "unclosed table header".to_owned(),
            "end the header with \"]\", such as [timeouts]",
        ),
        "unclosed array table" => (
            "unclosed table header".to_owned(),
            "end the header with \"]]\", such as [[rule]]",
        ),
        "invalid table" | "missing table open" => (
            what.to_owned(),
            "a table header is a name in brackets, such as [timeouts], [zones.inside] or [[rule]]",
        ),
        "unclosed array"
        | "missing comma between array elements"
        | "extra comma in array"
        | "unexpected `=` in array"
        | "missing array opening" => (
            what.to_owned(),
            "a list is [item, item, ...]: separate the items with commas and end it with \"]\"",
        ),
        "unclosed inline table"
        | "missing comma between key-value pairs"
        | "extra comma in inline table"
        | "missing key for inline table element"
        | "invalid inline table element"
        | "missing inline table opening" => (
            what.to_owned(),
            "an inline table is {key = value, key = value} on one line; a [table] header is often clearer",
        ),
        "unexpected key or value"
        | "unexpected content"
        | "missing comment start"
        | "unexpected content between comment and newline"
        | "invalid key-value pair"
        | "extra `=`"
        | "extra assignment between key-value pairs" => (what.to_owned(), line_help),
        "invalid unquoted key"
        | "unquoted keys cannot be empty"
        | "invalid key"
        | "keys cannot be multi-line basic strings"
        | "keys cannot be multi-line literal strings" => (
            what.to_owned(),
            "keys are letters, digits, \"_\" and \"-\", such as tcp_established",
        ),
        "carriage return must be followed by newline" => (
            "a carriage return without a newline".to_owned(),
            "end lines with LF or CRLF; a lone carriage return is not allowed",
        ),
        "invalid comment character" => ("a control character in a comment".to_owned(), "remove it"),
        _ => return None,
    };
    Some((message, help.to_owned()))
}

/// The key a line starts with, for a key with no `=` after it.
fn key_on_line(text: &str, at: usize) -> Option<&str> {
    let before = text.get(..at)?;
    let line = before[before.rfind('\n').map_or(0, |i| i + 1)..].trim();
    (!line.is_empty() && !line.contains(char::is_whitespace)).then_some(line)
}

/// The message and help for a key or table defined twice; `at` is the second one.
fn duplicate(text: &str, at: usize, written: &str) -> (String, String) {
    match header_at(text, at) {
        Some((header, true)) => {
            let help = if header == "rule" || header.starts_with("rule.") {
                "each rule starts with [[rule]] (two brackets); its [rule.ftp] or [rule.tftp] table follows it, once".to_owned()
            } else {
                format!("put all the keys of [{header}] under one [{header}] header")
            };
            (format!("table [{header}] is defined twice"), help)
        }
        Some(("rule", false)) => (
            format!("{written} is set twice in one rule"),
            "set each key once; if this starts another rule, put [[rule]] before it".to_owned(),
        ),
        _ => (
            format!("{written} is set twice"),
            "set each key once per table; remove one of them".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyError;

    fn errors(text: &str) -> (Option<String>, Vec<PolicyError>) {
        let mut check = Checker::new(text, "r.toml", &[]);
        let repaired = repair(text, &mut check);
        (repaired, check.finish())
    }

    fn one_error(text: &str) -> String {
        let (repaired, errors) = errors(text);
        assert!(repaired.is_none(), "{text:?} parsed");
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors[0].to_string()
    }

    #[test]
    fn malformed_values_are_replaced_in_place() {
        let (repaired, errors) = errors(
            "a = 3600s\nb = [21, 2121 x]\nc = { d = 10k }\ne = 1.5h # c\nf = allow\ng = True\nh = 007\n",
        );
        assert_eq!(
            repaired.as_deref(),
            Some(
                "a = 0    \nb = [21, 0     ]\nc = { d = 0   }\ne = 0    # c\nf = 0    \ng = 0   \nh = 0  \n"
            )
        );
        // No reader took them: each is reported where it is, in file order.
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            vec![
                format!("r.toml:1:5: error: 3600s is not a number\n  help: {NUMBER_HELP}"),
                format!("r.toml:2:10: error: 2121 x is not a number\n  help: {NUMBER_HELP}"),
                format!("r.toml:3:11: error: 10k is not a number\n  help: {NUMBER_HELP}"),
                format!("r.toml:4:5: error: 1.5h is not a number\n  help: {NUMBER_HELP}"),
                "r.toml:5:5: error: allow is not in double quotes\n  help: write text in double quotes: \"allow\"".to_owned(),
                "r.toml:6:5: error: True is not true or false\n  help: write true or false in lowercase".to_owned(),
                format!("r.toml:7:5: error: 007 is not a number\n  help: {NUMBER_HELP}"),
            ]
        );
    }

    #[test]
    fn only_malformed_values_are_repaired() {
        // A key may look like a number with a unit; a key defined twice is not a value error.
        assert_eq!(
            one_error("5s = 1\n5s = 2\n"),
            "r.toml:2:1: error: 5s is set twice\n  help: set each key once per table; remove one of them"
        );
    }

    #[test]
    fn a_repair_before_a_syntax_error_is_reported_with_it() {
        let (repaired, errors) = errors("a = 5s, b = 1\n");
        assert!(repaired.is_none());
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            vec![
                format!("r.toml:1:5: error: 5s is not a number\n  help: {NUMBER_HELP}"),
                "r.toml:1:7: error: unexpected key or value\n  help: write one key = value per line; anything after a value must be a # comment".to_owned(),
            ]
        );
    }

    #[test]
    fn syntax_errors_say_what_to_do() {
        let cases = [
            (
                "[[rule]]\nname = \"ftp-in\nto = \"x\"\n",
                "r.toml:2:15: error: unclosed string\n  help: end the string with \" on the same line (inside it, write \\\" for a quote)",
            ),
            (
                "[[rule]]\nname \"x\"\n",
                "r.toml:2:6: error: name has no \"=\"\n  help: write key = value, with \"=\" between the key and its value",
            ),
            (
                "[[rule]]\nname = \n",
                "r.toml:2:8: error: name has no value\n  help: write a value after \"=\": a \"quoted string\", a number, true or false, or a [list]",
            ),
            (
                "[timeouts]\nicmp = 5\n[limits]\n[timeouts]\nother = 1\n",
                "r.toml:4:2: error: table [timeouts] is defined twice\n  help: put all the keys of [timeouts] under one [timeouts] header",
            ),
            (
                "[rule]\nname = \"a\"\n[[rule]]\nname = \"b\"\n",
                "r.toml:3:3: error: table [rule] is defined twice\n  help: each rule starts with [[rule]] (two brackets); its [rule.ftp] or [rule.tftp] table follows it, once",
            ),
            (
                "[[rule]]\nname = \"a\"\naction = \"allow\"\nname = \"b\"\n",
                "r.toml:4:1: error: name is set twice in one rule\n  help: set each key once; if this starts another rule, put [[rule]] before it",
            ),
            (
                "[zones.inside\nnetworks = [\"192.0.2.0/24\"]\n",
                "r.toml:1:14: error: unclosed table header\n  help: end the header with \"]\", such as [timeouts]",
            ),
            (
                "[[rule]]\nports = [21, 22\naction = \"allow\"\n",
                "r.toml:3:1: error: missing comma between array elements\n  help: a list is [item, item, ...]: separate the items with commas and end it with \"]\"",
            ),
            (
                "[rule.ftp]\nx = {a = 1\n",
                "r.toml:2:11: error: unclosed inline table\n  help: an inline table is {key = value, key = value} on one line; a [table] header is often clearer",
            ),
            (
                "[[rule]]\nname = 'it's'\n",
                "r.toml:2:12: error: unexpected key or value\n  help: write one key = value per line; anything after a value must be a # comment",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(one_error(text), expected, "{text:?}");
        }
    }
}
