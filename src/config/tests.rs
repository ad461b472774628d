//! The configuration's unit tests: parsing, defaults, every error message, secrets.

use std::time::Duration;

use super::*;

const MINIMAL: &str = "
listeners:
  - name: rw
    bind: 127.0.0.1:3306
    policy: round_robin
backends:
  - address: 127.0.0.1:3316
    weight: 1
";

fn invalid(yaml: &str) -> String {
    Config::from_yaml(yaml, "test.yaml")
        .expect_err("config should be refused")
        .to_string()
}

#[test]
fn minimal_config_parses_with_defaults() {
    let config = Config::from_yaml(MINIMAL, "test.yaml").unwrap();
    assert_eq!(config.listeners[0].policy, PolicyKind::RoundRobin);
    assert_eq!(config.listeners[0].pool, DEFAULT_POOL);
    assert_eq!(config.limits.connect_timeout, Duration::from_secs(1));
    assert_eq!(config.limits.shutdown_delay, Duration::ZERO);
    assert_eq!(config.limits.shutdown_grace, Duration::from_secs(30));
    assert!(config.tcp.nodelay);
    assert_eq!(config.backends[0].weight, 1.0);
    assert_eq!(config.backends[0].tier, 1);
}

#[test]
fn log_level_takes_targets_and_levels_but_no_span_or_field_filters() {
    let with = |level: &str| format!("{MINIMAL}log:\n  level: '{level}'\n");
    assert!(Config::from_yaml(&with("info,galera_lb=debug,mysql_async=warn"), "t").is_ok());
    assert!(invalid(&with("inf\u{e9}=debug")).contains("cannot appear in a filter"));
    for level in ["info,x[span]=debug", "info,x[{field=1}]=trace", "warn,{"] {
        let error = invalid(&with(level));
        assert!(
            error.contains("log.level") && error.contains("span and field filters"),
            "{level}: {error}"
        );
    }
}

#[test]
fn builtin_default_is_valid() {
    let config = Config::builtin_default();
    assert_eq!(config.listeners[0].bind.to_string(), "127.0.0.1:3306");
    assert_eq!(config.backends.len(), 3);
}

#[test]
fn example_config_is_valid_and_sets_every_section() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/galera-lb.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    // The example's password comes from an environment variable that need not be set here.
    let config = Config::from_yaml(&text, "config/galera-lb.yaml").unwrap();
    assert_ne!(config.runtime, RuntimeConfig::default());
    assert_ne!(config.limits, LimitsConfig::default());
    assert!(!config.pools.is_empty());
    assert!(config.listeners.len() >= 2);
}

#[test]
fn proxy_protocol_defaults_off_and_backends_inherit() {
    let config = Config::from_yaml(MINIMAL, "t").unwrap();
    assert_eq!(config.listeners[0].proxy_protocol, ProxyProtocol::Off);
    assert!(!config.listeners[0].accept_proxy);
    assert_eq!(config.backends[0].proxy_protocol, None);
    let yaml = MINIMAL
        .replace(
            "policy: round_robin",
            "proxy_protocol: v2\n    accept_proxy: true",
        )
        .replace("weight: 1", "proxy_protocol: off");
    let config = Config::from_yaml(&yaml, "t").unwrap();
    assert_eq!(config.listeners[0].proxy_protocol, ProxyProtocol::V2);
    assert!(config.listeners[0].accept_proxy);
    assert_eq!(config.backends[0].proxy_protocol, Some(ProxyProtocol::Off));
    assert_eq!(ProxyProtocol::Off.version(), None);
    assert_eq!(
        ProxyProtocol::V1.version(),
        Some(crate::core::proxy_protocol::Version::V1)
    );
}

#[test]
fn durations_parse() {
    let yaml = format!("{MINIMAL}limits:\n  connect_timeout: 500ms\n  shutdown_grace: 2s\n");
    let config = Config::from_yaml(&yaml, "t").unwrap();
    assert_eq!(config.limits.connect_timeout, Duration::from_millis(500));
    assert_eq!(config.limits.shutdown_grace, Duration::from_secs(2));
}

