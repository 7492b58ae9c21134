//! The automerge-repo handshake: `join` in, `peer` (or `error`) out.

use tandem_core::Role;
use tandem_core::wire::{
    self, ErrorCode, FEATURE_SNAPSHOT, Message, PROTOCOL_VERSION, Peer, PeerId, PeerMetadata,
    TANDEM_PROTOCOL_VERSION, TandemError, TandemHello,
};

use super::PeerInfo;
use super::close_code;
use crate::store::{AuthFailure, Grant};

/// How the handshake checks credentials; the tokio layer backs it with the store.
pub trait Authenticator {
    /// `Ok(None)`: no users are configured (open development mode, everyone an admin under
    /// the name they claim). Otherwise the token's user and role in `room`, or why not.
    fn authenticate(&self, token: Option<&str>, room: &str) -> Result<Option<Grant>, AuthFailure>;
}

/// The largest first frame read before authentication (a join is a few hundred bytes).
pub const MAX_JOIN_BYTES: usize = 64 << 10;

/// Open mode: no users, no tokens (tests and single-user setups).
pub struct OpenAccess;

impl Authenticator for OpenAccess {
    fn authenticate(&self, _: Option<&str>, _: &str) -> Result<Option<Grant>, AuthFailure> {
        Ok(None)
    }
}

/// A refused handshake: the frame to send (if any) and the close code.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    /// Sent before closing.
    pub message: Option<Message>,
    /// Close code.
    pub code: u16,
    /// Close reason / log text.
    pub reason: String,
    /// The machine-readable code behind it.
    pub error: ErrorCode,
}

/// What the server says about itself in the handshake.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    /// The server's peer id.
    pub peer_id: PeerId,
    /// The server's storage id.
    pub storage_id: String,
}

/// Handle the first frame of a connection. `transport_token` is a token the connection
/// presented outside the join (URL query `?token=` or `Authorization: Bearer`); a token in
/// the join's `peerMetadata.tandem.token` takes precedence.
pub fn accept_join(
    frame: &[u8],
    server: &ServerIdentity,
    room: &str,
    transport_token: Option<&str>,
    auth: &dyn Authenticator,
) -> Result<(Message, PeerInfo), Box<Refusal>> {
    let refuse = |error: ErrorCode, code: u16, reason: String| {
        Box::new(Refusal {
            message: Some(Message::Error {
                message: format!("{}: {reason}", error.as_str()),
            }),
            code,
            reason,
            error,
        })
    };
    // Before authentication nothing is decoded at untrusted size.
    if frame.len() > MAX_JOIN_BYTES {
        return Err(refuse(
            ErrorCode::TooLarge,
            close_code::TOO_BIG,
            format!("a join is at most {MAX_JOIN_BYTES} bytes"),
        ));
    }
    let join = match wire::decode(frame) {
        Ok(Message::Join(j)) => j,
        Ok(other) => {
            return Err(refuse(
                ErrorCode::BadMessage,
                close_code::PROTOCOL,
                format!("expected join, got {}", wire::truncated(other.kind(), 32)),
            ));
        }
        Err(e) => {
            return Err(refuse(
                ErrorCode::BadMessage,
                close_code::INVALID_PAYLOAD,
                wire::truncated(&e.to_string(), wire::MAX_LOGGED_CHARS),
            ));
        }
    };
    if !join
        .supported_protocol_versions
        .iter()
        .any(|v| v == PROTOCOL_VERSION)
    {
        return Err(refuse(
            ErrorCode::VersionMismatch,
            close_code::PROTOCOL,
            wire::truncated(
                &format!(
                    "unsupported protocol versions {:?}",
                    join.supported_protocol_versions
                ),
                wire::MAX_LOGGED_CHARS,
            ),
        ));
    }
    if join.sender_id.as_str().is_empty() || join.sender_id.as_str().len() > 256 {
        return Err(refuse(
            ErrorCode::BadMessage,
            close_code::PROTOCOL,
            "bad senderId".into(),
        ));
    }
    let hello = join.peer_metadata.as_ref().and_then(|m| m.tandem.clone());
    if let Some(h) = hello
        .as_ref()
        .filter(|h| h.version != TANDEM_PROTOCOL_VERSION)
    {
        return Err(refuse(
            ErrorCode::VersionMismatch,
            close_code::PROTOCOL,
            format!(
                "tandem extension version {} (server speaks {TANDEM_PROTOCOL_VERSION})",
                h.version
            ),
        ));
    }
    let token = hello
        .as_ref()
        .and_then(|h| h.token.as_deref())
        .or(transport_token);
    let mut checked_token = None;
    let (user, role) = match auth.authenticate(token, room) {
        Ok(Some(grant)) => {
            checked_token = token.map(str::to_owned);
            (Some(grant.user), grant.role)
        }
        // Open mode keeps the pre-auth behaviour: anyone may do anything (the core rules
        // make creating a scene's root structure an admin's job, so "editor" would lock
        // every new scene out).
        Ok(None) => (hello.as_ref().and_then(|h| h.user.clone()), Role::Admin),
        Err(why) => {
            let reason = why.to_string();
            let message = if hello.is_some() {
                Message::TandemError(TandemError::new(
                    ErrorCode::Unauthorized,
                    reason.clone(),
                    None,
                    None,
                ))
            } else {
                Message::Error {
                    message: format!("{}: {reason}", ErrorCode::Unauthorized.as_str()),
                }
            };
            return Err(Box::new(Refusal {
                message: Some(message),
                code: close_code::POLICY,
                reason,
                error: ErrorCode::Unauthorized,
            }));
        }
    };
    let info = PeerInfo {
        peer_id: join.sender_id.clone(),
        user: user.clone(),
        role,
        tandem: hello.is_some(),
        storage_id: join
            .peer_metadata
            .as_ref()
            .and_then(|m| m.storage_id.clone()),
        token: checked_token,
    };
    let answer = Message::Peer(Peer {
        sender_id: server.peer_id.clone(),
        target_id: join.sender_id,
        selected_protocol_version: PROTOCOL_VERSION.into(),
        peer_metadata: Some(PeerMetadata {
            storage_id: Some(server.storage_id.clone()),
            is_ephemeral: false,
            // Only peers that announced the extension see the extension key.
            tandem: hello.map(|_| TandemHello {
                version: TANDEM_PROTOCOL_VERSION,
                room: Some(room.to_owned()),
                user,
                role: Some(role.to_string()),
                features: vec![FEATURE_SNAPSHOT.to_owned()],
                ..Default::default()
            }),
        }),
    });
    Ok((answer, info))
}

