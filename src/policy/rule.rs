//! The rules of a rules file (`[[rule]]`): zones, protocol, ports, action, the inspector and
//! its options, each checked where it is written.

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use super::alg_options;
use super::check::{Checker, Shape, Span, Value, integer};
use super::{Action, ProtoMatch, Rule, ZoneRef};
use crate::alg::{Alg, FtpOptions, Inspect, TftpOptions};
use crate::wire::transport::proto;

/// The keys of a `[[rule]]`.
pub(super) const RULE: Shape = Shape {
    name: "[[rule]]",
    place: "",
    home: "in a [[rule]], above its [rule.ftp] or [rule.tftp] table",
    keys: &[
        "name", "from", "to", "proto", "ports", "action", "inspect", "ftp", "tftp",
    ],
};

const RULES_HELP: &str = "start each rule with [[rule]] (two brackets) followed by its keys; [rule.ftp] and [rule.tftp] go after the [[rule]] they belong to";

/// The zones rules may name.
pub(super) enum ZoneNames<'d> {
    /// The zones the file defines, in [`super::Policy::zones`] order. A zone whose definition
    /// has errors is still defined: rules naming it are not in error.
    Known(Vec<&'d str>),
    /// `zones` itself is in error, so no zone name is reported as undefined.
    Unknown,
}

/// The rules of the `rule` array (`value`), in order; those with errors are left out.
pub(super) fn rules(
    check: &mut Checker<'_>,
    value: Option<&Value<'_>>,
    zones: &ZoneNames<'_>,
) -> Vec<Rule> {
    let Some(value) = value else {
        return Vec::new();
    };
    let DeValue::Array(items) = value.get_ref() else {
        let found = check.found(value);
        check.error(
            value.span(),
            format!("rule must be a list of [[rule]] tables, not {found}"),
            RULES_HELP,
        );
        return Vec::new();
    };
    let mut rules = Vec::new();
    let mut names = HashSet::new();
    for (index, item) in items.iter().enumerate() {
        let Some(table) = check.table(item, &format!("rule {}", index + 1), RULES_HELP) else {
            continue;
        };
        let (name, name_span) = rule_name(check, index, item.span(), table);
        if let Some(span) = name_span
            && !names.insert(name.clone())
        {
            check.error(
                span,
                format!("rule name \"{name}\" is used twice"),
                "rule names identify rules in events and counters; make each one unique",
            );
        }
        if let Some(rule) = compile(check, name, item.span(), table, zones) {
            rules.push(rule);
        }
    }
    rules
}

/// The rule's name (its own, or `rule-N` by position) and where to report it if it is used
/// twice (`None` when the name is in error itself).
fn rule_name(
    check: &mut Checker<'_>,
    index: usize,
    span: Span,
    table: &DeTable<'_>,
) -> (Arc<str>, Option<Span>) {
    let Some(value) = table.get("name") else {
        return (Arc::from(format!("rule-{}", index + 1)), Some(span));
    };
    let help = "name the rule with a string in double quotes, such as name = \"ftp-in\"";
    match check.string(value, "rule name", help) {
        Some(name) if name.trim().is_empty() => {
            check.error(
                value.span(),
                "rule name is empty",
                "give the rule a name, or leave name out",
            );
            (Arc::from(""), None)
        }
        Some(name) => (Arc::from(name), Some(value.span())),
        None => (Arc::from(format!("rule-{}", index + 1)), None),
    }
}

/// The rule's `inspect` key.
#[derive(Clone)]
enum Inspector {
    /// Not set: a plain rule.
    Absent,
    /// Set but in error, or misspelt, or written in the wrong table (all reported): what
    /// depends on it is not checked.
    Invalid,
    /// This inspector, set at this place.
    Alg(Alg, Span),
}