#[test]
fn errors_name_the_file_the_field_and_the_reason() {
    let cases: &[(&str, &str, &str)] = &[
        ("listeners:\n  - name: rw\n    bind: [", "test.yaml", "line"),
        (
            &MINIMAL.replace("weight: 1", "weight: 1\n    colour: red"),
            "backends[0]",
            "unknown field `colour`",
        ),
        (
            &MINIMAL.replace("127.0.0.1:3316", "127.0.0.1"),
            "backends[0].address",
            "not HOST:PORT",
        ),
        (
            &MINIMAL.replace("127.0.0.1:3306", "localhost:3306"),
            "listeners[0].bind",
            "not IP:PORT",
        ),
        (
            &MINIMAL.replace("weight: 1", "weight: 0"),
            "backends[0].weight",
            "greater than 0",
        ),
        (
            &MINIMAL.replace("weight: 1", "weight: -2"),
            "backends[0].weight",
            "greater than 0",
        ),
        (
            &MINIMAL.replace("round_robin", "fastest"),
            "listeners[0].policy",
            "unknown variant, expected one of `round_robin`",
        ),
        (
            &format!("{MINIMAL}limits:\n  connect_timeout: soon\n"),
            "limits.connect_timeout",
            "",
        ),
        (
            &format!("{MINIMAL}limits:\n  park_idle_after: 1ms\n"),
            "limits.park_idle_after",
            "must be from 10ms to 24h",
        ),
        (
            &format!("{MINIMAL}limits:\n  client_idle_timeout: 0s\n"),
            "limits.client_idle_timeout",
            "or null",
        ),
        (
            &MINIMAL.replace(
                "    policy: round_robin",
                "    policy: round_robin\n  - name: rw\n    bind: 127.0.0.1:3307",
            ),
            "listeners[1].name",
            "used twice",
        ),
        (
            &MINIMAL.replace("    policy: round_robin", "    pool: writers"),
            "listeners[0].pool",
            "no pool named 'writers'",
        ),
        (
            &format!("{MINIMAL}health:\n  password: a\n  password_env: B\n"),
            "health.password",
            "only one",
        ),
        ("backends: []\n", "test.yaml", "listeners"),
        (
            &format!("{MINIMAL}control:\n  token: a\n  token_file: /t\n"),
            "control.token",
            "only one of token, token_env and token_file",
        ),
        (
            &format!("{MINIMAL}admin:\n  token_env: A\n  token_file: /t\n"),
            "admin.token",
            "only one",
        ),
        (
            &format!("{MINIMAL}control:\n  allow: [127.0.0.0/8, 10.0.0.0/33]\n"),
            "control.allow[1]",
            "prefix length must be 0 to 32",
        ),
        (
            &format!("{MINIMAL}admin:\n  allow:\n    - localhost\n"),
            "admin.allow[0]",
            "not an IPv4 or IPv6 address",
        ),
        (
            &format!("{MINIMAL}admin:\n  allow: [10.1.2.3/8]\n"),
            "admin.allow[0]",
            "write 10.0.0.0/8",
        ),
        (
            &format!("{MINIMAL}control:\n  token: ''\n"),
            "control.token",
            "empty",
        ),
        (
            &format!("{MINIMAL}admin:\n  token: 'two words'\n"),
            "admin.token",
            "printable ASCII without spaces",
        ),
        (
            &format!("{MINIMAL}control:\n  token_env: ''\n"),
            "control.token_env",
            "must name an environment variable",
        ),
        (
            &format!("{MINIMAL}control:\n  token:\n"),
            "control",
            "token has no value",
        ),
        (
            &format!("{MINIMAL}admin:\n  token_file: ~\n"),
            "admin",
            "token_file has no value",
        ),
        (
            &format!("{MINIMAL}health:\n  check: http\n  http:\n    path: health\n"),
            "health.http.path",
            "must start with /",
        ),
        (
            &format!("{MINIMAL}health:\n  http:\n    method: 'GET /'\n"),
            "health.http.method",
            "not an HTTP method",
        ),
        (
            &format!("{MINIMAL}health:\n  http:\n    expect_status: 20\n"),
            "health.http.expect_status",
            "100 to 599",
        ),
        (
            &MINIMAL.replace("weight: 1", "weight: 1\n    check_port: 0"),
            "backends[0].check_port",
            "port 0",
        ),
        (
            &format!(
                "{MINIMAL}pools:\n  - name: p\n    backends:\n      - address: 127.0.0.1:3316\n        check_port: 9200\n"
            ),
            "pools[0].backends[0].check_port",
            "same check_port",
        ),
        (
            &format!("{MINIMAL}control:\n  tokn: x\n"),
            "control",
            "unknown field `tokn`",
        ),
        (
            &MINIMAL.replace("weight: 1", "weight: 1\n    proxy_protocol: v3"),
            "backends[0].proxy_protocol",
            "unknown variant, expected one of `off`, `v1`, `v2`",
        ),
        (
            &MINIMAL.replace("weight: 1", "weight: 1\n    proxy_protocol: true"),
            "backends[0].proxy_protocol",
            "",
        ),
        (
            &MINIMAL.replace("policy: round_robin", "proxy_protocol: V2"),
            "listeners[0].proxy_protocol",
            "listeners[0].proxy_protocol: unknown variant, expected one of `off`",
        ),
        (
            &MINIMAL.replace("policy: round_robin", "accept_proxy: v1"),
            "listeners[0].accept_proxy",
            "",
        ),
        (
            &MINIMAL.replace("policy: round_robin", "send_proxy: v1"),
            "listeners[0]",
            "unknown field `send_proxy`",
        ),
    ];
    for (yaml, field, reason) in cases {
        let message = invalid(yaml);
        assert!(message.starts_with("test.yaml: "), "{message}");
        assert!(message.contains(field), "expected {field} in: {message}");
        assert!(message.contains(reason), "expected {reason} in: {message}");
    }
}

