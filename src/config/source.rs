//! Where the running configuration comes from, and how a reload reads it again.
//!
//! Usually a YAML file (`--config`); with `--haproxy-config` an HAProxy configuration that is
//! translated in memory (see `crate::config::haproxy`) at start and at every reload, so that an HAProxy
//! user's file stays the one they edit. Either way a reload gets a validated [`Config`], or a
//! message naming the file and the reason, and the running configuration stays.

use std::path::PathBuf;

use crate::config::Config;
use crate::config::haproxy;

/// A configuration file galera-lb can (re-)read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// galera-lb's YAML.
    Yaml(PathBuf),
    /// An HAProxy configuration, translated on every read.
    Haproxy {
        path: PathBuf,
        options: HaproxyOptions,
    },
}

/// The translation options of an HAProxy source (see `haproxy::Options`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HaproxyOptions {
    pub keep_checks: bool,
}

impl ConfigSource {
    /// The file, for messages.
    pub(crate) fn path(&self) -> &std::path::Path {
        match self {
            ConfigSource::Yaml(path) | ConfigSource::Haproxy { path, .. } => path,
        }
    }

    /// Reads and validates the configuration; an HAProxy file's translation warnings are
    /// logged.
    pub(crate) fn load(&self) -> Result<Config, String> {
        match self {
            ConfigSource::Yaml(path) => Config::load(path).map_err(|e| e.to_string()),
            ConfigSource::Haproxy { path, options } => {
                let (config, warnings) = haproxy::load(
                    path,
                    &haproxy::Options {
                        keep_checks: options.keep_checks,
                    },
                )?;
                for warning in &warnings {
                    tracing::warn!("{warning}");
                }
                Ok(config)
            }
        }
    }
}
