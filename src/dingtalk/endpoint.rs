//! The DingTalk APIs dingbot calls, named once: the API client, its retries and errors,
//! the metrics labels and the sandbox (which serves them) all use [`Endpoint`].

use std::fmt;
use std::str::FromStr;

/// One DingTalk API dingbot calls (and the sandbox serves).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /gettoken`
    GetToken,
    /// `GET /chat/get`
    ChatGet,
    /// `POST /v1.0/im/chat/{chatid}/convertToOpenConversationId`
    ConvertToOpenConversationId,
    /// `POST /robot/sendBySession`
    SendBySession,
    /// `POST /topapi/im/chat/scenegroup/get`
    SceneGroupGet,
    /// `POST /v1.0/im/sceneGroups/queryDetail`
    SceneGroupQueryDetail,
    /// `POST /v1.0/im/groups/baseInfos/query`
    GroupBaseInfos,
    /// `POST /topapi/v2/user/get`
    UserGet,
    /// `POST /v1.0/robot/groupMessages/send` (the reply fallback in groups)
    RobotGroupSend,
    /// `POST /v1.0/robot/oToMessages/batchSend` (the reply fallback in 1:1 chats)
    RobotOtoSend,
}

impl Endpoint {
    /// Every endpoint, in a fixed order.
    pub const ALL: [Endpoint; 10] = [
        Endpoint::GetToken,
        Endpoint::ChatGet,
        Endpoint::ConvertToOpenConversationId,
        Endpoint::SendBySession,
        Endpoint::SceneGroupGet,
        Endpoint::SceneGroupQueryDetail,
        Endpoint::GroupBaseInfos,
        Endpoint::UserGet,
        Endpoint::RobotGroupSend,
        Endpoint::RobotOtoSend,
    ];

    /// Position in [`Endpoint::ALL`]; used to index per-endpoint tables.
    pub fn index(self) -> usize {
        match self {
            Endpoint::GetToken => 0,
            Endpoint::ChatGet => 1,
            Endpoint::ConvertToOpenConversationId => 2,
            Endpoint::SendBySession => 3,
            Endpoint::SceneGroupGet => 4,
            Endpoint::SceneGroupQueryDetail => 5,
            Endpoint::GroupBaseInfos => 6,
            Endpoint::UserGet => 7,
            Endpoint::RobotGroupSend => 8,
            Endpoint::RobotOtoSend => 9,
        }
    }

    /// The label of metrics (`dingbot_api_calls_total{endpoint}`) and error texts: the
    /// API's path as DingTalk documents it.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::GetToken => "gettoken",
            Endpoint::ChatGet => "chat/get",
            Endpoint::ConvertToOpenConversationId => "convertToOpenConversationId",
            Endpoint::SendBySession => "sendBySession",
            Endpoint::SceneGroupGet => "scenegroup/get",
            Endpoint::SceneGroupQueryDetail => "sceneGroups/queryDetail",
            Endpoint::GroupBaseInfos => "groups/baseInfos/query",
            Endpoint::UserGet => "user/get",
            Endpoint::RobotGroupSend => "groupMessages/send",
            Endpoint::RobotOtoSend => "oToMessages/batchSend",
        }
    }

    /// The snake_case name used by the sandbox's admin API (`/_sandbox/stats`, `/_sandbox/faults`).
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::GetToken => "gettoken",
            Endpoint::ChatGet => "chat_get",
            Endpoint::ConvertToOpenConversationId => "convert_to_open_conversation_id",
            Endpoint::SendBySession => "send_by_session",
            Endpoint::SceneGroupGet => "scene_group_get",
            Endpoint::SceneGroupQueryDetail => "scene_group_query_detail",
            Endpoint::GroupBaseInfos => "group_base_infos",
            Endpoint::UserGet => "user_get",
            Endpoint::RobotGroupSend => "robot_group_send",
            Endpoint::RobotOtoSend => "robot_oto_send",
        }
    }

    /// Whether this endpoint lives on the new `api.dingtalk.com` host, which reports
    /// errors with HTTP status codes and `{"code","message"}` bodies instead of `errcode`.
    pub fn is_openapi(self) -> bool {
        matches!(
            self,
            Endpoint::ConvertToOpenConversationId
                | Endpoint::SceneGroupQueryDetail
                | Endpoint::GroupBaseInfos
                | Endpoint::RobotGroupSend
                | Endpoint::RobotOtoSend
        )
    }

    /// Whether this endpoint posts a message (the robot send APIs): never repeated unless
    /// DingTalk surely did not take it.
    pub fn sends_message(self) -> bool {
        matches!(
            self,
            Endpoint::SendBySession | Endpoint::RobotGroupSend | Endpoint::RobotOtoSend
        )
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Returned when an admin request names an endpoint that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("unknown sandbox endpoint {0:?}")]
pub struct UnknownEndpoint(pub String);

impl FromStr for Endpoint {
    type Err = UnknownEndpoint;

    fn from_str(s: &str) -> Result<Endpoint, UnknownEndpoint> {
        Endpoint::ALL
            .into_iter()
            .find(|ep| ep.name() == s)
            .ok_or_else(|| UnknownEndpoint(s.to_owned()))
    }
}
