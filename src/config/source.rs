//! Where the running configuration comes from, and how a reload reads it again.
//!
//! Usually a YAML file (`--config`); with `--haproxy-config` an HAProxy configuration that is
//! translated in memory (see `crate::config::haproxy`) at start and at every reload, so that an HAProxy
//! user's file stays the one they edit. Either way a reload gets a validated [`Config`], or a
//! message naming the file and the reason, and the running configuration stays.
//!
//! The file is read on a thread of its own with a timeout, only if it is a regular file of a
//! sane size (`crate::core::bounded_read`): a FIFO, `/dev/zero` or a hung network mount cannot
//! freeze the proxy at a reload, or start-up and `check` for longer than the timeout.

use std::path::PathBuf;

use crate::config::Config;
use crate::config::haproxy;
use crate::core::bounded_read::{FileReader, READ_TIMEOUT};

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

    /// Reads and validates the configuration, on this thread: the configuration and an
    /// HAProxy file's translation warnings.
    pub(crate) fn read(&self) -> Result<(Config, Vec<String>), String> {
        match self {
            ConfigSource::Yaml(path) => Config::load(path)
                .map(|config| (config, Vec::new()))
                .map_err(|e| e.to_string()),
            ConfigSource::Haproxy { path, options } => haproxy::load(
                path,
                &haproxy::Options {
                    keep_checks: options.keep_checks,
                },
            ),
        }
    }

    /// [`ConfigSource::read`] on a reader thread, waited for on this one with a timeout: for
    /// start-up and `check`, before the runtime exists.
    pub(crate) fn read_with_timeout(&self) -> Result<(Config, Vec<String>), String> {
        let source = self.clone();
        FileReader::default()
            .start(
                &self.path().display().to_string(),
                READ_TIMEOUT,
                move || source.read(),
            )?
            .wait_blocking()
    }

    /// Reads and validates the configuration for a reload, on `reader`'s thread so that a file
    /// that blocks cannot hold up the runtime; the health checks' password is read there too,
    /// so that the reload does not block on it afterwards. An HAProxy file's translation
    /// warnings are logged.
    pub(crate) async fn reload(&self, reader: &FileReader) -> Result<Config, String> {
        let source = self.clone();
        let file = self.path().display().to_string();
        let (config, warnings) = reader
            .start(&file.clone(), READ_TIMEOUT, move || {
                let (config, warnings) = source.read()?;
                config
                    .health
                    .resolve_password(&file)
                    .map_err(|e| e.to_string())?;
                Ok((config, warnings))
            })?
            .wait()
            .await?;
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        Ok(config)
    }
}
