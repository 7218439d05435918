//! Manual pages and shell completions, generated from the command-line definitions in
//! [`crate::cli`] (clap_mangen, clap_complete), so they never disagree with `--help`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::Cli;

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "pinhole", out);
}

/// Writes `pinhole.1` and one page per visible subcommand (`pinhole-run.1`, ...) into `dir`,
/// created if missing; returns their paths, the top page first.
pub fn write_man_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let source = format!("pinhole {}", env!("CARGO_PKG_VERSION"));
    let mut pages = Vec::new();
    let top = clap_mangen::Man::new(cmd.clone())
        .source(source.clone())
        .manual("pinhole manual");
    pages.push(top.generate_to(dir)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let page = clap_mangen::Man::new(sub.clone())
            .source(source.clone())
            .manual("pinhole manual");
        pages.push(page.generate_to(dir)?);
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_cover_every_visible_subcommand() {
        let dir = std::env::temp_dir().join(format!("pinhole-man-{}", std::process::id()));
        let pages = write_man_pages(&dir).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names[0], "pinhole.1");
        for expected in [
            "pinhole-run.1",
            "pinhole-monitor.1",
            "pinhole-replay.1",
            "pinhole-completions.1",
        ] {
            assert!(names.iter().any(|n| n == expected), "{names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("man-pages")), "{names:?}");
        let run = std::fs::read_to_string(dir.join("pinhole-run.1")).unwrap();
        assert!(run.contains("pinhole\\-run"), "{run}");
        assert!(run.contains("\\-\\-install\\-rules"), "{run}");
        // The long help's closing section (signals, files) is in the page.
        assert!(run.contains("SIGHUP re\\-reads the rules file"), "{run}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn completions_know_the_subcommands() {
        let mut bash = Vec::new();
        completions(clap_complete::Shell::Bash, &mut bash);
        let bash = String::from_utf8(bash).unwrap();
        assert!(bash.contains("_pinhole()"), "{bash}");
        assert!(bash.contains("check-rules"), "{bash}");
        assert!(bash.contains("--install-rules"), "{bash}");
    }
}
