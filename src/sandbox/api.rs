//! The fake DingTalk endpoints: request checks, answers in DingTalk's shapes, and the
//! fault wrapper every endpoint goes through.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

use super::faults::{Endpoint, Fault};
use super::org::{Access, DEMO_ICON, Group};
use super::state::{SentMessage, State};

/// Header carrying the token on api.dingtalk.com endpoints.
const TOKEN_HEADER: &str = "x-acs-dingtalk-access-token";

/// A normal (un-faulted) answer: status plus JSON bytes.
pub(crate) struct Reply {
    status: StatusCode,
    body: Bytes,
}

impl Reply {
    fn json(status: StatusCode, value: &Value) -> Reply {
        Reply {
            status,
            body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        }
    }

    fn ok(value: &Value) -> Reply {
        Reply::json(StatusCode::OK, value)
    }

    fn into_response(self) -> HttpResponse {
        HttpResponse::build(self.status)
            .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
            .body(self.body)
    }

    /// The same answer with only the first half of the body.
    fn truncated(self) -> Reply {
        let cut = self.body.len() / 2;
        Reply {
            status: self.status,
            body: self.body.slice(..cut),
        }
    }
}

/// An oapi-style error: HTTP 200 with `errcode`/`errmsg`.
fn oapi_error(errcode: i64, errmsg: &str) -> Reply {
    Reply::ok(&json!({ "errcode": errcode, "errmsg": errmsg }))
}

/// The oapi answer for a missing permission.
fn oapi_no_permission() -> Reply {
    Reply::ok(&json!({
        "errcode": 88,
        "errmsg": "鉴权异常",
        "sub_code": "60011",
        "sub_msg": "没有调用该接口的权限",
    }))
}

fn request_id() -> String {
    let n = rand::random::<u128>();
    let hex = format!("{n:032X}");
    let (a, rest) = hex.split_at(8);
    let (b, rest) = rest.split_at(4);
    let (c, rest) = rest.split_at(4);
    let (d, e) = rest.split_at(4);
    format!("{a}-{b}-{c}-{d}-{e}")
}

/// An api.dingtalk.com-style error: HTTP status with `code`/`requestid`/`message`.
fn api_error(status: StatusCode, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({ "code": code, "requestid": request_id(), "message": message }),
    )
}

fn api_bad_token() -> Reply {
    api_error(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthentication",
        "不合法的access_token",
    )
}

fn api_forbidden() -> Reply {
    Reply::json(
        StatusCode::FORBIDDEN,
        &json!({
            "code": "Forbidden.AccessDenied.AccessTokenPermissionDenied",
            "requestid": request_id(),
            "message": "没有调用该接口的权限",
            "accessdenieddetail": { "requiredScopes": ["qyapi_chat_read"] },
        }),
    )
}

fn api_missing(param: &str) -> Reply {
    api_error(
        StatusCode::BAD_REQUEST,
        "MissingParameter",
        &format!("缺少参数 {param}"),
    )
}

/// Renders a fault that replaces the answer entirely.
fn fault_response(ep: Endpoint, fault: &Fault) -> HttpResponse {
    match fault {
        Fault::ErrCode {
            errcode,
            errmsg,
            sub_code,
        } => {
            let reply = if ep.is_openapi() {
                let code = sub_code.clone().unwrap_or_else(|| errcode.to_string());
                api_error(StatusCode::BAD_REQUEST, &code, errmsg)
            } else {
                let mut body = json!({ "errcode": errcode, "errmsg": errmsg });
                if let Some(sub) = sub_code {
                    body["sub_code"] = json!(sub);
                    body["sub_msg"] = json!(errmsg);
                }
                Reply::ok(&body)
            };
            reply.into_response()
        }
        Fault::HttpStatus(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            HttpResponse::build(status).finish()
        }
        Fault::Html => HttpResponse::Ok()
            .insert_header((
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ))
            .body(
                "<!DOCTYPE html>\n<html><head><title>系统繁忙</title></head>\
                 <body><h1>系统繁忙，请稍后再试</h1><hr><p>Tengine</p></body></html>\n",
            ),
        Fault::Garbage => {
            // A leading 0xFF byte makes the body invalid UTF-8 and therefore never JSON.
            let mut bytes = vec![0xFF, 0xFE];
            bytes.extend_from_slice(&rand::random::<[u8; 30]>());
            HttpResponse::Ok()
                .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
                .body(bytes)
        }
        // Delay and Truncated wrap the normal answer and are handled by `serve`.
        Fault::Delay(_) | Fault::Truncated => HttpResponse::InternalServerError().finish(),
    }
}

