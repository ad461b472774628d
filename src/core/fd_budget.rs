//! The descriptor budget: how many client sessions the open-files limit leaves room for.
//!
//! A proxied session holds two descriptors (the client's and the backend's). Everything else
//! galera-lb holds is bounded by its configuration: the admin and control ports' connections
//! (`max_clients` each), a health check and a PROXY-header relay per backend, and a fixed
//! reserve (the runtime, listeners, logs, the configuration reader). At start galera-lb raises
//! its soft limit toward the hard one as far as the configured limits need ([`raise_soft_limit`]),
//! and caps sessions at what the budget allows ([`DescriptorBudget::sessions`]), so that a client
//! past it gets ERR 1040 at once instead of an accept that fails and a client that hangs.

use std::io;

/// Descriptors kept for everything that is not counted elsewhere: the runtime's epoll and
/// event descriptors, stdio, listening sockets, the log, a configuration read, DNS lookups, the
/// accept loops' spare descriptors.
pub(crate) const RESERVE: u64 = 64;

/// The open-files limit of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// Reads RLIMIT_NOFILE (`u64::MAX` for unlimited).
pub(crate) fn file_limit() -> io::Result<FileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass; nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let value = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            v
        }
    };
    Ok(FileLimit {
        soft: value(limit.rlim_cur),
        hard: value(limit.rlim_max),
    })
}

/// Raises the soft open-files limit to `needed`, or as near as the hard limit allows; never
/// lowers it. Returns the limit in force afterwards.
pub(crate) fn raise_soft_limit(needed: u64) -> io::Result<FileLimit> {
    let limit = file_limit()?;
    let target = needed.min(limit.hard);
    if target <= limit.soft {
        return Ok(limit);
    }
    let wanted = libc::rlimit {
        rlim_cur: target as libc::rlim_t,
        rlim_max: if limit.hard == u64::MAX {
            libc::RLIM_INFINITY
        } else {
            limit.hard as libc::rlim_t
        },
    };
    // SAFETY: setrlimit reads the struct we pass; nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FileLimit {
        soft: target,
        hard: limit.hard,
    })
}

/// What the configuration holds besides sessions, and what sessions may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DescriptorBudget {
    /// Descriptors needed besides the sessions'.
    pub fixed: u64,
    /// `limits.max_connections`.
    pub max_connections: u64,
}

impl DescriptorBudget {
    /// The descriptors that every configured limit together needs.
    pub(crate) fn needed(&self) -> u64 {
        self.fixed
            .saturating_add(self.max_connections.saturating_mul(2))
    }

    /// How many sessions fit in `soft` descriptors: `max_connections` when they all fit.
    pub(crate) fn sessions(&self, soft: u64) -> u64 {
        (soft.saturating_sub(self.fixed) / 2).min(self.max_connections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_get_what_the_fixed_part_leaves_two_descriptors_each() {
        let budget = DescriptorBudget {
            fixed: 200,
            max_connections: 10_000,
        };
        assert_eq!(budget.needed(), 20_200);
        assert_eq!(budget.sessions(1024), 412);
        assert_eq!(budget.sessions(100), 0);
        assert_eq!(budget.sessions(u64::MAX), 10_000);
    }

    #[test]
    fn the_soft_limit_is_raised_never_lowered() {
        let before = file_limit().unwrap();
        let after = raise_soft_limit(1).unwrap();
        assert_eq!(after, before);
        let wanted = before.soft.saturating_add(16).min(before.hard);
        let after = raise_soft_limit(wanted).unwrap();
        assert_eq!(after.soft, wanted.max(before.soft));
        assert_eq!(file_limit().unwrap(), after);
    }
}
