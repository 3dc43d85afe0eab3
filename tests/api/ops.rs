//! Operations: `/metrics`, graceful shutdown (in-process and SIGTERM to the real binary),
//! `dingbot check`, `dingbot simulate` and `/readyz`.
//!
//! Everything talks real HTTP on 127.0.0.1 to a sandbox (fake DingTalk) started in the
//! test. Child processes of the `dingbot` binary are polled with `try_wait` from async
//! code so the sandbox, which runs on the test's runtime, keeps serving meanwhile.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use dingbot::sandbox::{Endpoint, Fault, Org, Sandbox};

use crate::helpers::{
    BOUND, SECRET, TestApp, assert_no_secret, fresh_signature, spawn_app_faulted,
    spawn_app_from_toml, spawn_app_with, without_fixture_group,
};

const APP_KEY: &str = "dingdemoappkey";
/// Name of the group [`BOUND`].
const BOUND_NAME: &str = "研发部全员群";
/// A secret that is not the app's.
const WRONG_SECRET: &str = "wrong-secret-value-9f8e7d6c5b4a";
/// `server.shutdown_grace_secs` of every configuration here (and of the demo settings).
const GRACE_SECS: u64 = 5;

// ---------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------

/// A dingbot configuration for a TOML file, pointing at a sandbox.
#[derive(Clone)]
struct Config {
    base: String,
    listen: String,
    app_key: Option<String>,
    app_secret: String,
    extra_webhook_hosts: Vec<String>,
    /// (chatid, open_conversation_id)
    groups: Vec<(String, Option<String>)>,
    grace_secs: u64,
    request_timeout_ms: u64,
}

impl Config {
    /// Demo credentials, ephemeral port, one group whose openConversationId is known (so
    /// startup does not call DingTalk at all).
    fn new(base: &str) -> Config {
        Config {
            base: base.to_string(),
            listen: "127.0.0.1:0".into(),
            app_key: Some(APP_KEY.into()),
            app_secret: SECRET.into(),
            extra_webhook_hosts: Vec::new(),
            groups: vec![("chatbound0001".into(), Some(BOUND.into()))],
            grace_secs: GRACE_SECS,
            request_timeout_ms: 2000,
        }
    }

    fn group(mut self, chatid: &str, cid: Option<&str>) -> Config {
        self.groups.push((chatid.into(), cid.map(str::to_string)));
        self
    }

    fn toml(&self) -> String {
        let mut t = format!(
            "[server]\nlisten = \"{}\"\nworkers = 1\nshutdown_grace_secs = {}\n\n[dingtalk]\n",
            self.listen, self.grace_secs
        );
        if let Some(key) = &self.app_key {
            t.push_str(&format!("app_key = \"{key}\"\n"));
        }
        t.push_str(&format!(
            "app_secret = \"{}\"\noapi_base = \"{base}\"\napi_base = \"{base}\"\nrequest_timeout_ms = {}\n",
            self.app_secret,
            self.request_timeout_ms,
            base = self.base
        ));
        let hosts: Vec<String> = self
            .extra_webhook_hosts
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect();
        t.push_str(&format!("extra_webhook_hosts = [{}]\n", hosts.join(", ")));
        t.push_str("\n[rate_limit]\nper_group_per_minute = 20\n");
        for (chatid, cid) in &self.groups {
            t.push_str(&format!("\n[[groups]]\nchatid = \"{chatid}\"\n"));
            if let Some(cid) = cid {
                t.push_str(&format!("open_conversation_id = \"{cid}\"\n"));
            }
        }
        t
    }
}

/// A private temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "dingbot-ops-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A child process of the `dingbot` binary, killed (by its pid) if still running on drop.
struct ChildGuard {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: TempDir,
}

impl ChildGuard {
    fn spawn(args: &[&str]) -> ChildGuard {
        ChildGuard::spawn_env(args, &[])
    }

