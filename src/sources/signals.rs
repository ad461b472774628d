//! Signals: SIGTERM and SIGINT as one shutdown future, SIGHUP and SIGUSR2 as reload requests.
//!
//! The termination handlers are installed by [`TerminationSignals::install`] before anything is started, so a
//! signal that arrives during start-up is not lost (or fatal); [`TerminationSignals::recv`] then
//! completes on the first SIGTERM or SIGINT. What happens next (stop accepting, drain, close the
//! rest) is [`crate::Running::drain`]'s job.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::core::notify;
use crate::state::change::Change;

/// Installed SIGTERM and SIGINT handlers.
#[derive(Debug)]
pub(crate) struct TerminationSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl TerminationSignals {
    pub(crate) fn install() -> std::io::Result<Self> {
        Ok(TerminationSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Completes when SIGTERM or SIGINT arrives, with the signal's name.
    pub(crate) async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Sends a reload request to the updater for every SIGHUP (and SIGUSR2, HAProxy's reload
/// signal), telling the service manager RELOADING=1 and then READY=1 once the updater has
/// answered; runs until the updater is gone.
pub(crate) async fn forward_reloads(reloads: mpsc::Sender<Change>) {
    let (Ok(mut hangup), Ok(mut usr2)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined2()),
    ) else {
        warn!(
            "cannot install the SIGHUP/SIGUSR2 handlers: reload with the control port's `reload`"
        );
        return;
    };
    loop {
        let name = tokio::select! {
            Some(()) = hangup.recv() => "SIGHUP",
            Some(()) = usr2.recv() => "SIGUSR2",
            else => return,
        };
        info!("received {name}: reloading the configuration");
        notify::reloading();
        // The updater logs and counts the outcome; either way the reload is over (a refused
        // one keeps the running configuration), and systemd waits for READY=1 to say so.
        let (reply, outcome) = tokio::sync::oneshot::channel();
        if reloads.send(Change::Reload(Some(reply))).await.is_err() {
            return;
        }
        let _ = outcome.await;
        notify::ready();
    }
}
