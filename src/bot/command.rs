//! Command parsing: pure text in, [`Command`] out.
//!
//! DingTalk strips the robot's own @-mention but leaves the whitespace around it, and
//! users may @-mention other people before the command. We trim, drop leading `@name`
//! tokens, fold full-width slashes, and match the first word case-insensitively.

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/info`, `群信息`: summarise this group.
    Info,
    /// `/help`, `帮助`, or nothing after the mention.
    Help,
    /// `/bind <chatid>`, `绑定 <chatid>`: attach the group's chatid. Holds the next word (at
    /// most [`MAX_CHATID_WORD`] characters; empty when none was given).
    Bind(String),
    /// Anything else; holds the first word (at most 32 characters) to quote back.
    Unknown(String),
}

impl Command {
    /// Stable name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Info => "info",
            Command::Help => "help",
            Command::Bind(_) => "bind",
            Command::Unknown(_) => "unknown",
        }
    }
}

/// Longest word quoted back in the "unknown command" reply.
const MAX_QUOTED: usize = 32;

/// Longest argument kept for `/bind` (longer than any chatid, so an overlong one is still
/// recognisable as invalid).
pub const MAX_CHATID_WORD: usize = 129;

/// The words of `text`: split at whitespace and control characters.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
}

/// Whether a word is an @-mention (DingTalk leaves other people's mentions in the text).
fn is_mention(word: &str) -> bool {
    word.starts_with('@') || word.starts_with('＠')
}

/// The commands the robot knows, in the order `/help` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// Summarise this group.
    Info,
    /// Attach the group's chatid.
    Bind,
    /// List the commands.
    Help,
}

/// How a command is typed and how `/help` presents it. Adding a command is a [`Verb`], its
/// entry here, its template and its arm in `Bot::answer` (the compiler asks for the last);
/// the help text follows from this table.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Spec {
    /// The command.
    pub verb: Verb,
    /// What the user may type as the first word, lowercase (`／` is read as `/`).
    #[serde(skip)]
    pub words: &'static [&'static str],
    /// The command as `/help` shows it, with its argument.
    pub usage: &'static str,
    /// The Chinese alias `/help` shows next to it (zh only).
    pub alias: Option<&'static str>,
    /// Only group admins (or listed userids) may use it.
    pub admin_only: bool,
    /// What it does, in Chinese.
    pub about_zh: &'static str,
    /// What it does, in English.
    pub about_en: &'static str,
}

/// Every command.
pub const COMMANDS: [Spec; 3] = [
    Spec {
        verb: Verb::Info,
        words: &["/info", "群信息", "/群信息"],
        usage: "/info",
        alias: Some("群信息"),
        admin_only: false,
        about_zh: "查看本群的名称、群主、人数和群设置",
        about_en: "this group's name, owner, member count and settings",
    },
    Spec {
        verb: Verb::Bind,
        words: &["/bind", "绑定", "/绑定"],
        usage: "/bind chatid",
        alias: None,
        admin_only: true,
        about_zh: "把本群的 chatid 告诉我，之后 /info 能显示完整信息",
        about_en: "tell me this group's chatid so /info can show everything",
    },
    Spec {
        verb: Verb::Help,
        words: &["/help", "帮助", "/帮助", "/?", "?", "？"],
        usage: "/help",
        alias: Some("帮助"),
        admin_only: false,
        about_zh: "显示这段说明",
        about_en: "show this help",
    },
];

fn verb(word: &str) -> Option<Verb> {
    let word: String = word
        .chars()
        .map(|c| if c == '／' { '/' } else { c })
        .flat_map(char::to_lowercase)
        .collect();
    COMMANDS
        .iter()
        .find(|spec| spec.words.contains(&word.as_str()))
        .map(|spec| spec.verb)
}

/// Parses the text of a message.
///
/// The command is taken from the first line whose first word (after @-mentions) is one:
/// a rich-text message puts each line in a segment of its own, so a greeting or a picture
/// may come first, and `/bind`'s chatid may be on the next line. Without any, the first
/// word of the whole text is quoted back as unknown (or it is a bare mention: help).
pub fn parse(text: &str) -> Command {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let line_end = offset + line.len();
        let mut first = None;
        let mut pos = offset;
        for w in words(line) {
            if !is_mention(w) {
                // `w` is a subslice of `line`: its end within `text`.
                let start = w.as_ptr() as usize - line.as_ptr() as usize;
                pos = offset + start + w.len();
                first = Some(w);
                break;
            }
        }
        if let Some(verb) = first.and_then(verb) {
            // Arguments may continue on the following lines.
            let rest = text.get(pos..).unwrap_or_default();
            return match verb {
                Verb::Info => Command::Info,
                Verb::Help => Command::Help,
                Verb::Bind => Command::Bind(
                    words(rest)
                        .next()
                        .map(|w| w.chars().take(MAX_CHATID_WORD).collect())
                        .unwrap_or_default(),
                ),
            };
        }
        offset = line_end;
    }
    match words(text).find(|w| !is_mention(w)) {
        None => Command::Help,
        Some(first) => Command::Unknown(first.chars().take(MAX_QUOTED).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_forms() {
        assert_eq!(parse(" /info"), Command::Info);
        assert_eq!(parse("  /INFO  "), Command::Info);
        assert_eq!(parse("群信息"), Command::Info);
        assert_eq!(parse("@张三 @李四 /info please"), Command::Info);
        assert_eq!(parse("／Info"), Command::Info);
        assert_eq!(parse("/help"), Command::Help);
        assert_eq!(parse("帮助"), Command::Help);
        assert_eq!(parse(""), Command::Help);
        assert_eq!(parse("   \n "), Command::Help);
        assert_eq!(parse("@robot"), Command::Help);
        assert_eq!(parse("hello DingTalk!"), Command::Unknown("hello".into()));
        assert_eq!(
            parse("/information"),
            Command::Unknown("/information".into())
        );
        assert_eq!(
            parse("/bind chatbound0001"),
            Command::Bind("chatbound0001".into())
        );
        assert_eq!(
            parse("@张三 ／BIND  chatX  extra"),
            Command::Bind("chatX".into())
        );
        assert_eq!(parse("绑定 chatY"), Command::Bind("chatY".into()));
        assert_eq!(parse("/bind"), Command::Bind(String::new()));
        assert_eq!(parse("/binding"), Command::Unknown("/binding".into()));
    }

    #[test]
    fn the_first_line_with_a_command_wins() {
        // Rich text: /info, a picture, 谢谢 arrive as lines.
        assert_eq!(parse("/info\n谢谢"), Command::Info);
        assert_eq!(parse("你好\n/info"), Command::Info);
        assert_eq!(parse("@张三\n\n 群信息 \n/help"), Command::Info);
        // The chatid on the next line.
        assert_eq!(parse("/bind\nchat0001"), Command::Bind("chat0001".into()));
        assert_eq!(
            parse("/bind\n\n\nchat0001"),
            Command::Bind("chat0001".into())
        );
        // Glued text is still not a command; nothing known quotes the first word.
        assert_eq!(parse("/info谢谢"), Command::Unknown("/info谢谢".into()));
        assert_eq!(parse("你好\n谢谢"), Command::Unknown("你好".into()));
        assert_eq!(parse("@a\n@b\n"), Command::Help);
    }

    #[test]
    fn unknown_word_is_truncated() {
        let long = "x".repeat(100);
        assert_eq!(parse(&long), Command::Unknown("x".repeat(32)));
    }

    proptest::proptest! {
        #[test]
        fn info_survives_mentions_whitespace_and_case(
            mentions in proptest::collection::vec("@[a-zA-Z0-9_\u{4e00}-\u{9fa5}]{1,8}", 0..4),
            pad in "[ \t\n]{0,4}",
            upper in proptest::bool::ANY,
            tail in "( [a-z]{1,6}){0,2}",
        ) {
            let cmd = if upper { "/INFO" } else { "/info" };
            let text = format!("{pad}{} {cmd}{tail}{pad}", mentions.join(" "));
            proptest::prop_assert_eq!(parse(&text), Command::Info);
        }

        #[test]
        fn any_text_parses_without_panicking(text in ".{0,200}") {
            match parse(&text) {
                Command::Unknown(word) => {
                    proptest::prop_assert!(word.chars().count() <= MAX_QUOTED);
                    proptest::prop_assert!(!word.is_empty());
                }
                Command::Bind(arg) => {
                    proptest::prop_assert!(arg.chars().count() <= MAX_CHATID_WORD);
                    proptest::prop_assert!(!arg.chars().any(char::is_whitespace));
                }
                Command::Info | Command::Help => {}
            }
        }

        #[test]
        fn bind_keeps_its_argument(chatid in "chat[0-9a-f]{1,40}", pad in "[ \t]{1,3}") {
            let text = format!("{pad}/bind{pad}{chatid}{pad}");
            proptest::prop_assert_eq!(parse(&text), Command::Bind(chatid));
        }
    }
}
