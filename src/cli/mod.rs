//! The `galera-lb` command: parse the command line, load the configuration (exit 64 when it is
//! invalid), set up logging and the tokio runtime, and run until SIGTERM or SIGINT.
//!
//! Invoked as `glbd` (argv[0]'s file name, e.g. through a symlink) or as `galera-lb glbd ARGS…`,
//! it takes glbd's command line instead ([`crate::cli::glbd`]): the configuration comes from
//! the arguments, `--daemon` detaches before the runtime starts, and the rest is the same path.
//!
//! The hidden `galera-lb generate man|completions SHELL` prints the man page and shell
//! completions made from the clap definitions below (the Debian package is built with them).

mod ctl;
pub mod glbd;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::source::{ConfigSource, HaproxyOptions};
use crate::config::{Config, LogFormat};
use glbd::{Detached, GlbdInvocation};

/// The exit status for an invalid configuration (sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// A Galera-aware TCP load balancer for MariaDB Galera Cluster and Percona XtraDB Cluster.
///
/// Without --config it runs a built-in default meant for development: 127.0.0.1:3306 in front of
/// a local three-node test cluster on 127.0.0.1:3316, 3326 and 3336. Every configuration field,
/// with its default, is documented in galera-lb's example configuration,
/// /usr/share/doc/galera-lb/examples/galera-lb.yaml, and in the man page galera-lb.yaml(5).
#[derive(Debug, Parser)]
#[command(name = "galera-lb", version, about, long_about)]
struct Cli {
    /// The YAML configuration file (every field: /usr/share/doc/galera-lb/examples/galera-lb.yaml).
    #[arg(
        short,
        long,
        global = true,
        value_name = "FILE",
        env = "GALERA_LB_CONFIG"
    )]
    config: Option<PathBuf>,

    /// Run from an HAProxy configuration instead of YAML: it is translated in memory (as
    /// `import-haproxy` prints it) at start and on every reload (SIGHUP or SIGUSR2).
    #[arg(long, global = true, value_name = "FILE")]
    haproxy_config: Option<PathBuf>,

    /// With an HAProxy file: keep `option mysql-check` a login-only check instead of turning
    /// it into galera-lb's wsrep check.
    #[arg(long, global = true)]
    keep_checks: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the load balancer (the default).
    Run,
    /// Check the configuration as a start would, without opening a port: read the file and the
    /// secrets it names, resolve the backends. Exit 0 when galera-lb would start (a backend name
    /// that does not resolve yet is a warning), 64 with the file, field and reason.
    Check {
        /// The configuration file (the same as --config FILE).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Talk to the control port of one or more running instances: getinfo, health, stats,
    /// drain, maint, ready, weight, remove, reload (`galera-lb ctl --help`).
    ///
    /// `galera-lb ctl --control lb1:8011 --control lb2:8011 drain 10.0.0.11:3306` drains a node
    /// on both instances; the exit status is 0 only when every instance answered Ok.
    Ctl(ctl::CtlArgs),
    /// Print the galera-lb YAML equivalent of an HAProxy configuration, with comments naming
    /// FILE:LINE; warnings for what is ignored go to stderr. Exit 0, or 64 with the line of each
    /// section a TCP proxy cannot serve (mode http, ACL routing).
    ImportHaproxy {
        /// The HAProxy configuration (e.g. /etc/haproxy/haproxy.cfg).
        file: PathBuf,
    },
    /// Run with glbd's command line, as a drop-in for Codership's glbd (`galera-lb glbd --help`).
    ///
    /// `galera-lb glbd [OPTIONS] [IP:]LISTEN_PORT [HOST[:PORT[:WEIGHT]]]...`; a symlink named
    /// `glbd` to galera-lb does the same. Must come first: glbd's options are not galera-lb's.
    #[command(disable_help_flag = true)]
    Glbd {
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            num_args = 0..,
            value_name = "GLBD_ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Print the man page or a shell's completions, made from this command line's definitions
    /// (the Debian package's build runs it, so they never drift from --help).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
}

#[derive(Debug, Subcommand)]
enum Generate {
    /// The man page galera-lb(1), in roff.
    Man,
    /// Completions for SHELL.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The `galera-lb` program.
pub fn main() -> ExitCode {
    crate::sources::signals::ignore_reloads_until_installed();
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(glbd_args) = glbd_arguments(&args) {
        return glbd_main(glbd_args);
    }
    let cli = Cli::parse_from(&args);
    if matches!(cli.command, Some(Command::Glbd { .. })) {
        // Only reachable with galera-lb options before `glbd` (which handles its own arguments).
        eprintln!(
            "galera-lb: glbd mode takes glbd's command line only: put `glbd` first \
             (galera-lb glbd [OPTIONS] [IP:]LISTEN_PORT [HOST[:PORT[:WEIGHT]]]...)"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Some(Command::Generate { what }) = &cli.command {
        return generate(what);
    }
    if let Some(Command::ImportHaproxy { file }) = &cli.command {
        return import_haproxy(file, cli.keep_checks);
    }
    if let Some(Command::Ctl(args)) = cli.command {
        return ctl::main(args, cli.config.as_deref());
    }
    // `check FILE` names the file as `--config FILE` does (and wins over GALERA_LB_CONFIG).
    let config_path = match &cli.command {
        Some(Command::Check { file: Some(file) }) => Some(file),
        _ => cli.config.as_ref(),
    };
    let source = match (config_path, &cli.haproxy_config) {
        (_, Some(path)) => Some(ConfigSource::Haproxy {
            path: path.clone(),
            options: HaproxyOptions {
                keep_checks: cli.keep_checks,
            },
        }),
        (Some(path), None) => Some(ConfigSource::Yaml(path.clone())),
        (None, None) => None,
    };
    let (config, file) = match load(source.as_ref()) {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("galera-lb: invalid configuration: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check { .. } => check(&config, &file),
        Command::Run => ExitCode::from(exit_status(run(config, file, source, || {}))),
        Command::Glbd { .. }
        | Command::Generate { .. }
        | Command::ImportHaproxy { .. }
        | Command::Ctl(_) => {
            unreachable!("handled before the configuration is loaded")
        }
    }
}

/// `galera-lb check`: start-up without the sockets ([`crate::prepare`]), on a small runtime of
/// its own; what the start would warn about is printed as a warning.
fn check(config: &Config, file: &str) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("galera-lb: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::prepare(config, file)) {
        Ok(prepared) => {
            for warning in &prepared.warnings {
                eprintln!("galera-lb: warning: {warning}");
            }
            println!("{file}: configuration is valid");
            ExitCode::SUCCESS
        }
        Err(crate::RunError::Config(message)) => {
            eprintln!("galera-lb: invalid configuration: {message}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("galera-lb: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the man page or completions made from [`Cli`]'s clap definitions to stdout.
fn generate(what: &Generate) -> ExitCode {
    use clap::CommandFactory;
    let mut command = Cli::command();
    let mut text = Vec::new();
    let made = match what {
        Generate::Man => man_page(command, &mut text),
        Generate::Completions { shell } => {
            clap_complete::generate(*shell, &mut command, "galera-lb", &mut text);
            Ok(())
        }
    };
    let mut out = std::io::stdout().lock();
    match made.and_then(|()| std::io::Write::write_all(&mut out, &text)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("galera-lb: cannot write the generated text to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// galera-lb(1): clap_mangen's sections, with the subcommands described in the page itself
/// (clap_mangen would point at galera-lb-run(1) and the like, which are not installed), and the
/// exit status, signals, files and environment that `--help` has no room for.
fn man_page(command: clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Write;
    let escape = |text: &str| text.replace('\\', "\\e").replace('-', "\\-");
    let commands: Vec<(String, String)> = command
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| {
            let about = c.get_about().map(|a| a.to_string()).unwrap_or_default();
            (c.get_name().to_string(), about)
        })
        .collect();
    let man = clap_mangen::Man::new(command);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    writeln!(out, ".SH COMMANDS")?;
    for (name, about) in commands {
        writeln!(out, ".TP\n\\fB{}\\fR\n{}", escape(&name), escape(&about))?;
    }
    out.write_all(MAN_EXTRA.as_bytes())?;
    man.render_version_section(out)
}

/// The sections of galera-lb(1) that clap has no definitions for (roff).
const MAN_EXTRA: &str = r#".SH EXIT STATUS
0 after a clean shutdown; 64 for an invalid configuration (the message names the file, the
field and the reason), such as a password or token that cannot be read; 1 for other start\-up
failures, such as a port in use or refused. A backend whose host name does not resolve is no
failure: galera\-lb starts with it down and resolves it again. \fBcheck\fR exits as the start
would: 0 (with a warning for such a backend) or 64.
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Drain: the admin port's /ready answers 503 at once; the listeners keep accepting for
\fIlimits.shutdown_delay\fR (0 by default), then close; open sessions may finish for
\fIlimits.shutdown_grace\fR; the rest are closed and galera\-lb exits 0.
.TP
\fBSIGHUP\fR
Re\-read the configuration file; an invalid one is refused and the running configuration stays.
.SH ENVIRONMENT
.TP
\fBGALERA_LB_CONFIG\fR
The configuration file, when \fB\-\-config\fR is not given.
.TP
\fBRUST_LOG\fR
A log filter that overrides \fIlog.level\fR.
.TP
\fBNOTIFY_SOCKET\fR
Set by systemd for \fBType=notify\fR: galera\-lb sends READY=1 once every listener accepts and
the first health round has run, RELOADING=1 and READY=1 around a SIGHUP reload, STOPPING=1
when it drains.
.SH FILES
.TP
\fI/etc/galera\-lb/galera\-lb.yaml\fR
The configuration of the packaged service (galera\-lb.service).
.TP
\fI/usr/share/doc/galera\-lb/examples/galera\-lb.yaml\fR
Every configuration field, with its default and what it does.
.TP
\fI/usr/share/doc/galera\-lb/README.md\fR
What galera\-lb is, and where its book (operations, deployment, monitoring) is.
.SH SEE ALSO
\fBgalera\-lb.yaml\fR(5): every configuration field. \fBsystemctl\fR(1), \fBglbd\fR(8): galera\-lb runs with glbd's command line when it is called
\fBglbd\fR or as \fBgalera\-lb glbd\fR.
"#;

/// glbd's arguments when galera-lb runs as `glbd` (argv[0]'s file name) or `galera-lb glbd …`.
fn glbd_arguments(args: &[OsString]) -> Option<&[OsString]> {
    let program = args.first()?;
    if Path::new(program).file_name() == Some(OsStr::new("glbd")) {
        return Some(&args[1..]);
    }
    (args.get(1)?.as_os_str() == "glbd").then(|| &args[2..])
}

/// glbd mode: parse glbd's arguments, report what is not honoured, detach when asked, then run
/// the configuration like any other.
fn glbd_main(args: &[OsString]) -> ExitCode {
    let glbd = match glbd::parse(args) {
        Ok(GlbdInvocation::Run(glbd)) => *glbd,
        Ok(GlbdInvocation::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(GlbdInvocation::Version(line)) => {
            println!("{line}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("glbd: {e}");
            return ExitCode::from(glbd::EX_USAGE);
        }
    };
    if glbd.print_version {
        println!("{}", glbd::version());
    }
    for warning in &glbd.warnings {
        eprintln!("glbd: warning: {warning}");
    }
    if glbd.raise_fd_limit {
        if let Some(warning) = glbd::raise_fd_limit(glbd.config.limits.max_connections) {
            eprintln!("glbd: warning: {warning}");
        }
    }
    let log = match &glbd.log_file {
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => Some(file),
            Err(e) => {
                eprintln!("glbd: --log-file {}: {e}", path.display());
                return ExitCode::from(glbd::EX_USAGE);
            }
        },
        None => None,
    };
    // Detach before anything starts a thread: the tokio runtime is built in `run`.
    let mut readiness = None;
    if glbd.daemon {
        match glbd::daemonize(log.as_ref()) {
            Ok(Detached::Parent(status)) => return ExitCode::from(status),
            Ok(Detached::Daemon(ready)) => readiness = Some(ready),
            Err(e) => {
                eprintln!("glbd: cannot run as a daemon: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else if let Some(log) = &log {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 of a file we hold open onto stderr.
        if unsafe { libc::dup2(log.as_raw_fd(), libc::STDERR_FILENO) } == -1 {
            eprintln!("glbd: --log-file: {}", std::io::Error::last_os_error());
            return ExitCode::from(glbd::EX_USAGE);
        }
    }
    if let Some(path) = &glbd.pid_file {
        if let Err(e) = glbd::write_pid_file(path) {
            eprintln!("glbd: --pid-file {}: {e}", path.display());
            if let Some(ready) = readiness.take() {
                ready.failed(1);
            }
            return ExitCode::FAILURE;
        }
    }
    let result = run(glbd.config, glbd::SOURCE.to_string(), None, || {
        if let Some(ready) = readiness.take() {
            ready.ready();
        }
    });
    let status = exit_status(result);
    if let Some(ready) = readiness.take() {
        ready.failed(status);
    }
    if let Some(path) = &glbd.pid_file {
        let _ = std::fs::remove_file(path);
    }
    ExitCode::from(status)
}

fn load(source: Option<&ConfigSource>) -> Result<(Config, String), String> {
    match source {
        Some(source) => {
            let (config, warnings) = source.read_with_timeout()?;
            // Printed before logging is set up: they are about the file.
            for warning in warnings {
                eprintln!("galera-lb: warning: {warning}");
            }
            Ok((config, source.path().display().to_string()))
        }
        None => Ok((Config::builtin_default(), "<built-in default>".to_string())),
    }
}

/// `galera-lb import-haproxy FILE`: the YAML on stdout, warnings and errors on stderr.
fn import_haproxy(path: &Path, keep_checks: bool) -> ExitCode {
    let file = path.display().to_string();
    let text = match crate::core::bounded_read::read_regular(
        path,
        crate::core::bounded_read::MAX_CONFIG_BYTES,
    ) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            eprintln!("galera-lb: {file}: cannot read: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let options = crate::config::haproxy::Options { keep_checks };
    match crate::config::haproxy::translate(&text, &file, &options) {
        Ok(translation) => {
            for warning in &translation.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", translation.yaml);
            if let Err(e) = Config::from_yaml(&translation.yaml, &format!("{file} (translated)")) {
                eprintln!("warning: `galera-lb check` will refuse the result: {e}");
            }
            ExitCode::SUCCESS
        }
        Err(failed) => {
            for warning in &failed.warnings {
                eprintln!("warning: {warning}");
            }
            for error in &failed.errors {
                eprintln!("error: {error}");
            }
            eprintln!(
                "galera-lb: {file}: {} section(s) cannot be served by a TCP load balancer; nothing printed",
                failed.errors.len()
            );
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

enum Failure {
    Config(String),
    Other(anyhow::Error),
}

/// Prints why galera-lb stopped, if it failed, and gives the exit status.
fn exit_status(result: Result<(), Failure>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(Failure::Config(message)) => {
            eprintln!("galera-lb: invalid configuration: {message}");
            EXIT_CONFIG
        }
        Err(Failure::Other(e)) => {
            eprintln!("galera-lb: {e:#}");
            1
        }
    }
}

/// Sets up logging and the runtime, and runs `config` until SIGTERM or SIGINT. `on_ready` is
/// called once every listener is bound and accepting (glbd's `--daemon` parent waits for it).
fn run(
    config: Config,
    file: String,
    source: Option<ConfigSource>,
    on_ready: impl FnOnce(),
) -> Result<(), Failure> {
    init_logging(&config);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().thread_name("galera-lb-worker");
    if let Some(threads) = config.runtime.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime
        .build()
        .context("cannot start the tokio runtime")
        .map_err(Failure::Other)?;
    runtime.block_on(async {
        let signals = crate::sources::signals::TerminationSignals::install()
            .context("cannot install the SIGTERM/SIGINT handlers")
            .map_err(Failure::Other)?;
        // `crate::run` first polls this future once `start` has returned, i.e. once every
        // listener is bound and accepting: the moment to report readiness.
        let shutdown = async {
            on_ready();
            let name = signals.recv().await;
            tracing::info!("received {name}: draining (/ready answers 503)");
        };
        tracing::info!(config = %file, version = env!("CARGO_PKG_VERSION"), "galera-lb starting");
        crate::run_from(&config, &file, source, shutdown)
            .await
            .map_err(|e| match e {
                crate::RunError::Config(message) => Failure::Config(message),
                other => Failure::Other(other.into()),
            })
    })
}

fn init_logging(config: &Config) {
    let filter = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .and_then(|level| crate::config::log_filter(&level).ok())
        .or_else(|| crate::config::log_filter(&config.log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
