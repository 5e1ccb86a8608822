//! Media sources that several send calls in flight name at once (one image sent to
//! many recipients): `index.js` passes a source's text with the first of them and a
//! share number with each, and the calls after the first name only the number, so the
//! text is copied out of JavaScript once and the core holds one copy for all of them
//! (README "Media"). `index.js` releases the number when the last of those
//! calls settles.

use std::collections::HashMap;
use std::sync::Mutex;

use wa_gateway_core::MediaText;

#[derive(Default)]
pub struct MediaShares(Mutex<HashMap<u32, MediaText>>);

impl MediaShares {
    /// The media source of one call: `text` (shared from now on under `share`, if
    /// given), else the text already shared under `share`.
    pub fn source(
        &self,
        text: Option<String>,
        share: Option<u32>,
    ) -> Result<Option<MediaText>, &'static str> {
        let mut shares = wa_gateway_core::lock(&self.0);
        match (text, share) {
            (Some(text), Some(share)) => {
                let text = MediaText::from(text);
                shares.insert(share, text.clone());
                Ok(Some(text))
            }
            (Some(text), None) => Ok(Some(text.into())),
            (None, Some(share)) => shares
                .get(&share)
                .cloned()
                .map(Some)
                .ok_or("a media share that was released or never given"),
            (None, None) => Ok(None),
        }
    }

    /// No call in flight names `share` any more; the calls that did keep their copy
    /// of the text until their commands are written.
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

    #[test]
    fn calls_naming_a_share_get_the_first_calls_text_itself() {
        let shares = MediaShares::default();
        let url = "data:image/png;base64,AA==".to_string();
        let first = shares.source(Some(url.clone()), Some(7)).unwrap().unwrap();
        let second = shares.source(None, Some(7)).unwrap().unwrap();
        assert!(second.shares(&first), "one copy, not two");
        assert_eq!(second, url);
        let alone = shares.source(Some(url.clone()), None).unwrap().unwrap();
        assert!(!alone.shares(&first));
        assert_eq!(shares.source(None, None), Ok(None));
        shares.release(7);
        assert_eq!(shares.len(), 0);
        assert!(shares.source(None, Some(7)).is_err(), "released");
        assert_eq!(first, url, "a call that has it keeps it");
    }
}
