//! The HAProxy drop-in: `galera-lb import-haproxy FILE` and `galera-lb --haproxy-config FILE`.
//!
//! - The fixtures in `tests/haproxy/` (the configurations HAProxy users run in front of Galera,
//!   among them Codership's and Percona's own, as printed) import with exit 0, every comment
//!   names a real `FILE:LINE`, and `galera-lb check` accepts the result.
//! - Directive by directive, the translation gives the configuration values HAProxy means; what
//!   a TCP proxy cannot serve exits 64 naming the line; the translator survives garbage.
//! - `--haproxy-config` reloads on SIGHUP and SIGUSR2 without dropping open sessions.
//! - Against the real sandbox cluster (`GALERA_LB_SANDBOX_DIR`), with the fixtures' addresses
//!   rewritten to the sandbox nodes and free ports: the spread (roundrobin over three nodes) and
//!   the writer (one server plus `backup` servers, checked by a clustercheck responder) are what
//!   HAProxy does, measured on a real HAProxy run with the same file (HAProxy 2.x gets the 1.x
//!   forms it refuses rewritten, galera-lb the file as printed: Codership's address on the
//!   `listen` line, Percona's `contimeout` and stats frontend); and isolating a node
//!   (`gmcast.isolate`) under a continuous client load gives galera-lb zero client errors after
//!   the detection window, where HAProxy with the same file keeps sending clients to the node.
//!
//! Needs `/usr/sbin/haproxy` (`scripts/test` installs the Debian package) and fails, saying so,
//! without it.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use galera_lb::config::haproxy::{Options, translate};
use galera_lb::config::{CheckKind, Config, PolicyKind, SessionAction};
use lb::{binary, collect_stderr, echo_backend, free_port};
use support::load::{self, Load, LoadSpec, describe, errors_between};
use support::sandbox;

const FIXTURES: &[&str] = &[
    "openstack-mysql-check.cfg",
    "clustercheck-writer-reader.cfg",
    "frontend-backend.cfg",
    "codership-listen-address.cfg",
    "percona-pxc-reference.cfg",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/haproxy")
        .join(name)
}

// ---------------------------------------------------------------------------------------------
// The command line

#[test]
fn fixtures_import_with_line_comments_and_pass_check() {
    for name in FIXTURES {
        let path = fixture(name);
        let output = binary().arg("import-haproxy").arg(&path).output().unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(0), "{name}: {stderr}");
        // Every `# from FILE:LINE: TEXT` names a line that says TEXT.
        let source = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = source.lines().collect();
        let prefix = format!("# from {}:", path.display());
        let mut comments = 0;
        for comment in stdout
            .lines()
            .filter_map(|l| l.trim().strip_prefix(&prefix))
        {
            let (number, text) = comment.split_once(": ").unwrap();
            let number: usize = number.parse().unwrap();
            let text = text.split(" (").next().unwrap();
            assert!(
                lines[number - 1].contains(text),
                "{name}:{number} is {:?}, the comment says {text:?}",
                lines[number - 1]
            );
            comments += 1;
        }
        assert!(comments >= 8, "{name}: only {comments} comments:\n{stdout}");
        // Warnings name their line too.
        for warning in stderr.lines() {
            assert!(
                warning.starts_with(&format!("warning: {}:", path.display())),
                "{warning}"
            );
        }
        let yaml = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(yaml.path(), &stdout).unwrap();
        let check = binary()
            .arg("check")
            .arg("--config")
            .arg(yaml.path())
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{name}: galera-lb check refused the import: {}\n{stdout}",
            String::from_utf8_lossy(&check.stderr)
        );
        let direct = binary()
            .arg("check")
            .arg("--haproxy-config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            direct.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&direct.stderr)
        );
    }
}

/// Runs `import-haproxy` on `text`; returns (exit code, stdout, stderr).
fn import(text: &str) -> (Option<i32>, String, String) {
    let file = tempfile::Builder::new().suffix(".cfg").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let output = binary()
        .arg("import-haproxy")
        .arg(file.path())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

const SERVERS: &str = "    server a 10.0.0.1:3306 check\n    server b 10.0.0.2:3306 check\n";

#[test]
fn sections_a_tcp_proxy_cannot_serve_exit_64_naming_the_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "listen web\n    bind :80\n    mode http\n    server a 10.0.0.1:80\n",
            ":3:",
            "mode http",
        ),
        (
            "defaults\n    mode http\nlisten db\n    bind :3306\n    server a 10.0.0.1:3306\n",
            ":2:",
            "listen 'db' (line 3) is in mode http",
        ),
        (
            "frontend f\n    bind :3306\n    acl local src 10.0.0.0/8\n    default_backend b\nbackend b\n    server a 10.0.0.1:3306\n",
            ":3:",
            "ACLs",
        ),
        (
            "frontend f\n    bind :3306\n    use_backend b if { src 10.0.0.1 }\n    default_backend b\nbackend b\n    server a 10.0.0.1:3306\n",
            ":3:",
            "conditional routing",
        ),
        (
            "frontend f\n    bind :3306\n    tcp-request connection reject if { src 10.0.0.9 }\n    default_backend b\nbackend b\n    server a 10.0.0.1:3306\n",
            ":3:",
            "conditional rules",
        ),
        (
            "frontend f\n    bind :3306\n",
            ":1:",
            "needs a default_backend",
        ),
        (
            "frontend f\n    bind :3306\n    default_backend nowhere\n",
            ":3:",
            "no backend named 'nowhere'",
        ),
        (
            "listen db\n    bind :3306 ssl crt /etc/x.pem\n    server a 10.0.0.1:3306\n",
            ":2:",
            "TLS",
        ),
        (
            "listen db\n    bind 127.0.0.1:3306\n    server a /run/mysqld.sock\n",
            ":3:",
            "UNIX sockets",
        ),
        (
            "global\n    maxconn 10\n",
            ":1:",
            "nothing for galera-lb to serve",
        ),
        // Times longer than HAProxy itself takes (2^31 - 1 ms) used to reach the translation,
        // where galera-lb could not read them back.
        (
            "listen db\n    bind :3306\n    server a 10.0.0.1:3306 check inter 18446744073709551615\n",
            ":3:",
            "inter needs a time such as 2s (at most 2147483647ms",
        ),
        (
            "defaults\n    timeout connect 18446744073709551615s\nlisten db\n    bind :3306\n    server a 10.0.0.1:3306\n",
            ":2:",
            "is not a time (e.g. 5s, 500ms, 1m; at most 2147483647ms",
        ),
    ];
    for (text, line, reason) in cases {
        let (code, stdout, stderr) = import(text);
        assert_eq!(code, Some(64), "{text}\n{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        let error = stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line for {text}: {stderr}"));
        assert!(error.contains(line), "expected {line} in {error}");
        assert!(error.contains(reason), "expected {reason} in {error}");
    }
    // A stats section in mode http (with an ACL condition) is the admin port, not an error.
    let (code, stdout, stderr) = import(&format!(
        "listen db\n    bind 127.0.0.1:3306\n{SERVERS}frontend stats\n    bind 127.0.0.1:8405\n    mode http\n    http-request use-service prometheus-exporter if {{ path /metrics }}\n"
    ));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("admin:\n"), "{stdout}");
}