#[test]
fn passwords_are_masked_in_debug_output() {
    let yaml = format!("{MINIMAL}health:\n  user: monitor\n  password: hunter2\n");
    let config = Config::from_yaml(&yaml, "t").unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("****"));
    assert_eq!(
        config.health.resolve_password("t").unwrap().expose(),
        "hunter2"
    );
}

#[test]
fn password_may_come_from_the_environment() {
    // SAFETY: this test is the only user of this variable.
    unsafe { std::env::set_var("GALERA_LB_TEST_CHECK_PASSWORD", "s3cret") };
    let yaml = format!("{MINIMAL}health:\n  password_env: GALERA_LB_TEST_CHECK_PASSWORD\n");
    let config = Config::from_yaml(&yaml, "t").unwrap();
    assert_eq!(
        config.health.resolve_password("t").unwrap().expose(),
        "s3cret"
    );
    assert!(!format!("{config:?}").contains("s3cret"));
    let unset = format!("{MINIMAL}health:\n  password_env: GALERA_LB_TEST_UNSET_VARIABLE\n");
    let config = Config::from_yaml(&unset, "t").unwrap();
    let error = config.health.resolve_password("t").unwrap_err().to_string();
    assert!(
        error.starts_with("t: health.password: ") && error.contains("not set"),
        "{error}"
    );
}

#[test]
fn access_defaults_to_no_token_and_no_allowlist() {
    let yaml = format!("{MINIMAL}control: {{}}\nadmin: {{}}\n");
    let config = Config::from_yaml(&yaml, "t").unwrap();
    for fields in [
        config.control.as_ref().unwrap().access_fields(),
        config.admin.as_ref().unwrap().access_fields(),
    ] {
        let access = fields.resolve("t").unwrap();
        assert!(access.token.is_none(), "{}", fields.section);
        assert!(access.allow.is_empty(), "{}", fields.section);
    }
    assert_eq!(config.control.unwrap().bind.to_string(), "127.0.0.1:8011");
    assert_eq!(config.admin.unwrap().bind.to_string(), "127.0.0.1:9104");
}