fn compile(
    check: &mut Checker<'_>,
    name: Arc<str>,
    span: Span,
    table: &DeTable<'_>,
    zones: &ZoneNames<'_>,
) -> Option<Rule> {
    let errors_before = check.error_count();
    let label = format!("rule \"{name}\"");
    let pointed = check.unknown_keys(table, &RULE, &format!("{label}: "));
    // A key reported as misspelt, or as written under the rule's [rule.ftp] or [rule.tftp]
    // header, is one mistake: not missing too, nor what it would have set taken as absent.
    let misplaced = |key: &str| pointed.contains(&key) || in_option_table(table, key);

    let from = zone_ref(check, &label, table.get("from"), "from", zones);
    let to = zone_ref(check, &label, table.get("to"), "to", zones);
    let action = match table.get("action") {
        Some(value) => check
            .string(value, &format!("{label}: action"), ACTION_HELP)
            .and_then(|word| action(check, word, value.span(), "action")),
        None if misplaced("action") => None,
        None => {
            check.error(span, format!("{label} has no action"), ACTION_HELP);
            None
        }
    };

    let inspect = match table.get("inspect") {
        None if misplaced("inspect") => Inspector::Invalid,
        None => Inspector::Absent,
        Some(value) => {
            let help = "use inspect = \"ftp\" or inspect = \"tftp\"";
            match check.string(value, &format!("{label}: inspect"), help) {
                Some("ftp") => Inspector::Alg(Alg::Ftp, value.span()),
                Some("tftp") => Inspector::Alg(Alg::Tftp, value.span()),
                Some(other) => {
                    check.error(
                        value.span(),
                        format!("{label}: inspect \"{other}\" is not an inspector"),
                        help,
                    );
                    Inspector::Invalid
                }
                None => Inspector::Invalid,
            }
        }
    };

    // An inspected rule without a protocol gets its inspector's.
    let proto = match (table.get("proto"), &inspect) {
        (Some(value), _) => proto_match(check, &label, value),
        (None, _) if misplaced("proto") => None,
        (None, Inspector::Alg(Alg::Ftp, _)) => Some(ProtoMatch::Number(proto::TCP)),
        (None, Inspector::Alg(Alg::Tftp, _)) => Some(ProtoMatch::Number(proto::UDP)),
        (None, Inspector::Absent) => Some(ProtoMatch::Any),
        (None, Inspector::Invalid) => None,
    };

    let ports = match table.get("ports") {
        Some(value) => {
            if !matches!(proto, Some(ProtoMatch::Number(proto::TCP | proto::UDP)))
                && proto.is_some()
            {
                check.error(
                    value.span(),
                    format!("{label}: ports apply only to tcp and udp"),
                    "remove ports, or set proto = \"tcp\" or proto = \"udp\"",
                );
            }
            port_ranges(check, &label, value)
        }
        // An inspected rule without ports gets its protocol's well-known port.
        None => match &inspect {
            Inspector::Alg(Alg::Ftp, _) => vec![21..=21],
            Inspector::Alg(Alg::Tftp, _) => vec![69..=69],
            Inspector::Absent | Inspector::Invalid => Vec::new(),
        },
    };

    if let Inspector::Alg(alg, span) = inspect.clone() {
        check_inspect(check, &label, alg, span, action, proto);
    }

    let (ftp_options, tftp_options) = option_tables(check, &label, table, &inspect);

    if check.error_count() != errors_before {
        return None;
    }
    let inspect = match inspect {
        Inspector::Alg(Alg::Ftp, _) => Some(Inspect::Ftp(Arc::new(ftp_options?))),
        Inspector::Alg(Alg::Tftp, _) => Some(Inspect::Tftp(Arc::new(tftp_options?))),
        Inspector::Absent | Inspector::Invalid => None,
    };
    Some(Rule {
        name,
        from: from?,
        to: to?,
        proto: proto?,
        ports,
        action: action?,
        inspect,
    })
}

const ACTION_HELP: &str = "write action = \"allow\" or action = \"deny\"";

/// Whether the rule's `[rule.ftp]` or `[rule.tftp]` table holds `key` (a rule key written
/// after the table's header by mistake).
fn in_option_table(table: &DeTable<'_>, key: &str) -> bool {
    ["ftp", "tftp"].iter().any(|alg| {
        matches!(table.get(*alg).map(toml::Spanned::get_ref), Some(DeValue::Table(options)) if options.contains_key(key))
    })
}

