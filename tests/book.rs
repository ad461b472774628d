//! The documentation: the book in `docs/` (mdBook; `.ci/run` builds it with `mdbook build docs`),
//! the short README and the root files the book includes (ARCHITECTURE.md, BENCHMARKS.md).
//!
//! - The configuration reference (`docs/src/configuration.md`, also the man page
//!   galera-lb.yaml(5)) documents every field the configuration accepts, as serde lists them, and
//!   no field that does not exist.
//! - Every relative link and `#anchor` resolves: to a file of the repository, and to a heading of
//!   the linked Markdown file (GitHub's anchors, which are mdBook's too). mdBook has no link
//!   checker of its own.
//! - Every chapter is in `SUMMARY.md`, and the README stays short.
//! - Paths BENCHMARKS.md names exist.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

#[path = "support/config_fields.rs"]
mod config_fields;

use config_fields::{SECTIONS, fields_of};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The chapters' sources, `docs/src/*.md`.
fn chapters() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(root().join("docs/src"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    files.sort();
    files
}

/// Every Markdown file whose links are checked: the chapters and the root files.
fn documents() -> Vec<PathBuf> {
    let mut files = chapters();
    for name in ["README.md", "ARCHITECTURE.md", "BENCHMARKS.md"] {
        files.push(root().join(name));
    }
    files
}

/// The lines of a Markdown text outside fenced code blocks, with their line numbers.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match fence {
            Some(marker) => {
                if trimmed.starts_with(marker) {
                    fence = None;
                }
            }
            None if trimmed.starts_with("```") => fence = Some("```"),
            None if trimmed.starts_with("~~~") => fence = Some("~~~"),
            None => lines.push((index + 1, line)),
        }
    }
    lines
}

/// A line without its inline code spans (`...`).
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in line.chars() {
        if c == '`' {
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// The text with mdBook's `{{#include FILE}}` lines replaced by the file they name (relative
/// to `dir`), as mdBook renders it.
fn expand_includes(text: &str, dir: &Path) -> String {
    let mut out = String::new();
    for line in text.lines() {
        match line
            .trim()
            .strip_prefix("{{#include ")
            .and_then(|rest| rest.strip_suffix("}}"))
        {
            Some(file) => {
                let path = dir.join(file.trim());
                out.push_str(&expand_includes(&read(&path), path.parent().unwrap()));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The files a text includes with `{{#include FILE}}`, resolved against `dir`.
fn includes(text: &str, dir: &Path) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            line.trim()
                .strip_prefix("{{#include ")
                .and_then(|rest| rest.strip_suffix("}}"))
                .map(|file| dir.join(file.trim()))
        })
        .collect()
}

/// GitHub's anchor for a heading (mdBook makes the same): the text as rendered, lower case,
/// without punctuation but `-` and `_`, spaces as `-`.
fn anchor(heading: &str) -> String {
    let mut text = String::new();
    // Links render as their text: [text](target) -> text.
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find("](").and_then(|close| {
            after[close + 2..]
                .find(')')
                .map(|end| (close, close + 2 + end + 1))
        }) {
            Some((close, end)) => {
                text.push_str(&after[..close]);
                rest = &after[end..];
            }
            None => {
                text.push('[');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown text's headings, numbered as GitHub and mdBook number repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = anchor(line[hashes..].trim());
        let count = seen.entry(base.clone()).or_insert(0);
        out.insert(if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        });
        *count += 1;
    }
    out
}

/// The targets of a line's inline links and images, `[text](target)` and `![alt](target)`.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].trim();
        // `[text](target "title")`
        let target = target.split_once(' ').map_or(target, |(path, _)| path);
        targets.push(target.to_string());
        rest = &after[end..];
    }
    targets
}

/// `path` with `.` and `..` taken out; None when it leaves the repository.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// The broken links of one Markdown file whose links resolve against `dir` (its own folder, or
/// the folder of the chapter that includes it). `in_book`: the links are rendered by mdBook,
/// which turns `.md` links into `.html`, so they must stay inside `docs/src/`.
fn broken_links(file: &Path, text: &str, dir: &Path, in_book: bool) -> Vec<String> {
    let root = root();
    let own_anchors = anchors(&expand_includes(text, file.parent().unwrap()));
    let mut broken = Vec::new();
    let name = file
        .strip_prefix(&root)
        .unwrap_or(file)
        .display()
        .to_string();
    for (number, line) in prose(text) {
        for target in link_targets(line) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let where_ = format!("{name}:{number}: ({target})");
            let (linked, linked_anchors) = if path.is_empty() {
                (file.to_path_buf(), own_anchors.clone())
            } else {
                let Some(resolved) = normalize(&dir.join(path)) else {
                    broken.push(format!("{where_} leaves the repository"));
                    continue;
                };
                if !resolved.starts_with(&root) {
                    broken.push(format!("{where_} leaves the repository"));
                    continue;
                }
                if !resolved.exists() {
                    broken.push(format!("{where_} names no file"));
                    continue;
                }
                if in_book && path.ends_with(".md") && !resolved.starts_with(root.join("docs/src"))
                {
                    broken.push(format!(
                        "{where_}: mdBook links it as .html, which is not there: include the \
                         file as a chapter, or link the chapter that holds it"
                    ));
                    continue;
                }
                let anchors = if path.ends_with(".md") {
                    anchors(&expand_includes(
                        &read(&resolved),
                        resolved.parent().unwrap(),
                    ))
                } else {
                    BTreeSet::new()
                };
                (resolved, anchors)
            };
            if let Some(fragment) = fragment {
                if linked.extension().is_none_or(|ext| ext != "md") {
                    continue;
                }
                if !linked_anchors.contains(fragment) {
                    broken.push(format!(
                        "{where_}: {} has no heading #{fragment}",
                        linked.strip_prefix(&root).unwrap_or(&linked).display()
                    ));
                }
            }
        }
    }
    broken
}

