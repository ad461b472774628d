//! `health:`: how galera-lb checks its backends (TCP, a MySQL login, wsrep status, HTTP), how
//! often, and what it does on a change; and its validation. The check password may be written
//! here, or named by `password_env` / `password_file`: [`HealthConfig::resolve_password`] reads
//! it at start and on every reload, never while loading (see the `config` module doc).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::access::resolve_secret;
use super::{ConfigError, range};
use crate::core::secret::Secret;

/// How galera-lb checks its backends.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// No checks: every backend counts as usable; only connect failover protects clients.
    None,
    /// A TCP connect. Cheap, but the server counts a connection closed before login as an aborted
    /// connect, and blocks the host after `max_connect_errors` of them: prefer `handshake`.
    Tcp,
    /// A MySQL login as the check user, ended with COM_QUIT (no aborted connects).
    Handshake,
    /// A login plus the node's wsrep status: usable only when Galera says it can serve queries.
    #[default]
    Wsrep,
    /// An HTTP request to the backend's `check_port` (see `health.http`): usable when the answer
    /// has the expected status, as with Percona's clustercheck on port 9200.
    Http,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::None => "none",
            CheckKind::Tcp => "tcp",
            CheckKind::Handshake => "handshake",
            CheckKind::Wsrep => "wsrep",
            CheckKind::Http => "http",
        }
    }
}

/// What a backend's health is before its first check.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InitialState {
    /// Down until its first passing check (the first result counts at once).
    #[default]
    Down,
    /// Up until its first failing check.
    Up,
}

/// What to do with a node's open sessions when it goes down (or stops being the writer).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SessionAction {
    /// Leave them open: clients find out for themselves.
    #[default]
    None,
    /// Close them, so clients reconnect through galera-lb to a usable node.
    ShutdownSessions,
    /// Close each at its next point between transactions (no command in flight, no
    /// transaction open), and the rest after `health.drain_timeout`.
    CloseWhenIdle,
}

impl SessionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionAction::None => "none",
            SessionAction::ShutdownSessions => "shutdown_sessions",
            SessionAction::CloseWhenIdle => "close_when_idle",
        }
    }
}

/// How the instances of galera-lb settle each pool's writer.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WriterAgreement {
    /// Each instance elects on its own, from configuration and cluster state; the choice is not
    /// remembered across restarts.
    #[default]
    Local,
    /// The writer of each pool is kept in a table on the cluster (`agreement_schema`.`writer`),
    /// changed only by a compare-and-set that one instance wins; every instance follows it.
    Cluster,
}

impl WriterAgreement {
    pub fn as_str(self) -> &'static str {
        match self {
            WriterAgreement::Local => "local",
            WriterAgreement::Cluster => "cluster",
        }
    }
}

/// Health checks: how, how often, and what to do on a change.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub check: CheckKind,
    /// Time between checks of one backend (a little jitter is added), from 10ms to 1h.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long one check may take, from 10ms to 1h; longer counts as a failure.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive passing checks that bring a down backend up, from 1 to 1000.
    pub rise: u32,
    /// Consecutive failing checks that take an up backend down, from 1 to 1000.
    pub fall: u32,
    pub initial: InitialState,
    /// A Donor node serves clients if it does not reject queries (`wsrep_sst_donor_rejects_queries`).
    pub available_when_donor: bool,
    /// `wsrep` checks: a node still in an older Primary view than another node of its cluster has
    /// reported for this long (0s to 1h) is stale (it was evicted while frozen and does not know
    /// yet) and is left out. `null` turns the comparison off.
    #[serde(with = "humantime_serde")]
    pub stale_view_after: Option<Duration>,
    /// When a backend goes down: close its client sessions, or leave them.
    pub on_down: SessionAction,
    /// When the writer changes: close the sessions that writer listeners have on the old writer.
    pub on_writer_change: SessionAction,
    /// How long sessions that are to close between transactions (`close_when_idle`, `maint`,
    /// `wsrep_reject_queries`) may take to get there before they are closed anyway, from 0s
    /// to 1h. `pxc_maint_mode` uses the node's `pxc_maint_transition_period` when shorter.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Give the writer role back to the preferred node when it is usable again (default: the
    /// writer stays where it is while it is usable).
    pub failback: bool,
    /// `local` (each instance elects alone) or `cluster` (the writer is kept in a table on the
    /// cluster and agreed by every instance, across their restarts).
    pub writer_agreement: WriterAgreement,
    /// `writer_agreement: cluster`: the schema of the `writer` table (created when missing), a
    /// plain identifier of 1 to 64 letters, digits, `_` or `$`.
    pub agreement_schema: String,
    /// The user the checks log in as.
    pub user: String,
    /// The password, written in the file (prefer `password_env` or `password_file`).
    pub password: Option<Secret>,
    /// The name of an environment variable that holds the password.
    pub password_env: Option<String>,
    /// A file whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// The request of `check: http`.
    pub http: HttpCheckConfig,
    /// Lag-aware readers (`check: wsrep`): when a node counts as lagging, and when it is back.
    pub lag: LagConfig,
}

