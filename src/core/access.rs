//! Who may use the control and admin ports: an optional allowlist of client addresses, checked
//! when a connection is accepted, and an optional token, checked per request.
//!
//! Both ports bind to loopback by default, which is the first protection; the allowlist and the
//! token are for set-ups that open them further. The configuration side (fields, validation,
//! where the token comes from) is in `crate::config`; what each port does with a refusal is in
//! `crate::sources::control` and `crate::admin`. Refusals are counted in
//! `galera_lb_access_denied_total{port, reason}` (see [`Denied`]).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::core::secret::Secret;

/// An address block (`10.0.0.0/8`, `fd00::/8`) or one address (`10.1.2.3`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `address` is in this block. An IPv4 client seen on a dual-stack IPv6 socket
    /// (`::ffff:10.1.2.3`) counts as its IPv4 address.
    pub(crate) fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = mask_v4(self.prefix);
                u32::from(address) & mask == u32::from(network)
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = mask_v6(self.prefix);
                u128::from(address) & mask == u128::from(network)
            }
            _ => false,
        }
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    /// Parses `ADDRESS` or `ADDRESS/PREFIX`; the reason names what is wrong.
    fn from_str(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| {
            format!(
                "'{text}' is not an IPv4 or IPv6 address or block \
                 (e.g. 10.1.2.3, 10.0.0.0/8, ::1 or fd00::/8)"
            )
        })?;
        let max: u8 = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|n| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && *n <= max)
                .ok_or_else(|| format!("'{text}': the prefix length must be 0 to {max}"))?,
        };
        let masked = match network {
            IpAddr::V4(a) => IpAddr::from((u32::from(a) & mask_v4(prefix)).to_be_bytes()),
            IpAddr::V6(a) => IpAddr::from((u128::from(a) & mask_v6(prefix)).to_be_bytes()),
        };
        if masked != network {
            // 10.1.2.3/8 is most likely a typo for one of two things: say both.
            return Err(format!(
                "'{text}' has address bits set beyond the /{prefix}: write {masked}/{prefix} \
                 for the block, or {network} for the one address"
            ));
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The client addresses a port accepts; empty means every client that can reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Cidr>);

impl AllowList {
    pub(crate) fn new(entries: Vec<Cidr>) -> AllowList {
        AllowList(entries)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many addresses or blocks it lists.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether a client at `address` may connect.
    pub(crate) fn allows(&self, address: IpAddr) -> bool {
        self.0.is_empty() || self.0.iter().any(|block| block.contains(address))
    }
}

/// One port's access rules, resolved at start.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Needed for state-changing control requests, and for every admin endpoint but `/live` and
    /// `/ready`; `None`: no token is asked for.
    pub token: Option<Secret>,
    pub allow: AllowList,
}

impl Access {
    /// Whether `given` is the token (always true when no token is configured), in time that
    /// depends only on `given`.
    pub(crate) fn token_matches(&self, given: &[u8]) -> bool {
        match &self.token {
            None => true,
            Some(token) => token.matches(given),
        }
    }
}

/// Why a client was refused, as the `reason` label of `galera_lb_access_denied_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// The client's address is not in the allowlist (the connection is closed at once).
    NotAllowed,
    /// A request that needs the token came without it.
    NoToken,
    /// A token was given, and it was not the right one.
    WrongToken,
}

impl Denied {
    pub(crate) const ALL: [Denied; 3] = [Denied::NotAllowed, Denied::NoToken, Denied::WrongToken];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Denied::NotAllowed => "not_allowed",
            Denied::NoToken => "no_token",
            Denied::WrongToken => "wrong_token",
        }
    }
}

/// Counts a refusal on `port` (`control` or `admin`).
pub(crate) fn count_denied(port: &str, reason: Denied) {
    crate::core::counters::metrics()
        .access_denied
        .with_label_values(&[port, reason.as_str()])
        .inc();
}

/// Makes `galera_lb_access_denied_total` show zeros for a port that is on, so that rates and
/// alerts work before the first refusal.
pub(crate) fn register_port(port: &str) {
    for reason in Denied::ALL {
        crate::core::counters::metrics()
            .access_denied
            .with_label_values(&[port, reason.as_str()]);
    }
}

