//! glbd's command line, so that galera-lb can be installed as `glbd` (a symlink whose file name
//! is `glbd`) or run as `galera-lb glbd ARGS…` without changing the scripts that start it.
//!
//! ```text
//! glbd [OPTIONS] [IP:]LISTEN_PORT [HOST[:PORT[:WEIGHT]]]...
//! glbd --daemon --control 127.0.0.1:8011 --threads 2 8010 host1:8000:0.75 host2:8000:1
//! ```
//!
//! [`parse`] turns those arguments into a galera-lb [`Config`] (one listener named `glbd`, the
//! destinations as the `default` pool, the control port) plus what is not part of a `Config`:
//! daemon mode, a pid file, and one warning for every glbd option galera-lb cannot honour. The
//! option names, short forms and defaults are those of codership/glb 1.0 (`glb_opt.h`,
//! `glb_cmd.c`, `glb_cnf.c`); glbd's options are listed in [`usage`], and each one's mapping is
//! described where it is applied in [`parse`]. Errors are [`GlbdError`]s: the caller prints them
//! and exits with [`EX_USAGE`] (64), as for an invalid YAML configuration.
//!
//! The module also holds the process-level parts of glbd mode that `main` calls before the tokio
//! runtime exists: [`daemonize`] (double fork, `setsid`, stdio to `/dev/null`, and a pipe on which
//! the daemon reports readiness to the waiting parent), the pid file, and raising the
//! open-files limit for `--max_conn` as glbd does.
//!
//! # Why clap
//!
//! glbd parses with `getopt_long`, and clap's builder API covers that grammar: short options that
//! bundle (`-dn`) or take their value attached (`-t2`, `-c8011`), long options with `=` or a
//! separate value (`--threads=2`, as glbd's init script writes them), unambiguous prefixes of long
//! names (`--thr 2`), options after positionals, and `--`. Values that start with `-` are taken as
//! values, as `getopt` does. What getopt gives for free and clap does not — "the last policy
//! option wins" and "a repeated option overrides the earlier one" — comes from
//! `args_override_self` and the argument indices. Values are taken as text and checked here, so
//! every message names the option (`-t/--threads: 'x' is not …`). Help and version are ours, not
//! clap's: glbd's `-h` and `-V` are ordinary options.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches};
use serde_yaml::{Mapping, Value};

use crate::config::{CheckKind, Config, ControlConfig, Discover, PolicyKind};
use crate::core::secret::Secret;

/// sysexits' EX_USAGE: the exit status for a command line galera-lb cannot use.
pub(crate) const EX_USAGE: u8 = 64;

/// How configuration errors name their source in glbd mode (instead of a file name).
pub const SOURCE: &str = "glbd command line";

/// The name of the one listener glbd mode creates.
pub(crate) const LISTENER: &str = "glbd";

/// glbd binds all interfaces when the listen address has no IP part.
const DEFAULT_LISTEN_IP: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
/// glbd's control socket listens on loopback when its address has no IP part.
const DEFAULT_CONTROL_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// How long `glbd --daemon` waits for the daemon to report that it is listening.
pub(crate) const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(60);

const USAGE_LINE: &str = "glbd [OPTIONS] [IP:]LISTEN_PORT [HOST[:PORT[:WEIGHT]]]...";

/// What the glbd command line asks for.
#[derive(Debug)]
pub enum GlbdInvocation {
    /// Run the load balancer.
    Run(Box<GlbdRun>),
    /// `-h/--help`: print this text on stdout and exit 0.
    Help(String),
    /// `-V/--version` alone: print this line on stdout and exit 0.
    Version(String),
}

/// A glbd command line that runs the load balancer.
#[derive(Debug)]
pub struct GlbdRun {
    /// The equivalent galera-lb configuration (already validated).
    pub config: Config,
    /// `-c/--control [IP:]PORT`: where glbd's control protocol is served (IP defaults to
    /// 127.0.0.1, as in glbd). Already in `config.control` (with the section's other defaults);
    /// kept here as an address for callers and tests.
    pub control: Option<SocketAddr>,
    /// `-d/--daemon`: detach and run in the background ([`daemonize`]).
    pub daemon: bool,
    /// `--pid-file PATH` (galera-lb extension; absolute): the running process's pid, removed on a
    /// clean exit.
    pub pid_file: Option<PathBuf>,
    /// `--log-file PATH` (galera-lb extension; absolute): append the log there instead of to
    /// stderr (which a daemon closes once it is listening).
    pub log_file: Option<PathBuf>,
    /// `-m/--max_conn` was given: raise the open-files limit to fit it, as glbd does
    /// ([`raise_fd_limit`]).
    pub raise_fd_limit: bool,
    /// `-V` together with other arguments: glbd prints its version and carries on.
    pub print_version: bool,
    /// One line per option that galera-lb accepts but cannot honour (print them on stderr).
    pub warnings: Vec<String>,
}

/// A glbd command line galera-lb cannot use; the message names the option or argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}\nTry 'glbd --help' for the options.")]
pub struct GlbdError {
    pub message: String,
}

fn usage_error(message: impl Into<String>) -> GlbdError {
    GlbdError {
        message: message.into(),
    }
}

/// galera-lb's version, the way glbd prints its own (`glbd v1.0.2 (epoll)`).
pub(crate) fn version() -> String {
    format!(
        "galera-lb v{} (glbd-compatible, tokio)",
        env!("CARGO_PKG_VERSION")
    )
}

/// glbd's option list, with what galera-lb does with each.
pub(crate) fn usage() -> String {
    format!(
        "\
Usage:
  {USAGE_LINE}
(galera-lb {version} in glbd mode: glbd's command line, galera-lb's engine)

OPTIONS:
  -h|--help                  this help message.
  -a|--defer-accept          TCP_DEFER_ACCEPT on the listening socket: NOT SUPPORTED (ignored).
  -b|--round|--round-robin|--rrb
                             round-robin destination selection policy.
  -c|--control [HOST:]PORT   listen for control requests on this address (HOST
                             defaults to 127.0.0.1).
  -d|--daemon                run as a daemon: returns once the daemon is listening.
  -f|--fifo PATH             control FIFO: NOT SUPPORTED (ignored; use --control).
  -i|--interval D.DDD        how often to check destinations (fractional seconds,
                             default 1.0); used with a mysql.sh watchdog.
  -l|--linger                disable lingering in TIME_WAIT: NOT SUPPORTED (ignored).
  -m|--max_conn|--connections N
                             maximum number of client connections (the open-files
                             limit is raised to fit, when the hard limit allows).
  -n|--nodelay               *DISABLE* TCP_NODELAY (default: enabled).
  -r|--random                route connections to a random destination (by weight).
  -s|--source|--src_tracking|--source_tracking
                             route connections from one source to the same destination.
  -t|--threads N             number of worker threads (default: one per CPU core).
  -v|--verbose               debug logging.
  -w|--watchdog SPEC         watchdog specification. exec:\"mysql.sh [-d N] MYSQL_OPTIONS\"
                             becomes galera-lb's own wsrep check with the -u/-p credentials;
                             dummy means no checks; other commands are NOT SUPPORTED.
  -x|--extra D.DDD           extra destination poll on connect: NOT SUPPORTED (ignored).
  -D|--discover              add the cluster's other nodes (wsrep_incoming_addresses);
                             needs a mysql.sh watchdog, as in glbd.
  -K|--keepalive             *DISABLE* SO_KEEPALIVE (default: enabled).
  -L|--latency N             latency-based weights: NOT SUPPORTED (ignored).
  -S|--single                all connections to the one destination with top weight.
  -T|--top                   balance only between destinations with top weight (the next
                             weight down takes over when none of those is usable).
  -V|--version               print the version (and exit, when given alone).
  -Y                         connect one at a time: NOT SUPPORTED (ignored).
galera-lb extensions:
  --pid-file PATH            write the process id to PATH (removed on a clean exit).
  --log-file PATH            append the log to PATH instead of stderr (a daemon's stderr
                             is closed once it is listening).
The default policy is least connected (weighted).

LISTEN_ADDRESS:
  [IP:]PORT                  where to listen for client connections (without IP: all
                             interfaces, 0.0.0.0); IPv6 as [::1]:PORT.
DESTINATION_LIST:
  [H1[:P1[:W1]]] [H2[:P2[:W2]]]...
                             destinations: PORT defaults to the listen port, WEIGHT (a
                             number) to 1; weight 0 leaves it out; IPv6 as [::1]:3306:2.
Health: without a watchdog galera-lb does not check destinations (like glbd): a destination
that refuses connections is skipped for the next one.
",
        version = env!("CARGO_PKG_VERSION"),
    )
}