#[test]
fn every_link_and_anchor_resolves() {
    let root = root();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in documents() {
        let text = read(&file);
        let dir = file.parent().unwrap().to_path_buf();
        let in_book = file.starts_with(root.join("docs/src"));
        broken.extend(broken_links(&file, &text, &dir, in_book));
        checked += prose(&text)
            .iter()
            .map(|(_, line)| link_targets(line).len())
            .sum::<usize>();
        // A root file a chapter includes is rendered from the chapter's folder too.
        if in_book {
            for included in includes(&text, &dir) {
                let included_text = read(&included);
                broken.extend(broken_links(&included, &included_text, &dir, true));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_catches_a_missing_file_and_a_missing_anchor() {
    let root = root();
    let file = root.join("docs/src/made-up.md");
    let text = "# Title\n\n[ok](#title) [ok](configuration.md#configuration-reference) \
                [bad](#nowhere) [bad](nothing.md) [bad](operations.md#nowhere) \
                [bad](../../README.md) `[code](nothing.md)` [web](https://example.org/x)\n";
    let broken = broken_links(&file, text, file.parent().unwrap(), true);
    assert_eq!(broken.len(), 4, "{broken:#?}");
    assert_eq!(
        anchor("`galera-lb ctl`: the control port without netcat"),
        "galera-lb-ctl-the-control-port-without-netcat"
    );
    assert_eq!(
        anchor("The client's address: PROXY protocol"),
        "the-clients-address-proxy-protocol"
    );
}

#[test]
fn every_chapter_is_in_the_summary() {
    let summary = read(&root().join("docs/src/SUMMARY.md"));
    let listed: BTreeSet<String> = prose(&summary)
        .iter()
        .flat_map(|(_, line)| link_targets(line))
        .collect();
    for chapter in chapters() {
        let name = chapter.file_name().unwrap().to_str().unwrap().to_string();
        if name != "SUMMARY.md" {
            assert!(
                listed.contains(&name),
                "docs/src/{name} is not in SUMMARY.md: mdBook would not render it"
            );
        }
    }
    for name in &listed {
        assert!(
            root().join("docs/src").join(name).exists(),
            "SUMMARY.md lists {name}, which is not in docs/src/"
        );
    }
}

/// The field names a row of the reference's field table documents: its first cell's code spans,
/// where a bare name after a dotted one shares its section (`control.max_clients` / `max_line`).
fn documented_names(cell: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut prefix = String::new();
    for (index, span) in cell.split('`').enumerate() {
        if index % 2 == 0 || span.is_empty() {
            continue;
        }
        if let Some(dot) = span.rfind('.') {
            prefix = span[..=dot].to_string();
            names.push(span.to_string());
        } else if span.ends_with("[]") {
            names.push(span.to_string());
        } else {
            names.push(format!("{prefix}{span}"));
        }
    }
    names
}

/// Every name in the first column of the reference's field table (the table whose header is
/// `| field | default | meaning |`).
fn reference_fields(text: &str) -> BTreeSet<String> {
    let mut inside = false;
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("| field | default | meaning |") {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with('|') {
                break;
            }
            let cell = line.split('|').nth(1).unwrap_or("");
            names.extend(documented_names(cell));
        }
    }
    names
}

/// How a section's fields are written in the reference.
fn prefix_of(section: &str) -> String {
    match section {
        "(top)" => String::new(),
        "listeners" | "backends" | "pools" => format!("{section}[]."),
        other => format!("{other}."),
    }
}

/// What the configuration accepts, as the reference must write it; and the sections, which the
/// reference may name by themselves (`backends[]`).
fn accepted_fields() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut fields = BTreeSet::new();
    let mut sections = BTreeSet::new();
    for (section, yaml) in SECTIONS {
        if *section != "(top)" {
            let prefix = prefix_of(section);
            sections.insert(prefix.trim_end_matches('.').to_string());
        }
        for field in fields_of(section, yaml) {
            let name = format!("{}{field}", prefix_of(section));
            let is_section = SECTIONS.iter().any(|(other, _)| {
                prefix_of(other).trim_end_matches('.') == name.as_str()
                    || prefix_of(other).trim_end_matches('.') == format!("{name}[]")
            });
            if !is_section {
                fields.insert(name);
            }
        }
    }
    (fields, sections)
}

/// What the reference documents against what the configuration accepts.
fn reference_gaps(reference: &str) -> (Vec<String>, Vec<String>) {
    let documented = reference_fields(reference);
    let (fields, sections) = accepted_fields();
    let missing = fields
        .iter()
        .filter(|field| !documented.contains(*field))
        .cloned()
        .collect();
    let unknown = documented
        .iter()
        .filter(|name| !fields.contains(*name) && !sections.contains(*name))
        .cloned()
        .collect();
    (missing, unknown)
}

/// The reference (and so the man page galera-lb.yaml(5)) has a row for every field of every
/// section, with the names serde itself accepts: a field added to the configuration fails here
/// until it is documented, and a row for a field that is gone (or misspelt) fails too.
#[test]
fn the_configuration_reference_documents_every_field() {
    let reference = read(&root().join("docs/src/configuration.md"));
    let (missing, unknown) = reference_gaps(&reference);
    assert!(
        missing.is_empty(),
        "fields missing from the table in docs/src/configuration.md: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "docs/src/configuration.md documents fields the configuration does not accept: {unknown:?}"
    );
    assert!(reference_fields(&reference).len() > 60);
}

#[test]
fn a_row_left_out_of_the_reference_is_reported() {
    let reference = read(&root().join("docs/src/configuration.md"));
    let without: String = reference
        .lines()
        .filter(|line| !line.starts_with("| `limits.connect_timeout` |"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        reference_gaps(&without).0,
        vec!["limits.connect_timeout".to_string()]
    );
    assert_eq!(
        documented_names("`control.max_clients` / `max_line` / `idle_timeout`"),
        [
            "control.max_clients",
            "control.max_line",
            "control.idle_timeout"
        ]
    );
}

/// The README is what a newcomer reads first: what galera-lb is, the two commands, a short
/// configuration and where the book is. Reference material goes into the book.
#[test]
fn the_readme_stays_short_and_keeps_its_two_commands() {
    let readme = read(&root().join("README.md"));
    assert!(
        readme.len() < 12 * 1024,
        "README.md has {} bytes (at most 12 KiB): move reference material into docs/src/",
        readme.len()
    );
    assert!(readme.contains("## Quick start: two commands"));
    assert!(readme.contains("```sh\nscripts/demo\n```"));
    assert!(readme.contains("```sh\nscripts/test\n```"));
}

/// BENCHMARKS.md names the scripts, sources and files it used: those of the repository exist.
/// Paths under `target/` and `/tmp/` are a run's output, not part of the repository.
#[test]
fn the_paths_benchmarks_md_names_exist() {
    let text = read(&root().join("BENCHMARKS.md"));
    let mut missing = Vec::new();
    let tops = [
        "src/", "tests/", "scripts/", "benches/", "config/", "deploy/", "docs/",
    ];
    for (number, line) in text.lines().enumerate() {
        for word in line.split(|c: char| c.is_whitespace() || "`()[],;:\"'".contains(c)) {
            let word = word.trim_end_matches('.');
            let named = tops.iter().any(|top| word.starts_with(top))
                || (word.ends_with(".md") && !word.contains('/'));
            if named && !root().join(word).exists() {
                missing.push(format!("BENCHMARKS.md:{}: {word}", number + 1));
            }
        }
    }
    assert!(missing.is_empty(), "no such file: {missing:#?}");
}

/// The man page galera-lb.yaml(5), as `scripts/build-deb` makes it from the reference: a man
/// page of section 5 with an entry for every row of the field table, which groff (when it is
/// installed) formats without a warning.
#[test]
fn the_man_page_galera_lb_yaml_5_is_made_from_the_reference() {
    let output = std::process::Command::new("python3")
        .args([
            "scripts/md2man",
            "galera-lb.yaml",
            "5",
            "docs/src/configuration.md",
            "0.1.0",
        ])
        .current_dir(root())
        .output()
        .expect("python3 runs scripts/md2man (scripts/test installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let man = String::from_utf8(output.stdout).unwrap();
    assert!(man.contains("\n.TH \"GALERA-LB.YAML\" \"5\" "), "{man}");
    assert!(man.contains("\n.SH NAME\ngalera\\-lb.yaml \\- configuration reference\n"));
    let reference = read(&root().join("docs/src/configuration.md"));
    for name in reference_fields(&reference) {
        // Each row's names are code spans of its tag: the last part of a shared prefix
        // (`control.max_clients` / `max_line`) stands alone.
        let written = name
            .rsplit_once('.')
            .map_or(name.as_str(), |(_, last)| last);
        let roff = format!("{}\\fR", written.replace('-', "\\-"));
        assert!(man.contains(&roff), "the man page lacks {name}");
    }
    if let Ok(groff) = std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        let mut groff = groff;
        groff
            .stdin
            .take()
            .unwrap()
            .write_all(man.as_bytes())
            .unwrap();
        let out = groff.wait_with_output().unwrap();
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.is_empty(), "groff: {warnings}");
    }
}

/// The configuration Getting started builds is one galera-lb accepts.
#[test]
fn the_getting_started_configuration_is_valid() {
    let text = read(&root().join("docs/src/getting-started.md"));
    let yaml = text
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a yaml block in getting-started.md");
    let config = galera_lb::config::Config::from_yaml(yaml, "getting-started.md")
        .unwrap_or_else(|e| panic!("{e}"));
    config
        .validate("getting-started.md")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listeners.len(), 2);
    assert_eq!(config.backends.len(), 3);
    assert!(config.control.is_some() && config.admin.is_some());
}