    /// `spawn` with these environment variables set (after the hermetic clean-up).
    fn spawn_env(args: &[&str], envs: &[(&str, &str)]) -> ChildGuard {
        let dir = TempDir::new("bin");
        let stdout = dir.path("stdout");
        let stderr = dir.path("stderr");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dingbot"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"))
            .env_remove("RUST_LOG");
        // The binary layers DINGBOT_* variables over the file: keep the test hermetic.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DINGBOT_") {
                cmd.env_remove(key);
            }
        }
        // A proxy variable of the machine's would change which client sends replies.
        for key in dingbot::dingtalk::reply_http::PROXY_VARS {
            cmd.env_remove(key);
        }
        cmd.envs(envs.iter().copied());
        let child = cmd.spawn().expect("spawn the dingbot binary");
        ChildGuard {
            child,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls for the exit for at most `limit`.
    async fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn output(&self) -> (String, String) {
        (
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct BinOutput {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the binary to completion (at most `limit`) while the sandbox keeps serving.
async fn run_bin(args: &[&str], limit: Duration) -> BinOutput {
    run_bin_env(args, limit, &[]).await
}

/// `run_bin` with these environment variables set.
async fn run_bin_env(args: &[&str], limit: Duration, envs: &[(&str, &str)]) -> BinOutput {
    let mut child = ChildGuard::spawn_env(args, envs);
    let status = match child.wait(limit).await {
        Some(s) => s,
        None => {
            let (out, err) = child.output();
            panic!(
                "dingbot {args:?} still running after {limit:?}\nstdout:\n{out}\nstderr:\n{err}"
            );
        }
    };
    let (stdout, stderr) = child.output();
    BinOutput {
        status,
        stdout,
        stderr,
    }
}

async fn run_check(config: &Config) -> BinOutput {
    run_check_env(config, &[]).await
}

/// `run_check` with these environment variables set.
async fn run_check_env(config: &Config, envs: &[(&str, &str)]) -> BinOutput {
    let dir = TempDir::new("check");
    let path = dir.write("dingbot.toml", &config.toml());
    // Keep `check`'s data dir (it opens the binding store) inside the temp dir.
    let data = path.with_file_name("data");
    let toml = format!(
        "{}\n[storage]\ndata_dir = \"{}\"\n",
        config.toml(),
        data.display()
    );
    let path = dir.write("dingbot.toml", &toml);
    run_bin_env(
        &["check", "--config", path.to_str().expect("utf-8 path")],
        Duration::from_secs(60),
        envs,
    )
    .await
}

/// Lines of a `dingbot check` report that start a FAIL item, each with its indented
/// continuation lines (the `fix:` line).
fn fail_items(report: &str) -> Vec<String> {
    let mut items: Vec<String> = Vec::new();
    let mut in_item = false;
    for line in report.lines() {
        if line.trim_start().starts_with("FAIL") {
            items.push(line.to_string());
            in_item = true;
        } else if in_item && line.starts_with("        ") {
            if let Some(last) = items.last_mut() {
                last.push('\n');
                last.push_str(line);
            }
        } else {
            in_item = false;
        }
    }
    items
}

/// The value of one Prometheus series (`name{labels}`), 0 when absent. Label order in
/// `labels` does not matter.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, l) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let mut got: Vec<String> = if l.is_empty() {
            Vec::new()
        } else {
            l.split(',').map(str::to_string).collect()
        };
        got.sort();
        if got == want {
            return value.parse().expect("metric value is a number");
        }
    }
    0.0
}

/// Waits (bounded) until GET `url` answers 200.
async fn wait_healthy(http: &reqwest::Client, url: &str, child: &mut ChildGuard) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status() == 200
        {
            return;
        }
        if let Some(status) = child.child.try_wait().expect("try_wait") {
            let (out, err) = child.output();
            panic!("dingbot exited early with {status}\nstdout:\n{out}\nstderr:\n{err}");
        }
        assert!(
            Instant::now() < deadline,
            "dingbot did not become healthy on {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Label pairs of one Prometheus series.
type Labels = &'static [(&'static str, &'static str)];

/// GET /metrics as text (and checks the content type).
async fn get_metrics(app: &TestApp) -> String {
    let resp = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/plain"), "content-type {ct}");
    resp.text().await.expect("metrics body")
}

// ---------------------------------------------------------------------------------------
// 1. Metrics
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_without_group_ids_or_secrets() {
    let app = spawn_app_with(without_fixture_group).await;

    // (name, labels, expected minimal increase). The recorder is shared by every test in
    // this binary, so only lower bounds on the increase hold.
    let series: [(&str, Labels, f64); 6] = [
        ("dingbot_callbacks_total", &[("outcome", "accepted")], 1.0),
        (
            "dingbot_callbacks_total",
            &[("outcome", "bad_signature")],
            1.0,
        ),
        ("dingbot_commands_total", &[("command", "info")], 1.0),
        ("dingbot_replies_total", &[("result", "sent")], 1.0),
        (
            "dingbot_api_calls_total",
            &[("endpoint", "chat/get"), ("code", "0")],
            1.0,
        ),
        (
            "dingbot_api_calls_total",
            &[("endpoint", "sendBySession"), ("code", "0")],
            1.0,
        ),
    ];
    let before_text = get_metrics(&app).await;
    let before: Vec<f64> = series
        .iter()
        .map(|(n, l, _)| metric(&before_text, n, l))
        .collect();

    let info = app.group_text(BOUND, "/info");
    app.send(&info).await.assert_accepted();
    let forged = app.group_text(BOUND, "/info");
    let (ts, sign) = fresh_signature("not-the-secret");
    app.post_with_signature(&ts, &sign, &forged.body)
        .await
        .assert_refused(401, "bad_signature");

    let reply = app.reply_text(&info.session).await;
    assert!(reply.contains(BOUND_NAME), "{reply}");
    app.assert_no_reply(&forged.session).await;

    // The reply counter moves after the sandbox has recorded the message: poll (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let after_text = loop {
        let text = get_metrics(&app).await;
        let done = series
            .iter()
            .zip(&before)
            .all(|((n, l, d), b)| metric(&text, n, l) - b >= *d);
        if done || Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for ((name, labels, delta), b) in series.iter().zip(&before) {
        let a = metric(&after_text, name, labels);
        assert!(
            a - b >= *delta,
            "{name}{labels:?} went from {b} to {a}, expected +{delta}\n{after_text}"
        );
    }

    assert!(
        after_text.contains("dingbot_api_latency_seconds_bucket"),
        "{after_text}"
    );
    assert!(
        after_text
            .lines()
            .any(|l| l.starts_with("dingbot_tracked_groups")),
        "{after_text}"
    );
    assert!(
        !after_text.contains("cid"),
        "per-group label in metrics:\n{after_text}"
    );
    assert!(!after_text.contains("chatbound0001"), "{after_text}");
    assert!(!after_text.contains("16650000698"), "user id in metrics");
    assert_no_secret(&after_text);
    let token = app.sandbox.current_token().expect("a token was issued");
    assert!(!after_text.contains(&token), "access token in metrics");
}

// ---------------------------------------------------------------------------------------
// 2. Graceful shutdown
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_delivers_every_reply_in_flight() {
    const N: usize = 5;
    let mut app = spawn_app_faulted(
        vec![(
            Endpoint::ChatGet,
            Fault::Delay(Duration::from_millis(1500)),
            N as u32,
        )],
        without_fixture_group,
    )
    .await;
    let port = app.port;

    let outs: Vec<_> = (0..N).map(|_| app.group_text(BOUND, "/info")).collect();
    let started = Instant::now();
    let answers = futures_util::future::join_all(outs.iter().map(|o| app.send(o))).await;
    let answered_after = started.elapsed();
    for a in &answers {
        a.assert_accepted();
    }
    // The answers came before any reply could (chat/get takes 1.5 s).
    if answered_after < Duration::from_millis(1400) {
        assert_eq!(app.sandbox.message_count(), 0, "replies before the 200s?");
    }

    let server = app.server.take().expect("server task");
    let stop_started = Instant::now();
    app.shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(3 * GRACE_SECS), server)
        .await
        .expect("run_until_stopped returns within the grace periods")
        .expect("server task did not panic");
    assert!(result.is_ok(), "run_until_stopped: {result:?}");
    let stopped_after = stop_started.elapsed();

    // Nothing dropped: every reply is at the sandbox by the time run_until_stopped returns.
    for (i, out) in outs.iter().enumerate() {
        let got = app.sandbox.messages_for(&out.session);
        assert_eq!(got.len(), 1, "reply {i} missing after stop");
        assert!(got[0].text().contains(BOUND_NAME), "{}", got[0].text());
    }
    assert!(app.sandbox.calls(Endpoint::ChatGet) >= 1);
    assert!(
        stopped_after <= Duration::from_millis(GRACE_SECS * 1000 + 500),
        "stop took {stopped_after:?}"
    );

    // The port no longer accepts connections.
    let connect = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(connect.is_err(), "port {port} still accepts connections");
}

/// `dingbot serve` started on a free port with `config`, healthy.
struct Served {
    child: ChildGuard,
    port: u16,
    http: reqwest::Client,
    _dir: TempDir,
}

impl Served {
    async fn start(mut config: Config) -> Served {
        let port = free_port();
        config.listen = format!("127.0.0.1:{port}");
        let dir = TempDir::new("serve");
        // Keep the data dir (bindings.json) out of the working directory.
        let toml = format!(
            "{}\n[storage]\ndata_dir = '{}'\n",
            config.toml(),
            dir.path("data").display()
        );
        let path = dir.write("dingbot.toml", &toml);
        let mut child = ChildGuard::spawn(&["serve", "--config", path.to_str().expect("utf-8")]);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        wait_healthy(
            &http,
            &format!("http://127.0.0.1:{port}/healthz"),
            &mut child,
        )
        .await;
        Served {
            child,
            port,
            http,
            _dir: dir,
        }
    }

    /// Sends a signed /info from [`BOUND`] whose reply goes to `session`.
    async fn send_info(&self, sandbox: &Sandbox, session: &str) -> u16 {
        let cb = dingbot::demo::SignedCallback::group_text(
            BOUND,
            BOUND_NAME,
            "/info",
            &format!("msgOps{session}"),
            &sandbox.webhook_url(session),
        );
        cb.send(
            &self.http,
            &format!("http://127.0.0.1:{}/dingtalk/callback", self.port),
            SECRET,
        )
        .await
        .expect("callback to the binary")
        .status()
        .as_u16()
    }

    /// SIGTERM, then a bounded wait (15 s) for the exit: status, time since the signal,
    /// stdout and stderr.
    async fn sigterm(&mut self) -> (ExitStatus, Duration, String, String) {
        let signalled = Instant::now();
        let kill = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.pid().to_string())
            .status()
            .expect("run kill");
        assert!(kill.success());
        let status = self.child.wait(Duration::from_secs(15)).await;
        let took = signalled.elapsed();
        let (out, err) = self.child.output();
        let status = status.unwrap_or_else(|| {
            panic!("dingbot still running 15 s after SIGTERM\nstdout:\n{out}\nstderr:\n{err}")
        });
        (status, took, out, err)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_binary_finishes_replies_and_exits_zero() {
    let sandbox = Sandbox::start(Org::demo()).await.expect("sandbox");
    let mut served = Served::start(Config::new(&sandbox.base_url())).await;

    // One reply in flight when the signal arrives.
    sandbox.inject(
        Endpoint::ChatGet,
        Fault::Delay(Duration::from_millis(1500)),
        1,
    );
    let session = "opsSigterm";
    assert_eq!(served.send_info(&sandbox, session).await, 200);

    let (status, took, out, err) = served.sigterm().await;
    assert!(
        status.success(),
        "exit {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        took <= Duration::from_millis(GRACE_SECS * 1000 + 500),
        "exit took {took:?} (grace {GRACE_SECS} s)\nstdout:\n{out}"
    );
    let got = sandbox.messages_for(session);
    assert_eq!(
        got.len(),
        1,
        "the reply in flight was dropped\nstdout:\n{out}"
    );
    assert!(got[0].text().contains(BOUND_NAME));
    assert_no_secret(&out);
    assert_no_secret(&err);
}

/// README: on SIGTERM "stop accepting, finish replies for up to [shutdown_grace_secs],
/// exit 0". The bound must hold when a client is stuck mid-request and a reply cannot
/// finish in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exit_stays_within_one_grace_period_with_a_stuck_request() {
    const GRACE: u64 = 2;
    let sandbox = Sandbox::start(Org::demo()).await.expect("sandbox");
    let mut config = Config::new(&sandbox.base_url());
    config.grace_secs = GRACE;
    // Long enough that the reply below outlives the grace period.
    config.request_timeout_ms = 30_000;
    let mut served = Served::start(config).await;

    // A reply that cannot finish within the grace period.
    sandbox.inject(Endpoint::ChatGet, Fault::Delay(Duration::from_secs(20)), 1);
    assert_eq!(served.send_info(&sandbox, "opsStuckReply").await, 200);

    // A signed callback whose body never finishes arriving.
    let (ts, sign) = fresh_signature(SECRET);
    let mut stuck = tokio::net::TcpStream::connect(("127.0.0.1", served.port))
        .await
        .expect("connect");
    let head = format!(
        "POST /dingtalk/callback HTTP/1.1\r\nhost: 127.0.0.1\r\ntimestamp: {ts}\r\nsign: {sign}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"msgId\":"
    );
    tokio::io::AsyncWriteExt::write_all(&mut stuck, head.as_bytes())
        .await
        .expect("write head");
    // Barrier: a request on a later connection is answered, so the (single) worker has
    // taken the stuck one.
    let health = served
        .http
        .get(format!("http://127.0.0.1:{}/healthz", served.port))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    let (status, took, out, err) = served.sigterm().await;
    drop(stuck);
    assert!(
        status.success(),
        "exit {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        took <= Duration::from_millis(GRACE * 1000 + 500),
        "exit took {took:?} with shutdown_grace_secs = {GRACE}\nstdout:\n{out}"
    );
}

// ---------------------------------------------------------------------------------------
// 3. dingbot check
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_a_working_configuration() {
    let sandbox = Sandbox::start(Org::demo()).await.expect("sandbox");
    let config = Config::new(&sandbox.base_url()).group("chate39f540dxxxx", None);
    let out = run_check(&config).await;
    assert!(
        out.status.success(),
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("verdict: OK"), "{}", out.stdout);
    assert!(fail_items(&out.stdout).is_empty(), "{}", out.stdout);
    // The pending group was resolved and both groups were read.
    assert!(out.stdout.contains("cidAsXSBLnA=="), "{}", out.stdout);
    assert!(out.stdout.contains(BOUND_NAME), "{}", out.stdout);
    assert_no_secret(&out.stdout);
    assert_no_secret(&out.stderr);
    assert!(sandbox.calls(Endpoint::GetToken) >= 1);
    assert!(sandbox.calls(Endpoint::ChatGet) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_reply_client_and_the_proxy_it_follows() {
    let sandbox = Sandbox::start(Org::demo()).await.expect("sandbox");
    let config = Config::new(&sandbox.base_url());
    let out = run_check(&config).await;
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("  ok    reply client: direct\n"),
        "{}",
        out.stdout
    );
    // With a proxy variable set, `reply_client = "auto"` sends replies through reqwest,
    // which uses the proxy (NO_PROXY keeps the sandbox's API reachable directly).
    let out = run_check_env(
        &config,
        &[
            ("HTTPS_PROXY", "http://127.0.0.1:9"),
            ("NO_PROXY", "127.0.0.1"),
        ],
    )
    .await;
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("  ok    reply client: reqwest, through the proxy in HTTPS_PROXY\n"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_on_a_wrong_secret_without_printing_it() {
    let sandbox = Sandbox::start(Org::demo()).await.expect("sandbox");
    let mut config = Config::new(&sandbox.base_url()).group("chate39f540dxxxx", None);
    config.app_secret = WRONG_SECRET.into();
    let out = run_check(&config).await;
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(out.stdout.contains("FAIL"), "{}", out.stdout);
    assert!(out.stdout.contains("access token"), "{}", out.stdout);
    assert!(!out.stdout.contains("verdict: OK"), "{}", out.stdout);
    assert!(
        !out.stdout.contains(WRONG_SECRET),
        "secret printed:\n{}",
        out.stdout
    );
    assert!(
        !out.stderr.contains(WRONG_SECRET),
        "secret printed:\n{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_group_and_the_missing_permission() {
    let sandbox = Sandbox::start(Org::demo()).await.expect("sandbox");
    let config = Config::new(&sandbox.base_url()).group("chatnoread0001", None);
    let out = run_check(&config).await;
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(out.stdout.contains("verdict: FAIL"), "{}", out.stdout);
    let items = fail_items(&out.stdout);
    let about_group: Vec<&String> = items
        .iter()
        .filter(|i| i.contains("chatnoread0001"))
        .collect();
    assert!(!about_group.is_empty(), "{}", out.stdout);
    for item in &about_group {
        assert!(
            item.contains("qyapi_chat_read"),
            "{item}\n---\n{}",
            out.stdout
        );
    }
    // Nothing else failed, and the healthy group is still reported as fine.
    assert_eq!(items.len(), about_group.len(), "{}", out.stdout);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("ok") && l.contains("chatbound0001")),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_robot_send_permission_the_fallback_needs() {
    let sandbox = Sandbox::start(Org::demo()).await.expect("sandbox");
    let config = Config::new(&sandbox.base_url());
    let out = run_check(&config).await;
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("  ok    reply fallback: robot send APIs (qyapi_robot_sendmsg granted)\n"),
        "{}",
        out.stdout
    );
    // The probe cannot send anything: it names no conversation.
    assert_eq!(sandbox.message_count(), 0);

    sandbox.set_robot_send_permission(false);
    let out = run_check(&config).await;
    assert!(!out.status.success(), "{}", out.stdout);
    let items = fail_items(&out.stdout);
    assert_eq!(items.len(), 1, "{}", out.stdout);
    assert!(items[0].contains("reply fallback"), "{}", items[0]);
    assert!(items[0].contains("qyapi_robot_sendmsg"), "{}", items[0]);
    assert!(
        items[0].contains("fix: grant the app the qyapi_robot_sendmsg permission"),
        "{}",
        items[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_robot_send_permission_is_logged_by_name() {
    let sandbox = Sandbox::start(Org::demo()).await.expect("sandbox");
    sandbox.set_robot_send_permission(false);
    let mut served = Served::start(Config::new(&sandbox.base_url())).await;
    let session = "opsNoRobotSend";
    sandbox.end_session(session);
    assert_eq!(served.send_info(&sandbox, session).await, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while sandbox.calls(Endpoint::RobotGroupSend) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sandbox.calls(Endpoint::RobotGroupSend), 1);
    let (status, _, out, err) = served.sigterm().await;
    assert!(status.success(), "{out}\n{err}");
    let line = out
        .lines()
        .chain(err.lines())
        .find(|l| l.contains("qyapi_robot_sendmsg"))
        .unwrap_or_else(|| panic!("no log line names the permission:\n{out}\n{err}"));
    assert!(line.contains("ERROR"), "{line}");
    assert_eq!(sandbox.message_count(), 0);
    assert_no_secret(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_without_app_key_exits_2_naming_the_key() {
    let sandbox = Sandbox::start(Org::demo()).await.expect("sandbox");
    let mut config = Config::new(&sandbox.base_url());
    config.app_key = None;
    let out = run_check(&config).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stderr.contains("dingtalk.app_key"),
        "stderr:\n{}",
        out.stderr
    );
    assert_no_secret(&out.stdout);
    assert_no_secret(&out.stderr);
    assert_eq!(sandbox.calls(Endpoint::GetToken), 0);
}

// ---------------------------------------------------------------------------------------
// 4. dingbot simulate
// ---------------------------------------------------------------------------------------

/// Runs `dingbot simulate` with `secret` against an in-process dingbot that allows the
/// simulate sink's origin.
async fn simulate_with(secret: &str) -> (BinOutput, TestApp) {
    let sink_port = free_port();
    let app = spawn_app_from_toml(|base| {
        let mut config = Config::new(base);
        config.extra_webhook_hosts = vec![format!("http://127.0.0.1:{sink_port}")];
        config.toml()
    })
    .await;
    let url = app.callback_url();
    let sink = format!("127.0.0.1:{sink_port}");
    let out = run_bin(
        &[
            "simulate",
            "--url",
            &url,
            "--secret",
            secret,
            "--group",
            BOUND,
            "--text",
            "/info",
            "--sink-listen",
            &sink,
        ],
        Duration::from_secs(60),
    )
    .await;
    (out, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_prints_the_reply_from_a_running_dingbot() {
    let (out, app) = simulate_with(SECRET).await;
    assert!(
        out.status.success(),
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("HTTP 200"), "{}", out.stdout);
    assert!(out.stdout.contains(BOUND_NAME), "{}", out.stdout);
    assert_no_secret(&out.stdout);
    assert_no_secret(&out.stderr);
    // The group was looked up in the sandbox, and the reply went to the simulate sink.
    assert!(app.sandbox.calls(Endpoint::ChatGet) >= 1);
    assert_eq!(app.sandbox.message_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_with_a_wrong_secret_reports_401() {
    let (out, app) = simulate_with(WRONG_SECRET).await;
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(out.stdout.contains("401"), "{}", out.stdout);
    assert!(!out.stdout.contains(WRONG_SECRET) && !out.stderr.contains(WRONG_SECRET));
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 0);
}

// ---------------------------------------------------------------------------------------
// 5. /readyz and /healthz
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_200_with_a_healthy_dingtalk() {
    let app = spawn_app_with(without_fixture_group).await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(ready.json()["status"], "ready");
    assert!(app.sandbox.calls(Endpoint::GetToken) >= 1);
    let health = app.get("/healthz").await;
    assert_eq!(health.status, 200, "{health:?}");
}

/// Asserts /readyz says not_ready with a reason that does not leak the secret (nor the
/// gettoken query that carries it), and /healthz stays 200.
async fn assert_not_ready(app: &TestApp) {
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 503, "{ready:?}");
    let body = ready.json();
    assert_eq!(body["status"], "not_ready", "{ready:?}");
    let reason = body["reason"].as_str().expect("a reason");
    assert!(!reason.is_empty());
    assert_no_secret(&ready.text);
    assert!(!reason.contains("appsecret="), "query in {reason}");

    let health = app.get("/healthz").await;
    assert_eq!(health.status, 200, "{health:?}");
}

async fn not_ready_app(fault: Fault) -> TestApp {
    // No pending group, so nothing fetches a token before the probe.
    spawn_app_faulted(
        vec![(Endpoint::GetToken, fault, u32::MAX)],
        without_fixture_group,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_when_no_token_can_be_had() {
    let app = not_ready_app(Fault::errcode(40089, "不合法的appkey或appsecret")).await;
    assert_eq!(app.sandbox.calls(Endpoint::GetToken), 0);
    assert_not_ready(&app).await;
    let calls = app.sandbox.calls(Endpoint::GetToken);
    assert!(calls >= 1, "readiness did not ask DingTalk");

    // A probe right after reuses the failure instead of hammering DingTalk.
    let again = app.get("/readyz").await;
    assert_eq!(again.status, 503, "{again:?}");
    assert_eq!(app.sandbox.calls(Endpoint::GetToken), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_when_gettoken_answers_html() {
    let app = not_ready_app(Fault::Html).await;
    assert_not_ready(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reason_hides_the_secret_when_dingtalk_is_unreachable() {
    // oapi_base on a port nobody listens on: the transport error must not carry the
    // gettoken URL, whose query holds the secret.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let app = spawn_app_from_toml(|_| Config::new(&dead).toml()).await;
    assert_not_ready(&app).await;
}