fn flag(id: &'static str, short: char, long: &'static str) -> Arg {
    Arg::new(id)
        .short(short)
        .long(long)
        .action(ArgAction::SetTrue)
}

fn valued(id: &'static str, short: Option<char>, long: &'static str, name: &'static str) -> Arg {
    let arg = Arg::new(id)
        .long(long)
        .value_name(name)
        .action(ArgAction::Set)
        // getopt takes the next argument as the value, whatever it looks like.
        .allow_hyphen_values(true);
    match short {
        Some(short) => arg.short(short),
        None => arg,
    }
}

fn command() -> clap::Command {
    clap::Command::new("glbd")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .args_override_self(true)
        .infer_long_args(true)
        .override_usage(USAGE_LINE)
        .arg(flag("help", 'h', "help"))
        .arg(flag("defer-accept", 'a', "defer-accept"))
        .arg(flag("round", 'b', "round").aliases(["round-robin", "rrb"]))
        .arg(valued("control", Some('c'), "control", "[IP:]PORT"))
        .arg(flag("daemon", 'd', "daemon"))
        .arg(valued("fifo", Some('f'), "fifo", "PATH"))
        .arg(valued("interval", Some('i'), "interval", "SECONDS"))
        .arg(flag("linger", 'l', "linger"))
        .arg(valued("max_conn", Some('m'), "max_conn", "N").alias("connections"))
        .arg(flag("nodelay", 'n', "nodelay"))
        .arg(flag("random", 'r', "random"))
        .arg(flag("source", 's', "source").aliases(["src_tracking", "source_tracking"]))
        .arg(valued("threads", Some('t'), "threads", "N"))
        .arg(flag("verbose", 'v', "verbose"))
        .arg(valued("watchdog", Some('w'), "watchdog", "SPEC"))
        .arg(valued("extra", Some('x'), "extra", "SECONDS"))
        .arg(flag("discover", 'D', "discover"))
        .arg(flag("keepalive", 'K', "keepalive"))
        .arg(valued("latency", Some('L'), "latency", "N"))
        .arg(flag("single", 'S', "single"))
        .arg(flag("top", 'T', "top"))
        .arg(flag("version", 'V', "version"))
        .arg(
            Arg::new("synchronous")
                .short('Y')
                .action(ArgAction::SetTrue),
        )
        .arg(valued("pid-file", None, "pid-file", "PATH"))
        .arg(valued("log-file", None, "log-file", "PATH"))
        .arg(Arg::new("listen").value_name("[IP:]LISTEN_PORT"))
        .arg(
            Arg::new("destinations")
                .value_name("HOST[:PORT[:WEIGHT]]")
                .num_args(0..)
                .action(ArgAction::Append),
        )
}

/// Parses glbd's arguments (without the program name, and without `glbd` when run as
/// `galera-lb glbd`).
pub(crate) fn parse(args: &[OsString]) -> Result<GlbdInvocation, GlbdError> {
    parse_with_resolver(args, &system_resolver)
}

/// Turns `(HOST, PORT)` into addresses: how the listen and control addresses' host names are
/// resolved.
pub(crate) type Resolver = dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>>;

