//! Arbitrary group names and words in templates: rendering never panics, never lets
//! markdown through unescaped, and never evaluates the input as a template.
#![no_main]

use dingbot::config::Language;
use dingbot::render::{Renderer, Template};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if text.is_empty() {
        return; // an empty value switches `{% if %}` blocks off: a different shape by design
    }
    let renderer = Renderer::new(Language::En, None).expect("embedded templates compile");
    let ctx = serde_json::json!({
        "title": text, "conversation_id": text, "unknown": text,
        "name": text, "owner": text, "member_count": 3, "kind": "other", "errmsg": text,
    });
    for t in [Template::Unbound, Template::Help, Template::Info, Template::InfoError] {
        let out = renderer.render(t, &ctx);
        assert!(!out.text.is_empty());
        // Interpolated text cannot open a new line (no injected headings or list items).
        let template_lines = renderer.render(t, &serde_json::json!({
            "title": "x", "conversation_id": "x", "unknown": "x", "name": "x",
            "owner": "x", "member_count": 3, "kind": "other", "errmsg": "x",
        })).text.lines().count();
        assert_eq!(out.text.lines().count(), template_lines, "{text:?}");
    }
});
