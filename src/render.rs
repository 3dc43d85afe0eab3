//! Reply templates: embedded defaults plus admin overrides, rendered to DingTalk markdown.
//!
//! Templates live in `templates/<language>/<name>.md.j2` and are compiled into the binary;
//! `bot.templates_dir` may hold files with the same relative paths, loaded and compiled
//! once at startup (a syntax error stops startup). Every value interpolated into a template
//! is escaped for markdown and flattened to one line, so a group named `**x**` or
//! `{{ secret }}` renders literally. Template contexts are built from dedicated view
//! structs only: secrets never enter them. Rendering does no I/O.

use std::path::Path;

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind, Output, State};
use serde::Serialize;

use crate::config::Language;

/// A reply template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// `/help` and unknown commands.
    Help,
    /// `/info` summary.
    Info,
    /// `/info` failed; the context's `kind` says why.
    InfoError,
    /// `/info` in a group of which nothing at all could be learned.
    Unbound,
    /// `/info` in a 1:1 chat.
    PrivateOnly,
    /// A picture, file, … instead of text.
    NotText,
    /// The group is over its per-minute budget.
    SlowDown,
    /// `/bind <chatid>`; the context's `outcome` says what happened.
    Bind,
}

impl Template {
    /// Every template, for loading and checks.
    pub const ALL: [Template; 8] = [
        Template::Help,
        Template::Info,
        Template::InfoError,
        Template::Unbound,
        Template::PrivateOnly,
        Template::NotText,
        Template::SlowDown,
        Template::Bind,
    ];

    /// The file name under `templates/<language>/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Template::Help => "help.md.j2",
            Template::Info => "info.md.j2",
            Template::InfoError => "info_error.md.j2",
            Template::Unbound => "unbound.md.j2",
            Template::PrivateOnly => "private_only.md.j2",
            Template::NotText => "not_text.md.j2",
            Template::SlowDown => "slow_down.md.j2",
            Template::Bind => "bind.md.j2",
        }
    }

    fn embedded(self, lang: Language) -> &'static str {
        macro_rules! pick {
            ($name:literal) => {
                match lang {
                    Language::Zh => include_str!(concat!("../templates/zh/", $name)),
                    Language::En => include_str!(concat!("../templates/en/", $name)),
                }
            };
        }
        match self {
            Template::Help => pick!("help.md.j2"),
            Template::Info => pick!("info.md.j2"),
            Template::InfoError => pick!("info_error.md.j2"),
            Template::Unbound => pick!("unbound.md.j2"),
            Template::PrivateOnly => pick!("private_only.md.j2"),
            Template::NotText => pick!("not_text.md.j2"),
            Template::SlowDown => pick!("slow_down.md.j2"),
            Template::Bind => pick!("bind.md.j2"),
        }
    }
}

/// A rendered reply: notification title and markdown body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Shown in the chat list / notification (the first heading, without `#`).
    pub title: String,
    /// The markdown text.
    pub text: String,
}

/// A template that failed to load.
#[derive(Debug, thiserror::Error)]
#[error("template {path}: {detail}")]
pub struct TemplateError {
    /// Which file.
    pub path: String,
    /// What is wrong.
    pub detail: String,
}

/// Renders replies in one language.
pub struct Renderer {
    /// Embedded templates; the fallback if an override fails at render time.
    defaults: Environment<'static>,
    /// Admin overrides layered over the defaults (None when there are none).
    overrides: Option<Environment<'static>>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("overrides", &self.overrides.is_some())
            .finish()
    }
}

impl Renderer {
    /// Loads the embedded templates for `lang`, then any overrides in `dir/<lang>/`.
    pub fn new(lang: Language, dir: Option<&Path>) -> Result<Renderer, TemplateError> {
        let mut defaults = base_env(lang);
        for t in Template::ALL {
            defaults
                .add_template_owned(t.file_name(), t.embedded(lang))
                .map_err(|e| TemplateError {
                    path: format!("(embedded) {}/{}", lang.code(), t.file_name()),
                    detail: e.to_string(),
                })?;
        }
        let overrides = match dir.filter(|d| !d.as_os_str().is_empty()) {
            None => None,
            Some(dir) => {
                let mut env = base_env(lang);
                let mut any = false;
                for t in Template::ALL {
                    let path = dir.join(lang.code()).join(t.file_name());
                    let source = match std::fs::read_to_string(&path) {
                        Ok(s) => {
                            any = true;
                            s
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            t.embedded(lang).to_string()
                        }
                        Err(e) => {
                            return Err(TemplateError {
                                path: path.display().to_string(),
                                detail: e.to_string(),
                            });
                        }
                    };
                    env.add_template_owned(t.file_name(), source)
                        .map_err(|e| TemplateError {
                            path: path.display().to_string(),
                            detail: e.to_string(),
                        })?;
                }
                any.then_some(env)
            }
        };
        Ok(Renderer {
            defaults,
            overrides,
        })
    }

