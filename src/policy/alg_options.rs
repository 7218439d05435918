//! The inspector option tables of a rule: `[rule.ftp]` and `[rule.tftp]`.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::file::Checker;
use crate::alg::ftp::{FtpOptions, Ftps, OpenActiveOn, PassiveAddress, ViolationAction};
use crate::alg::tftp::TftpOptions;

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

/// `[rule.tftp]`, every key optional (defaults in [`TftpOptions::default`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTftp {
    read: Option<bool>,
    write: Option<bool>,
    allow_files: Option<Vec<Spanned<String>>>,
    deny_files: Option<Vec<Spanned<String>>>,
    server_ports: Option<Spanned<String>>,
    request_timeout: Option<Spanned<i64>>,
    transfer_timeout: Option<Spanned<i64>>,
    dally: Option<Spanned<i64>>,
    max_pending_per_client: Option<Spanned<i64>>,
}

/// Filename patterns: non-empty, without NUL.
fn patterns(
    check: &mut Checker<'_>,
    label: &str,
    key: &str,
    values: &[Spanned<String>],
) -> Vec<String> {
    let mut out = Vec::new();
    for value in values {
        let pattern = value.get_ref();
        if pattern.is_empty() || pattern.contains('\0') {
            check.error(
                value.span(),
                format!("{label}: tftp.{key} pattern \"{pattern}\" is empty or has a NUL"),
                "patterns are filenames with * (any run of characters) and ? (one character)",
            );
        } else {
            out.push(pattern.clone());
        }
    }
    out
}

/// Validates `[rule.tftp]` for the rule called `label`.
pub(super) fn tftp(check: &mut Checker<'_>, label: &str, raw: &RawTftp) -> Option<TftpOptions> {
    let errors_before = check.error_count();
    let mut options = TftpOptions::default();
    let key = |name: &str| format!("{label}: tftp.{name}");
    options.read = raw.read.unwrap_or(options.read);
    options.write = raw.write.unwrap_or(options.write);
    if let Some(values) = &raw.allow_files {
        options.allow_files = patterns(check, label, "allow_files", values);
    }
    if let Some(values) = &raw.deny_files {
        options.deny_files = patterns(check, label, "deny_files", values);
    }
    if let Some(value) = &raw.server_ports {
        let text = value.get_ref().trim();
        let parsed = match text.split_once('-') {
            Some((lo, hi)) => lo
                .trim()
                .parse::<u16>()
                .ok()
                .zip(hi.trim().parse::<u16>().ok()),
            None => text.parse::<u16>().ok().map(|p| (p, p)),
        };
        match parsed {
            Some((lo, hi)) if lo >= 1 && lo <= hi => options.server_ports = Some((lo, hi)),
            _ => check.error(
                value.span(),
                format!("{label}: tftp.server_ports \"{text}\" is not a port range"),
                "write the server's TID range as \"low-high\", as tftpd-hpa's --port-range: server_ports = \"30000-30009\"",
            ),
        }
    }
    if let Some(v) = &raw.request_timeout
        && let Some(secs) = check.in_range(v, 1, 300, &key("request_timeout"), "seconds")
    {
        options.request_timeout = Duration::from_secs(secs);
    }
    if let Some(v) = &raw.transfer_timeout
        && let Some(secs) = check.in_range(v, 1, 3600, &key("transfer_timeout"), "seconds")
    {
        options.transfer_timeout = Duration::from_secs(secs);
    }
    if let Some(v) = &raw.dally
        && let Some(secs) = check.in_range(v, 1, 300, &key("dally"), "seconds")
    {
        options.dally = Duration::from_secs(secs);
    }
    if let Some(v) = &raw.max_pending_per_client
        && let Some(n) = check.in_range(v, 1, 4096, &key("max_pending_per_client"), "requests")
    {
        options.max_pending_per_client = usize::try_from(n).unwrap_or(4096);
    }
    if !options.read && !options.write {
        check.error_at_start(
            format!(
                "{label}: tftp.read and tftp.write are both false, so every request is refused"
            ),
            "allow at least one of them, or deny the flows instead of inspecting them",
        );
    }
    (check.error_count() == errors_before).then_some(options)
}