/// Counts the call, applies the next queued fault, and otherwise answers with `answer`.
///
/// `answer` runs (with its side effects) unless the fault replaces the answer.
async fn serve(state: &State, ep: Endpoint, answer: impl FnOnce() -> Reply) -> HttpResponse {
    state.count(ep);
    match state.faults.take(ep) {
        None => answer().into_response(),
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            answer().into_response()
        }
        Some(Fault::Truncated) => answer().truncated().into_response(),
        Some(fault) => {
            tracing::debug!(endpoint = %ep, ?fault, "sandbox: injecting fault");
            fault_response(ep, &fault)
        }
    }
}

fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn header_token(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
}

/// A string field of a JSON object body, if the body is JSON and the field non-empty.
fn body_field(body: &[u8], field: &str) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The scene-group flags: `"0"`/`"1"` strings (DingTalk's official example and TOP SDK
/// model) or numbers, as the group says ([`Group::string_flags`]).
fn management_options(g: &Group) -> Value {
    let flag = |v: i64| {
        if g.string_flags {
            json!(v.to_string())
        } else {
            json!(v)
        }
    };
    json!({
        "chat_banned_type": flag(g.chat_banned_type),
        "validation_type": flag(g.validation_type),
        "mention_all_authority": flag(g.mention_all_authority),
        "management_type": flag(g.management_type),
        "searchable": flag(g.searchable),
        "show_history_type": flag(g.show_history_type),
    })
}

/// The `/v1.0` endpoints answer JSON only to a request that asks for it: the Node SDK
/// notes that one of them answers XML without `Accept: application/json`, and the sandbox
/// holds every `/v1.0` caller to that (stricter than DingTalk is known to be).
fn wants_json(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(actix_web::http::header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        })
}

/// The answer to a `/v1.0` request without `Accept: application/json`.
fn xml_answer() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            CONTENT_TYPE,
            HeaderValue::from_static("application/xml;charset=UTF-8"),
        ))
        .body(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><code>NotAcceptable</code>\
             <message>no Accept: application/json</message></Response>\n",
        )
}

fn template_id(g: &Group) -> String {
    format!(
        "sandbox-tpl-{}",
        g.open_conversation_id.trim_end_matches('=')
    )
}

fn group_url(g: &Group) -> String {
    format!(
        "dingtalk://dingtalkclient/page/link?url=sandbox%2Fjoin%3Fcid%3D{}",
        g.open_conversation_id.trim_end_matches('=')
    )
}

// ---- handlers ---------------------------------------------------------------------

pub(crate) async fn gettoken(state: web::Data<State>, req: HttpRequest) -> HttpResponse {
    serve(&state, Endpoint::GetToken, || {
        let key = query_param(&req, "appkey");
        let secret = query_param(&req, "appsecret");
        if !state.credentials_match(key.as_deref(), secret.as_deref()) {
            tracing::debug!("sandbox: gettoken with wrong credentials");
            return oapi_error(40089, "不合法的appkey或appsecret");
        }
        let token = state.issue_token();
        Reply::ok(&json!({
            "errcode": 0,
            "access_token": token,
            "errmsg": "ok",
            "expires_in": state.token_expires_in,
        }))
    })
    .await
}

pub(crate) async fn chat_get(state: web::Data<State>, req: HttpRequest) -> HttpResponse {
    serve(&state, Endpoint::ChatGet, || {
        if !state.token_valid(query_param(&req, "access_token").as_deref()) {
            return oapi_error(40014, "不合法的access_token");
        }
        let Some(chatid) = query_param(&req, "chatid").filter(|c| !c.is_empty()) else {
            return oapi_error(49000, "需要参数chatid");
        };
        let Some(g) = state.group_by_chatid(&chatid) else {
            return oapi_error(40016, "无效的chatid");
        };
        if g.access != Access::Full {
            return oapi_error(43007, "没有调用权限");
        }
        let mut answer = json!({
            "errcode": 0,
            "errmsg": "ok",
            "chat_info": {
                "owner": g.owner,
                "mentionAllAuthority": g.mention_all_authority,
                "showHistoryType": g.show_history_type,
                "chatid": chatid,
                "conversationTag": 2,
                "validationType": g.validation_type,
                "useridlist": g.members,
                "icon": DEMO_ICON,
                "name": g.name,
                "searchable": g.searchable,
                "chatBannedType": g.chat_banned_type,
                "managementType": g.management_type,
                "status": g.status,
            },
        });
        // External members (the TOP SDK's `extidlist`); left out when there are none, as
        // in the documented example.
        if !g.ext_members.is_empty() {
            answer["chat_info"]["extidlist"] = json!(g.ext_members);
        }
        Reply::ok(&answer)
    })
    .await
}