/// The system's resolver (`getaddrinfo`), which [`parse`] uses.
pub(crate) fn system_resolver(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// [`parse`] with host names resolved by `resolve` (the fuzz target and its regression test
/// resolve without the network).
pub fn parse_with_resolver(
    args: &[OsString],
    resolve: &Resolver,
) -> Result<GlbdInvocation, GlbdError> {
    let matches = command().try_get_matches_from(args).map_err(|e| {
        let rendered = e.render().to_string();
        let text = rendered.trim();
        usage_error(text.strip_prefix("error: ").unwrap_or(text))
    })?;
    if matches.get_flag("help") {
        return Ok(GlbdInvocation::Help(usage()));
    }
    let listen = matches.get_one::<String>("listen");
    let print_version = matches.get_flag("version");
    let Some(listen) = listen else {
        if print_version {
            return Ok(GlbdInvocation::Version(version()));
        }
        return Err(usage_error(
            "missing the listen address: [IP:]LISTEN_PORT (e.g. 3306 or 127.0.0.1:3306)",
        ));
    };
    let mut warnings = Vec::new();
    let listen = parse_address(listen, DEFAULT_LISTEN_IP, resolve)
        .map_err(|reason| usage_error(format!("listen address: {reason}")))?;
    let control = matches
        .get_one::<String>("control")
        .map(|text| parse_address(text, DEFAULT_CONTROL_IP, resolve))
        .transpose()
        .map_err(|reason| usage_error(format!("-c/--control: {reason}")))?;

    // Policies: the last one given wins, as each glbd option overwrites the policy; -S also turns
    // on -T for good (glbd falls through from -S to -T).
    let policy = [
        ("round", PolicyKind::RoundRobin),
        ("random", PolicyKind::Random),
        ("source", PolicyKind::Source),
        ("single", PolicyKind::Single),
    ]
    .into_iter()
    .filter(|(id, _)| matches.get_flag(id))
    .max_by_key(|(id, _)| matches.index_of(id))
    .map_or(PolicyKind::LeastConn, |(_, policy)| policy);
    let top = matches.get_flag("top") || matches.get_flag("single");

    let destinations = destinations(&matches, listen.port(), top, &mut warnings)?;
    let watchdog = matches
        .get_one::<String>("watchdog")
        .map(|spec| parse_watchdog(spec))
        .transpose()?;

    let mut config = base_config(listen, policy, &destinations)?;
    config.control = control.map(|address| ControlConfig {
        bind: address,
        ..ControlConfig::default()
    });

    if let Some(text) = matches.get_one::<String>("threads") {
        // glbd takes 0 as "not given"; galera-lb's default is one thread per CPU core.
        let threads = parse_count(text)
            .map_err(|reason| usage_error(format!("-t/--threads: '{text}' is not {reason}")))?;
        config.runtime.worker_threads = (threads > 0).then_some(threads as usize);
    }
    // glbd also raises the open-files limit to fit --max_conn; `main` does the same
    // (`raise_fd_limit`) before starting.
    let raise_fd_limit = if let Some(text) = matches.get_one::<String>("max_conn") {
        let max = parse_count(text)
            .ok()
            .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
            .ok_or_else(|| {
                usage_error(format!(
                    "-m/--max_conn: '{text}' is not a number of connections (1 or more)"
                ))
            })?;
        config.limits.max_connections = max as u32;
        true
    } else {
        false
    };
    // -n and -K *disable* (glbd's help says so in capitals): TCP_NODELAY and SO_KEEPALIVE are on
    // by default in both. galera-lb sets them on the client and the backend socket alike, where
    // glbd sets keepalive on backend sockets only (idle 10 s; galera-lb's default idle is 60 s).
    if matches.get_flag("nodelay") {
        config.tcp.nodelay = false;
    }
    if matches.get_flag("keepalive") {
        config.tcp.keepalive = None;
    }
    // glbd's verbose reporting is galera-lb's debug level (RUST_LOG still overrides it).
    if matches.get_flag("verbose") {
        config.log.level = "info,galera_lb=debug".to_string();
    }
    // glbd's watchdog interval is the health-check interval; it matters with a mysql.sh watchdog.
    if let Some(text) = matches.get_one::<String>("interval") {
        config.health.interval = parse_seconds(text)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                usage_error(format!(
                    "-i/--interval: '{text}' is not a number of seconds greater than 0 \
                     (e.g. 1 or 0.5)"
                ))
            })?;
    }

    // Health checks. glbd has no credentials of its own: without a watchdog it only notices a
    // destination is down when a connect fails, which is galera-lb's `check: none` (connect
    // failover). The one watchdog galera-lb can stand in for is Codership's mysql.sh script: it
    // logs in with the given mysql options and reads wsrep_local_state, which is exactly
    // galera-lb's `wsrep` check, so the credentials move over and galera-lb checks by itself.
    config.health.check = CheckKind::None;
    match &watchdog {
        None => {}
        Some(Watchdog::Dummy) => {}
        Some(Watchdog::MysqlSh(check)) => {
            config.health.check = CheckKind::Wsrep;
            config.health.user = check.user.clone();
            config.health.password = Some(check.password.clone());
            config.health.available_when_donor = check.donor_serves;
            warnings.extend(check.warnings.iter().cloned());
        }
        Some(Watchdog::Unsupported(command)) => warnings.push(format!(
            "-w/--watchdog exec:{}: galera-lb cannot run watchdog commands; it stands in \
             only for Codership's mysql.sh. Destinations are not health-checked: one that \
             refuses connections is skipped for the next",
            mask_passwords(command)
        )),
    }
    if matches.get_flag("discover") {
        if config.health.check == CheckKind::Wsrep {
            config.discover = Discover::Wsrep;
        } else {
            warnings.push(
                "-D/--discover has no effect without a mysql.sh watchdog (-w exec:\"mysql.sh \
                 -uUSER -pPASSWORD\"): galera-lb learns the cluster's nodes from the wsrep check"
                    .to_string(),
            );
        }
    }

    // Accepted, but galera-lb has no equivalent: say so rather than ignore them silently.
    if matches.get_flag("linger") {
        warnings.push(
            "-l/--linger (close with RST, skipping TIME_WAIT) is not supported: ignored".into(),
        );
    }
    if matches.get_flag("defer-accept") {
        warnings.push("-a/--defer-accept (TCP_DEFER_ACCEPT) is not supported: ignored".into());
    }
    if matches.get_flag("synchronous") {
        warnings.push("-Y (connect one at a time) is not supported: ignored".into());
    }
    if let Some(path) = matches.get_one::<String>("fifo") {
        warnings.push(format!(
            "-f/--fifo {path}: galera-lb has no control FIFO: ignored (use -c/--control)"
        ));
    }
    if let Some(text) = matches.get_one::<String>("extra") {
        let seconds = parse_seconds(text).ok_or_else(|| {
            usage_error(format!(
                "-x/--extra: '{text}' is not a number of seconds (0 or more)"
            ))
        })?;
        if !seconds.is_zero() {
            warnings.push(format!(
                "-x/--extra {text} (extra destination poll on connect) is not supported: ignored"
            ));
        }
    }
    if let Some(text) = matches.get_one::<String>("latency") {
        let samples = parse_count(text)
            .map_err(|reason| usage_error(format!("-L/--latency: '{text}' is not {reason}")))?;
        if samples > 0 {
            warnings.push(format!(
                "-L/--latency {text} (weights from check latency) is not supported: ignored"
            ));
        }
    }

    let absolute = |id: &str, option: &str| -> Result<Option<PathBuf>, GlbdError> {
        matches
            .get_one::<String>(id)
            .map(|path| {
                if path.is_empty() {
                    return Err(usage_error(format!("{option}: the path is empty")));
                }
                std::path::absolute(path).map_err(|e| usage_error(format!("{option} {path}: {e}")))
            })
            .transpose()
    };
    let pid_file = absolute("pid-file", "--pid-file")?;
    let log_file = absolute("log-file", "--log-file")?;

    config
        .validate(SOURCE)
        .map_err(|e| usage_error(e.to_string()))?;
    Ok(GlbdInvocation::Run(Box::new(GlbdRun {
        config,
        control,
        daemon: matches.get_flag("daemon"),
        pid_file,
        log_file,
        raise_fd_limit,
        print_version,
        warnings,
    })))
}

/// One destination as galera-lb will use it.
#[derive(Debug, Clone, PartialEq)]
struct Destination {
    /// `HOST:PORT`, `[v6]:PORT` for IPv6.
    address: String,
    weight: f64,
    tier: u8,
}

