//! Custom commands (README: "Beyond the four commands"): the types an extension may
//! handle besides the built-in send commands, how it lists them at auth, and the
//! frame that carries one.

use serde_json::Value;

use super::Frame;

/// Every frame type of the protocol, both ways: none of them can be a custom command.
pub const BUILT_IN_TYPES: [&str; 17] = [
    "auth",
    "authenticate",
    "auth-success",
    "authenticated",
    "status",
    "heartbeat",
    "ping",
    "error",
    "send-message",
    "send-image",
    "send-video",
    "send-document",
    "message-result",
    "message-ack",
    "incoming-message",
    "incoming-ack",
    "command-result",
];

/// Custom types an extension may list (more are ignored): the auth frame stays small.
pub const MAX_LISTED: usize = 64;

/// `^[a-z][a-z0-9-]{0,63}$` and not a built-in frame type.
pub fn is_custom_type(name: &str) -> bool {
    let bytes = name.as_bytes();
    let shaped = bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    shaped && !BUILT_IN_TYPES.contains(&name)
}

/// The custom types an auth frame's `data.commands` lists: the valid names, once each,
/// in order, at most `MAX_LISTED`. Anything else there is ignored (an extension
/// written for a newer gateway may list more than this one knows how to take).
pub fn listed_commands(listed: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(items)) = listed else {
        return Vec::new();
    };
    let mut commands: Vec<String> = Vec::new();
    for name in items.iter().filter_map(Value::as_str) {
        if commands.len() == MAX_LISTED {
            break;
        }
        if is_custom_type(name) && !commands.iter().any(|c| c == name) {
            commands.push(name.to_string());
        }
    }
    commands
}

/// `{"type":<command>,"requestId":...,"data":<data>}`; `data` is JSON text the host
/// checked, written as it is.
pub fn custom_frame(request_id: &str, command: &str, data: &str) -> Frame {
    let quoted = super::json_string;
    let data = if data.is_empty() { "null" } else { data };
    let text = format!(
        r#"{{"type":{},"requestId":{},"data":{data}}}"#,
        quoted(command),
        quoted(request_id)
    );
    Frame::Text(text.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn custom_types_follow_the_pattern_and_are_never_built_in() {
        for good in ["check-number", "a", "react2", &"x".repeat(64)] {
            assert!(is_custom_type(good), "{good}");
        }
        let long = "x".repeat(65);
        for bad in [
            "",
            "Check",
            "2fa",
            "-x",
            "a_b",
            "a b",
            "é",
            long.as_str(),
            "send-message",
            "ping",
            "command-result",
            "auth",
        ] {
            assert!(!is_custom_type(bad), "{bad}");
        }
    }

    #[test]
    fn listed_commands_keep_valid_names_once_in_order() {
        let listed = json!([
            "check-number",
            7,
            "BAD",
            "react",
            "check-number",
            "ping",
            null
        ]);
        assert_eq!(listed_commands(Some(&listed)), ["check-number", "react"]);
        assert!(listed_commands(Some(&json!("check-number"))).is_empty());
        assert!(listed_commands(None).is_empty());
        let many: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
        assert_eq!(listed_commands(Some(&json!(many))).len(), MAX_LISTED);
    }

    #[test]
    fn a_custom_frame_carries_the_data_as_given() {
        let Frame::Text(text) = custom_frame("r1", "check-number", r#"{"phone":"+1"}"#) else {
            panic!("a text frame");
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({ "type": "check-number", "requestId": "r1", "data": { "phone": "+1" } })
        );
        let Frame::Text(text) = custom_frame("r2", "ping-phone", "") else {
            panic!("a text frame");
        };
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["data"],
            Value::Null
        );
    }
}
