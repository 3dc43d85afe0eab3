//! The sandbox exercised over real HTTP.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Access, Endpoint, Fault, Org, Sandbox};

const KEY: &str = "dingdemoappkey";
const SECRET: &str = "demo-app-secret-0123456789abcdef";
const TOKEN_HEADER: &str = "x-acs-dingtalk-access-token";

struct Harness {
    sbx: Sandbox,
    http: reqwest::Client,
}

impl Harness {
    async fn new(org: Org) -> Result<Harness> {
        Ok(Harness {
            sbx: Sandbox::start(org).await?,
            http: reqwest::Client::builder().no_proxy().build()?,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sbx.base_url())
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<(StatusCode, Value)> {
        let resp = self.http.get(self.url(path)).query(query).send().await?;
        let status = resp.status();
        Ok((status, resp.json().await?))
    }

    async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<(StatusCode, Value)> {
        // `null` stands for "no body" (convertToOpenConversationId takes none).
        let mut req = self
            .http
            .post(self.url(path))
            .header(reqwest::header::ACCEPT, "application/json");
        if !body.is_null() {
            req = req.json(body);
        }
        if let Some(token) = token {
            req = req.header(TOKEN_HEADER, token);
        }
        let resp = req.send().await?;
        let status = resp.status();
        Ok((status, resp.json().await?))
    }

    async fn token(&self) -> Result<String> {
        let (_, body) = self
            .get("/gettoken", &[("appkey", KEY), ("appsecret", SECRET)])
            .await?;
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access_token")
    }

    async fn chat_get(&self, token: &str, chatid: &str) -> Result<Value> {
        Ok(self
            .get("/chat/get", &[("access_token", token), ("chatid", chatid)])
            .await?
            .1)
    }

    async fn send(&self, session: &str, body: &Value) -> Result<Value> {
        let resp = self
            .http
            .post(self.sbx.webhook_url(session))
            .json(body)
            .send()
            .await?;
        Ok(resp.json().await?)
    }
}

fn text_msg(content: &str, at: &[&str]) -> Value {
    json!({"msgtype": "text", "text": {"content": content}, "at": {"atUserIds": at}})
}

#[tokio::test]
async fn gettoken_returns_the_same_token_until_revoked() -> Result<()> {
    let h = Harness::new(Org::demo()).await?;
    let (status, body) = h
        .get("/gettoken", &[("appkey", KEY), ("appsecret", SECRET)])
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["errcode"], 0);
    assert_eq!(body["errmsg"], "ok");
    assert_eq!(body["expires_in"], 7200);
    let first = body["access_token"].as_str().context("token")?.to_owned();
    assert_eq!(h.token().await?, first);
    assert_eq!(h.sbx.current_token().as_deref(), Some(first.as_str()));

    h.sbx.revoke_tokens();
    assert_eq!(h.chat_get(&first, "chatbound0001").await?["errcode"], 40014);
    let (status, body) = h
        .post(
            "/v1.0/im/chat/chatbound0001/convertToOpenConversationId",
            Some(&first),
            &Value::Null,
        )
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "InvalidAuthentication");

    let second = h.token().await?;
    assert_ne!(second, first);
    assert_eq!(h.chat_get(&second, "chatbound0001").await?["errcode"], 0);
    assert_eq!(h.sbx.calls(Endpoint::GetToken), 3);
    assert_eq!(h.sbx.calls(Endpoint::ChatGet), 2);
    Ok(())
}

#[tokio::test]
async fn gettoken_rejects_wrong_credentials_and_expired_tokens() -> Result<()> {
    let mut org = Org::demo();
    org.token_expires_in = 0;
    let h = Harness::new(org).await?;
    for query in [
        vec![("appkey", KEY), ("appsecret", "wrong")],
        vec![("appkey", "other"), ("appsecret", SECRET)],
        vec![],
    ] {
        let (_, body) = h.get("/gettoken", &query).await?;
        assert_eq!(
            body,
            json!({"errcode": 40089, "errmsg": "不合法的appkey或appsecret"})
        );
    }
    // With a zero lifetime every token is expired at once, so each call issues a new one.
    let token = h.token().await?;
    assert_eq!(h.chat_get(&token, "chatbound0001").await?["errcode"], 40014);
    assert_ne!(h.token().await?, token);
    Ok(())
}