/// The destination list: default port and weight filled in, weight-0 ones left out (with a
/// warning), a repeated address taking the later weight (glbd treats it as a weight change), and
/// with `-T` one tier per distinct weight, highest first.
///
/// Why tiers: glbd's `--top` balances among the destinations with the top weight among the usable
/// ones; when all of them fail, the next weight down is the top. galera-lb picks within the lowest
/// tier that has a usable backend, so numbering the distinct weights from the highest gives the
/// same choice at every step (not only "top weight" versus "the rest").
fn destinations(
    matches: &ArgMatches,
    default_port: u16,
    top: bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<Destination>, GlbdError> {
    let mut list: Vec<Destination> = Vec::new();
    for text in matches
        .get_many::<String>("destinations")
        .into_iter()
        .flatten()
    {
        let (address, weight) = parse_destination(text, default_port)
            .map_err(|reason| usage_error(format!("destination '{text}': {reason}")))?;
        if let Some(earlier) = list.iter_mut().find(|d| d.address == address) {
            warnings.push(format!(
                "destination {address} is given twice: using the later weight, {weight}"
            ));
            earlier.weight = weight;
        } else {
            list.push(Destination {
                address,
                weight,
                tier: 1,
            });
        }
    }
    list.retain(|d| {
        if d.weight == 0.0 {
            warnings.push(format!(
                "destination {} has weight 0 (drained in glbd): left out",
                d.address
            ));
        }
        d.weight > 0.0
    });
    if list.is_empty() {
        return Err(usage_error(
            "no destination with a weight above 0: galera-lb needs at least one \
             HOST[:PORT[:WEIGHT]] after the listen address",
        ));
    }
    if top {
        let mut weights: Vec<f64> = list.iter().map(|d| d.weight).collect();
        weights.sort_by(|a, b| b.total_cmp(a));
        weights.dedup();
        for destination in &mut list {
            let rank = weights
                .iter()
                .position(|w| *w == destination.weight)
                .unwrap_or(0);
            destination.tier = u8::try_from(rank + 1).unwrap_or(u8::MAX);
        }
    }
    Ok(list)
}

/// The configuration with the listener and the destinations; every other section takes
/// galera-lb's defaults (built through serde so that it gets exactly the defaults a YAML file
/// without those sections gets).
fn base_config(
    listen: SocketAddr,
    policy: PolicyKind,
    destinations: &[Destination],
) -> Result<Config, GlbdError> {
    let map = |pairs: Vec<(&str, Value)>| {
        Value::Mapping(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect::<Mapping>(),
        )
    };
    let listener = map(vec![
        ("name", Value::from(LISTENER)),
        ("bind", Value::from(listen.to_string())),
        ("policy", Value::from(policy.as_str())),
    ]);
    let backends = destinations
        .iter()
        .map(|d| {
            map(vec![
                ("address", Value::from(d.address.as_str())),
                ("weight", Value::from(d.weight)),
                ("tier", Value::from(u64::from(d.tier))),
            ])
        })
        .collect();
    let root = map(vec![
        ("listeners", Value::Sequence(vec![listener])),
        ("backends", Value::Sequence(backends)),
    ]);
    serde_yaml::from_value(root).map_err(|e| usage_error(format!("{SOURCE}: {e}")))
}

/// `[IP:]PORT`, `[v6]:PORT` or `HOST:PORT` (resolved now, IPv4 first, as glbd resolves with
/// gethostbyname).
fn parse_address(text: &str, default_ip: IpAddr, resolve: &Resolver) -> Result<SocketAddr, String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("'{p}' is not a port number (0-65535) in '{text}'"))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (host, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("'{text}' is not [IPv6]:PORT"))?;
        let ip: Ipv6Addr = host
            .parse()
            .map_err(|_| format!("'{host}' is not an IPv6 address"))?;
        return Ok(SocketAddr::new(IpAddr::V6(ip), port(p)?));
    }
    let Some((host, p)) = text.split_once(':') else {
        return Ok(SocketAddr::new(default_ip, port(text)?));
    };
    let port = port(p)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if host.is_empty() {
        return Err(format!("'{text}' has an empty host"));
    }
    let resolved: Vec<SocketAddr> =
        resolve(host, port).map_err(|e| format!("cannot resolve '{host}': {e}"))?;
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("'{host}' resolves to no address"))
}

/// `HOST[:PORT[:WEIGHT]]`, `[v6][:PORT[:WEIGHT]]`: the address as galera-lb writes it, and the
/// weight (0 is allowed here: the caller leaves such destinations out; a negative one is not).
fn parse_destination(text: &str, default_port: u16) -> Result<(String, f64), String> {
    let (address, weight) = crate::sources::control::parse_destination(text, default_port)?;
    if weight < 0.0 {
        return Err(format!("weight '{weight}' is not a number of 0 or more"));
    }
    Ok((address, weight))
}

/// A whole number of 0 or more, or why not.
fn parse_count(text: &str) -> Result<u64, &'static str> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| "a whole number (0 or more)")
}

/// Fractional seconds (`1`, `0.5`), 0 or more.
fn parse_seconds(text: &str) -> Option<Duration> {
    let seconds: f64 = text.trim().parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// What a `-w/--watchdog` specification amounts to in galera-lb.
#[derive(Debug, Clone, PartialEq)]
enum Watchdog {
    /// `dummy`: every destination always ready, i.e. no checks.
    Dummy,
    /// `exec:"mysql.sh …"`: galera-lb's own wsrep check with these settings.
    MysqlSh(MysqlShCheck),
    /// `exec:` with any other command (kept for the warning).
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq)]
struct MysqlShCheck {
    user: String,
    password: Secret,
    /// `-d 3`: a donor is treated as a regular working node.
    donor_serves: bool,
    warnings: Vec<String>,
}

fn parse_watchdog(spec: &str) -> Result<Watchdog, GlbdError> {
    let (id, rest) = spec.split_once(':').unwrap_or((spec, ""));
    match id {
        "dummy" => Ok(Watchdog::Dummy),
        "exec" => {
            let words = shell_words(rest).map_err(|reason| {
                usage_error(format!(
                    "-w/--watchdog: exec command '{}': {reason}",
                    mask_passwords(rest)
                ))
            })?;
            let Some(program) = words.first() else {
                return Err(usage_error(
                    "-w/--watchdog: the 'exec' watchdog needs a command line, e.g. \
                     exec:\"mysql.sh -uUSER -pPASSWORD\"",
                ));
            };
            if Path::new(program).file_name().and_then(|n| n.to_str()) == Some("mysql.sh") {
                Ok(Watchdog::MysqlSh(mysql_sh_check(&words[1..])))
            } else {
                Ok(Watchdog::Unsupported(rest.to_string()))
            }
        }
        other => Err(usage_error(format!(
            "-w/--watchdog: '{other}' watchdog is not implemented (glbd knows 'exec' and \
             'dummy'), in '{}'",
            mask_passwords(spec)
        ))),
    }
}

/// A watchdog specification as it may be shown in a message: from the first `-pPASSWORD` or
/// `--password=PASSWORD` on, the rest is replaced by `****` (a quoted password may contain
/// spaces, so nothing after it is shown).
fn mask_passwords(command: &str) -> String {
    for (i, _) in command.char_indices() {
        let word_start = i == 0 || command[..i].ends_with([' ', '\t', '"', '\'', ':']);
        let rest = &command[i..];
        if !word_start {
            continue;
        }
        if rest.starts_with("--password=") {
            return format!("{}--password=****", &command[..i]);
        }
        if rest.starts_with("-p") && rest.len() > 2 && !rest[2..].starts_with([' ', '\t']) {
            return format!("{}-p****", &command[..i]);
        }
    }
    command.to_string()
}

/// Reads mysql.sh's arguments: `[-d STATE]` then options for the mysql client, of which the
/// credentials matter.
fn mysql_sh_check(args: &[String]) -> MysqlShCheck {
    let mut check = MysqlShCheck {
        user: String::new(),
        password: Secret::default(),
        donor_serves: false,
        warnings: Vec::new(),
    };
    let mut args = args.iter().peekable();
    if args.peek().is_some_and(|a| *a == "-d") {
        args.next();
        match args.next().map(String::as_str) {
            // 1: cut the donor's connections, 2 (mysql.sh's default): no new connections.
            // galera-lb leaves open sessions alone when a node stops being usable (health.on_down:
            // none), which is also what glbd ends up doing.
            Some("1") | Some("2") => {}
            Some("3") => check.donor_serves = true,
            other => check.warnings.push(format!(
                "-w/--watchdog: mysql.sh -d {}: expected 1, 2 or 3; using 2 (a donor gets no \
                 new connections)",
                other.unwrap_or("")
            )),
        }
    }
    let mut user = None;
    let mut ignored = Vec::new();
    while let Some(arg) = args.next() {
        if let Some(value) = arg.strip_prefix("--user=") {
            user = Some(value.to_string());
        } else if arg == "--user" || arg == "-u" {
            user = args.next().cloned();
        } else if let Some(value) = arg.strip_prefix("-u") {
            user = Some(value.to_string());
        } else if let Some(value) = arg.strip_prefix("--password=") {
            check.password = Secret::new(value.to_string());
        } else if let Some(value) = arg.strip_prefix("-p").filter(|v| !v.is_empty()) {
            check.password = Secret::new(value.to_string());
        } else {
            // -p or --password alone make mysql prompt; -h/-P are set per destination by
            // mysql.sh; anything else (--defaults-file, --ssl…) galera-lb's check does not read.
            ignored.push(arg.clone());
        }
    }
    if !ignored.is_empty() {
        check.warnings.push(format!(
            "-w/--watchdog: mysql.sh options not used by galera-lb's wsrep check (only -u/--user \
             and -p/--password are): {}",
            ignored.join(" ")
        ));
    }
    check.user = user.unwrap_or_else(|| {
        // The mysql client logs in as the login name when no -u is given.
        let login = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "root".to_string());
        check.warnings.push(format!(
            "-w/--watchdog: mysql.sh has no -u USER: checking as '{login}', as the mysql client \
             would (option files such as ~/.my.cnf are not read)"
        ));
        login
    });
    check
}

