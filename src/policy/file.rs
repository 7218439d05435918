//! The rules file format (TOML) and its validation into a [`Policy`].
//!
//! The file is parsed into a document that keeps the place of every key and value
//! ([`toml::de::DeTable`]) and read table by table, so that each error points at the exact
//! place and one run reports them all: syntax (`syntax`), unknown keys, values of the wrong
//! type or out of range (`check`), zones and settings (here), rules (`rule`) and their
//! inspector options (`alg_options`). The format is documented in the README ("Rules").

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use toml::de::{DeTable, DeValue};

use super::check::{Checker, Shape, Span, Value, Whole};
use super::error::PolicyErrors;
use super::hint::Scale;
use super::rule::{self, ZoneNames};
use super::{Action, IfaceName, Limits, Policy, TcpOptions, Timeouts, Zone, alg_options, syntax};

/// Longest timeout accepted, in seconds (30 days).
const MAX_TIMEOUT_SECS: i64 = 30 * 24 * 3600;
/// Largest table size accepted.
const MAX_TABLE: i64 = 1 << 26;

/// The top-level keys.
const TOP: Shape = Shape {
    name: "the top level",
    place: "",
    home: "at the top of the file, before any [table] header",
    keys: &[
        "default_action",
        "zones",
        "rule",
        "timeouts",
        "limits",
        "tcp",
    ],
};

/// The keys of a `[zones.NAME]` table.
const ZONE: Shape = Shape {
    name: "[zones.NAME]",
    place: "",
    home: "in a [zones.NAME] table",
    keys: &["interfaces", "networks"],
};

/// The keys of `[tcp]`.
const TCP: Shape = Shape {
    name: "[tcp]",
    place: " in [tcp]",
    home: "in [tcp]",
    keys: &["midstream_pickup"],
};

/// Every table of the format, to say where a key written in the wrong one belongs.
const SHAPES: [&Shape; 8] = [
    &TOP,
    &ZONE,
    &rule::RULE,
    &alg_options::FTP,
    &alg_options::TFTP,
    &TIMEOUTS,
    &LIMITS,
    &TCP,
];

/// Defines the `[timeouts]` table: one optional whole-seconds key per [`Timeouts`] field.
macro_rules! timeouts_table {
    ($($field:ident),* $(,)?) => {
        /// The keys of `[timeouts]`.
        const TIMEOUTS: Shape = Shape {
            name: "[timeouts]",
            place: " in [timeouts]",
            home: "in [timeouts]",
            keys: &[$(stringify!($field)),*],
        };

        fn timeouts(check: &mut Checker<'_>, table: &DeTable<'_>) -> Timeouts {
            let mut timeouts = Timeouts::default();
            $(
                if let Some(value) = table.get(stringify!($field)) {
                    let spec = Whole {
                        what: concat!("timeouts.", stringify!($field)),
                        key: stringify!($field),
                        subject: "timeouts are",
                        min: 1,
                        max: if stringify!($field) == "fragment" { 60 } else { MAX_TIMEOUT_SECS },
                        unit: "seconds",
                        scale: Scale::Seconds,
                        default: timeouts.$field.as_secs(),
                    };
                    if let Some(secs) = check.whole(value, &spec) {
                        timeouts.$field = Duration::from_secs(secs);
                    }
                }
            )*
            timeouts
        }
    };
}

timeouts_table!(
    tcp_handshake,
    tcp_established,
    tcp_fin_wait,
    tcp_closing,
    tcp_time_wait,
    tcp_closed,
    udp_unreplied,
    udp_replied,
    icmp,
    other,
    fragment,
);

/// Defines the `[limits]` table: one optional key per [`Limits`] field.
macro_rules! limits_table {
    ($($field:ident),* $(,)?) => {
        /// The keys of `[limits]`.
        const LIMITS: Shape = Shape {
            name: "[limits]",
            place: " in [limits]",
            home: "in [limits]",
            keys: &[$(stringify!($field)),*],
        };

        fn limits(check: &mut Checker<'_>, table: &DeTable<'_>) -> Limits {
            let mut limits = Limits::default();
            $(
                if let Some(value) = table.get(stringify!($field)) {
                    let spec = Whole {
                        what: concat!("limits.", stringify!($field)),
                        key: stringify!($field),
                        subject: "limits are",
                        min: 1,
                        max: MAX_TABLE,
                        unit: "entries",
                        scale: if stringify!($field).ends_with("_bytes") { Scale::Bytes } else { Scale::Count },
                        default: u64::try_from(limits.$field).unwrap_or(u64::MAX),
                    };
                    if let Some(n) = check.whole(value, &spec) {
                        limits.$field = usize::try_from(n).unwrap_or(usize::MAX);
                    }
                }
            )*
            limits
        }
    };
}

