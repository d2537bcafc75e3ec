//! Topic IDs: the identity Kafka gives a topic when it is created (KIP-516). A topic
//! deleted and created again under the same name gets a new one, so an ID recorded with
//! the copies tells whether the source topic is still the one they were made from.
//!
//! Why this module holds `unsafe` (as does [`crate::group_offsets`], whose request helper
//! it uses): rust-rdkafka 0.39 does not wrap librdkafka's DescribeTopics, and its
//! metadata does not carry topic IDs. The unsafe surface is the call and the reading of
//! its result event, whose strings are copied out before the event is destroyed.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

use crate::group_offsets::{c_string, failed, text, Requests};
use crate::OffsetSyncError;

/// A topic's ID as Kafka's tools print it (`kafka-topics.sh --describe`): the URL-safe
/// base64 of its 16 bytes, without padding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicId(pub String);

/// The all-zero ID: what a cluster without topic IDs answers (Kafka before 2.8, and
/// Kafka-compatible services that do not keep them). It identifies nothing.
const NO_ID: &str = "AAAAAAAAAAAAAAAAAAAAAA";

/// The IDs of those of `topics` the cluster has and can name: a topic that does not exist,
/// that this client may not describe, or that the cluster gives no ID is left out, and a
/// caller then has no ID to compare. An error is the whole call's (no answer, or a
/// cluster that does not implement it).
pub fn topic_ids<C: ClientContext>(
    client: &Client<C>,
    topics: &[&str],
    timeout: Duration,
) -> Result<HashMap<String, TopicId>, OffsetSyncError> {
    describe_topic_ids(client, topics, timeout)
        .map_err(|e| OffsetSyncError::admin("describing topics for their IDs", e))
}

fn describe_topic_ids<C: ClientContext>(
    client: &Client<C>,
    topics: &[&str],
    timeout: Duration,
) -> Result<HashMap<String, TopicId>, crate::group_offsets::AdminCallError> {
    if topics.is_empty() {
        return Ok(HashMap::new());
    }
    let names: Vec<CString> = topics
        .iter()
        .map(|t| c_string(t))
        .collect::<Result<_, _>>()?;
    let requests = Requests::new(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        rd::RD_KAFKA_EVENT_DESCRIBETOPICS_RESULT,
        timeout,
    )?;
    let sent = requests.send(0, |rk, options, queue| {
        let mut pointers: Vec<*const std::ffi::c_char> = names.iter().map(|n| n.as_ptr()).collect();
        // SAFETY: the names outlive the call; librdkafka copies them into the collection,
        // and the call copies the collection and the options, so it is destroyed right
        // after.
        unsafe {
            let collection =
                rd::rd_kafka_TopicCollection_of_topic_names(pointers.as_mut_ptr(), pointers.len());
            rd::rd_kafka_DescribeTopics(rk, collection, options, queue);
            rd::rd_kafka_TopicCollection_destroy(collection);
        }
    });
    let mut results = requests.collect(vec![sent], |event| {
        // SAFETY: `event` is a live DescribeTopics result event (checked by `collect`);
        // the descriptions, their names, errors and IDs belong to it and are copied.
        unsafe {
            let result = rd::rd_kafka_event_DescribeTopics_result(event);
            let mut count = 0usize;
            let descriptions = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
            let mut ids = HashMap::new();
            if descriptions.is_null() {
                return Ok(ids);
            }
            for i in 0..count {
                let description = *descriptions.add(i);
                if !rd::rd_kafka_TopicDescription_error(description).is_null() {
                    continue;
                }
                let id = rd::rd_kafka_TopicDescription_topic_id(description);
                if id.is_null() {
                    continue;
                }
                // librdkafka writes the standard alphabet; Kafka's tools the URL-safe one.
                let id = text(rd::rd_kafka_Uuid_base64str(id))
                    .replace('+', "-")
                    .replace('/', "_");
                if id.is_empty() || id == NO_ID {
                    continue;
                }
                ids.insert(
                    text(rd::rd_kafka_TopicDescription_name(description)),
                    TopicId(id),
                );
            }
            Ok(ids)
        }
    });
    results.pop().unwrap_or_else(|| Err(failed("no result")))
}