/// When a node counts as lagging behind its cluster. A lagging node keeps its open sessions and
/// stays usable; it only gets no new reader sessions while another reader is not lagging, and
/// the writer never moves for lag. Off unless a limit is set.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LagConfig {
    /// A node whose `wsrep_local_recv_queue` (write-sets received, not yet applied) is above
    /// this, from 1 to 1,000,000,000, for `fall` checks in a row is lagging.
    pub max_recv_queue: Option<u64>,
    /// A lagging node is back once its receive queue is at most this for `rise` checks in a
    /// row; below `max_recv_queue`. Default: a quarter of `max_recv_queue`.
    pub resume_recv_queue: Option<u64>,
    /// A node whose `wsrep_last_committed` trails the most advanced node of its cluster (of
    /// those galera-lb checks) by more than this many write-sets, from 1 to 1,000,000,000, for
    /// `fall` checks in a row is lagging.
    pub max_seqno_lag: Option<u64>,
    /// A lagging node is back once it trails by at most this many write-sets (and its queue is
    /// at most `resume_recv_queue`) for `rise` checks in a row. Default: a quarter of
    /// `max_seqno_lag`.
    pub resume_seqno_lag: Option<u64>,
    /// Checks in a row over a limit that make a node lagging, from 1 to 1000 (default 2).
    pub fall: Option<u32>,
    /// Checks in a row within the resume limits that make it a reader again, from 1 to 1000
    /// (default 3).
    pub rise: Option<u32>,
}

/// The largest lag limit.
const MAX_LAG: u64 = 1_000_000_000;

impl LagConfig {
    /// Whether any lag limit is set.
    pub fn enabled(&self) -> bool {
        self.max_recv_queue.is_some() || self.max_seqno_lag.is_some()
    }

    /// The receive queue at or below which a lagging node is back.
    pub fn resume_recv_queue(&self) -> Option<u64> {
        self.max_recv_queue
            .map(|max| self.resume_recv_queue.unwrap_or(max / 4))
    }

    /// The seqno gap at or below which a lagging node is back.
    pub fn resume_seqno_lag(&self) -> Option<u64> {
        self.max_seqno_lag
            .map(|max| self.resume_seqno_lag.unwrap_or(max / 4))
    }

    pub fn fall(&self) -> u32 {
        self.fall.unwrap_or(2)
    }

    pub fn rise(&self) -> u32 {
        self.rise.unwrap_or(3)
    }

    /// `health.lag.*`: limits within range, each resume limit below its limit (and set only
    /// with it), and the `wsrep` check, which is where the figures come from.
    fn validate(&self, check: CheckKind, file: &str) -> Result<(), ConfigError> {
        let err = |field: &str, reason: String| ConfigError::invalid(file, field, reason);
        let pairs = [
            (
                "max_recv_queue",
                self.max_recv_queue,
                "resume_recv_queue",
                self.resume_recv_queue,
            ),
            (
                "max_seqno_lag",
                self.max_seqno_lag,
                "resume_seqno_lag",
                self.resume_seqno_lag,
            ),
        ];
        for (max_field, max, resume_field, resume) in pairs {
            if let Some(max) = max {
                range::count(
                    file,
                    &format!("health.lag.{max_field}"),
                    max,
                    1..=MAX_LAG,
                    ", or null for no limit",
                )?;
            }
            match (max, resume) {
                (None, Some(_)) => {
                    return Err(err(
                        &format!("health.lag.{resume_field}"),
                        format!("needs health.lag.{max_field}, the limit it resumes below"),
                    ));
                }
                (Some(max), Some(resume)) if resume >= max => {
                    return Err(err(
                        &format!("health.lag.{resume_field}"),
                        format!(
                            "must be below health.lag.{max_field} ({max}), so that a node does \
                             not flap at the limit, not {resume}"
                        ),
                    ));
                }
                _ => {}
            }
        }
        if let Some(fall) = self.fall {
            range::count(file, "health.lag.fall", fall, 1..=1000, "")?;
        }
        if let Some(rise) = self.rise {
            range::count(file, "health.lag.rise", rise, 1..=1000, "")?;
        }
        if self.enabled() && check != CheckKind::Wsrep {
            return Err(err(
                "health.lag",
                format!(
                    "needs health.check: wsrep (the lag figures come from the wsrep status), \
                     not {}",
                    check.as_str()
                ),
            ));
        }
        Ok(())
    }
}

/// The request `health.check: http` sends (HTTP/1.0, one per check) and the answer it wants.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpCheckConfig {
    /// The request method; HAProxy's `option httpchk` sends OPTIONS by default.
    pub method: String,
    /// The request path (it starts with `/`).
    pub path: String,
    /// The status that means usable; any other (or no answer) is a failed check.
    pub expect_status: u16,
}

