//! What verification compares about a record: a digest over its content, and a short
//! human summary for reports.

use rdkafka::message::{Headers, Message, Timestamp};
use serde::Serialize;
use strait_replicator::{copied_from, Provenance, PROVENANCE_HEADER, TOPIC_ID_HEADER};
use xxhash_rust::xxh3::Xxh3;

/// What is compared of a record: its timestamp, and a hash of the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digest {
    /// xxh3-128 over key, value and headers.
    pub content: u128,
    /// Milliseconds since the epoch, -1 for none.
    pub timestamp: i64,
    /// The broker set the timestamp (`message.timestamp.type=LogAppendTime`), whatever
    /// the producer sent.
    pub stamped_by_broker: bool,
}

impl Digest {
    /// Whether a record with this digest is a faithful copy of one with `original`'s. A
    /// copy on a topic that stamps records with the broker's clock cannot keep its
    /// original's timestamp, so only the rest is compared then.
    pub(crate) fn is_copy_of(&self, original: &Digest) -> bool {
        self.content == original.content
            && (self.stamped_by_broker || self.timestamp == original.timestamp)
    }

    pub(crate) fn to_le_bytes(self) -> [u8; 24] {
        let mut bytes = [0; 24];
        bytes[..16].copy_from_slice(&self.content.to_le_bytes());
        bytes[16..].copy_from_slice(&self.timestamp.to_le_bytes());
        bytes
    }
}

/// Whether a record is a copy from `cluster`: one of its provenance headers (of any hop)
/// names it.
pub(crate) fn is_copy_from<M: Message>(msg: &M, cluster: &str) -> bool {
    msg.headers().is_some_and(|headers| {
        headers
            .iter()
            .any(|h| copied_from((h.key.as_bytes(), h.value), cluster).is_some())
    })
}

/// xxh3-128 over key, value and headers (in order), with null kept distinct from empty
/// everywhere, and the timestamp beside it. On a copy from `copy_of` (the source
/// cluster's name), a last provenance header naming that cluster is Strait's own stamp
/// (on anchors only), not part of the copied content, and is left out, with the source
/// topic ID header written just before it; one naming another cluster came with the
/// source record.
pub(crate) fn digest<M: Message>(msg: &M, copy_of: Option<&str>, hasher: &mut Xxh3) -> Digest {
    hasher.reset();
    hash_optional(hasher, msg.key());
    hash_optional(hasher, msg.payload());
    if let Some(headers) = msg.headers() {
        let mut count = headers.count();
        if let Some(cluster) = copy_of {
            let last = (count > 0).then(|| headers.get(count - 1));
            let ours = last.is_some_and(|h| {
                h.key == PROVENANCE_HEADER
                    && h.value
                        .and_then(Provenance::decode)
                        .is_some_and(|p| p.cluster == cluster)
            });
            if ours {
                count -= 1;
                // With the source topic's ID just before it, also Strait's.
                if count > 0 && headers.get(count - 1).key == TOPIC_ID_HEADER {
                    count -= 1;
                }
            }
        }
        hasher.update(&(count as u64).to_le_bytes());
        for i in 0..count {
            let header = headers.get(i);
            hash_optional(hasher, Some(header.key.as_bytes()));
            hash_optional(hasher, header.value);
        }
    } else {
        hasher.update(&0u64.to_le_bytes());
    }
    Digest {
        content: hasher.digest128(),
        timestamp: msg.timestamp().to_millis().unwrap_or(-1),
        stamped_by_broker: matches!(msg.timestamp(), Timestamp::LogAppendTime(_)),
    }
}

fn hash_optional(hasher: &mut Xxh3, bytes: Option<&[u8]>) {
    match bytes {
        None => hasher.update(&[0]),
        Some(b) => {
            hasher.update(&[1]);
            hasher.update(&(b.len() as u64).to_le_bytes());
            hasher.update(b);
        }
    }
}

/// A record as a mismatch report shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecordSummary {
    pub offset: i64,
    /// Milliseconds since the epoch.
    pub timestamp: Option<i64>,
    /// UTF-8 (lossy), cut to 64 characters; `None` for a null key.
    pub key: Option<String>,
    /// `None` for a null value (a tombstone).
    pub value_bytes: Option<usize>,
    /// The start of the value, UTF-8 (lossy), cut to 64 characters.
    pub value_preview: Option<String>,
    pub headers: usize,
    /// On a target record: the source offset it is a copy of, as its provenance header
    /// names it, or (for a differing copy between anchors, which carries no header) as
    /// found by content among the next 1,000 source records.
    pub copy_of_source_offset: Option<i64>,
}

impl RecordSummary {
    pub(crate) fn of<M: Message>(msg: &M) -> Self {
        let provenance = msg.headers().and_then(|h| {
            h.iter()
                .filter(|h| h.key == PROVENANCE_HEADER)
                .last()
                .and_then(|h| h.value.and_then(Provenance::decode))
                .map(|p| p.offset)
        });
        Self {
            offset: msg.offset(),
            timestamp: msg.timestamp().to_millis(),
            key: msg.key().map(preview),
            value_bytes: msg.payload().map(<[u8]>::len),
            value_preview: msg.payload().map(preview),
            headers: msg.headers().map_or(0, |h| h.count()),
            copy_of_source_offset: provenance,
        }
    }
}

