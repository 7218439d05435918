//! The inspector option tables of a rule: `[rule.ftp]` and `[rule.tftp]`.

use std::ops::RangeInclusive;
use std::time::Duration;

use toml::de::DeTable;

use super::check::{Checker, Shape, Span, Value, Whole};
use super::hint::Scale;
use crate::alg::ftp::{FtpOptions, Ftps, OpenActiveOn, PassiveAddress, ViolationAction};
use crate::alg::tftp::TftpOptions;

/// The keys of `[rule.ftp]` (defaults in [`FtpOptions::default`]).
pub(super) const FTP: Shape = Shape {
    name: "[rule.ftp]",
    place: " in [rule.ftp]",
    home: "in [rule.ftp], after its [[rule]]",
    keys: &[
        "data_timeout",
        "max_pending",
        "max_line",
        "min_data_port",
        "active",
        "passive",
        "active_from_port_20",
        "open_active_on",
        "passive_address",
        "ftps",
        "on_violation",
        "data_outlives_control",
        "ftps_passive_ports",
        "ftps_max_connections",
        "implicit_tls",
        "allow_commands",
        "deny_commands",
        "allow_users",
        "deny_users",
        "allow_paths",
        "deny_paths",
    ],
};

/// The keys of `[rule.tftp]` (defaults in [`TftpOptions::default`]).
pub(super) const TFTP: Shape = Shape {
    name: "[rule.tftp]",
    place: " in [rule.tftp]",
    home: "in [rule.tftp], after its [[rule]]",
    keys: &[
        "read",
        "write",
        "allow_files",
        "deny_files",
        "server_ports",
        "request_timeout",
        "transfer_timeout",
        "dally",
        "max_pending_per_client",
        "reply_addresses",
    ],
};

/// One option table being read: the rule it belongs to and its entries.
struct Options<'t, 'i> {
    /// The rule, for messages: `rule "ftp-in"`.
    label: &'t str,
    /// `ftp` or `tftp`.
    alg: &'static str,
    table: &'t DeTable<'i>,
}

impl Options<'_, '_> {
    fn what(&self, key: &str) -> String {
        format!("{}: {}.{key}", self.label, self.alg)
    }

    /// A whole number in `range`, if the key is set and valid.
    fn number(
        &self,
        check: &mut Checker<'_>,
        key: &str,
        range: RangeInclusive<i64>,
        unit: &str,
        scale: Scale,
        default: u64,
    ) -> Option<u64> {
        let value = self.table.get(key)?;
        let what = self.what(key);
        let subject = format!("{}.{key} is", self.alg);
        check.whole(
            value,
            &Whole {
                what: &what,
                key,
                subject: &subject,
                min: *range.start(),
                max: *range.end(),
                unit,
                scale,
                default,
            },
        )
    }

    fn seconds(
        &self,
        check: &mut Checker<'_>,
        key: &str,
        max: i64,
        default: Duration,
    ) -> Option<Duration> {
        self.number(
            check,
            key,
            1..=max,
            "seconds",
            Scale::Seconds,
            default.as_secs(),
        )
        .map(Duration::from_secs)
    }

    fn boolean(&self, check: &mut Checker<'_>, key: &str) -> Option<bool> {
        let value = self.table.get(key)?;
        check.boolean(value, &self.what(key), key)
    }

    /// One of a fixed set of words, if the key is set and valid.
    fn choice<T: Copy>(
        &self,
        check: &mut Checker<'_>,
        key: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let value = self.table.get(key)?;
        let names: Vec<String> = choices
            .iter()
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        let help = format!("write {key} = {}", names.join(" or "));
        let word = check.string(value, &self.what(key), &help)?;
        if let Some((_, v)) = choices.iter().find(|(name, _)| *name == word) {
            return Some(*v);
        }
        check.error(
            value.span(),
            format!(
                "{}: {key} \"{word}\" is not one of {}",
                self.label,
                names.join(", ")
            ),
            help,
        );
        None
    }
}

