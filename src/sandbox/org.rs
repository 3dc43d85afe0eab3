//! The fake organisation the sandbox serves: one app, its groups and its users.
//!
//! Everything here is plain data. [`Org::demo`] is the fixture used by `dingbot demo`
//! and by the tests; [`Org::with_generated_groups`] adds many look-alike groups for
//! benchmarks.

/// Media id DingTalk returns as a group icon; the same value appears in the fixtures.
pub(crate) const DEMO_ICON: &str = "@lADPDfJ6Q7LLejDNAljNAlg";

/// The tenant the sandbox pretends to be: credentials of one internal app plus the
/// groups and users that app can see.
#[derive(Clone, Debug)]
pub struct Org {
    /// AppKey accepted by `/gettoken`.
    pub app_key: String,
    /// AppSecret accepted by `/gettoken`. The sandbox never logs it.
    pub app_secret: String,
    /// Lifetime of an issued token in seconds, reported as `expires_in`. A token is
    /// renewed by every `/gettoken` call made while it is still valid.
    pub token_expires_in: i64,
    /// Groups, looked up by `open_conversation_id` and, when set, by `chatid`.
    pub groups: Vec<Group>,
    /// Users answered by `/topapi/v2/user/get`.
    pub users: Vec<User>,
}

/// One group chat as the fake server knows it.
#[derive(Clone, Debug)]
pub struct Group {
    /// Legacy chatid (`chat…`). Only groups the app "created" have one, so only those
    /// can be read with `chat/get` and converted with `convertToOpenConversationId`.
    pub chatid: Option<String>,
    /// The `cid…` id every newer API and every robot callback uses.
    pub open_conversation_id: String,
    /// Group title.
    pub name: String,
    /// Userid of the owner.
    pub owner: String,
    /// Userids of the staff members.
    pub members: Vec<String>,
    /// External members (外部联系人), served as `chat/get`'s `extidlist`; the member count
    /// is both lists together.
    pub ext_members: Vec<String>,
    /// 0 = anyone may speak, 1 = everyone muted.
    pub chat_banned_type: i64,
    /// 1 = the group can be found by search.
    pub searchable: i64,
    /// 1 = joining needs approval.
    pub validation_type: i64,
    /// 1 = only owner and admins may @all.
    pub mention_all_authority: i64,
    /// 1 = only owner and admins may manage the group.
    pub management_type: i64,
    /// 1 = new members can read the history.
    pub show_history_type: i64,
    /// 1 = normal, 2 = dissolved.
    pub status: i64,
    /// Whether the scene-group APIs answer for this group (it uses a template of this app).
    pub scene_group: bool,
    /// Whether the scene-group APIs send the six flags as `"0"`/`"1"` strings, as DingTalk's
    /// official example and TOP SDK model do (true for scene groups unless
    /// [`Group::with_integer_flags`]), or as numbers, as some other sources show.
    pub string_flags: bool,
    /// Whether `scenegroup/get` includes `member_amount` (the official example does; the
    /// SDK's field list does not name it, so groups vary).
    pub reports_member_amount: bool,
    /// What the app is allowed to read about this group.
    pub access: Access,
}

/// What the app may read for one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Every API answers normally.
    Full,
    /// `chat/get` answers 43007 and `convertToOpenConversationId` answers HTTP 403;
    /// the other APIs answer normally.
    NoChatRead,
    /// Every group API denies access.
    NoPermission,
}

/// One member of the organisation.
#[derive(Clone, Debug)]
pub struct User {
    /// Org-scoped user id (`senderStaffId` in callbacks).
    pub userid: String,
    /// Display name.
    pub name: String,
}

impl User {
    /// Builds a user from its id and display name.
    pub fn new(userid: impl Into<String>, name: impl Into<String>) -> User {
        User {
            userid: userid.into(),
            name: name.into(),
        }
    }
}

impl Group {
    /// A normal, readable, non-scene group without chatid and with every flag at 0.
    pub fn new(
        open_conversation_id: impl Into<String>,
        name: impl Into<String>,
        owner: impl Into<String>,
        members: Vec<String>,
    ) -> Group {
        Group {
            chatid: None,
            open_conversation_id: open_conversation_id.into(),
            name: name.into(),
            owner: owner.into(),
            members,
            ext_members: Vec::new(),
            chat_banned_type: 0,
            searchable: 0,
            validation_type: 0,
            mention_all_authority: 0,
            management_type: 0,
            show_history_type: 0,
            status: 1,
            scene_group: false,
            string_flags: false,
            reports_member_amount: true,
            access: Access::Full,
        }
    }

