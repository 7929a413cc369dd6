//! The `wsingest` binary: parses the command line, sets up logging, and hands
//! over to the library. The only place `anyhow` is used.

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use wsingest::cli::{
    Cli, Command, ConfigCommand, DashboardsCommand, DeadletterCommand, FormatsCommand, LogFormat,
};
use wsingest_server::sink::deadletter_ops;

/// Errors end the process with status 1 and their chain of causes on
/// stderr, never a backtrace: they are an operator's to read (with
/// `RUST_BACKTRACE=1` set, anyhow's default output buried them in frames).
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) if args.writer => serve_with_writer(&args).await?,
            Command::Serve(args) => {
                let config = args.load()?;
                let listener = tokio::net::TcpListener::bind(config.server.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.server.listen))?;
                let shutdown = CancellationToken::new();
                wsingest_server::shutdown::on_signal(shutdown.clone());
                wsingest_server::server::run(listener, config, shutdown).await?;
            }
            Command::Writer(args) => {
                let config = writer_config(&args)?;
                let shutdown = CancellationToken::new();
                wsingest_server::shutdown::on_signal(shutdown.clone());
                wsingest_server::queue::writer::run(config, shutdown).await?;
            }
            Command::Compare(args) => {
                wsingest_tools::compare::run(args).await?;
            }
            Command::Bench(args) => {
                wsingest_tools::bench::run(args).await?;
            }
            Command::Simulate(args) => {
                wsingest_tools::simulate::cli::main(*args).await?;
            }
            Command::Config(ConfigCommand::PrintDefault) => {
                print!("{}", wsingest_server::config::Config::default_toml())
            }
            Command::Device(cmd) => print!("{}", wsingest_server::auth::cli::run(cmd).await?),
            Command::Dashboards(DashboardsCommand::Check(args)) => {
                let report = wsingest_tools::dashboards::run(&args.common.options()?).await?;
                if args.json {
                    println!("{:#}", report.to_json(args.require_data));
                } else {
                    print!("{}", report.table(args.require_data));
                }
                if !report.ok(args.require_data) {
                    // The table says what failed; no error chain to add.
                    std::process::exit(1);
                }
            }
            Command::Dashboards(DashboardsCommand::Render(args)) => {
                let report = wsingest_tools::dashboards::run(&args.common.options()?).await?;
                for path in wsingest_tools::dashboards::render::render_all(&report, &args.out)? {
                    println!("{}", path.display());
                }
                if report.errors() > 0 {
                    eprintln!(
                        "{} queries failed (drawn as errors); `wsingest dashboards check` shows them",
                        report.errors()
                    );
                }
            }
            Command::Config(ConfigCommand::Check(args)) => {
                let config = args.load()?;
                // Every check serve makes before it serves; what serve would
                // only warn about is printed as a warning.
                for w in wsingest_server::server::preflight(&config).await? {
                    eprintln!("warning: {w}");
                }
                print!("{}", toml::to_string_pretty(&config)?);
            }
            Command::Deadletter(cmd) => deadletter(cmd).await?,
            Command::Formats(FormatsCommand::List { config }) => {
                print!("{}", wsingest_server::formats::list(&config.load()?)?)
            }
            Command::Formats(FormatsCommand::Show { config, name }) => {
                print!(
                    "{}",
                    wsingest_server::formats::show(&config.load()?, &name)?
                )
            }
        }
        Ok(())
    })
}

/// The config of a queue-mode command, which needs NATS servers.
fn queue_config(
    args: &wsingest::cli::ServeArgs,
) -> anyhow::Result<wsingest_server::config::Config> {
    let config = args.load()?;
    if !config.queue.enabled() {
        anyhow::bail!(
            "queue mode needs NATS servers: give --nats-url nats://HOST:4222 (or queue.nats_url in the config)"
        );
    }
    Ok(config)
}

/// `wsingest writer`'s config: `--listen` is the writer's HTTP port
/// (`queue.writer_listen`), not a WebSocket listener.
fn writer_config(
    args: &wsingest::cli::ServeArgs,
) -> anyhow::Result<wsingest_server::config::Config> {
    let mut config = queue_config(args)?;
    if let Some(addr) = args.listen {
        config.queue.writer_listen = Some(addr);
    }
    Ok(config)
}

/// `serve --writer`: a gateway and a writer in one process, stopped together.
async fn serve_with_writer(args: &wsingest::cli::ServeArgs) -> anyhow::Result<()> {
    let config = queue_config(args)?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let shutdown = CancellationToken::new();
    wsingest_server::shutdown::on_signal(shutdown.clone());
    let writer = tokio::spawn(wsingest_server::queue::writer::run(
        config.clone(),
        shutdown.clone(),
    ));
    let served = wsingest_server::server::run(listener, config, shutdown.clone()).await;
    shutdown.cancel();
    let written = writer.await?;
    served?;
    written?;
    Ok(())
}

async fn deadletter(cmd: DeadletterCommand) -> anyhow::Result<()> {
    match cmd {
        DeadletterCommand::List { config, json } => {
            let l = deadletter_ops::list(&config.load()?)?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&l)?),
                false => print!("{l}"),
            }
        }
        DeadletterCommand::Show { config, n } => {
            print!("{}", deadletter_ops::show(&config.load()?, n)?)
        }
        DeadletterCommand::Replay { config } => {
            let r = deadletter_ops::replay(&config.load()?).await?;
            print!("{r}");
            if let Some(why) = r.stopped {
                anyhow::bail!("replay stopped: {why}");
            }
        }
        DeadletterCommand::Purge { config, yes } => {
            let n = deadletter_ops::purge(&config.load()?, yes)?;
            println!("purged {n} entries");
        }
    }
    Ok(())
}

/// Colour only for a terminal, and never with `NO_COLOR` set (no-color.org).
fn use_ansi() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_ansi())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
