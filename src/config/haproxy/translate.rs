//! HAProxy directives mapped onto galera-lb's YAML configuration.
//!
//! The translation follows HAProxy's own resolution: a proxy (`listen`, `frontend`, `backend`)
//! starts from the last `defaults` section before it, its own lines override, `default-server`
//! applies to the `server` lines after it. Then:
//!
//! - every `listen` with `bind` lines, and every `frontend` with a `default_backend` (or an
//!   unconditional `use_backend`), becomes one listener per bound address; an address on the
//!   `listen` or `frontend` line itself (HAProxy 1.x, as Codership's and Percona's instructions
//!   print it; HAProxy 2.x refuses it) counts as a `bind` line, with a warning;
//! - every `listen` with servers and every used `backend` becomes a pool of the same name;
//! - the settings galera-lb has once (timeouts, health checks, keepalive) come from the first
//!   section that sets them, with a warning when another section wants a different value;
//!   a checked server that leaves `inter`, `rise` or `fall` unsaid gets HAProxy's defaults (2s,
//!   2, 3), and without `timeout check` a check may take the whole `inter`, as in HAProxy;
//! - a stats page becomes the admin port, with a warning that HAProxy's page is not reproduced:
//!   a `stats` or `prometheus-exporter` section, or a frontend whose `default_backend` is a
//!   stats-only backend (Percona's `stats-front` and `stats-back`), `mode http` or not;
//!   `stats auth` credentials are never copied or quoted.
//!
//! Every setting written is preceded by `# from FILE:LINE: <directive>`; every directive that
//! has no effect in galera-lb gives a warning naming its line; what an L4 proxy cannot serve
//! (`mode http` beyond a stats page, `acl`, conditional `use_backend` or `tcp-request` rules, TLS
//! on `bind`) is an error naming its line. Nothing here panics on any input.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::parse::{Line, Section, SectionKind, parse};

/// How to translate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Keep HAProxy's own checks: `option mysql-check` becomes the handshake-only check rather
    /// than galera-lb's wsrep check.
    pub keep_checks: bool,
}

/// A successful translation.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The galera-lb configuration, with its comments.
    pub yaml: String,
    /// `FILE:LINE: what was ignored or approximated, and why`.
    pub warnings: Vec<String>,
}

/// Sections that galera-lb cannot serve; each message names `FILE:LINE`.
#[derive(Debug, Clone)]
pub struct TranslateError {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.errors.join("\n"))
    }
}

impl std::error::Error for TranslateError {}

/// Where a setting comes from: a line of the HAProxy file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    line: usize,
    text: String,
}

impl Origin {
    fn of(line: &Line) -> Origin {
        Origin {
            line: line.number,
            text: line.text.clone(),
        }
    }
}

/// How a proxy checks its servers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CheckSpec {
    /// `option mysql-check [user X]`.
    Mysql { user: Option<String> },
    /// `option httpchk [METHOD] [URI]` (or `http-check send`).
    Http { method: String, path: String },
    /// `option tcp-check`, or no check option: a TCP connect.
    Tcp,
}

/// What a proxy inherits from `defaults` and may override.
#[derive(Debug, Clone, Default)]
struct ProxySettings {
    mode: Option<(String, Origin)>,
    balance: Option<(String, Origin)>,
    timeout_connect: Option<(Duration, Origin)>,
    timeout_client: Option<(Duration, Origin)>,
    timeout_server: Option<(Duration, Origin)>,
    timeout_check: Option<(Duration, Origin)>,
    retries: Option<Origin>,
    redispatch: Option<Origin>,
    tcpka: Option<Origin>,
    check: Option<(CheckSpec, Origin)>,
    http_send: Option<(String, String, Origin)>,
    http_expect: Option<(u16, Origin)>,
    allbackups: Option<Origin>,
    maxconn: Option<(u32, Origin)>,
    default_server: Vec<Line>,
}

/// One `server` line, resolved with the `default-server` lines before it.
#[derive(Debug, Clone, Default)]
struct Server {
    name: String,
    address: String,
    origin: Option<Origin>,
    weight: Option<u32>,
    check: bool,
    inter: Option<Duration>,
    fast_or_down_inter: bool,
    rise: Option<u32>,
    fall: Option<u32>,
    port: Option<u16>,
    backup: bool,
    disabled: bool,
    maxconn: Option<u32>,
    proxy_protocol: Option<&'static str>,
    shutdown_sessions: bool,
}

/// One bound address of a `bind` line.
#[derive(Debug, Clone)]
struct Bind {
    address: String,
    accept_proxy: bool,
    origin: Origin,
}

/// A `listen`, `frontend` or `backend` section, read.
#[derive(Debug, Clone)]
struct Proxy {
    kind: SectionKind,
    name: String,
    header: Origin,
    settings: ProxySettings,
    binds: Vec<Bind>,
    servers: Vec<Server>,
    backend: Option<(String, Origin)>,
    /// The first `stats enable` or `stats uri` line (or a Prometheus exporter rule).
    stats: Option<Origin>,
    /// The path of the `stats uri` line, and the line, when there is one.
    stats_uri: Option<(String, Origin)>,
    /// For a frontend whose `default_backend` is a stats-only backend: that backend's header.
    stats_backend: Option<Origin>,
    /// A `use_backend ... if|unless` line: the frontend routes on content.
    conditional_backend: bool,
    /// What a TCP proxy cannot serve (`mode http`, ACLs, conditional rules): errors unless the
    /// section turns out to be a stats page (decided once every section is read).
    layer7: Vec<(usize, String)>,
    disabled: bool,
}

impl Proxy {
    /// A stats page and nothing else: stats directives, no servers, no backend to route to.
    fn is_stats_only(&self) -> bool {
        self.stats.is_some() && self.servers.is_empty() && self.backend.is_none()
    }
}

/// Collects errors and warnings, each prefixed with `FILE:LINE: `.
struct Notes<'a> {
    file: &'a str,
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl Notes<'_> {
    fn warn(&mut self, line: usize, message: impl fmt::Display) {
        self.warnings
            .push(format!("{}:{line}: {message}", self.file));
    }

    fn error(&mut self, line: usize, message: impl fmt::Display) {
        self.errors.push(format!("{}:{line}: {message}", self.file));
    }

    fn ignored(&mut self, line: &Line, why: &str) {
        self.warn(line.number, format!("ignored: {} ({why})", line.text));
    }
}

