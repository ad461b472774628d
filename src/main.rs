//! The `galera-lb` command: parse the command line, load the configuration (exit 64 when it is
//! invalid), set up logging and the tokio runtime, and run until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use galera_lb::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// The exit status for an invalid configuration (sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// A Galera-aware TCP load balancer for MariaDB Galera Cluster and Percona XtraDB Cluster.
///
/// Without --config it runs the built-in default: 127.0.0.1:3306 in front of the local sandbox
/// cluster that `scripts/sandbox start` runs on 127.0.0.1:3316, 3326 and 3336.
#[derive(Debug, Parser)]
#[command(name = "galera-lb", version, about, long_about)]
struct Cli {
    /// The YAML configuration file (see config/galera-lb.yaml for every field).
    #[arg(
        short,
        long,
        global = true,
        value_name = "FILE",
        env = "GALERA_LB_CONFIG"
    )]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the load balancer (the default).
    Run,
    /// Validate the configuration and exit: 0 when valid, 64 with the file, field and reason.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, file) = match load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("galera-lb: invalid configuration: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            println!("{file}: configuration is valid");
            ExitCode::SUCCESS
        }
        Command::Run => match run(config, file) {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure::Config(message)) => {
                eprintln!("galera-lb: invalid configuration: {message}");
                ExitCode::from(EXIT_CONFIG)
            }
            Err(Failure::Other(e)) => {
                eprintln!("galera-lb: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn load(path: Option<&std::path::Path>) -> Result<(Config, String), String> {
    match path {
        Some(path) => Config::load(path)
            .map(|config| (config, path.display().to_string()))
            .map_err(|e| e.to_string()),
        None => Ok((Config::builtin_default(), "<built-in default>".to_string())),
    }
}

enum Failure {
    Config(String),
    Other(anyhow::Error),
}

fn run(config: Config, file: String) -> Result<(), Failure> {
    init_logging(&config);
    if let Err(reason) = config.health.resolve_password() {
        return Err(Failure::Config(format!(
            "{file}: health.password: {reason}"
        )));
    }
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
        let signals = galera_lb::shutdown::TerminationSignals::install()
            .context("cannot install the SIGTERM/SIGINT handlers")
            .map_err(Failure::Other)?;
        let shutdown = async {
            let name = signals.recv().await;
            tracing::info!("received {name}: no new connections; draining open ones");
        };
        tracing::info!(config = %file, version = env!("CARGO_PKG_VERSION"), "galera-lb starting");
        galera_lb::run(&config, &file, shutdown)
            .await
            .map_err(|e| match e {
                galera_lb::RunError::Config(message) => Failure::Config(message),
                other => Failure::Other(other.into()),
            })
    })
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
