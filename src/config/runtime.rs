//! `runtime:` (the tokio runtime) and `log:` (the filter and the format), and their validation.

use serde::Deserialize;

use super::{ConfigError, range};

/// The most tokio worker threads `runtime.worker_threads` may ask for.
const MAX_WORKER_THREADS: usize = 1024;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Tokio worker threads, from 1 to 1024 (each is an OS thread with its own stack); default:
    /// the number of CPU cores.
    pub worker_threads: Option<usize>,
    /// A file where admin states (drain, maint) and control-port weights are kept across
    /// restarts, as HAProxy's `server-state-file` (see `crate::state::saved`); none by default.
    pub state_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `galera_lb=debug`; `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

/// The tracing filter for `log.level` (or `RUST_LOG`): targets and levels, such as
/// `info,galera_lb=debug`. Span and field filters (`target[span{field=value}]=level`) are
/// refused: the config fuzzer found that their parsing can take seconds of CPU (field values are
/// compiled into automata) and trips an ordering invariant inside tracing-subscriber 0.3.23
/// (a debug assertion), and choosing log levels never needs them.
pub(crate) fn log_filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    if let Some(c) = level
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_:,=-.[]{} \t".contains(*c)))
    {
        // tracing-subscriber 0.3.23 panics on some non-ASCII directives (it slices inside a
        // character); targets and levels are ASCII.
        return Err(format!(
            "{c:?} cannot appear in a filter: use targets and levels, such as \
             `info,galera_lb=debug`"
        ));
    }
    if level.contains(['[', ']', '{', '}']) {
        return Err(
            "span and field filters ([span{field=value}]) are not supported; use targets and \
             levels, such as `info,galera_lb=debug`"
                .to_string(),
        );
    }
    tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(level)
        .map_err(|e| e.to_string())
}

impl RuntimeConfig {
    /// `runtime.worker_threads`, when given, is from 1 to 1024.
    pub(super) fn validate(&self, file: &str) -> Result<(), ConfigError> {
        match self.worker_threads {
            Some(threads) => range::count(
                file,
                "runtime.worker_threads",
                threads,
                1..=MAX_WORKER_THREADS,
                " (or left out to use one per CPU core)",
            ),
            None => Ok(()),
        }
    }
}

impl LogConfig {
    /// `log.level` is a filter [`log_filter`] accepts.
    pub(super) fn validate(&self, file: &str) -> Result<(), ConfigError> {
        log_filter(&self.level).map_err(|e| {
            ConfigError::invalid(file, "log.level", format!("not a valid filter: {e}"))
        })?;
        Ok(())
    }
}