/// Translates HAProxy configuration `text`; `file` names it in comments and messages.
pub fn translate(text: &str, file: &str, options: &Options) -> Result<Translation, TranslateError> {
    let mut notes = Notes {
        file,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let sections = parse(text);
    let mut global_maxconn: Option<(u32, Origin)> = None;
    let mut defaults = ProxySettings::default();
    let mut proxies: Vec<Proxy> = Vec::new();
    for section in &sections {
        match &section.kind {
            SectionKind::None => {
                for line in &section.lines {
                    notes.ignored(line, "outside any section");
                }
            }
            SectionKind::Global => read_global(section, &mut global_maxconn, &mut notes),
            SectionKind::Defaults => {
                let mut settings = ProxySettings::default();
                for line in &section.lines {
                    read_setting(line, &mut settings, true, &mut notes);
                }
                defaults = settings;
            }
            SectionKind::Listen | SectionKind::Frontend | SectionKind::Backend => {
                proxies.push(read_proxy(section, &defaults, &mut notes));
            }
            SectionKind::Other(keyword) => {
                notes.warn(
                    section.header.number,
                    format!("ignored: the section `{}` ({keyword} sections have no meaning for galera-lb)", section.header.text),
                );
            }
        }
    }
    resolve_stats_pages(&mut proxies, &mut notes);
    let yaml = assemble(file, &proxies, global_maxconn, options, &mut notes);
    // A directive inherited from `defaults` is reported once, not once per section.
    let mut seen = std::collections::HashSet::new();
    notes.warnings.retain(|w| seen.insert(w.clone()));
    let mut seen = std::collections::HashSet::new();
    notes.errors.retain(|e| seen.insert(e.clone()));
    if notes.errors.is_empty() {
        Ok(Translation {
            yaml,
            warnings: notes.warnings,
        })
    } else {
        Err(TranslateError {
            errors: notes.errors,
            warnings: notes.warnings,
        })
    }
}

fn read_global(section: &Section, maxconn: &mut Option<(u32, Origin)>, notes: &mut Notes) {
    for line in &section.lines {
        match line.keyword() {
            "maxconn" => match line.word(1).parse::<u32>() {
                Ok(n) if n > 0 => *maxconn = Some((n, Origin::of(line))),
                _ => notes.error(line.number, format!("`{}`: maxconn needs a number above 0", line.text)),
            },
            "nbthread" | "nbproc" | "cpu-map" => {
                notes.ignored(line, "galera-lb runs one tokio worker per core; set runtime.worker_threads to choose")
            }
            "stats" => notes.ignored(line, "use galera-lb's control port (glbd protocol) and admin port instead of the stats socket"),
            "log" | "log-tag" | "log-send-hostname" => notes.ignored(line, "galera-lb logs to stderr; set log.level and log.format"),
            "chroot" | "user" | "group" | "uid" | "gid" | "daemon" | "pidfile" | "master-worker" | "ulimit-n" | "node" | "description" | "quiet" | "setenv" | "presetenv" | "unsetenv" | "resetenv" | "hard-stop-after" | "mworker-max-reloads" => {
                notes.ignored(line, "a process setting: run galera-lb under systemd or the glbd drop-in for these")
            }
            _ => notes.ignored(line, "no galera-lb equivalent"),
        }
    }
}

/// Reads a setting that `defaults` and proxies share. Returns false when `line` is not one.
fn read_setting(line: &Line, s: &mut ProxySettings, in_defaults: bool, notes: &mut Notes) -> bool {
    let origin = Origin::of(line);
    match line.keyword() {
        "mode" => s.mode = Some((line.word(1).to_string(), origin)),
        "balance" => s.balance = Some((line.word(1).to_string(), origin)),
        "timeout" | "contimeout" | "clitimeout" | "srvtimeout" => {
            let (which, value) = match line.keyword() {
                "contimeout" => ("connect", line.word(1)),
                "clitimeout" => ("client", line.word(1)),
                "srvtimeout" => ("server", line.word(1)),
                _ => (line.word(1), line.word(2)),
            };
            let Some(duration) = parse_time(value) else {
                notes.error(
                    line.number,
                    format!(
                        "`{}`: '{value}' is not a time (e.g. 5s, 500ms, 1m; at most \
                         2147483647ms, about 24d, as in HAProxy)",
                        line.text
                    ),
                );
                return true;
            };
            match which {
                "connect" => s.timeout_connect = Some((duration, origin)),
                "client" => s.timeout_client = Some((duration, origin)),
                "server" => s.timeout_server = Some((duration, origin)),
                "check" => s.timeout_check = Some((duration, origin)),
                _ => notes.ignored(line, "galera-lb has no such timeout"),
            }
        }
        "retries" => s.retries = Some(origin),
        // HAProxy 1.x's spelling of `option redispatch`.
        "redispatch" => s.redispatch = Some(origin),
        // Only `defaults` gets here (a proxy reads its stats lines itself).
        "stats" if line.word(1) == "auth" => notes.warn(line.number, STATS_AUTH_IGNORED),
        "stats" => notes.ignored(
            line,
            "part of HAProxy's stats page; galera-lb's admin port has its own",
        ),
        "maxconn" => match line.word(1).parse::<u32>() {
            Ok(n) if n > 0 => s.maxconn = Some((n, origin)),
            _ => notes.error(
                line.number,
                format!("`{}`: maxconn needs a number above 0", line.text),
            ),
        },
        "default-server" => s.default_server.push(line.clone()),
        "http-check" if line.word(1) == "expect" => {
            let (negate, rest) = if line.word(2) == "!" {
                (true, 3)
            } else {
                (false, 2)
            };
            match (line.word(rest), line.word(rest + 1).parse::<u16>()) {
                ("status", Ok(code)) if !negate && (100..=599).contains(&code) => {
                    s.http_expect = Some((code, origin))
                }
                _ => notes.warn(
                    line.number,
                    format!(
                        "`{}`: galera-lb's http check expects one status; it keeps expecting 200",
                        line.text
                    ),
                ),
            }
        }
        "http-check" if line.word(1) == "send" => {
            let mut method = "OPTIONS".to_string();
            let mut path = "/".to_string();
            let mut i = 2;
            while i < line.words.len() {
                match line.word(i) {
                    "meth" => method = line.word(i + 1).to_string(),
                    "uri" => path = line.word(i + 1).to_string(),
                    other => notes.warn(
                        line.number,
                        format!(
                            "`{other}` in `{}` is not sent by galera-lb's http check",
                            line.text
                        ),
                    ),
                }
                i += 2;
            }
            s.http_send = Some((method, path, origin));
        }
        "option" | "no" => {
            let negated = line.keyword() == "no";
            let (name, args) = if negated {
                (line.word(2), 3)
            } else {
                (line.word(1), 2)
            };
            if negated && line.word(1) != "option" {
                return false;
            }
            match name {
                "redispatch" => s.redispatch = (!negated).then_some(origin),
                "tcpka" | "clitcpka" | "srvtcpka" => s.tcpka = (!negated).then_some(origin),
                "allbackups" => s.allbackups = (!negated).then_some(origin),
                "mysql-check" => {
                    let user = (line.word(args) == "user" && !line.word(args + 1).is_empty())
                        .then(|| line.word(args + 1).to_string());
                    s.check = Some((CheckSpec::Mysql { user }, origin));
                }
                "httpchk" => {
                    let words: Vec<&str> = line.words[args.min(line.words.len())..]
                        .iter()
                        .map(String::as_str)
                        .collect();
                    let (method, path) = match words.as_slice() {
                        [] => ("OPTIONS", "/"),
                        [path] => ("OPTIONS", *path),
                        [method, path, ..] => (*method, *path),
                    };
                    s.check = Some((
                        CheckSpec::Http {
                            method: method.to_string(),
                            path: path.to_string(),
                        },
                        origin,
                    ));
                }
                "tcp-check" => s.check = Some((CheckSpec::Tcp, origin)),
                "pgsql-check" | "redis-check" | "smtpchk" | "ldap-check" | "ssl-hello-chk"
                | "external-check" | "spop-check" => {
                    notes.warn(line.number, format!("`{}`: not a MySQL check; galera-lb uses a TCP connect (prefer option mysql-check)", line.text));
                    s.check = Some((CheckSpec::Tcp, origin));
                }
                "tcplog"
                | "httplog"
                | "dontlognull"
                | "log-health-checks"
                | "logasap"
                | "dontlog-normal"
                | "log-separate-errors" => {
                    notes.ignored(line, "galera-lb logs to stderr; set log.level")
                }
                _ => notes.ignored(line, "no galera-lb equivalent"),
            }
        }
        "log" => notes.ignored(
            line,
            "galera-lb logs to stderr; set log.level and log.format",
        ),
        _ => {
            if in_defaults {
                notes.ignored(line, "no galera-lb equivalent");
            }
            return !in_defaults;
        }
    }
    true
}

fn read_proxy(section: &Section, defaults: &ProxySettings, notes: &mut Notes) -> Proxy {
    let header = Origin::of(&section.header);
    let mut proxy = Proxy {
        kind: section.kind.clone(),
        name: section.name.clone().unwrap_or_default(),
        header: header.clone(),
        settings: defaults.clone(),
        binds: Vec::new(),
        servers: Vec::new(),
        backend: None,
        stats: None,
        stats_uri: None,
        stats_backend: None,
        conditional_backend: false,
        layer7: Vec::new(),
        disabled: false,
    };
    if proxy.name.is_empty() {
        notes.error(header.line, format!("`{}` has no name", header.text));
    }
    read_header_address(section, &mut proxy.binds, notes);
    let mut ignored: Vec<(Line, &'static str)> = Vec::new();
    for line in &section.lines {
        let origin = Origin::of(line);
        match line.keyword() {
            "bind" => read_bind(line, &mut proxy.binds, notes),
            "server" => {
                let server = read_server(line, &proxy.settings.default_server, notes);
                proxy.servers.push(server);
            }
            "server-template" => notes.warn(
                line.number,
                format!(
                    "ignored: `{}` (list the servers, or use a DNS name with resolve_every)",
                    line.text
                ),
            ),
            "default_backend" => proxy.backend = Some((line.word(1).to_string(), origin)),
            "use_backend" => {
                if matches!(line.word(2), "if" | "unless") {
                    proxy.conditional_backend = true;
                    proxy.layer7.push((line.number, format!("`{}`: conditional routing (use_backend with a condition) needs a layer 7 proxy; galera-lb sends every client of a listener to one pool", line.text)));
                } else {
                    proxy.backend = Some((line.word(1).to_string(), origin));
                }
            }
            "acl" => proxy.layer7.push((
                line.number,
                format!(
                    "`{}`: ACLs need content inspection; galera-lb is a TCP (layer 4) proxy",
                    line.text
                ),
            )),
            "tcp-request" | "tcp-response" => {
                if line.words.iter().any(|w| w == "if" || w == "unless") {
                    proxy.layer7.push((line.number, format!("`{}`: conditional rules need content inspection; galera-lb is a TCP (layer 4) proxy (allow clients with the firewall)", line.text)));
                } else {
                    ignored.push((line.clone(), "no galera-lb equivalent"));
                }
            }
            "http-request" if line.words.iter().any(|w| w == "prometheus-exporter") => {
                proxy.stats = Some(origin)
            }
            "stats" => {
                if line.word(1) == "uri" {
                    proxy.stats_uri = Some((line.word(2).to_string(), origin.clone()));
                }
                if proxy.stats.is_none() && matches!(line.word(1), "enable" | "uri") {
                    proxy.stats = Some(origin);
                } else if line.word(1) == "auth" {
                    // Never the line itself: it holds a user name and password.
                    notes.warn(line.number, STATS_AUTH_IGNORED);
                } else {
                    ignored.push((
                        line.clone(),
                        "part of HAProxy's stats page; galera-lb's admin port has its own",
                    ));
                }
            }
            "disabled" => proxy.disabled = true,
            "enabled" | "description" | "id" | "log" => {
                ignored.push((line.clone(), "no galera-lb equivalent"))
            }
            _ => {
                if !read_setting(line, &mut proxy.settings, false, notes) {
                    ignored.push((line.clone(), "no galera-lb equivalent"));
                }
            }
        }
    }
    for (line, why) in ignored {
        notes.ignored(&line, why);
    }
    if proxy.disabled {
        notes.warn(
            header.line,
            format!("ignored: `{}` is disabled", header.text),
        );
        return proxy;
    }
    if let Some((mode, origin)) = &proxy.settings.mode {
        if mode != "tcp" {
            proxy.layer7.push((
                origin.line,
                format!(
                    "{} '{}' (line {}) is in mode {mode} (`{}`): galera-lb is a TCP (layer 4) proxy; only mode tcp sections can be served",
                    section_word(&proxy.kind), proxy.name, header.line, origin.text
                ),
            ));
        }
    }
    proxy
}

/// Why `stats auth` is ignored (the line is never quoted: it holds a password).
const STATS_AUTH_IGNORED: &str = "ignored: stats auth (its user and password are not copied; \
     protect the admin port with admin.token_env or admin.token_file)";

/// Decides which sections are stats pages: a stats-only section (stats directives, no servers,
/// no backend), and a frontend whose only route is a `default_backend` (or unconditional
/// `use_backend`) naming a stats-only backend, such as Percona's `stats-front` and `stats-back`.
/// Such a frontend takes the backend's stats line and becomes stats-only itself. Then reports
/// the layer 7 errors of every other section.
fn resolve_stats_pages(proxies: &mut [Proxy], notes: &mut Notes) {
    type StatsPage = (Origin, Option<(String, Origin)>, Origin);
    let stats_backends: HashMap<String, StatsPage> = proxies
        .iter()
        .filter(|p| p.kind == SectionKind::Backend && !p.disabled && p.is_stats_only())
        .filter_map(|p| {
            let stats = p.stats.clone()?;
            Some((
                p.name.clone(),
                (stats, p.stats_uri.clone(), p.header.clone()),
            ))
        })
        .collect();
    for proxy in proxies.iter_mut() {
        if proxy.kind == SectionKind::Backend
            || proxy.disabled
            || !proxy.servers.is_empty()
            || proxy.conditional_backend
        {
            continue;
        }
        let Some((name, _)) = &proxy.backend else {
            continue;
        };
        if let Some((stats, uri, header)) = stats_backends.get(name) {
            proxy.stats.get_or_insert_with(|| stats.clone());
            if proxy.stats_uri.is_none() {
                proxy.stats_uri.clone_from(uri);
            }
            proxy.stats_backend = Some(header.clone());
            proxy.backend = None;
        }
    }
    for proxy in proxies.iter() {
        if proxy.disabled || proxy.is_stats_only() {
            continue;
        }
        for (line, message) in &proxy.layer7 {
            notes.error(*line, message);
        }
    }
}

/// HAProxy 1.x's `listen NAME ADDRESS[,ADDRESS...]` (and `frontend NAME ADDRESS`): the address
/// read as a `bind` line, with a warning (HAProxy 2.x refuses this form). A backend cannot
/// listen: an address there is ignored, with a warning.
fn read_header_address(section: &Section, binds: &mut Vec<Bind>, notes: &mut Notes) {
    let header = &section.header;
    let address = header.word(2);
    if address.is_empty() {
        return;
    }
    if section.kind == SectionKind::Backend {
        notes.warn(
            header.number,
            format!(
                "ignored: '{address}' in `{}` (a backend does not listen; HAProxy refuses this too)",
                header.text
            ),
        );
        return;
    }
    notes.warn(
        header.number,
        format!(
            "`{}`: an address on the {} line is HAProxy 1.x syntax (HAProxy 2.x refuses it); read \
             as `bind {address}`. Write `bind {address}` as the section's first line and drop the \
             address here, and the file suits both",
            header.text,
            section_word(&section.kind),
        ),
    );
    let bind = Line {
        number: header.number,
        words: std::iter::once("bind".to_string())
            .chain(header.words.iter().skip(2).cloned())
            .collect(),
        text: header.text.clone(),
    };
    read_bind(&bind, binds, notes);
}

fn section_word(kind: &SectionKind) -> &'static str {
    match kind {
        SectionKind::Listen => "listen",
        SectionKind::Frontend => "frontend",
        SectionKind::Backend => "backend",
        _ => "section",
    }
}

fn read_bind(line: &Line, binds: &mut Vec<Bind>, notes: &mut Notes) {
    let origin = Origin::of(line);
    let mut accept_proxy = false;
    for option in line.words.iter().skip(2) {
        match option.as_str() {
            "accept-proxy" => accept_proxy = true,
            "ssl" | "crt" | "quic" => {
                notes.error(line.number, format!("`{}`: TLS on bind is not something galera-lb terminates (MySQL negotiates TLS inside its own protocol; let the client and server do it)", line.text));
                return;
            }
            _ => {}
        }
    }
    let options: Vec<&str> = line.words.iter().skip(2).map(String::as_str).collect();
    let extra: Vec<&str> = options
        .iter()
        .copied()
        .filter(|o| *o != "accept-proxy")
        .collect();
    if !extra.is_empty() {
        notes.warn(
            line.number,
            format!(
                "bind options ignored: {} (no galera-lb equivalent)",
                extra.join(" ")
            ),
        );
    }
    if line.word(1).is_empty() {
        notes.error(line.number, "`bind` needs an address");
        return;
    }
    for address in line.word(1).split(',') {
        match bind_address(address) {
            Ok(address) => binds.push(Bind {
                address,
                accept_proxy,
                origin: origin.clone(),
            }),
            Err(reason) => notes.error(line.number, format!("`{}`: {reason}", line.text)),
        }
    }
}

/// HAProxy's bind address (`*:3306`, `:3306`, `10.0.0.1:3306`, `:::3306`, `[::]:3306`,
/// `ipv6@::1:3306`) as galera-lb's `IP:PORT`.
fn bind_address(address: &str) -> Result<String, String> {
    let (host, port) = split_address(address)?;
    let port = port.ok_or_else(|| format!("'{address}' has no port"))?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
        format!("'{address}': galera-lb binds one port per address, not '{port}'")
    })?;
    let ip: IpAddr = match host.as_str() {
        "" | "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        host => host.parse().map_err(|_| {
            format!("'{address}': galera-lb binds IP addresses, not names: write the IP")
        })?,
    };
    Ok(std::net::SocketAddr::new(ip, port).to_string())
}