limits_table!(
    max_flows,
    max_flows_per_source,
    max_pinholes,
    max_pinholes_per_client,
    max_stream_bytes,
    max_fragment_datagrams,
    max_fragment_bytes,
    max_fragments_per_datagram,
    max_fragments_held,
);

/// Parses and validates `text`, naming it `origin` in errors.
pub(super) fn parse(text: &str, origin: &str) -> Result<Policy, PolicyErrors> {
    let mut check = Checker::new(text, origin, &SHAPES);
    let policy = syntax::repair(text, &mut check).and_then(|source| {
        match DeTable::parse(&source) {
            Ok(document) => Some(read(&mut check, origin, document.get_ref())),
            // The repaired text parsed before; this is not expected.
            Err(error) => {
                syntax::report(&mut check, text, &error);
                None
            }
        }
    });
    let errors = check.finish();
    match policy {
        Some(policy) if errors.is_empty() => Ok(policy),
        _ => Err(PolicyErrors(errors)),
    }
}

/// The policy `document` describes; where it is in error, `check` has the errors.
fn read(check: &mut Checker<'_>, origin: &str, document: &DeTable<'_>) -> Policy {
    check.unknown_keys(document, &TOP, "");
    let default_action = document
        .get("default_action")
        .and_then(|value| {
            let help = "write default_action = \"allow\" or default_action = \"deny\"";
            let word = check.string(value, "default_action", help)?;
            rule::action(check, word, value.span(), "default_action")
        })
        .unwrap_or(Action::Deny);
    let (zones, names) = zones(check, document.get("zones"));
    let rules = rule::rules(check, document.get("rule"), &names);
    let timeouts = section(check, document, "timeouts", &TIMEOUTS)
        .map_or_else(Timeouts::default, |table| timeouts(check, table));
    let limits = section(check, document, "limits", &LIMITS)
        .map_or_else(Limits::default, |table| limits(check, table));
    let midstream_pickup = section(check, document, "tcp", &TCP)
        .and_then(|table| table.get("midstream_pickup"))
        .and_then(|value| check.boolean(value, "tcp.midstream_pickup", "midstream_pickup"))
        .unwrap_or(false);
    Policy {
        origin: origin.to_owned(),
        zones,
        rules,
        default_action,
        timeouts,
        limits,
        tcp: TcpOptions { midstream_pickup },
    }
}

/// The table under the top-level `key`, with its unknown keys reported.
fn section<'d, 'i>(
    check: &mut Checker<'_>,
    document: &'d DeTable<'i>,
    key: &str,
    shape: &Shape,
) -> Option<&'d DeTable<'i>> {
    let help = format!("write [{key}] on a line of its own, followed by its key = value lines");
    let table = check.table(document.get(key)?, key, &help)?;
    check.unknown_keys(table, shape, "");
    Some(table)
}

/// The zones (those without errors) and the names of all of them.
fn zones<'d>(check: &mut Checker<'_>, value: Option<&'d Value<'_>>) -> (Vec<Zone>, ZoneNames<'d>) {
    let Some(value) = value else {
        return (Vec::new(), ZoneNames::Known(Vec::new()));
    };
    let help = "define each zone as a [zones.NAME] table with interfaces and/or networks";
    let Some(table) = check.table(value, "zones", help) else {
        return (Vec::new(), ZoneNames::Unknown);
    };
    let names = table.keys().map(|name| &**name.get_ref()).collect();
    let zones = table
        .iter()
        .filter_map(|(name, zone)| compile_zone(check, name.get_ref(), zone))
        .collect();
    (zones, ZoneNames::Known(names))
}

