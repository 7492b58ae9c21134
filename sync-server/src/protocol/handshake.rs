//! The automerge-repo handshake: `join` in, `peer` (or `error`) out.

use tandem_core::wire::{
    self, ErrorCode, Message, PROTOCOL_VERSION, Peer, PeerId, PeerMetadata,
    TANDEM_PROTOCOL_VERSION, TandemHello,
};

use super::PeerInfo;
use super::close_code;

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

/// Handle the first frame of a connection.
pub fn accept_join(
    frame: &[u8],
    server: &ServerIdentity,
    room: &str,
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
    let join = match wire::decode(frame) {
        Ok(Message::Join(j)) => j,
        Ok(other) => {
            return Err(refuse(
                ErrorCode::BadMessage,
                close_code::PROTOCOL,
                format!("expected join, got {}", other.kind()),
            ));
        }
        Err(e) => {
            return Err(refuse(
                ErrorCode::BadMessage,
                close_code::INVALID_PAYLOAD,
                e.to_string(),
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
            format!(
                "unsupported protocol versions {:?}",
                join.supported_protocol_versions
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
    let info = PeerInfo {
        peer_id: join.sender_id.clone(),
        user: hello.as_ref().and_then(|h| h.user.clone()),
        tandem: hello.is_some(),
        storage_id: join
            .peer_metadata
            .as_ref()
            .and_then(|m| m.storage_id.clone()),
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
                ..Default::default()
            }),
        }),
    });
    Ok((answer, info))
}

#[cfg(test)]
mod tests {
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
        let (answer, info) = accept_join(&join(&["1"], None), &server(), "r").unwrap();
        let Message::Peer(p) = answer else { panic!() };
        assert_eq!(p.target_id.as_str(), "c");
        assert!(p.peer_metadata.unwrap().tandem.is_none());
        assert!(!info.tandem);
    }

    #[test]
    fn tandem_join_is_answered_with_the_room() {
        let (answer, info) = accept_join(&join(&["1"], Some(1)), &server(), "r").unwrap();
        let Message::Peer(p) = answer else { panic!() };
        assert_eq!(
            p.peer_metadata.unwrap().tandem.unwrap().room.as_deref(),
            Some("r")
        );
        assert!(info.tandem);
    }

    #[test]
    fn version_mismatches_and_garbage_are_refused() {
        let r = accept_join(&join(&["2"], None), &server(), "r").unwrap_err();
        assert_eq!(r.error, ErrorCode::VersionMismatch);
        let r = accept_join(&join(&["1"], Some(9)), &server(), "r").unwrap_err();
        assert_eq!(r.error, ErrorCode::VersionMismatch);
        let r = accept_join(b"\x00garbage", &server(), "r").unwrap_err();
        assert_eq!(r.code, close_code::INVALID_PAYLOAD);
        let leave = Message::Leave {
            sender_id: PeerId("c".into()),
        }
        .encode();
        assert_eq!(
            accept_join(&leave, &server(), "r").unwrap_err().code,
            close_code::PROTOCOL
        );
    }
}
