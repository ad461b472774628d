//! Every file in `deploy/` agrees with galera-lb: each embedded or referenced galera-lb
//! configuration parses and validates with the crate's own parser ([`Config::from_yaml`]), and
//! the ports, probes, grace periods and file-descriptor limits around it match that
//! configuration and galera-lb's defaults (a drain, `limits.shutdown_delay` +
//! `limits.shutdown_grace`, ends before whatever stops galera-lb kills it), and the Debian
//! package's control fields, changelog and maintainer scripts are what Debian users expect.
//! YAML files are read with serde_yaml, several documents per file where Kubernetes has them. A
//! file this test has no check for fails it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use galera_lb::config::{AdminConfig, Config, ControlConfig, LimitsConfig};
use serde::Deserialize;
use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every file under `deploy/`, relative to the repository.
fn deploy_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("deploy"), &mut files);
    let mut files: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    files.sort();
    files
}

/// Parses and validates a galera-lb configuration as loading does (secrets named by `*_env` and
/// `*_file` are read by `galera-lb check` and the start, not here).
fn galera_lb_config(text: &str, source: &str) -> Config {
    Config::from_yaml(text, source)
        .unwrap_or_else(|e| panic!("{source}: galera-lb refuses it: {e}"))
}

fn port(bind: &std::net::SocketAddr) -> u16 {
    bind.port()
}

fn is_loopback(bind: &std::net::SocketAddr) -> bool {
    bind.ip().is_loopback()
}

/// galera-lb's default ports: the first listener of the built-in configuration (MySQL's 3306),
/// the control port and the admin port.
struct Defaults {
    listener: u16,
    control: u16,
    admin: u16,
    limits: LimitsConfig,
}

fn defaults() -> Defaults {
    Defaults {
        listener: port(&Config::builtin_default().listeners[0].bind),
        control: port(&ControlConfig::default().bind),
        admin: port(&AdminConfig::default().bind),
        limits: LimitsConfig::default(),
    }
}

/// What every configuration in deploy/ shares: the default ports, a control and an admin port,
/// wsrep checks with a password that is not in the file.
fn check_common(config: &Config, source: &str) {
    let d = defaults();
    assert_eq!(
        port(&config.listeners[0].bind),
        d.listener,
        "{source}: first listener"
    );
    let control = config.control.as_ref().expect("a control section");
    assert_eq!(port(&control.bind), d.control, "{source}: control port");
    assert!(
        is_loopback(&control.bind),
        "{source}: the control port changes routing; keep it on loopback"
    );
    let admin = config.admin.as_ref().expect("an admin section");
    assert_eq!(port(&admin.bind), d.admin, "{source}: admin port");
    assert!(
        is_loopback(&admin.bind) || admin.token_env.is_some() || admin.token_file.is_some(),
        "{source}: an admin port beyond loopback needs a token"
    );
    assert_eq!(config.health.check.as_str(), "wsrep", "{source}");
    assert!(
        config.health.password.is_none(),
        "{source}: no password in a deployment file"
    );
}

/// A duration written in whole seconds (`40s`), as systemd and Docker take them here.
fn duration(text: &str) -> Duration {
    let seconds = text
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text:?} is not N s"));
    Duration::from_secs(seconds)
}

/// How long galera-lb may take from SIGTERM to its exit: `limits.shutdown_delay` (the listeners
/// still accept, `/ready` already says draining) and then `limits.shutdown_grace`.
fn drain_time(config: &Config) -> Duration {
    config.limits.shutdown_delay + config.limits.shutdown_grace
}

/// The packaged unit's `TimeoutStopSec=`.
fn unit_stop_timeout() -> Duration {
    let unit = unit_service(&read("deploy/debian/galera-lb.service"));
    duration(&unit["TimeoutStopSec"][0])
}

// --- deploy/debian ---------------------------------------------------------------------------

