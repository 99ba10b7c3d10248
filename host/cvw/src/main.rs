//! The `cvw` command line: `serve`, `policy check|test|swap`, `status`.
//!
//! Owns argument parsing, logging set-up and turning errors into messages and exit codes.
//! The commands themselves live in `cvw::cli` and `cvw::daemon`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use cvw::admin::{AdminToken, TOKEN_ENV};
use cvw::cli::{self, client::Control};
use cvw::daemon::{self, ServeConfig};

#[derive(Parser)]
#[command(
    name = "cvw",
    version,
    about = "Call via Work for open-source SIP proxies"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the policy beside the proxies: decision service, file watcher, control API.
    Serve {
        /// The serve configuration (directory, policy, limits, listen addresses).
        #[arg(long, default_value = "examples/cvw.toml")]
        config: PathBuf,
    },
    /// Check, test or swap policy modules.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show the policy a running `cvw serve` publishes.
    Status {
        /// The control API of `cvw serve`.
        #[arg(long, default_value = "http://127.0.0.1:8448")]
        control: String,
        /// A file holding the admin token (default: $CVW_ADMIN_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Load a module, show its contract, exports, imports and describe(), and run
    /// configure and check-user against a directory. `built-in` is the default policy.
    Check {
        /// A policy component (.wasm), or `built-in`.
        module: String,
        /// The directory whose users and [policy.config] the policy must accept.
        #[arg(long, default_value = "examples/directory.toml")]
        directory: PathBuf,
    },
    /// Run scenario files (CVW-53) against a module; a folder stands for its *.toml files.
    Test {
        /// A policy component (.wasm), or `built-in`.
        module: String,
        /// Scenario files or folders of them.
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
    },
    /// Upload a module to a running `cvw serve`.
    Swap {
        /// The policy component (.wasm) to upload.
        module: PathBuf,
        /// The control API of `cvw serve`.
        #[arg(long, default_value = "http://127.0.0.1:8448")]
        control: String,
        /// A file holding the admin token (default: $CVW_ADMIN_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let default_level = match args.command {
        Command::Serve { .. } => "info",
        _ => "error",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    match run(args.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config } => serve_command(&config).map(|()| ExitCode::SUCCESS),
        Command::Policy(PolicyCommand::Check { module, directory }) => {
            cli::check(&module, &directory).map(|()| ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Test { module, scenarios }) => {
            let tally = cli::test(&module, &scenarios)?;
            Ok(if tally.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Policy(PolicyCommand::Swap {
            module,
            control,
            token_file,
        }) => swap_command(&module, &control, token_file),
        Command::Status {
            control,
            token_file,
        } => status_command(&control, token_file),
    }
}

fn serve_command(config_path: &std::path::Path) -> anyhow::Result<()> {
    let config = ServeConfig::load(config_path)?;
    let token = AdminToken::load(config.control.token_file.as_deref())
        .context("the control API needs an admin token")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.control.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.control.listen))?;
        let address = listener.local_addr()?;
        // Tests and scripts read this line to find a port chosen by the system.
        cvw::say!("control: http://{address}");
        daemon::run(config, listener, token, stop_signal()).await
    })
}

/// Ctrl-C, or SIGTERM from a service manager.
async fn stop_signal() {
    let interrupt = async {
        // Without a signal handler there is nothing to wait for but a kill.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

fn control(url: &str, token_file: Option<PathBuf>) -> anyhow::Result<Control> {
    let token = match token_file {
        Some(path) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?
            .trim()
            .to_string(),
        None => std::env::var(TOKEN_ENV)
            .with_context(|| format!("set {TOKEN_ENV} or pass --token-file"))?,
    };
    Ok(Control::new(url, &token)?)
}

fn swap_command(
    module: &std::path::Path,
    url: &str,
    token_file: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let control = control(url, token_file)?;
    let wasm =
        std::fs::read(module).with_context(|| format!("cannot read {}", module.display()))?;
    let answer = control.post("/v1/policy", "application/wasm", &wasm)?;
    print_policy_answer(answer)
}

fn status_command(url: &str, token_file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let answer = control(url, token_file)?.get("/v1/policy")?;
    print_policy_answer(answer)
}

fn print_policy_answer(answer: cli::client::Answer) -> anyhow::Result<ExitCode> {
    let json: serde_json::Value = serde_json::from_str(&answer.body)
        .with_context(|| format!("HTTP {}: {}", answer.status, answer.body))?;
    if answer.status != 200 {
        let reason = json
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or(&answer.body);
        bail!("HTTP {}: {reason}", answer.status);
    }
    let field = |name: &str| {
        json.get(name)
            .map(|v| v.to_string().trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let info = |name: &str| {
        json.get("info")
            .and_then(|i| i.get(name))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    cvw::say!("generation: {}", field("generation"));
    cvw::say!("policy:     {} {}", info("name"), info("version"));
    cvw::say!("contract:   {}", field("contract"));
    cvw::say!("origin:     {}", field("origin"));
    cvw::say!("digest:     sha256:{}", field("digest"));
    Ok(ExitCode::SUCCESS)
}
