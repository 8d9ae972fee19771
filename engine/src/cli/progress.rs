//! Ingest progress on stderr: an indicatif bar on a terminal, plain log lines otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fhirlake::ingest::IngestObserver;
use fhirlake_connectors::ItemPosition;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Rejects printed one by one before the rest are only counted.
const REJECTS_SHOWN: u64 = 20;

/// The CLI's observer.
#[derive(Debug)]
pub struct CliObserver {
    bar: Option<ProgressBar>,
    quiet: bool,
    files_total: AtomicU64,
    files_done: AtomicU64,
    rejects: AtomicU64,
    resources: AtomicU64,
    bytes: AtomicU64,
    lock: Mutex<()>,
}

impl CliObserver {
    /// A bar when stderr is a terminal (and not quiet), log lines otherwise.
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} {msg} · {human_pos} resources",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            quiet,
            files_total: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            rejects: AtomicU64::new(0),
            resources: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            lock: Mutex::new(()),
        }
    }

    /// Progress chatter: suppressed by `--quiet`.
    fn line(&self, text: &str) {
        if !self.quiet {
            self.always(text);
        }
    }

    /// Rejects and warnings: shown even with `--quiet`.
    fn always(&self, text: &str) {
        let _guard = self.lock.lock();
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// Clears the bar before the summary is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let rejects = self.rejects.load(Ordering::Relaxed);
        if rejects > REJECTS_SHOWN {
            eprintln!("... and {} more rejected lines", rejects - REJECTS_SHOWN);
        }
    }
}

impl IngestObserver for CliObserver {
    fn planned(&self, files: usize) {
        self.files_total.store(files as u64, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_message(format!("0/{files} files"));
        } else {
            self.line(&format!("reading {files} files"));
        }
    }

    fn progress(&self, resources: u64, bytes: u64) {
        self.resources.fetch_add(resources, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(resources);
        }
    }

    fn file_done(&self, file: &str, lines: u64, bytes: u64) {
        let done = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        // No total when the files arrive while they are read (ingest --bulk).
        let of = match self.files_total.load(Ordering::Relaxed) {
            0 => String::new(),
            total => format!("/{total}"),
        };
        match &self.bar {
            Some(bar) => bar.set_message(format!("{done}{of} files")),
            None => self.line(&format!(
                "read {file}: {lines} lines, {:.1} MB ({done}{of})",
                bytes as f64 / 1e6
            )),
        }
    }

    fn rejected(&self, pos: &ItemPosition, json_path: Option<&str>, reason: &str) {
        let n = self.rejects.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= REJECTS_SHOWN {
            let at = json_path.map(|p| format!(" at {p}")).unwrap_or_default();
            self.always(&format!("rejected {pos}{at}: {reason}"));
        }
    }

    fn warn(&self, message: &str) {
        self.always(&format!("warning: {message}"));
    }

    fn phase(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(message.to_string()),
            None => tracing::info!("{message}"),
        }
    }
}