#[tokio::test]
async fn chat_get_matches_the_fixture_and_reports_errors() -> Result<()> {
    let h = Harness::new(Org::demo()).await?;
    let token = h.token().await?;
    let expected = json!({"errcode":0,"errmsg":"ok","chat_info":{"owner":"manager4220",
        "mentionAllAuthority":0,"showHistoryType":0,"chatid":"chate39f540dxxxx",
        "conversationTag":2,"validationType":0,"useridlist":["user123","manager4220"],
        "icon":"@lADPDfJ6Q7LLejDNAljNAlg","name":"全员群","searchable":0,"chatBannedType":0,
        "managementType":0,"status":1}});
    assert_eq!(h.chat_get(&token, "chate39f540dxxxx").await?, expected);

    let bound = h.chat_get(&token, "chatbound0001").await?;
    assert_eq!(bound["chat_info"]["name"], "研发部全员群");
    assert_eq!(
        bound["chat_info"]["useridlist"].as_array().map(Vec::len),
        Some(37)
    );
    assert_eq!(bound["chat_info"]["chatBannedType"], 1);

    let (_, no_token) = h.get("/chat/get", &[("chatid", "chatbound0001")]).await?;
    assert_eq!(no_token["errcode"], 40014);
    assert_eq!(
        h.chat_get("bogus", "chatbound0001").await?["errcode"],
        40014
    );
    let (_, missing) = h.get("/chat/get", &[("access_token", &token)]).await?;
    assert_eq!(
        missing,
        json!({"errcode": 49000, "errmsg": "需要参数chatid"})
    );
    assert_eq!(
        h.chat_get(&token, "chatnope").await?,
        json!({"errcode": 40016, "errmsg": "无效的chatid"})
    );
    assert_eq!(
        h.chat_get(&token, "chatnoread0001").await?,
        json!({"errcode": 43007, "errmsg": "没有调用权限"})
    );
    assert_eq!(
        h.chat_get(&token, "chatgone0001").await?["chat_info"]["status"],
        2
    );
    Ok(())
}

