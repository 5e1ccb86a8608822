//! A result frame as extensions write it (`JSON.stringify` of a flat object: no spaces,
//! no escapes, strings, booleans and whole numbers), read without serde. Extensions
//! send one per call, and serde's reading of `Wire` took about 0.3 µs of each call's
//! few microseconds on the JavaScript thread. Anything else (another type, another
//! field, an escape, a fraction, a nested value, a repeated field) is left to
//! `parse_wire`, so this reads only what it would read the same way; the fuzz target
//! `inbound_frame` checks that it does.

use serde_json::Value;

use super::{failure_code, ResultFrame};

/// A field's value, as far as this reader goes.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Text(&'a str),
    Bool(bool),
    Null,
    /// At most 15 digits: exact as a `u64` and as an `f64`.
    Whole(u64),
}

impl Scalar<'_> {
    /// The value serde_json makes of it.
    fn value(self) -> Value {
        match self {
            Self::Text(text) => Value::String(text.to_owned()),
            Self::Bool(flag) => Value::Bool(flag),
            Self::Null => Value::Null,
            Self::Whole(number) => Value::from(number),
        }
    }
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Option<u8> {
        let byte = *self.text.as_bytes().get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, word: &str) -> Option<()> {
        let end = self.at + word.len();
        (self.text.as_bytes().get(self.at..end)? == word.as_bytes()).then(|| self.at = end)
    }

    /// A string without escapes or control characters (which JSON does not allow raw).
    fn string(&mut self) -> Option<&'a str> {
        self.expect("\"")?;
        let start = self.at;
        let length = self.text.as_bytes()[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        self.at += length;
        self.expect("\"")?;
        Some(&self.text[start..start + length])
    }

    fn scalar(&mut self) -> Option<Scalar<'a>> {
        match *self.text.as_bytes().get(self.at)? {
            b'"' => self.string().map(Scalar::Text),
            b't' => self.expect("true").map(|()| Scalar::Bool(true)),
            b'f' => self.expect("false").map(|()| Scalar::Bool(false)),
            b'n' => self.expect("null").map(|()| Scalar::Null),
            b'0'..=b'9' => {
                let digits = self.text.as_bytes()[self.at..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                let number = &self.text[self.at..self.at + digits];
                // A leading zero is not JSON; a fraction or an exponent is serde's.
                if digits > 15 || (digits > 1 && number.starts_with('0')) {
                    return None;
                }
                self.at += digits;
                number.parse().ok().map(Scalar::Whole)
            }
            _ => None,
        }
    }
}

const TYPE: usize = 0;
const REQUEST_ID: usize = 1;
const SUCCESS: usize = 2;
const MESSAGE_ID: usize = 3;
const ERROR: usize = 4;
const TIMESTAMP: usize = 5;
const CODE: usize = 6;