/// Splits an HAProxy address into host and port (if any), refusing what galera-lb cannot use
/// (UNIX sockets, inherited descriptors, UDP).
fn split_address(address: &str) -> Result<(String, Option<String>), String> {
    let mut rest = address;
    if let Some((family, after)) = address.split_once('@') {
        match family {
            "ipv4" | "ipv6" | "tcp" | "tcp4" | "tcp6" => rest = after,
            _ => {
                return Err(format!(
                    "'{address}': galera-lb only uses TCP addresses, not {family}@"
                ));
            }
        }
    }
    if rest.starts_with('/') {
        return Err(format!(
            "'{address}': galera-lb only uses TCP addresses, not UNIX sockets"
        ));
    }
    if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("'{address}': unbalanced brackets"))?;
        let port = after.strip_prefix(':').map(str::to_string);
        return Ok((host.to_string(), port.filter(|p| !p.is_empty())));
    }
    match rest.rsplit_once(':') {
        // HAProxy takes the last colon as the port's, also for IPv6 (`:::3306`, `::1:3306`).
        Some((host, port)) => {
            if host.contains(':') && host.parse::<IpAddr>().is_err() && !host.is_empty() {
                // `fe80::1` without a port: the last group is not a port.
                if rest.parse::<IpAddr>().is_ok() {
                    return Ok((rest.to_string(), None));
                }
            }
            Ok((
                host.to_string(),
                Some(port.to_string()).filter(|p| !p.is_empty()),
            ))
        }
        None => Ok((rest.to_string(), None)),
    }
}

