//! Configuration files as a user writes them, in `tests/config_fixtures/`:
//!
//! - `valid/*.yaml` load, and `galera-lb check` accepts them (with the variables in [`SET`] set,
//!   as `check` reads secrets like start-up; host names that do not resolve are warnings);
//! - `invalid/NAME.yaml` is refused when loaded, by `Config::load` and by `galera-lb check`
//!   alike (exit 64), with a message that starts with the file and contains `NAME.expected` (the
//!   field and the reason); when `NAME.absent` is there too, its text (a secret written where it
//!   does not belong) appears neither in the message nor in anything `check` prints;
//! - `invalid_at_start/NAME.yaml` loads (the text alone is fine), but names a secret that cannot
//!   be read: `Config::resolve_secrets`, `galera-lb check` and starting galera-lb all refuse it
//!   (exit 64) with `NAME.expected` (`check` is start-up without the sockets).
//!
//! To add a case, add the two files; nothing here needs to change.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use galera_lb::config::{Config, ConfigError};

/// Environment variables the fixtures name and expect to be unset.
const UNSET: [&str; 2] = [
    "GALERA_LB_FIXTURE_UNSET_PASSWORD",
    "GALERA_LB_FIXTURE_UNSET_TOKEN",
];

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/config_fixtures")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let yaml: Vec<PathBuf> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .cloned()
        .collect();
    for file in &files {
        if file
            .extension()
            .is_some_and(|e| e == "expected" || e == "absent")
        {
            assert!(
                file.with_extension("yaml").is_file(),
                "{}: no .yaml beside it",
                file.display()
            );
        }
    }
    assert!(!yaml.is_empty(), "no fixtures in {}", dir.display());
    yaml
}

/// The text `NAME.expected` holds (one line; the final newline is not part of it).
fn expected(yaml: &Path) -> String {
    let path = yaml.with_extension("expected");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (write the expected message there)", path.display()));
    let text = text.trim_end_matches('\n').to_string();
    assert!(!text.is_empty(), "{}: empty", path.display());
    text
}

/// The text `NAME.absent` holds, when there is one: what must never be echoed.
fn absent(yaml: &Path) -> Option<String> {
    let text = std::fs::read_to_string(yaml.with_extension("absent")).ok()?;
    let text = text.trim_end_matches('\n').to_string();
    assert!(!text.is_empty(), "{}.absent: empty", yaml.display());
    Some(text)
}

/// Environment variables the valid fixtures name, and their values.
const SET: [(&str, &str); 1] = [("GALERA_LB_ADMIN_TOKEN", "fixture-admin-token")];

/// Runs galera-lb with `args` and `--config yaml`, killing it if it has not exited in 20 s (it
/// must never get as far as serving).
fn galera_lb(args: &[&str], yaml: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_galera-lb"));
    command
        .args(args)
        .arg("--config")
        .arg(yaml)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in UNSET {
        command.env_remove(var);
    }
    command.envs(SET);
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{}: galera-lb {args:?} did not exit", yaml.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn assert_refused_with_64(output: &Output, yaml: &Path, expected: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(64),
        "{}: {what}: {stderr}",
        yaml.display()
    );
    assert!(
        stderr.contains(&format!("{}: ", yaml.display())) && stderr.contains(expected),
        "{}: {what}: expected the file and {expected:?} in: {stderr}",
        yaml.display()
    );
}

#[test]
fn valid_fixtures_load_and_pass_check() {
    for yaml in fixtures("valid") {
        if let Err(e) = Config::load(&yaml) {
            panic!("{}: refused: {e}", yaml.display());
        }
        let output = galera_lb(&["check"], &yaml);
        assert!(
            output.status.success(),
            "{}: check: {}",
            yaml.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn invalid_fixtures_are_refused_naming_the_file_the_field_and_the_reason() {
    for yaml in fixtures("invalid") {
        let expected = expected(&yaml);
        let error = match Config::load(&yaml) {
            Ok(_) => panic!("{}: accepted, expected {expected:?}", yaml.display()),
            Err(e) => e,
        };
        assert!(
            matches!(
                error,
                ConfigError::Syntax { .. } | ConfigError::Invalid { .. }
            ),
            "{}: {error:?}",
            yaml.display()
        );
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("{}: ", yaml.display())),
            "{}: the message does not start with the file: {message}",
            yaml.display()
        );
        assert!(
            message.contains(&expected),
            "{}: expected {expected:?} in: {message}",
            yaml.display()
        );
        // The same text loaded from memory gives the same message.
        let text = std::fs::read_to_string(&yaml).unwrap();
        let file = yaml.display().to_string();
        assert_eq!(
            Config::from_yaml(&text, &file).unwrap_err().to_string(),
            message
        );
        // `galera-lb check` refuses it the same way.
        let output = galera_lb(&["check"], &yaml);
        assert_refused_with_64(&output, &yaml, &expected, "check");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(&message),
            "{}: check printed another message than loading gives: {message}",
            yaml.display()
        );
        if let Some(secret) = absent(&yaml) {
            assert!(
                !message.contains(&secret),
                "{}: the message echoes {secret:?}: {message}",
                yaml.display()
            );
            for printed in [&output.stdout, &output.stderr] {
                assert!(
                    !String::from_utf8_lossy(printed).contains(&secret),
                    "{}: check printed {secret:?}",
                    yaml.display()
                );
            }
        }
    }
}

#[test]
fn secrets_that_cannot_be_read_stop_check_and_the_start_alike() {
    for var in UNSET {
        assert!(
            std::env::var_os(var).is_none(),
            "{var} is set; the fixtures need it unset"
        );
    }
    for yaml in fixtures("invalid_at_start") {
        let expected = expected(&yaml);
        let config = Config::load(&yaml)
            .unwrap_or_else(|e| panic!("{}: refused when loaded: {e}", yaml.display()));
        let file = yaml.display().to_string();
        let message = match config.resolve_secrets(&file) {
            Ok(_) => panic!(
                "{}: secrets resolved, expected {expected:?}",
                yaml.display()
            ),
            Err(e) => e.to_string(),
        };
        assert!(
            message.starts_with(&format!("{file}: ")) && message.contains(&expected),
            "{}: expected {expected:?} in: {message}",
            yaml.display()
        );

        let output = galera_lb(&["check"], &yaml);
        assert_refused_with_64(&output, &yaml, &expected, "check");
        let output = galera_lb(&[], &yaml);
        assert_refused_with_64(&output, &yaml, &expected, "start");
    }
}
