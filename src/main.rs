//! The `wsingest` binary: parses the command line, sets up logging, and hands
//! over to the library. The only place `anyhow` is used.

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use wsingest::cli::{Cli, Command, ConfigCommand, DashboardsCommand, LogFormat};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let config = args.load()?;
                let listener = tokio::net::TcpListener::bind(config.server.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.server.listen))?;
                let shutdown = CancellationToken::new();
                wsingest_server::shutdown::on_signal(shutdown.clone());
                wsingest_server::server::run(listener, config, shutdown).await?;
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
            Command::Device(cmd) => print!("{}", wsingest_server::auth::cli::run(cmd)?),
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
                print!("{}", toml::to_string_pretty(&config)?);
            }
        }
        Ok(())
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