/// A server's options, from `default-server` lines and the `server` line itself.
fn read_server(line: &Line, default_server: &[Line], notes: &mut Notes) -> Server {
    let mut server = Server::default();
    for defaults in default_server {
        server_options(defaults, 1, &mut server, notes);
    }
    server.name = line.word(1).to_string();
    server.origin = Some(Origin::of(line));
    if line.word(2).is_empty() {
        notes.error(
            line.number,
            format!("`{}`: a server needs a name and an address", line.text),
        );
        return server;
    }
    server.address = line.word(2).to_string();
    server_options(line, 3, &mut server, notes);
    server
}

/// Server options that take no argument.
const SERVER_FLAGS: &[&str] = &[
    "check",
    "no-check",
    "backup",
    "no-backup",
    "disabled",
    "enabled",
    "send-proxy",
    "no-send-proxy",
    "send-proxy-v2",
    "no-send-proxy-v2",
    "send-proxy-v2-ssl",
    "send-proxy-v2-ssl-cn",
    "check-send-proxy",
    "agent-check",
    "no-agent-check",
    "ssl",
    "no-ssl",
    "check-ssl",
    "no-check-ssl",
    "tfo",
    "non-stick",
    "stick",
    "allow-0rtt",
    "no-tls-tickets",
    "force-sslv3",
    "force-tlsv10",
    "force-tlsv11",
    "force-tlsv12",
    "force-tlsv13",
    "no-sslv3",
    "no-tlsv10",
    "no-tlsv11",
    "no-tlsv12",
    "no-tlsv13",
    "tls-tickets",
    "no-verifyhost",
    "check-reuse-pool",
    "ws",
];

