//! Step-by-step progress on the terminal: a spinner while a step runs, a line when it ends.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use localcert_ua::provision::{Progress, Step};

/// Draws on stderr, so stdout stays clean for `--json`.
#[derive(Debug, Default)]
pub(crate) struct Terminal {
    spinner: Option<ProgressBar>,
}

impl Terminal {
    fn finish(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            spinner.finish_and_clear();
        }
    }
}

impl Progress for Terminal {
    fn start(&mut self, step: Step) {
        self.finish();
        let spinner = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            spinner.set_style(style);
        }
        spinner.set_message(step.describe());
        spinner.enable_steady_tick(Duration::from_millis(100));
        self.spinner = Some(spinner);
    }

    fn done(&mut self, step: Step, detail: &str) {
        self.finish();
        eprintln!("✓ {}\n    {detail}", step.describe());
    }

    fn user_presence_needed(&mut self) {
        if let Some(spinner) = &self.spinner {
            spinner.set_message("waiting for the user to approve on the device");
        }
    }

    fn retrying(&mut self, attempt: u32, reason: &str) {
        self.finish();
        eprintln!("! attempt {attempt} failed ({reason}); starting again from GET_INFO");
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.finish();
    }
}