/// Validates `[rule.ftp]` (`table`, at `span`) for the rule called `label`.
pub(super) fn ftp(
    check: &mut Checker<'_>,
    label: &str,
    table: &DeTable<'_>,
    span: Span,
) -> Option<FtpOptions> {
    let errors_before = check.error_count();
    check.unknown_keys(table, &FTP, &format!("{label}: "));
    let raw = Options {
        label,
        alg: "ftp",
        table,
    };
    let mut options = FtpOptions::default();
    if let Some(timeout) = raw.seconds(check, "data_timeout", 3600, options.data_timeout) {
        options.data_timeout = timeout;
    }
    let max_pending = u64::try_from(options.max_pending).unwrap_or(4);
    if let Some(n) = raw.number(
        check,
        "max_pending",
        1..=64,
        "pinholes",
        Scale::Count,
        max_pending,
    ) {
        options.max_pending = usize::try_from(n).unwrap_or(64);
    }
    let max_line = u64::try_from(options.max_line).unwrap_or(1024);
    if let Some(n) = raw.number(
        check,
        "max_line",
        64..=65536,
        "bytes",
        Scale::Bytes,
        max_line,
    ) {
        options.max_line = usize::try_from(n).unwrap_or(65536);
    }
    let min_port = u64::from(options.min_data_port);
    if let Some(n) = raw.number(
        check,
        "min_data_port",
        1..=65535,
        "(a port number)",
        Scale::Port,
        min_port,
    ) {
        options.min_data_port = u16::try_from(n).unwrap_or(u16::MAX);
    }
    options.active = raw.boolean(check, "active").unwrap_or(options.active);
    options.passive = raw.boolean(check, "passive").unwrap_or(options.passive);
    options.active_from_port_20 = raw
        .boolean(check, "active_from_port_20")
        .unwrap_or(options.active_from_port_20);
    options.data_outlives_control = raw
        .boolean(check, "data_outlives_control")
        .unwrap_or(options.data_outlives_control);
    let choices = [
        ("reply", OpenActiveOn::Reply),
        ("command", OpenActiveOn::Command),
    ];
    options.open_active_on = raw
        .choice(check, "open_active_on", &choices)
        .unwrap_or(options.open_active_on);
    let choices = [
        ("refuse", PassiveAddress::Refuse),
        ("control", PassiveAddress::Control),
    ];
    options.passive_address = raw
        .choice(check, "passive_address", &choices)
        .unwrap_or(options.passive_address);
    let choices = [
        ("deny", Ftps::Deny),
        ("allow-uninspected", Ftps::AllowUninspected),
        ("allow-passive-range", Ftps::AllowPassiveRange),
    ];
    let ftps = raw.choice(check, "ftps", &choices);
    // The settings beside `ftps` are checked against it only when the table has no error so
    // far: a misspelt or wrong `ftps` has its own error, and one mistake gives one error.
    let ftps_read = check.error_count() == errors_before;
    options.ftps = ftps.unwrap_or(options.ftps);
    ftps_options(check, &raw, span.clone(), ftps_read, &mut options);
    let choices = [
        ("reject", ViolationAction::Reject),
        ("drop", ViolationAction::Drop),
    ];
    options.on_violation = raw
        .choice(check, "on_violation", &choices)
        .unwrap_or(options.on_violation);
    session_lists(check, &raw, &mut options);
    if !options.active && !options.passive {
        check.error(
            span,
            format!(
                "{label}: ftp.active and ftp.passive are both false, so no transfer could ever work"
            ),
            "allow at least one mode, or do not inspect (and do not allow) FTP at all",
        );
    }
    (check.error_count() == errors_before).then_some(options)
}

