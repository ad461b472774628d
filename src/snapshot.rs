//! The routing snapshot and its single writer.
//!
//! A [`Snapshot`] is an immutable picture of everything a new client connection needs: the pools
//! with their members (backend, resolved address, weight, tier, limit) and, per listener, the
//! policy built for its pool. It lives behind one [`ArcSwap`] in [`Router`]: a connection does one
//! `load()`, one pick and is done with it; nothing on that path takes a lock.
//!
//! All changes go through the [`Updater`], the only writer, which builds a whole new snapshot and
//! swaps it in. It keeps a registry of [`BackendState`]s by address, so a backend that stays across
//! a change (even with a new weight or in another pool) keeps its health and counters.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::backend::BackendState;
use crate::balance::{Policy, build_policy};
use crate::config::{BackendConfig, Config, PolicyKind, split_host_port};

/// A backend as a member of a pool.
#[derive(Debug, Clone)]
pub struct Member {
    pub backend: Arc<BackendState>,
    /// Where connections go: the configured address, resolved when the snapshot was built.
    pub socket_addr: SocketAddr,
    pub weight: f64,
    pub tier: u8,
    pub max_connections: Option<u32>,
}

impl Member {
    /// Whether the member can take a new client now: healthy and below its own limit.
    pub fn is_usable(&self) -> bool {
        self.backend.is_healthy()
            && self
                .max_connections
                .is_none_or(|max| self.backend.active() < u64::from(max))
    }
}

/// A named group of backends that listeners route to.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub members: Vec<Member>,
}

/// What one listener routes to, and how.
#[derive(Debug)]
pub struct Route {
    pub listener: String,
    pub policy_kind: PolicyKind,
    pub pool: Arc<Pool>,
    policy: Box<dyn Policy>,
}

/// Why [`Route::pick`] found no member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoMember {
    /// The pool has members, but none is usable (down, or at its connection limit).
    NoneUsable,
    /// Every usable member has already been tried for this client.
    AllTried,
}

impl Route {
    /// Picks a member for `client`, skipping the members in `tried`: the lowest tier that still has
    /// a usable, untried member, and within it the policy's choice.
    pub fn pick(&self, client: IpAddr, tried: &[usize]) -> Result<usize, NoMember> {
        let members = &self.pool.members;
        let available = |i: usize| !tried.contains(&i) && members[i].is_usable();
        let Some(tier) = (0..members.len())
            .filter(|&i| available(i))
            .map(|i| members[i].tier)
            .min()
        else {
            return Err(if tried.is_empty() {
                NoMember::NoneUsable
            } else {
                NoMember::AllTried
            });
        };
        self.policy
            .pick(members, client, &|i| {
                members[i].tier == tier && available(i)
            })
            .ok_or(NoMember::AllTried)
    }
}

/// The immutable routing state read by every listener.
#[derive(Debug)]
pub struct Snapshot {
    /// Counts swaps, for logs and tests.
    pub generation: u64,
    pub pools: Vec<Arc<Pool>>,
    pub routes: Vec<Route>,
}

impl Snapshot {
    pub fn route(&self, listener: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.listener == listener)
    }
}

/// Shared access to the current snapshot.
#[derive(Debug)]
pub struct Router {
    current: ArcSwap<Snapshot>,
}

impl Router {
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

/// A problem that stops a snapshot from being built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{field}: cannot resolve '{address}': {reason}")]
    Resolve {
        field: String,
        address: String,
        reason: String,
    },
}

/// The only writer of the routing snapshot.
#[derive(Debug)]
pub struct Updater {
    router: Arc<Router>,
    backends: HashMap<String, Arc<BackendState>>,
}

impl Updater {
    /// Builds the first snapshot from `config`.
    pub async fn new(config: &Config) -> Result<Updater, BuildError> {
        let mut backends = HashMap::new();
        let snapshot = build(config, &mut backends, 0).await?;
        Ok(Updater {
            router: Arc::new(Router {
                current: ArcSwap::from_pointee(snapshot),
            }),
            backends,
        })
    }

    pub fn router(&self) -> Arc<Router> {
        self.router.clone()
    }

    /// Replaces the routing with one built from `config`; backends that stay keep their state.
    pub async fn apply(&mut self, config: &Config) -> Result<(), BuildError> {
        let generation = self.router.load().generation + 1;
        let mut registry = self.backends.clone();
        let snapshot = build(config, &mut registry, generation).await?;
        let in_use: Vec<&str> = snapshot
            .pools
            .iter()
            .flat_map(|p| p.members.iter().map(|m| m.backend.address.as_str()))
            .collect();
        registry.retain(|address, _| in_use.contains(&address.as_str()));
        self.backends = registry;
        self.router.current.store(Arc::new(snapshot));
        Ok(())
    }
}