pub(crate) async fn convert_to_open_conversation_id(
    state: web::Data<State>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    if !wants_json(&req) {
        state.count(Endpoint::ConvertToOpenConversationId);
        return xml_answer();
    }
    serve(&state, Endpoint::ConvertToOpenConversationId, || {
        if !state.token_valid(header_token(&req)) {
            return api_bad_token();
        }
        // The official SDK sends this call without a body; the sandbox refuses one, so a
        // client that sends `{}` shows.
        if !body.is_empty() {
            return api_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameter.Body",
                "该接口不接受请求体",
            );
        }
        let chatid = req.match_info().get("chatid").unwrap_or_default();
        let Some(g) = state.group_by_chatid(chatid) else {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalidParameter.chatId",
                "无效的chatid",
            );
        };
        if g.access != Access::Full {
            return api_forbidden();
        }
        Reply::ok(&json!({ "openConversationId": g.open_conversation_id }))
    })
    .await
}

/// The fixed success answer of `sendBySession`.
const SEND_OK: &[u8] = br#"{"errcode":0,"errmsg":"ok"}"#;

/// Checks the minimum DingTalk needs to render a message; returns the missing part.
fn missing_message_part(body: &Value) -> Option<&'static str> {
    match body.get("msgtype").and_then(Value::as_str) {
        None => Some("msgtype"),
        Some("text") => body
            .pointer("/text/content")
            .and_then(Value::as_str)
            .is_none()
            .then_some("text.content"),
        Some("markdown") => {
            if body
                .pointer("/markdown/title")
                .and_then(Value::as_str)
                .is_none()
            {
                Some("markdown.title")
            } else if body
                .pointer("/markdown/text")
                .and_then(Value::as_str)
                .is_none()
            {
                Some("markdown.text")
            } else {
                None
            }
        }
        Some(_) => None,
    }
}

pub(crate) async fn send_by_session(
    state: web::Data<State>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    serve(&state, Endpoint::SendBySession, || {
        let Some(session) = query_param(&req, "session").filter(|s| !s.is_empty()) else {
            return oapi_error(300001, "session 不存在");
        };
        if state.session_ended(&session) {
            return oapi_error(300001, "session 不存在");
        }
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return oapi_error(40035, "缺少参数 json");
        };
        if !body.is_object() {
            return oapi_error(40035, "缺少参数 json");
        }
        if let Some(part) = missing_message_part(&body) {
            return oapi_error(40035, &format!("缺少参数 {part}"));
        }
        state.record(SentMessage {
            to: session.clone(),
            session,
            via: Endpoint::SendBySession,
            body,
            at: std::time::Instant::now(),
        });
        Reply {
            status: StatusCode::OK,
            body: Bytes::from_static(SEND_OK),
        }
    })
    .await
}

pub(crate) async fn scene_group_get(
    state: web::Data<State>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    serve(&state, Endpoint::SceneGroupGet, || {
        if !state.token_valid(query_param(&req, "access_token").as_deref()) {
            return oapi_error(40014, "不合法的access_token");
        }
        let Some(cid) = body_field(&body, "open_conversation_id") else {
            return oapi_error(40035, "无效的请求参数");
        };
        let group = state.group(&cid);
        if group
            .as_ref()
            .is_some_and(|g| g.access == Access::NoPermission)
        {
            return oapi_no_permission();
        }
        let Some(g) = group.filter(|g| g.scene_group) else {
            return oapi_error(400020, "无访问权限");
        };
        let mut answer = json!({
            "errcode": 0,
            "errmsg": "ok",
            "success": true,
            "result": {
                "open_conversation_id": g.open_conversation_id,
                "title": g.name,
                "owner_staff_id": g.owner,
                "icon": DEMO_ICON,
                "template_id": template_id(&g),
                "sub_admin_staff_ids": [],
                "group_url": group_url(&g),
                "management_options": management_options(&g),
            },
        });
        if g.reports_member_amount {
            answer["result"]["member_amount"] = json!(g.member_count());
        }
        Reply::ok(&answer)
    })
    .await
}