/// The FTPS settings beside `ftps`: the session-bound passive range and implicit TLS.
fn ftps_options(
    check: &mut Checker<'_>,
    raw: &Options<'_, '_>,
    span: Span,
    ftps_read: bool,
    options: &mut FtpOptions,
) {
    let label = raw.label;
    let help = "write the server's passive ports as \"low-high\", as its configuration gives them (vsftpd's pasv_min_port-pasv_max_port): ftps_passive_ports = \"40000-40100\"";
    options.ftps_passive_ports = port_range(check, raw, "ftps_passive_ports", help);
    let max = u64::try_from(options.ftps_max_connections).unwrap_or(2);
    if let Some(n) = raw.number(
        check,
        "ftps_max_connections",
        1..=64,
        "connections",
        Scale::Count,
        max,
    ) {
        options.ftps_max_connections = usize::try_from(n).unwrap_or(64);
    }
    options.implicit_tls = raw
        .boolean(check, "implicit_tls")
        .unwrap_or(options.implicit_tls);
    if !ftps_read {
        return;
    }
    match (options.ftps, options.ftps_passive_ports) {
        // (A range written wrong has its own error.)
        (Ftps::AllowPassiveRange, None) if raw.table.get("ftps_passive_ports").is_none() => check.error(
            span,
            format!("{label}: ftp.ftps = \"allow-passive-range\" needs the server's passive ports"),
            "add ftps_passive_ports = \"40000-40100\" (the server's own passive range) to [rule.ftp]",
        ),
        (Ftps::Deny | Ftps::AllowUninspected, Some(_)) => {
            if let Some(value) = raw.table.get("ftps_passive_ports") {
                check.error(
                    value.span(),
                    format!("{label}: ftp.ftps_passive_ports is used only with ftps = \"allow-passive-range\""),
                    "write ftps = \"allow-passive-range\" beside it, or remove it",
                );
            }
        }
        _ => {}
    }
    if options.implicit_tls
        && options.ftps == Ftps::Deny
        && let Some(value) = raw.table.get("implicit_tls")
    {
        check.error(
            value.span(),
            format!("{label}: ftp.implicit_tls with ftps = \"deny\" would refuse every connection"),
            "write ftps = \"allow-passive-range\" (with ftps_passive_ports) or \"allow-uninspected\" beside it",
        );
    }
}

/// A port range written `"low-high"` (or one port), as `key` of `raw`.
fn port_range(
    check: &mut Checker<'_>,
    raw: &Options<'_, '_>,
    key: &str,
    help: &str,
) -> Option<(u16, u16)> {
    let value = raw.table.get(key)?;
    let text = check.string(value, &raw.what(key), help)?;
    let text = text.trim();
    let parsed = match text.split_once('-') {
        Some((lo, hi)) => lo
            .trim()
            .parse::<u16>()
            .ok()
            .zip(hi.trim().parse::<u16>().ok()),
        None => text.parse::<u16>().ok().map(|p| (p, p)),
    };
    match parsed {
        Some((lo, hi)) if lo >= 1 && lo <= hi => Some((lo, hi)),
        _ => {
            check.error(
                value.span(),
                format!(
                    "{}: {}.{key} \"{text}\" is not a port range",
                    raw.label, raw.alg
                ),
                help,
            );
            None
        }
    }
}

/// The command, user and path lists of `[rule.ftp]`.
fn session_lists(check: &mut Checker<'_>, raw: &Options<'_, '_>, options: &mut FtpOptions) {
    if let Some(verbs) = verbs(check, raw, "allow_commands") {
        options.allow_commands = verbs;
    }
    if let Some(verbs) = verbs(check, raw, "deny_commands") {
        options.deny_commands = verbs;
    }
    for (key, list) in [
        ("allow_users", &mut options.allow_users),
        ("deny_users", &mut options.deny_users),
        ("allow_paths", &mut options.allow_paths),
        ("deny_paths", &mut options.deny_paths),
    ] {
        if let Some(patterns) = patterns(check, raw, key) {
            *list = patterns;
        }
    }
}

/// FTP verbs: 1 to 8 letters, kept upper case with RFC 775's X-aliases folded (`XMKD` is
/// `MKD`), as the inspector compares them.
fn verbs(check: &mut Checker<'_>, raw: &Options<'_, '_>, key: &str) -> Option<Vec<String>> {
    let value: &Value<'_> = raw.table.get(key)?;
    let help = "write FTP verbs, for example deny_commands = [\"STOR\", \"APPE\", \"DELE\"]";
    let items = check.strings(value, &raw.what(key), key, help)?;
    let mut out = Vec::new();
    for (word, span) in items {
        match crate::alg::ftp::Verb::parse(word.trim().as_bytes()) {
            Some(verb) => out.push(verb.as_str().to_owned()),
            None => check.error(
                span,
                format!(
                    "{}: ftp.{key} \"{word}\" is not an FTP verb (1 to 8 letters)",
                    raw.label
                ),
                help,
            ),
        }
    }
    Some(out)
}