/// `allow` or `deny` (`word`, at `span`) for `key`.
pub(super) fn action(check: &mut Checker<'_>, word: &str, span: Span, key: &str) -> Option<Action> {
    match word {
        "allow" => Some(Action::Allow),
        "deny" => Some(Action::Deny),
        other => {
            check.error(
                span,
                format!("{key} \"{other}\" is not allow or deny"),
                format!("write {key} = \"allow\" or {key} = \"deny\""),
            );
            None
        }
    }
}

/// The rule's `[rule.ftp]` and `[rule.tftp]` tables, checked against its inspector; defaults
/// where a table is absent, `None` where it is in error.
fn option_tables(
    check: &mut Checker<'_>,
    label: &str,
    table: &DeTable<'_>,
    inspect: &Inspector,
) -> (Option<FtpOptions>, Option<TftpOptions>) {
    let ftp = match table.get("ftp") {
        None => Some(FtpOptions::default()),
        Some(value) => {
            if matches!(inspect, Inspector::Absent | Inspector::Alg(Alg::Tftp, _)) {
                check.error(
                    value.span(),
                    format!("{label}: [rule.ftp] options need inspect = \"ftp\""),
                    "add inspect = \"ftp\" to the rule, or remove its [rule.ftp] table",
                );
            }
            let help = "write the FTP options under a [rule.ftp] header after the rule's keys";
            check
                .table(value, &format!("{label}: ftp"), help)
                .and_then(|options| alg_options::ftp(check, label, options, value.span()))
        }
    };
    let tftp = match table.get("tftp") {
        None => Some(TftpOptions::default()),
        Some(value) => {
            if matches!(inspect, Inspector::Absent | Inspector::Alg(Alg::Ftp, _)) {
                check.error(
                    value.span(),
                    format!("{label}: [rule.tftp] options need inspect = \"tftp\""),
                    "add inspect = \"tftp\" to the rule, or remove its [rule.tftp] table",
                );
            }
            let help = "write the TFTP options under a [rule.tftp] header after the rule's keys";
            check
                .table(value, &format!("{label}: tftp"), help)
                .and_then(|options| alg_options::tftp(check, label, options, value.span()))
        }
    };
    (ftp, tftp)
}

/// Checks that an inspected rule allows its flows and uses the inspector's protocol.
fn check_inspect(
    check: &mut Checker<'_>,
    label: &str,
    alg: Alg,
    span: Span,
    action: Option<Action>,
    proto: Option<ProtoMatch>,
) {
    if action == Some(Action::Deny) {
        check.error(
            span.clone(),
            format!("{label}: inspect needs action = \"allow\""),
            "a denied flow has nothing to inspect; remove inspect or allow the flow",
        );
    }
    let needed = match alg {
        Alg::Ftp => proto::TCP,
        Alg::Tftp => proto::UDP,
    };
    if proto.is_some() && proto != Some(ProtoMatch::Number(needed)) {
        let (name, why) = match alg {
            Alg::Ftp => ("tcp", "FTP control connections are TCP"),
            Alg::Tftp => ("udp", "TFTP runs over UDP"),
        };
        check.error(
            span,
            format!("{label}: inspect = \"{alg}\" needs proto = \"{name}\""),
            format!("{why}; set proto = \"{name}\" or leave proto out"),
        );
    }
}

fn zone_ref(
    check: &mut Checker<'_>,
    label: &str,
    value: Option<&Value<'_>>,
    key: &str,
    zones: &ZoneNames<'_>,
) -> Option<ZoneRef> {
    let Some(value) = value else {
        return Some(ZoneRef::Any);
    };
    let help = format!("name a zone in double quotes, such as {key} = \"outside\", or \"any\"");
    let name = check.string(value, &format!("{label}: {key}"), &help)?;
    if name == "any" {
        return Some(ZoneRef::Any);
    }
    let ZoneNames::Known(zones) = zones else {
        return None;
    };
    if let Some(index) = zones.iter().position(|z| *z == name) {
        return Some(ZoneRef::Zone(index));
    }
    let mut known = vec!["any"];
    known.extend_from_slice(zones);
    check.error(
        value.span(),
        format!("{label}: zone \"{name}\" is not defined"),
        format!(
            "define it under [zones.{name}], or use one of: {}",
            known.join(", ")
        ),
    );
    None
}