impl Default for HttpCheckConfig {
    fn default() -> Self {
        HttpCheckConfig {
            method: "OPTIONS".to_string(),
            path: "/".to_string(),
            expect_status: 200,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            check: CheckKind::Wsrep,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
            initial: InitialState::Down,
            available_when_donor: false,
            stale_view_after: Some(Duration::from_secs(1)),
            on_down: SessionAction::None,
            on_writer_change: SessionAction::None,
            drain_timeout: Duration::from_secs(30),
            failback: false,
            writer_agreement: WriterAgreement::Local,
            agreement_schema: "galera_lb".to_string(),
            user: "monitor".to_string(),
            password: None,
            password_env: None,
            password_file: None,
            http: HttpCheckConfig::default(),
            lag: LagConfig::default(),
        }
    }
}

impl HealthConfig {
    /// The check password from whichever source is set (at most one is, see `validate`); empty
    /// when none is. The error names the file and `health.password`, never the password.
    pub(crate) fn resolve_password(&self, file: &str) -> Result<Secret, ConfigError> {
        resolve_secret(
            self.password.as_ref(),
            self.password_env.as_deref(),
            self.password_file.as_deref(),
        )
        .map(Option::unwrap_or_default)
        .map_err(|reason| ConfigError::invalid(file, "health.password", reason))
    }
}

impl HealthConfig {
    /// `health.*`: durations and counts within their ranges (see the fields), at most one
    /// password source, an HTTP request that can be sent.
    pub(super) fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |field: &str, reason: String| ConfigError::invalid(file, field, reason);
        let ms = Duration::from_millis;
        let hour = Duration::from_secs(3600);
        range::duration(
            file,
            "health.interval",
            self.interval,
            ms(10)..=hour,
            " (e.g. 1s)",
        )?;
        range::duration(
            file,
            "health.timeout",
            self.timeout,
            ms(10)..=hour,
            " (e.g. 500ms)",
        )?;
        range::duration(
            file,
            "health.drain_timeout",
            self.drain_timeout,
            Duration::ZERO..=hour,
            " (e.g. 30s)",
        )?;
        range::count(file, "health.rise", self.rise, 1..=1000, "")?;
        range::count(file, "health.fall", self.fall, 1..=1000, "")?;
        if let Some(after) = self.stale_view_after {
            range::duration(
                file,
                "health.stale_view_after",
                after,
                Duration::ZERO..=hour,
                ", or null to turn the comparison off",
            )?;
        }
        let sources = [
            self.password.is_some(),
            self.password_env.is_some(),
            self.password_file.is_some(),
        ];
        if sources.iter().filter(|set| **set).count() > 1 {
            return Err(err(
                "health.password",
                "set only one of password, password_env and password_file".into(),
            ));
        }
        self.lag.validate(self.check, file)?;
        self.validate_agreement(file)?;
        self.http.validate(file)
    }

    /// `health.writer_agreement` needs `check: wsrep` (only a node of the Primary component may
    /// be asked); `health.agreement_schema` is a plain identifier (it is written into SQL).
    fn validate_agreement(&self, file: &str) -> Result<(), ConfigError> {
        let err = |field: &str, reason: String| ConfigError::invalid(file, field, reason);
        let schema = &self.agreement_schema;
        if schema.is_empty()
            || schema.len() > 64
            || !schema
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
        {
            return Err(err(
                "health.agreement_schema",
                format!(
                    "'{schema}' is not a plain schema name (1 to 64 letters, digits, _ or $, \
                     e.g. galera_lb)"
                ),
            ));
        }
        if self.writer_agreement == WriterAgreement::Cluster && self.check != CheckKind::Wsrep {
            return Err(err(
                "health.writer_agreement",
                format!(
                    "cluster needs health.check: wsrep (the table is read and written only on \
                     nodes of the Primary component), not {}",
                    self.check.as_str()
                ),
            ));
        }
        Ok(())
    }
}

impl HttpCheckConfig {
    /// `health.http.*`: a method token, a path from `/`, a status from 100 to 599.
    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |field: &str, reason: String| ConfigError::invalid(file, field, reason);
        if self.method.is_empty() || !self.method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(err(
                "health.http.method",
                format!(
                    "'{}' is not an HTTP method (e.g. OPTIONS, GET, HEAD)",
                    self.method
                ),
            ));
        }
        if !self.path.starts_with('/') || !self.path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err(
                "health.http.path",
                format!(
                    "'{}' must start with / and have no spaces or control characters",
                    self.path
                ),
            ));
        }
        if !(100..=599).contains(&self.expect_status) {
            return Err(err(
                "health.http.expect_status",
                format!("{} is not an HTTP status (100 to 599)", self.expect_status),
            ));
        }
        Ok(())
    }
}
