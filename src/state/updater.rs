//! The updater task: once galera-lb runs, the only place that changes what it routes to.
//!
//! Discovery, DNS following, the control port and reloads (SIGHUP or `reload`) all send a
//! [`Change`] here. The task applies it through the [`Updater`] (which builds and swaps the
//! routing snapshot), then tells the layers above through [`Effects`] what happened: health
//! checks follow the new snapshot (only the backends that came and went, when the updater knows
//! them: see [`Delta`]), and a reload also opens, closes or re-binds listeners and
//! restarts health checks and discovery when their settings changed. One task, one change at a
//! time: changes never race. `Effects` is how the state layer reaches up without importing the
//! layers above it (`crate::app` implements it), and how tests drive the task with no sockets.
//!
//! Runtime control changes and reloads combine simply: a reload makes the file the truth again,
//! so backends added, reweighted, drained by weight or removed over the control port since the
//! last start or reload are discarded (the log says how many). Admin states (`drain`, `maint`,
//! `ready`) belong to the backend and survive a reload while it stays.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::config::diff::{self, ConfigDiff};
use crate::config::source::ConfigSource;
use crate::core::backend::AdminState;
use crate::core::bounded_read::FileReader;
use crate::state::change::{Change, ControlChange, ControlRequest};
use crate::state::snapshot::{Delta, Router, Snapshot, Updater, resolve_first};

/// What a routing change means for the parts of galera-lb above the state layer. The updater
/// task calls these, in this order, and nothing else.
pub(crate) trait Effects: Send {
    /// Whatever a reload needs before anything changes (listening sockets, the health-check
    /// password); an error refuses the reload with nothing changed.
    type Prepared: Send;

    /// The routing is now `snapshot` (a backend came, went or changed): follow it (health
    /// checks for new backends, none for gone ones, and a writer election). `delta` says which
    /// backends came and went since the previous call, when the updater knows.
    fn routing_changed(&mut self, snapshot: &Arc<Snapshot>, delta: Delta);

    /// An admin state changed: elect the writers again (a drained writer gives its role up).
    fn elect_writers(&mut self);

    /// Prepares a reload to `new` (see [`Effects::Prepared`]).
    /// `file` names the configuration in messages.
    fn prepare_reload(
        &mut self,
        new: &Config,
        diff: &ConfigDiff,
        file: &str,
    ) -> Result<Self::Prepared, String>;

    /// The routing follows `new` now: open, close and re-route listeners, restart what changed.
    /// [`Effects::routing_changed`] follows.
    fn reload_applied(&mut self, prepared: Self::Prepared, new: &Config, diff: &ConfigDiff);

    /// galera-lb stops: stop whatever the effects started.
    fn stop(&mut self);
}

/// Everything the updater task owns.
pub(crate) struct UpdaterTask<E: Effects> {
    pub updater: Updater,
    pub effects: E,
    pub config: Config,
    /// The file to re-read on reload; `None` when galera-lb runs without one.
    pub config_file: Option<ConfigSource>,
    /// Stops the task at shutdown.
    pub stop: CancellationToken,
    /// Reads the file at a reload, off the runtime.
    pub reader: FileReader,
}

impl<E: Effects> UpdaterTask<E> {
    fn router(&self) -> Arc<Router> {
        self.updater.router()
    }

    /// Applies changes until galera-lb stops.
    pub(crate) async fn run(mut self, mut changes: mpsc::Receiver<Change>) {
        crate::core::counters::metrics().register_reloads();
        loop {
            let change = tokio::select! {
                _ = self.stop.cancelled() => break,
                change = changes.recv() => match change {
                    Some(change) => change,
                    None => {
                        self.stop.cancelled().await;
                        break;
                    }
                },
            };
            self.apply(change).await;
        }
        self.effects.stop();
    }

