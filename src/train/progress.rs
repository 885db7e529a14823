//! Training progress: one optimiser step on the shared reporter ([`crate::progress`]).

pub(crate) use crate::progress::Progress;

/// What one step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StepReport {
    pub epoch: u64,
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub samples_per_s: f64,
}

impl Progress {
    /// Moves the bar to step `r.step` with the epoch and loss; without a bar, writes
    /// `epoch E step S/N loss ... [T s]` when a line is due, and always at the last step.
    pub fn step(&mut self, r: &StepReport) {
        let msg = format!(
            "loss {:.4} lr {:.2e} {:.1} samples/s",
            r.loss, r.lr, r.samples_per_s
        );
        if self.has_bar() {
            self.set_prefix(format!("epoch {}", r.epoch));
            self.set_message(msg);
            self.set_position(r.step);
        } else if self.line_due() || r.step >= self.total() {
            let line = format!(
                "epoch {} step {}/{} {msg} [{} s]",
                r.epoch,
                r.step,
                self.total(),
                self.elapsed_s()
            );
            self.log(&line);
        }
    }
}