impl std::fmt::Display for RecordSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "offset {}", self.offset)?;
        match self.timestamp {
            Some(ts) => write!(f, ", timestamp {ts}")?,
            None => write!(f, ", no timestamp")?,
        }
        match &self.key {
            Some(k) => write!(f, ", key {k:?}")?,
            None => write!(f, ", null key")?,
        }
        match (&self.value_bytes, &self.value_preview) {
            (Some(n), Some(p)) => write!(f, ", value {n} bytes {p:?}")?,
            _ => write!(f, ", null value")?,
        }
        write!(f, ", {} headers", self.headers)?;
        if let Some(s) = self.copy_of_source_offset {
            write!(f, ", copy of source offset {s}")?;
        }
        Ok(())
    }
}

fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut cut: String = text.chars().take(64).collect();
    if text.chars().nth(64).is_some() {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

    fn message(value: Option<&[u8]>, headers: OwnedHeaders) -> OwnedMessage {
        OwnedMessage::new(
            value.map(<[u8]>::to_vec),
            Some(b"k".to_vec()),
            "t".into(),
            Timestamp::CreateTime(42),
            0,
            7,
            Some(headers),
        )
    }

    #[test]
    fn null_and_empty_differ_and_our_stamp_is_ignored_on_copies() {
        let mut h = Xxh3::new();
        let plain = OwnedHeaders::new().insert(Header {
            key: "a",
            value: Some(b""),
        });
        let null_header = OwnedHeaders::new().insert(Header::<&[u8]> {
            key: "a",
            value: None,
        });
        let original = digest(&message(Some(b"v"), plain.clone()), None, &mut h);
        assert_ne!(
            original,
            digest(&message(Some(b"v"), null_header), None, &mut h)
        );
        assert_ne!(
            original,
            digest(&message(None, plain.clone()), None, &mut h)
        );
        assert_ne!(
            original,
            digest(&message(Some(b""), plain.clone()), None, &mut h)
        );
        let stamped = plain.clone().insert(Header {
            key: PROVENANCE_HEADER,
            value: Some(b"a/t/0/7"),
        });
        let copy = message(Some(b"v"), stamped);
        assert_eq!(original, digest(&copy, Some("a"), &mut h));
        assert_ne!(original, digest(&copy, None, &mut h));
        // An upstream copier's stamp (another cluster) is part of the source record.
        assert_ne!(original, digest(&copy, Some("b"), &mut h));
        assert_eq!(RecordSummary::of(&copy).copy_of_source_offset, Some(7));
        // An anchor with the source topic's ID before the stamp: both are Strait's.
        let with_id = plain
            .insert(Header {
                key: TOPIC_ID_HEADER,
                value: Some(b"q1Vs3yJzQ2-Xb_6QfS0Lbg"),
            })
            .insert(Header {
                key: PROVENANCE_HEADER,
                value: Some(b"a/t/0/7"),
            });
        assert_eq!(
            original,
            digest(&message(Some(b"v"), with_id), Some("a"), &mut h)
        );
    }

    #[test]
    fn a_copy_from_a_cluster_is_told_by_any_of_its_provenance_headers() {
        let hop = |cluster: &'static [u8]| Header {
            key: PROVENANCE_HEADER,
            value: Some(cluster),
        };
        let from_b = message(Some(b"v"), OwnedHeaders::new().insert(hop(b"b/t/0/7")));
        assert!(is_copy_from(&from_b, "b"));
        assert!(!is_copy_from(&from_b, "a"));
        // Copied from b to c, then on: still a copy from b.
        let chain = OwnedHeaders::new()
            .insert(hop(b"b/t/0/7"))
            .insert(hop(b"c/t/0/9"));
        assert!(is_copy_from(&message(Some(b"v"), chain), "b"));
        let plain = OwnedHeaders::new().insert(Header {
            key: "strait.sourcex",
            value: Some(b"b/t/0/7"),
        });
        assert!(!is_copy_from(&message(Some(b"v"), plain), "b"));
    }

    #[test]
    fn a_copy_stamped_by_its_broker_matches_whatever_its_timestamp() {
        let mut h = Xxh3::new();
        let mut at = |value: &[u8], timestamp| {
            let m = OwnedMessage::new(
                Some(value.to_vec()),
                None,
                "t".into(),
                timestamp,
                0,
                0,
                None,
            );
            digest(&m, None, &mut h)
        };
        let original = at(b"v", Timestamp::CreateTime(42));
        assert!(at(b"v", Timestamp::CreateTime(42)).is_copy_of(&original));
        assert!(!at(b"v", Timestamp::CreateTime(43)).is_copy_of(&original));
        assert!(at(b"v", Timestamp::LogAppendTime(99)).is_copy_of(&original));
        assert!(!at(b"w", Timestamp::LogAppendTime(42)).is_copy_of(&original));
    }
}