    /// Members of the group: staff and external.
    pub fn member_count(&self) -> usize {
        self.members.len() + self.ext_members.len()
    }

    /// Adds external members (`extidlist`).
    #[must_use]
    pub fn with_ext_members(mut self, ext: Vec<String>) -> Group {
        self.ext_members = ext;
        self
    }

    /// The scene-group APIs send this group's flags as numbers instead of strings.
    #[must_use]
    pub fn with_integer_flags(mut self) -> Group {
        self.string_flags = false;
        self
    }

    /// `scenegroup/get` leaves `member_amount` out for this group.
    #[must_use]
    pub fn without_member_amount(mut self) -> Group {
        self.reports_member_amount = false;
        self
    }

    /// Sets the legacy chatid.
    #[must_use]
    pub fn with_chatid(mut self, chatid: impl Into<String>) -> Group {
        self.chatid = Some(chatid.into());
        self
    }

    /// Sets the access level.
    #[must_use]
    pub fn with_access(mut self, access: Access) -> Group {
        self.access = access;
        self
    }

    /// Marks the group as a scene group of this app (flags served as strings).
    #[must_use]
    pub fn as_scene_group(mut self) -> Group {
        self.scene_group = true;
        self.string_flags = true;
        self
    }

    /// Sets the six policy flags, in the order chat_banned_type, searchable,
    /// validation_type, mention_all_authority, management_type, show_history_type.
    #[must_use]
    pub fn with_flags(mut self, flags: [i64; 6]) -> Group {
        let [
            banned,
            searchable,
            validation,
            mention_all,
            management,
            history,
        ] = flags;
        self.chat_banned_type = banned;
        self.searchable = searchable;
        self.validation_type = validation;
        self.mention_all_authority = mention_all;
        self.management_type = management;
        self.show_history_type = history;
        self
    }
}

const SURNAMES: [&str; 12] = [
    "李", "王", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙",
];
const GIVEN_NAMES: [&str; 16] = [
    "子涵", "浩然", "雨桐", "思远", "欣怡", "俊杰", "梓萱", "宇航", "诗琪", "嘉怡", "子轩", "一诺",
    "晨阳", "语嫣", "博文", "梦琪",
];

/// Number of generated developer accounts (`dev001` …) in the demo org.
const DEV_COUNT: usize = 35;

fn dev_id(i: usize) -> String {
    format!("dev{i:03}")
}

