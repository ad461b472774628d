//! The fuzz targets' committed inputs on stable Rust: every seed in `tests/fuzz/corpus/TARGET/`
//! and every crash input kept in `tests/fuzz/regressions/TARGET/` goes through the same checks as
//! the cargo-fuzz target (`tests/fuzz/checks.rs`), so that what fuzzing found stays fixed without
//! nightly. Fuzzing itself: `scripts/fuzz` (docs/src/development.md, "Fuzzing").

use std::collections::BTreeSet;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "fuzz/checks.rs"]
mod checks;

#[path = "support/config_fields.rs"]
mod config_fields;

use config_fields::{SECTIONS, fields_of};

/// What a target does with one input.
type Check = fn(&[u8]);

/// Every target, by the name of its file in `tests/fuzz/fuzz_targets/`.
const TARGETS: &[(&str, Check)] = &[
    ("control_line", checks::control_line),
    ("config_yaml", checks::config_yaml),
    ("err_packet", checks::err_packet),
    ("wsrep_status", checks::wsrep_status),
    ("glbd_args", checks::glbd_args),
    ("proxy_header", checks::proxy_header),
    ("mysql_follow", checks::mysql_follow),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

/// The files in `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let check = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, check)| *check)
        .expect("a known target");
    let seeds = files(&fuzz_dir().join("corpus").join(target));
    assert!(!seeds.is_empty(), "no seeds in tests/fuzz/corpus/{target}/");
    let regressions = files(&fuzz_dir().join("regressions").join(target));
    for path in seeds.iter().chain(&regressions) {
        let data = fs::read(path).expect("a readable input");
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            panic!("{target}: {} fails (the panic is above)", path.display());
        }
    }
}

#[test]
fn control_line_inputs() {
    replay("control_line");
}

#[test]
fn config_yaml_inputs() {
    replay("config_yaml");
}

#[test]
fn err_packet_inputs() {
    replay("err_packet");
}

#[test]
fn wsrep_status_inputs() {
    replay("wsrep_status");
}

#[test]
fn glbd_args_inputs() {
    replay("glbd_args");
}

#[test]
fn proxy_header_inputs() {
    replay("proxy_header");
}

#[test]
fn every_fuzz_target_is_replayed_here() {
    let on_disk: BTreeSet<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_string))
        .collect();
    let here: BTreeSet<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(on_disk, here, "tests/fuzz/fuzz_targets/ against TARGETS");
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in &here {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} is not a [[bin]] in tests/fuzz/Cargo.toml"
        );
    }
}

/// Every field the configuration accepts is in the `config_yaml` dictionary, so that the fuzzer
/// can write it and reach the validation behind it (an hour of fuzzing without `token:` in the
/// dictionary never reached the token checks). The names come from serde itself, through the
/// error for a made-up field in each section; a new section fails here until it is listed.
#[test]
fn the_config_dictionary_names_every_field() {
    let dictionary = fs::read_to_string(fuzz_dir().join("dicts/config_yaml.dict")).unwrap();
    let mut missing = Vec::new();
    for (section, yaml) in SECTIONS {
        for field in fields_of(section, yaml) {
            if !dictionary.contains(&format!("\"{field}:\"")) {
                missing.push(format!("{section}.{field}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields missing from tests/fuzz/dicts/config_yaml.dict (add \"NAME:\"): {missing:?}"
    );
}
