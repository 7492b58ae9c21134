//! Round trips and hostile input for the wire codec.

use ciborium::Value;

use super::*;

fn peer(s: &str) -> PeerId {
    PeerId(s.to_owned())
}

fn samples() -> Vec<Message> {
    let doc = DocumentId::random();
    vec![
        Message::Join(Join {
            sender_id: peer("a"),
            supported_protocol_versions: vec!["1".into()],
            peer_metadata: Some(PeerMetadata {
                storage_id: Some("s".into()),
                is_ephemeral: false,
                tandem: Some(TandemHello {
                    version: 1,
                    user: Some("ann".into()),
                    features: vec!["snapshot".into(), "later".into()],
                    ..Default::default()
                }),
            }),
        }),
        Message::Peer(Peer {
            sender_id: peer("srv"),
            target_id: peer("a"),
            selected_protocol_version: "1".into(),
            peer_metadata: Some(PeerMetadata::default()),
        }),
        Message::Error {
            message: "nope".into(),
        },
        Message::Leave {
            sender_id: peer("a"),
        },
        Message::Request(SyncMessage {
            sender_id: peer("a"),
            target_id: peer("b"),
            document_id: doc.clone(),
            data: vec![0x42, 1, 2],
            request_id: None,
        }),
        Message::Sync(SyncMessage {
            sender_id: peer("a"),
            target_id: peer("b"),
            document_id: doc.clone(),
            data: vec![],
            request_id: Some(7),
        }),
        Message::DocUnavailable {
            sender_id: peer("a"),
            target_id: peer("b"),
            document_id: doc.clone(),
        },
        Message::Ephemeral(Ephemeral {
            sender_id: peer("a"),
            target_id: peer("b"),
            count: 3,
            session_id: "x".into(),
            document_id: doc.clone(),
            data: vec![1],
        }),
        Message::RemoteSubscriptionChange {
            sender_id: peer("a"),
            target_id: peer("b"),
            add: vec!["s1".into()],
            remove: vec![],
        },
        Message::RemoteHeadsChanged(RemoteHeadsChanged {
            sender_id: peer("a"),
            target_id: peer("b"),
            document_id: doc.clone(),
            new_heads: vec![StorageHeads {
                storage_id: "s1".into(),
                heads: vec!["h".into()],
                timestamp: 5,
            }],
        }),
        Message::TandemAck(Ack {
            document_id: doc.clone(),
            heads: vec!["ab".into()],
            request_id: Some(1),
        }),
        Message::TandemError(TandemError::new(
            ErrorCode::TooLarge,
            "frame too large",
            Some(doc.clone()),
            None,
        )),
        Message::TandemError(TandemError {
            node: Some("6f1c0e4e-0000-4000-8000-000000000001".into()),
            field: Some("parm:x".into()),
            rule: Some("locked by alice".into()),
            ..TandemError::new(
                ErrorCode::Forbidden,
                "x of node 6f1c...: locked by alice",
                Some(doc.clone()),
                Some(7),
            )
        }),
        Message::TandemChat(ChatMessage {
            id: Some(1),
            user: Some("ann".into()),
            text: "hi".into(),
            timestamp: Some(2),
            request_id: None,
        }),
        Message::TandemSnapshotRequest(SnapshotRequest {
            document_id: doc.clone(),
            request_id: Some(3),
        }),
        Message::TandemSnapshot(Snapshot {
            document_id: doc.clone(),
            heads: vec!["ab".repeat(32)],
            doc: Some(vec![1, 2, 3]),
            index: Some(vec![4, 5]),
            request_id: Some(3),
        }),
        Message::TandemSnapshot(Snapshot {
            document_id: doc.clone(),
            heads: vec![],
            doc: None,
            index: None,
            request_id: None,
        }),
    ]
}

#[test]
fn every_message_round_trips() {
    for m in samples() {
        let bytes = encode(&m);
        assert_eq!(decode(&bytes).as_ref(), Ok(&m), "{}", m.kind());
    }
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for m in samples() {
        let bytes = encode(&m);
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "{} cut at {n}", m.kind());
        }
    }
}

#[test]
fn flipped_bytes_never_panic() {
    for m in samples() {
        let bytes = encode(&m);
        for i in 0..bytes.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= x;
                let _ = decode(&b);
            }
        }
    }
}

#[test]
fn huge_declared_lengths_are_refused_without_allocating() {
    // A byte string, a text string, an array and a map each claiming 2^62 items.
    for major in [0x5bu8, 0x7b, 0x9b, 0xbb] {
        let mut b = vec![0xa1, 0x64, b't', b'y', b'p', b'e', major];
        b.extend_from_slice(&(1u64 << 62).to_be_bytes());
        assert!(decode(&b).is_err());
    }
}

#[test]
fn deep_nesting_is_refused() {
    let mut b = vec![0x81u8; 100_000];
    b.push(0x00);
    assert!(decode(&b).is_err());
}

#[test]
fn garbage_and_non_maps_are_errors() {
    assert!(matches!(decode(b""), Err(WireError::Cbor(_))));
    assert_eq!(decode(&[0x01]), Err(WireError::NotAMap));
    assert!(decode(b"\xff\xfe\xfd").is_err());
    let no_type = super::codec::encode_value(&Value::Map(vec![]));
    assert_eq!(decode(&no_type), Err(WireError::MissingType));
}

#[test]
fn unknown_types_and_bad_document_ids_are_errors() {
    let v = Value::Map(vec![(
        Value::Text("type".into()),
        Value::Text("bogus".into()),
    )]);
    assert!(decode(&super::codec::encode_value(&v)).is_err());
    let v = Value::Map(vec![
        (Value::Text("type".into()), Value::Text("sync".into())),
        (Value::Text("senderId".into()), Value::Text("a".into())),
        (Value::Text("targetId".into()), Value::Text("b".into())),
        (
            Value::Text("documentId".into()),
            Value::Text("not-a-doc".into()),
        ),
        (Value::Text("data".into()), Value::Bytes(vec![])),
    ]);
    assert!(matches!(
        decode(&super::codec::encode_value(&v)),
        Err(WireError::InvalidDocumentId(_))
    ));
}

#[test]
fn js_style_float_counts_and_bare_version_string_are_accepted() {
    let doc = DocumentId::random();
    let v = Value::Map(vec![
        (Value::Text("type".into()), Value::Text("ephemeral".into())),
        (Value::Text("senderId".into()), Value::Text("a".into())),
        (Value::Text("targetId".into()), Value::Text("b".into())),
        (Value::Text("count".into()), Value::Float(4.0)),
        (Value::Text("sessionId".into()), Value::Text("s".into())),
        (
            Value::Text("documentId".into()),
            Value::Text(doc.to_string()),
        ),
        (Value::Text("data".into()), Value::Bytes(vec![])),
        (Value::Text("extra".into()), Value::Null),
    ]);
    let Ok(Message::Ephemeral(e)) = decode(&super::codec::encode_value(&v)) else {
        panic!()
    };
    assert_eq!(e.count, 4);
    let v = Value::Map(vec![
        (Value::Text("type".into()), Value::Text("join".into())),
        (Value::Text("senderId".into()), Value::Text("a".into())),
        (
            Value::Text("supportedProtocolVersions".into()),
            Value::Text("1".into()),
        ),
    ]);
    let Ok(Message::Join(j)) = decode(&super::codec::encode_value(&v)) else {
        panic!()
    };
    assert_eq!(j.supported_protocol_versions, vec!["1".to_owned()]);
}