/// A systemd unit's `[Service]` settings (a key given twice keeps every value).
fn unit_service(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[Service]" {
            let (key, value) = line.split_once('=').expect("KEY=VALUE");
            settings
                .entry(key.to_string())
                .or_default()
                .push(value.to_string());
        }
    }
    settings
}

fn check_debian() {
    let d = defaults();
    let conffile = "deploy/debian/galera-lb.yaml";
    let config = galera_lb_config(&read(conffile), conffile);
    check_common(&config, conffile);
    assert!(
        is_loopback(&config.listeners[0].bind),
        "{conffile}: nothing is exposed until the site decides"
    );
    assert_eq!(config.limits.max_connections, d.limits.max_connections);

    let unit = unit_service(&read("deploy/debian/galera-lb.service"));
    let one = |key: &str| -> &str {
        let values = unit
            .get(key)
            .unwrap_or_else(|| panic!("galera-lb.service has no {key}="));
        &values[values.len() - 1]
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("RestartPreventExitStatus"), "64", "64: invalid config");
    assert_eq!(one("User"), "galera-lb");
    assert_eq!(one("CapabilityBoundingSet"), "");
    for hardening in ["NoNewPrivileges", "ProtectHome", "PrivateTmp"] {
        assert_eq!(one(hardening), "yes", "{hardening}");
    }
    assert_eq!(one("ProtectSystem"), "strict");
    assert!(
        one("ExecStart").ends_with("--config /etc/galera-lb/galera-lb.yaml"),
        "the unit runs the packaged conffile"
    );
    // Two descriptors per session (client and backend) for the default max_connections, and
    // room for listeners, checks and the control and admin ports.
    let nofile: u64 = one("LimitNOFILE").parse().unwrap();
    let sessions = u64::from(config.limits.max_connections);
    assert!(
        nofile >= 2 * sessions + 1000,
        "LimitNOFILE={nofile} is too small for {sessions} sessions"
    );
    assert!(
        duration(one("TimeoutStopSec")) > drain_time(&config),
        "systemd must not kill galera-lb before limits.shutdown_delay + shutdown_grace are over"
    );
    // The conffile shows shutdown_delay (commented out: the default is 0s) beside the grace.
    assert!(read(conffile).contains("# shutdown_delay: "), "{conffile}");

    // The package's manifest installs these files where the unit and docs/src/deployment.md say;
    // the conffile may hold a password: not world-readable (postinst gives it to the group).
    let cargo_toml = read("Cargo.toml");
    let manifest: toml_like::Assets = toml_like::assets(&cargo_toml);
    assert!(manifest.contains(
        "deploy/debian/galera-lb.yaml",
        "etc/galera-lb/galera-lb.yaml",
        "640"
    ));
    assert!(manifest.contains("target/release/galera-lb", "usr/bin/", "755"));
    // galera-lb.yaml(5): scripts/build-deb makes it from the book's configuration reference.
    assert!(manifest.contains(
        "target/generated/galera-lb.yaml.5.gz",
        "usr/share/man/man5/",
        "644"
    ));
    check_debian_control(&cargo_toml);
    // lintian overrides: installed where lintian reads them, each for this package and
    // explained by the comment above it.
    assert!(manifest.contains(
        "deploy/debian/lintian-overrides",
        "usr/share/lintian/overrides/galera-lb",
        "644"
    ));
    let overrides = read("deploy/debian/lintian-overrides");
    let mut explained = false;
    for line in overrides.lines() {
        if line.starts_with('#') {
            explained = true;
        } else if line.is_empty() {
            continue;
        } else {
            assert!(line.starts_with("galera-lb: "), "lintian-overrides: {line}");
            assert!(explained, "lintian-overrides: no comment says why: {line}");
            explained = false;
        }
    }

    for script in ["postinst", "prerm", "postrm"] {
        let path = format!("deploy/debian/{script}");
        let text = read(&path);
        assert!(text.starts_with("#!/bin/sh\n"), "{path}");
        assert!(text.contains("\nset -e\n"), "{path}");
        // cargo-deb replaces the token wherever it is, a comment included.
        assert_eq!(
            (
                text.matches("#DEBHELPER#").count(),
                text.contains("\n#DEBHELPER#\n")
            ),
            (1, true),
            "{path}: cargo-deb's snippets go on a line of their own, the token nowhere else"
        );
        let status = std::process::Command::new("sh")
            .args(["-n", &path])
            .current_dir(root())
            .status()
            .unwrap();
        assert!(status.success(), "{path} is not valid sh");
    }
    let postinst = read("deploy/debian/postinst");
    assert!(postinst.contains("useradd --system"));
    for line in [
        "chown root:galera-lb \"$conffile\"",
        "chmod 0640 \"$conffile\"",
        "conffile=/etc/galera-lb/galera-lb.yaml",
        "dpkg-statoverride --list \"$conffile\"",
    ] {
        assert!(postinst.contains(line), "postinst: no {line}");
    }
    // Debian keeps system users on purge: files they own may outlive the package.
    let postrm = read("deploy/debian/postrm");
    for removal in ["userdel", "groupdel", "deluser --", "delgroup --"] {
        let commands: Vec<&str> = postrm.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(
            !commands.iter().any(|l| l.contains(removal)),
            "postrm removes the system user ({removal})"
        );
    }
    assert!(read("deploy/debian/prerm").contains("update-alternatives --remove glbd"));
}

