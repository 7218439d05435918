//! The rules-file checker on the shipped rules files changed in every way a person might: one
//! mistake gives exactly one error, on the mistake's line (no cascade, no false error); and no
//! edit at all makes it panic or report an error without a place and a fix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use pinhole::policy::{Policy, PolicyError, PolicyErrors};
use proptest::prelude::*;

/// Every shipped rules file, with its name.
fn shipped() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["rules", "tests/rules"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((path.display().to_string(), text));
            }
        }
    }
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    files
}

fn errors(text: &str) -> Vec<PolicyError> {
    match Policy::parse(text, "r.toml") {
        Ok(_) => Vec::new(),
        Err(PolicyErrors(errors)) => errors,
    }
}

/// Each `key = value` line of `text` (comments and headers left out): its index and the key,
/// the value and the comment after it.
fn key_lines(text: &str) -> Vec<(usize, &str, &str)> {
    text.lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let (key, value) = line.split_once(" = ")?;
            (!key.starts_with(['#', '[', ' '])).then_some((index, key, value))
        })
        .collect()
}

/// `text` with line `index` replaced by `line`.
fn with_line(text: &str, index: usize, line: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines[index] = line;
    lines.join("\n") + "\n"
}

/// Applies `mistake` to each line it accepts, in each shipped file, and checks that the file
/// then has exactly one error, on that line. Returns how many mistakes were tried.
fn one_error_per_mistake(mistake: impl Fn(&str, &str) -> Option<String>) -> usize {
    let mut tried = 0;
    for (name, text) in shipped() {
        assert!(errors(&text).is_empty(), "{name} is not valid");
        for (index, key, value) in key_lines(&text) {
            let Some(line) = mistake(key, value) else {
                continue;
            };
            tried += 1;
            let found = errors(&with_line(&text, index, &line));
            assert_eq!(
                found.len(),
                1,
                "{name}, line {}: {line}\n{found:#?}",
                index + 1
            );
            assert_eq!(found[0].line, index + 1, "{name}: {line}\n{found:#?}");
        }
    }
    tried
}

#[test]
fn a_misspelt_key_is_one_error() {
    let tried = one_error_per_mistake(|key, value| {
        // Swap the first two letters: "action" -> "caiton" is too far; "aciton" is a typo.
        let mut chars: Vec<char> = key.chars().collect();
        if chars.len() < 4 || chars[1] == chars[2] {
            return None;
        }
        chars.swap(1, 2);
        Some(format!(
            "{} = {value}",
            chars.into_iter().collect::<String>()
        ))
    });
    assert!(tried > 100, "{tried}");
}

#[test]
fn a_unit_after_a_number_is_one_error() {
    let tried = one_error_per_mistake(|key, value| {
        let digits = value.len() - value.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        (digits > 0).then(|| format!("{key} = {}s{}", &value[..digits], &value[digits..]))
    });
    assert!(tried >= 10, "{tried}");
}

#[test]
fn a_string_without_quotes_is_one_error() {
    let tried = one_error_per_mistake(|key, value| {
        let inner = value.strip_prefix('"')?;
        let (word, rest) = inner.split_once('"')?;
        let bare = !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        bare.then(|| format!("{key} = {word}{rest}"))
    });
    assert!(tried > 50, "{tried}");
}

#[test]
fn a_wrong_type_is_one_error() {
    let tried = one_error_per_mistake(|key, value| {
        // A list where there was none; a single item where there was a list (but ports may
        // be a single port).
        match value.strip_prefix('[') {
            Some(inner) => {
                let item = inner.split_once(']')?.0;
                (key != "ports" && !item.contains(',')).then(|| format!("{key} = {item}"))
            }
            None => Some(format!("{key} = [{value}]")),
        }
    });
    assert!(tried > 100, "{tried}");
}

/// What people type: letters, digits and TOML's punctuation.
fn edit() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z0-9 =\"'\\[\\]{},.#_\\-\n]{0,8}").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_edit_gives_a_policy_or_placed_errors_in_order(
        file in 0usize..64,
        at in 0usize..1 << 16,
        cut in 0usize..8,
        insert in edit(),
    ) {
        let files = shipped();
        let (_, text) = &files[file % files.len()];
        let mut start = at % (text.len() + 1);
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + cut).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let edited = format!("{}{insert}{}", &text[..start], &text[end..]);
        if let Err(PolicyErrors(errors)) = Policy::parse(&edited, "r.toml") {
            prop_assert!(!errors.is_empty());
            let lines = edited.lines().count().max(1);
            for error in &errors {
                prop_assert!(error.line >= 1 && error.line <= lines + 1, "{error}");
                prop_assert!(error.column >= 1, "{error}");
                prop_assert!(!error.message.is_empty() && !error.help.is_empty(), "{error}");
            }
            let places: Vec<_> = errors.iter().map(|e| (e.line, e.column)).collect();
            let mut sorted = places.clone();
            sorted.sort_unstable();
            prop_assert_eq!(places, sorted);
        }
    }
}