/// Translates with the library and parses the result as galera-lb does.
fn translated(text: &str, options: Options) -> (Config, String, Vec<String>) {
    let translation =
        translate(text, "t.cfg", &options).unwrap_or_else(|e| panic!("refused: {e}\n{text}"));
    let config = Config::from_yaml(&translation.yaml, "t.cfg (translated)")
        .unwrap_or_else(|e| panic!("{e}\n{}", translation.yaml));
    (config, translation.yaml, translation.warnings)
}

fn has_warning(warnings: &[String], line: usize, text: &str) -> bool {
    warnings
        .iter()
        .any(|w| w.starts_with(&format!("t.cfg:{line}:")) && w.contains(text))
}

#[test]
fn each_directive_translates_to_what_haproxy_means() {
    let text = "\
global
    maxconn 5000
    log /dev/log local0
    chroot /var/lib/haproxy
    user haproxy
    group haproxy
    daemon
    nbthread 4
    stats socket /run/haproxy.sock
defaults
    mode tcp
    timeout connect 1500ms
    timeout client 10m
    timeout server 5m
    timeout check 700
    retries 3
    option redispatch
    option tcpka
    default-server inter 3s rise 3 fall 4
listen galera
    bind 127.0.0.1:3306,127.0.0.2:3306
    bind [::1]:3306
    bind :::3306
    balance static-rr
    option mysql-check user haproxy_check post-41
    option allbackups
    maxconn 300
    server n1 10.0.0.1:3306 check weight 3 maxconn 100 fastinter 1s downinter 5s on-marked-down shutdown-sessions
    server n2 10.0.0.2 check port 9200
    server n3 fd00::3:3306 check backup
    server n4 10.0.0.4:3306 check disabled
";
    let (config, yaml, warnings) = translated(text, Options::default());
    assert_eq!(config.limits.max_connections, 5000);
    assert_eq!(config.limits.connect_timeout, Duration::from_millis(1500));
    assert_eq!(
        config.limits.client_idle_timeout,
        Some(Duration::from_secs(300)),
        "the shorter of timeout client and timeout server"
    );
    assert_eq!(config.tcp.keepalive, Some(Duration::from_secs(60)));
    assert_eq!(config.health.check, CheckKind::Wsrep);
    assert_eq!(config.health.user, "haproxy_check");
    assert_eq!(config.health.interval, Duration::from_secs(3));
    assert_eq!(config.health.timeout, Duration::from_millis(700));
    assert_eq!((config.health.rise, config.health.fall), (3, 4));
    assert_eq!(config.health.on_down, SessionAction::ShutdownSessions);
    let binds: Vec<String> = config
        .listeners
        .iter()
        .map(|l| l.bind.to_string())
        .collect();
    assert_eq!(
        binds,
        [
            "127.0.0.1:3306",
            "127.0.0.2:3306",
            "[::1]:3306",
            "[::]:3306"
        ]
    );
    let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["galera", "galera-2", "galera-3", "galera-4"]);
    for listener in &config.listeners {
        assert_eq!(listener.pool, "galera");
        assert_eq!(
            listener.policy,
            PolicyKind::Weighted,
            "static-rr with weights"
        );
        assert!(listener.all_backups);
        assert_eq!(listener.max_connections, Some(300));
    }
    let backends = &config.pools[0].backends;
    assert_eq!(backends.len(), 3, "the disabled server is left out");
    assert_eq!(backends[0].address, "10.0.0.1:3306");
    assert_eq!(backends[0].weight, 3.0);
    assert_eq!(backends[0].max_connections, Some(100));
    assert_eq!(
        backends[1].address, "10.0.0.2:3306",
        "no port: the listeners' port"
    );
    assert_eq!(backends[1].check_port, Some(9200));
    assert_eq!(backends[2].address, "[fd00::3]:3306");
    assert!(backends[2].backup && !backends[0].backup);
    for (line, text) in [
        (3, "ignored: log"),
        (4, "ignored: chroot"),
        (5, "ignored: user"),
        (6, "ignored: group"),
        (7, "ignored: daemon"),
        (8, "ignored: nbthread"),
        (9, "ignored: stats socket"),
        (16, "no per-server retry count"),
        (28, "fastinter/downinter"),
        (31, "disabled: left out"),
    ] {
        assert!(
            has_warning(&warnings, line, text),
            "{line} {text}: {warnings:#?}"
        );
    }
    assert!(
        yaml.contains("# from t.cfg:17: option redispatch"),
        "{yaml}"
    );
    assert!(yaml.contains("# from t.cfg:25: option mysql-check user haproxy_check post-41"));

    // --keep-checks: HAProxy's login-only check.
    let (config, _, _) = translated(text, Options { keep_checks: true });
    assert_eq!(config.health.check, CheckKind::Handshake);

    // Every balance algorithm.
    for (algorithm, policy) in [
        ("roundrobin", PolicyKind::RoundRobin),
        ("static-rr", PolicyKind::RoundRobin),
        ("leastconn", PolicyKind::LeastConn),
        ("source", PolicyKind::SourceMap),
        ("first", PolicyKind::Single),
        ("random", PolicyKind::Random),
    ] {
        let text =
            format!("listen db\n    bind 127.0.0.1:3306\n    balance {algorithm}\n{SERVERS}");
        let (config, _, _) = translated(&text, Options::default());
        assert_eq!(config.listeners[0].policy, policy, "{algorithm}");
        assert_eq!(config.health.check, CheckKind::Tcp, "plain `check`");
    }
    let (config, _, _) = translated(
        "listen db\n    bind 127.0.0.1:3306\n    server a 10.0.0.1:3306\n",
        Options::default(),
    );
    assert_eq!(config.health.check, CheckKind::None, "no `check` anywhere");
}

