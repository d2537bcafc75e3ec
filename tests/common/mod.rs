//! Shared helpers for the integration tests. They need the real test bed:
//! primary on 127.0.0.1:19092 and secondary on 127.0.0.1:29092 (`scripts/kafka.sh start`).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use rand::Rng;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

pub const PRIMARY: &str = "127.0.0.1:19092";
pub const SECONDARY: &str = "127.0.0.1:29092";

mod admin;
mod bed;
mod groups;
mod http;
mod records;
mod strait;

// Each test binary uses some of these: the others are unused there.
#[allow(unused_imports)]
pub use {admin::*, bed::*, groups::*, http::*, records::*, strait::*};

pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