/// The result `text` is, if it is one written the plain way; `None` says nothing
/// about it (`parse_wire` decides).
pub fn read(text: &str) -> Option<ResultFrame> {
    let mut reader = Reader { text, at: 0 };
    let mut fields: [Option<Scalar>; 7] = [None; 7];
    reader.expect("{")?;
    loop {
        let slot = match reader.string()? {
            "type" => TYPE,
            "requestId" => REQUEST_ID,
            "success" => SUCCESS,
            "messageId" => MESSAGE_ID,
            "error" => ERROR,
            "timestamp" => TIMESTAMP,
            "code" => CODE,
            _ => return None,
        };
        reader.expect(":")?;
        let value = reader.scalar()?;
        // A repeated field is an error to serde.
        if fields[slot].replace(value).is_some() {
            return None;
        }
        match reader.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    if reader.at != text.len() {
        return None;
    }
    let Some(Scalar::Text("message-result" | "command-result")) = fields[TYPE] else {
        return None;
    };
    let Some(Scalar::Text(request_id)) = fields[REQUEST_ID] else {
        return None;
    };
    let Some(Scalar::Bool(success)) = fields[SUCCESS] else {
        return None;
    };
    let value = |slot: usize| fields[slot].map_or(Value::Null, Scalar::value);
    Some(ResultFrame {
        request_id: request_id.to_owned(),
        success,
        message_id: value(MESSAGE_ID),
        error: value(ERROR),
        timestamp: match fields[TIMESTAMP] {
            Some(Scalar::Whole(ms)) => Some(ms as f64),
            _ => None,
        },
        data: Value::Null,
        code: match fields[CODE] {
            Some(Scalar::Text(code)) => failure_code(code),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::read;
    use crate::protocol::{parse_wire, Inbound};

    const ID: &str = "0193a5b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b";

    /// What serde makes of `text`, which the quick reader must match when it reads it.
    fn same_as_serde(text: &str) -> bool {
        match read(text) {
            Some(quick) => {
                assert_eq!(
                    Inbound::Result(quick),
                    parse_wire(text, usize::MAX),
                    "{text}"
                );
                true
            }
            None => false,
        }
    }

    #[test]
    fn results_as_extensions_write_them_read_as_serde_reads_them() {
        let values = [
            r#""m""#,
            r#""true_1@c.us_3EB0""#,
            r#""é ✓""#,
            "true",
            "false",
            "null",
            "0",
            "1733500000123",
            "999999999999999",
            r#""NOT_ON_WHATSAPP""#,
            r#""not a code""#,
            r#""""#,
        ];
        for kind in ["message-result", "command-result"] {
            for success in ["true", "false"] {
                assert!(same_as_serde(&format!(
                    r#"{{"type":"{kind}","requestId":"{ID}","success":{success}}}"#
                )));
                for field in ["messageId", "error", "timestamp", "code"] {
                    for value in values {
                        // Each field first, in the middle and last.
                        for text in [
                            format!(
                                r#"{{"{field}":{value},"type":"{kind}","requestId":"{ID}","success":{success}}}"#
                            ),
                            format!(
                                r#"{{"type":"{kind}","{field}":{value},"requestId":"{ID}","success":{success}}}"#
                            ),
                            format!(
                                r#"{{"type":"{kind}","requestId":"{ID}","success":{success},"{field}":{value}}}"#
                            ),
                        ] {
                            assert!(same_as_serde(&text), "not read: {text}");
                        }
                    }
                }
            }
        }
        let full = format!(
            r#"{{"type":"message-result","requestId":"{ID}","success":false,"messageId":null,"error":"Number not on WhatsApp","timestamp":1733500000123,"code":"NOT_ON_WHATSAPP"}}"#
        );
        assert!(same_as_serde(&full));
        let result = read(&full).expect("read");
        assert_eq!(result.code.as_deref(), Some("NOT_ON_WHATSAPP"));
        assert_eq!(result.timestamp, Some(1_733_500_000_123.0));
    }

    #[test]
    fn anything_else_is_left_to_serde() {
        let head = format!(r#"{{"type":"message-result","requestId":"{ID}","success":true"#);
        let left = [
            // Spaces, escapes, control characters, numbers serde reads its own way.
            format!(r#"{{ "type":"message-result","requestId":"{ID}","success":true}}"#),
            format!(r#"{head},"messageId":"a\"b"}}"#),
            format!("{head},\"messageId\":\"a\u{1}b\"}}"),
            format!(r#"{head},"timestamp":1.5}}"#),
            format!(r#"{head},"timestamp":1e3}}"#),
            format!(r#"{head},"timestamp":-1}}"#),
            format!(r#"{head},"timestamp":0123}}"#),
            format!(r#"{head},"timestamp":1234567890123456}}"#),
            // Nested values, other fields, a repeated field, trailing bytes.
            format!(r#"{head},"error":{{"message":"x"}}}}"#),
            format!(r#"{head},"data":1}}"#),
            format!(r#"{head},"success":true}}"#),
            format!(r#"{head}}} "#),
            head.clone(),
            // Not a result, or not a usable one.
            format!(r#"{{"type":"status","requestId":"{ID}","success":true}}"#),
            r#"{"type":"message-result","requestId":1,"success":true}"#.to_string(),
            format!(r#"{{"type":"message-result","requestId":"{ID}","success":"yes"}}"#),
            r#"{"type":"message-result","success":true}"#.to_string(),
            "{}".to_string(),
            String::new(),
        ];
        for text in left {
            assert!(read(&text).is_none(), "read: {text}");
            // What serde makes of it stands, whatever it is.
            let _ = parse_wire(&text, usize::MAX);
        }
    }
}
