//! Turning SIGTERM and SIGINT into one shutdown future.
//!
//! The handlers are installed by [`TerminationSignals::install`] before anything is started, so a
//! signal that arrives during start-up is not lost (or fatal); [`TerminationSignals::recv`] then
//! completes on the first SIGTERM or SIGINT. What happens next (stop accepting, drain, close the
//! rest) is [`crate::Running::drain`]'s job.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Installed SIGTERM and SIGINT handlers.
#[derive(Debug)]
pub struct TerminationSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl TerminationSignals {
    pub fn install() -> std::io::Result<Self> {
        Ok(TerminationSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Completes when SIGTERM or SIGINT arrives, with the signal's name.
    pub async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}
