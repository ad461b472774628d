//! HAProxy configurations: read one, and turn it into a galera-lb configuration.
//!
//! Most Galera clusters sit behind HAProxy today (`listen` in `mode tcp`, `option mysql-check`
//! or `option httpchk` against Percona's clustercheck, `backup` servers for one writer). This is
//! what lets those users switch with the file they already have:
//!
//! - [`parse`]: the syntax — sections and words, never a panic whatever the input;
//! - [`translate`]: the meaning — each directive mapped onto galera-lb's YAML, with a comment
//!   naming `FILE:LINE`, a warning for what has no equivalent, an error for what a TCP (layer 4)
//!   proxy cannot serve (`mode http` beyond a stats page, ACL routing).
//!
//! `galera-lb import-haproxy FILE` prints the translation; `galera-lb --haproxy-config FILE`
//! runs from it, re-translating the file on every reload (see `crate::config::source`).

pub(crate) mod parse;
pub mod translate;

pub use translate::{Options, translate};

use std::path::Path;

use crate::config::Config;
use crate::core::bounded_read::MAX_CONFIG_BYTES;

/// Reads `path`, translates it and validates the result: the configuration galera-lb runs, and
/// the warnings to show. The error is a complete message (naming the file and line, or the
/// translated field).
pub(crate) fn load(path: &Path, options: &Options) -> Result<(Config, Vec<String>), String> {
    let file = path.display().to_string();
    let text = crate::core::bounded_read::read_regular(path, MAX_CONFIG_BYTES)
        .map_err(|e| format!("{file}: cannot read: {e}"))?;
    let text = String::from_utf8_lossy(&text);
    let translation = translate(&text, &file, options).map_err(|e| e.to_string())?;
    let config = Config::from_yaml(&translation.yaml, &format!("{file} (translated)"))
        .map_err(|e| e.to_string())?;
    Ok((config, translation.warnings))
}
