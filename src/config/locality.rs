//! `locality:`: where this galera-lb instance runs in the cluster's network, as Galera's own
//! segments say it (`gmcast.segment`), and whether the writer should be in that segment too;
//! and its validation.

use serde::Deserialize;

use super::{CheckKind, ConfigError};

/// Where this instance runs, in Galera's terms.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LocalityConfig {
    /// The Galera segment (`gmcast.segment`, 0 to 255) this instance runs in: readers prefer
    /// nodes of this segment and use the others only when it has no usable node. The nodes'
    /// segments are read by the `wsrep` check. Default: none (no preference).
    pub segment: Option<u8>,
    /// Also prefer a node of `segment` for the writer role. Every instance with the same
    /// setting elects the same writer; instances of different segments with this setting may
    /// elect different writers, so set it only where writes stay local by design.
    pub writer_prefers_segment: bool,
}

impl LocalityConfig {
    /// `locality.*`: a segment needs the `wsrep` check (it is how the nodes' segments are
    /// known), and `writer_prefers_segment` a segment.
    pub(super) fn validate(&self, check: CheckKind, file: &str) -> Result<(), ConfigError> {
        if self.writer_prefers_segment && self.segment.is_none() {
            return Err(ConfigError::invalid(
                file,
                "locality.writer_prefers_segment",
                "needs locality.segment: the segment the writer should be in",
            ));
        }
        if self.segment.is_some() && check != CheckKind::Wsrep {
            return Err(ConfigError::invalid(
                file,
                "locality.segment",
                format!(
                    "needs health.check: wsrep (the nodes' segments are read from their \
                     wsrep_provider_options), not {}",
                    check.as_str()
                ),
            ));
        }
        Ok(())
    }
}