/// What Debian users see of the package: a short description of at most 80 characters, a
/// maintainer with an address, and a Debian changelog whose top entry is this version, by that
/// maintainer.
fn check_debian_control(cargo_toml: &str) {
    let short = env!("CARGO_PKG_DESCRIPTION");
    assert!(
        short.len() <= 80,
        "Cargo.toml's description is the package's short description: {} characters, at most 80",
        short.len()
    );
    assert!(
        !short.ends_with('.') && !short.starts_with("A ") && !short.starts_with("galera-lb"),
        "a short description is a noun phrase, not a sentence: {short:?}"
    );
    let maintainer = toml_like::value(cargo_toml, "maintainer");
    let (name, address) = maintainer
        .strip_suffix('>')
        .and_then(|m| m.split_once(" <"))
        .unwrap_or_else(|| panic!("maintainer {maintainer:?} is not `Name <address>`"));
    assert!(!name.is_empty() && address.contains('@') && !address.ends_with("@localhost"));

    let path = toml_like::value(cargo_toml, "changelog");
    assert_eq!(path, "deploy/debian/changelog");
    let changelog = read(&path);
    let first = changelog.lines().next().unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        first.starts_with(&format!("galera-lb ({version}) ")) && first.contains("; urgency="),
        "{path}: the top entry is `galera-lb ({version}) DISTRIBUTION; urgency=...`, not {first:?}"
    );
    let trailer = changelog
        .lines()
        .find(|l| l.starts_with(" -- "))
        .unwrap_or_else(|| panic!("{path}: no ` -- Maintainer <address>  date` line"));
    let (who, date) = trailer[4..]
        .split_once(">  ")
        .expect("two spaces before the date");
    assert_eq!(
        format!("{who}>"),
        maintainer,
        "{path}: the entry's maintainer"
    );
    // RFC 2822, as `date -R` writes it: `Thu, 03 Dec 2026 02:17:20 +0000`.
    let fields: Vec<&str> = date.split(' ').collect();
    assert!(
        fields.len() == 6 && fields[0].ends_with(',') && fields[5].len() == 5,
        "{path}: the date {date:?} is not `date -R`'s"
    );
    for line in changelog.lines().filter(|l| !l.starts_with(" -- ")) {
        assert!(line.len() <= 80, "{path}: line longer than 80: {line}");
    }
}

/// Just enough of Cargo.toml's `[package.metadata.deb]` to find an asset's source, target and
/// mode, and a `key = "value"` line.
mod toml_like {
    pub struct Assets(Vec<(String, String, String)>);