fn compile_zone(check: &mut Checker<'_>, name: &str, zone: &Value<'_>) -> Option<Zone> {
    let span = zone.span();
    let errors_before = check.error_count();
    if name == "any" {
        check.error(
            span.clone(),
            "zone name \"any\" is reserved",
            "rename the zone; \"any\" already means every address",
        );
    }
    let help = format!(
        "write [zones.{name}] on a line of its own, followed by interfaces = [...] and/or networks = [...]"
    );
    let table = check.table(zone, &format!("zone \"{name}\""), &help)?;
    let prefix = format!("zone \"{name}\": ");
    let pointed = check.unknown_keys(table, &ZONE, &prefix);
    let written = |key: &str| match table.get(key).map(toml::Spanned::get_ref) {
        None => 0,
        Some(DeValue::Array(items)) => items.len(),
        Some(_) => 1,
    };
    let misspelt = pointed.contains(&"interfaces") || pointed.contains(&"networks");
    if written("interfaces") == 0 && written("networks") == 0 && !misspelt {
        check.error(
            span,
            format!("zone \"{name}\" has neither interfaces nor networks, so it matches nothing"),
            "list interfaces = [\"eth0\"] and/or networks = [\"192.0.2.0/24\"]",
        );
    }
    let mut interfaces = Vec::new();
    let help = "list interface names in double quotes: interfaces = [\"eth0\"]";
    let listed = table
        .get("interfaces")
        .and_then(|value| check.strings(value, &format!("{prefix}interfaces"), "interfaces", help));
    for (iface, span) in listed.unwrap_or_default() {
        match IfaceName::new(iface) {
            Some(parsed) => interfaces.push(parsed),
            None => check.error(
                span,
                format!("zone \"{name}\": \"{iface}\" is not an interface name"),
                "interface names are 1 to 15 characters, without '/', ':' or spaces",
            ),
        }
    }
    let mut networks = Vec::new();
    let help = "list address prefixes in double quotes: networks = [\"192.0.2.0/24\"]";
    let listed = table
        .get("networks")
        .and_then(|value| check.strings(value, &format!("{prefix}networks"), "networks", help));
    for (network, span) in listed.unwrap_or_default() {
        if let Some(net) = parse_network(check, name, network, span) {
            networks.push(net);
        }
    }
    (check.error_count() == errors_before).then(|| Zone {
        name: name.to_owned(),
        interfaces,
        networks,
    })
}

