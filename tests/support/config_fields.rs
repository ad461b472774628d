//! Every field the configuration file accepts, by section, as serde itself lists them: the
//! error for a made-up field in a section names the fields it expected. Used by
//! `tests/fuzz_corpus.rs` (the fuzzer's dictionary names every field) and `tests/book.rs` (the
//! configuration reference documents every field); a new field fails both until it is added.

use galera_lb::config::Config;

/// The YAML that puts a made-up field in each section of the configuration, by the section's
/// path as a field name would be reported.
pub const SECTIONS: &[(&str, &str)] = &[
    ("(top)", "made_up: 1\n"),
    ("runtime", "runtime:\n  made_up: 1\n"),
    ("log", "log:\n  made_up: 1\n"),
    ("limits", "limits:\n  made_up: 1\n"),
    ("tcp", "tcp:\n  made_up: 1\n"),
    ("listeners", "listeners:\n  - made_up: 1\n"),
    ("backends", "backends:\n  - made_up: 1\n"),
    ("pools", "pools:\n  - made_up: 1\n"),
    ("health", "health:\n  made_up: 1\n"),
    ("health.http", "health:\n  http:\n    made_up: 1\n"),
    ("health.lag", "health:\n  lag:\n    made_up: 1\n"),
    ("locality", "locality:\n  made_up: 1\n"),
    ("control", "control:\n  made_up: 1\n"),
    ("admin", "admin:\n  made_up: 1\n"),
];

/// Top-level fields that hold a value rather than a section.
pub const TOP_LEVEL_VALUES: &[&str] = &["discover", "discover_retire_after"];

/// The fields serde lists in its "unknown field `made_up`, expected one of `a`, `b`" error.
pub fn fields_of(section: &str, yaml: &str) -> Vec<String> {
    let error = Config::from_yaml(yaml, "fields.yaml")
        .err()
        .unwrap_or_else(|| panic!("{section}: a made-up field was accepted"))
        .to_string();
    let listed = error
        .split_once("expected one of ")
        .or_else(|| error.split_once("expected "))
        .unwrap_or_else(|| panic!("{section}: no list of fields in: {error}"))
        .1;
    // "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, `c`": the names are the
    // code spans.
    let fields: Vec<String> = listed
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(!fields.is_empty(), "{section}: no fields in: {error}");
    if section == "(top)" {
        for field in &fields {
            assert!(
                TOP_LEVEL_VALUES.contains(&field.as_str())
                    || SECTIONS.iter().any(|(name, _)| name == field),
                "the configuration has a new section `{field}`: add it to SECTIONS in \
                 tests/support/config_fields.rs"
            );
        }
    }
    fields
}
