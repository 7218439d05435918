//! What a rule lets a control connection do: commands by verb, user names and file paths
//! (`[rule.ftp]`'s `allow_commands`, `deny_commands`, `allow_users`, `deny_users`,
//! `allow_paths`, `deny_paths`), and the path arithmetic the checks and the transfer log share.
//!
//! A refused command is not dropped (the client would retransmit it until it gave up) and does
//! not reset the session: the inspector overwrites its verb with `X`s of the same length, so
//! the server answers "500 unknown command", the client sees an error for that command, and no
//! sequence number moves (see `FtpControl`).

use crate::alg::tftp::glob_match;
use crate::decision::Reason;

use super::FtpOptions;

/// A command's verb, upper-cased (RFC 959 section 5.3: verbs are case-insensitive), with the
/// experimental aliases of RFC 775 (`XMKD`, `XRMD`, `XCWD`, `XCUP`, `XPWD`) folded into the
/// commands they stand for, so a deny of `MKD` also refuses `XMKD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verb {
    bytes: [u8; Verb::MAX],
    len: u8,
}

impl Verb {
    /// Longest verb recognised (RFC 959 verbs have 3 or 4 letters; extensions stay within 8).
    pub const MAX: usize = 8;

    /// The verb of a command line (its bytes before the first space), if it is 1 to 8 ASCII
    /// letters.
    pub fn of_line(line: &[u8]) -> Option<Verb> {
        let raw = line.split(|b| *b == b' ').next().unwrap_or(&[]);
        Verb::parse(raw)
    }

    /// `raw` upper-cased and de-aliased, if it is 1 to 8 ASCII letters.
    pub fn parse(raw: &[u8]) -> Option<Verb> {
        if raw.is_empty() || raw.len() > Verb::MAX || !raw.iter().all(u8::is_ascii_alphabetic) {
            return None;
        }
        let mut bytes = [0u8; Verb::MAX];
        for (b, r) in bytes.iter_mut().zip(raw) {
            *b = r.to_ascii_uppercase();
        }
        let verb = Verb {
            bytes,
            len: raw.len() as u8,
        };
        Some(match verb.as_str() {
            "XMKD" => Verb::known("MKD"),
            "XRMD" => Verb::known("RMD"),
            "XCWD" => Verb::known("CWD"),
            "XCUP" => Verb::known("CDUP"),
            "XPWD" => Verb::known("PWD"),
            _ => verb,
        })
    }

    fn known(name: &str) -> Verb {
        let mut bytes = [0u8; Verb::MAX];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Verb {
            bytes,
            len: name.len() as u8,
        }
    }

    /// The verb as upper-case text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }

    /// True for the commands whose argument is a file path the path patterns apply to.
    pub fn takes_file_path(&self) -> bool {
        matches!(
            self.as_str(),
            "RETR" | "STOR" | "STOU" | "APPE" | "DELE" | "RNFR" | "RNTO"
        )
    }
}

/// Why a command is refused: the reason and the setting that refused it, for the violation
/// event (`STOR "ios.bin" refused by rule "ftp-in" (deny_commands)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The drop-reason name the violation carries.
    pub reason: Reason,
    /// The setting, as the rules file spells it, with the pattern that matched.
    pub setting: String,
}

/// Checks a command against the rule's command, user and path lists. `path` is the file path
/// the command names as [`resolve`] made it absolute (for commands that take one).
pub fn check(options: &FtpOptions, verb: &Verb, arg: &[u8], path: Option<&str>) -> Option<Refusal> {
    let name = verb.as_str();
    if options.deny_commands.iter().any(|c| c == name) {
        return Some(Refusal {
            reason: Reason::FtpCommandDenied,
            setting: "deny_commands".to_owned(),
        });
    }
    if !options.allow_commands.is_empty() && !options.allow_commands.iter().any(|c| c == name) {
        return Some(Refusal {
            reason: Reason::FtpCommandDenied,
            setting: "not in allow_commands".to_owned(),
        });
    }
    if name == "USER" {
        return check_user(options, arg);
    }
    let path = path?;
    if let Some(pattern) = options
        .deny_paths
        .iter()
        .find(|p| glob_match(p.as_bytes(), path.as_bytes()))
    {
        return Some(Refusal {
            reason: Reason::FtpPathDenied,
            setting: format!("deny_paths \"{pattern}\""),
        });
    }
    if !options.allow_paths.is_empty()
        && !options
            .allow_paths
            .iter()
            .any(|p| glob_match(p.as_bytes(), path.as_bytes()))
    {
        return Some(Refusal {
            reason: Reason::FtpPathDenied,
            setting: "not in allow_paths".to_owned(),
        });
    }
    None
}

/// User names match case-insensitively: servers treat `ANONYMOUS` as `anonymous`, and an
/// allow list of lower-case names must not be passed by upper-casing one.
fn check_user(options: &FtpOptions, name: &[u8]) -> Option<Refusal> {
    let name = name.trim_ascii().to_ascii_lowercase();
    let matches = |p: &String| glob_match(p.to_ascii_lowercase().as_bytes(), &name);
    if let Some(pattern) = options.deny_users.iter().find(|p| matches(p)) {
        return Some(Refusal {
            reason: Reason::FtpUserDenied,
            setting: format!("deny_users \"{pattern}\""),
        });
    }
    if !options.allow_users.is_empty() && !options.allow_users.iter().any(matches) {
        return Some(Refusal {
            reason: Reason::FtpUserDenied,
            setting: "not in allow_users".to_owned(),
        });
    }
    None
}

