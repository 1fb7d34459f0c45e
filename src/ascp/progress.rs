//! The progress line `ascp` prints per file, like IBM's:
//! `big.iso                                  45%  450.0MB  912Mb/s    00:05 ETA`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::transfer::Progress;

/// Prints progress on stderr: redrawn in place on a terminal, one line per file otherwise
/// (at most once a second), nothing with `-q`.
pub struct ProgressLine {
    quiet: bool,
    terminal: bool,
    last_path: Option<String>,
    last_draw: Option<Instant>,
    drawn: bool,
}

impl ProgressLine {
    /// A progress printer; `quiet` prints nothing.
    pub fn new(quiet: bool) -> ProgressLine {
        ProgressLine {
            quiet,
            terminal: std::io::stderr().is_terminal(),
            last_path: None,
            last_draw: None,
            drawn: false,
        }
    }

    /// Shows a progress report.
    pub fn update(&mut self, p: &Progress) {
        if self.quiet {
            return;
        }
        let new_file = self.last_path.as_deref() != Some(p.path.as_str());
        let complete = p.finished;
        let due = self.last_draw.is_none_or(|t| {
            t.elapsed() >= Duration::from_millis(if self.terminal { 200 } else { 1000 })
        });
        if !(new_file || complete || due) {
            return;
        }
        let line = render(&p.path, p.bytes_done, p.total, p.rate, p.eta);
        let mut err = std::io::stderr().lock();
        if self.terminal {
            if new_file && self.drawn {
                let _ = writeln!(err);
            }
            let _ = write!(err, "\r{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.drawn = true;
        self.last_path = Some(p.path.clone());
        self.last_draw = Some(Instant::now());
    }

    /// Ends the last line.
    pub fn finish(&mut self) {
        if self.terminal && self.drawn && !self.quiet {
            let _ = writeln!(std::io::stderr());
        }
        self.drawn = false;
    }
}

/// One progress line.
pub fn render(path: &str, done: u64, total: u64, rate_bps: u64, eta: Option<Duration>) -> String {
    let percent = done
        .saturating_mul(100)
        .checked_div(total)
        .map_or(100, |p| p.min(100));
    let eta = eta.map_or_else(
        || "--:--".to_string(),
        |d| {
            let s = d.as_secs();
            if s >= 3600 {
                format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
            } else {
                format!("{:02}:{:02}", s / 60, s % 60)
            }
        },
    );
    let name: String = if path.chars().count() > 40 {
        let tail: String = path
            .chars()
            .rev()
            .take(39)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    } else {
        path.to_string()
    };
    format!(
        "{name:<40} {percent:>3}%  {:>9}  {:>9}  {eta:>8} ETA",
        bytes(done),
        rate(rate_bps)
    )
}

/// The per-file summary ascp prints after the transfer, and the totals line.
pub fn summary(report: &crate::transfer::Report) -> Vec<String> {
    use crate::transfer::Outcome;
    let mut lines = Vec::with_capacity(report.files.len() + 1);
    for f in &report.files {
        let verdict = match &f.outcome {
            Outcome::Ok => format!("OK ({} transferred)", bytes(f.bytes_transferred)),
            Outcome::Skipped(why) => format!("skipped: {why}"),
            Outcome::Failed { message, .. } => format!("FAILED: {message}"),
        };
        lines.push(format!("{:<40} {:>9}  {verdict}", f.path, bytes(f.size)));
    }
    let failed = report.failures().count();
    lines.push(format!(
        "Completed: {} file{}, {} transferred in {:.1}s ({}){}",
        report.files.len(),
        if report.files.len() == 1 { "" } else { "s" },
        bytes(report.files.iter().map(|f| f.bytes_transferred).sum()),
        report.elapsed.as_secs_f64(),
        rate(report.goodput()),
        if failed > 0 {
            format!("; {failed} FAILED")
        } else {
            String::new()
        }
    ));
    lines
}

/// `1.5GB`-style sizes (powers of 1000, as ascp prints them).
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e12 => format!("{:.1}TB", n / 1e12),
        n if n >= 1e9 => format!("{:.1}GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1}MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1}KB", n / 1e3),
        n => format!("{n}B"),
    }
}

/// `912Mb/s`-style rates.
pub fn rate(bps: u64) -> String {
    let b = bps as f64;
    match b {
        b if b >= 1e9 => format!("{:.2}Gb/s", b / 1e9),
        b if b >= 1e6 => format!("{:.0}Mb/s", b / 1e6),
        b if b >= 1e3 => format!("{:.0}Kb/s", b / 1e3),
        b => format!("{b}b/s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shape() {
        let l = render(
            "big.iso",
            450_000_000,
            1_000_000_000,
            912_000_000,
            Some(Duration::from_secs(5)),
        );
        assert!(l.starts_with("big.iso"), "{l}");
        assert!(l.contains(" 45%"), "{l}");
        assert!(l.contains("450.0MB"), "{l}");
        assert!(l.contains("912Mb/s"), "{l}");
        assert!(l.ends_with("00:05 ETA"), "{l}");
        assert!(render("e", 0, 0, 0, None).contains("100%"));
        let long = render(&"x".repeat(100), 1, 2, 1, Some(Duration::from_secs(4000)));
        assert!(long.starts_with('…') && long.contains("1:06:40"), "{long}");
    }

    #[test]
    fn units() {
        assert_eq!(bytes(999), "999B");
        assert_eq!(bytes(1_500_000_000), "1.5GB");
        assert_eq!(rate(1_250_000_000), "1.25Gb/s");
        assert_eq!(rate(64_000), "64Kb/s");
    }
}
