//! The inspector option tables of a rule: `[rule.ftp]` (and, with the TFTP inspector,
//! `[rule.tftp]`).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::file::Checker;
use crate::alg::ftp::{FtpOptions, Ftps, OpenActiveOn, PassiveAddress, ViolationAction};

/// `[rule.ftp]`, every key optional (defaults in [`FtpOptions::default`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFtp {
    data_timeout: Option<Spanned<i64>>,
    max_pending: Option<Spanned<i64>>,
    max_line: Option<Spanned<i64>>,
    min_data_port: Option<Spanned<i64>>,
    active: Option<bool>,
    passive: Option<bool>,
    active_from_port_20: Option<bool>,
    open_active_on: Option<Spanned<String>>,
    passive_address: Option<Spanned<String>>,
    ftps: Option<Spanned<String>>,
    on_violation: Option<Spanned<String>>,
    data_outlives_control: Option<bool>,
}

/// One of a fixed set of words, or an error listing them.
fn choice<T: Copy>(
    check: &mut Checker<'_>,
    label: &str,
    key: &str,
    value: &Spanned<String>,
    choices: &[(&str, T)],
) -> Option<T> {
    let word = value.get_ref().as_str();
    if let Some((_, v)) = choices.iter().find(|(name, _)| *name == word) {
        return Some(*v);
    }
    let names: Vec<String> = choices
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect();
    check.error(
        value.span(),
        format!(
            "{label}: {key} \"{word}\" is not one of {}",
            names.join(", ")
        ),
        format!("write {key} = {}", names.join(" or ")),
    );
    None
}

/// Validates `[rule.ftp]` for the rule called `label`.
pub(super) fn ftp(check: &mut Checker<'_>, label: &str, raw: &RawFtp) -> Option<FtpOptions> {
    let errors_before = check.error_count();
    let mut options = FtpOptions::default();
    let key = |name: &str| format!("{label}: ftp.{name}");
    if let Some(v) = &raw.data_timeout
        && let Some(secs) = check.in_range(v, 1, 3600, &key("data_timeout"), "seconds")
    {
        options.data_timeout = Duration::from_secs(secs);
    }
    if let Some(v) = &raw.max_pending
        && let Some(n) = check.in_range(v, 1, 64, &key("max_pending"), "pinholes")
    {
        options.max_pending = usize::try_from(n).unwrap_or(64);
    }
    if let Some(v) = &raw.max_line
        && let Some(n) = check.in_range(v, 64, 65536, &key("max_line"), "bytes")
    {
        options.max_line = usize::try_from(n).unwrap_or(65536);
    }
    if let Some(v) = &raw.min_data_port
        && let Some(n) = check.in_range(v, 1, 65535, &key("min_data_port"), "(a port number)")
    {
        options.min_data_port = u16::try_from(n).unwrap_or(u16::MAX);
    }
    options.active = raw.active.unwrap_or(options.active);
    options.passive = raw.passive.unwrap_or(options.passive);
    options.active_from_port_20 = raw
        .active_from_port_20
        .unwrap_or(options.active_from_port_20);
    options.data_outlives_control = raw
        .data_outlives_control
        .unwrap_or(options.data_outlives_control);
    if let Some(v) = &raw.open_active_on {
        let choices = [
            ("reply", OpenActiveOn::Reply),
            ("command", OpenActiveOn::Command),
        ];
        options.open_active_on =
            choice(check, label, "open_active_on", v, &choices).unwrap_or(options.open_active_on);
    }
    if let Some(v) = &raw.passive_address {
        let choices = [
            ("refuse", PassiveAddress::Refuse),
            ("control", PassiveAddress::Control),
        ];
        options.passive_address =
            choice(check, label, "passive_address", v, &choices).unwrap_or(options.passive_address);
    }
    if let Some(v) = &raw.ftps {
        let choices = [
            ("deny", Ftps::Deny),
            ("allow-uninspected", Ftps::AllowUninspected),
        ];
        options.ftps = choice(check, label, "ftps", v, &choices).unwrap_or(options.ftps);
    }
    if let Some(v) = &raw.on_violation {
        let choices = [
            ("reject", ViolationAction::Reject),
            ("drop", ViolationAction::Drop),
        ];
        options.on_violation =
            choice(check, label, "on_violation", v, &choices).unwrap_or(options.on_violation);
    }
    if !options.active && !options.passive {
        check.error_at_start(
            format!(
                "{label}: ftp.active and ftp.passive are both false, so no transfer could ever work"
            ),
            "allow at least one mode, or do not inspect (and do not allow) FTP at all",
        );
    }
    (check.error_count() == errors_before).then_some(options)
}
