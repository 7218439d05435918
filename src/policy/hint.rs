//! The guesses behind help lines: the known key nearest to a misspelt one, and the bare number
//! a value written with a unit stands for.

/// How a number's unit is read when one is written (`3600s`, `10k`), to suggest the bare
/// number it stands for.
#[derive(Clone, Copy)]
pub(super) enum Scale {
    /// Seconds: `s`, `m`/`min`, `h`, `d`, `ms`.
    Seconds,
    /// A count: `k`, `m`, `g` are powers of 1000.
    Count,
    /// Bytes: `k`, `m`, `g` (with or without `b`/`ib`) are powers of 1024.
    Bytes,
    /// A port number, which has no unit.
    Port,
}

/// A number and the unit after it (`3600s`, `1.5 h`, `10k`, `300`), as written; the unit is
/// ASCII letters and may be empty.
pub(super) fn split_number(written: &str) -> Option<(&str, &str)> {
    let written = written.trim();
    let unsigned = written.strip_prefix(['+', '-']).unwrap_or(written);
    if !unsigned.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let number_len = written.len()
        - written
            .trim_start_matches(['+', '-'])
            .trim_start_matches(|c: char| c.is_ascii_digit() || c == '_' || c == '.')
            .len();
    let (number, rest) = written.split_at(number_len);
    let unit = rest.trim_start();
    unit.chars()
        .all(|c| c.is_ascii_alphabetic())
        .then_some((number, unit))
}

/// The bare number `number` with `unit` stands for (the number itself for a unit unknown to
/// `scale`), if it is a whole number of at least 0.
pub(super) fn scaled(number: &str, unit: &str, scale: Scale) -> Option<u64> {
    let value: f64 = number.replace('_', "").parse().ok()?;
    let unit = unit.to_ascii_lowercase();
    // Anything else, `s` and `b` included, counts as the number itself.
    let factor: f64 = match (scale, unit.as_str()) {
        (Scale::Seconds, "ms") => 0.001,
        (Scale::Seconds, "m" | "min" | "mins" | "minute" | "minutes") => 60.0,
        (Scale::Seconds, "h" | "hr" | "hrs" | "hour" | "hours") => 3600.0,
        (Scale::Seconds, "d" | "day" | "days") => 86400.0,
        (Scale::Count, "k") => 1e3,
        (Scale::Count, "m") => 1e6,
        (Scale::Count, "g") => 1e9,
        (Scale::Bytes, "k" | "kb" | "kib") => 1024.0,
        (Scale::Bytes, "m" | "mb" | "mib") => 1_048_576.0,
        (Scale::Bytes, "g" | "gb" | "gib") => 1_073_741_824.0,
        _ => 1.0,
    };
    let n = (value * factor).ceil();
    // In range for u64 (and finite): the float-to-int conversion below is then exact enough.
    #[allow(clippy::cast_sign_loss, clippy::cast_precision_loss)]
    (n.is_finite() && n >= 0.0 && n <= u64::MAX as f64).then_some(n as u64)
}

/// The candidate nearest to `word` when it looks like a typo of it: at most one edit (an
/// insertion, deletion, substitution or swap of neighbours) per three characters. Between
/// candidates as near, one with the same letters (a swap) wins.
pub(super) fn nearest(word: &str, candidates: &[&'static str]) -> Option<&'static str> {
    let word = word.to_ascii_lowercase();
    let letters = |text: &str| {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars
    };
    candidates
        .iter()
        .map(|candidate| (edit_distance(&word, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.chars().count() / 3).max(1))
        .min_by_key(|(distance, candidate)| (*distance, letters(candidate) != letters(&word)))
        .map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance: edits, counting a swap of neighbours as one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_nearest_key() {
        let keys = &["name", "from", "to", "proto", "ports", "action", "inspect"];
        assert_eq!(nearest("actoin", keys), Some("action"));
        assert_eq!(nearest("port", keys), Some("ports"));
        assert_eq!(nearest("form", keys), Some("from"));
        assert_eq!(nearest("Action", keys), Some("action"));
        // "prots" is one edit from "proto" and from "ports"; a swap is the likelier typo.
        assert_eq!(nearest("prots", keys), Some("ports"));
        assert_eq!(nearest("inspection", keys), None);
        assert_eq!(nearest("xyz", keys), None);
        assert_eq!(edit_distance("tcp_establised", "tcp_established"), 1);
        assert_eq!(edit_distance("abc", "cba"), 2);
    }

    #[test]
    fn numbers_with_units() {
        assert_eq!(split_number("3600s"), Some(("3600", "s")));
        assert_eq!(split_number("10 k"), Some(("10", "k")));
        assert_eq!(split_number("1.5h"), Some(("1.5", "h")));
        assert_eq!(split_number("-5s"), Some(("-5", "s")));
        assert_eq!(split_number("300"), Some(("300", "")));
        assert_eq!(split_number("1h30m"), None);
        assert_eq!(split_number("s5"), None);
        assert_eq!(scaled("1.5", "h", Scale::Seconds), Some(5400));
        assert_eq!(scaled("500", "ms", Scale::Seconds), Some(1));
        assert_eq!(scaled("10", "k", Scale::Count), Some(10_000));
        assert_eq!(scaled("64", "MiB", Scale::Bytes), Some(64 << 20));
        assert_eq!(scaled("10", "q", Scale::Count), Some(10));
        assert_eq!(scaled("-5", "s", Scale::Seconds), None);
    }
}