#[test]
fn tokens_come_from_the_file_the_environment_or_a_file_and_are_masked() {
    // Written in the file; a YAML number is a string here.
    let yaml = format!(
        "{MINIMAL}control:\n  token: hunter2-control\n  allow: [127.0.0.1, '::1/128']\n\
             admin:\n  token: 12345678\n"
    );
    let config = Config::from_yaml(&yaml, "t").unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2-control"), "{debug}");
    assert!(!debug.contains("12345678"), "{debug}");
    let control = config
        .control
        .as_ref()
        .unwrap()
        .access_fields()
        .resolve("t")
        .unwrap();
    assert_eq!(control.token.as_ref().unwrap().expose(), "hunter2-control");
    assert!(!format!("{control:?}").contains("hunter2"));
    assert!(control.allow.allows("127.0.0.1".parse().unwrap()));
    assert!(control.allow.allows("::1".parse().unwrap()));
    assert!(!control.allow.allows("127.0.0.2".parse().unwrap()));
    let admin = config
        .admin
        .as_ref()
        .unwrap()
        .access_fields()
        .resolve("t")
        .unwrap();
    assert_eq!(admin.token.as_ref().unwrap().expose(), "12345678");

    // IPv6 in a block list needs no quotes.
    let yaml = format!("{MINIMAL}admin:\n  allow:\n    - ::1\n    - fd00::/8\n");
    let config = Config::from_yaml(&yaml, "t").unwrap();
    let admin = config.admin.unwrap().access_fields().resolve("t").unwrap();
    assert!(admin.allow.allows("fd00::5".parse().unwrap()));
    assert!(!admin.allow.allows("127.0.0.1".parse().unwrap()));

    // From the environment.
    // SAFETY: this test is the only user of these variables.
    unsafe {
        std::env::set_var("GALERA_LB_TEST_CONTROL_TOKEN", "from-the-env");
        std::env::set_var("GALERA_LB_TEST_EMPTY_TOKEN", "");
        std::env::set_var("GALERA_LB_TEST_SPACED_TOKEN", "not one word");
    }
    let with = |section: &str, field: &str, value: &str| {
        let yaml = format!("{MINIMAL}{section}:\n  {field}: {value}\n");
        let config = Config::from_yaml(&yaml, "t").unwrap();
        match section {
            "control" => config.control.unwrap().access_fields().resolve("t"),
            _ => config.admin.unwrap().access_fields().resolve("t"),
        }
        .map_err(|e| e.to_string())
    };
    let access = with("control", "token_env", "GALERA_LB_TEST_CONTROL_TOKEN").unwrap();
    assert_eq!(access.token.unwrap().expose(), "from-the-env");
    let unset = with("admin", "token_env", "GALERA_LB_TEST_UNSET_TOKEN").unwrap_err();
    assert!(unset.starts_with("t: admin.token_env: "), "{unset}");
    assert!(
        unset.contains("GALERA_LB_TEST_UNSET_TOKEN is not set"),
        "{unset}"
    );
    let empty = with("control", "token_env", "GALERA_LB_TEST_EMPTY_TOKEN").unwrap_err();
    assert!(
        empty.contains("control.token_env: the token is empty"),
        "{empty}"
    );
    let spaced = with("control", "token_env", "GALERA_LB_TEST_SPACED_TOKEN").unwrap_err();
    assert!(spaced.contains("without spaces"), "{spaced}");
    assert!(
        !spaced.contains("not one word"),
        "the reason never quotes the token: {spaced}"
    );

    // From a file: its first line.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "from-a-file\nsecond line\n").unwrap();
    let access = with("admin", "token_file", &path.display().to_string()).unwrap();
    assert_eq!(access.token.unwrap().expose(), "from-a-file");
    let missing = dir.path().join("missing");
    let error = with("control", "token_file", &missing.display().to_string()).unwrap_err();
    assert!(
        error.starts_with("t: control.token_file: cannot read "),
        "{error}"
    );
    std::fs::write(&path, "\n").unwrap();
    let error = with("control", "token_file", &path.display().to_string()).unwrap_err();
    assert!(
        error.contains("control.token_file: the token is empty"),
        "{error}"
    );
}

#[test]
fn host_port_splitting() {
    assert_eq!(split_host_port("db1:3306"), Ok(("db1", 3306)));
    assert_eq!(split_host_port("[::1]:3306"), Ok(("::1", 3306)));
    assert!(split_host_port("::1:3306").is_err());
    assert!(split_host_port("db1").is_err());
    assert!(split_host_port("db1:0").is_err());
    assert!(split_host_port(":3306").is_err());
    assert!(split_host_port("db1:99999").is_err());
}

#[test]
fn every_count_and_duration_is_accepted_at_both_ends_of_its_range() {
    let low = format!(
        "{MINIMAL}runtime:\n  worker_threads: 1\nlimits:\n  max_connections: 1\n  \
         connect_timeout: 10ms\n  shutdown_delay: 0s\n  shutdown_grace: 0s\n  park_idle_after: 10ms\n  \
         client_idle_timeout: 10ms\ntcp:\n  keepalive: 1s\n  user_timeout: 1s\n  backlog: 1\nhealth:\n  \
         interval: 10ms\n  timeout: 10ms\n  rise: 1\n  fall: 1\n  stale_view_after: 0s\n\
         control:\n  max_clients: 1\n  max_line: 16\n  idle_timeout: 100ms\n\
         discover_retire_after: 1\n"
    )
    .replace(
        "    weight: 1",
        "    weight: 1\n    max_connections: 1\n    resolve_every: 1s",
    )
    .replace(
        "    policy: round_robin",
        "    policy: round_robin\n    max_connections: 1",
    );
    let high = format!(
        "{MINIMAL}runtime:\n  worker_threads: 1024\nlimits:\n  max_connections: 1000000\n  \
         connect_timeout: 1h\n  shutdown_delay: 10m\n  shutdown_grace: 24h\n  park_idle_after: 24h\n  \
         client_idle_timeout: 30d\ntcp:\n  keepalive: 32767s\n  user_timeout: 1h\n  backlog: 65535\nhealth:\n  \
         interval: 1h\n  timeout: 1h\n  rise: 1000\n  fall: 1000\n  stale_view_after: 1h\n\
         control:\n  max_clients: 10000\n  max_line: 65536\n  idle_timeout: 24h\n\
         discover_retire_after: 1000\n"
    )
    .replace(
        "    weight: 1",
        "    weight: 1\n    max_connections: 1000000\n    resolve_every: 24h",
    )
    .replace(
        "    policy: round_robin",
        "    policy: round_robin\n    max_connections: 1000000",
    );
    for yaml in [low, high] {
        if let Err(e) = Config::from_yaml(&yaml, "test.yaml") {
            panic!("{e}\n{yaml}");
        }
    }
}