fn server_options(line: &Line, start: usize, server: &mut Server, notes: &mut Notes) {
    let mut i = start;
    let mut ignored: Vec<String> = Vec::new();
    while i < line.words.len() {
        let option = line.word(i);
        let value = line.word(i + 1);
        let takes_value = !SERVER_FLAGS.contains(&option);
        let number = || value.parse::<u32>().ok();
        let mut bad = |what: &str| {
            notes.error(
                line.number,
                format!("`{}`: {option} needs {what}, not '{value}'", line.text),
            );
        };
        match option {
            "check" => server.check = true,
            "no-check" => server.check = false,
            "backup" => server.backup = true,
            "no-backup" => server.backup = false,
            "disabled" => server.disabled = true,
            "enabled" => server.disabled = false,
            "send-proxy" => server.proxy_protocol = Some("v1"),
            "send-proxy-v2" => server.proxy_protocol = Some("v2"),
            "no-send-proxy" | "no-send-proxy-v2" => server.proxy_protocol = None,
            "send-proxy-v2-ssl" | "send-proxy-v2-ssl-cn" => {
                server.proxy_protocol = Some("v2");
                ignored.push(format!(
                    "{option} (sent as plain send-proxy-v2: no TLS fields)"
                ));
            }
            "weight" => match number().filter(|w| *w <= 256) {
                Some(w) => server.weight = Some(w),
                None => bad("a number from 0 to 256"),
            },
            "inter" => match parse_time(value).filter(|d| !d.is_zero()) {
                Some(d) => server.inter = Some(d),
                None => bad("a time such as 2s (at most 2147483647ms, about 24d)"),
            },
            "fastinter" | "downinter" => match parse_time(value) {
                Some(_) => server.fast_or_down_inter = true,
                None => bad("a time such as 2s (at most 2147483647ms, about 24d)"),
            },
            "rise" | "fall" => match number().filter(|n| *n > 0) {
                Some(n) if option == "rise" => server.rise = Some(n),
                Some(n) => server.fall = Some(n),
                None => bad("a number above 0"),
            },
            "port" => match value.parse::<u16>().ok().filter(|p| *p > 0) {
                Some(p) => server.port = Some(p),
                None => bad("a port"),
            },
            "maxconn" => match number() {
                Some(0) => server.maxconn = None,
                Some(n) => server.maxconn = Some(n),
                None => bad("a number"),
            },
            "on-marked-down" => match value {
                "shutdown-sessions" => server.shutdown_sessions = true,
                _ => ignored.push(format!("on-marked-down {value}")),
            },
            _ if takes_value => ignored.push(format!("{option} {value}")),
            _ => ignored.push(option.to_string()),
        }
        i += if takes_value { 2 } else { 1 };
    }
    if !ignored.is_empty() {
        notes.warn(
            line.number,
            format!(
                "{} options ignored (no galera-lb equivalent): {}",
                line.keyword(),
                ignored.join(", ")
            ),
        );
    }
}

/// HAProxy's check settings when a server does not set them (`inter`, `rise`, `fall`).
const HAPROXY_INTER: Duration = Duration::from_secs(2);
const HAPROXY_RISE: u32 = 2;
const HAPROXY_FALL: u32 = 3;

/// The wsrep check, suggested where a file checks through clustercheck (`option httpchk`).
const WSREP_INSTEAD: &str = "galera-lb can read wsrep status itself, without clustercheck: \
     `check: wsrep` and no check_port, as a user with USAGE only (CREATE USER \
     'monitor'@'GALERA-LB-HOST' IDENTIFIED BY '...', and no GRANT)";

/// The longest time HAProxy takes (2^31 - 1 ms, about 24.8 days; HAProxy refuses more as a
/// "timer overflow"). A longer one is refused here too, naming the line, rather than written
/// into the translation as a value galera-lb would refuse (or could not even read back).
const MAX_TIME: Duration = Duration::from_millis(2_147_483_647);

/// HAProxy's time format: a number with an optional unit (`us`, `ms` — the default — `s`,
/// `m`, `h`, `d`), at most [`MAX_TIME`].
pub(crate) fn parse_time(text: &str) -> Option<Duration> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let duration = match unit {
        "us" => Duration::from_micros(n),
        "" | "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        "d" => Duration::from_secs(n.checked_mul(86_400)?),
        _ => return None,
    };
    (duration <= MAX_TIME).then_some(duration)
}

/// A duration as galera-lb writes it (`2s`, `1500ms`).
fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms > 0 && ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else if ms > 0 {
        format!("{ms}ms")
    } else {
        format!("{}us", d.as_micros())
    }
}

/// A YAML scalar for any text (JSON strings are YAML).
fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}

/// One `key: value` with the comments that explain it.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    value: String,
    from: Vec<String>,
}

/// A setting galera-lb has once, taken from the first section that sets it.
struct Once {
    entry: Option<Entry>,
    first_line: usize,
}

impl Once {
    fn new() -> Once {
        Once {
            entry: None,
            first_line: 0,
        }
    }

    /// Sets `value` unless set already; warns when the value differs from the one kept.
    fn set(&mut self, key: &str, value: String, origin: &Origin, what: &str, notes: &mut Notes) {
        self.set_noted(key, value, origin, None, what, notes);
    }

    /// [`Once::set`], with a note after the comment naming `origin` (where a value is HAProxy's
    /// default rather than written on that line, say).
    fn set_noted(
        &mut self,
        key: &str,
        value: String,
        origin: &Origin,
        note: Option<&str>,
        what: &str,
        notes: &mut Notes,
    ) {
        let comment = match note {
            Some(note) => format!("{} ({note})", from(notes.file, origin)),
            None => from(notes.file, origin),
        };
        match &mut self.entry {
            None => {
                self.entry = Some(Entry {
                    key: key.to_string(),
                    value,
                    from: vec![comment],
                });
                self.first_line = origin.line;
            }
            Some(entry) if entry.value == value => {
                if !entry.from.contains(&comment) && entry.from.len() < 3 {
                    entry.from.push(comment);
                }
            }
            Some(entry) => notes.warn(
                origin.line,
                format!(
                    "`{}`: galera-lb has one {what} for every listener; keeping {} from line {}",
                    origin.text, entry.value, self.first_line
                ),
            ),
        }
    }
}

fn from(file: &str, origin: &Origin) -> String {
    format!("from {file}:{}: {}", origin.line, origin.text)
}

/// A listener to write.
struct ListenerOut {
    name: String,
    bind: Entry,
    pool: String,
    header: String,
    fields: Vec<Entry>,
}

/// A pool to write.
struct PoolOut {
    name: String,
    header: String,
    notes: Vec<String>,
    backends: Vec<(String, Vec<Entry>)>,
}