#[test]
fn httpchk_stats_and_frontends_translate() {
    let text = "\
defaults
    mode tcp
listen writer
    bind 127.0.0.1:3307
    option httpchk GET /clustercheck
    http-check expect status 200
    server a 10.0.0.1:3306 check port 9200
    server b 10.0.0.2:3306 check port 9200 backup
frontend ro
    bind 127.0.0.1:3308
    default_backend readers
backend readers
    option httpchk GET /clustercheck
    server a 10.0.0.1:3306 check port 9200
listen stats
    bind 127.0.0.1:8404
    mode http
    stats enable
    stats uri /haproxy
";
    let (config, _, _) = translated(text, Options::default());
    assert_eq!(config.health.check, CheckKind::Http);
    assert_eq!(config.health.http.method, "GET");
    assert_eq!(config.health.http.path, "/clustercheck");
    assert_eq!(config.health.http.expect_status, 200);
    assert_eq!(
        config.admin.as_ref().unwrap().bind.to_string(),
        "127.0.0.1:8404"
    );
    assert_eq!(config.listeners[1].name, "ro");
    assert_eq!(config.listeners[1].pool, "readers");
    assert_eq!(config.pools[1].backends[0].check_port, Some(9200));

    // A listen without bind that no frontend uses serves nothing: a warning, not an error.
    let (_, _, warnings) = translated(
        &format!(
            "listen db\n    bind 127.0.0.1:3306\n{SERVERS}listen spare\n    server a 10.0.0.1:3306\n"
        ),
        Options::default(),
    );
    assert!(has_warning(&warnings, 5, "no bind line"), "{warnings:#?}");

    // `option httpchk` alone: OPTIONS / (HAProxy's default request).
    let (config, _, _) = translated(
        "listen w\n    bind 127.0.0.1:3307\n    option httpchk\n    server a 10.0.0.1:3306 check port 9200\n",
        Options::default(),
    );
    assert_eq!(
        (
            config.health.http.method.as_str(),
            config.health.http.path.as_str()
        ),
        ("OPTIONS", "/")
    );
}