fn proto_match(check: &mut Checker<'_>, label: &str, value: &Value<'_>) -> Option<ProtoMatch> {
    let help = "use \"tcp\", \"udp\", \"icmp\", \"any\", or an IP protocol number 0-255";
    if let Some(written) = check.repaired(&value.span()) {
        check.error(
            value.span(),
            format!("{label}: proto = {written} is not a name in double quotes or a number"),
            help,
        );
        return None;
    }
    match value.get_ref() {
        DeValue::String(name) => match &**name {
            "tcp" => Some(ProtoMatch::Number(proto::TCP)),
            "udp" => Some(ProtoMatch::Number(proto::UDP)),
            "icmp" | "icmpv6" => Some(ProtoMatch::Icmp),
            "any" => Some(ProtoMatch::Any),
            other => {
                check.error(
                    value.span(),
                    format!("{label}: protocol \"{other}\" is not known"),
                    help,
                );
                None
            }
        },
        DeValue::Integer(n) => {
            let number = integer(n).and_then(|n| u8::try_from(n).ok());
            if number.is_none() {
                let written = check.written(&value.span());
                check.error(
                    value.span(),
                    format!("{label}: protocol number {written} is out of range"),
                    help,
                );
            }
            number.map(ProtoMatch::Number)
        }
        other => {
            check.error(
                value.span(),
                format!(
                    "{label}: proto must be a name or a number, not {}",
                    other.type_str()
                ),
                help,
            );
            None
        }
    }
}

fn port_ranges(
    check: &mut Checker<'_>,
    label: &str,
    value: &Value<'_>,
) -> Vec<RangeInclusive<u16>> {
    let help = "ports are 1-65535, written as numbers or \"low-high\" ranges: ports = [21, \"1024-65535\"]";
    let items: Vec<&Value<'_>> = match value.get_ref() {
        DeValue::Array(items) if !items.is_empty() => items.iter().collect(),
        DeValue::Array(_) => {
            check.error(
                value.span(),
                format!("{label}: ports is empty"),
                "list at least one port, or leave ports out to match every port",
            );
            return Vec::new();
        }
        _ => vec![value],
    };
    let mut ranges = Vec::new();
    for item in items {
        let parsed = if let Some(written) = check.repaired(&item.span()) {
            Err(format!("{written} is not a port"))
        } else {
            match item.get_ref() {
                DeValue::Integer(n) => integer(n)
                    .and_then(port)
                    .map(|p| p..=p)
                    .ok_or_else(|| format!("port {} is out of range", check.written(&item.span()))),
                DeValue::String(text) => match text.split_once('-') {
                    Some((lo, hi)) => match (lo.trim().parse::<i64>(), hi.trim().parse::<i64>()) {
                        (Ok(lo), Ok(hi)) => match (port(lo), port(hi)) {
                            (Some(lo), Some(hi)) if lo <= hi => Ok(lo..=hi),
                            (Some(_), Some(_)) => {
                                check.error(
                                    value.span(),
                                    format!("{label}: port range \"{text}\" is reversed"),
                                    format!("write the lower port first: \"{hi}-{lo}\""),
                                );
                                continue;
                            }
                            _ => Err(format!("port range \"{text}\" is out of range")),
                        },
                        _ => Err(format!("\"{text}\" is not a port range")),
                    },
                    None => match text.trim().parse::<i64>() {
                        Ok(n) => port(n)
                            .map(|p| p..=p)
                            .ok_or_else(|| format!("port {n} is out of range")),
                        Err(_) => Err(format!("\"{text}\" is not a port")),
                    },
                },
                other => Err(format!(
                    "a port must be a number or a \"low-high\" string, not {}",
                    other.type_str()
                )),
            }
        };
        match parsed {
            Ok(range) => ranges.push(range),
            Err(message) => check.error(value.span(), format!("{label}: {message}"), help),
        }
    }
    ranges
}