    impl Assets {
        pub fn contains(&self, source: &str, target: &str, mode: &str) -> bool {
            self.0
                .iter()
                .any(|(s, t, m)| s == source && t == target && m == mode)
        }
    }

    /// The value of `key = "value"` in `[package.metadata.deb]`.
    pub fn value(cargo_toml: &str, key: &str) -> String {
        section(cargo_toml)
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key} = \"")))
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("Cargo.toml: no {key} in [package.metadata.deb]"))
            .to_string()
    }

    fn section(cargo_toml: &str) -> &str {
        cargo_toml
            .split("[package.metadata.deb]")
            .nth(1)
            .expect("Cargo.toml has [package.metadata.deb]")
    }

    pub fn assets(cargo_toml: &str) -> Assets {
        let mut assets = Vec::new();
        for line in section(cargo_toml).lines().map(str::trim) {
            if let Some(inner) = line.strip_prefix("[\"") {
                let fields: Vec<&str> = inner.trim_end_matches("\"],").split("\", \"").collect();
                assets.push((
                    fields[0].to_string(),
                    fields[1].to_string(),
                    fields[2].to_string(),
                ));
            }
        }
        Assets(assets)
    }
}

// --- deploy/swarm ----------------------------------------------------------------------------

fn check_swarm() {
    let stack_path = "deploy/swarm/galera-lb-stack.yml";
    let stack: Value = serde_yaml::from_str(&read(stack_path)).unwrap();
    let service = &stack["services"]["galera-lb"];
    assert!(service.is_mapping(), "{stack_path}: no galera-lb service");

    // The configuration it mounts, parsed by galera-lb.
    let config_ref = &service["configs"][0];
    let source = config_ref["source"].as_str().unwrap();
    assert_eq!(
        config_ref["target"].as_str(),
        Some("/etc/galera-lb/galera-lb.yaml")
    );
    let file = stack["configs"][source]["file"].as_str().unwrap();
    let config_path = format!("deploy/swarm/{}", file.trim_start_matches("./"));
    let config = galera_lb_config(&read(&config_path), &config_path);
    check_common(&config, &config_path);
    assert_eq!(
        service["command"][1].as_str(),
        config_ref["target"].as_str(),
        "--config names the mounted file"
    );

    // The published port is the listener's.
    let published = &service["ports"][0];
    assert_eq!(
        published["target"].as_u64(),
        Some(u64::from(port(&config.listeners[0].bind)))
    );
    // The Galera nodes come from tasks.SERVICE, followed over time, on a network the stack joins.
    let backend = &config.backends[0];
    let galera_service = backend
        .address
        .strip_prefix("tasks.")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("{config_path}: backends from tasks.SERVICE DNS"));
    assert!(
        backend.resolve_every.is_some(),
        "{config_path}: resolve_every"
    );
    let networks: Vec<&str> = service["networks"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        networks.contains(&galera_service),
        "the stack joins the network where the `{galera_service}` service runs"
    );
    // The password comes from the secret the stack mounts.
    let secret = service["secrets"][0].as_str().unwrap();
    assert_eq!(
        config.health.password_file.as_deref(),
        Some(Path::new(&format!("/run/secrets/{secret}")))
    );
    // Several replicas, and time to drain before SIGKILL.
    assert!(service["deploy"]["replicas"].as_u64().unwrap() >= 2);
    assert!(duration(service["stop_grace_period"].as_str().unwrap()) > drain_time(&config));
}

// --- deploy/kubernetes -----------------------------------------------------------------------

fn documents(path: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&read(path))
        .map(|document| Value::deserialize(document).unwrap())
        .collect()
}