/// The forms people copy from Codership's and Percona's own instructions, and from blog posts:
/// the address on the `listen` line, `mode http` stats sections next to the MySQL ones, and
/// checks that rely on HAProxy's defaults.
#[test]
fn documented_forms_translate() {
    // Codership's instructions: the address on the listen line, nothing else said about checks.
    let codership = std::fs::read_to_string(fixture("codership-listen-address.cfg")).unwrap();
    let (config, yaml, warnings) = translated(&codership, Options::default());
    assert_eq!(config.listeners.len(), 1, "{yaml}");
    assert_eq!(config.listeners[0].bind.to_string(), "127.0.0.1:3306");
    assert_eq!(config.listeners[0].pool, "galera");
    assert_eq!(config.listeners[0].policy, PolicyKind::SourceMap);
    let addresses: Vec<&str> = config.pools[0]
        .backends
        .iter()
        .map(|b| b.address.as_str())
        .collect();
    assert_eq!(
        addresses,
        ["10.0.0.11:3306", "10.0.0.12:3306", "10.0.0.13:3306"]
    );
    assert_eq!(config.health.check, CheckKind::Wsrep);
    assert_eq!(config.health.user, "haproxy");
    // HAProxy's own defaults, which the file relies on: inter 2s, rise 2, fall 3, and a check
    // timeout of `inter` without `timeout check`.
    assert_eq!(config.health.interval, Duration::from_secs(2), "{yaml}");
    assert_eq!((config.health.rise, config.health.fall), (2, 3), "{yaml}");
    assert_eq!(config.health.timeout, Duration::from_secs(2), "{yaml}");
    assert!(
        has_warning(&warnings, 9, "HAProxy 1.x syntax") && has_warning(&warnings, 9, "bind"),
        "{warnings:#?}"
    );
    assert!(
        yaml.contains("# from t.cfg:9: listen galera 127.0.0.1:3306"),
        "{yaml}"
    );

    // The same form as blog posts write it: all addresses, roundrobin; a list of addresses;
    // a 1.x frontend with its address.
    for (header, binds) in [
        ("listen galera_cluster 0.0.0.0:3306", vec!["0.0.0.0:3306"]),
        (
            "listen galera_cluster 127.0.0.1:3306,127.0.0.2:3306",
            vec!["127.0.0.1:3306", "127.0.0.2:3306"],
        ),
        ("listen galera_cluster :3306", vec!["0.0.0.0:3306"]),
    ] {
        let text = format!(
            "{header}\n    mode tcp\n    balance roundrobin\n    option tcpka\n    option mysql-check user haproxy\n{SERVERS}"
        );
        let (config, _, warnings) = translated(&text, Options::default());
        let got: Vec<String> = config
            .listeners
            .iter()
            .map(|l| l.bind.to_string())
            .collect();
        assert_eq!(got, binds, "{header}");
        assert_eq!(config.listeners[0].policy, PolicyKind::RoundRobin);
        assert!(has_warning(&warnings, 1, "bind"), "{warnings:#?}");
    }
    let (config, _, _) = translated(
        &format!("frontend f 127.0.0.1:3306\n    default_backend b\nbackend b\n{SERVERS}"),
        Options::default(),
    );
    assert_eq!(config.listeners[0].bind.to_string(), "127.0.0.1:3306");
    // A bad address there is an error naming the line, not a panic.
    let error = translate(
        &format!("defaults\n    mode tcp\nlisten g 10.0.0.1\n{SERVERS}"),
        "t.cfg",
        &Options::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("t.cfg:3:") && error.contains("no port"),
        "{error}"
    );

    // Percona's reference architecture: three frontends (one of them the stats page, in mode
    // http with a stats backend), clustercheck through option httpchk, backups.
    let percona = std::fs::read_to_string(fixture("percona-pxc-reference.cfg")).unwrap();
    let (config, yaml, warnings) = translated(&percona, Options::default());
    let listeners: Vec<(String, String, PolicyKind)> = config
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.bind.to_string(), l.policy))
        .collect();
    assert_eq!(
        listeners,
        [
            (
                "pxc-front".to_string(),
                "0.0.0.0:3307".to_string(),
                PolicyKind::LeastConn
            ),
            (
                "pxc-onenode-front".to_string(),
                "0.0.0.0:3306".to_string(),
                PolicyKind::LeastConn
            ),
        ],
        "{yaml}"
    );
    assert_eq!(
        config.admin.as_ref().map(|a| a.bind.to_string()).as_deref(),
        Some("0.0.0.0:80"),
        "the stats frontend's address is the admin port: {yaml}"
    );
    assert_eq!(config.health.check, CheckKind::Http);
    assert_eq!(config.health.interval, Duration::from_secs(12));
    assert_eq!(
        config.health.timeout,
        Duration::from_secs(12),
        "no timeout check: inter"
    );
    assert_eq!((config.health.rise, config.health.fall), (3, 3));
    assert_eq!(config.limits.connect_timeout, Duration::from_secs(5));
    let onenode = config
        .pools
        .iter()
        .find(|p| p.name == "pxc-onenode-back")
        .unwrap();
    let backups: Vec<bool> = onenode.backends.iter().map(|b| b.backup).collect();
    assert_eq!(backups, [false, true, true]);
    assert!(onenode.backends.iter().all(|b| b.check_port == Some(9200)));
    assert_eq!(
        config.pools.len(),
        2,
        "no pool for the stats backend: {yaml}"
    );
    // The stats page: a warning naming what the admin port serves instead; the credentials of
    // `stats auth` appear nowhere.
    assert!(
        has_warning(&warnings, 57, "not reproduced") && has_warning(&warnings, 57, "/metrics"),
        "{warnings:#?}"
    );
    assert!(has_warning(&warnings, 58, "admin.token"), "{warnings:#?}");
    for text in std::iter::once(&yaml).chain(&warnings) {
        assert!(
            !text.contains("pxcstats") && !text.contains("secret"),
            "stats auth leaked: {text}"
        );
    }
    // option httpchk keeps working, and the wsrep check is suggested with its one grant.
    assert!(
        has_warning(&warnings, 49, "check: wsrep") && has_warning(&warnings, 49, "USAGE"),
        "{warnings:#?}"
    );
    assert!(yaml.contains("check: wsrep"), "{yaml}");

    // Percona's "Load balancing with HAProxy" page: the listen line's address and HAProxy 1.4's
    // bare `redispatch`, clustercheck without backups.
    let (config, _, warnings) = translated(
        "defaults\n    mode http\n    retries 3\n    redispatch\n    contimeout 5000\n\
         listen mysql-cluster 0.0.0.0:3306\n    mode tcp\n    balance roundrobin\n    option  httpchk\n\n\
         \x20   server db01 10.4.29.100:3306 check port 9200 inter 12000 rise 3 fall 3\n\
         \x20   server db02 10.4.29.99:3306 check port 9200 inter 12000 rise 3 fall 3\n",
        Options::default(),
    );
    assert_eq!(config.listeners[0].bind.to_string(), "0.0.0.0:3306");
    assert_eq!(config.pools[0].backends.len(), 2);
    assert!(
        !warnings.iter().any(|w| w.contains("redispatch")),
        "{warnings:#?}"
    );

    // `timeout check` wins over `inter` for the check timeout; stats lines in defaults never
    // echo their credentials.
    let (config, _, warnings) = translated(
        &format!(
            "defaults\n    mode tcp\n    timeout check 700ms\n    stats auth admin:hunter2\nlisten g\n    bind 127.0.0.1:3306\n{SERVERS}"
        ),
        Options::default(),
    );
    assert_eq!(config.health.timeout, Duration::from_millis(700));
    assert_eq!(config.health.interval, Duration::from_secs(2));
    assert!(
        !warnings.iter().any(|w| w.contains("hunter2")),
        "{warnings:#?}"
    );
    assert!(has_warning(&warnings, 4, "stats auth"), "{warnings:#?}");

    // A frontend with a conditional use_backend next to a stats default_backend is not a stats
    // section: it still needs layer 7.
    let error = translate(
        &format!(
            "listen db\n    bind 127.0.0.1:3306\n{SERVERS}frontend web\n    bind :80\n    mode http\n    use_backend app if {{ path_beg /app }}\n    default_backend st\nbackend st\n    mode http\n    stats uri /\nbackend app\n    mode http\n    server w 10.0.0.9:80\n"
        ),
        "t.cfg",
        &Options::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("conditional routing"), "{error}");
}