    /// Renders `template` with `ctx`. An override that fails at render time is logged and
    /// the embedded default is used instead, so a user always gets a reply.
    pub fn render<C: Serialize>(&self, template: Template, ctx: &C) -> Rendered {
        let ctx = Value::from(minijinja::value::Serde(ctx));
        if let Some(env) = &self.overrides {
            match render_with(env, template, ctx.clone()) {
                Ok(r) => return r,
                Err(e) => tracing::error!(
                    template = template.file_name(),
                    error = %e.kind(),
                    "override template failed; using the built-in one"
                ),
            }
        }
        match render_with(&self.defaults, template, ctx) {
            Ok(r) => r,
            Err(e) => {
                // Embedded templates are tested; this is a bug, but the user still hears back.
                tracing::error!(template = template.file_name(), error = %e.kind(), "built-in template failed");
                Rendered {
                    title: "dingbot".into(),
                    text: "dingbot: internal error while writing the reply.".into(),
                }
            }
        }
    }
}

fn render_with(env: &Environment<'static>, t: Template, ctx: Value) -> Result<Rendered, Error> {
    let text = env.get_template(t.file_name())?.render(ctx)?;
    let text = tidy(&text);
    let title = text
        .lines()
        .find(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim().replace('\\', ""))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "dingbot".to_string());
    Ok(Rendered { title, text })
}

/// Collapses runs of blank lines left by template tags and trims the ends.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.trim().lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out
}

fn base_env(lang: Language) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_formatter(markdown_formatter);
    let unknown = match lang {
        Language::Zh => "未知",
        Language::En => "unknown",
    };
    env.add_function(
        "yes_no",
        move |v: Option<bool>, yes: String, no: String| -> String {
            match v {
                Some(true) => yes,
                Some(false) => no,
                None => unknown.to_string(),
            }
        },
    );
    env
}

/// Writes values escaped for markdown unless marked `|safe`.
fn markdown_formatter(out: &mut Output, _state: &mut State, value: &Value) -> Result<(), Error> {
    if value.is_undefined() || value.is_none() {
        return Ok(());
    }
    let write = |out: &mut Output, s: &str| {
        out.write_str(s)
            .map_err(|_| Error::new(ErrorKind::WriteFailure, "cannot write output"))
    };
    if value.is_safe() {
        return write(out, value.as_str().unwrap_or_default());
    }
    match value.as_str() {
        Some(s) => write(out, &escape_markdown(s)),
        None => write(out, &escape_markdown(&value.to_string())),
    }
}

/// Escapes markdown syntax and flattens control characters, so text shows as written.
pub fn escape_markdown(s: &str) -> String {
    let special = |c: char| {
        matches!(
            c,
            '\\' | '*' | '_' | '`' | '[' | ']' | '<' | '>' | '~' | '|' | '#'
        ) || c.is_control()
    };
    if !s.chars().any(special) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        // An underscore inside a word (qyapi_chat_read) cannot start emphasis.
        let intraword = |j: Option<usize>| {
            j.and_then(|j| chars.get(j))
                .is_some_and(|c: &char| c.is_alphanumeric())
        };
        if c == '_' && intraword(i.checked_sub(1)) && intraword(Some(i + 1)) {
            out.push(c);
            continue;
        }
        match c {
            '\\' | '*' | '_' | '`' | '[' | ']' | '<' | '>' | '~' | '|' | '#' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Unknown<'a> {
        unknown: Option<&'a str>,
    }

    #[test]
    fn every_embedded_template_compiles_in_both_languages() {
        for lang in [Language::Zh, Language::En] {
            let r = Renderer::new(lang, None).unwrap();
            for t in Template::ALL {
                let out = r.render(t, &serde_json::json!({"kind": "other"}));
                assert!(!out.text.is_empty(), "{t:?}");
                assert_ne!(out.title, "dingbot", "{t:?} has no heading");
            }
        }
    }

    #[test]
    fn injected_markup_renders_literally() {
        let r = Renderer::new(Language::En, None).unwrap();
        let out = r.render(
            Template::Help,
            &Unknown {
                unknown: Some("**x**{{ secret }}\n# h"),
            },
        );
        assert!(
            out.text.contains(r"\*\*x\*\*{{ secret }} \# h"),
            "{}",
            out.text
        );
    }

    #[test]
    fn overrides_replace_only_their_file() {
        let dir = std::env::temp_dir().join(format!("dingbot-tpl-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("en")).unwrap();
        std::fs::write(dir.join("en/help.md.j2"), "#### Custom\nhi {{ unknown }}").unwrap();
        let r = Renderer::new(Language::En, Some(&dir)).unwrap();
        let out = r.render(
            Template::Help,
            &Unknown {
                unknown: Some("a_b _c_"),
            },
        );
        assert_eq!(out.text, "#### Custom\nhi a_b \\_c\\_");
        assert_eq!(out.title, "Custom");
        let other = r.render(Template::NotText, &());
        assert!(other.text.contains("text commands"));

        std::fs::write(dir.join("en/help.md.j2"), "{% if %}").unwrap();
        let err = Renderer::new(Language::En, Some(&dir)).unwrap_err();
        assert!(err.path.ends_with("help.md.j2"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
