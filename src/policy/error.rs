//! Policy errors that say where the problem is and how to fix it.

use std::fmt;

/// One problem in a rules file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// The file (or `<embedded default>`).
    pub origin: String,
    /// 1-based line; 0 when the problem is not at a place in the file (unreadable file).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub help: String,
}

impl fmt::Display for PolicyError {
    /// `rules/x.toml:12:9: error: ...` followed by an indented `help:` line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: error: {}", self.origin, self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: error: {}",
                self.origin, self.line, self.column, self.message
            )?;
        }
        write!(f, "\n  help: {}", self.help)
    }
}

/// Every problem found in a rules file (at least one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn locate(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_offsets() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(locate(text, 0), (1, 1));
        assert_eq!(locate(text, 6), (2, 1));
        assert_eq!(locate(text, 8), (2, 3));
        assert_eq!(locate(text, 100), (3, 1));
    }

    #[test]
    fn display_has_location_and_help() {
        let error = PolicyError {
            origin: "r.toml".into(),
            line: 3,
            column: 7,
            message: "bad".into(),
            help: "fix it".into(),
        };
        assert_eq!(error.to_string(), "r.toml:3:7: error: bad\n  help: fix it");
    }
}