/// A warning for a port bound beyond loopback with neither a token nor an allowlist: then
/// whoever can reach the address can use it. `section` is the configuration section (`control`
/// or `admin`), `can` says what such a client can do.
pub(crate) fn exposure_warning(
    section: &str,
    bind: SocketAddr,
    access: &Access,
    can: &str,
) -> Option<String> {
    if bind.ip().to_canonical().is_loopback() || access.token.is_some() || !access.allow.is_empty()
    {
        return None;
    }
    Some(format!(
        "the {section} port listens on {bind}, beyond this host, with no token and no allowlist: \
         anyone who can reach it can {can}. Set {section}.token_file (or token_env) and/or \
         {section}.allow, or bind it to 127.0.0.1"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_and_addresses_parse_and_match() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "127.0.0.0/8",
                &["127.0.0.1", "127.255.255.254", "::ffff:127.0.0.2"],
                &["128.0.0.1", "10.0.0.1", "::1"],
            ),
            ("10.1.2.3", &["10.1.2.3"], &["10.1.2.4", "::ffff:10.1.2.4"]),
            ("10.1.2.3/32", &["10.1.2.3"], &["10.1.2.2"]),
            ("0.0.0.0/0", &["1.2.3.4", "255.255.255.255"], &["::1"]),
            ("192.168.0.0/23", &["192.168.1.200"], &["192.168.2.1"]),
            ("::1/128", &["::1"], &["::2", "127.0.0.1"]),
            ("::1", &["::1"], &["::"]),
            ("fd00::/8", &["fd12:3456::1"], &["fe80::1"]),
            ("::/0", &["2001:db8::1", "::1"], &["10.0.0.1"]),
        ];
        for (text, inside, outside) in cases {
            let block: Cidr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            for address in *inside {
                assert!(block.contains(ip(address)), "{address} in {text}");
            }
            for address in *outside {
                assert!(!block.contains(ip(address)), "{address} not in {text}");
            }
        }
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        let cases = [
            ("localhost", "not an IPv4 or IPv6 address"),
            ("10.0.0", "not an IPv4 or IPv6 address"),
            ("[::1]", "not an IPv4 or IPv6 address"),
            ("10.0.0.0/33", "0 to 32"),
            ("::/129", "0 to 128"),
            ("10.0.0.0/", "0 to 32"),
            ("10.0.0.0/+8", "0 to 32"),
            ("10.0.0.0/8/8", "0 to 32"),
            ("10.1.2.3/8", "write 10.0.0.0/8 for the block, or 10.1.2.3"),
            ("fd00::1/8", "write fd00::/8"),
            ("", "not an IPv4"),
        ];
        for (text, reason) in cases {
            let error = text.parse::<Cidr>().expect_err(text);
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn an_empty_allowlist_allows_everyone_and_a_set_one_only_its_blocks() {
        assert!(AllowList::default().allows(ip("203.0.113.9")));
        let list = AllowList::new(vec![
            "127.0.0.1".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]);
        assert!(list.allows(ip("127.0.0.1")));
        assert!(list.allows(ip("10.200.0.1")));
        assert!(!list.allows(ip("127.0.0.2")));
        assert!(!list.allows(ip("::1")));
    }

    #[test]
    fn the_token_is_compared_whole() {
        let access = Access {
            token: Some(Secret::new("s3cret-token".into())),
            allow: AllowList::default(),
        };
        assert!(access.token_matches(b"s3cret-token"));
        for wrong in [
            "",
            "s3cret",
            "s3cret-token2",
            "s3cret-tokeN",
            "x3cret-token",
            "s3cret-tokens3cret-token",
        ] {
            assert!(!access.token_matches(wrong.as_bytes()), "{wrong}");
        }
        assert!(
            Access::default().token_matches(b"anything"),
            "no token configured"
        );
    }

    #[test]
    fn only_a_port_open_beyond_loopback_without_token_or_allowlist_is_warned_about() {
        let open = Access::default();
        let bind = |text: &str| text.parse::<SocketAddr>().unwrap();
        for quiet in [
            "127.0.0.1:8011",
            "127.0.0.2:8011",
            "[::1]:8011",
            "[::ffff:127.0.0.1]:8011",
        ] {
            assert_eq!(
                exposure_warning("control", bind(quiet), &open, "x"),
                None,
                "{quiet}"
            );
        }
        let warning =
            exposure_warning("control", bind("0.0.0.0:8011"), &open, "change the routing")
                .expect("a warning");
        assert!(warning.contains("0.0.0.0:8011"), "{warning}");
        assert!(warning.contains("control.token_file"), "{warning}");
        assert!(warning.contains("control.allow"), "{warning}");
        assert!(exposure_warning("admin", bind("[::]:9104"), &open, "x").is_some());
        let with_token = Access {
            token: Some(Secret::new("t".into())),
            ..Access::default()
        };
        assert_eq!(
            exposure_warning("admin", bind("10.0.0.1:9104"), &with_token, "x"),
            None
        );
        let with_allow = Access {
            allow: AllowList::new(vec!["10.0.0.0/8".parse().unwrap()]),
            ..Access::default()
        };
        assert_eq!(
            exposure_warning("admin", bind("10.0.0.1:9104"), &with_allow, "x"),
            None
        );
    }
}
