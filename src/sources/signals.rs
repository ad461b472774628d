//! Signals: SIGTERM and SIGINT as one shutdown future, SIGHUP and SIGUSR2 as reload requests.
//!
//! Every handler is installed before anything is started, so a signal that arrives during
//! start-up is not lost (or fatal): [`TerminationSignals::recv`] completes on the first SIGTERM
//! or SIGINT, and a SIGHUP received while starting becomes a reload once started
//! ([`forward_reloads`]). What happens next (stop accepting, drain, close the
//! rest) is [`crate::Running::drain`]'s job.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tracing::info;

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

/// Installed SIGHUP and SIGUSR2 handlers: installed before start-up, so that a reload signal
/// that arrives while galera-lb starts waits for it instead of terminating the process.
#[derive(Debug)]
pub(crate) struct ReloadSignals {
    hangup: Signal,
    usr2: Signal,
}

impl ReloadSignals {
    pub(crate) fn install() -> std::io::Result<Self> {
        Ok(ReloadSignals {
            hangup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }
}

/// Sends a reload request to the updater for every SIGHUP (and SIGUSR2, HAProxy's reload
/// signal), telling the service manager RELOADING=1 and then READY=1 once the updater has
/// answered; runs until the updater is gone. A signal received before this runs (during
/// start-up) is one reload request.
pub(crate) async fn forward_reloads(signals: ReloadSignals, reloads: mpsc::Sender<Change>) {
    let ReloadSignals {
        mut hangup,
        mut usr2,
    } = signals;
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

/// Ignores SIGHUP and SIGUSR2 until [`ReloadSignals::install`] replaces that with its handler:
/// called first thing in `main`, so that a reload signal sent while the configuration is read
/// and the runtime built does not terminate the process (their default action). An ignored
/// disposition would be inherited by programs galera-lb starts; an installed handler is not.
pub(crate) fn ignore_reloads_until_installed() {
    for signal in [libc::SIGHUP, libc::SIGUSR2] {
        // SAFETY: setting a signal's disposition to SIG_IGN; no handler code runs.
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
}