/// The absolute path `arg` names from the working directory `cwd` (itself absolute), with
/// `.` and `..` applied and repeated slashes folded, as a Unix server resolves it (`..` at the
/// root stays at the root, which is also what a chrooted server does).
pub fn resolve(cwd: &str, arg: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let start = if arg.starts_with('/') { "" } else { cwd };
    for part in start.split('/').chain(arg.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mut path = String::with_capacity(arg.len() + cwd.len() + 1);
    for part in parts {
        path.push('/');
        path.push_str(part);
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// The directory named by a 257 reply (RFC 959 Appendix II: the name in double quotes, an
/// embedded quote doubled), if the text has one.
pub fn quoted_directory(text: &[u8]) -> Option<String> {
    let start = text.iter().position(|b| *b == b'"')? + 1;
    let mut name = Vec::new();
    let mut i = start;
    while i < text.len() {
        match (text[i], text.get(i + 1)) {
            (b'"', Some(b'"')) => {
                name.push(b'"');
                i += 2;
            }
            (b'"', _) => return String::from_utf8(name).ok().filter(|n| n.starts_with('/')),
            (b, _) => {
                name.push(b);
                i += 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> FtpOptions {
        FtpOptions::default()
    }

    #[test]
    fn verbs_fold_case_and_rfc775_aliases() {
        assert_eq!(Verb::of_line(b"stor x").unwrap().as_str(), "STOR");
        assert_eq!(Verb::of_line(b"XMKD dir").unwrap().as_str(), "MKD");
        assert_eq!(Verb::of_line(b"xcup").unwrap().as_str(), "CDUP");
        assert!(Verb::of_line(b"ST0R x").is_none());
        assert!(Verb::of_line(b"").is_none());
        assert!(Verb::of_line(b"VERYLONGVERB").is_none());
    }

    #[test]
    fn denied_and_unlisted_commands_are_refused_by_their_setting() {
        let mut o = options();
        o.deny_commands = vec!["STOR".into(), "MKD".into()];
        let stor = Verb::parse(b"stor").unwrap();
        let refusal = check(&o, &stor, b"x", Some("/x")).unwrap();
        assert_eq!(refusal.reason, Reason::FtpCommandDenied);
        assert_eq!(refusal.setting, "deny_commands");
        assert!(check(&o, &Verb::parse(b"XMKD").unwrap(), b"d", None).is_some());
        assert!(check(&o, &Verb::parse(b"RETR").unwrap(), b"x", Some("/x")).is_none());
        o.allow_commands = vec!["USER".into(), "PASS".into(), "RETR".into()];
        let list = check(&o, &Verb::parse(b"LIST").unwrap(), b"", None).unwrap();
        assert_eq!(list.setting, "not in allow_commands");
        assert!(check(&o, &Verb::parse(b"RETR").unwrap(), b"x", Some("/x")).is_none());
    }

    #[test]
    fn users_match_patterns_without_case() {
        let mut o = options();
        o.deny_users = vec!["root".into()];
        let user = Verb::parse(b"USER").unwrap();
        assert_eq!(
            check(&o, &user, b"ROOT", None).unwrap().setting,
            "deny_users \"root\""
        );
        assert!(check(&o, &user, b"alice", None).is_none());
        o.allow_users = vec!["anonymous".into(), "ftp*".into()];
        assert!(check(&o, &user, b"ANONYMOUS", None).is_none());
        assert!(check(&o, &user, b"ftpuser", None).is_none());
        let refusal = check(&o, &user, b"alice", None).unwrap();
        assert_eq!(refusal.reason, Reason::FtpUserDenied);
        assert_eq!(refusal.setting, "not in allow_users");
    }

    #[test]
    fn paths_match_the_resolved_path() {
        let mut o = options();
        o.deny_paths = vec!["/etc/*".into(), "*.key".into()];
        let retr = Verb::parse(b"RETR").unwrap();
        let path = resolve("/pub", "../etc/passwd");
        assert_eq!(path, "/etc/passwd");
        let refusal = check(&o, &retr, b"../etc/passwd", Some(&path)).unwrap();
        assert_eq!(refusal.reason, Reason::FtpPathDenied);
        assert_eq!(refusal.setting, "deny_paths \"/etc/*\"");
        assert!(check(&o, &retr, b"a.key", Some("/pub/a.key")).is_some());
        assert!(check(&o, &retr, b"ios.bin", Some("/pub/ios.bin")).is_none());
        o.allow_paths = vec!["/pub/*".into()];
        assert!(check(&o, &retr, b"ios.bin", Some("/pub/ios.bin")).is_none());
        assert_eq!(
            check(&o, &retr, b"x", Some("/x")).unwrap().setting,
            "not in allow_paths"
        );
    }

    #[test]
    fn resolution_applies_dots_and_stays_under_the_root() {
        assert_eq!(resolve("/", "a/./b//c"), "/a/b/c");
        assert_eq!(resolve("/a/b", ".."), "/a");
        assert_eq!(resolve("/a", "../../.."), "/");
        assert_eq!(resolve("/a", "/x/../y"), "/y");
        assert_eq!(resolve("/a/b", ""), "/a/b");
    }

    #[test]
    fn a_257_reply_names_its_directory() {
        assert_eq!(
            quoted_directory(b"\"/home/ftp\" is the current directory").as_deref(),
            Some("/home/ftp")
        );
        assert_eq!(
            quoted_directory(b"\"/a \"\"q\"\" b\" created").as_deref(),
            Some("/a \"q\" b")
        );
        assert_eq!(quoted_directory(b"no quotes"), None);
        assert_eq!(quoted_directory(b"\"relative\" x"), None);
    }
}
