//! Media sources that several send calls in flight name at once (one image sent to
//! many recipients): `index.js` passes a source's text with the first of them and a
//! share number with each, and the calls after the first name only the number, so the
//! text is copied out of JavaScript once and the core holds one copy for all of them
//! (README "Media"). The copy lives as long as a send still has to write it, not
//! longer: a share is only a way to find it meanwhile. A call naming a share whose
//! text is gone is told so, and passes the text again. `index.js` releases the number
//! when the last call naming it settles.

use std::collections::HashMap;
use std::sync::Mutex;

use wa_gateway_core::{MediaText, WeakMediaText};

#[derive(Default)]
pub struct MediaShares(Mutex<HashMap<u32, WeakMediaText>>);

/// The media source of one call.
#[derive(Debug, PartialEq)]
pub enum Source {
    Media(Option<MediaText>),
    /// The call named a share whose text no send holds any more.
    Gone,
}

impl MediaShares {
    /// `text` (shared from now on under `share`, if given), else the text still held
    /// under `share`.
    pub fn source(&self, text: Option<String>, share: Option<u32>) -> Source {
        let mut shares = wa_gateway_core::lock(&self.0);
        match (text, share) {
            (Some(text), Some(share)) => {
                let text = MediaText::from(text);
                shares.insert(share, text.downgrade());
                Source::Media(Some(text))
            }
            (Some(text), None) => Source::Media(Some(text.into())),
            (None, Some(share)) => match shares.get(&share).and_then(WeakMediaText::upgrade) {
                Some(text) => Source::Media(Some(text)),
                None => Source::Gone,
            },
            (None, None) => Source::Media(None),
        }
    }

    /// No call in flight names `share` any more.
    pub fn release(&self, share: u32) {
        wa_gateway_core::lock(&self.0).remove(&share);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        wa_gateway_core::lock(&self.0).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(source: Source) -> MediaText {
        match source {
            Source::Media(Some(text)) => text,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn calls_naming_a_share_get_the_text_itself_while_a_send_holds_it() {
        let shares = MediaShares::default();
        let url = "data:image/png;base64,AA==".to_string();
        let first = text(shares.source(Some(url.clone()), Some(7)));
        let second = text(shares.source(None, Some(7)));
        assert!(second.shares(&first), "one copy, not two");
        assert_eq!(second, url);
        let alone = text(shares.source(Some(url.clone()), None));
        assert!(!alone.shares(&first));
        assert_eq!(shares.source(None, None), Source::Media(None));
        drop((first, second));
        assert_eq!(
            shares.source(None, Some(7)),
            Source::Gone,
            "written: the share does not keep it"
        );
        let again = text(shares.source(Some(url.clone()), Some(7)));
        assert_eq!(text(shares.source(None, Some(7))), url);
        shares.release(7);
        assert_eq!(shares.len(), 0);
        assert_eq!(shares.source(None, Some(7)), Source::Gone, "released");
        assert_eq!(again, url, "a call that has it keeps it");
    }
}
