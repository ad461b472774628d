//! The man page galera-lb(1) and the bash, zsh and fish completions come from the clap
//! definitions (`galera-lb generate man|completions SHELL`, run by `scripts/build-deb`): every
//! option and command that `--help` shows must be in each of them, with the same words.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;

use lb::binary;

fn output(args: &[&str]) -> String {
    let out = binary().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "galera-lb {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The man page as text, with roff's escaped hyphens and quotes made plain again.
fn man_text() -> String {
    output(&["generate", "man"])
        .replace("\\-", "-")
        .replace("\\*(Aq", "'")
}

/// The indented entries of a `--help` section (`Commands:` or `Options:`): each entry's first
/// word and the text after it, for entries that start a line.
fn help_section(help: &str, heading: &str) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            inside = line.trim_end() == heading;
            continue;
        }
        if inside && line.starts_with("  ") && !line.starts_with("      ") {
            let entry = line.trim();
            let (name, about) = entry.split_once("  ").unwrap_or((entry, ""));
            entries.push((name.trim().to_string(), about.trim().to_string()));
        }
    }
    entries
}

/// Every `--long` option that a `--help` text lists under `Options:`.
fn long_options(help: &str) -> Vec<String> {
    help_section(help, "Options:")
        .iter()
        .flat_map(|(name, _)| name.split([',', ' ']))
        .filter(|word| word.starts_with("--"))
        .map(str::to_string)
        .collect()
}

/// The help of the top-level command and of each of its clap subcommands (glbd prints glbd's
/// own usage, which is not clap's and has its own tests).
fn helps() -> Vec<(String, String)> {
    let top = output(&["--help"]);
    let mut helps = vec![("galera-lb".to_string(), top.clone())];
    for (name, _) in help_section(&top, "Commands:") {
        if name != "help" && name != "glbd" {
            helps.push((name.clone(), output(&[&name, "--help"])));
        }
    }
    helps
}

#[test]
fn the_man_page_has_every_option_and_command_of_help() {
    let man = man_text();
    let top = output(&["--help"]);
    let commands = help_section(&top, "Commands:");
    assert!(
        commands.iter().any(|(name, _)| name == "check"),
        "--help lists no commands? {top}"
    );
    for (name, about) in commands.iter().filter(|(name, _)| name != "help") {
        assert!(
            man.contains(&format!("\\fB{name}\\fR\n{about}")),
            "the man page lacks the command {name:?} described as {about:?}:\n{man}"
        );
    }
    let mut checked = 0;
    for (command, help) in helps() {
        for option in long_options(&help) {
            assert!(
                man.contains(&format!("\\fB{option}\\fR")),
                "the man page lacks {command}'s option {option}:\n{man}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} options found in --help");
    let version = output(&["--version"]);
    let version = version.trim().rsplit(' ').next().unwrap();
    assert!(
        man.contains(&format!("v{version}")),
        "the man page is not for version {version}"
    );
    // Sections written by hand next to the clap ones.
    for section in ["EXIT STATUS", "SIGNALS", "ENVIRONMENT", "FILES"] {
        assert!(man.contains(&format!(".SH {section}")), "no {section}");
    }
}

#[test]
fn the_generate_command_stays_out_of_help_and_the_man_page() {
    let top = output(&["--help"]);
    assert!(!top.contains("generate"), "{top}");
    assert!(!man_text().contains("generate"));
}

#[test]
fn each_shell_completion_offers_every_option_and_command_of_help() {
    let top = output(&["--help"]);
    let commands: Vec<String> = help_section(&top, "Commands:")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for shell in ["bash", "zsh", "fish"] {
        let script = output(&["generate", "completions", shell]);
        assert!(
            script.contains("galera-lb") || script.contains("galera__lb"),
            "{shell}: {script}"
        );
        for command in &commands {
            assert!(
                script.contains(command.as_str()),
                "{shell} completion lacks the command {command}"
            );
        }
        for (command, help) in helps() {
            for option in long_options(&help) {
                // fish writes `-l config` for `--config`.
                let fish = format!("-l {}", option.trim_start_matches("--"));
                assert!(
                    script.contains(&option) || (shell == "fish" && script.contains(&fish)),
                    "{shell} completion lacks {command}'s option {option}"
                );
            }
        }
    }
}

#[test]
fn an_unknown_shell_is_refused_naming_the_choices() {
    let out = binary()
        .args(["generate", "completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bash") && stderr.contains("zsh") && stderr.contains("fish"),
        "{stderr}"
    );
}