async fn build(
    config: &Config,
    registry: &mut HashMap<String, Arc<BackendState>>,
    generation: u64,
) -> Result<Snapshot, BuildError> {
    let mut pools = Vec::new();
    for (pool_index, (name, backends)) in config.pools().into_iter().enumerate() {
        let field = if pool_index == 0 {
            "backends".to_string()
        } else {
            format!("pools[{}].backends", pool_index - 1)
        };
        let mut members = Vec::with_capacity(backends.len());
        for (i, backend) in backends.iter().enumerate() {
            let socket_addr = resolve(backend, &format!("{field}[{i}].address")).await?;
            let state = registry
                .entry(backend.address.clone())
                .or_insert_with(|| Arc::new(BackendState::new(backend.address.clone())))
                .clone();
            members.push(Member {
                backend: state,
                socket_addr,
                weight: backend.weight,
                tier: backend.tier,
                max_connections: backend.max_connections,
            });
        }
        pools.push(Arc::new(Pool {
            name: name.to_string(),
            members,
        }));
    }
    let routes = config
        .listeners
        .iter()
        .map(|listener| {
            let pool = pools
                .iter()
                .find(|p| p.name == listener.pool)
                .expect("validate() checked that every listener's pool exists")
                .clone();
            Route {
                listener: listener.name.clone(),
                policy_kind: listener.policy,
                policy: build_policy(listener.policy, &pool.members),
                pool,
            }
        })
        .collect();
    Ok(Snapshot {
        generation,
        pools,
        routes,
    })
}

/// Resolves a backend address; a host name takes its first address.
async fn resolve(backend: &BackendConfig, field: &str) -> Result<SocketAddr, BuildError> {
    let error = |reason: String| BuildError::Resolve {
        field: field.to_string(),
        address: backend.address.clone(),
        reason,
    };
    let (host, port) = split_host_port(&backend.address).map_err(error)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addresses = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| error(e.to_string()))?;
    addresses
        .next()
        .ok_or_else(|| error("the name has no addresses".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, "test.yaml").unwrap()
    }

    const TWO_POOLS: &str = "
listeners:
  - name: rw
    bind: 127.0.0.1:3306
    policy: single
  - name: ro
    bind: 127.0.0.1:3307
    pool: readers
backends:
  - address: 127.0.0.1:3316
  - address: 127.0.0.1:3326
    tier: 2
pools:
  - name: readers
    backends:
      - address: 127.0.0.1:3326
      - address: localhost:3336
";

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn builds_pools_and_routes_and_resolves_names() {
        let updater = Updater::new(&config(TWO_POOLS)).await.unwrap();
        let snapshot = updater.router().load_full();
        assert_eq!(snapshot.pools.len(), 2);
        let ro = snapshot.route("ro").unwrap();
        assert_eq!(ro.pool.name, "readers");
        assert!(ro.pool.members[1].socket_addr.ip().is_loopback());
        assert_eq!(ro.pool.members[1].socket_addr.port(), 3336);
        // The same address in two pools is one backend with one set of counters.
        let rw = snapshot.route("rw").unwrap();
        assert!(Arc::ptr_eq(
            &rw.pool.members[1].backend,
            &ro.pool.members[0].backend
        ));
    }

    #[tokio::test]
    async fn higher_tiers_are_used_only_when_lower_ones_are_unusable() {
        let updater = Updater::new(&config(TWO_POOLS)).await.unwrap();
        let snapshot = updater.router().load_full();
        let rw = snapshot.route("rw").unwrap();
        assert_eq!(rw.pick(LOCAL, &[]), Ok(0));
        assert_eq!(rw.pick(LOCAL, &[0]), Ok(1));
        assert_eq!(rw.pick(LOCAL, &[0, 1]), Err(NoMember::AllTried));
        rw.pool.members[0].backend.set_healthy(false);
        assert_eq!(rw.pick(LOCAL, &[]), Ok(1));
        rw.pool.members[1].backend.set_healthy(false);
        assert_eq!(rw.pick(LOCAL, &[]), Err(NoMember::NoneUsable));
    }

    #[tokio::test]
    async fn a_member_at_its_limit_is_skipped() {
        let yaml = TWO_POOLS.replace(
            "  - address: 127.0.0.1:3316\n",
            "  - address: 127.0.0.1:3316\n    max_connections: 1\n",
        );
        let updater = Updater::new(&config(&yaml)).await.unwrap();
        let snapshot = updater.router().load_full();
        let rw = snapshot.route("rw").unwrap();
        let _held = crate::limit::try_acquire(&rw.pool.members[0].backend, None);
        assert_eq!(rw.pick(LOCAL, &[]), Ok(1));
    }

    #[tokio::test]
    async fn backends_keep_their_state_across_an_update() {
        let mut updater = Updater::new(&config(TWO_POOLS)).await.unwrap();
        let before = updater.router().load_full();
        let kept = before.pools[0].members[0].backend.clone();
        let _conn = crate::limit::try_acquire(&kept, None);
        let reweighted = TWO_POOLS.replace(
            "  - address: 127.0.0.1:3316\n",
            "  - address: 127.0.0.1:3316\n    weight: 5\n",
        );
        updater.apply(&config(&reweighted)).await.unwrap();
        let after = updater.router().load_full();
        assert_eq!(after.generation, 1);
        let member = &after.pools[0].members[0];
        assert_eq!(member.weight, 5.0);
        assert!(Arc::ptr_eq(&member.backend, &kept));
        assert_eq!(member.backend.active(), 1);
    }

    #[tokio::test]
    async fn unresolvable_names_are_reported_with_their_field() {
        let yaml = TWO_POOLS.replace("localhost:3336", "no-such-host.invalid:3336");
        let error = Updater::new(&config(&yaml)).await.unwrap_err().to_string();
        assert!(error.contains("pools[0].backends[1].address"), "{error}");
        assert!(error.contains("no-such-host.invalid"), "{error}");
    }
}
