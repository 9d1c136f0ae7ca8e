//! The anchor: the immutable directory identifier that is a user's identity
//! (rule 8). Most anchors are text (`entryUUID`, `nsUniqueId`, ...); Active
//! Directory's `objectGUID` is 16 raw bytes, written as a string the way Windows
//! and `samba-tool` print it, and turned back into bytes to look a user up.

use uuid::Uuid;

use super::entry::RawEntry;
use super::filter::{escape_filter_bytes, escape_filter_value};

/// How the anchor attribute's values are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnchorEncoding {
    /// The value is the anchor, as the server returns it.
    Text,
    /// A Microsoft GUID: 16 bytes, shown as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`
    /// with the first three fields little-endian.
    MsGuid,
}

/// The anchor attribute of a connector and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorAttribute {
    name: String,
    encoding: AnchorEncoding,
}

impl AnchorAttribute {
    /// The anchor read from `name`. `objectGUID` (AD, any flavor) is binary;
    /// everything else is text.
    pub fn new(name: &str) -> Self {
        let encoding = if name.eq_ignore_ascii_case("objectGUID") {
            AnchorEncoding::MsGuid
        } else {
            AnchorEncoding::Text
        };
        Self {
            name: name.to_owned(),
            encoding,
        }
    }

    /// The attribute's name, to request it in a search.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn encoding(&self) -> AnchorEncoding {
        self.encoding
    }

    /// The entry's anchor, or `None` when it has no usable one (the attribute is
    /// missing or not readable, or a GUID is not 16 bytes).
    pub fn read(&self, entry: &RawEntry) -> Option<String> {
        match self.encoding {
            AnchorEncoding::Text => entry.first_text(&self.name).map(str::to_owned),
            AnchorEncoding::MsGuid => entry.first_bytes(&self.name).and_then(guid_bytes_to_string),
        }
    }

    /// The escaped assertion value that matches `anchor` in a filter, or `None`
    /// when `anchor` cannot be a value of this attribute (a malformed GUID).
    pub fn assertion_value(&self, anchor: &str) -> Option<String> {
        match self.encoding {
            AnchorEncoding::Text if anchor.is_empty() => None,
            AnchorEncoding::Text => Some(escape_filter_value(anchor)),
            AnchorEncoding::MsGuid => {
                guid_string_to_bytes(anchor).map(|bytes| escape_filter_bytes(&bytes))
            }
        }
    }

    /// `(<attr>=<value>)` for one anchor.
    pub fn equality_filter(&self, anchor: &str) -> Option<String> {
        self.assertion_value(anchor)
            .map(|value| format!("({}={value})", self.name))
    }
}

/// The canonical string of a Microsoft GUID's 16 bytes: the first three fields
/// little-endian, lower-case hex (what `samba-tool user show` prints).
pub fn guid_bytes_to_string(bytes: &[u8]) -> Option<String> {
    let bytes: [u8; 16] = bytes.try_into().ok()?;
    Some(Uuid::from_bytes_le(bytes).hyphenated().to_string())
}

/// The 16 bytes, in the order AD stores them, of a GUID string in any case,
/// with or without braces.
pub fn guid_string_to_bytes(text: &str) -> Option<[u8; 16]> {
    let text = text.trim();
    let text = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    // Only the hyphenated form: a bare 32-digit string is too easily another ID.
    if text.len() != 36 {
        return None;
    }
    Uuid::parse_str(text).ok().map(|u| u.to_bytes_le())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Microsoft's documented example: GUID {6F9619FF-8B86-D011-B42D-00C04FC964FF}
    // is stored as FF 19 96 6F 86 8B 11 D0 B4 2D 00 C0 4F C9 64 FF.
    const GUID_BYTES: [u8; 16] = [
        0xFF, 0x19, 0x96, 0x6F, 0x86, 0x8B, 0x11, 0xD0, 0xB4, 0x2D, 0x00, 0xC0, 0x4F, 0xC9, 0x64,
        0xFF,
    ];
    const GUID_TEXT: &str = "6f9619ff-8b86-d011-b42d-00c04fc964ff";

    #[test]
    fn object_guid_bytes_become_the_windows_string() {
        assert_eq!(guid_bytes_to_string(&GUID_BYTES).unwrap(), GUID_TEXT);
        assert_eq!(guid_bytes_to_string(&GUID_BYTES[..15]), None);
    }

    #[test]
    fn object_guid_string_turns_back_into_the_stored_bytes() {
        assert_eq!(guid_string_to_bytes(GUID_TEXT).unwrap(), GUID_BYTES);
        assert_eq!(
            guid_string_to_bytes("{6F9619FF-8B86-D011-B42D-00C04FC964FF}").unwrap(),
            GUID_BYTES
        );
        assert_eq!(
            guid_string_to_bytes("6f9619ff8b86d011b42d00c04fc964ff"),
            None
        );
        assert_eq!(guid_string_to_bytes("not-a-guid"), None);
    }

    #[test]
    fn object_guid_lookup_filter_escapes_every_byte() {
        let anchor = AnchorAttribute::new("objectGUID");
        assert_eq!(
            anchor.equality_filter(GUID_TEXT).unwrap(),
            r"(objectGUID=\ff\19\96\6f\86\8b\11\d0\b4\2d\00\c0\4f\c9\64\ff)"
        );
        assert_eq!(anchor.equality_filter("bogus"), None);
    }

    #[test]
    fn text_anchor_lookup_filter_escapes_the_value() {
        let anchor = AnchorAttribute::new("uid");
        assert_eq!(anchor.equality_filter("a(b*").unwrap(), r"(uid=a\28b\2a)");
        assert_eq!(anchor.equality_filter(""), None);
    }

    fn entry(attrs: &[(&str, &str)], bin: &[(&str, &[u8])]) -> RawEntry {
        let text = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.as_bytes().to_vec()]));
        let binary = bin.iter().map(|(k, v)| (k.to_string(), vec![v.to_vec()]));
        RawEntry::new("cn=x", text.chain(binary).collect())
    }

    #[test]
    fn object_guid_is_read_from_binary_or_utf8_looking_values() {
        let anchor = AnchorAttribute::new("objectGUID");
        let e = entry(&[], &[("objectGUID", &GUID_BYTES)]);
        assert_eq!(anchor.read(&e).unwrap(), GUID_TEXT);
        // Some GUIDs happen to be valid UTF-8; the client then returns them as text.
        let ascii_guid = *b"0123456789abcdef";
        let e = entry(
            &[("objectguid", std::str::from_utf8(&ascii_guid).unwrap())],
            &[],
        );
        assert_eq!(
            anchor.read(&e).unwrap(),
            guid_bytes_to_string(&ascii_guid).unwrap()
        );
        assert_eq!(anchor.read(&entry(&[], &[])), None);
    }
}
