//! The `wsrep` check: one round trip for every status and variable it needs, and the rules that
//! turn them into "usable or not, and why".
//!
//! The rules (DESIGN §5): a node is usable when the query succeeds and it is Primary, ready,
//! Synced (or a Donor when `available_when_donor` is set and the donor does not reject queries),
//! not desynced by an operator, not rejecting queries, and not in `pxc_maint_mode` (absent on
//! MariaDB: treated as DISABLED). `read_only=ON` leaves it usable but keeps it out of the writer
//! role.

use std::collections::HashMap;
use std::time::Duration;

/// The statements of the check, sent as one multi-statement query (one round trip). `SHOW`
/// works on a node that is not ready, where a `SELECT` from tables would fail with 1047.
pub(crate) const QUERY: &str = "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state', \
     'wsrep_cluster_status', 'wsrep_ready', 'wsrep_connected', 'wsrep_local_index', \
     'wsrep_incoming_addresses', 'wsrep_cluster_size', 'wsrep_local_recv_queue', \
     'wsrep_local_state_comment', 'wsrep_cluster_conf_id', 'wsrep_cluster_state_uuid', \
     'wsrep_last_committed', 'wsrep_flow_control_paused'); \
     SHOW GLOBAL VARIABLES WHERE Variable_name IN ('wsrep_desync', 'wsrep_reject_queries', \
     'wsrep_sst_donor_rejects_queries', 'read_only', 'pxc_maint_mode', 'wsrep_on', \
     'wsrep_provider_options', 'pxc_maint_transition_period')";

/// What the check learned about a node, whatever the verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WsrepStatus {
    /// 1 Joining, 2 Donor/Desynced, 3 Joined, 4 Synced; 0 when not connected.
    pub local_state: Option<u8>,
    pub state_comment: String,
    pub cluster_status: String,
    pub ready: bool,
    pub connected: bool,
    pub local_index: Option<u32>,
    pub cluster_size: Option<u32>,
    /// `wsrep_local_recv_queue`: write-sets received and not yet applied.
    pub recv_queue: Option<u64>,
    /// `wsrep_last_committed`: the seqno of the last write-set this node committed.
    pub last_committed: Option<u64>,
    /// `wsrep_flow_control_paused` in millionths: the share of time replication was paused by
    /// flow control (since the last `FLUSH STATUS`, or the last status query on Galera 4).
    pub flow_control_paused_ppm: Option<u32>,
    /// The node's `gmcast.segment` (from `wsrep_provider_options`; 0 when the options do not
    /// set it).
    pub segment: Option<u8>,
    /// `wsrep_cluster_conf_id`: raised by every view change of the Primary component.
    pub conf_id: Option<u64>,
    /// `wsrep_cluster_state_uuid`: the cluster's history, the same on every node of it.
    pub cluster_uuid: String,
    /// Client addresses of every node in the view, `AUTO`/empty/`undefined` entries removed.
    pub incoming_addresses: Vec<String>,
    pub desync: bool,
    pub reject_queries: String,
    pub donor_rejects_queries: bool,
    pub read_only: bool,
    pub maint_mode: String,
    /// `pxc_maint_transition_period` in seconds (Percona XtraDB Cluster only).
    pub maint_transition_period: Option<u64>,
    pub wsrep_on: bool,
}

/// A node being taken out on purpose (see [`WsrepStatus::leaving`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leaving {
    /// How long its sessions have to move: `pxc_maint_transition_period`, when the node says.
    pub within: Option<Duration>,
}

/// The verdict on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub usable: bool,
    /// Usable and may hold the writer role (not read_only).
    pub writable: bool,
    /// A short reason: "synced", "non-Primary", "donor", "read_only", ...
    pub reason: String,
}