fn check_kubernetes() {
    let path = "deploy/kubernetes/galera-lb.yaml";
    let documents = documents(path);
    let by_kind = |kind: &str| -> &Value {
        let found: Vec<&Value> = documents.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "{path}: one {kind}");
        found[0]
    };
    let config_map = by_kind("ConfigMap");
    let deployment = by_kind("Deployment");
    let budget = by_kind("PodDisruptionBudget");
    let services: Vec<&Value> = documents
        .iter()
        .filter(|d| d["kind"] == "Service")
        .collect();
    assert_eq!(
        services.len(),
        2,
        "{path}: a Service for mysql, one for metrics"
    );
    let named = |name: &str| -> &Value {
        services
            .iter()
            .find(|s| s["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{path}: no Service {name}"))
    };
    let service = named("galera-lb");
    let metrics_service = named("galera-lb-metrics");
    assert_eq!(documents.len(), 5, "{path}: unexpected documents");

    let (key, text) = config_map["data"]
        .as_mapping()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let key = key.as_str().unwrap();
    let source = format!("{path} (ConfigMap {key})");
    let config = galera_lb_config(text.as_str().unwrap(), &source);
    check_common(&config, &source);

    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&service["spec"]["selector"], labels);
    assert_eq!(&budget["spec"]["selector"]["matchLabels"], labels);
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    assert!(
        budget["spec"]["maxUnavailable"].as_u64().unwrap()
            < deployment["spec"]["replicas"].as_u64().unwrap()
    );

    let container = &pod["spec"]["containers"][0];
    let ports: BTreeMap<&str, u64> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    let listener = u64::from(port(&config.listeners[0].bind));
    let admin = u64::from(port(&config.admin.as_ref().unwrap().bind));
    assert_eq!(ports["mysql"], listener);
    assert_eq!(ports["admin"], admin);
    assert!(
        !is_loopback(&config.admin.as_ref().unwrap().bind),
        "the kubelet probes the pod's address: the admin port cannot be on loopback"
    );
    // The probes: /ready for readiness, /live for liveness, on the admin port.
    for (probe, path_expected) in [("readinessProbe", "/ready"), ("livenessProbe", "/live")] {
        let http = &container[probe]["httpGet"];
        assert_eq!(http["path"].as_str(), Some(path_expected), "{probe}");
        let probe_port = match &http["port"] {
            Value::String(name) => ports[name.as_str()],
            other => other.as_u64().unwrap(),
        };
        assert_eq!(probe_port, admin, "{probe} port");
    }
    // The Service sends 3306 to the listener, and only that.
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(service_port["port"].as_u64(), Some(listener));
    assert_eq!(
        ports[service_port["targetPort"].as_str().unwrap()],
        listener
    );
    assert_eq!(service["spec"]["ports"].as_sequence().unwrap().len(), 1);
    // The metrics Service: a port named metrics to the admin port of the same pods.
    assert_eq!(&metrics_service["spec"]["selector"], labels);
    let metrics_port = &metrics_service["spec"]["ports"][0];
    assert_eq!(metrics_port["name"].as_str(), Some("metrics"));
    assert_eq!(metrics_port["port"].as_u64(), Some(admin));
    assert_eq!(
        ports[metrics_port["targetPort"].as_str().unwrap()],
        admin,
        "{path}: galera-lb-metrics targets the admin port"
    );
    // A pinned image, not pulled again at every start: the tag is this version.
    let image = container["image"].as_str().unwrap();
    assert_eq!(
        image.rsplit_once(':').map(|(_, tag)| tag),
        Some(env!("CARGO_PKG_VERSION")),
        "{path}: image {image} is not tagged with Cargo.toml's version"
    );
    assert_eq!(container["imagePullPolicy"].as_str(), Some("IfNotPresent"));
    // The ConfigMap is the file --config names.
    let mount = &container["volumeMounts"][0];
    let volume = &pod["spec"]["volumes"][0];
    assert_eq!(mount["name"], volume["name"]);
    assert_eq!(volume["configMap"]["name"], config_map["metadata"]["name"]);
    assert_eq!(
        container["args"][1].as_str().unwrap(),
        format!("{}/{key}", mount["mountPath"].as_str().unwrap())
    );
    // Every environment variable the configuration names is set from a Secret.
    let env: Vec<&str> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for named in [
        config.health.password_env.as_deref(),
        config.admin.as_ref().unwrap().token_env.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(env.contains(&named), "{path}: {named} is not set");
    }
    // Nodes from the headless Service's DNS records, followed over time.
    assert!(config.backends.iter().all(|b| b.resolve_every.is_some()));
    // The drain: galera-lb keeps accepting while kube-proxy catches up with the endpoint's
    // removal, then open sessions finish, all before the kubelet's SIGKILL, which counts from
    // the deletion (a preStop hook's time included).
    assert!(
        config.limits.shutdown_delay >= Duration::from_secs(2),
        "{path}: limits.shutdown_delay covers kube-proxy's catching up"
    );
    let pre_stop = &container["lifecycle"]["preStop"];
    let pre_stop_sleep = pre_stop["sleep"]["seconds"].as_u64().unwrap_or(0);
    assert!(
        pre_stop.is_null() || pre_stop_sleep > 0,
        "{path}: a preStop hook other than sleep: count its time below"
    );
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        Duration::from_secs(grace)
            >= Duration::from_secs(pre_stop_sleep) + drain_time(&config) + Duration::from_secs(5),
        "{path}: terminationGracePeriodSeconds {grace} does not cover the drain"
    );
    // No root, no capabilities.
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0].as_str(),
        Some("ALL")
    );
}

