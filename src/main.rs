//! The `dingbot` command: parse the CLI, load settings, start logging, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dingbot::config::{Language, Settings};
use dingbot::startup::Application;

/// A DingTalk group robot that answers /info with a summary of the group.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// TOML configuration file (every key can also come from DINGBOT_<SECTION>__<KEY>).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run dingbot against a built-in fake DingTalk and show a scripted conversation.
    Demo {
        /// Reply language.
        #[arg(long, default_value = "zh", value_parser = ["zh", "en"])]
        lang: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let settings = match Settings::load(config.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("dingbot: {e}");
                    return ExitCode::from(2);
                }
            };
            dingbot::telemetry::init_logging(settings.log.format);
            dingbot::telemetry::prometheus();
            let app = match Application::build(&settings).await {
                Ok(app) => app,
                Err(e) => {
                    eprintln!("dingbot: {e}");
                    return ExitCode::from(2);
                }
            };
            match app.run_until_stopped().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dingbot: server error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { lang } => {
            let lang = if lang == "en" {
                Language::En
            } else {
                Language::Zh
            };
            let mut out = std::io::stdout();
            match dingbot::demo::run(lang, &mut out).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dingbot demo failed: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