/// Splits a command line into words as `sh` would for plain words and quotes (no expansions).
fn shell_words(text: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(done) = word.take() {
                    words.push(done);
                }
            }
            '\'' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return Err("a ' quote is not closed"),
                    }
                }
            }
            '"' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => current.push(c),
                            Some(c) => {
                                current.push('\\');
                                current.push(c);
                            }
                            None => return Err("a \" quote is not closed"),
                        },
                        Some(c) => current.push(c),
                        None => return Err("a \" quote is not closed"),
                    }
                }
            }
            '\\' => {
                if let Some(c) = chars.next() {
                    word.get_or_insert_with(String::new).push(c);
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// Raises the soft open-files limit so that `max_connections` clients fit (two descriptors each:
/// the client's and the backend's), as far as the hard limit allows, as glbd does for
/// `--max_conn`. Returns a warning when they do not fit.
pub(crate) fn raise_fd_limit(max_connections: u32) -> Option<String> {
    let needed = u64::from(max_connections) * 2 + crate::core::fd_budget::RESERVE;
    let before = match crate::core::fd_budget::file_limit() {
        Ok(limit) => limit,
        Err(e) => {
            return Some(format!(
                "-m/--max_conn: cannot read the open-files limit: {e}"
            ));
        }
    };
    let limit = match crate::core::fd_budget::raise_soft_limit(needed) {
        Ok(limit) => limit,
        Err(e) => {
            return Some(format!(
                "-m/--max_conn {max_connections}: cannot raise the open-files limit from {} to \
                 {}: {e}",
                before.soft,
                needed.min(before.hard)
            ));
        }
    };
    (limit.soft < needed).then(|| {
        format!(
            "-m/--max_conn {max_connections}: the open-files limit is {} (hard limit), room for \
             about {} clients; raise it (ulimit -n, LimitNOFILE=) to serve more",
            limit.soft,
            limit.soft.saturating_sub(crate::core::fd_budget::RESERVE) / 2
        )
    })
}

/// Writes this process's pid and a newline to `path`.
pub(crate) fn write_pid_file(path: &Path) -> io::Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
}

/// After [`daemonize`]: which side of the fork this is.
#[derive(Debug)]
pub(crate) enum Detached {
    /// The process that was started: the daemon has reported (or failed to); exit with this
    /// status.
    Parent(u8),
    /// The daemon: start, then report through the [`Readiness`].
    Daemon(Readiness),
}

/// The daemon's end of the pipe to the waiting parent. Exactly one report is sent: `ready` once
/// the listeners are bound, or `failed` with the exit status. Dropped without either (a panic,
/// say), the pipe closes and the parent reports that the daemon exited before it was ready.
#[derive(Debug)]
pub(crate) struct Readiness {
    pipe: OwnedFd,
    /// stderr is still the starting terminal or pipe: point it at /dev/null once ready, so that
    /// whoever reads the parent's output sees end-of-file when the parent exits.
    release_stderr: bool,
}

const READY: u8 = b'R';
const FAILED: u8 = b'F';

impl Readiness {
    /// The listeners are bound: let go of the starting terminal and let the parent exit 0.
    pub(crate) fn ready(self) {
        if self.release_stderr {
            // Nothing to do when this fails: stderr then stays where it was.
            let _ = redirect_to_dev_null(libc::STDERR_FILENO);
        }
        self.send(&[READY]);
    }

    /// The daemon could not start: the parent exits with `status`.
    pub(crate) fn failed(self, status: u8) {
        self.send(&[FAILED, status]);
    }

    fn send(self, message: &[u8]) {
        // The parent may have given up waiting; there is no one else to tell.
        let _ = File::from(self.pipe).write_all(message);
    }
}

/// Detaches from the terminal the glbd way, but reporting readiness: fork, `setsid`, fork again
/// (so that the daemon is not a session leader and never gets a controlling terminal), `chdir /`,
/// stdin and stdout to /dev/null. stderr stays (so start-up errors reach the user) until
/// [`Readiness::ready`], unless `log` is given, which then becomes stderr at once.
///
/// The original process waits (up to [`DAEMON_READY_TIMEOUT`]) on a pipe for the daemon's
/// report and returns [`Detached::Parent`] with the status to exit with: 0 once the daemon is
/// listening, so a script may connect as soon as `glbd --daemon` returns.
///
/// Call it while the process has one thread: before the tokio runtime or any other thread starts.
pub(crate) fn daemonize(log: Option<&File>) -> io::Result<Detached> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: the process has a single thread (documented precondition), so the child is a
    // complete copy and may go on running Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(read);
            // SAFETY: setsid and fork have no memory-safety preconditions; the intermediate
            // process leaves with _exit, running no destructors or atexit handlers.
            unsafe {
                if libc::setsid() == -1 {
                    libc::_exit(1);
                }
                match libc::fork() {
                    -1 => libc::_exit(1),
                    0 => {}
                    _ => libc::_exit(0),
                }
            }
            // The daemon.
            std::env::set_current_dir("/")?;
            redirect_to_dev_null(libc::STDIN_FILENO)?;
            redirect_to_dev_null(libc::STDOUT_FILENO)?;
            if let Some(log) = log {
                // SAFETY: dup2 onto stderr of a descriptor we hold open.
                if unsafe { libc::dup2(log.as_raw_fd(), libc::STDERR_FILENO) } == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(Detached::Daemon(Readiness {
                pipe: write,
                release_stderr: log.is_none(),
            }))
        }
        child => {
            drop(write);
            let mut status = 0;
            // SAFETY: waitpid on our own child, writing its status into a local.
            unsafe { libc::waitpid(child, &mut status, 0) };
            Ok(Detached::Parent(wait_for_daemon(
                read,
                DAEMON_READY_TIMEOUT,
            )))
        }
    }
}