fn parse_network(check: &mut Checker<'_>, zone: &str, text: &str, span: Span) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Some(IpNet::from(addr));
    }
    match text.parse::<IpNet>() {
        Ok(net) if net.trunc() == net => Some(net),
        Ok(net) => {
            let host = IpNet::from(net.addr());
            check.error(
                span,
                format!("zone \"{zone}\": \"{text}\" has host bits set"),
                format!("did you mean {}? (the single host is {host})", net.trunc()),
            );
            None
        }
        Err(_) => {
            check.error(
                span,
                format!("zone \"{zone}\": \"{text}\" is not an address prefix"),
                "write an address and prefix length, such as 192.0.2.0/24 or 2001:db8::/32",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_errors::{errors, one_error};

    /// The file of the issue: a misspelt key, misspelt zones, a timeout out of range and one
    /// with a unit. Every error is reported, in file order, each once.
    #[test]
    fn every_error_of_a_file_is_reported_in_order() {
        let text = r#"default_action = "deny"

[zones.inside]
interfaces = ["lan0"]
networks = ["192.0.2.0/24"]

[zones.outside]
interfaces = ["wan0"]

[[rule]]
name = "ftp-in"
from = "outsde"
to = "insde"
actoin = "allow"
inspect = "ftp"

[timeouts]
tcp_established = 0
udp_replied = 3600s

[limits]
max_flow = 1000
"#;
        assert_eq!(
            errors(text),
            vec![
                "r.toml:12:8: error: rule \"ftp-in\": zone \"outsde\" is not defined\n  help: define it under [zones.outsde], or use one of: any, inside, outside",
                "r.toml:13:6: error: rule \"ftp-in\": zone \"insde\" is not defined\n  help: define it under [zones.insde], or use one of: any, inside, outside",
                "r.toml:14:1: error: rule \"ftp-in\": unknown key \"actoin\"\n  help: did you mean \"action\"? [[rule]] takes: name, from, to, proto, ports, action, inspect, ftp, tftp",
                "r.toml:18:19: error: timeouts.tcp_established = 0 is out of range\n  help: timeouts.tcp_established is a whole number of seconds from 1 to 2592000",
                "r.toml:19:15: error: timeouts.udp_replied = 3600s is not a number\n  help: timeouts are whole seconds written as a bare number: udp_replied = 3600",
                "r.toml:22:1: error: unknown key \"max_flow\" in [limits]\n  help: did you mean \"max_flows\"? [limits] takes: max_flows, max_flows_per_source, max_pinholes, max_pinholes_per_client, max_stream_bytes, max_fragment_datagrams, max_fragment_bytes, max_fragments_per_datagram, max_fragments_held",
            ]
        );
    }

    /// A zone whose definition has an error is still defined: the rules naming it are fine.
    #[test]
    fn a_zone_in_error_is_still_defined() {
        let text = "[zones.inside]\nnetworks = [\"192.0.2.0/33\"]\n[zones.outside]\nnetworks = [\"0.0.0.0/0\"]\n\
            [[rule]]\nfrom = \"outside\"\nto = \"inside\"\naction = \"allow\"\n\
            [[rule]]\nfrom = \"inside\"\naction = \"allow\"\n[[rule]]\nto = \"inside\"\naction = \"deny\"\n";
        assert_eq!(
            one_error(text),
            "r.toml:2:13: error: zone \"inside\": \"192.0.2.0/33\" is not an address prefix\n  help: write an address and prefix length, such as 192.0.2.0/24 or 2001:db8::/32"
        );
        // The same for a zone that is not a table at all, and for a misspelt key in a zone
        // (which does not make it "match nothing" as well).
        assert_eq!(
            one_error(
                "[zones]\ninside = \"lan0\"\n[[rule]]\nto = \"inside\"\naction = \"allow\"\n"
            ),
            "r.toml:2:10: error: zone \"inside\" must be a table, not string\n  help: write [zones.inside] on a line of its own, followed by interfaces = [...] and/or networks = [...]"
        );
        assert_eq!(
            one_error(
                "[zones.inside]\nnetwork = [\"192.0.2.0/24\"]\n[[rule]]\nto = \"inside\"\naction = \"allow\"\n"
            ),
            "r.toml:2:1: error: zone \"inside\": unknown key \"network\"\n  help: did you mean \"networks\"? [zones.NAME] takes: interfaces, networks"
        );
        // With `zones` itself in error no zone name can be judged.
        assert_eq!(
            one_error("zones = [\"inside\"]\n[[rule]]\nto = \"inside\"\naction = \"allow\"\n"),
            "r.toml:1:9: error: zones must be a table, not array\n  help: define each zone as a [zones.NAME] table with interfaces and/or networks"
        );
    }

    #[test]
    fn numbers_with_units_say_how_to_write_them() {
        assert_eq!(
            errors(
                "[timeouts]\ntcp_established = 3600s\nicmp = 1.5 h\n[limits]\nmax_flows = 10k\nmax_stream_bytes = 64MiB\n"
            ),
            vec![
                "r.toml:2:19: error: timeouts.tcp_established = 3600s is not a number\n  help: timeouts are whole seconds written as a bare number: tcp_established = 3600",
                "r.toml:3:8: error: timeouts.icmp = 1.5 h is not a number\n  help: timeouts are whole seconds written as a bare number: icmp = 5400",
                "r.toml:5:13: error: limits.max_flows = 10k is not a number\n  help: limits are a bare whole number: max_flows = 10000",
                "r.toml:6:20: error: limits.max_stream_bytes = 64MiB is not a number\n  help: limits are a bare whole number of bytes: max_stream_bytes = 67108864",
            ]
        );
        // The parser accepts an underscore before the unit; the number still does not parse.
        assert_eq!(
            one_error("[timeouts]\nother = 3_600s\n"),
            "r.toml:2:9: error: timeouts.other = 3_600s is not a number\n  help: timeouts are whole seconds written as a bare number: other = 3600"
        );
        // A unit that means nothing: the bare number as the example.
        assert_eq!(
            one_error("[timeouts]\nother = 90x\n"),
            "r.toml:2:9: error: timeouts.other = 90x is not a number\n  help: timeouts are whole seconds written as a bare number: other = 90"
        );
    }

    #[test]
    fn wrong_types() {
        assert_eq!(
            errors(
                "default_action = 1\n[timeouts]\nicmp = \"30\"\nother = 1.5\n[limits]\nmax_flows = true\n[tcp]\nmidstream_pickup = \"yes\"\n"
            ),
            vec![
                "r.toml:1:18: error: default_action must be a string in double quotes, not integer\n  help: write default_action = \"allow\" or default_action = \"deny\"",
                "r.toml:3:8: error: timeouts.icmp must be a whole number, not string\n  help: timeouts are whole seconds written as a bare number: icmp = 30",
                "r.toml:4:9: error: timeouts.other must be a whole number, not float\n  help: timeouts are whole seconds written as a bare number: other = 2",
                "r.toml:6:13: error: limits.max_flows must be a whole number, not boolean\n  help: limits are a bare whole number: max_flows = 262144",
                "r.toml:8:20: error: tcp.midstream_pickup must be true or false, not string\n  help: write midstream_pickup = true or midstream_pickup = false, without quotes",
            ]
        );
        assert_eq!(
            errors(
                "timeouts = 5\n[zones.lan]\ninterfaces = \"eth0\"\nnetworks = [\"10.0.0.0/8\", 5]\n"
            ),
            vec![
                "r.toml:1:12: error: timeouts must be a table, not integer\n  help: write [timeouts] on a line of its own, followed by its key = value lines",
                "r.toml:3:14: error: zone \"lan\": interfaces must be a list of strings, not string\n  help: write a list in brackets: interfaces = [\"eth0\"]",
                "r.toml:4:27: error: zone \"lan\": networks: each item must be a string in double quotes, not integer\n  help: list address prefixes in double quotes: networks = [\"192.0.2.0/24\"]",
            ]
        );
        assert_eq!(
            one_error("[timeouts]\ntcp_closing = 99999999999999999999\n"),
            "r.toml:2:15: error: timeouts.tcp_closing = 99999999999999999999 is out of range\n  help: timeouts.tcp_closing is a whole number of seconds from 1 to 2592000"
        );
    }

    /// Unquoted text is read as a placeholder and reported by the setting it was meant for, so
    /// the rest of the file is still checked.
    #[test]
    fn unquoted_words_are_reported_where_they_are_used() {
        assert_eq!(
            errors(
                "default_action = deny\n[tcp]\nmidstream_pickup = True\n[timeouts]\nicmp = forever\nother = 0\n"
            ),
            vec![
                "r.toml:1:18: error: default_action = deny is not in double quotes\n  help: write default_action = \"allow\" or default_action = \"deny\"",
                "r.toml:3:20: error: tcp.midstream_pickup must be true or false, not True\n  help: write midstream_pickup = true or midstream_pickup = false, without quotes",
                "r.toml:5:8: error: timeouts.icmp = forever is not a number\n  help: timeouts are whole seconds written as a bare number: icmp = 30",
                "r.toml:6:9: error: timeouts.other = 0 is out of range\n  help: timeouts.other is a whole number of seconds from 1 to 2592000",
            ]
        );
        // Under an unknown key nothing reads the value: both are reported.
        assert_eq!(
            errors("[timeouts]\ntcp_establised = 1h\n"),
            vec![
                "r.toml:2:1: error: unknown key \"tcp_establised\" in [timeouts]\n  help: did you mean \"tcp_established\"? [timeouts] takes: tcp_handshake, tcp_established, tcp_fin_wait, tcp_closing, tcp_time_wait, tcp_closed, udp_unreplied, udp_replied, icmp, other, fragment",
                "r.toml:2:18: error: 1h is not a number\n  help: write numbers bare, without a unit or suffix (timeouts are whole seconds, such as 3600)",
            ]
        );
    }

    /// A key written under the wrong header: where it belongs.
    #[test]
    fn keys_in_the_wrong_table_say_where_they_belong() {
        assert_eq!(
            errors(
                "[timeouts]\nmax_flows = 100\n[[rule]]\naction = \"allow\"\ndefault_action = \"allow\"\n"
            ),
            vec![
                "r.toml:2:1: error: unknown key \"max_flows\" in [timeouts]\n  help: \"max_flows\" belongs in [limits]; [timeouts] takes: tcp_handshake, tcp_established, tcp_fin_wait, tcp_closing, tcp_time_wait, tcp_closed, udp_unreplied, udp_replied, icmp, other, fragment",
                "r.toml:5:1: error: rule \"rule-1\": unknown key \"default_action\"\n  help: \"default_action\" belongs at the top of the file, before any [table] header; [[rule]] takes: name, from, to, proto, ports, action, inspect, ftp, tftp",
            ]
        );
        assert_eq!(
            one_error("action = \"allow\"\n"),
            "r.toml:1:1: error: unknown key \"action\"\n  help: \"action\" belongs in a [[rule]], above its [rule.ftp] or [rule.tftp] table; the top level takes: default_action, zones, rule, timeouts, limits, tcp"
        );
        assert_eq!(
            one_error("[timeout]\nicmp = 5\n"),
            "r.toml:1:2: error: unknown key \"timeout\"\n  help: did you mean \"timeouts\"? The top level takes: default_action, zones, rule, timeouts, limits, tcp"
        );
    }

    /// A syntax error other than a malformed value stops the reading; it is reported with
    /// its place and a fix, after the errors found before it.
    #[test]
    fn syntax_error_has_location_and_fix() {
        assert_eq!(
            one_error("[[rule]]\naction = \"allow\"\nname = \n"),
            "r.toml:3:8: error: name has no value\n  help: write a value after \"=\": a \"quoted string\", a number, true or false, or a [list]"
        );
        assert_eq!(
            errors("[timeouts]\nicmp = 5s\n[[rule]]\nname = \"a\nto = \"b\"\n"),
            vec![
                "r.toml:2:8: error: 5s is not a number\n  help: write numbers bare, without a unit or suffix (timeouts are whole seconds, such as 3600)",
                "r.toml:4:10: error: unclosed string\n  help: end the string with \" on the same line (inside it, write \\\" for a quote)",
            ]
        );
    }

    #[test]
    fn bad_network_and_host_bits() {
        assert_eq!(
            one_error("[zones.inside]\nnetworks = [\"192.0.2.0/33\"]\n"),
            "r.toml:2:13: error: zone \"inside\": \"192.0.2.0/33\" is not an address prefix\n  help: write an address and prefix length, such as 192.0.2.0/24 or 2001:db8::/32"
        );
        assert_eq!(
            one_error("[zones.inside]\nnetworks = [\"192.0.2.10/24\"]\n"),
            "r.toml:2:13: error: zone \"inside\": \"192.0.2.10/24\" has host bits set\n  help: did you mean 192.0.2.0/24? (the single host is 192.0.2.10/32)"
        );
    }

    #[test]
    fn bare_addresses_are_hosts() {
        let policy = parse(
            "[zones.server]\nnetworks = [\"192.0.2.10\", \"2001:db8::1\"]\n",
            "r",
        )
        .unwrap();
        assert_eq!(policy.zones[0].networks[0].to_string(), "192.0.2.10/32");
        assert_eq!(policy.zones[0].networks[1].to_string(), "2001:db8::1/128");
    }

    #[test]
    fn empty_zone_and_reserved_name_and_bad_interface() {
        assert_eq!(
            one_error("[zones.dmz]\n"),
            "r.toml:1:1: error: zone \"dmz\" has neither interfaces nor networks, so it matches nothing\n  help: list interfaces = [\"eth0\"] and/or networks = [\"192.0.2.0/24\"]"
        );
        assert_eq!(
            one_error("[zones.any]\ninterfaces = [\"eth0\"]\n"),
            "r.toml:1:1: error: zone name \"any\" is reserved\n  help: rename the zone; \"any\" already means every address"
        );
        assert_eq!(
            one_error("[zones.lan]\ninterfaces = [\"eth0/1\"]\n"),
            "r.toml:2:15: error: zone \"lan\": \"eth0/1\" is not an interface name\n  help: interface names are 1 to 15 characters, without '/', ':' or spaces"
        );
    }

    #[test]
    fn timeouts_and_limits() {
        let policy = parse("[timeouts]\ntcp_established = 7200\n[limits]\nmax_flows = 1000\n[tcp]\nmidstream_pickup = true\n", "r").unwrap();
        assert_eq!(policy.timeouts.tcp_established, Duration::from_secs(7200));
        assert_eq!(policy.limits.max_flows, 1000);
        assert!(policy.tcp.midstream_pickup);
        assert_eq!(
            one_error("[timeouts]\nudp_replied = 0\n"),
            "r.toml:2:15: error: timeouts.udp_replied = 0 is out of range\n  help: timeouts.udp_replied is a whole number of seconds from 1 to 2592000"
        );
        assert_eq!(
            one_error("[timeouts]\nfragment = 90\n"),
            "r.toml:2:12: error: timeouts.fragment = 90 is out of range\n  help: timeouts.fragment is a whole number of seconds from 1 to 60"
        );
        assert_eq!(
            one_error("[limits]\nmax_flows = -1\n"),
            "r.toml:2:13: error: limits.max_flows = -1 is out of range\n  help: limits.max_flows is a whole number of entries from 1 to 67108864"
        );
        assert_eq!(
            one_error("[tcp]\nmidstream = true\n"),
            "r.toml:2:1: error: unknown key \"midstream\" in [tcp]\n  help: [tcp] takes: midstream_pickup"
        );
    }
}