#[test]
fn proxy_protocol_directives_translate_as_text() {
    let translation = translate(
        "listen db\n    bind 127.0.0.1:3306 accept-proxy\n    server a 10.0.0.1:3306 send-proxy\n    server b 10.0.0.2:3306 send-proxy-v2\n",
        "t.cfg",
        &Options::default(),
    )
    .unwrap();
    let yaml = translation.yaml;
    assert!(yaml.contains("    accept_proxy: true\n"), "{yaml}");
    assert!(
        yaml.contains(
            "      - address: \"10.0.0.1:3306\"\n        name: \"a\"\n        proxy_protocol: v1\n"
        ),
        "{yaml}"
    );
    assert!(
        yaml.contains(
            "      - address: \"10.0.0.2:3306\"\n        name: \"b\"\n        proxy_protocol: v2\n"
        ),
        "{yaml}"
    );
    // And galera-lb takes them.
    let config = galera_lb::config::Config::from_yaml(&yaml, "t.yaml")
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert!(config.listeners[0].accept_proxy);
    let backends: Vec<_> = config
        .pools()
        .iter()
        .flat_map(|p| p.backends.iter())
        .map(|b| (b.address.clone(), b.proxy_protocol))
        .collect();
    use galera_lb::config::ProxyProtocol;
    assert!(
        backends.contains(&("10.0.0.1:3306".to_string(), Some(ProxyProtocol::V1))),
        "{backends:?}"
    );
    assert!(
        backends.contains(&("10.0.0.2:3306".to_string(), Some(ProxyProtocol::V2))),
        "{backends:?}"
    );
}

#[test]
fn the_translator_never_panics() {
    // Every fixture cut short at every byte, and with bytes replaced by awkward ones.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let awkward = [
        b'"', b'\'', b'\\', b'#', b':', b' ', b'\n', b'@', b'[', b']', b',', b'0',
    ];
    for name in FIXTURES {
        let text = std::fs::read(fixture(name)).unwrap();
        for cut in (0..text.len()).step_by(7) {
            let _ = translate(
                &String::from_utf8_lossy(&text[..cut]),
                "t",
                &Options::default(),
            );
        }
        for _ in 0..300 {
            let mut bytes = text.clone();
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed % bytes.len() as u64) as usize;
                bytes[at] = awkward[(seed >> 32) as usize % awkward.len()];
            }
            let _ = translate(&String::from_utf8_lossy(&bytes), "t", &Options::default());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process (galera-lb or haproxy) whose stderr is collected; killed when dropped.
struct Proc {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(mut command: Command) -> Proc {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the process starts");
        let log = collect_stderr(&mut child);
        Proc { child, log }
    }

