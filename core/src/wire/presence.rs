//! The presence payload Tandem clients put in `ephemeral` messages: a CBOR map with `user`
//! (who) and `presence` (a JSON text: selection, viewport, frame, app). Stock peers may send
//! anything else; only this shape is interpreted.

use ciborium::Value;

/// `data` with its `user` set to `user`, when `data` is a presence map naming someone else;
/// `None` when there is nothing to change (not a map, no `user` key, or already `user`).
/// The server relays presence through this so nobody can speak as another user.
pub fn attest_presence(data: &[u8], user: &str) -> Option<Vec<u8>> {
    let Ok(Value::Map(mut entries)) = ciborium::de::from_reader::<Value, _>(data) else {
        return None;
    };
    let slot = entries
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some("user"))
        .map(|(_, v)| v)?;
    if slot.as_text() == Some(user) {
        return None;
    }
    *slot = Value::Text(user.to_owned());
    let mut out = Vec::with_capacity(data.len() + user.len());
    ciborium::ser::into_writer(&Value::Map(entries), &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(user: &str) -> Vec<u8> {
        let v = Value::Map(vec![
            (Value::Text("user".into()), Value::Text(user.into())),
            (Value::Text("presence".into()), Value::Text("{}".into())),
        ]);
        let mut out = Vec::new();
        ciborium::ser::into_writer(&v, &mut out).unwrap();
        out
    }

    #[test]
    fn a_claimed_user_is_replaced_by_the_authenticated_one() {
        let forged = attest_presence(&presence("lead"), "mallory").unwrap();
        assert_eq!(forged, presence("mallory"));
        assert_eq!(attest_presence(&presence("mallory"), "mallory"), None);
        assert_eq!(attest_presence(b"\xff\x00", "mallory"), None);
        assert_eq!(attest_presence(&[0x01], "mallory"), None);
    }
}