/// Points `fd` at /dev/null.
fn redirect_to_dev_null(fd: libc::c_int) -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    // SAFETY: dup2 of a descriptor we hold open onto a standard descriptor.
    if unsafe { libc::dup2(null.as_raw_fd(), fd) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The parent's side: reads the daemon's report and returns the status to exit with, after
/// saying on stderr what went wrong when something did.
fn wait_for_daemon(pipe: OwnedFd, timeout: Duration) -> u8 {
    let mut report = Vec::with_capacity(2);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut poll = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: poll on one pollfd that lives on the stack for the call.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready == -1 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!(
                "glbd: cannot wait for the daemon: {}",
                io::Error::last_os_error()
            );
            return 1;
        }
        if ready == 0 {
            eprintln!(
                "glbd: the daemon did not report that it is listening within {}s; it may still \
                 be starting",
                timeout.as_secs()
            );
            return 1;
        }
        let mut buf = [0u8; 2];
        // SAFETY: read into a stack buffer of the given length.
        let n = unsafe { libc::read(pipe.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            -1 => {
                eprintln!(
                    "glbd: cannot read the daemon's report: {}",
                    io::Error::last_os_error()
                );
                return 1;
            }
            0 => break,
            n => report.extend_from_slice(&buf[..n as usize]),
        }
        match report.as_slice() {
            [READY, ..] => return 0,
            [FAILED, status, ..] => return *status,
            _ => {}
        }
    }
    eprintln!("glbd: the daemon exited before it was listening");
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_POOL;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    fn run(line: &str) -> GlbdRun {
        match parse(&args(line)) {
            Ok(GlbdInvocation::Run(run)) => *run,
            other => panic!("{line}: expected a run, got {other:?}"),
        }
    }

    fn error(line: &str) -> String {
        match parse(&args(line)) {
            Err(e) => e.to_string(),
            other => panic!("{line}: expected an error, got {other:?}"),
        }
    }

    fn backends(run: &GlbdRun) -> Vec<(String, f64, u8)> {
        run.config
            .backends
            .iter()
            .map(|b| (b.address.clone(), b.weight, b.tier))
            .collect()
    }

    #[test]
    fn the_example_from_glbds_documentation() {
        let run =
            run("--daemon --control 127.0.0.1:8011 --threads 2 8010 host1:8000:0.75 host2:8000:1");
        let config = &run.config;
        assert!(run.daemon);
        assert_eq!(run.control, Some("127.0.0.1:8011".parse().unwrap()));
        assert_eq!(
            config.control.as_ref().unwrap().bind.to_string(),
            "127.0.0.1:8011"
        );
        assert_eq!(config.runtime.worker_threads, Some(2));
        assert_eq!(config.listeners.len(), 1);
        let listener = &config.listeners[0];
        assert_eq!(listener.name, LISTENER);
        assert_eq!(listener.bind.to_string(), "0.0.0.0:8010");
        assert_eq!(listener.pool, DEFAULT_POOL);
        assert_eq!(listener.policy, PolicyKind::LeastConn);
        assert_eq!(
            backends(&run),
            [
                ("host1:8000".to_string(), 0.75, 1),
                ("host2:8000".to_string(), 1.0, 1)
            ]
        );
        assert_eq!(config.health.check, CheckKind::None);
        assert!(run.warnings.is_empty(), "{:?}", run.warnings);
        config.validate("again").unwrap();
    }

    #[test]
    fn defaults_match_glbd() {
        let run = run("3306 db1");
        assert!(!run.daemon);
        assert_eq!(run.control, None);
        assert_eq!(run.pid_file, None);
        assert!(!run.raise_fd_limit);
        assert_eq!(run.config.listeners[0].bind.to_string(), "0.0.0.0:3306");
        assert_eq!(run.config.listeners[0].policy, PolicyKind::LeastConn);
        assert_eq!(backends(&run), [("db1:3306".to_string(), 1.0, 1)]);
        assert!(run.config.tcp.nodelay);
        assert!(run.config.tcp.keepalive.is_some());
        assert_eq!(run.config.log.level, "info");
        assert_eq!(run.config.discover, Discover::None);
        assert_eq!(run.config.runtime.worker_threads, None);
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            run("127.0.0.1:8010 db1").config.listeners[0]
                .bind
                .to_string(),
            "127.0.0.1:8010"
        );
        assert_eq!(
            run("[::1]:8010 db1:1").config.listeners[0].bind.to_string(),
            "[::1]:8010"
        );
        let local = run("localhost:8010 db1").config.listeners[0].bind;
        assert_eq!(local.port(), 8010, "{local}");
        assert!(error("http db1").contains("listen address"));
        assert!(error("70000 db1").contains("not a port number"));
        assert!(error("[::1]8010 db1").contains("[IPv6]:PORT"));
        assert!(error("-t 2").contains("missing the listen address"));
    }

    #[test]
    fn host_names_go_through_the_given_resolver() {
        let resolve = |host: &str, port: u16| match host {
            "db-vip" => Ok(vec![
                SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], port)),
                SocketAddr::from(([10, 0, 0, 9], port)),
            ]),
            "nowhere" => Ok(Vec::new()),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
        };
        let parsed = |line: &str| parse_with_resolver(&args(line), &resolve);
        match parsed("-c db-vip:8011 db-vip:8010 db1") {
            Ok(GlbdInvocation::Run(run)) => {
                assert_eq!(
                    run.config.listeners[0].bind.to_string(),
                    "10.0.0.9:8010",
                    "IPv4 first"
                );
                assert_eq!(run.control, Some(SocketAddr::from(([10, 0, 0, 9], 8011))));
            }
            other => panic!("expected a run, got {other:?}"),
        }
        let message = parsed("nowhere:8010 db1").unwrap_err().message;
        assert!(message.contains("resolves to no address"), "{message}");
        let message = parsed("db9:8010 db1").unwrap_err().message;
        assert!(
            message.contains("cannot resolve 'db9': no such host"),
            "{message}"
        );
    }

    #[test]
    fn destinations_default_port_weight_and_ipv6() {
        let run =
            run("3306 db1 db2:3307 db3:3308:2.5 10.0.0.4::0.5 [::1] [::1]:3310 [fe80::1]:3311:3");
        assert_eq!(
            backends(&run),
            [
                ("db1:3306".to_string(), 1.0, 1),
                ("db2:3307".to_string(), 1.0, 1),
                ("db3:3308".to_string(), 2.5, 1),
                ("10.0.0.4:3306".to_string(), 0.5, 1),
                ("[::1]:3306".to_string(), 1.0, 1),
                ("[::1]:3310".to_string(), 1.0, 1),
                ("[fe80::1]:3311".to_string(), 3.0, 1),
            ]
        );
    }

    #[test]
    fn zero_weights_are_left_out_and_repeats_take_the_later_weight() {
        let run = run("3306 db1:3306:0 db2 db3:3306:2 db3:3306:4");
        assert_eq!(
            backends(&run),
            [
                ("db2:3306".to_string(), 1.0, 1),
                ("db3:3306".to_string(), 4.0, 1)
            ]
        );
        assert!(
            run.warnings
                .iter()
                .any(|w| w.contains("db1:3306") && w.contains("weight 0"))
        );
        assert!(
            run.warnings
                .iter()
                .any(|w| w.contains("db3:3306") && w.contains("twice"))
        );
    }

    #[test]
    fn bad_destinations_are_errors_naming_the_destination() {
        for (line, reason) in [
            ("3306 db1:x", "not a port number"),
            ("3306 db1:3306:heavy", "weight 'heavy'"),
            ("3306 db1:3306:-1", "weight '-1'"),
            ("3306 db1:3306:inf", "weight 'inf'"),
            ("3306 ::1:3306", "brackets"),
            ("3306 [::1]:1:2:3", "too many"),
            ("3306 [::1:3306", "closing ']'"),
            ("3306 [db1]:3306", "not an IPv6 address"),
            ("3306 :3306", "host is empty"),
            ("0 db1", "port 0"),
            ("3306", "at least one"),
            ("3306 db1:3306:0", "at least one"),
        ] {
            let message = error(line);
            assert!(message.contains(reason), "{line}: {message}");
        }
        assert!(error("3306 db1:x").contains("destination 'db1:x'"));
    }

    #[test]
    fn policies_and_the_last_one_wins() {
        let policy = |line: &str| run(line).config.listeners[0].policy;
        assert_eq!(policy("3306 db1"), PolicyKind::LeastConn);
        for option in ["-b", "--round", "--round-robin", "--rrb"] {
            assert_eq!(
                policy(&format!("{option} 3306 db1")),
                PolicyKind::RoundRobin
            );
        }
        for option in ["-r", "--random"] {
            assert_eq!(policy(&format!("{option} 3306 db1")), PolicyKind::Random);
        }
        for option in ["-s", "--source", "--src_tracking", "--source_tracking"] {
            assert_eq!(policy(&format!("{option} 3306 db1")), PolicyKind::Source);
        }
        for option in ["-S", "--single"] {
            assert_eq!(policy(&format!("{option} 3306 db1")), PolicyKind::Single);
        }
        assert_eq!(policy("-r -b 3306 db1"), PolicyKind::RoundRobin);
        assert_eq!(policy("-b -r 3306 db1"), PolicyKind::Random);
        assert_eq!(policy("-b -r -b 3306 db1"), PolicyKind::RoundRobin);
        assert_eq!(policy("-S 3306 db1 -s"), PolicyKind::Source);
    }

    #[test]
    fn top_gives_one_tier_per_weight_and_single_implies_top() {
        let line = "3306 a:1:1 b:1:3 c:1:2 d:1:3";
        assert!(backends(&run(line)).iter().all(|(_, _, tier)| *tier == 1));
        for options in ["-T", "--top", "-S", "--single", "-S -b"] {
            let run = run(&format!("{options} {line}"));
            assert_eq!(
                backends(&run),
                [
                    ("a:1".to_string(), 1.0, 3),
                    ("b:1".to_string(), 3.0, 1),
                    ("c:1".to_string(), 2.0, 2),
                    ("d:1".to_string(), 3.0, 1),
                ],
                "{options}"
            );
        }
        // -S then -b: round robin among the top weight, as glbd's -S falls through to -T.
        assert_eq!(
            run(&format!("-S -b {line}")).config.listeners[0].policy,
            PolicyKind::RoundRobin
        );
    }

    #[test]
    fn control_address() {
        let control = |line: &str| run(line).control;
        assert_eq!(
            control("-c 8011 3306 db1"),
            Some("127.0.0.1:8011".parse().unwrap())
        );
        assert_eq!(
            control("-c8011 3306 db1"),
            Some("127.0.0.1:8011".parse().unwrap())
        );
        assert_eq!(
            control("--control=0.0.0.0:8011 3306 db1"),
            Some("0.0.0.0:8011".parse().unwrap())
        );
        assert_eq!(
            control("--control [::1]:8011 3306 db1"),
            Some("[::1]:8011".parse().unwrap())
        );
        assert!(error("-c x 3306 db1").contains("-c/--control"));
        assert_eq!(run("3306 db1").config.control, None);
        // The listener and the control port cannot share an address.
        assert!(error("-c 127.0.0.1:3306 127.0.0.1:3306 db1").contains("control.bind"));
    }

    #[test]
    fn threads_max_conn_and_socket_options() {
        let run1 = run("-t 4 -m 500 -n -K 3306 db1");
        assert_eq!(run1.config.runtime.worker_threads, Some(4));
        assert_eq!(run1.config.limits.max_connections, 500);
        assert!(run1.raise_fd_limit);
        assert!(!run1.config.tcp.nodelay);
        assert_eq!(run1.config.tcp.keepalive, None);
        let run2 = run("--threads=3 --max_conn=7 --nodelay --keepalive 3306 db1");
        assert_eq!(run2.config.runtime.worker_threads, Some(3));
        assert_eq!(run2.config.limits.max_connections, 7);
        assert!(!run2.config.tcp.nodelay);
        assert_eq!(run2.config.tcp.keepalive, None);
        // glbd's init script writes --connections; 0 threads means "not given" in glbd.
        let run3 = run("--connections=9 -t0 3306 db1");
        assert_eq!(run3.config.limits.max_connections, 9);
        assert_eq!(run3.config.runtime.worker_threads, None);
        for (line, option) in [
            ("-t two 3306 db1", "-t/--threads: 'two'"),
            ("-t -1 3306 db1", "-t/--threads: '-1'"),
            ("-m 0 3306 db1", "-m/--max_conn: '0'"),
            ("-m lots 3306 db1", "-m/--max_conn: 'lots'"),
            // Parsed, then refused by the configuration's own ranges.
            (
                "-t 200000 3306 db1",
                "runtime.worker_threads: must be from 1 to 1024",
            ),
            (
                "-m 4000000 3306 db1",
                "limits.max_connections: must be from 1 to 1000000",
            ),
            (
                "-i 0.001 3306 db1",
                "health.interval: must be from 10ms to 1h",
            ),
        ] {
            let message = error(line);
            assert!(message.contains(option), "{line}: {message}");
        }
    }

    #[test]
    fn interval_verbose_version_and_help() {
        let run1 = run("-i 0.25 -v 3306 db1");
        assert_eq!(run1.config.health.interval, Duration::from_millis(250));
        assert!(run1.config.log.level.contains("galera_lb=debug"));
        assert!(error("-i 0 3306 db1").contains("-i/--interval: '0'"));
        assert!(error("-i soon 3306 db1").contains("-i/--interval"));
        for line in ["-V", "--version"] {
            match parse(&args(line)).unwrap() {
                GlbdInvocation::Version(text) => {
                    assert!(text.starts_with("galera-lb v"), "{text}");
                    assert!(text.contains(env!("CARGO_PKG_VERSION")));
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(run("-V 3306 db1").print_version);
        for line in ["-h", "--help", "-h 3306 db1", "--he"] {
            match parse(&args(line)).unwrap() {
                GlbdInvocation::Help(text) => {
                    assert!(text.contains("--round-robin") && text.contains("--pid-file"))
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn getopt_style_bundles_prefixes_and_interleaving() {
        let run1 = run("-dnK -t2 --thr 3 3306 db1 -r db2");
        assert!(run1.daemon);
        assert!(!run1.config.tcp.nodelay);
        assert_eq!(run1.config.tcp.keepalive, None);
        // A repeated option overrides the earlier one, as with getopt.
        assert_eq!(run1.config.runtime.worker_threads, Some(3));
        assert_eq!(run1.config.listeners[0].policy, PolicyKind::Random);
        assert_eq!(run1.config.backends.len(), 2);
        let run2 = run("3306 -- db1");
        assert_eq!(run2.config.backends[0].address, "db1:3306");
    }

    #[test]
    fn unknown_options_are_errors_naming_the_option() {
        for (line, option) in [
            ("--frobnicate 3306 db1", "--frobnicate"),
            ("-z 3306 db1", "-z"),
            ("-dz 3306 db1", "-z"),
            ("--r 3306 db1", "--r"),
        ] {
            let message = error(line);
            assert!(message.contains(option), "{line}: {message}");
        }
        assert!(error("3306 db1 -t").contains("--threads"));
    }

    #[test]
    fn unsupported_options_warn() {
        let run =
            run("-l -a -Y -x 0.5 -L 3 -f /tmp/glbd.fifo 3306 db1 -w exec:/usr/bin/check.sh -D");
        let warnings = run.warnings.join("\n");
        for option in [
            "-l/--linger",
            "-a/--defer-accept",
            "-Y",
            "-x/--extra 0.5",
            "-L/--latency 3",
            "-f/--fifo /tmp/glbd.fifo",
            "-w/--watchdog exec:/usr/bin/check.sh",
            "-D/--discover",
        ] {
            assert!(warnings.contains(option), "{option} in:\n{warnings}");
        }
        assert_eq!(run.config.health.check, CheckKind::None);
        assert_eq!(run.config.discover, Discover::None);
        // Disabled values are nothing to warn about; bad values are errors.
        assert!(self::run("-x 0 -L 0 3306 db1").warnings.is_empty());
        assert!(error("-x -1 3306 db1").contains("-x/--extra"));
        assert!(error("-L many 3306 db1").contains("-L/--latency"));
    }

    #[test]
    fn watchdog_passwords_never_show_in_messages() {
        let parsed = |watchdog: &str| {
            let mut line: Vec<OsString> = vec!["-w".into(), watchdog.into()];
            line.extend(args("3306 db1"));
            parse(&line)
        };
        let Ok(GlbdInvocation::Run(run)) =
            parsed("exec:/usr/bin/check.sh -umonitor -p's3cr3t pass' --ssl")
        else {
            panic!()
        };
        let warning = run
            .warnings
            .iter()
            .find(|w| w.contains("check.sh"))
            .expect("a warning about the watchdog");
        assert!(warning.contains("-umonitor -p****"), "{warning}");
        assert!(
            !warning.contains("s3cr3t") && !warning.contains("pass'"),
            "{warning}"
        );
        for watchdog in [
            "exec:\"mysql.sh -uroot -psecret12",
            "exec:\"mysql.sh -uroot --password=secret12",
            "nope:-psecret12",
        ] {
            let message = parsed(watchdog).unwrap_err().to_string();
            assert!(message.contains("-w/--watchdog"), "{watchdog}: {message}");
            assert!(!message.contains("secret12"), "{watchdog}: {message}");
        }
        assert_eq!(mask_passwords("mysql.sh -u u -p"), "mysql.sh -u u -p");
        assert_eq!(mask_passwords("mysql.sh -P 3306"), "mysql.sh -P 3306");
        assert_eq!(mask_passwords("a \"-px y\""), "a \"-p****");
        let check = mysql_sh_check(&["-uu".to_string(), "-phidden".to_string()]);
        assert!(!format!("{check:?}").contains("hidden"));
    }

    #[test]
    fn a_mysql_sh_watchdog_becomes_the_wsrep_check() {
        let watchdog = ["-w", "exec:mysql.sh -d 3 -umonitor -p's3cr3t pass'"];
        let mut line: Vec<OsString> = watchdog.iter().map(OsString::from).collect();
        line.extend(args("-D -i 2.5 3306 db1 db2"));
        let Ok(GlbdInvocation::Run(run)) = parse(&line) else {
            panic!()
        };
        let health = &run.config.health;
        assert_eq!(health.check, CheckKind::Wsrep);
        assert_eq!(health.user, "monitor");
        assert_eq!(
            health.resolve_password(SOURCE).unwrap().expose(),
            "s3cr3t pass"
        );
        assert!(health.available_when_donor);
        assert_eq!(health.interval, Duration::from_millis(2500));
        assert_eq!(run.config.discover, Discover::Wsrep);
        assert!(run.warnings.is_empty(), "{:?}", run.warnings);

        let check = |spec: &str| match parse_watchdog(spec).unwrap() {
            Watchdog::MysqlSh(check) => check,
            other => panic!("{spec}: {other:?}"),
        };
        let long = check("exec:/usr/local/bin/mysql.sh --user=u --password=p --ssl");
        assert_eq!((long.user.as_str(), long.password.expose()), ("u", "p"));
        assert!(!long.donor_serves);
        assert!(long.warnings.iter().any(|w| w.contains("--ssl")));
        let spaced = check("exec:mysql.sh -u u2 -d 2");
        assert_eq!(spaced.user, "u2");
        assert!(spaced.warnings.iter().any(|w| w.contains("-d 2")));
        assert!(
            check("exec:mysql.sh -px")
                .warnings
                .iter()
                .any(|w| w.contains("no -u"))
        );

        assert_eq!(parse_watchdog("dummy").unwrap(), Watchdog::Dummy);
        assert!(matches!(
            parse_watchdog("exec:mysql -uroot").unwrap(),
            Watchdog::Unsupported(_)
        ));
        assert!(error("-w exec: 3306 db1").contains("needs a command line"));
        assert!(error("-w snmp:x 3306 db1").contains("'snmp' watchdog"));
        assert!(error("-w exec:'open 3306 db1").contains("not closed"));
    }

    #[test]
    fn pid_and_log_files_are_made_absolute() {
        let run = run("--pid-file glbd.pid --log-file=/var/log/glbd.log 3306 db1");
        let pid = run.pid_file.unwrap();
        assert!(pid.is_absolute() && pid.ends_with("glbd.pid"), "{pid:?}");
        assert_eq!(run.log_file.unwrap(), Path::new("/var/log/glbd.log"));
        assert!(error("--pid-file= 3306 db1").contains("--pid-file"));
    }

    #[test]
    fn the_open_files_limit_is_raised_for_max_conn() {
        assert_eq!(raise_fd_limit(1), None);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        if limit.rlim_cur >= 1064 {
            assert_eq!(raise_fd_limit(500), None);
        }
        // Far more than any hard limit allows: a warning, not an error.
        let warning = raise_fd_limit(u32::MAX).unwrap();
        assert!(warning.contains("-m/--max_conn"), "{warning}");
    }

    #[test]
    fn shell_word_splitting() {
        assert_eq!(
            shell_words(r#"a 'b c' "d \"e\"" f\ g  "#).unwrap(),
            ["a", "b c", "d \"e\"", "f g"]
        );
        assert_eq!(shell_words("-p''").unwrap(), ["-p"]);
        assert!(shell_words("\"open").is_err());
    }

    #[test]
    fn the_parent_reads_the_daemons_report() {
        let pipe = || {
            let mut fds = [0; 2];
            // SAFETY: pipe writes two new descriptors into the array.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: both are new and owned by nothing else.
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
        };
        let wait = |read| wait_for_daemon(read, Duration::from_secs(5));
        let (read, write) = pipe();
        Readiness {
            pipe: write,
            release_stderr: false,
        }
        .ready();
        assert_eq!(wait(read), 0);
        let (read, write) = pipe();
        Readiness {
            pipe: write,
            release_stderr: false,
        }
        .failed(64);
        assert_eq!(wait(read), 64);
        let (read, write) = pipe();
        drop(write);
        assert_eq!(wait(read), 1);
        let (read, _write) = pipe();
        assert_eq!(wait_for_daemon(read, Duration::from_millis(50)), 1);
    }
}