    /// Applies one change.
    pub(crate) async fn apply(&mut self, change: Change) {
        match change {
            Change::Discovered { pool, addresses } => {
                info!(pool = %pool, discovered = ?addresses, "discovery changed the pool");
                let result = self.updater.set_discovered(&pool, addresses).await;
                self.after_change(result.map_err(|e| e.to_string()), "discovery");
            }
            Change::Resolved { name, addresses } => {
                info!(name = %name, addresses = ?addresses, "DNS records changed");
                let result = self.updater.set_resolved(&name, addresses).await;
                self.after_change(result.map_err(|e| e.to_string()), "DNS");
            }
            Change::Control(ControlRequest { change, reply }) => {
                let result = self.apply_control(change).await;
                if result.is_ok() {
                    self.save_state().await;
                }
                let _ = reply.send(result);
            }
            Change::Reload(reply) => {
                let result = self.reload().await;
                if result.is_ok() {
                    self.save_state().await;
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
        }
    }

    fn after_change(&mut self, result: Result<(), String>, what: &str) {
        match result {
            Ok(()) => self.routing_changed(),
            Err(e) => {
                warn!(error = %e, "cannot apply a {what} change; keeping the current routing")
            }
        }
    }
    /// Tells the effects about the routing as it is now, and what changed since they last heard.
    fn routing_changed(&mut self) {
        let delta = self.updater.take_delta();
        self.effects
            .routing_changed(&self.router().load_full(), delta);
    }

    async fn apply_control(&mut self, change: ControlChange) -> Result<(), String> {
        match change {
            ControlChange::Destination { address, weight } => {
                let identity = self.identity(&address).await;
                if weight < 0.0 {
                    let removed = self
                        .updater
                        .remove(&identity)
                        .await
                        .map_err(|e| e.to_string())?;
                    let Some(backend) = removed else {
                        return Err(format!("no backend {address}"));
                    };
                    info!(backend = %identity, name = %backend.name(), sessions = backend.active(), "removed over the control port; closing its sessions");
                    backend.close_sessions();
                } else {
                    self.refuse_own_port(&address).await?;
                    self.updater
                        .set_weight(&identity, weight)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                self.routing_changed();
                Ok(())
            }
            ControlChange::Admin { state, address } => {
                let identity = self.identity(&address).await;
                let snapshot = self.router().load_full();
                let member = snapshot
                    .find(&identity, None)
                    .ok_or_else(|| format!("no backend {address}"))?;
                member.backend.set_admin_state(state);
                info!(backend = %identity, name = %member.backend.name(), state = state.as_str(), "admin state set over the control port");
                // `maint` moves the node's sessions off it between transactions; `drain` and
                // `ready` leave them (glbd's drain), withdrawing a `maint` not yet done.
                match state {
                    AdminState::Maint => member
                        .backend
                        .close_sessions_when_idle(self.config.health.drain_timeout),
                    _ if member.backend.is_healthy() => member.backend.keep_sessions(),
                    _ => {}
                }
                // A drained writer must give its role up: let the coordinator elect.
                self.effects.elect_writers();
                if state == AdminState::Ready {
                    self.effects.routing_changed(&snapshot, Delta::none());
                }
                Ok(())
            }
            ControlChange::Reload => self.reload().await,
        }
    }

    /// The identity of the backend that `address` names: the member known by that address, or
    /// the one at the same socket address (so `localhost:3316` finds `127.0.0.1:3316`), or the
    /// address itself for a new backend.
    async fn identity(&self, address: &str) -> String {
        // The same choice of address as building a member makes.
        let socket = resolve_first(address, "control").await.ok();
        self.updater
            .identity(address, socket)
            .unwrap_or_else(|| address.to_string())
    }

    /// Writes the state file (`runtime.state_file`), when there is one, off the runtime's
    /// workers; a failure is logged (the routing has changed either way).
    async fn save_state(&self) {
        let Some(path) = self.config.runtime.state_file.clone() else {
            return;
        };
        let state = crate::state::saved::capture(&self.updater, &self.config);
        let shown = path.display().to_string();
        let written =
            tokio::task::spawn_blocking(move || crate::state::saved::write(&path, &state)).await;
        if let Ok(Err(e)) = written {
            warn!(file = %shown, error = %e, "cannot write the state file (runtime.state_file); the change is applied but will not survive a restart");
        }
    }

    /// Refuses a destination that is one of galera-lb's own ports (a listener, the control or the
    /// admin port): its clients, and its health checks, would go through galera-lb itself.
    /// `localhost` alone is `localhost:PORT` of the first listener, which is such a loop.
    async fn refuse_own_port(&self, address: &str) -> Result<(), String> {
        let Ok(target) = resolve_first(address, "control").await else {
            return Ok(()); // Refused by the change itself, with the resolver's reason.
        };
        let config = &self.config;
        let own = config
            .listeners
            .iter()
            .map(|l| (format!("listener '{}'", l.name), l.bind))
            .chain(
                config
                    .control
                    .iter()
                    .map(|c| ("control port".to_string(), c.bind)),
            )
            .chain(
                config
                    .admin
                    .iter()
                    .map(|a| ("admin port".to_string(), a.bind)),
            );
        for (what, bind) in own {
            if crate::core::net::reaches(target, bind) {
                return Err(format!(
                    "{address} is galera-lb's own {what} ({bind}): its clients would loop \
                     through galera-lb; give a database node's HOST:PORT"
                ));
            }
        }
        Ok(())
    }

    /// Re-reads the configuration file and applies the difference; on any problem the running
    /// configuration stays as it was.
    async fn reload(&mut self) -> Result<(), String> {
        let result = self.try_reload().await;
        let outcome = match &result {
            Ok(()) => "ok",
            Err(reason) => {
                warn!(%reason, "reload refused; the running configuration stays");
                "error"
            }
        };
        crate::core::counters::metrics()
            .reloads
            .with_label_values(&[outcome])
            .inc();
        result
    }

    async fn try_reload(&mut self) -> Result<(), String> {
        let path = self.config_file.clone().ok_or(
            "galera-lb runs without a configuration file (the built-in default or a glbd command \
             line): there is nothing to reload",
        )?;
        let new = path.reload(&self.reader).await?;
        let path = path.path().to_path_buf();
        let diff = diff::diff(&self.config, &new);
        // Everything that can fail outside the routing first: if it does, nothing has changed.
        let prepared = self
            .effects
            .prepare_reload(&new, &diff, &path.display().to_string())?;
        let before = self.router().load_full();
        let discarded = self.updater.runtime_changes();
        self.updater
            .reload(&new)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let after = self.router().load_full();
        for unresolved in self.updater.unresolved() {
            warn!("reload: {}: {unresolved}", path.display());
        }

        // Backends that are gone lose their sessions, as with a removal over the control port.
        for member in before.backends() {
            if after.find(&member.backend.address, None).is_none() {
                member.backend.close_sessions();
            }
        }
        self.effects.reload_applied(prepared, &new, &diff);
        self.routing_changed();
        if !diff.needs_restart.is_empty() {
            warn!(sections = ?diff.needs_restart, "reload: these sections changed but take effect only at the next start");
        }
        info!(
            file = %path.display(),
            backends_added = diff.backends_added.len(),
            backends_removed = diff.backends_removed.len(),
            backends_changed = diff.backends_changed.len(),
            listeners_added = diff.listeners_added.len(),
            listeners_removed = diff.listeners_removed.len(),
            listeners_rebound = diff.listeners_rebound.len(),
            health_changed = diff.health_changed,
            runtime_changes_discarded = discarded,
            "configuration reloaded"
        );
        self.config = new;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::oneshot;

    use super::*;
    use crate::config::diff::ConfigDiff;

    /// Records what the updater asked of the layers above; can refuse reloads.
    #[derive(Default)]
    struct Recorded {
        calls: Vec<String>,
        /// Weights of the first pool in each snapshot passed to `routing_changed`.
        weights: Vec<Vec<f64>>,
    }

    struct FakeEffects {
        recorded: Arc<Mutex<Recorded>>,
        refuse_reload: bool,
    }

    impl Effects for FakeEffects {
        type Prepared = ();

        fn routing_changed(&mut self, snapshot: &Arc<Snapshot>, _: Delta) {
            let mut recorded = self.recorded.lock().unwrap();
            recorded.calls.push("routing_changed".into());
            let weights = snapshot.pools[0].members.iter().map(|m| m.weight).collect();
            recorded.weights.push(weights);
        }

        fn elect_writers(&mut self) {
            self.recorded
                .lock()
                .unwrap()
                .calls
                .push("elect_writers".into());
        }

        fn prepare_reload(&mut self, _: &Config, _: &ConfigDiff, file: &str) -> Result<(), String> {
            self.recorded
                .lock()
                .unwrap()
                .calls
                .push("prepare_reload".into());
            if self.refuse_reload {
                return Err(format!("{file}: cannot bind"));
            }
            Ok(())
        }

        fn reload_applied(&mut self, _: (), _: &Config, _: &ConfigDiff) {
            self.recorded
                .lock()
                .unwrap()
                .calls
                .push("reload_applied".into());
        }

        fn stop(&mut self) {
            self.recorded.lock().unwrap().calls.push("stop".into());
        }
    }

    const YAML: &str = "listeners:\n  - name: rw\n    bind: 127.0.0.1:0\nbackends:\n  \
                        - address: 127.0.0.1:3316\n  - address: 127.0.0.1:3326\n\
                        health:\n  check: none\n";

    async fn task(
        yaml: &str,
        file: Option<&std::path::Path>,
        refuse_reload: bool,
    ) -> (UpdaterTask<FakeEffects>, Arc<Mutex<Recorded>>) {
        let config = Config::from_yaml(yaml, "test.yaml").unwrap();
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let task = UpdaterTask {
            updater: Updater::new(&config).await.unwrap(),
            effects: FakeEffects {
                recorded: recorded.clone(),
                refuse_reload,
            },
            config,
            config_file: file.map(|f| ConfigSource::Yaml(f.to_path_buf())),
            stop: CancellationToken::new(),
            reader: Default::default(),
        };
        (task, recorded)
    }

    async fn control(
        task: &mut UpdaterTask<FakeEffects>,
        change: ControlChange,
    ) -> Result<(), String> {
        let (reply, outcome) = oneshot::channel();
        task.apply(Change::Control(ControlRequest { change, reply }))
            .await;
        outcome.await.unwrap()
    }

    fn calls(recorded: &Mutex<Recorded>) -> Vec<String> {
        std::mem::take(&mut recorded.lock().unwrap().calls)
    }

    #[tokio::test]
    async fn a_weight_change_rebuilds_the_routing_and_health_follows_it() {
        let (mut task, recorded) = task(YAML, None, false).await;
        let change = ControlChange::Destination {
            address: "127.0.0.1:3326".into(),
            weight: 3.0,
        };
        assert_eq!(control(&mut task, change).await, Ok(()));
        assert_eq!(calls(&recorded), ["routing_changed"]);
        assert_eq!(recorded.lock().unwrap().weights, [vec![1.0, 3.0]]);
        assert_eq!(task.router().load().generation, 1);
    }

    #[tokio::test]
    async fn removing_an_unknown_backend_changes_nothing() {
        let (mut task, recorded) = task(YAML, None, false).await;
        let change = ControlChange::Destination {
            address: "127.0.0.1:3399".into(),
            weight: -1.0,
        };
        let result = control(&mut task, change).await;
        assert_eq!(result, Err("no backend 127.0.0.1:3399".into()));
        assert!(calls(&recorded).is_empty());
        assert_eq!(task.router().load().generation, 0);
    }

    #[tokio::test]
    async fn an_admin_state_asks_for_an_election() {
        let (mut task, recorded) = task(YAML, None, false).await;
        let drain = ControlChange::Admin {
            state: AdminState::Drain,
            address: "127.0.0.1:3316".into(),
        };
        assert_eq!(control(&mut task, drain).await, Ok(()));
        assert_eq!(calls(&recorded), ["elect_writers"]);
        let ready = ControlChange::Admin {
            state: AdminState::Ready,
            address: "127.0.0.1:3316".into(),
        };
        assert_eq!(control(&mut task, ready).await, Ok(()));
        assert_eq!(calls(&recorded), ["elect_writers", "routing_changed"]);
    }

    #[tokio::test]
    async fn a_reload_that_cannot_be_prepared_changes_nothing() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let (mut task, recorded) = task(YAML, Some(file.path()), true).await;
        std::fs::write(file.path(), YAML.replace("3326", "3336")).unwrap();
        let result = control(&mut task, ControlChange::Reload).await;
        assert!(result.unwrap_err().ends_with("cannot bind"));
        assert_eq!(calls(&recorded), ["prepare_reload"]);
        assert_eq!(task.router().load().generation, 0);
        assert!(
            task.config
                .backends
                .iter()
                .any(|b| b.address == "127.0.0.1:3326")
        );
    }

    #[tokio::test]
    async fn a_reload_applies_the_file_and_discards_runtime_weights() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let (mut task, recorded) = task(YAML, Some(file.path()), false).await;
        let change = ControlChange::Destination {
            address: "127.0.0.1:3316".into(),
            weight: 5.0,
        };
        control(&mut task, change).await.unwrap();
        calls(&recorded);
        std::fs::write(file.path(), YAML.replace("3326", "3336")).unwrap();
        let (reply, outcome) = oneshot::channel();
        task.apply(Change::Reload(Some(reply))).await;
        assert_eq!(outcome.await.unwrap(), Ok(()));
        assert_eq!(
            calls(&recorded),
            ["prepare_reload", "reload_applied", "routing_changed"]
        );
        let snapshot = task.router().load_full();
        let members: Vec<(&str, f64)> = snapshot.pools[0]
            .members
            .iter()
            .map(|m| (m.backend.address.as_str(), m.weight))
            .collect();
        assert_eq!(members, [("127.0.0.1:3316", 1.0), ("127.0.0.1:3336", 1.0)]);
    }

    #[tokio::test]
    async fn the_task_stops_its_effects_when_stopped() {
        let (task, recorded) = task(YAML, None, false).await;
        let stop = task.stop.clone();
        let (_changes, receiver) = mpsc::channel(1);
        let running = tokio::spawn(task.run(receiver));
        stop.cancel();
        running.await.unwrap();
        assert_eq!(calls(&recorded), ["stop"]);
    }
}