/// A Chinese name for developer `i`; unique for `i < 48`.
fn dev_name(i: usize) -> String {
    let surname = SURNAMES.get(i % SURNAMES.len()).copied().unwrap_or("李");
    let given = GIVEN_NAMES
        .get(i % GIVEN_NAMES.len())
        .copied()
        .unwrap_or("明");
    format!("{surname}{given}")
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

impl Org {
    /// An org with the given credentials, a 7200 s token lifetime and nothing else.
    pub fn new(app_key: impl Into<String>, app_secret: impl Into<String>) -> Org {
        Org {
            app_key: app_key.into(),
            app_secret: app_secret.into(),
            token_expires_in: 7200,
            groups: Vec::new(),
            users: Vec::new(),
        }
    }

    /// The demo tenant (app key `dingdemoappkey`, secret `demo-app-secret-0123456789abcdef`).
    ///
    /// | openConversationId | chatid | name | access | notes |
    /// |---|---|---|---|---|
    /// | `cidBound0001==` | `chatbound0001` | 研发部全员群 | Full | 37 members, mixed flags |
    /// | `cidScene0001==` | – | 项目群·发布 | Full | scene group: string flags, `member_amount` |
    /// | `cidScene0002==` | – | 项目群·测试 | Full | scene group: integer flags, no `member_amount` |
    /// | `cidMixed0001==` | `chatmixed0001` | 客户对接群 | Full | 3 staff + 2 external members (`extidlist`) |
    /// | `cidPlain0001==` | – | 午餐拼单群 | Full | plain group |
    /// | `cidDenied001==` | – | 外部协作群 | NoPermission | |
    /// | `cidAsXSBLnA==` | `chate39f540dxxxx` | 全员群 | Full | matches `chat_get_ok.json` |
    /// | `cidNoRead001==` | `chatnoread0001` | 财务审批群 | NoChatRead | |
    /// | `cidGone0001==` | `chatgone0001` | 旧版本发布群 | Full | dissolved (status 2) |
    pub fn demo() -> Org {
        let mut users = vec![
            User::new("manager4220", "王建国"),
            User::new("user123", "张小明"),
            User::new("pm0815", "陈思远"),
            User::new("fin0007", "周婷"),
            User::new("ext9001", "赵敏"),
            User::new("ext9002", "孙悦"),
        ];
        users.extend((1..=DEV_COUNT).map(|i| User::new(dev_id(i), dev_name(i))));

        let mut bound_members = ids(&["manager4220", "user123"]);
        bound_members.extend((1..=DEV_COUNT).map(dev_id));

        let mut scene_members = ids(&["pm0815", "manager4220", "user123"]);
        scene_members.extend((1..=5).map(dev_id));

        let mut plain_members = ids(&["user123", "manager4220"]);
        plain_members.extend((6..=10).map(dev_id));

        let mut finance_members = ids(&["fin0007", "manager4220"]);
        finance_members.extend((11..=14).map(dev_id));

        let mut gone_members = ids(&["manager4220"]);
        gone_members.extend((15..=17).map(dev_id));

        let groups = vec![
            Group::new(
                "cidBound0001==",
                "研发部全员群",
                "manager4220",
                bound_members,
            )
            .with_chatid("chatbound0001")
            .with_flags([1, 0, 1, 1, 0, 1]),
            Group::new("cidScene0001==", "项目群·发布", "pm0815", scene_members)
                .as_scene_group()
                .with_flags([0, 1, 1, 0, 1, 0]),
            Group::new(
                "cidScene0002==",
                "项目群·测试",
                "pm0815",
                ids(&["pm0815", "user123", "dev001", "dev002"]),
            )
            .as_scene_group()
            .with_integer_flags()
            .without_member_amount()
            .with_flags([1, 0, 0, 1, 0, 1]),
            Group::new("cidPlain0001==", "午餐拼单群", "user123", plain_members),
            Group::new(
                "cidMixed0001==",
                "客户对接群",
                "manager4220",
                ids(&["manager4220", "user123", "pm0815"]),
            )
            .with_chatid("chatmixed0001")
            .with_ext_members(ids(&["ext9001", "ext9002"])),
            Group::new(
                "cidDenied001==",
                "外部协作群",
                "ext9001",
                ids(&["ext9001", "ext9002", "user123"]),
            )
            .with_access(Access::NoPermission),
            Group::new(
                "cidAsXSBLnA==",
                "全员群",
                "manager4220",
                ids(&["user123", "manager4220"]),
            )
            .with_chatid("chate39f540dxxxx"),
            Group::new("cidNoRead001==", "财务审批群", "fin0007", finance_members)
                .with_chatid("chatnoread0001")
                .with_access(Access::NoChatRead)
                .with_flags([0, 0, 1, 1, 1, 0]),
            Group {
                status: 2,
                ..Group::new("cidGone0001==", "旧版本发布群", "manager4220", gone_members)
                    .with_chatid("chatgone0001")
            },
        ];

        Org {
            app_key: "dingdemoappkey".to_owned(),
            app_secret: "demo-app-secret-0123456789abcdef".to_owned(),
            token_expires_in: 7200,
            groups,
            users,
        }
    }

    /// [`Org::demo`] plus `n` readable groups with a chatid, for benchmarks:
    /// `cidGen{i}==` / `chatgen{i}` named `压测群{i}` for `i` in `0..n`, owned by
    /// `manager4220`, 10 members each, flags derived from the bits of `i`.
    pub fn with_generated_groups(n: usize) -> Org {
        let mut org = Org::demo();
        let mut members = ids(&["manager4220", "user123"]);
        members.extend((1..=8).map(dev_id));
        org.groups.reserve(n);
        for i in 0..n {
            let bit = |k: usize| i64::from((i >> k) & 1 == 1);
            org.groups.push(
                Group::new(
                    format!("cidGen{i}=="),
                    format!("压测群{i}"),
                    "manager4220",
                    members.clone(),
                )
                .with_chatid(format!("chatgen{i}"))
                .with_flags([bit(0), bit(1), bit(2), bit(3), bit(4), bit(5)]),
            );
        }
        org
    }

    /// The group with this openConversationId, if any.
    pub fn group(&self, open_conversation_id: &str) -> Option<&Group> {
        self.groups
            .iter()
            .find(|g| g.open_conversation_id == open_conversation_id)
    }

    /// The display name of a user, if known.
    pub fn user_name(&self, userid: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|u| u.userid == userid)
            .map(|u| u.name.as_str())
    }
}