/// Name or path patterns: non-empty, without NUL.
fn patterns(check: &mut Checker<'_>, raw: &Options<'_, '_>, key: &str) -> Option<Vec<String>> {
    let value: &Value<'_> = raw.table.get(key)?;
    let help = if key.ends_with("users") {
        "patterns are user names with * (any run of characters) and ? (one character), compared without case"
    } else if key.ends_with("paths") {
        "patterns are absolute paths with * (any run of characters, / included) and ? (one character), for example \"/pub/*\""
    } else {
        "patterns are filenames with * (any run of characters) and ? (one character)"
    };
    let items = check.strings(value, &raw.what(key), key, help)?;
    let mut out = Vec::new();
    for (pattern, span) in items {
        if pattern.is_empty() || pattern.contains('\0') {
            check.error(
                span,
                format!(
                    "{}: {}.{key} pattern \"{pattern}\" is empty or has a NUL",
                    raw.label, raw.alg
                ),
                help,
            );
        } else {
            out.push(pattern.to_owned());
        }
    }
    Some(out)
}

/// Validates `[rule.tftp]` (`table`, at `span`) for the rule called `label`.
pub(super) fn tftp(
    check: &mut Checker<'_>,
    label: &str,
    table: &DeTable<'_>,
    span: Span,
) -> Option<TftpOptions> {
    let errors_before = check.error_count();
    check.unknown_keys(table, &TFTP, &format!("{label}: "));
    let raw = Options {
        label,
        alg: "tftp",
        table,
    };
    let mut options = TftpOptions::default();
    options.read = raw.boolean(check, "read").unwrap_or(options.read);
    options.write = raw.boolean(check, "write").unwrap_or(options.write);
    if let Some(patterns) = patterns(check, &raw, "allow_files") {
        options.allow_files = patterns;
    }
    if let Some(patterns) = patterns(check, &raw, "deny_files") {
        options.deny_files = patterns;
    }
    let help = "write the server's TID range as \"low-high\", as tftpd-hpa's --port-range: server_ports = \"30000-30009\"";
    if let Some(range) = port_range(check, &raw, "server_ports", help) {
        options.server_ports = Some(range);
    }
    if let Some(timeout) = raw.seconds(check, "request_timeout", 300, options.request_timeout) {
        options.request_timeout = timeout;
    }
    if let Some(timeout) = raw.seconds(check, "transfer_timeout", 3600, options.transfer_timeout) {
        options.transfer_timeout = timeout;
    }
    if let Some(dally) = raw.seconds(check, "dally", 300, options.dally) {
        options.dally = dally;
    }
    if let Some(value) = table.get("reply_addresses") {
        let help = "write the server's other addresses: reply_addresses = [\"192.0.2.10\", \"2001:db8::10\"]";
        if let Some(items) =
            check.strings(value, &raw.what("reply_addresses"), "reply_addresses", help)
        {
            for (text, span) in items {
                match text.trim().parse::<std::net::IpAddr>() {
                    Ok(addr) => options.reply_addresses.push(addr),
                    Err(_) => check.error(
                        span,
                        format!("{label}: tftp.reply_addresses \"{text}\" is not an IP address"),
                        help,
                    ),
                }
            }
        }
    }
    let max_pending = u64::try_from(options.max_pending_per_client).unwrap_or(4096);
    if let Some(n) = raw.number(
        check,
        "max_pending_per_client",
        1..=4096,
        "requests",
        Scale::Count,
        max_pending,
    ) {
        options.max_pending_per_client = usize::try_from(n).unwrap_or(4096);
    }
    if !options.read && !options.write {
        check.error(
            span,
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
    use crate::policy::Policy;
    use crate::policy::test_errors::errors;

    const TFTP_RULE: &str =
        "[[rule]]\nname = \"t\"\naction = \"allow\"\ninspect = \"tftp\"\n[rule.tftp]\n";

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
        assert_eq!(
            errors(&format!("{TFTP_RULE}blksize = 1428\nwrit = true\n")),
            vec![
                "r.toml:6:1: error: rule \"t\": unknown key \"blksize\" in [rule.tftp]\n  help: [rule.tftp] takes: read, write, allow_files, deny_files, server_ports, request_timeout, transfer_timeout, dally, max_pending_per_client, reply_addresses",
                "r.toml:7:1: error: rule \"t\": unknown key \"writ\" in [rule.tftp]\n  help: did you mean \"write\"? [rule.tftp] takes: read, write, allow_files, deny_files, server_ports, request_timeout, transfer_timeout, dally, max_pending_per_client, reply_addresses",
            ]
        );
        assert_eq!(
            errors(&format!(
                "{TFTP_RULE}allow_files = \"*.bin\"\ndeny_files = [\"\", 5]\nread = \"yes\"\n"
            )),
            vec![
                "r.toml:6:15: error: rule \"t\": tftp.allow_files must be a list of strings, not string\n  help: write a list in brackets: allow_files = [\"*.bin\"]",
                "r.toml:7:15: error: rule \"t\": tftp.deny_files pattern \"\" is empty or has a NUL\n  help: patterns are filenames with * (any run of characters) and ? (one character)",
                "r.toml:7:19: error: rule \"t\": tftp.deny_files: each item must be a string in double quotes, not integer\n  help: patterns are filenames with * (any run of characters) and ? (one character)",
                "r.toml:8:8: error: rule \"t\": tftp.read must be true or false, not string\n  help: write read = true or read = false, without quotes",
            ]
        );
        assert_eq!(
            errors(&format!(
                "{TFTP_RULE}reply_addresses = [\"192.0.2.10\", \"vip\"]\n"
            )),
            vec![
                "r.toml:6:34: error: rule \"t\": tftp.reply_addresses \"vip\" is not an IP address\n  help: write the server's other addresses: reply_addresses = [\"192.0.2.10\", \"2001:db8::10\"]",
            ]
        );
        let wrong_inspector = errors(
            "[[rule]]\nname = \"f\"\naction = \"allow\"\ninspect = \"ftp\"\n[rule.tftp]\nread = true\n",
        );
        assert!(
            wrong_inspector[0].contains("[rule.tftp] options need inspect = \"tftp\""),
            "{wrong_inspector:?}"
        );
    }

    #[test]
    fn ftp_option_errors_name_line_and_fix() {
        let rule = "[[rule]]\nname = \"f\"\naction = \"allow\"\ninspect = \"ftp\"\n[rule.ftp]\n";
        assert_eq!(
            errors(&format!(
                "{rule}data_timeout = 2m\nmax_pending = 100\nmax_line = 4k\nactive = yes\nftps = \"allow\"\ndata_timout = 5\n"
            )),
            vec![
                "r.toml:6:16: error: rule \"f\": ftp.data_timeout = 2m is not a number\n  help: ftp.data_timeout is whole seconds written as a bare number: data_timeout = 120",
                "r.toml:7:15: error: rule \"f\": ftp.max_pending = 100 is out of range\n  help: rule \"f\": ftp.max_pending is a whole number of pinholes from 1 to 64",
                "r.toml:8:12: error: rule \"f\": ftp.max_line = 4k is not a number\n  help: ftp.max_line is a bare whole number of bytes: max_line = 4096",
                "r.toml:9:10: error: rule \"f\": ftp.active must be true or false, not yes\n  help: write active = true or active = false, without quotes",
                "r.toml:10:8: error: rule \"f\": ftps \"allow\" is not one of \"deny\", \"allow-uninspected\", \"allow-passive-range\"\n  help: write ftps = \"deny\" or \"allow-uninspected\" or \"allow-passive-range\"",
                "r.toml:11:1: error: rule \"f\": unknown key \"data_timout\" in [rule.ftp]\n  help: did you mean \"data_timeout\"? [rule.ftp] takes: data_timeout, max_pending, max_line, min_data_port, active, passive, active_from_port_20, open_active_on, passive_address, ftps, on_violation, data_outlives_control, ftps_passive_ports, ftps_max_connections, implicit_tls, allow_commands, deny_commands, allow_users, deny_users, allow_paths, deny_paths",
            ]
        );
        assert_eq!(
            errors(&format!("{rule}active = false\npassive = false\n")),
            vec![
                "r.toml:5:1: error: rule \"f\": ftp.active and ftp.passive are both false, so no transfer could ever work\n  help: allow at least one mode, or do not inspect (and do not allow) FTP at all"
            ]
        );
    }

    #[test]
    fn ftps_settings_are_read_and_checked() {
        use crate::alg::ftp::Ftps;
        let rule = "[[rule]]\nname = \"f\"\naction = \"allow\"\ninspect = \"ftp\"\n[rule.ftp]\n";
        let policy = Policy::parse(
            &format!("{rule}ftps = \"allow-passive-range\"\nftps_passive_ports = \"40000-40100\"\nftps_max_connections = 4\nimplicit_tls = true\n"),
            "r.toml",
        )
        .unwrap();
        let Some(Inspect::Ftp(options)) = &policy.rules[0].inspect else {
            panic!("no FTP options")
        };
        assert_eq!(options.ftps, Ftps::AllowPassiveRange);
        assert_eq!(options.ftps_passive_ports, Some((40000, 40100)));
        assert_eq!(options.ftps_max_connections, 4);
        assert!(options.implicit_tls);
        assert_eq!(
            errors(&format!("{rule}ftps = \"allow-passive-range\"\n")),
            vec![
                "r.toml:5:1: error: rule \"f\": ftp.ftps = \"allow-passive-range\" needs the server's passive ports\n  help: add ftps_passive_ports = \"40000-40100\" (the server's own passive range) to [rule.ftp]"
            ]
        );
        assert_eq!(
            errors(&format!(
                "{rule}ftps = \"allow-passive-range\"\nftps_passive_ports = \"40100-40000\"\nftps_max_connections = 0\n"
            )),
            vec![
                "r.toml:7:22: error: rule \"f\": ftp.ftps_passive_ports \"40100-40000\" is not a port range\n  help: write the server's passive ports as \"low-high\", as its configuration gives them (vsftpd's pasv_min_port-pasv_max_port): ftps_passive_ports = \"40000-40100\"",
                "r.toml:8:24: error: rule \"f\": ftp.ftps_max_connections = 0 is out of range\n  help: rule \"f\": ftp.ftps_max_connections is a whole number of connections from 1 to 64",
            ]
        );
        assert_eq!(
            errors(&format!(
                "{rule}ftps_passive_ports = \"40000-40100\"\nimplicit_tls = true\n"
            )),
            vec![
                "r.toml:6:22: error: rule \"f\": ftp.ftps_passive_ports is used only with ftps = \"allow-passive-range\"\n  help: write ftps = \"allow-passive-range\" beside it, or remove it",
                "r.toml:7:16: error: rule \"f\": ftp.implicit_tls with ftps = \"deny\" would refuse every connection\n  help: write ftps = \"allow-passive-range\" (with ftps_passive_ports) or \"allow-uninspected\" beside it",
            ]
        );
    }

    #[test]
    fn command_user_and_path_lists_are_checked_and_normalised() {
        use crate::alg::Inspect;
        use crate::policy::Policy;
        let rule = "[[rule]]\nname = \"f\"\naction = \"allow\"\ninspect = \"ftp\"\n[rule.ftp]\n";
        assert_eq!(
            errors(&format!(
                "{rule}deny_commands = [\"STOR\", \"ST0R\"]\nallow_users = [\"\"]\ndeny_paths = \"/etc\"\n"
            )),
            vec![
                "r.toml:6:26: error: rule \"f\": ftp.deny_commands \"ST0R\" is not an FTP verb (1 to 8 letters)\n  help: write FTP verbs, for example deny_commands = [\"STOR\", \"APPE\", \"DELE\"]",
                "r.toml:7:16: error: rule \"f\": ftp.allow_users pattern \"\" is empty or has a NUL\n  help: patterns are user names with * (any run of characters) and ? (one character), compared without case",
                "r.toml:8:14: error: rule \"f\": ftp.deny_paths must be a list of strings, not string\n  help: write a list in brackets: deny_paths = [\"/etc\"]",
            ]
        );
        let policy = Policy::parse(
            &format!("{rule}deny_commands = [\"stor\", \"XMKD\"]\nallow_users = [\"anonymous\"]\n"),
            "r.toml",
        )
        .unwrap();
        let Some(Inspect::Ftp(options)) = &policy.rules[0].inspect else {
            panic!("no ftp options");
        };
        assert_eq!(options.deny_commands, ["STOR", "MKD"]);
        assert_eq!(options.allow_users, ["anonymous"]);
    }
}