fn port(n: i64) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_errors::{errors, one_error};
    use crate::policy::{Policy, PolicyErrors};

    fn parse(text: &str, origin: &str) -> Result<Policy, PolicyErrors> {
        Policy::parse(text, origin)
    }

    const RULE_KEYS: &str =
        "[[rule]] takes: name, from, to, proto, ports, action, inspect, ftp, tftp";

    #[test]
    fn unknown_keys_name_the_valid_ones_and_the_nearest() {
        assert_eq!(
            one_error("[[rule]]\naction = \"allow\"\nport = [21]\n"),
            format!(
                "r.toml:3:1: error: rule \"rule-1\": unknown key \"port\"\n  help: did you mean \"ports\"? {RULE_KEYS}"
            )
        );
        assert_eq!(
            one_error("[[rule]]\naction = \"allow\"\nzone = \"x\"\n"),
            format!(
                "r.toml:3:1: error: rule \"rule-1\": unknown key \"zone\"\n  help: {RULE_KEYS}"
            )
        );
    }

    /// A misspelt `action` is one mistake: reported as the unknown key, not as missing too.
    #[test]
    fn a_misspelt_action_is_not_missing_too() {
        assert_eq!(
            one_error("[[rule]]\nname = \"a\"\nactoin = \"allow\"\n"),
            format!(
                "r.toml:3:1: error: rule \"a\": unknown key \"actoin\"\n  help: did you mean \"action\"? {RULE_KEYS}"
            )
        );
        // Nor when it was written under the rule's [rule.ftp] header by mistake.
        assert_eq!(
            one_error(
                "[[rule]]\nname = \"f\"\ninspect = \"ftp\"\n[rule.ftp]\ndata_timeout = 30\naction = \"allow\"\n"
            ),
            "r.toml:6:1: error: rule \"f\": unknown key \"action\" in [rule.ftp]\n  help: \"action\" belongs in a [[rule]], above its [rule.ftp] or [rule.tftp] table; [rule.ftp] takes: data_timeout, max_pending, max_line, min_data_port, active, passive, active_from_port_20, open_active_on, passive_address, ftps, on_violation, data_outlives_control, ftps_passive_ports, ftps_max_connections, implicit_tls, allow_commands, deny_commands, allow_users, deny_users, allow_paths, deny_paths"
        );
    }

    /// A rule without `action` is reported, along with the other errors of the file.
    #[test]
    fn missing_action_is_reported_with_the_rest() {
        assert_eq!(
            errors(
                "[[rule]]\nname = \"a\"\nproto = \"tcp\"\n[[rule]]\nname = \"b\"\nproto = \"tpc\"\naction = \"allow\"\n"
            ),
            vec![
                "r.toml:1:1: error: rule \"a\" has no action\n  help: write action = \"allow\" or action = \"deny\"",
                "r.toml:6:9: error: rule \"b\": protocol \"tpc\" is not known\n  help: use \"tcp\", \"udp\", \"icmp\", \"any\", or an IP protocol number 0-255",
            ]
        );
    }

    /// An `inspect` in error says nothing about the protocol, ports or option tables that
    /// depend on it.
    #[test]
    fn a_bad_inspector_does_not_cascade() {
        assert_eq!(
            one_error(
                "[[rule]]\naction = \"allow\"\ninspect = \"ftpp\"\nports = [21]\n[rule.ftp]\nactive = false\n"
            ),
            "r.toml:3:11: error: rule \"rule-1\": inspect \"ftpp\" is not an inspector\n  help: use inspect = \"ftp\" or inspect = \"tftp\""
        );
    }

    #[test]
    fn wrong_types() {
        assert_eq!(
            errors(
                "[[rule]]\nname = 5\nfrom = [\"a\"]\naction = true\nports = true\nproto = \"tcp\"\n[[rule]]\naction = \"allow\"\nproto = \"tcp\"\nports = [[21]]\nftp = 1\n"
            ),
            vec![
                "r.toml:2:8: error: rule name must be a string in double quotes, not integer\n  help: name the rule with a string in double quotes, such as name = \"ftp-in\"",
                "r.toml:3:8: error: rule \"rule-1\": from must be a string in double quotes, not array\n  help: name a zone in double quotes, such as from = \"outside\", or \"any\"",
                "r.toml:4:10: error: rule \"rule-1\": action must be a string in double quotes, not boolean\n  help: write action = \"allow\" or action = \"deny\"",
                "r.toml:5:9: error: rule \"rule-1\": a port must be a number or a \"low-high\" string, not boolean\n  help: ports are 1-65535, written as numbers or \"low-high\" ranges: ports = [21, \"1024-65535\"]",
                "r.toml:10:9: error: rule \"rule-2\": a port must be a number or a \"low-high\" string, not array\n  help: ports are 1-65535, written as numbers or \"low-high\" ranges: ports = [21, \"1024-65535\"]",
                "r.toml:11:7: error: rule \"rule-2\": [rule.ftp] options need inspect = \"ftp\"\n  help: add inspect = \"ftp\" to the rule, or remove its [rule.ftp] table",
                "r.toml:11:7: error: rule \"rule-2\": ftp must be a table, not integer\n  help: write the FTP options under a [rule.ftp] header after the rule's keys",
            ]
        );
        // A single port may be written without brackets, as a number or a string.
        let policy = parse(
            "[[rule]]\nproto = \"tcp\"\nports = \"21\"\naction = \"allow\"\n[[rule]]\nproto = \"tcp\"\nports = 22\naction = \"allow\"\n",
            "r",
        )
        .unwrap();
        assert_eq!(policy.rules[0].ports, vec![21..=21]);
        assert_eq!(policy.rules[1].ports, vec![22..=22]);
    }

    #[test]
    fn unquoted_words_and_units_in_a_rule() {
        assert_eq!(
            errors("[[rule]]\nfrom = outside\nproto = tcp\nports = [ftp, 2121x]\naction = allow\n"),
            vec![
                "r.toml:2:8: error: rule \"rule-1\": from = outside is not in double quotes\n  help: name a zone in double quotes, such as from = \"outside\", or \"any\"",
                "r.toml:3:9: error: rule \"rule-1\": proto = tcp is not a name in double quotes or a number\n  help: use \"tcp\", \"udp\", \"icmp\", \"any\", or an IP protocol number 0-255",
                "r.toml:4:9: error: rule \"rule-1\": ftp is not a port\n  help: ports are 1-65535, written as numbers or \"low-high\" ranges: ports = [21, \"1024-65535\"]",
                "r.toml:4:9: error: rule \"rule-1\": 2121x is not a port\n  help: ports are 1-65535, written as numbers or \"low-high\" ranges: ports = [21, \"1024-65535\"]",
                "r.toml:5:10: error: rule \"rule-1\": action = allow is not in double quotes\n  help: write action = \"allow\" or action = \"deny\"",
            ]
        );
    }

    #[test]
    fn rules_must_be_an_array_of_tables() {
        assert_eq!(
            one_error("[rule]\naction = \"allow\"\n"),
            "r.toml:1:1: error: rule must be a list of [[rule]] tables, not table\n  help: start each rule with [[rule]] (two brackets) followed by its keys; [rule.ftp] and [rule.tftp] go after the [[rule]] they belong to"
        );
    }

    #[test]
    fn undefined_zone() {
        assert_eq!(
            one_error(
                "[zones.outside]\ninterfaces = [\"wan0\"]\n[[rule]]\nname = \"ftp-in\"\nfrom = \"outsde\"\naction = \"allow\"\n"
            ),
            "r.toml:5:8: error: rule \"ftp-in\": zone \"outsde\" is not defined\n  help: define it under [zones.outsde], or use one of: any, outside"
        );
    }

    #[test]
    fn bad_action_and_default_action() {
        assert_eq!(
            one_error("[[rule]]\naction = \"alow\"\n"),
            "r.toml:2:10: error: action \"alow\" is not allow or deny\n  help: write action = \"allow\" or action = \"deny\""
        );
        assert_eq!(
            one_error("default_action = \"drop\"\n"),
            "r.toml:1:18: error: default_action \"drop\" is not allow or deny\n  help: write default_action = \"allow\" or default_action = \"deny\""
        );
    }

    #[test]
    fn bad_protocols() {
        assert_eq!(
            one_error("[[rule]]\nproto = \"tpc\"\naction = \"allow\"\n"),
            "r.toml:2:9: error: rule \"rule-1\": protocol \"tpc\" is not known\n  help: use \"tcp\", \"udp\", \"icmp\", \"any\", or an IP protocol number 0-255"
        );
        assert_eq!(
            one_error("[[rule]]\nproto = 300\naction = \"allow\"\n"),
            "r.toml:2:9: error: rule \"rule-1\": protocol number 300 is out of range\n  help: use \"tcp\", \"udp\", \"icmp\", \"any\", or an IP protocol number 0-255"
        );
        let policy = parse("[[rule]]\nproto = 47\naction = \"allow\"\n", "r").unwrap();
        assert_eq!(policy.rules[0].proto, ProtoMatch::Number(47));
    }

    #[test]
    fn bad_ports() {
        let help = "help: ports are 1-65535, written as numbers or \"low-high\" ranges: ports = [21, \"1024-65535\"]";
        assert_eq!(
            one_error("[[rule]]\nproto = \"tcp\"\nports = [70000]\naction = \"allow\"\n"),
            format!("r.toml:3:9: error: rule \"rule-1\": port 70000 is out of range\n  {help}")
        );
        assert_eq!(
            one_error("[[rule]]\nproto = \"tcp\"\nports = [\"2000-1000\"]\naction = \"allow\"\n"),
            "r.toml:3:9: error: rule \"rule-1\": port range \"2000-1000\" is reversed\n  help: write the lower port first: \"1000-2000\""
        );
        assert_eq!(
            one_error("[[rule]]\nproto = \"tcp\"\nports = [\"ftp\"]\naction = \"allow\"\n"),
            format!("r.toml:3:9: error: rule \"rule-1\": \"ftp\" is not a port\n  {help}")
        );
        assert_eq!(
            one_error("[[rule]]\nproto = \"icmp\"\nports = [1]\naction = \"allow\"\n"),
            "r.toml:3:9: error: rule \"rule-1\": ports apply only to tcp and udp\n  help: remove ports, or set proto = \"tcp\" or proto = \"udp\""
        );
        let policy = parse(
            "[[rule]]\nproto = \"udp\"\nports = [53, \"1024-65535\"]\naction = \"allow\"\n",
            "r",
        )
        .unwrap();
        assert_eq!(policy.rules[0].ports, vec![53..=53, 1024..=65535]);
    }

    #[test]
    fn bad_inspect() {
        assert_eq!(
            one_error("[[rule]]\naction = \"allow\"\ninspect = \"http\"\n"),
            "r.toml:3:11: error: rule \"rule-1\": inspect \"http\" is not an inspector\n  help: use inspect = \"ftp\" or inspect = \"tftp\""
        );
        assert_eq!(
            one_error("[[rule]]\naction = \"deny\"\ninspect = \"ftp\"\n"),
            "r.toml:3:11: error: rule \"rule-1\": inspect needs action = \"allow\"\n  help: a denied flow has nothing to inspect; remove inspect or allow the flow"
        );
        assert_eq!(
            one_error("[[rule]]\nproto = \"udp\"\naction = \"allow\"\ninspect = \"ftp\"\n"),
            "r.toml:4:11: error: rule \"rule-1\": inspect = \"ftp\" needs proto = \"tcp\"\n  help: FTP control connections are TCP; set proto = \"tcp\" or leave proto out"
        );
    }

    #[test]
    fn inspect_defaults_protocol_and_port() {
        let policy = parse("[[rule]]\naction = \"allow\"\ninspect = \"tftp\"\n", "r").unwrap();
        assert_eq!(policy.rules[0].proto, ProtoMatch::Number(proto::UDP));
        assert_eq!(policy.rules[0].ports, vec![69..=69]);
    }

    #[test]
    fn duplicate_rule_names() {
        assert_eq!(
            one_error(
                "[[rule]]\nname = \"a\"\naction = \"allow\"\n[[rule]]\nname = \"a\"\naction = \"deny\"\n"
            ),
            "r.toml:5:8: error: rule name \"a\" is used twice\n  help: rule names identify rules in events and counters; make each one unique"
        );
        // Also when one of the rules has another error.
        assert_eq!(
            errors("[[rule]]\nname = \"a\"\naction = \"allow\"\n[[rule]]\nname = \"a\"\naction = \"alow\"\n").len(),
            2
        );
    }
}