impl WsrepStatus {
    /// Builds the status from `(Variable_name, Value)` rows of both result sets.
    pub fn from_rows(rows: impl IntoIterator<Item = (String, String)>) -> WsrepStatus {
        let values: HashMap<String, String> = rows
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        let text = |name: &str| values.get(name).cloned().unwrap_or_default();
        let on = |name: &str| {
            values
                .get(name)
                .is_some_and(|v| v.eq_ignore_ascii_case("ON") || v == "1")
        };
        fn number<T: std::str::FromStr>(values: &HashMap<String, String>, name: &str) -> Option<T> {
            values.get(name).and_then(|v| v.trim().parse().ok())
        }
        WsrepStatus {
            local_state: number(&values, "wsrep_local_state").map(|n: u32| n.min(255) as u8),
            state_comment: text("wsrep_local_state_comment"),
            cluster_status: text("wsrep_cluster_status"),
            ready: on("wsrep_ready"),
            connected: on("wsrep_connected"),
            local_index: number(&values, "wsrep_local_index"),
            cluster_size: number(&values, "wsrep_cluster_size"),
            recv_queue: number(&values, "wsrep_local_recv_queue"),
            last_committed: number(&values, "wsrep_last_committed"),
            flow_control_paused_ppm: number(&values, "wsrep_flow_control_paused")
                .filter(|share: &f64| share.is_finite())
                .map(|share| (share.clamp(0.0, 1.0) * 1e6).round() as u32),
            segment: values
                .get("wsrep_provider_options")
                .map(|options| provider_segment(options)),
            conf_id: number(&values, "wsrep_cluster_conf_id"),
            cluster_uuid: text("wsrep_cluster_state_uuid"),
            incoming_addresses: parse_incoming_addresses(&text("wsrep_incoming_addresses")),
            desync: on("wsrep_desync"),
            reject_queries: values
                .get("wsrep_reject_queries")
                .cloned()
                .unwrap_or_else(|| "NONE".to_string()),
            donor_rejects_queries: on("wsrep_sst_donor_rejects_queries"),
            read_only: on("read_only"),
            maint_mode: values
                .get("pxc_maint_mode")
                .cloned()
                .unwrap_or_else(|| "DISABLED".to_string()),
            maint_transition_period: number(&values, "pxc_maint_transition_period"),
            // Absent on a server without wsrep support at all: the status checks then fail.
            wsrep_on: values.get("wsrep_on").is_none_or(|_| on("wsrep_on")),
        }
    }

    /// Whether an operator is taking the node out on purpose: `pxc_maint_mode` other than
    /// DISABLED, or `wsrep_reject_queries` other than NONE. Such a node gets no new sessions
    /// from the first check that sees it, and its sessions close between transactions.
    pub(crate) fn leaving(&self) -> Option<Leaving> {
        let set = |value: &str, off: &str| !value.is_empty() && !value.eq_ignore_ascii_case(off);
        if set(&self.maint_mode, "DISABLED") {
            return Some(Leaving {
                within: self.maint_transition_period.map(Duration::from_secs),
            });
        }
        set(&self.reject_queries, "NONE").then_some(Leaving { within: None })
    }

    /// Applies the rules; `available_when_donor` lets a Donor that does not reject queries serve.
    pub fn verdict(&self, available_when_donor: bool) -> Verdict {
        let down = |reason: &str| Verdict {
            usable: false,
            writable: false,
            reason: reason.to_string(),
        };
        if !self.wsrep_on {
            return down("wsrep_off");
        }
        if !self.connected && self.local_state.unwrap_or(0) == 0 {
            return down("disconnected");
        }
        if !self.cluster_status.eq_ignore_ascii_case("Primary") {
            return down("non-Primary");
        }
        if !self.ready {
            return down("not_ready");
        }
        if !self.maint_mode.eq_ignore_ascii_case("DISABLED") {
            return down(&format!(
                "pxc_maint_mode={}",
                self.maint_mode.to_ascii_uppercase()
            ));
        }
        if !self.reject_queries.eq_ignore_ascii_case("NONE") {
            return down("reject_queries");
        }
        match self.local_state {
            Some(4) => {}
            Some(2) if self.desync => return down("desynced"),
            Some(2) if !available_when_donor => return down("donor"),
            Some(2) if self.donor_rejects_queries => return down("donor_rejects_queries"),
            Some(2) => {}
            Some(1) => return down("joining"),
            Some(3) => return down("joined"),
            Some(n) => return down(&format!("state_{n}")),
            None => return down("no_wsrep_status"),
        }
        if self.desync {
            return down("desynced");
        }
        let (writable, reason) = match (self.read_only, self.local_state) {
            (true, _) => (false, "read_only"),
            (false, Some(2)) => (true, "donor"),
            (false, _) => (true, "synced"),
        };
        Verdict {
            usable: true,
            writable,
            reason: reason.to_string(),
        }
    }
}

