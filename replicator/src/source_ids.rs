//! Which incarnation of each source topic a flow copies: its topic ID (KIP-516).
//!
//! A topic deleted and created again under the same name is another topic: its offsets
//! start again, and its records are not the ones already copied. Kafka deletes the
//! group's commits with the old topic, so a name alone would resume the new topic after
//! the old one's copies, skipping or mislabelling its records. The ID is written where
//! the flow's progress is kept, and compared with the source's at every assignment:
//! - in the source commit's metadata ([`crate::fence::CommitMetadata`]), next to the
//!   target position;
//! - in a header on each anchor copy ([`TOPIC_ID_HEADER`]), which outlives the commits.
//!
//! A different ID is a topic created again ([`crate::ReplicatorError::SourceTopicReplaced`]):
//! copying it stops while the flow's other topics go on, or with
//! `on_source_topic_recreated = "continue"` the new topic is copied after the old one's
//! copies. A topic created again while the flow runs is found at the next topic refresh,
//! which restarts the pipeline so that the assignment compares.
//!
//! Where no ID is known (a cluster without topic IDs, or copies and commits made before
//! Strait recorded them), the record comparison in the assignment decides instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use strait_offset_sync::{topic_ids, TopicId};
use tracing::debug;

use crate::ReplicatorError;

/// Header on anchor copies: the ID of the source topic the copy was made from.
pub const TOPIC_ID_HEADER: &str = "strait.source.topic_id";

/// DescribeTopics is a metadata request; a cluster that does not answer it in this time
/// leaves the IDs unknown for this round.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ID each source topic had when this pipeline run first saw it.
#[derive(Debug, Default)]
pub(crate) struct SourceTopicIds(Mutex<HashMap<String, TopicId>>);

/// A source topic whose ID is no longer the one this pipeline run copies from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdChanged {
    pub topic: String,
    pub was: TopicId,
    pub now: TopicId,
}

impl SourceTopicIds {
    /// Asks the source for the IDs of `topics`, keeps those seen for the first time, and
    /// returns the topics whose ID changed since (kept as first seen). IDs the source
    /// cannot give are left unknown: a failed request is logged and changes nothing.
    fn refresh<C: ClientContext>(&self, client: &Client<C>, topics: &[&str]) -> Vec<IdChanged> {
        match topic_ids(client, topics, DESCRIBE_TIMEOUT) {
            Ok(now) => self.update(now),
            Err(e) => {
                debug!(error = %e, "source topic IDs not read; the record comparison decides");
                Vec::new()
            }
        }
    }

    /// [`Self::refresh`], with a changed ID as the error that restarts the pipeline
    /// ([`ReplicatorError::SourceTopicIdChanged`]): its next assignment then compares the
    /// new ID with those recorded.
    pub(crate) fn check<C: ClientContext>(
        &self,
        client: &Client<C>,
        topics: &[&str],
    ) -> Result<(), ReplicatorError> {
        match self.refresh(client, topics).into_iter().next() {
            Some(changed) => Err(ReplicatorError::SourceTopicIdChanged {
                topic: changed.topic,
                was: changed.was.0,
                now: changed.now.0,
            }),
            None => Ok(()),
        }
    }

    fn update(&self, now: HashMap<String, TopicId>) -> Vec<IdChanged> {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = Vec::new();
        for (topic, id) in now {
            match known.get(&topic) {
                Some(was) if *was != id => changed.push(IdChanged {
                    topic,
                    was: was.clone(),
                    now: id,
                }),
                Some(_) => {}
                None => {
                    known.insert(topic, id);
                }
            }
        }
        changed.sort_by(|a, b| a.topic.cmp(&b.topic));
        changed
    }

    pub(crate) fn get(&self, topic: &str) -> Option<TopicId> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .cloned()
    }
}

/// Whether progress recorded for the source topic with ID `recorded` belongs to another
/// topic than the one with ID `current`. Only two known, different IDs say so: an
/// unknown one on either side says nothing.
pub(crate) fn is_other_topic(recorded: Option<&str>, current: Option<&TopicId>) -> bool {
    matches!((recorded, current), (Some(r), Some(c)) if !same_topic_id(r, &c.0))
}

/// Whether two topic IDs are one, written in either base64 alphabet.
pub(crate) fn same_topic_id(a: &str, b: &str) -> bool {
    url_safe(a) == url_safe(b)
}

/// An ID in base64's URL-safe alphabet without padding, as Kafka's tools print it:
/// librdkafka and other clients write the standard alphabet.
fn url_safe(id: &str) -> String {
    id.trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> TopicId {
        TopicId(s.to_string())
    }

    #[test]
    fn only_two_known_different_ids_are_another_topic() {
        assert!(is_other_topic(Some("a"), Some(&id("b"))));
        assert!(!is_other_topic(Some("a"), Some(&id("a"))));
        assert!(!is_other_topic(None, Some(&id("a"))));
        assert!(!is_other_topic(Some("a"), None));
        assert!(!is_other_topic(None, None));
        // One ID in either base64 alphabet, with or without padding.
        assert!(!is_other_topic(
            Some("jGT4xD+YT86PGm1Dgfx0Pg=="),
            Some(&id("jGT4xD-YT86PGm1Dgfx0Pg"))
        ));
        assert!(is_other_topic(
            Some("jGT4xD+YT86PGm1Dgfx0Pg"),
            Some(&id("jGT4xD-YT86PGm1Dgfx0Ph"))
        ));
    }

    #[test]
    fn a_changed_id_is_reported_and_the_first_one_kept() {
        let ids = SourceTopicIds::default();
        let first = HashMap::from([("t".to_string(), id("one")), ("u".to_string(), id("u1"))]);
        assert!(ids.update(first).is_empty());
        let again = HashMap::from([("t".to_string(), id("two")), ("u".to_string(), id("u1"))]);
        assert_eq!(
            ids.update(again),
            vec![IdChanged {
                topic: "t".into(),
                was: id("one"),
                now: id("two")
            }]
        );
        assert_eq!(ids.get("t"), Some(id("one")));
        assert_eq!(ids.get("missing"), None);
    }
}