#[allow(clippy::too_many_lines)]
fn assemble(
    file: &str,
    proxies: &[Proxy],
    global_maxconn: Option<(u32, Origin)>,
    options: &Options,
    notes: &mut Notes,
) -> String {
    let by_name: HashMap<&str, &Proxy> = proxies
        .iter()
        .filter(|p| matches!(p.kind, SectionKind::Listen | SectionKind::Backend))
        .map(|p| (p.name.as_str(), p))
        .collect();
    let mut admin: Option<Entry> = None;
    let mut listeners: Vec<ListenerOut> = Vec::new();
    // Backends in the order they are first used, with the listeners' names that use them.
    let mut used: Vec<&str> = Vec::new();
    let mut pool_names: HashMap<String, String> = HashMap::new();
    let mut pool_name = |name: &str| -> String {
        if let Some(known) = pool_names.get(name) {
            return known.clone();
        }
        let mut candidate = if name == crate::config::DEFAULT_POOL {
            format!("{name}-haproxy")
        } else {
            name.to_string()
        };
        while pool_names.values().any(|v| v == &candidate) {
            candidate.push('_');
        }
        pool_names.insert(name.to_string(), candidate.clone());
        candidate
    };
    let mut listener_names: Vec<String> = Vec::new();

    let mut connect_timeout = Once::new();
    let mut idle_timeout = Once::new();
    let mut check_timeout = Once::new();
    let mut keepalive = Once::new();

    for proxy in proxies {
        if proxy.disabled || proxy.kind == SectionKind::Backend {
            continue;
        }
        if let Some(stats) = &proxy.stats {
            if proxy.servers.is_empty() && proxy.backend.is_none() {
                let Some(bind) = proxy.binds.first() else {
                    notes.warn(
                        proxy.header.line,
                        format!(
                            "ignored: `{}` (a stats section without bind)",
                            proxy.header.text
                        ),
                    );
                    continue;
                };
                if admin.is_some() {
                    notes.warn(proxy.header.line, format!("ignored: `{}` (galera-lb has one admin port; the first stats section has it)", proxy.header.text));
                    continue;
                }
                let (page, page_name) = match &proxy.stats_uri {
                    Some((path, origin)) => (origin, format!("HAProxy's stats page ({path})")),
                    None => (stats, "HAProxy's stats page".to_string()),
                };
                notes.warn(
                    page.line,
                    format!(
                        "`{}`: {page_name} is not reproduced; its address {} becomes galera-lb's \
                         admin port, serving / (status page), /status (JSON), /metrics \
                         (Prometheus), /ready and /live",
                        page.text, bind.address
                    ),
                );
                if proxy.binds.len() > 1 {
                    notes.warn(
                        proxy.binds[1].origin.line,
                        "the admin port binds one address; the first bind is used",
                    );
                }
                let mut comments = vec![from(file, &proxy.header)];
                if let Some(backend) = &proxy.stats_backend {
                    comments.push(from(file, backend));
                }
                comments.push(from(file, stats));
                comments.push(from(file, &bind.origin));
                admin = Some(Entry {
                    key: "bind".into(),
                    value: quote(&bind.address),
                    from: comments,
                });
                continue;
            }
        }
        let target: &Proxy = match &proxy.backend {
            Some((name, origin)) => match by_name.get(name.as_str()) {
                Some(backend) if !backend.disabled => backend,
                _ => {
                    notes.error(
                        origin.line,
                        format!("`{}`: no backend named '{name}'", origin.text),
                    );
                    continue;
                }
            },
            None if proxy.kind == SectionKind::Listen => proxy,
            None => {
                notes.error(proxy.header.line, format!("`{}`: a frontend needs a default_backend (or an unconditional use_backend) for galera-lb to send its clients somewhere", proxy.header.text));
                continue;
            }
        };
        if proxy.binds.is_empty() {
            if proxy.kind == SectionKind::Frontend {
                notes.error(
                    proxy.header.line,
                    format!("`{}` has no bind line", proxy.header.text),
                );
            } else if !proxies.iter().any(|p| {
                p.backend
                    .as_ref()
                    .is_some_and(|(name, _)| name == &proxy.name)
            }) {
                notes.warn(
                    proxy.header.line,
                    format!(
                        "ignored: `{}` (no bind line, and no frontend uses it)",
                        proxy.header.text
                    ),
                );
            }
            continue;
        }
        let pool = pool_name(&target.name);
        if !used.contains(&target.name.as_str()) {
            used.push(&target.name);
        }
        // Listener-wide settings: balance and allbackups of the backend, maxconn of the frontend.
        let mut fields = Vec::new();
        let (algorithm, balance_origin) = match &target.settings.balance {
            Some((algorithm, origin)) => (algorithm.as_str(), Some(origin)),
            None => ("roundrobin", None),
        };
        let weights: Vec<u32> = target
            .servers
            .iter()
            .filter(|s| !s.disabled && s.weight != Some(0))
            .map(|s| s.weight.unwrap_or(1))
            .collect();
        let unequal = weights.windows(2).any(|w| w[0] != w[1]);
        let policy = match algorithm {
            "roundrobin" | "static-rr" if unequal => "weighted",
            "roundrobin" | "static-rr" => "round_robin",
            "leastconn" => "least_conn",
            "source" => "source_map",
            "first" => "single",
            "random" => "random",
            other => {
                if let Some(origin) = balance_origin {
                    notes.warn(
                        origin.line,
                        format!(
                            "`{}`: balance {other} has no galera-lb equivalent; using round_robin",
                            origin.text
                        ),
                    );
                }
                "round_robin"
            }
        };
        if algorithm == "first" && unequal {
            if let Some(origin) = balance_origin {
                notes.warn(origin.line, "balance first: galera-lb's single policy prefers the highest weight, then the first server; HAProxy ignores weights here");
            }
        }
        fields.push(Entry {
            key: "policy".into(),
            value: policy.into(),
            from: balance_origin.map(|o| from(file, o)).into_iter().collect(),
        });
        if let Some(origin) = &target.settings.allbackups {
            fields.push(Entry {
                key: "all_backups".into(),
                value: "true".into(),
                from: vec![from(file, origin)],
            });
        }
        if let Some((max, origin)) = &proxy.settings.maxconn {
            if proxy.binds.len() > 1 {
                notes.warn(origin.line, format!("`{}`: galera-lb limits each listener; each of the {} bound addresses gets this limit", origin.text, proxy.binds.len()));
            }
            fields.push(Entry {
                key: "max_connections".into(),
                value: max.to_string(),
                from: vec![from(file, origin)],
            });
        }
        for (i, bind) in proxy.binds.iter().enumerate() {
            let mut name = if i == 0 {
                proxy.name.clone()
            } else {
                format!("{}-{}", proxy.name, i + 1)
            };
            while listener_names.contains(&name) {
                name.push('_');
            }
            listener_names.push(name.clone());
            let mut fields = fields.clone();
            if bind.accept_proxy {
                fields.push(Entry {
                    key: "accept_proxy".into(),
                    value: "true".into(),
                    from: vec![from(file, &bind.origin)],
                });
            }
            listeners.push(ListenerOut {
                name,
                bind: Entry {
                    key: "bind".into(),
                    value: quote(&bind.address),
                    from: vec![from(file, &bind.origin)],
                },
                pool: pool.clone(),
                header: from(file, &proxy.header),
                fields,
            });
        }
        // Timeouts: the frontend's client side, the backend's server side.
        for (settings, is_front) in [(&proxy.settings, true), (&target.settings, false)] {
            if !is_front || std::ptr::eq(proxy, target) {
                if let Some((d, origin)) = &settings.timeout_connect {
                    connect_timeout.set(
                        "connect_timeout",
                        show_duration(*d),
                        origin,
                        "connect timeout",
                        notes,
                    );
                }
                if let Some((d, origin)) = &settings.timeout_check {
                    check_timeout.set("timeout", show_duration(*d), origin, "check timeout", notes);
                }
                if let Some(origin) = &settings.retries {
                    notes.warn(origin.line, format!("`{}`: galera-lb makes one connect attempt per usable backend, moving on to the next at once (no per-server retry count)", origin.text));
                }
            }
            if let Some(origin) = &settings.tcpka {
                keepalive.set(
                    "keepalive",
                    "60s".into(),
                    origin,
                    "keepalive setting",
                    notes,
                );
            }
        }
        let client = proxy.settings.timeout_client.as_ref();
        let server = target.settings.timeout_server.as_ref();
        let idle = match (client, server) {
            (Some(c), Some(s)) if s.0 < c.0 => Some(s),
            (Some(c), _) => Some(c),
            (None, s) => s,
        };
        if let Some((d, origin)) = idle {
            idle_timeout.set(
                "client_idle_timeout",
                show_duration(*d),
                origin,
                "idle timeout",
                notes,
            );
        }
    }
    let stats_backends: Vec<&str> = proxies
        .iter()
        .filter(|p| p.stats_backend.is_some())
        .filter_map(|p| {
            proxies
                .iter()
                .find(|b| {
                    b.kind == SectionKind::Backend && Some(&b.header) == p.stats_backend.as_ref()
                })
                .map(|b| b.name.as_str())
        })
        .collect();
    for proxy in proxies {
        if proxy.kind == SectionKind::Backend
            && !proxy.disabled
            && !used.contains(&proxy.name.as_str())
            && !stats_backends.contains(&proxy.name.as_str())
        {
            notes.warn(
                proxy.header.line,
                format!("ignored: `{}` (no frontend uses it)", proxy.header.text),
            );
        }
    }

    // Pools, and the health settings their servers ask for.
    let mut check_kind = Once::new();
    let mut check_user = Once::new();
    let mut http = (Once::new(), Once::new(), Once::new());
    let mut interval = Once::new();
    let mut rise = Once::new();
    let mut fall = Once::new();
    let mut on_down = Once::new();
    let mut unchecked: Vec<(usize, String)> = Vec::new();
    let mut pools: Vec<PoolOut> = Vec::new();
    // `server NAME`: one backend (address) has one name in galera-lb; the first section's wins.
    let mut server_names: std::collections::HashMap<String, String> = Default::default();
    for name in &used {
        let Some(proxy) = by_name.get(name) else {
            continue;
        };
        let mut pool = PoolOut {
            name: pool_name(name),
            header: from(file, &proxy.header),
            notes: Vec::new(),
            backends: Vec::new(),
        };
        for line in &proxy.settings.default_server {
            pool.notes.push(from(file, &Origin::of(line)));
        }
        if let Some(origin) = &proxy.settings.redispatch {
            pool.notes.push(format!(
                "{} (galera-lb always moves on to the next usable backend when a connect fails)",
                from(file, origin)
            ));
        }
        let (check, check_origin) = match &proxy.settings.check {
            Some((spec, origin)) => (spec.clone(), Some(origin)),
            None => (CheckSpec::Tcp, None),
        };
        let single_port = {
            let ports: Vec<u16> = listeners
                .iter()
                .filter(|l| l.pool == pool.name)
                .filter_map(|l| {
                    l.bind
                        .value
                        .trim_matches('"')
                        .rsplit_once(':')
                        .and_then(|(_, p)| p.parse().ok())
                })
                .collect();
            ports
                .first()
                .copied()
                .filter(|p| ports.iter().all(|q| q == p))
        };
        for server in &proxy.servers {
            let Some(origin) = &server.origin else {
                continue;
            };
            if server.address.is_empty() {
                continue;
            }
            if server.disabled {
                notes.warn(origin.line, format!("server {} is disabled: left out (add it over the control port, `{}:WEIGHT`, to use it)", server.name, server.address));
                continue;
            }
            if server.weight == Some(0) {
                notes.warn(origin.line, format!("server {} has weight 0 (no clients): left out (add it over the control port to use it)", server.name));
                continue;
            }
            let address = match server_address(&server.address, single_port) {
                Ok(address) => address,
                Err(reason) => {
                    notes.error(origin.line, format!("`{}`: {reason}", origin.text));
                    continue;
                }
            };
            let comment = from(file, origin);
            let mut fields = vec![Entry {
                key: "address".into(),
                value: quote(&address),
                from: vec![comment.clone()],
            }];
            let name = server_names
                .entry(address.clone())
                .or_insert_with(|| server.name.clone());
            if *name != server.name {
                notes.warn(origin.line, format!("server {} is {address}, named {name} in an earlier section: one backend has one name, {name} is kept", server.name));
            }
            if *name != address {
                fields.push(Entry {
                    key: "name".into(),
                    value: quote(name),
                    from: vec![],
                });
            }
            if let Some(w) = server.weight.filter(|w| *w != 1) {
                fields.push(Entry {
                    key: "weight".into(),
                    value: w.to_string(),
                    from: vec![],
                });
            }
            if server.backup {
                fields.push(Entry {
                    key: "backup".into(),
                    value: "true".into(),
                    from: vec![],
                });
            }
            if let Some(max) = server.maxconn {
                fields.push(Entry {
                    key: "max_connections".into(),
                    value: max.to_string(),
                    from: vec![],
                });
            }
            if let Some(port) = server.port {
                fields.push(Entry {
                    key: "check_port".into(),
                    value: port.to_string(),
                    from: vec![],
                });
            }
            if let Some(version) = server.proxy_protocol {
                fields.push(Entry {
                    key: "proxy_protocol".into(),
                    value: version.into(),
                    from: vec![],
                });
            }
            pool.backends.push((address, fields));
            if !server.check {
                unchecked.push((origin.line, server.name.clone()));
                continue;
            }
            let server_origin = origin;
            let (kind, origin) = match (&check, check_origin) {
                (CheckSpec::Mysql { .. }, Some(o)) if options.keep_checks => ("handshake", o),
                (CheckSpec::Mysql { .. }, Some(o)) => ("wsrep", o),
                (CheckSpec::Http { .. }, Some(o)) => ("http", o),
                (_, Some(o)) => ("tcp", o),
                (_, None) => ("tcp", server_origin),
            };
            check_kind.set("check", kind.into(), origin, "kind of health check", notes);
            match &check {
                CheckSpec::Mysql { user: Some(user) } => {
                    check_user.set("user", quote(user), origin, "check user", notes)
                }
                CheckSpec::Mysql { user: None } => {}
                CheckSpec::Http { method, path } => {
                    let (method, path, send_origin) = match &proxy.settings.http_send {
                        Some((m, p, o)) => (m.clone(), p.clone(), o),
                        None => (method.clone(), path.clone(), origin),
                    };
                    http.0.set(
                        "method",
                        quote(&method),
                        send_origin,
                        "HTTP check method",
                        notes,
                    );
                    http.1
                        .set("path", quote(&path), send_origin, "HTTP check path", notes);
                    if let Some((status, o)) = &proxy.settings.http_expect {
                        http.2.set(
                            "expect_status",
                            status.to_string(),
                            o,
                            "expected HTTP status",
                            notes,
                        );
                    }
                    if server.port.is_none() {
                        notes.warn(server_origin.line, format!("server {}: option httpchk without `port`: the HTTP check goes to the MySQL port itself (clustercheck listens on 9200: add `port 9200`)", server.name));
                    }
                }
                CheckSpec::Tcp => {}
            }
            // What HAProxy uses when the file does not say: `inter 2s`, `rise 2`, `fall 3`
            // (galera-lb's own defaults differ).
            interval.set_noted(
                "interval",
                show_duration(server.inter.unwrap_or(HAPROXY_INTER)),
                server_origin,
                server
                    .inter
                    .is_none()
                    .then_some("HAProxy's default: inter 2s"),
                "check interval",
                notes,
            );
            if server.fast_or_down_inter {
                notes.warn(server_origin.line, format!("server {}: fastinter/downinter have no galera-lb equivalent: every check runs at health.interval", server.name));
            }
            rise.set_noted(
                "rise",
                server.rise.unwrap_or(HAPROXY_RISE).to_string(),
                server_origin,
                server.rise.is_none().then_some("HAProxy's default: rise 2"),
                "rise count",
                notes,
            );
            fall.set_noted(
                "fall",
                server.fall.unwrap_or(HAPROXY_FALL).to_string(),
                server_origin,
                server.fall.is_none().then_some("HAProxy's default: fall 3"),
                "fall count",
                notes,
            );
            if server.shutdown_sessions {
                on_down.set(
                    "on_down",
                    "shutdown_sessions".into(),
                    server_origin,
                    "on-marked-down action",
                    notes,
                );
            }
        }
        if pool.backends.is_empty() {
            notes.error(
                proxy.header.line,
                format!("`{}` has no server galera-lb can use", proxy.header.text),
            );
        }
        pools.push(pool);
    }
    if check_kind.entry.is_some() {
        for (line, name) in &unchecked {
            notes.warn(
                *line,
                format!(
                    "server {name} has no `check`: galera-lb checks every backend the same way"
                ),
            );
        }
    }
    let mysql_without_user = proxies
        .iter()
        .filter(|p| used.contains(&p.name.as_str()))
        .find_map(|p| match &p.settings.check {
            Some((CheckSpec::Mysql { user: None }, o)) => Some(o.clone()),
            _ => None,
        });
    if let (Some(origin), None) = (&mysql_without_user, &check_user.entry) {
        notes.warn(origin.line, format!("`{}` has no user: galera-lb's check logs in as health.user (default: monitor, no password); create that user (USAGE only)", origin.text));
    }
    // Without `timeout check`, HAProxy gives a whole check (connect and answer) `inter`.
    if check_timeout.entry.is_none() {
        if let Some(every) = &interval.entry {
            check_timeout.entry = Some(Entry {
                key: "timeout".into(),
                value: every.value.clone(),
                from: vec![
                    "no `timeout check`: HAProxy gives a check the whole interval (`inter`)".into(),
                ],
            });
        }
    }
    let http_check = check_kind.entry.as_ref().is_some_and(|e| e.value == "http");
    if http_check {
        notes.warn(check_kind.first_line, format!("option httpchk: kept as galera-lb's http check against clustercheck; {WSREP_INSTEAD}"));
    }
    if check_kind.entry.as_ref().is_some_and(|e| e.value == "tcp") {
        notes.warn(check_kind.first_line, "TCP connect checks see nothing of Galera and count as aborted connects on the server: prefer `option mysql-check user NAME` (galera-lb then checks wsrep status)");
    }

    // Write it out.
    let mut out = String::new();
    out.push_str(&format!(
        "# galera-lb configuration translated from {file} by `galera-lb import-haproxy`.\n\
         # Each setting names the HAProxy line it comes from; what was ignored went to stderr.\n"
    ));
    let section = |out: &mut String, name: &str, entries: Vec<Entry>| {
        if entries.is_empty() {
            return;
        }
        out.push_str(&format!("{name}:\n"));
        write_entries(out, 2, &entries);
    };
    let mut limits = Vec::new();
    if let Some((max, origin)) = &global_maxconn {
        limits.push(Entry {
            key: "max_connections".into(),
            value: max.to_string(),
            from: vec![from(file, origin)],
        });
    }
    limits.extend(connect_timeout.entry);
    limits.extend(idle_timeout.entry);
    section(&mut out, "limits", limits);
    section(&mut out, "tcp", keepalive.entry.into_iter().collect());
    let mut health = Vec::new();
    match check_kind.entry {
        Some(entry) => {
            let galera = entry.value == "wsrep";
            health.push(entry);
            if galera {
                health.push(Entry { key: "# galera-lb checks wsrep status: a node that is not Synced in the Primary component gets no clients (--keep-checks keeps HAProxy's login-only check)".into(), value: String::new(), from: vec![] });
            }
            if http_check {
                health.push(Entry {
                    key: format!("# {WSREP_INSTEAD}"),
                    value: String::new(),
                    from: vec![],
                });
            }
        }
        None => health.push(Entry {
            key: "check".into(),
            value: "none".into(),
            from: vec!["no server has `check`: HAProxy does not check them either".into()],
        }),
    }
    health.extend(check_user.entry);
    health.extend(interval.entry);
    health.extend(check_timeout.entry);
    health.extend(rise.entry);
    health.extend(fall.entry);
    health.extend(on_down.entry);
    let http_entries: Vec<Entry> = [http.0.entry, http.1.entry, http.2.entry]
        .into_iter()
        .flatten()
        .collect();
    section(&mut out, "health", health);
    if !http_entries.is_empty() {
        out.push_str("  http:\n");
        write_entries(&mut out, 4, &http_entries);
    }
    if let Some(admin) = admin {
        out.push_str("admin:\n");
        write_entries(&mut out, 2, &[admin]);
    }
    out.push_str("listeners:\n");
    for listener in &listeners {
        out.push_str(&format!("  # {}\n", listener.header));
        // (The same line twice for HAProxy 1.x's `listen NAME ADDRESS`: once is enough.)
        for comment in listener.bind.from.iter().filter(|c| **c != listener.header) {
            out.push_str(&format!("  # {comment}\n"));
        }
        out.push_str(&format!("  - name: {}\n", quote(&listener.name)));
        out.push_str(&format!("    bind: {}\n", listener.bind.value));
        out.push_str(&format!("    pool: {}\n", quote(&listener.pool)));
        write_entries(&mut out, 4, &listener.fields);
    }
    if !pools.is_empty() {
        out.push_str("pools:\n");
    }
    for pool in &pools {
        out.push_str(&format!("  # {}\n", pool.header));
        for note in &pool.notes {
            out.push_str(&format!("  # {note}\n"));
        }
        out.push_str(&format!("  - name: {}\n    backends:\n", quote(&pool.name)));
        for (_, fields) in &pool.backends {
            for comment in fields.iter().flat_map(|f| &f.from) {
                out.push_str(&format!("      # {comment}\n"));
            }
            for (i, field) in fields.iter().enumerate() {
                let lead = if i == 0 { "      - " } else { "        " };
                out.push_str(&format!("{lead}{}: {}\n", field.key, field.value));
            }
        }
    }
    if listeners.is_empty() {
        notes.error(
            1,
            "no TCP listen section, and no frontend with a backend: nothing for galera-lb to serve",
        );
    }
    out
}