// --- deploy/keepalived -----------------------------------------------------------------------

/// The value after `key ` on its line in a keepalived configuration.
fn keepalived_value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {key}"))
}

fn check_keepalived() {
    let config_path = "deploy/keepalived/galera-lb.yaml";
    let config = galera_lb_config(&read(config_path), config_path);
    check_common(&config, config_path);
    let admin = port(&config.admin.as_ref().unwrap().bind);
    assert!(
        config
            .listeners
            .iter()
            .all(|l| l.bind.to_string().starts_with("0.0.0.0:")),
        "{config_path}: listeners bind every address, so the virtual IP works wherever it is"
    );

    let hosts = ["keepalived-lb1.conf", "keepalived-lb2.conf"];
    let texts: Vec<String> = hosts
        .iter()
        .map(|h| read(&format!("deploy/keepalived/{h}")))
        .collect();
    for (host, text) in hosts.iter().zip(&texts) {
        for path in ["/live", "/ready"] {
            assert!(
                text.contains(&format!("http://127.0.0.1:{admin}{path}")),
                "{host}: no check of {path} on galera-lb's admin port {admin}"
            );
        }
        assert!(text.contains("track_script"), "{host}");
        assert_eq!(
            text.matches('{').count(),
            text.matches('}').count(),
            "{host}: braces"
        );
    }
    let value = |i: usize, key: &str| keepalived_value(&texts[i], key).to_string();
    assert_eq!(value(0, "virtual_router_id"), value(1, "virtual_router_id"));
    let vip = |i: usize| {
        let text = &texts[i];
        let block = &text[text.find("virtual_ipaddress {").unwrap()..];
        block.lines().nth(1).unwrap().trim().to_string()
    };
    assert_eq!(vip(0), vip(1), "both hosts share one virtual IP");
    let priority = |i: usize| value(i, "priority").parse::<i64>().unwrap();
    assert_ne!(priority(0), priority(1));
    // A host whose galera-lb is not ready drops below the other.
    let weight: i64 = keepalived_value(&texts[0], "weight").parse().unwrap();
    assert!(priority(0).max(priority(1)) + weight < priority(0).min(priority(1)));
    // Draining: /ready fails at once; the address has moved after `fall` failed checks
    // `interval` apart and one advert; the listeners accept until then. The whole drain fits
    // the packaged unit's TimeoutStopSec.
    let script = |key: &str| -> u64 {
        let text = &texts[0];
        let block = &text[text.find("vrrp_script galera_lb_ready {").unwrap()..];
        keepalived_value(block, key).parse().unwrap()
    };
    let advert: u64 = value(0, "advert_int").parse().unwrap();
    let moved = Duration::from_secs(script("interval") * script("fall") + advert);
    assert!(
        config.limits.shutdown_delay >= moved,
        "{config_path}: limits.shutdown_delay {:?} ends before keepalived moves the address ({moved:?})",
        config.limits.shutdown_delay
    );
    assert!(drain_time(&config) < unit_stop_timeout());
    // Each names the other as its peer.
    assert_eq!(value(0, "unicast_src_ip"), peer(&texts[1]));
    assert_eq!(value(1, "unicast_src_ip"), peer(&texts[0]));
}

