//! Unit tests of `config`: defaults, layering, sources named in errors, checks.

use super::*;

const MINIMAL: &str = r#"
[dingtalk]
app_key = "dingkey"
app_secret = "s3cret-value"
"#;

#[test]
fn stream_mode_and_timings() {
    let s = Settings::from_toml_str(MINIMAL).unwrap();
    assert_eq!(s.dingtalk.mode, DingTalkMode::Http);
    assert!(s.dingtalk.mode.serves_http() && !s.dingtalk.mode.holds_stream());
    assert_eq!(s.stream.idle_timeout_ms, 90_000);
    assert_eq!(
        (s.stream.backoff_base_ms, s.stream.backoff_max_ms),
        (1_000, 60_000)
    );

    let env = [
        ("DINGBOT_DINGTALK__APP_KEY", "k"),
        ("DINGBOT_DINGTALK__APP_SECRET", "s"),
        ("DINGBOT_DINGTALK__MODE", "stream"),
        ("DINGBOT_STREAM__IDLE_TIMEOUT_MS", "500"),
        ("DINGBOT_STREAM__PING_INTERVAL_MS", "100"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let s = Settings::load_with_env(None, env).unwrap();
    assert_eq!(s.dingtalk.mode, DingTalkMode::Stream);
    assert!(!s.dingtalk.mode.serves_http() && s.dingtalk.mode.holds_stream());
    assert_eq!(s.stream.idle_timeout_ms, 500);

    let bad = |extra: &str| {
        Settings::from_toml_str(&format!("{MINIMAL}{extra}"))
            .unwrap_err()
            .to_string()
    };
    assert!(bad("mode = \"carrier-pigeon\"").contains("dingtalk.mode"));
    let e = bad("[stream]\nbackoff_base_ms = 5000\nbackoff_max_ms = 1000");
    assert!(e.contains("stream.backoff_max_ms"), "{e}");
    let e = bad("[stream]\nping_interval_ms = 1000\nidle_timeout_ms = 1000");
    assert!(e.contains("stream.idle_timeout_ms"), "{e}");
    let e = bad("[stream]\nmax_frame_bytes = 10");
    assert!(e.contains("stream.max_frame_bytes"), "{e}");
}

#[test]
fn minimal_file_gets_documented_defaults() {
    let s = Settings::from_toml_str(MINIMAL).unwrap();
    assert_eq!(s.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(s.server.callback_path, "/dingtalk/callback");
    assert_eq!(s.server.max_in_flight.get(), 1024);
    assert_eq!(s.dingtalk.oapi_base.as_str(), "https://oapi.dingtalk.com");
    assert_eq!(s.dingtalk.api_base.as_str(), "https://api.dingtalk.com");
    assert_eq!(s.dingtalk.max_clock_skew_secs, 3600);
    assert_eq!(s.dingtalk.webhook_paths, vec!["/robot/sendBySession"]);
    assert_eq!(s.dingtalk.max_parallel_requests.get(), 32);
    assert_eq!(s.dingtalk.reply_client, ReplyClientChoice::Auto);
    assert_eq!(s.rate_limit.per_group_per_minute.get(), 20);
    assert_eq!(s.bot.info_cache_max_groups.get(), 10_000);
    assert_eq!(s.bot.language, Language::Zh);
    assert!(s.groups.is_empty());
    assert!(s.bot.admin_user_ids.is_empty());
    assert_eq!(s.group_info.sources, InfoSource::ALL.to_vec());
    assert_eq!(s.group_info.denied_backoff_secs, 600);
    assert_eq!(s.storage.data_dir, PathBuf::from("./data"));
}

#[test]
fn group_info_sources_are_checked() {
    let s = Settings::from_toml_str(&format!(
        "{MINIMAL}[group_info]\nsources = [\"base_info\", \"callback\"]\ndenied_backoff_secs = 0\n"
    ))
    .unwrap();
    assert_eq!(
        s.group_info.sources,
        vec![InfoSource::BaseInfo, InfoSource::Callback]
    );
    assert_eq!(s.group_info.denied_backoff_secs, 0);

    let e = Settings::from_toml_str(&format!(
        "{MINIMAL}[group_info]\nsources = [\"chat_get\", \"scenegroup\"]\n"
    ))
    .unwrap_err();
    assert!(e.key.starts_with("group_info.sources"), "{e}");
    assert!(e.to_string().contains("scene_group"), "{e}");

    let e = Settings::from_toml_str(&format!(
        "{MINIMAL}[group_info]\nsources = [\"callback\", \"callback\"]\n"
    ))
    .unwrap_err();
    assert_eq!(e.key, "group_info.sources");
    assert!(e.problem.contains("twice"), "{e}");

    let e = Settings::from_toml_str(&format!("{MINIMAL}[group_info]\nsources = []\n")).unwrap_err();
    assert_eq!(e.key, "group_info.sources");

    let e = Settings::from_toml_str(&format!(
        "{MINIMAL}[group_info]\ndenied_backoff_secs = 99999999\n"
    ))
    .unwrap_err();
    assert_eq!(e.key, "group_info.denied_backoff_secs");
}

#[test]
fn storage_and_admins_are_checked() {
    let s = Settings::from_toml_str(&format!(
        "{MINIMAL}[storage]\ndata_dir = \"/var/lib/dingbot\"\n[bot]\nadmin_user_ids = [\"manager4220\"]\n"
    ))
    .unwrap();
    assert_eq!(s.storage.data_dir, PathBuf::from("/var/lib/dingbot"));
    assert_eq!(s.bot.admin_user_ids, vec!["manager4220".to_string()]);

    let e = Settings::from_toml_str(&format!("{MINIMAL}[storage]\ndata_dir = \"\"\n")).unwrap_err();
    assert_eq!(e.key, "storage.data_dir");
    let e = Settings::from_toml_str(&format!("{MINIMAL}[bot]\nadmin_user_ids = [\" \"]\n"))
        .unwrap_err();
    assert_eq!(e.key, "bot.admin_user_ids");

    let s = Settings::load_with_env(
        None,
        vec![
            ("DINGBOT_DINGTALK__APP_KEY".into(), "k".into()),
            ("DINGBOT_DINGTALK__APP_SECRET".into(), "s".into()),
            (
                "DINGBOT_BOT__ADMIN_USER_IDS".into(),
                r#"["0420000297", "manager4220"]"#.into(),
            ),
            (
                "DINGBOT_GROUP_INFO__SOURCES".into(),
                r#"["scene_group", "callback"]"#.into(),
            ),
            ("DINGBOT_STORAGE__DATA_DIR".into(), "/tmp/dingbot-x".into()),
        ],
    )
    .unwrap();
    assert_eq!(s.bot.admin_user_ids.len(), 2);
    assert_eq!(
        s.group_info.sources,
        vec![InfoSource::SceneGroup, InfoSource::Callback]
    );
    assert_eq!(s.storage.data_dir, PathBuf::from("/tmp/dingbot-x"));
}

#[test]
fn state_defaults_to_memory_and_redis_needs_a_url() {
    let s = Settings::from_toml_str(MINIMAL).unwrap();
    assert_eq!(s.state.backend, StateBackend::Memory);
    assert_eq!(s.state.key_prefix, "dingbot:");
    assert_eq!(s.state.command_timeout_ms, 250);
    assert_eq!(s.state.connect_timeout_ms, 1000);
    assert_eq!(s.state.lookup_lock_ms, 3000);

    let e =
        Settings::from_toml_str(&format!("{MINIMAL}[state]\nbackend = \"redis\"\n")).unwrap_err();
    assert_eq!(e.key, "state.redis_url");

    let e = Settings::from_toml_str(&format!(
        "{MINIMAL}[state]\nbackend = \"redis\"\nredis_url = \"http://:hunter2@x\"\n"
    ))
    .unwrap_err();
    assert_eq!(e.key, "state.redis_url");
    assert!(!format!("{e} {e:?}").contains("hunter2"), "{e}");

    let s = Settings::load_with_env(
        None,
        vec![
            ("DINGBOT_DINGTALK__APP_KEY".into(), "k".into()),
            ("DINGBOT_DINGTALK__APP_SECRET".into(), "s".into()),
            ("DINGBOT_STATE__BACKEND".into(), "redis".into()),
            (
                "DINGBOT_STATE__REDIS_URL".into(),
                "rediss://:hunter2@redis.internal:6380/1".into(),
            ),
        ],
    )
    .unwrap();
    assert_eq!(s.state.backend, StateBackend::Redis);
    assert!(!format!("{s:?}").contains("hunter2"));

    let e = Settings::from_toml_str(&format!("{MINIMAL}[state]\ncommand_timeout_ms = 0\n"))
        .unwrap_err();
    assert_eq!(e.key, "state.command_timeout_ms");
}

#[test]
fn secret_never_in_debug() {
    let s = Settings::from_toml_str(MINIMAL).unwrap();
    assert!(!format!("{s:?}").contains("s3cret-value"));
}

#[test]
fn missing_app_key_names_the_key() {
    let e = Settings::from_toml_str("[dingtalk]\napp_secret = \"x\"\n").unwrap_err();
    assert_eq!(e.key, "dingtalk.app_key");
    assert!(e.to_string().contains("DINGBOT_DINGTALK__APP_KEY"), "{e}");
}

#[test]
fn env_overrides_file_and_is_named_as_source() {
    let dir = std::env::temp_dir().join(format!("dingbot-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(&file, MINIMAL).unwrap();
    let s = Settings::load_with_env(
        Some(&file),
        vec![
            (
                "DINGBOT_RATE_LIMIT__PER_GROUP_PER_MINUTE".into(),
                "7".into(),
            ),
            ("DINGBOT_DINGTALK__APP_SECRET".into(), "12345".into()),
            ("OTHER".into(), "ignored".into()),
        ],
    )
    .unwrap();
    assert_eq!(s.rate_limit.per_group_per_minute.get(), 7);
    assert_eq!(s.dingtalk.app_secret.expose_secret(), "12345");

    let e = Settings::load_with_env(
        Some(&file),
        vec![(
            "DINGBOT_RATE_LIMIT__PER_GROUP_PER_MINUTE".into(),
            "0".into(),
        )],
    )
    .unwrap_err();
    assert_eq!(e.key, "rate_limit.per_group_per_minute");
    assert!(e.problem.contains("between 1 and 10000"), "{e}");
    let var = "DINGBOT_RATE_LIMIT__PER_GROUP_PER_MINUTE";
    assert_eq!(e.source_name, format!("environment variable {var}"));

    std::fs::write(&file, format!("{MINIMAL}[server]\nlisten = \"nowhere\"\n")).unwrap();
    let e = Settings::load_with_env(Some(&file), Vec::new()).unwrap_err();
    assert_eq!(e.key, "server.listen");
    assert_eq!(e.source_name, format!("file {}", file.display()));
}

#[test]
fn webhook_paths_are_paths() {
    let toml = format!("{MINIMAL}webhook_paths = [\"/robot/sendBySession\", \"/r2\"]\n");
    let s = Settings::from_toml_str(&toml).unwrap();
    assert_eq!(
        s.dingtalk.webhook_paths,
        vec!["/robot/sendBySession", "/r2"]
    );
    for bad in ["[]", "[\"robot\"]", "[\"/robot?session=x\"]"] {
        let toml = format!("{MINIMAL}webhook_paths = {bad}\n");
        let e = Settings::from_toml_str(&toml).unwrap_err();
        assert_eq!(e.key, "dingtalk.webhook_paths", "{bad}");
    }
}

#[test]
fn a_syntax_error_gives_line_and_column_not_the_line() {
    let e = Settings::from_toml_str("[dingtalk]\napp_key = \"k\"\napp_secret = \"s3cret-v\n")
        .unwrap_err();
    assert_eq!(e.key, "TOML syntax");
    assert!(e.problem.starts_with("line 3, column "), "{e}");
    assert!(!format!("{e} {e:?}").contains("s3cret"), "{e:?}");
}

#[test]
fn unknown_key_is_an_error_not_ignored() {
    let e = Settings::from_toml_str(&format!(
        "{MINIMAL}\n[rate_limit]\nper_group_per_minut = 5\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("per_group_per_minut"), "{e}");
}

#[test]
fn bad_base_url_is_rejected() {
    let e = Settings::from_toml_str(&format!("{MINIMAL}oapi_base = \"ftp://x\"\n")).unwrap_err();
    assert_eq!(e.key, "dingtalk.oapi_base");
}

#[test]
fn wrong_type_for_secret_does_not_echo_value() {
    let e = Settings::from_toml_str("[dingtalk]\napp_key = \"k\"\napp_secret = 987654321\n")
        .unwrap_err();
    assert!(!e.to_string().contains("987654321"), "{e}");
    assert!(e.to_string().contains("app_secret"), "{e}");
}
