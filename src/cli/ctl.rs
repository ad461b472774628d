//! `galera-lb ctl`: the control port's client, so that operators and the container image need no
//! netcat, and one command drains a node on every instance.
//!
//! Each request is sent to every `--control` address in turn (with `auth TOKEN` first when a
//! token is given), over a short-lived connection: the request lines, a half-close, then the
//! reply up to the server's close. The exit status is 0 when every instance answered and none
//! said `Error`, 1 otherwise, 64 for a request that cannot be sent (a missing token file).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::config::Config;

/// How long a control port may take to connect and to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `galera-lb ctl`'s options.
#[derive(Debug, Args)]
pub(crate) struct CtlArgs {
    /// A control port to send the request to, `HOST:PORT`; repeat it for several instances.
    /// Default: `control.bind` of --config when given, else 127.0.0.1:8011.
    #[arg(
        long = "control",
        value_name = "HOST:PORT",
        env = "GALERA_LB_CONTROL",
        value_delimiter = ','
    )]
    controls: Vec<String>,

    /// A file whose first line is the control token (`auth TOKEN` is sent first). Default: the
    /// token of --config's control section, when it names one.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Print each instance's answer as one JSON object per line: {"control", "ok", "reply"}
    /// (`getinfo`'s reply is the JSON of `getinfo json`).
    #[arg(long)]
    json: bool,

    #[command(subcommand)]
    request: CtlRequest,
}

/// What to ask the control port.
#[derive(Debug, Subcommand)]
pub(crate) enum CtlRequest {
    /// The routing table: every pool and backend.
    Getinfo,
    /// Each backend's state, role and reason.
    Health,
    /// Traffic since the previous `stats` (glbd's getstat line).
    Stats,
    /// No new clients for BACKEND; its open sessions stay.
    Drain { backend: String },
    /// Like drain, its health checks pause, and its sessions close between transactions.
    Maint { backend: String },
    /// BACKEND back in service.
    Ready { backend: String },
    /// Set BACKEND's weight (adding it when it is new); 0 drains it.
    Weight { backend: String, weight: f64 },
    /// Remove BACKEND and close its sessions.
    Remove { backend: String },
    /// Re-read the configuration file.
    Reload,
}

impl CtlRequest {
    /// The request line, and whether it changes state (its reply is `Ok` or `Error...`).
    fn line(&self, json: bool) -> (String, bool) {
        match self {
            CtlRequest::Getinfo if json => ("getinfo json".into(), false),
            CtlRequest::Getinfo => ("getinfo".into(), false),
            CtlRequest::Health => ("health".into(), false),
            CtlRequest::Stats => ("getstat".into(), false),
            CtlRequest::Drain { backend } => (format!("drain {backend}"), true),
            CtlRequest::Maint { backend } => (format!("maint {backend}"), true),
            CtlRequest::Ready { backend } => (format!("ready {backend}"), true),
            CtlRequest::Weight { backend, weight } => (format!("{backend}:{weight}"), true),
            CtlRequest::Remove { backend } => (format!("{backend}:-1"), true),
            CtlRequest::Reload => ("reload".into(), true),
        }
    }
}

/// Runs `galera-lb ctl`; `config` is --config, when given.
pub(crate) fn main(args: CtlArgs, config: Option<&Path>) -> ExitCode {
    let from_config = match config.map(read_control_section) {
        Some(Ok(section)) => section,
        Some(Err(message)) => {
            eprintln!("galera-lb ctl: {message}");
            return ExitCode::from(64);
        }
        None => None,
    };
    let controls = if !args.controls.is_empty() {
        args.controls.clone()
    } else if let Some((bind, _)) = &from_config {
        vec![bind.clone()]
    } else {
        vec!["127.0.0.1:8011".to_string()]
    };
    let token = match (&args.token_file, from_config.and_then(|(_, token)| token)) {
        (Some(path), _) => match read_token(path) {
            Ok(token) => Some(token),
            Err(message) => {
                eprintln!("galera-lb ctl: --token-file {}: {message}", path.display());
                return ExitCode::from(64);
            }
        },
        (None, token) => token,
    };
    let (line, changes) = args.request.line(args.json);
    let mut all_ok = true;
    for control in &controls {
        let outcome = ask(control, token.as_deref(), &line);
        let ok = match &outcome {
            // A change is done when it is answered `Ok`; a read when it is not an `Error`.
            Ok(reply) if changes => reply.trim_end() == "Ok",
            Ok(reply) => !reply.starts_with("Error"),
            Err(_) => false,
        };
        all_ok &= ok;
        print_outcome(control, &outcome, ok, args.json, controls.len() > 1);
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_outcome(
    control: &str,
    outcome: &Result<String, String>,
    ok: bool,
    json: bool,
    several: bool,
) {
    if json {
        let reply = match outcome {
            Ok(text) => serde_json::from_str::<serde_json::Value>(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.trim_end().to_string())),
            Err(e) => serde_json::Value::String(e.clone()),
        };
        println!(
            "{}",
            serde_json::json!({"control": control, "ok": ok, "reply": reply})
        );
        return;
    }
    match outcome {
        Ok(text) if several => {
            for line in text.trim_end().lines() {
                println!("{control}: {line}");
            }
        }
        Ok(text) => print!("{text}"),
        Err(e) => eprintln!("galera-lb ctl: {control}: {e}"),
    }
}

/// Sends `line` (after `auth TOKEN` when there is a token) and returns the reply to it.
fn ask(control: &str, token: Option<&str>, line: &str) -> Result<String, String> {
    let address = control
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve it: {e}"))?
        .next()
        .ok_or("it resolves to no address")?;
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT).map_err(|e| {
        format!("cannot connect: {e} (is galera-lb running with a control: section there?)")
    })?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut request = String::new();
    if let Some(token) = token {
        request.push_str(&format!("auth {token}\n"));
    }
    request.push_str(line);
    request.push('\n');
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.shutdown(Shutdown::Write))
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| format!("no complete answer within {} s: {e}", TIMEOUT.as_secs()))?;
    if token.is_some() {
        let (auth, rest) = reply.split_once('\n').unwrap_or((&reply, ""));
        if auth != "Ok" {
            return Err(format!("the token was refused: {auth}"));
        }
        return Ok(rest.to_string());
    }
    Ok(reply)
}

/// The first line of a token file.
fn read_token(path: &Path) -> Result<String, String> {
    let bytes =
        crate::core::bounded_read::read_regular(path, crate::core::bounded_read::MAX_SECRET_BYTES)
            .map_err(|e| format!("cannot read it: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())?;
    match text.lines().next() {
        Some(token) if !token.is_empty() => Ok(token.to_string()),
        _ => Err("its first line is empty".to_string()),
    }
}

/// The control port's address and token from a configuration file: `None` when it has no
/// control section.
fn read_control_section(path: &Path) -> Result<Option<(String, Option<String>)>, String> {
    let file = path.display().to_string();
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let Some(control) = &config.control else {
        return Ok(None);
    };
    let access = control
        .access_fields()
        .resolve(&file)
        .map_err(|e| e.to_string())?;
    let token = access.token.map(|secret| secret.expose().to_string());
    Ok(Some((control.bind.to_string(), token)))
}