#[cfg(test)]
mod tests {
    use tandem_core::Role;
    use tandem_core::wire::{Join, Message};

    use super::*;

    fn server() -> ServerIdentity {
        ServerIdentity {
            peer_id: PeerId("srv".into()),
            storage_id: "st".into(),
        }
    }

    fn join(versions: &[&str], tandem: Option<u64>) -> Vec<u8> {
        Message::Join(Join {
            sender_id: PeerId("c".into()),
            supported_protocol_versions: versions.iter().map(|s| s.to_string()).collect(),
            peer_metadata: Some(PeerMetadata {
                tandem: tandem.map(|version| TandemHello {
                    version,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .encode()
    }

    #[test]
    fn stock_join_gets_a_plain_peer_answer() {
        let (answer, info) =
            accept_join(&join(&["1"], None), &server(), "r", None, &OpenAccess).unwrap();
        let Message::Peer(p) = answer else { panic!() };
        assert_eq!(p.target_id.as_str(), "c");
        assert!(p.peer_metadata.unwrap().tandem.is_none());
        assert!(!info.tandem);
    }

    #[test]
    fn tandem_join_is_answered_with_the_room() {
        let (answer, info) =
            accept_join(&join(&["1"], Some(1)), &server(), "r", None, &OpenAccess).unwrap();
        let Message::Peer(p) = answer else { panic!() };
        assert_eq!(
            p.peer_metadata.unwrap().tandem.unwrap().room.as_deref(),
            Some("r")
        );
        assert!(info.tandem);
    }

    #[test]
    fn version_mismatches_and_garbage_are_refused() {
        let r = accept_join(&join(&["2"], None), &server(), "r", None, &OpenAccess).unwrap_err();
        assert_eq!(r.error, ErrorCode::VersionMismatch);
        let r = accept_join(&join(&["1"], Some(9)), &server(), "r", None, &OpenAccess).unwrap_err();
        assert_eq!(r.error, ErrorCode::VersionMismatch);
        let r = accept_join(b"\x00garbage", &server(), "r", None, &OpenAccess).unwrap_err();
        assert_eq!(r.code, close_code::INVALID_PAYLOAD);
        let leave = Message::Leave {
            sender_id: PeerId("c".into()),
        }
        .encode();
        assert_eq!(
            accept_join(&leave, &server(), "r", None, &OpenAccess)
                .unwrap_err()
                .code,
            close_code::PROTOCOL
        );
    }

    struct OneToken;

    impl Authenticator for OneToken {
        fn authenticate(&self, token: Option<&str>, _: &str) -> Result<Option<Grant>, AuthFailure> {
            match token {
                Some("good") => Ok(Some(Grant {
                    user: "alice".into(),
                    role: Role::Viewer,
                })),
                Some(_) => Err(AuthFailure::Invalid),
                None => Err(AuthFailure::Missing),
            }
        }
    }

    #[test]
    fn the_authenticated_user_replaces_the_claimed_one_and_learns_its_role() {
        let frame = Message::Join(Join {
            sender_id: PeerId("c".into()),
            supported_protocol_versions: vec!["1".into()],
            peer_metadata: Some(PeerMetadata {
                tandem: Some(TandemHello {
                    version: 1,
                    user: Some("mallory".into()),
                    token: Some("good".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .encode();
        let (answer, info) = accept_join(&frame, &server(), "r", None, &OneToken).unwrap();
        assert_eq!(info.user.as_deref(), Some("alice"));
        assert_eq!(info.role, Role::Viewer);
        let Message::Peer(p) = answer else { panic!() };
        let hello = p.peer_metadata.unwrap().tandem.unwrap();
        assert_eq!(hello.role.as_deref(), Some("viewer"));
        assert_eq!(hello.user.as_deref(), Some("alice"));
    }

    #[test]
    fn missing_or_bad_tokens_never_join() {
        let r = accept_join(&join(&["1"], Some(1)), &server(), "r", None, &OneToken).unwrap_err();
        assert_eq!(r.error, ErrorCode::Unauthorized);
        assert_eq!(r.code, close_code::POLICY);
        assert!(matches!(r.message, Some(Message::TandemError(_))));
        let r =
            accept_join(&join(&["1"], None), &server(), "r", Some("bad"), &OneToken).unwrap_err();
        assert!(matches!(r.message, Some(Message::Error { .. })));
        // A stock peer can pass the token outside the join (URL query or header).
        let (_, info) =
            accept_join(&join(&["1"], None), &server(), "r", Some("good"), &OneToken).unwrap();
        assert_eq!(info.user.as_deref(), Some("alice"));
    }
}