#[test]
fn type_errors_never_echo_the_value() {
    const SECRET: &str = "Tr0ub4dor&3";
    let cases = [
        (
            "health: 'Tr0ub4dor&3'\n",
            "health: invalid type: a string, expected a mapping",
        ),
        (
            "health:\n  timeout: 'Tr0ub4dor&3'\n",
            "health.timeout: invalid value: a string, expected a duration",
        ),
        (
            "health:\n  check: 'Tr0ub4dor&3'\n",
            "health.check: unknown variant, expected one of `none`, `tcp`",
        ),
        (
            "health:\n  rise: 'Tr0ub4dor&3'\n",
            "health.rise: invalid type: a string, expected u32",
        ),
        (
            "tcp:\n  nodelay: 'Tr0ub4dor&3'\n",
            "tcp.nodelay: invalid type: a string, expected a boolean",
        ),
        (
            "control: 'Tr0ub4dor&3'\n",
            "control: invalid type: a string, expected a mapping",
        ),
        (
            "backends:\n  - 'Tr0ub4dor&3'\n",
            "backends[0]: invalid type: a string, expected a mapping",
        ),
    ];
    for (section, expected) in cases {
        let yaml = format!("listeners:\n  - name: rw\n    bind: 127.0.0.1:3306\n{section}");
        let yaml = if section.starts_with("backends") {
            yaml
        } else {
            format!("{yaml}backends:\n  - address: 127.0.0.1:3316\n")
        };
        let message = invalid(&yaml);
        assert!(!message.contains(SECRET), "{section}: echoed: {message}");
        assert!(
            message.contains(expected),
            "{section}: expected {expected:?} in {message}"
        );
        assert!(
            message.contains(" at line "),
            "{section}: no position: {message}"
        );
    }
}

#[test]
fn values_are_taken_out_of_serde_messages_whatever_they_hold() {
    let cases = [
        (
            r#"health: invalid type: string "a\"b\\c, expected x", expected struct HealthConfig at line 4 column 9"#,
            "health: invalid type: a string, expected a mapping at line 4 column 9",
        ),
        (
            "health.rise: invalid type: integer `123456789012345678901234567890` as u128, expected u32 at line 5 column 9",
            "health.rise: invalid type: an integer, expected u32 at line 5 column 9",
        ),
        (
            "x: invalid value: integer `-3`, expected u8",
            "x: invalid value: an integer, expected u8",
        ),
        (
            "x: invalid type: floating point `1.5`, expected u32",
            "x: invalid type: a number, expected u32",
        ),
        (
            "x: invalid type: boolean `true`, expected a duration",
            "x: invalid type: a boolean, expected a duration",
        ),
        (
            "x: invalid type: character ```, expected a string",
            "x: invalid type: a character, expected a string",
        ),
        (
            "health.check: unknown variant `a`, expected x`, expected `none` or `tcp` at line 5 column 10",
            "health.check: unknown variant, expected `none` or `tcp` at line 5 column 10",
        ),
        (
            r#"x: invalid value: string "unterminated"#,
            "x: invalid value: a string",
        ),
        (
            "backends[0]: unknown field `colour`, expected one of `address`, `weight` at line 3",
            "backends[0]: unknown field `colour`, expected one of `address`, `weight` at line 3",
        ),
        (
            "listeners[0].bind: invalid type: sequence, expected a string",
            "listeners[0].bind: invalid type: sequence, expected a string",
        ),
    ];
    for (message, expected) in cases {
        assert_eq!(without_values(message), expected, "{message}");
    }
}
