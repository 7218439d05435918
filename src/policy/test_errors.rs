//! Test helpers shared by the policy modules' tests: the errors a rules text gives, as
//! `check-rules` prints them.

use super::{Policy, PolicyErrors};

/// Every error of `text` (read as `r.toml`), formatted; panics if it parses.
pub(super) fn errors(text: &str) -> Vec<String> {
    match Policy::parse(text, "r.toml") {
        Ok(_) => panic!("expected errors in {text}"),
        Err(PolicyErrors(errors)) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// The one error of `text`; panics unless there is exactly one.
pub(super) fn one_error(text: &str) -> String {
    let all = errors(text);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.into_iter().next().unwrap_or_default()
}