pub(crate) async fn scene_group_query_detail(
    state: web::Data<State>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    if !wants_json(&req) {
        state.count(Endpoint::SceneGroupQueryDetail);
        return xml_answer();
    }
    serve(&state, Endpoint::SceneGroupQueryDetail, || {
        if !state.token_valid(header_token(&req)) {
            return api_bad_token();
        }
        let Some(cid) = body_field(&body, "open_conversation_id") else {
            return api_missing("open_conversation_id");
        };
        let group = state.group(&cid);
        if group
            .as_ref()
            .is_some_and(|g| g.access == Access::NoPermission)
        {
            return api_forbidden();
        }
        let Some(g) = group.filter(|g| g.scene_group) else {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalidParameter.openConversationId",
                "不是场景群",
            );
        };
        Reply::ok(&json!({
            "owner_user_id": g.owner,
            "title": g.name,
            "member_amount": g.member_count(),
            "status": g.status,
            "icon": DEMO_ICON,
            "template_id": template_id(&g),
            "group_url": group_url(&g),
            "sub_admin_staff_ids": [],
            "management_options": management_options(&g),
        }))
    })
    .await
}

pub(crate) async fn group_base_infos(
    state: web::Data<State>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    if !wants_json(&req) {
        state.count(Endpoint::GroupBaseInfos);
        return xml_answer();
    }
    serve(&state, Endpoint::GroupBaseInfos, || {
        if !state.token_valid(header_token(&req)) {
            return api_bad_token();
        }
        let Some(cid) = body_field(&body, "openConversationId") else {
            return api_missing("openConversationId");
        };
        let Some(g) = state.group(&cid) else {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalidParameter.openConversationId",
                "无效的openConversationId",
            );
        };
        if g.access == Access::NoPermission {
            return api_forbidden();
        }
        Reply::ok(&json!({
            "success": true,
            "result": {
                "openConversationId": g.open_conversation_id,
                "title": g.name,
                "memberCount": g.member_count(),
                "icon": DEMO_ICON,
                "tag": "2",
            },
        }))
    })
    .await
}

pub(crate) async fn user_get(
    state: web::Data<State>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    serve(&state, Endpoint::UserGet, || {
        if !state.token_valid(query_param(&req, "access_token").as_deref()) {
            return oapi_error(40014, "不合法的access_token");
        }
        let Some(userid) = body_field(&body, "userid") else {
            return oapi_error(40035, "缺少参数 userid");
        };
        let Some(user) = state.user(&userid) else {
            return oapi_error(60121, "找不到该用户");
        };
        Reply::ok(&json!({
            "errcode": 0,
            "errmsg": "ok",
            "result": { "userid": user.userid, "name": user.name },
        }))
    })
    .await
}

/// Longest `msgParam` the robot send APIs take, in bytes.
const MAX_MSG_PARAM: usize = 15_000;

/// The answer of a robot send API to an app without `qyapi_robot_sendmsg`.
fn api_robot_forbidden() -> Reply {
    Reply::json(
        StatusCode::FORBIDDEN,
        &json!({
            "code": "Forbidden.AccessDenied.AccessTokenPermissionDenied",
            "requestid": request_id(),
            "message": "没有调用该接口的权限",
            "accessdenieddetail": { "requiredScopes": ["qyapi_robot_sendmsg"] },
        }),
    )
}

fn invalid_parameter(name: &str, message: &str) -> Reply {
    api_error(
        StatusCode::BAD_REQUEST,
        &format!("invalidParameter.{name}"),
        message,
    )
}

