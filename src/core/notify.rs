//! Telling a service manager (systemd's `Type=notify`) where galera-lb is in its life.
//!
//! `READY=1` once every listener is bound and accepting and the first health round has run,
//! `RELOADING=1` (with `MONOTONIC_USEC`, which systemd 253 and later want) when a SIGHUP reload
//! starts and `READY=1` again when it has been applied or refused, `STOPPING=1` when the drain
//! begins. The messages go to the unix datagram socket named by `NOTIFY_SOCKET`; without that
//! variable (not started by systemd) every call does nothing. The protocol itself is the
//! `sd-notify` crate's: this module only decides what is sent when, and logs a failure to send
//! (a service manager that cannot be told is no reason to stop serving clients).

use sd_notify::NotifyState;
use tracing::{debug, warn};

/// Every listener accepts and the first health round has run (also: a reload is over).
pub(crate) fn ready() {
    send("READY=1", &[NotifyState::Ready]);
}

/// A reload of the configuration file has started.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send("RELOADING=1", &[NotifyState::Reloading, now]),
        Err(e) => {
            // Without the timestamp systemd ≥ 253 ignores RELOADING=1; still send it for older
            // ones, and say why the timestamp is missing.
            warn!(error = %e, "cannot read CLOCK_MONOTONIC for the reload notification");
            send("RELOADING=1", &[NotifyState::Reloading]);
        }
    }
}

/// galera-lb stops accepting and drains its open sessions.
pub(crate) fn stopping() {
    send("STOPPING=1", &[NotifyState::Stopping]);
}

fn send(what: &str, states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(states) {
        Ok(()) => debug!(state = what, "told the service manager"),
        Err(e) => {
            warn!(state = what, error = %e, "cannot notify the service manager (NOTIFY_SOCKET)")
        }
    }
}
