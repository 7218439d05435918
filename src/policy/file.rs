//! The rules file format (TOML, read with serde) and its validation into a [`Policy`].
//!
//! Every value that can be wrong is read with its span, so each error points at the exact
//! place. The format is documented in the README ("Rules").

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::ops::{Range, RangeInclusive};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::{Spanned, Value};

use super::alg_options::{self, RawFtp, RawTftp};
use super::error::{PolicyError, PolicyErrors, locate};
use super::{
    Action, IfaceName, Limits, Policy, ProtoMatch, Rule, TcpOptions, Timeouts, Zone, ZoneRef,
};
use crate::alg::{Alg, FtpOptions, Inspect, TftpOptions};
use crate::wire::transport::proto;

/// Longest timeout accepted, in seconds (30 days).
const MAX_TIMEOUT_SECS: i64 = 30 * 24 * 3600;
/// Largest table size accepted.
const MAX_TABLE: i64 = 1 << 26;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default_action: Option<Spanned<String>>,
    #[serde(default)]
    zones: BTreeMap<String, Spanned<RawZone>>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    tcp: RawTcp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    #[serde(default)]
    interfaces: Vec<Spanned<String>>,
    #[serde(default)]
    networks: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
    proto: Option<Spanned<Value>>,
    ports: Option<Spanned<Value>>,
    action: Spanned<String>,
    inspect: Option<Spanned<String>>,
    ftp: Option<Spanned<RawFtp>>,
    tftp: Option<Spanned<RawTftp>>,
}

