//! The stored record of one [`UserState`]: a versioned, compact binary
//! format shared by every backend (the embedded store's values and the Redis
//! values are the same bytes).
//!
//! Layout of format version 1:
//!
//! ```text
//! byte 0       format version (1)
//! bytes 1..5   CRC-32 (IEEE, little-endian) of the payload
//! bytes 5..    payload: the UserState in postcard (serde, varint lengths)
//! ```
//!
//! A record whose first byte is not a known version, whose checksum does not
//! match, or whose payload does not decode exactly (trailing bytes included)
//! is [`Error::Corrupt`]; decoding never panics on any input. A future format
//! adds a version and keeps decoding the old ones.

use crate::{Error, Result, UserState};

/// The format [`encode`] writes.
pub const FORMAT_VERSION: u8 = 1;

const HEADER: usize = 5;

/// Encodes `state` as a record of [`FORMAT_VERSION`].
pub fn encode(state: &UserState) -> Result<Vec<u8>> {
    let header = vec![FORMAT_VERSION, 0, 0, 0, 0];
    let mut out = postcard::to_extend(state, header).map_err(|e| Error::Invalid {
        message: format!("user {:?}: state cannot be encoded: {e}", state.user_id),
    })?;
    let crc = crc32fast::hash(&out[HEADER..]);
    out[1..HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes a record. `store` and `user` only name the record in the error.
pub fn decode(bytes: &[u8], store: &str, user: &str) -> Result<UserState> {
    let corrupt = |message: String| Error::Corrupt {
        store: store.to_owned(),
        user: user.to_owned(),
        message,
    };
    let Some((&version, rest)) = bytes.split_first() else {
        return Err(corrupt("empty record".to_owned()));
    };
    if version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "unknown record format version {version} (this build reads {FORMAT_VERSION})"
        )));
    }
    let Some((crc, payload)) = rest.split_first_chunk::<4>() else {
        return Err(corrupt(format!(
            "record of {} bytes is shorter than its header",
            bytes.len()
        )));
    };
    let (want, got) = (u32::from_le_bytes(*crc), crc32fast::hash(payload));
    if want != got {
        return Err(corrupt(format!(
            "checksum mismatch (stored {want:08x}, computed {got:08x})"
        )));
    }
    let (state, trailing) = postcard::take_from_bytes::<UserState>(payload)
        .map_err(|e| corrupt(format!("payload does not decode: {e}")))?;
    if !trailing.is_empty() {
        return Err(corrupt(format!(
            "{} trailing bytes after the record",
            trailing.len()
        )));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoredEvent;
    use profiled_model::FieldValue;
    use proptest::prelude::*;

    fn sample() -> UserState {
        UserState {
            user_id: "user-ü".into(),
            version: 42,
            fields: [
                ("age".to_owned(), FieldValue::Number(34.5)),
                ("job".to_owned(), FieldValue::Categorical("eng".into())),
                (
                    "genres".to_owned(),
                    FieldValue::Tags(vec![("Drama".into(), 0.6), ("Comedy".into(), 0.4)]),
                ),
            ]
            .into_iter()
            .collect(),
            events: vec![
                StoredEvent {
                    item: "i1".into(),
                    timestamp: -5,
                    rating: Some(4.5),
                    event_id: Some("e1".into()),
                },
                StoredEvent {
                    item: "i2".into(),
                    timestamp: 1_700_000_000,
                    rating: None,
                    event_id: None,
                },
            ],
            updated_ms: 1_700_000_000_123,
            erased: false,
        }
    }

    #[test]
    fn round_trip() -> Result<()> {
        let s = sample();
        let bytes = encode(&s)?;
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode(&bytes, "t", "u")?, s);
        let tomb = UserState {
            user_id: "x".into(),
            version: 3,
            erased: true,
            ..UserState::default()
        };
        assert_eq!(decode(&encode(&tomb)?, "t", "x")?, tomb);
        Ok(())
    }

    #[test]
    fn unknown_version_truncation_and_bit_flips_are_corrupt() -> Result<()> {
        let bytes = encode(&sample())?;
        let mut v2 = bytes.clone();
        v2[0] = 2;
        let err = decode(&v2, "store-x", "user-y").err();
        match err {
            Some(Error::Corrupt {
                store,
                user,
                message,
            }) => {
                assert_eq!((store.as_str(), user.as_str()), ("store-x", "user-y"));
                assert!(message.contains("version 2"), "{message}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        for cut in 0..bytes.len() {
            assert!(matches!(
                decode(&bytes[..cut], "t", "u"),
                Err(Error::Corrupt { .. })
            ));
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(
            decode(&extra, "t", "u"),
            Err(Error::Corrupt { .. })
        ));
        for i in 1..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            assert!(
                matches!(decode(&flipped, "t", "u"), Err(Error::Corrupt { .. })),
                "flip at {i}"
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes, "t", "u");
        }

        /// Arbitrary payloads behind a valid header and checksum reach the
        /// postcard decoder itself (random bytes almost never pass the CRC).
        #[test]
        fn decoding_arbitrary_payloads_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = vec![FORMAT_VERSION];
            bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
            let _ = decode(&bytes, "t", "u");
        }

        #[test]
        fn mutated_records_never_panic(pos in 0usize..200, byte in any::<u8>()) {
            let mut bytes = encode(&sample())?;
            let pos = pos % bytes.len();
            bytes[pos] = byte;
            // Recompute the checksum so the payload decoder sees the mutation.
            let crc = crc32fast::hash(&bytes[HEADER..]);
            bytes[1..HEADER].copy_from_slice(&crc.to_le_bytes());
            let _ = decode(&bytes, "t", "u");
        }
    }
}
