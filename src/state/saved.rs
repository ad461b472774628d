//! The state file (`runtime.state_file`): admin states and control-port weights that survive a
//! restart, as HAProxy's `server-state-file` does.
//!
//! The updater task writes it after every control-port change and every reload ([`capture`],
//! [`write`]); start-up reads it back before the first health round ([`read`], [`restore`]).
//! How it combines with the configuration file:
//!
//! - the configuration's backends win: a saved state for a backend the file no longer lists
//!   (or one that was added over the control port) is dropped, and logged;
//! - a saved admin state (`drain`, `maint`) applies to the configured backend of that address;
//! - a saved weight applies only while the file still gives that backend the weight it had
//!   when the weight was saved: an operator who edited the weight in the file meant it.
//!
//! The file is JSON, written whole to a temporary file beside it and renamed, so a crash leaves
//! the old or the new version, never half of one. A file that cannot be read or parsed is
//! logged and ignored: a lost drain is better than a service that does not start.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::core::backend::AdminState;
use crate::core::bounded_read::read_regular;
use crate::state::snapshot::Updater;

/// The most a state file may hold (about 40 bytes per backend).
const MAX_STATE_BYTES: u64 = 4 << 20;

/// What the state file holds.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SavedState {
    /// The format's version: 1.
    pub version: u32,
    /// By backend address as configured.
    pub backends: BTreeMap<String, SavedBackend>,
}

/// One backend's saved state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SavedBackend {
    /// `drain` or `maint` (absent: ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// The weight set over the control port, and the configured weight it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured_weight: Option<f64>,
}

/// The configured weight of each configured backend, by address.
fn configured_weights(config: &Config) -> BTreeMap<String, f64> {
    config
        .pools()
        .iter()
        .flat_map(|pool| pool.backends.iter())
        .map(|backend| (backend.address.clone(), backend.weight))
        .collect()
}

/// What to save now: every admin state that is not `ready`, and every control-port weight.
pub(crate) fn capture(updater: &Updater, config: &Config) -> SavedState {
    let configured = configured_weights(config);
    let mut saved = SavedState {
        version: 1,
        backends: BTreeMap::new(),
    };
    for member in updater.router().load_full().backends() {
        let state = member.backend.admin_state();
        if state != AdminState::Ready {
            saved
                .backends
                .entry(member.backend.address.clone())
                .or_default()
                .admin = Some(state.as_str().to_string());
        }
    }
    for (address, weight) in updater.runtime_weights() {
        let entry = saved.backends.entry(address.clone()).or_default();
        entry.weight = Some(weight);
        entry.configured_weight = configured.get(&address).copied();
    }
    saved
}

/// Writes `state` to `path` atomically (a temporary file beside it, then a rename).
pub(crate) fn write(path: &Path, state: &SavedState) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(state).map_err(std::io::Error::other)?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, text + "\n")?;
    std::fs::rename(&temporary, path)
}

