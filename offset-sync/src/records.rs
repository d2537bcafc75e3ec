//! How map updates and checkpoints are laid out as Kafka records in Strait's compacted
//! topics. Keys are chosen so that log compaction keeps exactly what is still needed:
//! the newest version of each segment, of each partition's coverage, and of each
//! (group, partition) checkpoint.

use serde::{Deserialize, Serialize};

use crate::map::{MapUpdate, Segment};

/// A map update for one source partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRecord {
    pub topic: String,
    pub partition: i32,
    pub update: MapUpdate,
}

impl MapRecord {
    /// `<topic>/<partition>/s/<source start>` for a segment, `<topic>/<partition>/c` for
    /// coverage, `<topic>/<partition>/e` for an epoch. Topic names cannot contain '/', so
    /// the key is unambiguous.
    pub fn key(&self) -> String {
        match &self.update {
            MapUpdate::Segment(s) => format!("{}/{}/s/{}", self.topic, self.partition, s.source),
            MapUpdate::Coverage(_) => format!("{}/{}/c", self.topic, self.partition),
            MapUpdate::Epoch(_) => format!("{}/{}/e", self.topic, self.partition),
        }
    }

    pub fn value(&self) -> Vec<u8> {
        // Serialising plain structs of integers and strings cannot fail.
        match &self.update {
            MapUpdate::Segment(s) => serde_json::to_vec(s),
            MapUpdate::Coverage(c) => serde_json::to_vec(c),
            MapUpdate::Epoch(e) => serde_json::to_vec(e),
        }
        .unwrap_or_default()
    }

    /// `None` for a record that is not a map update (or a tombstone).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<Self> {
        let key = std::str::from_utf8(key).ok()?;
        let value = value?;
        let mut parts = key.rsplitn(4, '/');
        let last = parts.next()?;
        if last == "c" || last == "e" {
            // `<topic>/<partition>/c` or `<topic>/<partition>/e`
            let mut parts = key.rsplitn(3, '/').skip(1);
            let partition = parts.next()?.parse().ok()?;
            let topic = parts.next()?.to_string();
            let update = if last == "c" {
                MapUpdate::Coverage(serde_json::from_slice(value).ok()?)
            } else {
                MapUpdate::Epoch(serde_json::from_slice(value).ok()?)
            };
            return Some(Self {
                topic,
                partition,
                update,
            });
        }
        let kind = parts.next()?;
        let partition = parts.next()?.parse().ok()?;
        let topic = parts.next()?.to_string();
        if kind != "s" {
            return None;
        }
        let segment: Segment = serde_json::from_slice(value).ok()?;
        (last.parse::<i64>().ok()? == segment.source).then_some(Self {
            topic,
            partition,
            update: MapUpdate::Segment(segment),
        })
    }
}

/// A group's translated position on one partition, written to the checkpoint topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub group: String,
    /// Source topic.
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset on the source.
    pub source_offset: i64,
    /// Where the same group starts on the target; `None` while the translation is
    /// pending (the source offset is kept, so it can be translated later from the
    /// target alone).
    pub target_topic: String,
    pub target_offset: Option<i64>,
    /// When the source offset was read, in milliseconds since the Unix epoch.
    pub read_at_ms: i64,
}

#[derive(Serialize)]
struct CheckpointKey<'a> {
    group: &'a str,
    topic: &'a str,
    partition: i32,
}

impl Checkpoint {
    /// JSON of (group, topic, partition): group names may contain any character.
    pub fn key(&self) -> Vec<u8> {
        serde_json::to_vec(&CheckpointKey {
            group: &self.group,
            topic: &self.topic,
            partition: self.partition,
        })
        .unwrap_or_default()
    }

    pub fn value(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(value: Option<&[u8]>) -> Option<Self> {
        serde_json::from_slice(value?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{Coverage, Epoch};

    #[test]
    fn map_records_round_trip() {
        for update in [
            MapUpdate::Segment(Segment {
                source: 17,
                target: 3,
                len: 9,
            }),
            MapUpdate::Coverage(Coverage {
                from: 0,
                through: 30,
                target_next: 12,
            }),
            MapUpdate::Epoch(Epoch {
                topic_id: Some("q1Vs3yJzQ2-Xb_6QfS0Lbg".into()),
                target_from: 1_000,
            }),
        ] {
            let r = MapRecord {
                topic: "orders.eu-1".into(),
                partition: 11,
                update,
            };
            assert_eq!(
                MapRecord::decode(r.key().as_bytes(), Some(&r.value())),
                Some(r)
            );
        }
        assert_eq!(MapRecord::decode(b"t/0/s/5", None), None, "tombstone");
        assert_eq!(
            MapRecord::decode(b"t/0/s/5", Some(br#"{"source":6,"target":0,"len":1}"#)),
            None,
            "key and value disagree"
        );
    }

    #[test]
    fn checkpoint_keys_separate_groups_with_odd_names() {
        let a = Checkpoint {
            group: "a/b".into(),
            topic: "t".into(),
            partition: 0,
            source_offset: 1,
            target_topic: "t".into(),
            target_offset: Some(1),
            read_at_ms: 0,
        };
        let b = Checkpoint {
            group: "a".into(),
            topic: "b/t".into(),
            ..a.clone()
        };
        assert_ne!(a.key(), b.key());
        assert_eq!(Checkpoint::decode(Some(&a.value())), Some(a));
    }
}