    /// galera-lb with `--haproxy-config FILE`, ready.
    fn galera_lb(file: &Path) -> Proc {
        let mut command = binary();
        command
            .arg("--haproxy-config")
            .arg(file)
            .env("RUST_LOG", "info");
        let mut proc = Proc::spawn(command);
        // "ready: N of M backends usable" is logged once every listener is bound.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !proc.log().contains("ready: ") {
            if let Some(status) = proc.child.try_wait().unwrap() {
                panic!("galera-lb exited ({status}): {}", proc.log());
            }
            assert!(
                Instant::now() < deadline,
                "galera-lb is not ready: {}",
                proc.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        proc
    }

    /// HAProxy in the foreground with `file`, listening on `port`.
    fn haproxy(file: &Path, port: u16) -> Proc {
        let binary = Path::new("/usr/sbin/haproxy");
        assert!(
            binary.exists(),
            "this test measures HAProxy with the same file: install it (apt-get install haproxy; \
             scripts/test does)"
        );
        let mut command = Command::new(binary);
        command.arg("-db").arg("-f").arg(file);
        let mut proc = Proc::spawn(command);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listening(port) {
            if let Some(status) = proc.child.try_wait().unwrap() {
                panic!("haproxy exited ({status}): {}", proc.log());
            }
            assert!(
                Instant::now() < deadline,
                "haproxy does not listen: {}",
                proc.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        proc
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_for(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "{text:?} not logged within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether something listens on 127.0.0.1:`port`. A connect alone can be fooled: with nothing
/// listening on a port of the ephemeral range, the kernel may pick that very port as the local
/// one and connect the socket to itself.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port))
        .is_ok_and(|stream| stream.local_addr().ok() != stream.peer_addr().ok())
}

fn greeting(stream: &mut std::net::TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8];
    while stream.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

fn echo(stream: &mut std::net::TcpStream, text: &str) -> String {
    stream.write_all(text.as_bytes()).unwrap();
    let mut buf = vec![0u8; text.len()];
    stream.read_exact(&mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

#[test]
fn haproxy_config_reloads_on_sighup_and_sigusr2_keeping_sessions() {
    let (a, b, c) = (echo_backend("a"), echo_backend("b"), echo_backend("c"));
    let (port, admin_port) = (free_port(), free_port());
    let file = tempfile::Builder::new().suffix(".cfg").tempfile().unwrap();
    // A stats section (galera-lb's admin port) follows the listen section, in every version of
    // the file: the reloads are counted there.
    let write = |body: &str| {
        std::fs::write(
            file.path(),
            format!(
                "listen db\n    bind 127.0.0.1:{port}\n{body}frontend stats\n    \
                 bind 127.0.0.1:{admin_port}\n    mode http\n    \
                 http-request use-service prometheus-exporter if {{ path /metrics }}\n"
            ),
        )
        .unwrap();
    };
    write(&format!("    server a {a}\n"));
    let lb = Proc::galera_lb(file.path());
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin_port));
    let reloads = |result: &str| {
        lb::metric(admin, "galera_lb_reloads_total", &[("result", result)]).unwrap_or(0.0)
    };
    let reload = |signal: i32| {
        let before = reloads("ok");
        lb.signal(signal);
        let deadline = Instant::now() + Duration::from_secs(10);
        while reloads("ok") == before {
            assert!(
                Instant::now() < deadline,
                "no reload on signal {signal}:\n{}",
                lb.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(reloads("ok"), before + 1.0, "one reload on signal {signal}");
        assert_eq!(reloads("error"), 0.0);
    };
    let connect = || std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut kept = connect();
    assert_eq!(greeting(&mut kept), "a");

    // SIGUSR2 (HAProxy's reload signal): a second server, least connections; `kept` holds a.
    write(&format!(
        "    balance leastconn\n    server a {a}\n    server b {b}\n"
    ));
    reload(libc::SIGUSR2);
    assert_eq!(echo(&mut kept, "still here"), "still here");
    let mut new = connect();
    assert_eq!(greeting(&mut new), "b", "the reloaded file routes");
    drop(new);

    // SIGHUP: `balance first` with c listed first.
    write(&format!(
        "    balance first\n    server c {c}\n    server a {a}\n"
    ));
    reload(libc::SIGHUP);
    assert_eq!(echo(&mut kept, "and here"), "and here");
    assert_eq!(greeting(&mut connect()), "c");

    // A broken file is refused; the running configuration stays.
    write("    mode http\n    server c 127.0.0.1:1\n");
    lb.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads("error") == 0.0 {
        assert!(Instant::now() < deadline, "no refusal:\n{}", lb.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!((reloads("ok"), reloads("error")), (2.0, 1.0));
    // Kept on the log: the reason for a refused reload reaches the operator only there.
    lb.wait_for("reload refused", Duration::from_secs(10));
    let refusal = lb
        .log()
        .lines()
        .find(|l| l.contains("reload refused"))
        .map(str::to_string);
    assert!(
        refusal.as_ref().is_some_and(|l| l.contains("mode http")),
        "{refusal:?}"
    );
    assert_eq!(greeting(&mut connect()), "c");
    assert_eq!(echo(&mut kept, "still"), "still");
}

// ---------------------------------------------------------------------------------------------
// Against the sandbox

/// A fixture with the sandbox's node addresses, free ports for every `bind`, clustercheck ports
/// from `check_ports` (node n's `port 9200` becomes `check_ports[n-1]`), and without the
/// process directives a test cannot honour (daemon, chroot, user, group, stats socket, syslog).
/// Returns the file and the ports each original bind port now has.
fn sandbox_fixture(
    name: &str,
    check_ports: Option<[u16; 3]>,
) -> (tempfile::NamedTempFile, BTreeMap<u16, u16>) {
    let cluster = sandbox::cluster();
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let mut ports = BTreeMap::new();
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let mut line = line.to_string();
        if [
            "daemon",
            "chroot",
            "user ",
            "group ",
            "stats socket",
            "log ",
        ]
        .iter()
        .any(|p| trimmed.starts_with(p))
        {
            continue;
        }
        // The bound address: on a `bind` line, or (HAProxy 1.x) on the `listen` line itself.
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let bound = match words.as_slice() {
            ["bind", address, ..] => Some(*address),
            ["listen" | "frontend", _, address, ..] => Some(*address),
            _ => None,
        };
        if let Some(address) = bound {
            let (host, port) = address.rsplit_once(':').unwrap();
            let port: u16 = port.parse().unwrap();
            let new = *ports.entry(port).or_insert_with(free_port);
            line = line.replace(address, &format!("{host}:{new}"));
        }
        for n in 1..=3 {
            let node = format!("10.0.0.1{n}:3306");
            if let Some(check_ports) = check_ports {
                if trimmed.starts_with("server ") && trimmed.contains(&format!(" {node} ")) {
                    line = line.replace("port 9200", &format!("port {}", check_ports[n - 1]));
                }
            }
            line = line.replace(&node, &cluster.node_address(n).to_string());
        }
        out.push_str(&line);
        out.push('\n');
    }
    let file = tempfile::Builder::new().suffix(".cfg").tempfile().unwrap();
    std::fs::write(file.path(), out).unwrap();
    (file, ports)
}

/// The node that serves one new session through `port` (`@@wsrep_node_name`).
fn node_via(runtime: &tokio::runtime::Runtime, port: u16) -> Result<String, String> {
    use mysql_async::prelude::Queryable;
    runtime.block_on(async {
        let mut conn = mysql_async::Conn::new(load::app_opts(port))
            .await
            .map_err(|e| e.to_string())?;
        let node: Option<String> = conn
            .query_first("SELECT @@wsrep_node_name")
            .await
            .map_err(|e| e.to_string())?;
        let _ = conn.disconnect().await;
        node.ok_or_else(|| "no row".to_string())
    })
}

/// Sessions per node.
type Spread = BTreeMap<String, usize>;

fn spread(runtime: &tokio::runtime::Runtime, port: u16, n: usize, proxy: &Proc) -> Spread {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let node = node_via(runtime, port)
            .unwrap_or_else(|e| panic!("via {port}: {e}; the proxy's log:\n{}", proxy.log()));
        *counts.entry(node).or_insert(0) += 1;
    }
    counts
}

fn node_name(n: usize) -> String {
    sandbox::cluster()
        .sql(n, "SELECT @@wsrep_node_name")
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
}

/// Creates HAProxy's password-less check user (what `option mysql-check user haproxy_check`
/// logs in as) on the cluster.
fn create_check_user() {
    sandbox::cluster().sql(
        1,
        "CREATE USER IF NOT EXISTS 'haproxy_check'@'%'; \
         CREATE USER IF NOT EXISTS 'haproxy_check'@'localhost'",
    );
}

/// Percona's clustercheck, for node `n`: HTTP 200 while the node's `wsrep_local_state` is 4
/// (Synced), 503 otherwise. Serves until the test binary exits.
fn clustercheck(n: usize) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let node = sandbox::cluster().node_address(n);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut request = Vec::new();
            let mut buf = [0u8; 512];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => request.extend_from_slice(&buf[..k]),
                }
            }
            let synced = runtime.block_on(async {
                use mysql_async::prelude::Queryable;
                let opts = mysql_async::OptsBuilder::default()
                    .ip_or_hostname(node.ip().to_string())
                    .tcp_port(node.port())
                    .user(Some("root"))
                    .prefer_socket(false);
                let Ok(mut conn) = mysql_async::Conn::new(opts).await else {
                    return false;
                };
                let state: Option<(String, String)> = conn
                    .query_first("SHOW GLOBAL STATUS LIKE 'wsrep_local_state'")
                    .await
                    .ok()
                    .flatten();
                let _ = conn.disconnect().await;
                state.is_some_and(|(_, v)| v == "4")
            });
            let answer = if synced {
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 40\r\n\r\nPercona XtraDB Cluster Node is synced.\r\n"
            } else {
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 44\r\n\r\nPercona XtraDB Cluster Node is not synced.\r\n"
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    port
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn roundrobin_spreads_like_haproxy() {
    let _shared = sandbox::shared_lock();
    create_check_user();
    let (file, ports) = sandbox_fixture("openstack-mysql-check.cfg", None);
    let port = ports[&3306];
    let runtime = runtime();
    let rounds = 30;
    let galera = Proc::galera_lb(file.path());
    let through_galera_lb = spread(&runtime, port, rounds, &galera);
    drop(galera);
    let haproxy = Proc::haproxy(file.path(), port);
    std::thread::sleep(Duration::from_secs(2)); // its first checks
    let through_haproxy = spread(&runtime, port, rounds, &haproxy);
    drop(haproxy);
    println!(
        "roundrobin over {rounds} sessions: galera-lb {through_galera_lb:?}, haproxy {through_haproxy:?}"
    );
    for counts in [&through_galera_lb, &through_haproxy] {
        assert_eq!(counts.len(), 3, "every node: {counts:?}");
        assert!(
            counts.values().all(|&c| c == rounds / 3),
            "equal turns: {counts:?}"
        );
    }
}

#[test]
fn backup_servers_keep_one_writer_like_haproxy() {
    let _fault = sandbox::fault_lock();
    let cluster = sandbox::cluster();
    let check_ports = [clustercheck(1), clustercheck(2), clustercheck(3)];
    let (file, ports) = sandbox_fixture("clustercheck-writer-reader.cfg", Some(check_ports));
    let (writer, reader) = (ports[&3307], ports[&3308]);
    let runtime = runtime();
    let names = [node_name(1), node_name(2), node_name(3)];
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut seen: Vec<(&str, Spread, Spread)> = Vec::new();
        for proxy in ["galera-lb", "haproxy"] {
            let process = match proxy {
                "galera-lb" => Proc::galera_lb(file.path()),
                _ => Proc::haproxy(file.path(), writer),
            };
            std::thread::sleep(Duration::from_secs(3)); // first checks (rise 2 × inter 1s)
            let writes = spread(&runtime, writer, 9, &process);
            let reads = spread(&runtime, reader, 9, &process);
            assert_eq!(
                writes.keys().collect::<Vec<_>>(),
                [&names[0]],
                "{proxy}: every writer session on node1"
            );
            assert_eq!(reads.len(), 3, "{proxy}: readers spread: {reads:?}");
            // node1 desynced: clustercheck says 503; the first backup (node2) takes over.
            cluster.desync(1, true);
            std::thread::sleep(Duration::from_secs(4)); // fall 2 × inter 1s, and margin
            let failover = spread(&runtime, writer, 9, &process);
            cluster.desync(1, false);
            cluster.wait_synced();
            assert_eq!(
                failover.keys().collect::<Vec<_>>(),
                [&names[1]],
                "{proxy}: with node1 out, the first backup"
            );
            seen.push((proxy, writes, failover));
            drop(process);
        }
        println!("writer listener (node1 + backups node2, node3): {seen:?}");
    }));
    if result.is_err() {
        cluster.restore();
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn isolating_a_node_costs_galera_lb_no_client_error_where_haproxy_keeps_failing() {
    let _fault = sandbox::fault_lock();
    let cluster = sandbox::cluster();
    create_check_user();
    cluster.sql(1, load::SCHEMA);
    // The same file for both: galera-lb on one port, HAProxy on another.
    let (galera_file, galera_ports) = sandbox_fixture("openstack-mysql-check.cfg", None);
    let (haproxy_file, haproxy_ports) = sandbox_fixture("openstack-mysql-check.cfg", None);
    let galera = Proc::galera_lb(galera_file.path());
    let haproxy = Proc::haproxy(haproxy_file.path(), haproxy_ports[&3306]);
    std::thread::sleep(Duration::from_secs(3));
    // The fixture's checks: inter 1s, fall 2, timeout check 2s. The window in which galera-lb
    // may still send clients to the node: the check under way, then `fall` checks, each
    // starting up to 1.1 × inter after the previous one and lasting up to the timeout; plus 1 s
    // of slack for a busy machine.
    let (inter, timeout, fall) = (Duration::from_secs(1), Duration::from_secs(2), 2);
    let window = timeout + (inter.mul_f64(1.1) + timeout) * fall + Duration::from_secs(1);
    let galera_load = Load::start(LoadSpec::reads("galera-lb", galera_ports[&3306]));
    let haproxy_load = Load::start(LoadSpec::reads("haproxy", haproxy_ports[&3306]));
    std::thread::sleep(Duration::from_secs(2));
    let isolated = AtomicBool::new(false);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cluster.isolate(3);
        isolated.store(true, Ordering::SeqCst);
        let fault = Instant::now();
        std::thread::sleep(window + Duration::from_secs(10));
        let end = Instant::now();
        cluster.rejoin(3);
        isolated.store(false, Ordering::SeqCst);
        (fault, end)
    }));
    if isolated.load(Ordering::SeqCst) || result.is_err() {
        cluster.restore();
    }
    let (fault, end) = match result {
        Ok(times) => times,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let galera_attempts = galera_load.finish();
    let haproxy_attempts = haproxy_load.finish();
    let after = fault + window;
    let galera_errors = errors_between(&galera_attempts, after, end);
    let haproxy_errors = errors_between(&haproxy_attempts, after, end);
    let total = |a: &[load::Attempt]| {
        a.iter()
            .filter(|x| x.start >= after && x.start < end)
            .count()
    };
    println!(
        "node3 isolated: after the {window:?} detection window, galera-lb {} errors in {} sessions, \
         HAProxy {} errors in {} sessions (whole run: galera-lb {}, HAProxy {} errors)",
        galera_errors.len(),
        total(&galera_attempts),
        haproxy_errors.len(),
        total(&haproxy_attempts),
        galera_attempts.iter().filter(|a| !a.ok()).count(),
        haproxy_attempts.iter().filter(|a| !a.ok()).count(),
    );
    assert!(
        total(&galera_attempts) > 100,
        "the load ran through galera-lb"
    );
    assert!(
        galera_errors.is_empty(),
        "galera-lb: client errors after the detection window:\n{}\n{}",
        describe(&galera_errors, galera_load_epoch(&galera_attempts), 10),
        galera.log()
    );
    assert!(
        !haproxy_errors.is_empty(),
        "HAProxy's mysql-check should keep the non-Primary node in rotation (1047 errors): {}",
        haproxy.log()
    );
}

/// `file` as HAProxy 2.x takes it: the 1.x forms it refuses written the 2.x way (the address on
/// a `listen` or `frontend` line moved to a `bind` line, `contimeout`, `clitimeout`,
/// `srvtimeout` and a bare `redispatch` spelt as today). galera-lb reads the original.
fn for_haproxy_2(file: &Path) -> tempfile::NamedTempFile {
    let mut out = String::new();
    for line in std::fs::read_to_string(file).unwrap().lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let modern = match words.as_slice() {
            [kind @ ("listen" | "frontend"), name, address] => {
                format!("{kind} {name}\n    bind {address}")
            }
            ["contimeout", t] => format!("timeout connect {t}"),
            ["clitimeout", t] => format!("timeout client {t}"),
            ["srvtimeout", t] => format!("timeout server {t}"),
            ["redispatch"] => "option redispatch".to_string(),
            _ => line.to_string(),
        };
        out.push_str(&modern);
        out.push('\n');
    }
    let modern = tempfile::Builder::new().suffix(".cfg").tempfile().unwrap();
    std::fs::write(modern.path(), out).unwrap();
    modern
}

/// Creates the password-less user Codership's instructions check with (`option mysql-check user
/// haproxy`); galera-lb's wsrep check logs in as the same user, which needs only USAGE.
fn create_codership_check_user() {
    sandbox::cluster().sql(
        1,
        "CREATE USER IF NOT EXISTS 'haproxy'@'%'; \
         CREATE USER IF NOT EXISTS 'haproxy'@'localhost'",
    );
}

#[test]
fn codership_listen_address_routes_like_haproxy() {
    let _shared = sandbox::shared_lock();
    create_codership_check_user();
    let runtime = runtime();
    let names: Vec<String> = (1..=3).map(node_name).collect();
    // As printed (balance source), then as blog posts write it (balance roundrobin).
    for balance in ["source", "roundrobin"] {
        let (file, ports) = sandbox_fixture("codership-listen-address.cfg", None);
        if balance == "roundrobin" {
            let text = std::fs::read_to_string(file.path()).unwrap();
            std::fs::write(
                file.path(),
                text.replace("balance source", "balance roundrobin"),
            )
            .unwrap();
        }
        let port = ports[&3306];
        let rounds = 9;
        let galera = Proc::galera_lb(file.path());
        std::thread::sleep(Duration::from_secs(1));
        let through_galera_lb = spread(&runtime, port, rounds, &galera);
        drop(galera);
        let modern = for_haproxy_2(file.path());
        let haproxy = Proc::haproxy(modern.path(), port);
        std::thread::sleep(Duration::from_secs(2)); // its first checks
        let through_haproxy = spread(&runtime, port, rounds, &haproxy);
        drop(haproxy);
        println!(
            "codership, balance {balance}: galera-lb {through_galera_lb:?}, haproxy {through_haproxy:?}"
        );
        if balance == "source" {
            // HAProxy's map-based source hash (policy source_map): the very node HAProxy picks.
            assert_eq!(
                through_galera_lb, through_haproxy,
                "balance source: galera-lb and HAProxy send this client to the same node"
            );
        }
        for (proxy, counts) in [
            ("galera-lb", &through_galera_lb),
            ("haproxy", &through_haproxy),
        ] {
            assert!(
                counts.keys().all(|n| names.contains(n)),
                "{proxy}: {counts:?}"
            );
            match balance {
                // One client address: one node, every time.
                "source" => assert_eq!(counts.len(), 1, "{proxy}: one node: {counts:?}"),
                _ => assert!(
                    counts.len() == 3 && counts.values().all(|&c| c == rounds / 3),
                    "{proxy}: equal turns on every node: {counts:?}"
                ),
            }
        }
    }
}

#[test]
fn percona_reference_routes_like_haproxy() {
    let _shared = sandbox::shared_lock();
    let check_ports = [clustercheck(1), clustercheck(2), clustercheck(3)];
    let (file, ports) = sandbox_fixture("percona-pxc-reference.cfg", Some(check_ports));
    let (all_nodes, one_node, stats) = (ports[&3307], ports[&3306], ports[&80]);
    let runtime = runtime();
    let names: Vec<String> = (1..=3).map(node_name).collect();
    let mut seen = Vec::new();
    for proxy in ["galera-lb", "haproxy"] {
        let modern = for_haproxy_2(file.path());
        let process = match proxy {
            "galera-lb" => Proc::galera_lb(file.path()),
            _ => Proc::haproxy(modern.path(), one_node),
        };
        std::thread::sleep(Duration::from_secs(2)); // first checks
        let writes = spread(&runtime, one_node, 9, &process);
        let spread_all = spread(&runtime, all_nodes, 9, &process);
        assert_eq!(
            writes.keys().collect::<Vec<_>>(),
            [&names[0]],
            "{proxy}: pxc-onenode-front sends every session to c1 (c2, c3 are backups)"
        );
        assert_eq!(
            spread_all.len(),
            3,
            "{proxy}: pxc-front spreads over every node: {spread_all:?}"
        );
        // The stats frontend's address: HAProxy's stats page, galera-lb's admin port.
        let stats_address = std::net::SocketAddr::from(([127, 0, 0, 1], stats));
        let reply = match proxy {
            "galera-lb" => lb::http_get(stats_address, "/metrics"),
            _ => lb::http_get(stats_address, "/haproxy/stats"),
        };
        let expected = if proxy == "galera-lb" { 200 } else { 401 };
        assert_eq!(
            reply.status, expected,
            "{proxy} on the stats port: {reply:?}"
        );
        seen.push((proxy, writes, spread_all));
        drop(process);
    }
    println!("percona reference (onenode, all nodes): {seen:?}");
}

/// The earliest attempt's start, as the origin for [`describe`].
fn galera_load_epoch(attempts: &[load::Attempt]) -> Instant {
    attempts.first().map_or_else(Instant::now, |a| a.start)
}