/// Reads the state file: `Ok(None)` when there is none yet.
pub(crate) fn read(path: &Path) -> Result<Option<SavedState>, String> {
    let bytes = match read_regular(path, MAX_STATE_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let state: SavedState =
        serde_json::from_slice(&bytes).map_err(|e| format!("cannot parse it: {e}"))?;
    if state.version != 1 {
        return Err(format!("version {} is not 1", state.version));
    }
    Ok(Some(state))
}

/// Applies `saved` to the routing `config` built, by the rules in the module doc. Returns what
/// it did and dropped, one line each, for the log.
pub(crate) async fn restore(
    updater: &mut Updater,
    config: &Config,
    saved: &SavedState,
) -> Vec<String> {
    let configured = configured_weights(config);
    let mut done = Vec::new();
    for (address, backend) in &saved.backends {
        let Some(&configured_weight) = configured.get(address) else {
            done.push(format!(
                "dropped the saved state of {address}: the configuration does not list it"
            ));
            continue;
        };
        if let Some(admin) = &backend.admin {
            let state = match admin.as_str() {
                "drain" => AdminState::Drain,
                "maint" => AdminState::Maint,
                other => {
                    done.push(format!(
                        "{address}: ignored the unknown admin state {other:?}"
                    ));
                    continue;
                }
            };
            let snapshot = updater.router().load_full();
            if let Some(member) = snapshot.find(address, None) {
                member.backend.set_admin_state(state);
                done.push(format!("{address}: admin state {admin}, as saved"));
            }
        }
        if let Some(weight) = backend.weight {
            if backend.configured_weight != Some(configured_weight) {
                done.push(format!(
                    "dropped the saved weight {weight} of {address}: the configuration's weight \
                     changed since (now {configured_weight})"
                ));
            } else if let Err(e) = updater.set_weight(address, weight).await {
                done.push(format!(
                    "{address}: cannot restore the weight {weight}: {e}"
                ));
            } else {
                done.push(format!("{address}: weight {weight}, as saved"));
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "
listeners:
  - name: rw
    bind: 127.0.0.1:3306
backends:
  - address: 127.0.0.1:3316
  - address: 127.0.0.1:3326
    weight: 2
health:
  check: none
";

    #[tokio::test]
    async fn admin_states_and_weights_go_round_by_the_rules() {
        let config = Config::from_yaml(YAML, "test.yaml").unwrap();
        let mut updater = Updater::new(&config).await.unwrap();
        let snapshot = updater.router().load_full();
        snapshot
            .find("127.0.0.1:3316", None)
            .unwrap()
            .backend
            .set_admin_state(AdminState::Maint);
        updater.set_weight("127.0.0.1:3326", 5.0).await.unwrap();
        updater.set_weight("127.0.0.1:3399", 1.0).await.unwrap();
        let saved = capture(&updater, &config);
        assert_eq!(
            saved.backends["127.0.0.1:3316"].admin.as_deref(),
            Some("maint")
        );
        assert_eq!(saved.backends["127.0.0.1:3326"].weight, Some(5.0));
        assert_eq!(
            saved.backends["127.0.0.1:3326"].configured_weight,
            Some(2.0)
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(read(&path).unwrap(), None);
        write(&path, &saved).unwrap();
        assert_eq!(read(&path).unwrap().as_ref(), Some(&saved));

        // A new start with the same file: both come back; the control-port backend does not.
        let mut fresh = Updater::new(&config).await.unwrap();
        let log = restore(&mut fresh, &config, &saved).await;
        assert!(
            log.iter()
                .any(|l| l.contains("127.0.0.1:3399") && l.contains("dropped")),
            "{log:?}"
        );
        let snapshot = fresh.router().load_full();
        assert_eq!(
            snapshot
                .find("127.0.0.1:3316", None)
                .unwrap()
                .backend
                .admin_state(),
            AdminState::Maint
        );
        assert_eq!(snapshot.find("127.0.0.1:3326", None).unwrap().weight, 5.0);
        assert!(snapshot.find("127.0.0.1:3399", None).is_none());

        // The file's weight changed since: the saved weight is dropped.
        let edited =
            Config::from_yaml(&YAML.replace("weight: 2", "weight: 3"), "test.yaml").unwrap();
        let mut fresh = Updater::new(&edited).await.unwrap();
        let log = restore(&mut fresh, &edited, &saved).await;
        assert!(
            log.iter().any(|l| l.contains("changed since (now 3)")),
            "{log:?}"
        );
        assert_eq!(
            fresh
                .router()
                .load_full()
                .find("127.0.0.1:3326", None)
                .unwrap()
                .weight,
            3.0
        );

        // Not JSON, or another version: an error to log, not a panic.
        std::fs::write(&path, "drain everything").unwrap();
        assert!(read(&path).unwrap_err().contains("cannot parse"));
        std::fs::write(&path, r#"{"version": 2, "backends": {}}"#).unwrap();
        assert!(read(&path).unwrap_err().contains("version 2"));
    }
}