/// Defines the `[timeouts]` table: one optional whole-seconds field per [`Timeouts`] field.
macro_rules! timeouts_table {
    ($($field:ident),* $(,)?) => {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct RawTimeouts {
            $( $field: Option<Spanned<i64>>, )*
        }

        impl RawTimeouts {
            fn apply(&self, into: &mut Timeouts, check: &mut Checker<'_>) {
                $(
                    if let Some(value) = &self.$field {
                        let max = if stringify!($field) == "fragment" { 60 } else { MAX_TIMEOUT_SECS };
                        if let Some(secs) = check.in_range(value, 1, max, concat!("timeouts.", stringify!($field)), "seconds") {
                            into.$field = Duration::from_secs(secs);
                        }
                    }
                )*
            }
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

/// Defines the `[limits]` table: one optional field per [`Limits`] field.
macro_rules! limits_table {
    ($($field:ident),* $(,)?) => {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct RawLimits {
            $( $field: Option<Spanned<i64>>, )*
        }

        impl RawLimits {
            fn apply(&self, into: &mut Limits, check: &mut Checker<'_>) {
                $(
                    if let Some(value) = &self.$field {
                        if let Some(n) = check.in_range(value, 1, MAX_TABLE, concat!("limits.", stringify!($field)), "entries") {
                            into.$field = usize::try_from(n).unwrap_or(usize::MAX);
                        }
                    }
                )*
            }
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    midstream_pickup: Option<bool>,
}

/// Collects errors against the source text.
pub(super) struct Checker<'a> {
    text: &'a str,
    origin: &'a str,
    errors: Vec<PolicyError>,
    /// Span of the table being checked, for errors about the table as a whole.
    current: Range<usize>,
}

impl Checker<'_> {
    pub(super) fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// An error about a whole table whose span is not at hand (reported at the current rule).
    pub(super) fn error_at_start(&mut self, message: impl Into<String>, help: impl Into<String>) {
        let span = self.current.clone();
        self.error(span, message, help);
    }

    pub(super) fn error(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let (line, column) = locate(self.text, span.start);
        self.errors.push(PolicyError {
            origin: self.origin.to_owned(),
            line,
            column,
            message: message.into(),
            help: help.into(),
        });
    }

    pub(super) fn in_range(
        &mut self,
        value: &Spanned<i64>,
        min: i64,
        max: i64,
        what: &str,
        unit: &str,
    ) -> Option<u64> {
        let n = *value.get_ref();
        if (min..=max).contains(&n) {
            u64::try_from(n).ok()
        } else {
            self.error(
                value.span(),
                format!("{what} = {n} is out of range"),
                format!("{what} is a whole number of {unit} from {min} to {max}"),
            );
            None
        }
    }
}

/// Parses and validates `text`, naming it `origin` in errors.
pub(super) fn parse(text: &str, origin: &str) -> Result<Policy, PolicyErrors> {
    let mut check = Checker {
        text,
        origin,
        errors: Vec::new(),
        current: 0..0,
    };
    let raw: RawPolicy = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(err) => {
            let span = err.span().unwrap_or(0..0);
            check.error(
                span,
                err.message().trim().to_owned(),
                "see the rules format in the README (section \"Rules\"); rules/edge-router.toml is a commented example",
            );
            return Err(PolicyErrors(check.errors));
        }
    };

    let default_action = match &raw.default_action {
        None => Action::Deny,
        Some(value) => action(&mut check, value, "default_action").unwrap_or(Action::Deny),
    };

    let zones: Vec<Zone> = raw
        .zones
        .iter()
        .filter_map(|(name, zone)| compile_zone(&mut check, name, zone))
        .collect();
    let zone_names: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();

    let mut rules = Vec::new();
    let mut names = HashSet::new();
    for (index, raw_rule) in raw.rules.iter().enumerate() {
        if let Some(rule) = compile_rule(&mut check, index, raw_rule, &zone_names) {
            if !names.insert(rule.name.clone()) {
                let span = raw_rule
                    .get_ref()
                    .name
                    .as_ref()
                    .map_or(raw_rule.span(), Spanned::span);
                check.error(
                    span,
                    format!("rule name \"{}\" is used twice", rule.name),
                    "rule names identify rules in events and counters; make each one unique",
                );
            }
            rules.push(rule);
        }
    }

    let mut timeouts = Timeouts::default();
    raw.timeouts.apply(&mut timeouts, &mut check);
    let mut limits = Limits::default();
    raw.limits.apply(&mut limits, &mut check);
    let tcp = TcpOptions {
        midstream_pickup: raw.tcp.midstream_pickup.unwrap_or(false),
    };

    if check.errors.is_empty() {
        Ok(Policy {
            origin: origin.to_owned(),
            zones,
            rules,
            default_action,
            timeouts,
            limits,
            tcp,
        })
    } else {
        Err(PolicyErrors(check.errors))
    }
}

fn action(check: &mut Checker<'_>, value: &Spanned<String>, key: &str) -> Option<Action> {
    match value.get_ref().as_str() {
        "allow" => Some(Action::Allow),
        "deny" => Some(Action::Deny),
        other => {
            check.error(
                value.span(),
                format!("{key} \"{other}\" is not allow or deny"),
                format!("write {key} = \"allow\" or {key} = \"deny\""),
            );
            None
        }
    }
}

fn compile_zone(check: &mut Checker<'_>, name: &str, zone: &Spanned<RawZone>) -> Option<Zone> {
    let span = zone.span();
    let raw = zone.get_ref();
    let errors_before = check.errors.len();
    if name == "any" {
        check.error(
            span.clone(),
            "zone name \"any\" is reserved",
            "rename the zone; \"any\" already means every address",
        );
    }
    if raw.interfaces.is_empty() && raw.networks.is_empty() {
        check.error(
            span,
            format!("zone \"{name}\" has neither interfaces nor networks, so it matches nothing"),
            "list interfaces = [\"eth0\"] and/or networks = [\"192.0.2.0/24\"]",
        );
    }
    let mut interfaces = Vec::new();
    for iface in &raw.interfaces {
        match IfaceName::new(iface.get_ref()) {
            Some(parsed) => interfaces.push(parsed),
            None => check.error(
                iface.span(),
                format!(
                    "zone \"{name}\": \"{}\" is not an interface name",
                    iface.get_ref()
                ),
                "interface names are 1 to 15 characters, without '/', ':' or spaces",
            ),
        }
    }
    let mut networks = Vec::new();
    for network in &raw.networks {
        if let Some(net) = parse_network(check, name, network) {
            networks.push(net);
        }
    }
    (check.errors.len() == errors_before).then(|| Zone {
        name: name.to_owned(),
        interfaces,
        networks,
    })
}

fn parse_network(check: &mut Checker<'_>, zone: &str, value: &Spanned<String>) -> Option<IpNet> {
    let text = value.get_ref().trim();
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Some(IpNet::from(addr));
    }
    match text.parse::<IpNet>() {
        Ok(net) if net.trunc() == net => Some(net),
        Ok(net) => {
            let host = IpNet::from(net.addr());
            check.error(
                value.span(),
                format!("zone \"{zone}\": \"{text}\" has host bits set"),
                format!("did you mean {}? (the single host is {host})", net.trunc()),
            );
            None
        }
        Err(_) => {
            check.error(
                value.span(),
                format!("zone \"{zone}\": \"{text}\" is not an address prefix"),
                "write an address and prefix length, such as 192.0.2.0/24 or 2001:db8::/32",
            );
            None
        }
    }
}

/// The rule's `[rule.ftp]` and `[rule.tftp]` tables, checked against its inspector; defaults
/// where a table is absent, `None` where it is in error.
fn alg_tables(
    check: &mut Checker<'_>,
    label: &str,
    raw: &RawRule,
    inspect: Option<Alg>,
) -> (Option<FtpOptions>, Option<TftpOptions>) {
    let ftp_options = match (&raw.ftp, inspect) {
        (Some(table), Some(Alg::Ftp)) => {
            check.current = table.span();
            alg_options::ftp(check, label, table.get_ref())
        }
        (Some(table), _) => {
            check.error(
                table.span(),
                format!("{label}: [rule.ftp] options need inspect = \"ftp\""),
                "add inspect = \"ftp\" to the rule, or remove its [rule.ftp] table",
            );
            None
        }
        (None, _) => Some(FtpOptions::default()),
    };
    let tftp_options = match (&raw.tftp, inspect) {
        (Some(table), Some(Alg::Tftp)) => {
            check.current = table.span();
            alg_options::tftp(check, label, table.get_ref())
        }
        (Some(table), _) => {
            check.error(
                table.span(),
                format!("{label}: [rule.tftp] options need inspect = \"tftp\""),
                "add inspect = \"tftp\" to the rule, or remove its [rule.tftp] table",
            );
            None
        }
        (None, _) => Some(TftpOptions::default()),
    };

    (ftp_options, tftp_options)
}

fn compile_rule(
    check: &mut Checker<'_>,
    index: usize,
    spanned: &Spanned<RawRule>,
    zones: &[&str],
) -> Option<Rule> {
    let raw = spanned.get_ref();
    let errors_before = check.errors.len();
    let name: Arc<str> = match &raw.name {
        Some(name) if name.get_ref().trim().is_empty() => {
            check.error(
                name.span(),
                "rule name is empty",
                "give the rule a name, or leave name out",
            );
            Arc::from("")
        }
        Some(name) => Arc::from(name.get_ref().as_str()),
        None => Arc::from(format!("rule-{}", index + 1)),
    };
    let label = format!("rule \"{name}\"");

    let from = zone_ref(check, &label, raw.from.as_ref(), zones);
    let to = zone_ref(check, &label, raw.to.as_ref(), zones);
    let action = action(check, &raw.action, "action");

    check.current = spanned.span();
    let inspect = raw
        .inspect
        .as_ref()
        .and_then(|value| match value.get_ref().as_str() {
            "ftp" => Some((Alg::Ftp, value.span())),
            "tftp" => Some((Alg::Tftp, value.span())),
            other => {
                check.error(
                    value.span(),
                    format!("{label}: inspect \"{other}\" is not an inspector"),
                    "use inspect = \"ftp\" or inspect = \"tftp\"",
                );
                None
            }
        });

    // An inspected rule without a protocol gets its inspector's.
    let proto = match (&raw.proto, &inspect) {
        (Some(value), _) => proto_match(check, &label, value),
        (None, Some((Alg::Ftp, _))) => Some(ProtoMatch::Number(proto::TCP)),
        (None, Some((Alg::Tftp, _))) => Some(ProtoMatch::Number(proto::UDP)),
        (None, None) => Some(ProtoMatch::Any),
    };

    let ports = match &raw.ports {
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
            Some((Alg::Ftp, _)) => vec![21..=21],
            Some((Alg::Tftp, _)) => vec![69..=69],
            None => Vec::new(),
        },
    };

    if let Some((alg, span)) = inspect.clone() {
        check_inspect(check, &label, alg, span, action, proto);
    }

    let (ftp_options, tftp_options) = alg_tables(check, &label, raw, inspect.as_ref().map(|i| i.0));

    if check.errors.len() != errors_before {
        return None;
    }
    let inspect = match inspect {
        Some((Alg::Ftp, _)) => Some(Inspect::Ftp(Arc::new(ftp_options?))),
        Some((Alg::Tftp, _)) => Some(Inspect::Tftp(Arc::new(tftp_options?))),
        None => None,
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

/// Checks that an inspected rule allows its flows and uses the inspector's protocol.
fn check_inspect(
    check: &mut Checker<'_>,
    label: &str,
    alg: Alg,
    span: Range<usize>,
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
    value: Option<&Spanned<String>>,
    zones: &[&str],
) -> Option<ZoneRef> {
    let Some(value) = value else {
        return Some(ZoneRef::Any);
    };
    let name = value.get_ref().as_str();
    if name == "any" {
        return Some(ZoneRef::Any);
    }
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

fn proto_match(check: &mut Checker<'_>, label: &str, value: &Spanned<Value>) -> Option<ProtoMatch> {
    let help = "use \"tcp\", \"udp\", \"icmp\", \"any\", or an IP protocol number 0-255";
    match value.get_ref() {
        Value::String(name) => match name.as_str() {
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
        Value::Integer(n) => {
            let number = u8::try_from(*n).ok();
            if number.is_none() {
                check.error(
                    value.span(),
                    format!("{label}: protocol number {n} is out of range"),
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
    value: &Spanned<Value>,
) -> Vec<RangeInclusive<u16>> {
    let help = "ports are 1-65535, written as numbers or \"low-high\" ranges: ports = [21, \"1024-65535\"]";
    let items: Vec<&Value> = match value.get_ref() {
        Value::Array(items) if !items.is_empty() => items.iter().collect(),
        Value::Array(_) => {
            check.error(
                value.span(),
                format!("{label}: ports is empty"),
                "list at least one port, or leave ports out to match every port",
            );
            return Vec::new();
        }
        single => vec![single],
    };
    let mut ranges = Vec::new();
    for item in items {
        let parsed = match item {
            Value::Integer(n) => port(*n)
                .map(|p| p..=p)
                .ok_or_else(|| format!("port {n} is out of range")),
            Value::String(text) => match text.split_once('-') {
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

    fn errors(text: &str) -> Vec<String> {
        match parse(text, "r.toml") {
            Ok(_) => panic!("expected errors"),
            Err(PolicyErrors(errors)) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn one_error(text: &str) -> String {
        let all = errors(text);
        assert_eq!(all.len(), 1, "{all:#?}");
        all.into_iter().next().unwrap()
    }

    #[test]
    fn syntax_error_has_location() {
        let e = one_error("[[rule]]\naction = \"allow\"\nname = \n");
        assert!(e.starts_with("r.toml:3:8: error: "), "{e}");
        assert!(e.ends_with("\n  help: see the rules format in the README (section \"Rules\"); rules/edge-router.toml is a commented example"), "{e}");
    }

    #[test]
    fn unknown_key_in_rule() {
        let e = one_error("[[rule]]\naction = \"allow\"\nport = [21]\n");
        assert!(
            e.starts_with("r.toml:3:1: error: unknown field `port`, expected one of"),
            "{e}"
        );
    }

    #[test]
    fn missing_action() {
        let e = one_error("[[rule]]\nproto = \"tcp\"\n");
        assert!(
            e.starts_with("r.toml:1:1: error: missing field `action`"),
            "{e}"
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
        assert!(
            one_error("[timeouts]\ntcp_establised = 5\n")
                .starts_with("r.toml:2:1: error: unknown field `tcp_establised`")
        );
    }

    #[test]
    fn several_errors_are_all_reported() {
        let all = errors("[[rule]]\nfrom = \"x\"\nto = \"y\"\naction = \"maybe\"\n");
        assert_eq!(all.len(), 3, "{all:#?}");
    }
}
