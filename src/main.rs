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
        /// Receive the messages over a Stream connection (WebSocket) instead of HTTP.
        #[arg(long)]
        stream: bool,
    },
    /// Check a configuration against DingTalk: token, every group, every permission.
    Check {
        /// TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Send one correctly signed callback to a running dingbot and print the reply.
    Simulate {
        /// dingbot's callback URL, e.g. https://bot.example.com/dingtalk/callback
        #[arg(long)]
        url: String,
        /// The app secret dingbot verifies with (or set DINGBOT_DINGTALK__APP_SECRET).
        #[arg(
            long,
            env = "DINGBOT_DINGTALK__APP_SECRET",
            hide_env_values = true,
            required_unless_present = "stream"
        )]
        secret: Option<String>,
        /// conversationId (openConversationId) the message comes from.
        #[arg(long, default_value = "cidBound0001==")]
        group: String,
        /// Message text.
        #[arg(long, default_value = "/info")]
        text: String,
        /// Send this sessionWebhook instead of starting a local reply sink.
        #[arg(long)]
        webhook: Option<String>,
        /// Address of the local reply sink.
        #[arg(long, default_value = "127.0.0.1:9701")]
        sink_listen: String,
        /// Seconds to wait for the reply.
        #[arg(long, default_value_t = 10)]
        wait_secs: u64,
        /// Push the message through the Stream gateway of a running `dingbot sandbox`
        /// instead; --url is then the sandbox's base URL (e.g. http://127.0.0.1:9700) and
        /// no secret is needed.
        #[arg(long)]
        stream: bool,
    },
    /// Run only the fake DingTalk (for benchmarks and manual testing).
    Sandbox {
        /// Address to listen on (loopback).
        #[arg(long, default_value = "127.0.0.1:9700")]
        listen: String,
        /// Extra generated groups cidGen{i}== / chatgen{i} besides the demo org.
        #[arg(long, default_value_t = 0)]
        groups: usize,
        /// HTTP worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
}

fn load(config: Option<&std::path::Path>) -> Result<Settings, ExitCode> {
    Settings::load(config).map_err(|e| {
        eprintln!("dingbot: {e}");
        ExitCode::from(2)
    })
}

fn verdict(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("dingbot: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the runtime starts its threads: they take their malloc arenas as they start.
    limit_malloc_arenas();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("dingbot: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives every thread that allocates while the others hold their arenas an arena of
/// its own, up to 8 per CPU, and each arena keeps its own high-water mark of freed memory
/// that only it can reuse. dingbot's request path runs on one HTTP worker per CPU; the
/// runtime, blocking and main threads are many more. Capped at one arena per CPU, they
/// share: under `bench/run.sh`'s `/info` load the peak RSS fell by 1.6 MiB (25.3–25.6 →
/// 23.7–24.1 MiB on 2 CPUs) at no CPU cost (`SCENARIOS=ab AB_ENV="MALLOC_ARENA_MAX=2"`:
/// B/A 0.995; one arena in all cost 1.011). glibc's own `MALLOC_ARENA_MAX` or
/// `GLIBC_TUNABLES=glibc.malloc.arena_max=…`, when set, wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    let tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || tunables.to_string_lossy().contains("arena_max")
    {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let arenas = std::os::raw::c_int::try_from(cpus).unwrap_or(std::os::raw::c_int::MAX);
    // SAFETY: mallopt only sets a malloc parameter; it takes malloc's own lock.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => {
            let settings = match load(config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
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
        Command::Demo { lang, stream } => {
            let lang = if lang == "en" {
                Language::En
            } else {
                Language::Zh
            };
            let mut out = std::io::stdout();
            match dingbot::demo::run_with(lang, stream, &mut out).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dingbot demo failed: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => {
            let settings = match load(config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            verdict(dingbot::admin::check(&settings, &mut std::io::stdout()).await)
        }
        Command::Simulate {
            url,
            secret,
            group,
            text,
            webhook,
            sink_listen,
            wait_secs,
            stream,
        } => {
            if stream {
                let wait = std::time::Duration::from_secs(wait_secs);
                let mut out = std::io::stdout();
                return verdict(
                    dingbot::admin::simulate_stream(&url, &group, &text, wait, &mut out).await,
                );
            }
            let opts = dingbot::admin::SimulateOptions {
                url,
                secret: secret.unwrap_or_default(),
                group,
                text,
                webhook,
                sink_listen,
                wait: std::time::Duration::from_secs(wait_secs),
            };
            verdict(dingbot::admin::simulate(&opts, &mut std::io::stdout()).await)
        }
        Command::Sandbox {
            listen,
            groups,
            workers,
        } => verdict(dingbot::demo::run_sandbox(&listen, groups, workers).await),
    }
}