fn write_entries(out: &mut String, indent: usize, entries: &[Entry]) {
    let pad = " ".repeat(indent);
    for entry in entries {
        for comment in &entry.from {
            out.push_str(&format!("{pad}# {comment}\n"));
        }
        if entry.key.starts_with('#') {
            out.push_str(&format!("{pad}{}\n", entry.key));
        } else {
            out.push_str(&format!("{pad}{}: {}\n", entry.key, entry.value));
        }
    }
}

/// A server address as galera-lb writes it (`HOST:PORT`, `[v6]:PORT`); without a port, the
/// listener's port when the section has one (as HAProxy does).
fn server_address(address: &str, listener_port: Option<u16>) -> Result<String, String> {
    let (host, port) = split_address(address)?;
    if host.is_empty() || host == "*" {
        return Err(format!("'{address}' has no host"));
    }
    let port = match port {
        Some(port) if port.starts_with('+') || port.starts_with('-') => {
            return Err(format!(
                "'{address}': port offsets need HAProxy's destination-port mapping; write the node's port"
            ));
        }
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("'{address}': '{port}' is not a port"))?,
        None => listener_port.ok_or_else(|| {
            format!("'{address}' has no port and its listeners do not share one: write the port")
        })?,
    };
    Ok(match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{host}:{port}"),
    })
}
