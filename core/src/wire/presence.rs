//! The presence payload Tandem clients put in `ephemeral` messages: a CBOR map with `user`
//! (who) and `presence` (a JSON text: selection, viewport, frame, app). Stock peers may send
//! anything else; only this shape is interpreted.

use ciborium::Value;

/// `data` with exactly one `user`, set to `user`, when `data` is a CBOR map (Tandem's
/// presence shape) that does not already say exactly that; `None` when there is nothing
/// to change or `data` is not a map. Every `user` entry is replaced (a reader may take the
/// first or the last of duplicate keys), and one is added when there is none. The server
/// relays presence through this so nobody can speak as another user.
pub fn attest_presence(data: &[u8], user: &str) -> Option<Vec<u8>> {
    let Ok(Value::Map(mut entries)) = ciborium::de::from_reader::<Value, _>(data) else {
        return None;
    };
    let is_user = |k: &Value| k.as_text() == Some("user");
    let claims: Vec<&Value> = entries
        .iter()
        .filter(|(k, _)| is_user(k))
        .map(|(_, v)| v)
        .collect();
    if claims.len() == 1 && claims[0].as_text() == Some(user) {
        return None;
    }
    entries.retain(|(k, _)| !is_user(k));
    entries.insert(
        0,
        (Value::Text("user".into()), Value::Text(user.to_owned())),
    );
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
        // Duplicate keys: a reader taking the last one must not see the claim either.
        let dup = Value::Map(vec![
            (Value::Text("user".into()), Value::Text("mallory".into())),
            (Value::Text("presence".into()), Value::Text("{}".into())),
            (Value::Text("user".into()), Value::Text("lead".into())),
        ]);
        let mut bytes = Vec::new();
        ciborium::ser::into_writer(&dup, &mut bytes).unwrap();
        assert_eq!(
            attest_presence(&bytes, "mallory").unwrap(),
            presence("mallory")
        );
        // No claim at all: the real user is added.
        let bare = Value::Map(vec![(
            Value::Text("presence".into()),
            Value::Text("{}".into()),
        )]);
        let mut bytes = Vec::new();
        ciborium::ser::into_writer(&bare, &mut bytes).unwrap();
        assert_eq!(
            attest_presence(&bytes, "mallory").unwrap(),
            presence("mallory")
        );
        assert_eq!(attest_presence(&[0x01], "mallory"), None);
    }
}