#[tokio::test]
async fn convert_and_openapi_group_endpoints() -> Result<()> {
    let h = Harness::new(Org::demo()).await?;
    let token = h.token().await?;
    let convert = |chatid: &str| format!("/v1.0/im/chat/{chatid}/convertToOpenConversationId");

    let (status, body) = h
        .post(&convert("chate39f540dxxxx"), Some(&token), &Value::Null)
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"openConversationId": "cidAsXSBLnA=="}));
    let (status, body) = h
        .post(&convert("chatnope"), Some(&token), &Value::Null)
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalidParameter.chatId");
    let (status, body) = h
        .post(&convert("chatnoread0001"), Some(&token), &Value::Null)
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["accessdenieddetail"]["requiredScopes"],
        json!(["qyapi_chat_read"])
    );
    let (status, _) = h
        .post(&convert("chatbound0001"), None, &Value::Null)
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The SDK sends no body; the sandbox refuses one.
    let (status, body) = h
        .post(&convert("chate39f540dxxxx"), Some(&token), &json!({}))
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "InvalidParameter.Body");
    // Without `Accept: application/json` a /v1.0 endpoint answers XML.
    let resp = h
        .http
        .post(h.url(&convert("chate39f540dxxxx")))
        .header(TOKEN_HEADER, &token)
        .send()
        .await?;
    assert!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/xml")),
        "{resp:?}"
    );
    assert!(resp.text().await?.starts_with("<?xml"));

    // chat/get counts external members in `extidlist`; baseInfos counts them too.
    let mixed = h.chat_get(&token, "chatmixed0001").await?;
    assert_eq!(
        mixed["chat_info"]["extidlist"],
        json!(["ext9001", "ext9002"])
    );
    let (_, body) = h
        .post(
            "/v1.0/im/groups/baseInfos/query",
            Some(&token),
            &json!({"openConversationId": "cidMixed0001=="}),
        )
        .await?;
    assert_eq!(body["result"]["memberCount"], 5);

    let base = "/v1.0/im/groups/baseInfos/query";
    let (status, body) = h
        .post(
            base,
            Some(&token),
            &json!({"openConversationId": "cidPlain0001=="}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["success"], true);
    assert_eq!(body["result"]["title"], "午餐拼单群");
    assert_eq!(body["result"]["memberCount"], 7);
    assert_eq!(body["result"]["tag"], "2");
    let (status, _) = h
        .post(
            base,
            Some(&token),
            &json!({"openConversationId": "cidDenied001=="}),
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = h
        .post(
            base,
            Some(&token),
            &json!({"openConversationId": "cidNope=="}),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let detail = "/v1.0/im/sceneGroups/queryDetail";
    let (status, body) = h
        .post(
            detail,
            Some(&token),
            &json!({"open_conversation_id": "cidScene0001=="}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["owner_user_id"], "pm0815");
    assert_eq!(body["member_amount"], 8);
    assert_eq!(body["management_options"]["searchable"], "1");
    let (status, body) = h
        .post(
            detail,
            Some(&token),
            &json!({"open_conversation_id": "cidPlain0001=="}),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalidParameter.openConversationId");
    let (status, _) = h
        .post(
            detail,
            Some(&token),
            &json!({"open_conversation_id": "cidDenied001=="}),
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    Ok(())
}

#[tokio::test]
async fn oapi_scene_group_and_user_endpoints() -> Result<()> {
    let h = Harness::new(Org::demo()).await?;
    let token = h.token().await?;
    let scene = format!("/topapi/im/chat/scenegroup/get?access_token={token}");
    let (_, body) = h
        .post(
            &scene,
            None,
            &json!({"open_conversation_id": "cidScene0001=="}),
        )
        .await?;
    assert_eq!(body["errcode"], 0);
    assert_eq!(body["result"]["title"], "项目群·发布");
    assert_eq!(body["result"]["owner_staff_id"], "pm0815");
    // DingTalk's shape: the flags as strings, the member count as a number.
    assert_eq!(body["result"]["management_options"]["validation_type"], "1");
    assert_eq!(
        body["result"]["management_options"]["chat_banned_type"],
        "0"
    );
    assert_eq!(body["result"]["member_amount"], 8);
    // The other variant: integer flags and no member_amount.
    let (_, body) = h
        .post(
            &scene,
            None,
            &json!({"open_conversation_id": "cidScene0002=="}),
        )
        .await?;
    assert_eq!(body["result"]["management_options"]["chat_banned_type"], 1);
    assert!(body["result"].get("member_amount").is_none(), "{body}");
    let (_, body) = h
        .post(
            &scene,
            None,
            &json!({"open_conversation_id": "cidPlain0001=="}),
        )
        .await?;
    assert_eq!(body["errcode"], 400020);
    let (_, body) = h
        .post(
            &scene,
            None,
            &json!({"open_conversation_id": "cidDenied001=="}),
        )
        .await?;
    assert_eq!(body["errcode"], 88);
    assert_eq!(body["sub_code"], "60011");
    let (_, body) = h.post(&scene, None, &json!({})).await?;
    assert_eq!(body["errcode"], 40035);
    let (_, body) = h
        .post(
            "/topapi/im/chat/scenegroup/get",
            None,
            &json!({"open_conversation_id": "cidScene0001=="}),
        )
        .await?;
    assert_eq!(body["errcode"], 40014);

    let user = format!("/topapi/v2/user/get?access_token={token}");
    let (_, body) = h
        .post(&user, None, &json!({"userid": "manager4220"}))
        .await?;
    assert_eq!(
        body,
        json!({"errcode": 0, "errmsg": "ok", "result": {"userid": "manager4220", "name": "王建国"}})
    );
    let (_, body) = h.post(&user, None, &json!({"userid": "ghost"})).await?;
    assert_eq!(body["errcode"], 60121);
    Ok(())
}

#[tokio::test]
async fn faults_are_consumed_in_order() -> Result<()> {
    let h = Harness::new(Org::demo()).await?;
    let token = h.token().await?;
    h.sbx
        .inject(Endpoint::ChatGet, Fault::errcode(-1, "系统繁忙"), 2);
    h.sbx.inject(Endpoint::ChatGet, Fault::HttpStatus(503), 1);
    let url = h.url(&format!(
        "/chat/get?access_token={token}&chatid=chatbound0001"
    ));

    for _ in 0..2 {
        assert_eq!(
            h.chat_get(&token, "chatbound0001").await?,
            json!({"errcode": -1, "errmsg": "系统繁忙"})
        );
    }
    let resp = h.http.get(&url).send().await?;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.chat_get(&token, "chatbound0001").await?["errcode"], 0);
    assert_eq!(h.sbx.calls(Endpoint::ChatGet), 4);

    // Faults on one endpoint leave the others alone.
    h.sbx.inject(Endpoint::ChatGet, Fault::Html, u32::MAX);
    assert_eq!(h.token().await?, token);
    for _ in 0..3 {
        let resp = h.http.get(&url).send().await?;
        let html = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/html"));
        ensure!(html, "expected an HTML page");
    }
    h.sbx.clear_faults();
    assert_eq!(h.chat_get(&token, "chatbound0001").await?["errcode"], 0);

    h.sbx.inject(Endpoint::ChatGet, Fault::Truncated, 1);
    h.sbx.inject(Endpoint::ChatGet, Fault::Garbage, 1);
    for _ in 0..2 {
        let bytes = h.http.get(&url).send().await?.bytes().await?;
        ensure!(!bytes.is_empty());
        ensure!(
            serde_json::from_slice::<Value>(&bytes).is_err(),
            "body must not be JSON"
        );
    }

    h.sbx.inject(
        Endpoint::ChatGet,
        Fault::Delay(Duration::from_millis(150)),
        1,
    );
    let started = Instant::now();
    assert_eq!(h.chat_get(&token, "chatbound0001").await?["errcode"], 0);
    ensure!(started.elapsed() >= Duration::from_millis(150));

    h.sbx.inject(
        Endpoint::GroupBaseInfos,
        Fault::ErrCode {
            errcode: 90018,
            errmsg: "请求过于频繁".into(),
            sub_code: Some("Throttling".into()),
        },
        1,
    );
    let (status, body) = h
        .post(
            "/v1.0/im/groups/baseInfos/query",
            Some(&token),
            &json!({"openConversationId": "cidPlain0001=="}),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "Throttling");
    assert_eq!(body["message"], "请求过于频繁");
    Ok(())
}

#[tokio::test]
async fn sink_records_valid_messages() -> Result<()> {
    let h = Harness::new(Org::demo()).await?;
    let waiter = {
        let sbx = h.sbx.clone();
        tokio::spawn(async move { sbx.wait_for_messages(3, Duration::from_secs(10)).await })
    };
    assert_eq!(
        h.send("s1", &text_msg("hello", &["user123"])).await?,
        json!({"errcode": 0, "errmsg": "ok"})
    );
    let markdown = json!({"msgtype": "markdown",
        "markdown": {"title": "群信息", "text": "## 研发部全员群"},
        "at": {"atUserIds": ["manager4220", "user123"]}});
    assert_eq!(h.send("s2", &markdown).await?["errcode"], 0);
    h.sbx.inject(Endpoint::SendBySession, Fault::Truncated, 1);
    let resp = h
        .http
        .post(h.sbx.webhook_url("s1"))
        .json(&text_msg("again", &[]))
        .send()
        .await?;
    ensure!(serde_json::from_slice::<Value>(&resp.bytes().await?).is_err());

    let got = tokio::time::timeout(Duration::from_secs(10), waiter).await??;
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].text(), "hello");
    assert_eq!(got[0].at_user_ids(), vec!["user123"]);
    assert_eq!(got[1].text(), "## 研发部全员群");
    assert_eq!(got[1].title(), Some("群信息"));
    assert_eq!(got[1].at_user_ids(), vec!["manager4220", "user123"]);
    let s1: Vec<String> = h.sbx.messages_for("s1").iter().map(|m| m.text()).collect();
    assert_eq!(s1, vec!["hello", "again"]);

    // Rejected bodies are counted but not recorded.
    let resp = h
        .http
        .post(h.sbx.webhook_url("s1"))
        .body("not json")
        .send()
        .await?;
    assert_eq!(resp.json::<Value>().await?["errcode"], 40035);
    let no_title = json!({"msgtype": "markdown", "markdown": {"text": "x"}});
    assert_eq!(h.send("s1", &no_title).await?["errcode"], 40035);
    let resp = h
        .http
        .post(h.url("/robot/sendBySession"))
        .json(&text_msg("x", &[]))
        .send()
        .await?;
    assert_eq!(resp.json::<Value>().await?["errcode"], 300001);
    h.sbx
        .inject(Endpoint::SendBySession, Fault::HttpStatus(500), 1);
    let resp = h
        .http
        .post(h.sbx.webhook_url("s1"))
        .json(&text_msg("lost", &[]))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(h.sbx.message_count(), 3);
    assert_eq!(h.sbx.calls(Endpoint::SendBySession), 7);

    let s2 = h
        .sbx
        .wait_for_session_messages("s2", 1, Duration::from_secs(10))
        .await;
    assert_eq!(s2.len(), 1);

    // Not enough messages: returns what is there once the timeout passes.
    let started = Instant::now();
    let got = h.sbx.wait_for_messages(10, Duration::from_millis(50)).await;
    assert_eq!(got.len(), 3);
    ensure!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

#[tokio::test]
async fn admin_endpoints_control_a_remote_sandbox() -> Result<()> {
    let h = Harness::new(Org::demo()).await?;
    let token = h.token().await?;
    h.send("abc", &text_msg("one", &[])).await?;
    h.send("def", &text_msg("two", &[])).await?;

    let (status, list) = h.get("/_sandbox/messages", &[("session", "abc")]).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        list,
        json!([{"session": "abc", "via": "send_by_session", "to": "abc", "body": text_msg("one", &[])}])
    );
    let (_, all) = h.get("/_sandbox/messages", &[]).await?;
    assert_eq!(all.as_array().map(Vec::len), Some(2));

    let (status, _) = h
        .post(
            "/_sandbox/faults",
            None,
            &json!({"endpoint": "chat_get", "fault": {"errcode": -1, "errmsg": "系统繁忙"}, "times": 2}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    h.post(
        "/_sandbox/faults",
        None,
        &json!({"endpoint": "chat_get", "fault": {"status": 502}}),
    )
    .await?;
    assert_eq!(h.chat_get(&token, "chatbound0001").await?["errcode"], -1);
    for spec in [
        json!({"endpoint": "nope", "fault": {"html": true}}),
        json!({"endpoint": "chat_get", "fault": {}}),
        json!({"endpoint": "chat_get", "fault": {"html": true, "garbage": true}}),
        json!({"endpoint": "chat_get", "fault": {"delay_ms": 5}, "times": -1}),
    ] {
        let (status, body) = h.post("/_sandbox/faults", None, &spec).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{spec}");
        ensure!(body["error"].is_string());
    }
    let resp = h.http.delete(h.url("/_sandbox/faults")).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(h.chat_get(&token, "chatbound0001").await?["errcode"], 0);

    let (_, stats) = h.get("/_sandbox/stats", &[]).await?;
    assert_eq!(stats["gettoken"], 1);
    assert_eq!(stats["chat_get"], 2);
    assert_eq!(stats["send_by_session"], 2);
    assert_eq!(stats["messages"], 2);

    let resp = h.http.post(h.url("/_sandbox/reset")).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, stats) = h.get("/_sandbox/stats", &[]).await?;
    assert_eq!(stats["chat_get"], 0);
    assert_eq!(stats["messages"], 0);
    assert!(h.sbx.messages().is_empty());

    let (status, body) = h.get("/no/such/api", &[]).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["errcode"], 404);
    Ok(())
}

#[tokio::test]
async fn groups_can_be_changed_and_generated() -> Result<()> {
    let h = Harness::new(Org::with_generated_groups(50)).await?;
    let token = h.token().await?;
    let body = h.chat_get(&token, "chatgen42").await?;
    assert_eq!(body["chat_info"]["name"], "压测群42");
    assert_eq!(h.chat_get(&token, "chatbound0001").await?["errcode"], 0);

    ensure!(h.sbx.update_group("cidGen42==", |g| {
        g.name = "改名了".into();
        g.access = Access::NoChatRead;
    }));
    assert_eq!(h.chat_get(&token, "chatgen42").await?["errcode"], 43007);
    ensure!(h.sbx.update_group("cidGen42==", |g| {
        g.access = Access::Full;
        g.chatid = Some("chatrenamed".into());
    }));
    assert_eq!(h.chat_get(&token, "chatgen42").await?["errcode"], 40016);
    assert_eq!(
        h.chat_get(&token, "chatrenamed").await?["chat_info"]["name"],
        "改名了"
    );
    ensure!(!h.sbx.update_group("cidMissing==", |_| {}));

    // Shutdown completes (whether the port then refuses connections is not asserted: a
    // concurrently running test may already have been given the same ephemeral port).
    tokio::time::timeout(std::time::Duration::from_secs(10), h.sbx.shutdown()).await?;
    Ok(())
}

#[test]
fn demo_org_is_consistent() {
    let org = Org::demo();
    for group in &org.groups {
        assert!(org.user_name(&group.owner).is_some(), "{}", group.owner);
        for member in &group.members {
            assert!(org.user_name(member).is_some(), "{member}");
        }
    }
    assert_eq!(
        org.group("cidBound0001==").map(|g| g.members.len()),
        Some(37)
    );
    assert_eq!(
        org.group("cidDenied001==").map(|g| g.access),
        Some(Access::NoPermission)
    );
    assert_eq!("chat_get".parse::<Endpoint>().ok(), Some(Endpoint::ChatGet));
    for ep in Endpoint::ALL {
        assert_eq!(ep.name().parse::<Endpoint>().ok(), Some(ep));
    }
}