fn peer(text: &str) -> String {
    let block = &text[text.find("unicast_peer {").unwrap()..];
    block.lines().nth(1).unwrap().trim().to_string()
}

// --- deploy/grafana --------------------------------------------------------------------------

/// The dashboard parses and names its data source through the `DS_PROMETHEUS` variable; its
/// panels and queries are checked in depth, against a real Prometheus, by `tests/grafana.rs`.
fn check_grafana() {
    let path = "deploy/grafana/galera-lb.json";
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
    assert_eq!(dashboard["uid"], "galera-lb", "{path}");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"),
        "{path}: no DS_PROMETHEUS data source variable"
    );
}

// --- every file ------------------------------------------------------------------------------

#[test]
fn every_deploy_file_agrees_with_galera_lb() {
    let checks: [(&str, fn()); 5] = [
        ("deploy/debian/", check_debian),
        ("deploy/grafana/", check_grafana),
        ("deploy/swarm/", check_swarm),
        ("deploy/kubernetes/", check_kubernetes),
        ("deploy/keepalived/", check_keepalived),
    ];
    let covered: &[&str] = &[
        "deploy/debian/changelog",
        "deploy/debian/lintian-overrides",
        "deploy/debian/galera-lb.service",
        "deploy/debian/galera-lb.yaml",
        "deploy/debian/postinst",
        "deploy/debian/postrm",
        "deploy/debian/prerm",
        "deploy/grafana/galera-lb.json",
        "deploy/keepalived/galera-lb.yaml",
        "deploy/keepalived/keepalived-lb1.conf",
        "deploy/keepalived/keepalived-lb2.conf",
        "deploy/kubernetes/galera-lb.yaml",
        "deploy/swarm/galera-lb-stack.yml",
        "deploy/swarm/galera-lb.yaml",
    ];
    let files = deploy_files();
    for file in &files {
        assert!(
            covered.contains(&file.as_str()),
            "{file} has no check in tests/deploy.rs: add one"
        );
    }
    assert_eq!(files.len(), covered.len(), "{files:?}");
    for (dir, check) in checks {
        eprintln!("checking {dir}");
        check();
    }
}

#[test]
fn the_dockerfile_health_check_and_ports_agree_with_its_configuration() {
    let dockerfile = read("Dockerfile");
    let config = galera_lb_config(&read("config/docker.yaml"), "config/docker.yaml");
    let admin = config
        .admin
        .as_ref()
        .expect("config/docker.yaml: an admin section");
    let healthcheck = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .nth(1)
        .expect("a HEALTHCHECK");
    assert!(
        healthcheck.contains(&format!("/dev/tcp/127.0.0.1/{}", port(&admin.bind)))
            && healthcheck.contains("GET /live "),
        "HEALTHCHECK must ask /live on the admin port: {healthcheck}"
    );
    assert!(is_loopback(&admin.bind) || admin.token_file.is_some());
    let expose = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("EXPOSE");
    for port in [
        port(&config.listeners[0].bind),
        defaults().control,
        defaults().admin,
    ] {
        assert!(
            expose.split(' ').any(|p| p == port.to_string()),
            "EXPOSE {port}"
        );
    }
    assert!(
        dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/galera-lb\"]"),
        "galera-lb is PID 1 itself (it handles SIGTERM and SIGINT; see the Dockerfile's comment)"
    );
}
