//! Progress of long reads on stderr: a bar on a terminal, plain lines every 5 s
//! otherwise (logs, CI).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct OffsetProgress {
    /// What is being done, e.g. "verify dr": the start of every line.
    label: String,
    bar: Option<ProgressBar>,
    plain: Mutex<PlainProgress>,
}

#[derive(Default)]
struct PlainProgress {
    total: u64,
    done: u64,
    last_line: Option<Instant>,
}

impl OffsetProgress {
    pub fn new(label: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:40}] {pos}/{len} source offsets ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        Self {
            label: label.to_string(),
            bar,
            plain: Mutex::new(PlainProgress::default()),
        }
    }

    /// `source_offsets` to go; `what` is printed first where no bar is drawn.
    pub fn begin(&self, source_offsets: u64, what: &str) {
        match &self.bar {
            Some(bar) => bar.set_length(source_offsets),
            None => {
                eprintln!("{}: {what}", self.label);
                if let Ok(mut p) = self.plain.lock() {
                    p.total = source_offsets;
                    p.last_line = Some(Instant::now());
                }
            }
        }
    }

    pub fn advance(&self, source_offsets: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(source_offsets);
            return;
        }
        let Ok(mut p) = self.plain.lock() else { return };
        p.done += source_offsets;
        if p.last_line
            .is_none_or(|t| t.elapsed() > Duration::from_secs(5))
        {
            p.last_line = Some(Instant::now());
            eprintln!(
                "{}: {}/{} source offsets ({:.0}%)",
                self.label,
                p.done,
                p.total,
                100.0 * p.done as f64 / p.total.max(1) as f64
            );
        }
    }

    /// Clears the bar, and prints `summary` after the label.
    pub fn finish(&self, summary: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{}: {summary}", self.label);
    }
}