/// The checks both robot send APIs make, in the order the gateway makes them: token,
/// permission, then the body's `robotCode`, `msgKey` and `msgParam`. Returns the body.
fn robot_send_request(state: &State, req: &HttpRequest, body: &[u8]) -> Result<Value, Reply> {
    if !state.token_valid(header_token(req)) {
        return Err(api_bad_token());
    }
    if state.robot_send_denied() {
        return Err(api_robot_forbidden());
    }
    let body: Value = serde_json::from_slice(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| api_missing("body"))?;
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match text("robotCode") {
        None => return Err(api_missing("robotCode")),
        // An internal app's robot has the app's AppKey as its code.
        Some(code) if code != state.app_key => {
            return Err(invalid_parameter("robotCode", "robot 不存在"));
        }
        Some(_) => {}
    }
    let required = match text("msgKey") {
        None => return Err(api_missing("msgKey")),
        Some("sampleMarkdown") => &["title", "text"][..],
        Some("sampleText") => &["content"][..],
        Some(_) => return Err(invalid_parameter("msgKey", "不支持的消息模板")),
    };
    let Some(param) = text("msgParam") else {
        return Err(api_missing("msgParam"));
    };
    if param.len() > MAX_MSG_PARAM {
        return Err(invalid_parameter("msgParam", "msgParam 超过 15000 字节"));
    }
    let param: Value = serde_json::from_str(param)
        .map_err(|_| invalid_parameter("msgParam", "msgParam 不是 JSON"))?;
    if required
        .iter()
        .any(|k| param.get(k).and_then(Value::as_str).is_none())
    {
        return Err(invalid_parameter("msgParam", "msgParam 缺少字段"));
    }
    Ok(body)
}

fn process_query_key() -> String {
    format!("sandbox-pqk-{:016x}", rand::random::<u64>())
}

pub(crate) async fn robot_group_send(
    state: web::Data<State>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    if !wants_json(&req) {
        state.count(Endpoint::RobotGroupSend);
        return xml_answer();
    }
    serve(&state, Endpoint::RobotGroupSend, || {
        let body = match robot_send_request(&state, &req, &body) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let Some(cid) = body
            .get("openConversationId")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
        else {
            return api_missing("openConversationId");
        };
        if state.group(&cid).is_none() {
            return invalid_parameter("openConversationId", "无效的openConversationId");
        }
        state.record(SentMessage {
            session: String::new(),
            via: Endpoint::RobotGroupSend,
            to: cid,
            body,
            at: std::time::Instant::now(),
        });
        Reply::ok(&json!({ "processQueryKey": process_query_key() }))
    })
    .await
}

pub(crate) async fn robot_oto_send(
    state: web::Data<State>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    if !wants_json(&req) {
        state.count(Endpoint::RobotOtoSend);
        return xml_answer();
    }
    serve(&state, Endpoint::RobotOtoSend, || {
        let body = match robot_send_request(&state, &req, &body) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let ids: Vec<String> = body
            .get("userIds")
            .and_then(Value::as_array)
            .map(|ids| {
                ids.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if ids.is_empty() {
            return api_missing("userIds");
        }
        let (known, invalid): (Vec<String>, Vec<String>) =
            ids.into_iter().partition(|id| state.user(id).is_some());
        let (limited, known): (Vec<String>, Vec<String>) =
            known.into_iter().partition(|id| state.flow_controlled(id));
        if !known.is_empty() {
            state.record(SentMessage {
                session: String::new(),
                via: Endpoint::RobotOtoSend,
                to: known.join(","),
                body,
                at: std::time::Instant::now(),
            });
        }
        Reply::ok(&json!({
            "processQueryKey": process_query_key(),
            "invalidStaffIdList": invalid,
            "flowControlledStaffIdList": limited,
            "filteredStaffIdList": [],
        }))
    })
    .await
}

/// Anything else: DingTalk's "bad URI" answer with HTTP 404.
pub(crate) async fn not_found() -> HttpResponse {
    Reply::json(
        StatusCode::NOT_FOUND,
        &json!({ "errcode": 404, "errmsg": "请求的URI地址不存在" }),
    )
    .into_response()
}

/// Registers every fake DingTalk route.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/gettoken", web::get().to(gettoken))
        .route("/chat/get", web::get().to(chat_get))
        .route(
            "/v1.0/im/chat/{chatid}/convertToOpenConversationId",
            web::post().to(convert_to_open_conversation_id),
        )
        .route("/robot/sendBySession", web::post().to(send_by_session))
        .route(
            "/topapi/im/chat/scenegroup/get",
            web::post().to(scene_group_get),
        )
        .route(
            "/v1.0/im/sceneGroups/queryDetail",
            web::post().to(scene_group_query_detail),
        )
        .route(
            "/v1.0/im/groups/baseInfos/query",
            web::post().to(group_base_infos),
        )
        .route("/topapi/v2/user/get", web::post().to(user_get))
        .route(
            "/v1.0/robot/groupMessages/send",
            web::post().to(robot_group_send),
        )
        .route(
            "/v1.0/robot/oToMessages/batchSend",
            web::post().to(robot_oto_send),
        );
}