/// `gmcast.segment` in `wsrep_provider_options` (`...; gmcast.segment = 1; ...`): 0, Galera's
/// default, when it is not there or not a number from 0 to 255.
fn provider_segment(options: &str) -> u8 {
    options
        .split(';')
        .filter_map(|option| option.split_once('='))
        .find(|(name, _)| name.trim() == "gmcast.segment")
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Splits `wsrep_incoming_addresses`, skipping empty, `AUTO` and `undefined` entries.
pub fn parse_incoming_addresses(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|a| {
            !a.is_empty()
                && !a.eq_ignore_ascii_case("AUTO")
                && !a.eq_ignore_ascii_case("undefined")
                && !a.starts_with("AUTO:")
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced() -> Vec<(String, String)> {
        [
            ("wsrep_local_state", "4"),
            ("wsrep_local_state_comment", "Synced"),
            ("wsrep_cluster_status", "Primary"),
            ("wsrep_ready", "ON"),
            ("wsrep_connected", "ON"),
            ("wsrep_local_index", "1"),
            ("wsrep_cluster_size", "3"),
            ("wsrep_cluster_conf_id", "12"),
            (
                "wsrep_cluster_state_uuid",
                "9c1b5f6e-2f1a-11ef-8a3e-3b1f0c7d2a10",
            ),
            (
                "wsrep_incoming_addresses",
                "127.0.0.1:3316,AUTO,,127.0.0.1:3336,undefined",
            ),
            ("wsrep_desync", "OFF"),
            ("wsrep_reject_queries", "NONE"),
            ("wsrep_sst_donor_rejects_queries", "OFF"),
            ("read_only", "OFF"),
            ("wsrep_on", "ON"),
        ]
        .iter()
        .map(|(k, v)| (k.to_uppercase(), v.to_string()))
        .collect()
    }

    fn with(changes: &[(&str, &str)]) -> WsrepStatus {
        let mut rows = synced();
        for (name, value) in changes {
            rows.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            rows.push((name.to_string(), value.to_string()));
        }
        WsrepStatus::from_rows(rows)
    }

    fn reason(changes: &[(&str, &str)], donor_ok: bool) -> (bool, bool, String) {
        let v = with(changes).verdict(donor_ok);
        (v.usable, v.writable, v.reason)
    }

    #[test]
    fn a_synced_primary_node_is_usable_and_writable() {
        let status = with(&[]);
        assert_eq!(status.local_index, Some(1));
        assert_eq!(status.conf_id, Some(12));
        assert_eq!(status.cluster_uuid, "9c1b5f6e-2f1a-11ef-8a3e-3b1f0c7d2a10");
        // A non-Primary node's configuration id is -1: no view to compare.
        assert_eq!(with(&[("wsrep_cluster_conf_id", "-1")]).conf_id, None);
        assert_eq!(
            status.incoming_addresses,
            ["127.0.0.1:3316", "127.0.0.1:3336"]
        );
        assert_eq!(
            status.maint_mode, "DISABLED",
            "absent on MariaDB means DISABLED"
        );
        assert_eq!(reason(&[], false), (true, true, "synced".into()));
    }

    #[test]
    fn every_rule_has_its_reason() {
        type Case<'a> = (&'a [(&'a str, &'a str)], bool, (bool, bool, &'a str));
        let table: &[Case] = &[
            (
                &[("wsrep_cluster_status", "non-Primary")],
                false,
                (false, false, "non-Primary"),
            ),
            (
                &[("wsrep_cluster_status", "Disconnected")],
                false,
                (false, false, "non-Primary"),
            ),
            (
                &[("wsrep_ready", "OFF")],
                false,
                (false, false, "not_ready"),
            ),
            (
                &[("wsrep_local_state", "2")],
                false,
                (false, false, "donor"),
            ),
            (&[("wsrep_local_state", "2")], true, (true, true, "donor")),
            (
                &[
                    ("wsrep_local_state", "2"),
                    ("wsrep_sst_donor_rejects_queries", "ON"),
                ],
                true,
                (false, false, "donor_rejects_queries"),
            ),
            (
                &[("wsrep_local_state", "2"), ("wsrep_desync", "ON")],
                true,
                (false, false, "desynced"),
            ),
            (&[("wsrep_desync", "ON")], false, (false, false, "desynced")),
            (
                &[("wsrep_local_state", "1")],
                false,
                (false, false, "joining"),
            ),
            (
                &[("wsrep_local_state", "3")],
                false,
                (false, false, "joined"),
            ),
            (
                &[("wsrep_reject_queries", "ALL")],
                false,
                (false, false, "reject_queries"),
            ),
            (
                &[("wsrep_reject_queries", "ALL_KILL")],
                false,
                (false, false, "reject_queries"),
            ),
            (
                &[("pxc_maint_mode", "MAINTENANCE")],
                false,
                (false, false, "pxc_maint_mode=MAINTENANCE"),
            ),
            (
                &[("pxc_maint_mode", "DISABLED")],
                false,
                (true, true, "synced"),
            ),
            (&[("read_only", "ON")], false, (true, false, "read_only")),
            (&[("wsrep_on", "OFF")], false, (false, false, "wsrep_off")),
            (
                &[("wsrep_connected", "OFF"), ("wsrep_local_state", "0")],
                false,
                (false, false, "disconnected"),
            ),
        ];
        for (changes, donor_ok, (usable, writable, why)) in table {
            assert_eq!(
                reason(changes, *donor_ok),
                (*usable, *writable, why.to_string()),
                "{changes:?}"
            );
        }
    }

    #[test]
    fn lag_figures_and_the_segment_are_read() {
        let status = with(&[
            ("wsrep_local_recv_queue", "240"),
            ("wsrep_last_committed", "91234"),
            ("wsrep_flow_control_paused", "0.125"),
            (
                "wsrep_provider_options",
                "base_dir = /var/lib/mysql/; gcs.fc_limit = 16; gmcast.segment = 2; \
                 gmcast.time_wait = PT5S",
            ),
        ]);
        assert_eq!(status.recv_queue, Some(240));
        assert_eq!(status.last_committed, Some(91234));
        assert_eq!(status.flow_control_paused_ppm, Some(125_000));
        assert_eq!(status.segment, Some(2));
        let defaults = with(&[("wsrep_provider_options", "gcs.fc_limit = 16")]);
        assert_eq!(defaults.segment, Some(0), "Galera's default segment");
        let unread = with(&[]);
        assert_eq!((unread.segment, unread.last_committed), (None, None));
        let odd = with(&[("wsrep_flow_control_paused", "nan")]);
        assert_eq!(odd.flow_control_paused_ppm, None);
    }

    #[test]
    fn a_server_without_wsrep_is_not_usable() {
        let status = WsrepStatus::from_rows(vec![("read_only".to_string(), "OFF".to_string())]);
        assert!(!status.verdict(false).usable);
    }
}
