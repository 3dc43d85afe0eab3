//! Configuration errors, as a library call and through the real binary.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use dingbot::config::Settings;

use crate::helpers::unique;

/// A file in the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "dingbot-api-{}-{}.toml",
            std::process::id(),
            unique("cfg")
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const FILE_SECRET: &str = "file-secret-5f1d9c0e7a";
const ENV_SECRET: &str = "env-secret-a1b2c3d4e5";

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn missing_app_secret_names_the_key() {
    let file = TempFile::new("[dingtalk]\napp_key = \"dingkey\"\n");
    let e = Settings::load_with_env(Some(&file.0), no_env()).unwrap_err();
    assert_eq!(e.key, "dingtalk.app_secret");
    let shown = e.to_string();
    assert!(shown.contains("dingtalk.app_secret"), "{shown}");
    assert!(shown.contains("DINGBOT_DINGTALK__APP_SECRET"), "{shown}");
}

#[test]
fn empty_app_secret_names_the_key() {
    let file = TempFile::new("[dingtalk]\napp_key = \"dingkey\"\napp_secret = \"  \"\n");
    let e = Settings::load_with_env(Some(&file.0), no_env()).unwrap_err();
    assert_eq!(e.key, "dingtalk.app_secret");
}

#[test]
fn app_secret_from_the_environment_completes_the_file() {
    let file = TempFile::new("[dingtalk]\napp_key = \"dingkey\"\n");
    let s = Settings::load_with_env(
        Some(&file.0),
        vec![("DINGBOT_DINGTALK__APP_SECRET".into(), ENV_SECRET.into())],
    )
    .unwrap();
    assert_eq!(s.dingtalk.app_key, "dingkey");
    assert!(!format!("{s:?}").contains(ENV_SECRET));
}

#[test]
fn invalid_value_error_does_not_show_the_secret() {
    let file = TempFile::new(&format!(
        "[dingtalk]\napp_key = \"dingkey\"\napp_secret = \"{FILE_SECRET}\"\nrequest_timeout_ms = 5\n"
    ));
    let e = Settings::load_with_env(Some(&file.0), no_env()).unwrap_err();
    assert_eq!(e.key, "dingtalk.request_timeout_ms");
    assert!(!format!("{e} {e:?}").contains(FILE_SECRET), "{e:?}");
}

#[test]
fn missing_config_file_names_the_flag() {
    let missing = std::env::temp_dir().join("dingbot-api-no-such-file.toml");
    let e = Settings::load_with_env(Some(&missing), no_env()).unwrap_err();
    assert_eq!(e.key, "--config");
}

/// What a finished child process left.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the dingbot binary with `args` and no inherited `DINGBOT_*` variables (plus
/// `env`), killing it after `limit`.
fn run_dingbot(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Finished {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dingbot"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("DINGBOT_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("dingbot binary runs");
    // Drain the pipes on threads so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for dingbot") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "dingbot {args:?} still running after {limit:?}; stdout so far: {}",
                out_reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Finished {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

#[test]
fn serve_without_app_secret_exits_2_naming_the_key() {
    let file = TempFile::new("[dingtalk]\napp_key = \"dingkey\"\n");
    let run = run_dingbot(
        &["serve", "--config", file.0.to_str().unwrap()],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(run.status.code(), Some(2), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("dingtalk.app_secret"), "{}", run.stderr);
    assert!(
        run.stderr.contains("DINGBOT_DINGTALK__APP_SECRET"),
        "{}",
        run.stderr
    );
}

#[test]
fn serve_with_a_bad_value_never_prints_the_secret() {
    // The secret is set (file and environment); another key is wrong.
    let file = TempFile::new(&format!(
        "[dingtalk]\napp_key = \"dingkey\"\napp_secret = \"{FILE_SECRET}\"\n[rate_limit]\nper_group_per_minute = 0\n"
    ));
    let run = run_dingbot(
        &["serve", "--config", file.0.to_str().unwrap()],
        &[("DINGBOT_DINGTALK__APP_SECRET", ENV_SECRET)],
        Duration::from_secs(20),
    );
    assert_eq!(run.status.code(), Some(2), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("rate_limit.per_group_per_minute"),
        "{}",
        run.stderr
    );
    for secret in [FILE_SECRET, ENV_SECRET] {
        assert!(!run.stderr.contains(secret), "{}", run.stderr);
        assert!(!run.stdout.contains(secret), "{}", run.stdout);
    }
}

#[test]
fn serve_with_a_mistyped_secret_does_not_echo_it() {
    let file = TempFile::new("[dingtalk]\napp_key = \"dingkey\"\napp_secret = 987654321987\n");
    let run = run_dingbot(
        &["serve", "--config", file.0.to_str().unwrap()],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(run.status.code(), Some(2), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("app_secret"), "{}", run.stderr);
    assert!(!run.stderr.contains("987654321987"), "{}", run.stderr);
}

#[test]
fn serve_with_a_missing_config_file_exits_2() {
    let run = run_dingbot(
        &["serve", "--config", "/nonexistent/dingbot.toml"],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(run.status.code(), Some(2), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("--config"), "{}", run.stderr);
}

#[test]
fn demo_runs_the_scripted_tour() {
    let run = run_dingbot(&["demo"], &[], Duration::from_secs(60));
    assert!(
        run.status.success(),
        "exit {:?}; stderr: {}",
        run.status,
        run.stderr
    );
    for expected in [
        "群信息：研发部全员群",
        "**群主**：王建国",
        "群信息：全员群",
        "群信息：项目群·发布",
        "群信息：午餐拼单群",
        "本群不是由本应用创建的",
        "群信息：外部协作群",
        "已绑定本群",
        "群信息：自建项目群",
        "应用没有 qyapi_chat_read 权限（chat/get）",
        "401",
        "请慢一点",
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?} in demo output:\n{}",
            run.stdout
        );
    }
    assert!(!run.stdout.contains(crate::helpers::SECRET));
}

#[test]
fn a_toml_syntax_error_never_echoes_the_secret_line() {
    // The closing quote is missing: the parser's error points into the secret's line.
    let file = TempFile::new(&format!(
        "[dingtalk]\napp_key = \"dingkey\"\napp_secret = \"{FILE_SECRET}\n"
    ));
    for command in ["serve", "check"] {
        let run = run_dingbot(
            &[command, "--config", file.0.to_str().unwrap()],
            &[],
            Duration::from_secs(20),
        );
        assert_eq!(run.status.code(), Some(2), "{command}: {}", run.stderr);
        for shown in [&run.stderr, &run.stdout] {
            assert!(!shown.contains(FILE_SECRET), "{command} printed: {shown}");
            // Not even a fragment of the line.
            assert!(
                !shown.contains(&FILE_SECRET[..8]),
                "{command} printed: {shown}"
            );
        }
        assert!(run.stderr.contains("line 3"), "{command}: {}", run.stderr);
        assert!(
            run.stderr.contains(file.0.to_str().unwrap()),
            "{}",
            run.stderr
        );
    }
}