#[cfg(test)]
mod tests {
    use crate::alg::Inspect;
    use crate::policy::{Policy, PolicyErrors};

    const TFTP_RULE: &str =
        "[[rule]]\nname = \"t\"\naction = \"allow\"\ninspect = \"tftp\"\n[rule.tftp]\n";

    fn errors(text: &str) -> Vec<String> {
        match Policy::parse(text, "r.toml") {
            Ok(_) => panic!("expected errors in {text}"),
            Err(PolicyErrors(errors)) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn tftp_options_are_read() {
        let text = format!(
            "{TFTP_RULE}read = true\nwrite = false\nallow_files = [\"images/*\"]\ndeny_files = [\"*..*\"]\nserver_ports = \"30000-30009\"\nrequest_timeout = 3\ntransfer_timeout = 60\ndally = 2\nmax_pending_per_client = 1\n"
        );
        let policy = Policy::parse(&text, "r.toml").unwrap();
        let Some(Inspect::Tftp(options)) = &policy.rules[0].inspect else {
            panic!("no TFTP options")
        };
        assert!(options.read && !options.write);
        assert_eq!(options.allow_files, vec!["images/*".to_owned()]);
        assert_eq!(options.deny_files, vec!["*..*".to_owned()]);
        assert_eq!(options.server_ports, Some((30000, 30009)));
        assert_eq!(options.request_timeout.as_secs(), 3);
        assert_eq!(options.transfer_timeout.as_secs(), 60);
        assert_eq!(options.dally.as_secs(), 2);
        assert_eq!(options.max_pending_per_client, 1);
        let single = Policy::parse(&format!("{TFTP_RULE}server_ports = \"30000\"\n"), "r").unwrap();
        let Some(Inspect::Tftp(options)) = &single.rules[0].inspect else {
            panic!()
        };
        assert_eq!(options.server_ports, Some((30000, 30000)));
    }

    #[test]
    fn tftp_option_errors_name_line_and_fix() {
        assert_eq!(
            errors(&format!("{TFTP_RULE}server_ports = \"30009-30000\"\n")),
            vec!["r.toml:6:16: error: rule \"t\": tftp.server_ports \"30009-30000\" is not a port range\n  help: write the server's TID range as \"low-high\", as tftpd-hpa's --port-range: server_ports = \"30000-30009\"".to_owned()]
        );
        assert_eq!(
            errors(&format!("{TFTP_RULE}request_timeout = 0\n")),
            vec!["r.toml:6:19: error: rule \"t\": tftp.request_timeout = 0 is out of range\n  help: rule \"t\": tftp.request_timeout is a whole number of seconds from 1 to 300".to_owned()]
        );
        assert_eq!(
            errors(&format!("{TFTP_RULE}deny_files = [\"\"]\n")),
            vec!["r.toml:6:15: error: rule \"t\": tftp.deny_files pattern \"\" is empty or has a NUL\n  help: patterns are filenames with * (any run of characters) and ? (one character)".to_owned()]
        );
        let both = errors(&format!("{TFTP_RULE}read = false\nwrite = false\n"));
        assert_eq!(both.len(), 1);
        assert!(
            both[0].contains("tftp.read and tftp.write are both false"),
            "{both:?}"
        );
        let unknown = errors(&format!("{TFTP_RULE}blksize = 1428\n"));
        assert!(
            unknown[0].starts_with("r.toml:6:1: error: unknown field `blksize`"),
            "{unknown:?}"
        );
        let wrong_inspector = errors(
            "[[rule]]\nname = \"f\"\naction = \"allow\"\ninspect = \"ftp\"\n[rule.tftp]\nread = true\n",
        );
        assert!(
            wrong_inspector[0].contains("[rule.tftp] options need inspect = \"tftp\""),
            "{wrong_inspector:?}"
        );
    }
}
