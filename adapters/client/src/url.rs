//! Server addresses: `ws://host[:port][/path]` plus the room, turned into the URL the server
//! routes (`/sync?room=NAME`, see the server's `protocol` module docs).

use crate::error::{Error, Result};

/// A validated server address for one room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl {
    /// `true` for `wss://`.
    pub tls: bool,
    /// `host[:port]`.
    pub authority: String,
    /// The path, `/sync` unless the URL named one.
    pub path: String,
    /// The room.
    pub room: String,
}

pub use tandem_core::valid_room_name;

impl ServerUrl {
    /// Parses `url` (`ws://` or `wss://`) for `room`. A `?room=` in the URL is overridden by
    /// `room`.
    pub fn parse(url: &str, room: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("ws://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("wss://") {
            (true, r)
        } else {
            let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
            return Err(bad(&format!(
                "unsupported scheme {scheme:?}: use ws:// or wss://"
            )));
        };
        let rest = rest.split_once('?').map(|(a, _)| a).unwrap_or(rest);
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') || authority.contains(' ') {
            return Err(bad("missing or invalid host"));
        }
        if let Some((_, port)) = authority.rsplit_once(':')
            && !authority.ends_with(']')
            && port.parse::<u16>().is_err()
        {
            return Err(bad("invalid port"));
        }
        if !valid_room_name(room) {
            return Err(Error::InvalidArgument(format!(
                "room name {room:?}: use 1-128 of A-Z a-z 0-9 . _ -"
            )));
        }
        let path = if path.is_empty() || path == "/" {
            "/sync".to_owned()
        } else {
            path.to_owned()
        };
        Ok(Self {
            tls,
            authority: authority.to_owned(),
            path,
            room: room.to_owned(),
        })
    }

    /// The full URL to dial.
    pub fn to_url(&self) -> String {
        format!(
            "{}://{}{}?room={}",
            if self.tls { "wss" } else { "ws" },
            self.authority,
            self.path,
            self.room
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_routed_to_the_room() {
        let u = ServerUrl::parse("ws://127.0.0.1:7890", "shot-010").unwrap();
        assert_eq!(u.to_url(), "ws://127.0.0.1:7890/sync?room=shot-010");
        let u = ServerUrl::parse("wss://tandem.example/", "a").unwrap();
        assert_eq!(u.to_url(), "wss://tandem.example/sync?room=a");
        let u = ServerUrl::parse("ws://h:1/custom?room=x", "b").unwrap();
        assert_eq!(u.to_url(), "ws://h:1/custom?room=b");
        for bad in ["http://h", "h:1", "ws://", "ws://h:port", "tcp://x"] {
            let e = ServerUrl::parse(bad, "r").unwrap_err();
            assert!(matches!(e, Error::InvalidUrl { .. }), "{bad}: {e}");
        }
        assert!(matches!(
            ServerUrl::parse("ws://h", "a/b"),
            Err(Error::InvalidArgument(_))
        ));
    }
}
