//! The forwarding loop: each source record becomes a copy handed to the producer, with a
//! provenance header on anchors; timers for commits and topic refreshes run between
//! batches.

use super::*;

pub(super) struct Route {
    pub(super) source_topic: String,
    pub(super) target_topic: String,
    /// librdkafka's handle of the target topic, which each copy is sent through.
    pub(super) target: TargetTopic<DeliveryContext>,
    /// Its target topic's id in [`FlowProgress::topics`].
    pub(super) progress_id: usize,
    /// `<cluster>/<topic>/`: the constant start of this topic's provenance headers.
    pub(super) header_prefix: Vec<u8>,
    /// The source topic's ID, stamped on anchors next to the provenance header when the
    /// source names it (see the `source_ids` module).
    pub(super) topic_id: Option<Vec<u8>>,
    /// Per partition: what this producer has sent there.
    pub(super) sent: Vec<SentRecords>,
}

/// The routes of the subscribed source topics, found by name or, per record, by
/// librdkafka's topic handle.
#[derive(Default)]
pub(super) struct Routes {
    pub(super) list: Vec<Route>,
    pub(super) by_name: FxHashMap<String, usize>,
    /// The address of librdkafka's handle of a topic → its route: see [`Self::for_record`].
    pub(super) by_handle: FxHashMap<usize, usize>,
    /// [`RebalanceContext::assignment_changes`] when `by_handle` was last emptied.
    pub(super) handles_learned_at: u64,
}

impl Routes {
    pub(super) fn new(list: Vec<Route>) -> Self {
        let by_name = list
            .iter()
            .enumerate()
            .map(|(i, r)| (r.source_topic.clone(), i))
            .collect();
        Self {
            list,
            by_name,
            ..Self::default()
        }
    }

    pub(super) fn by_name(&mut self, source_topic: &str) -> Option<&mut Route> {
        self.by_name.get(source_topic).map(|&i| &mut self.list[i])
    }

    /// The route of a consumed record. rust-rdkafka names a record's topic only through
    /// `Message::topic`, which measures the name and checks that it is UTF-8: with the
    /// lookup by name, about 300 instructions per record in callgrind, the largest single
    /// cost beyond the ceiling loop's. So the name is read once per topic, and after that
    /// the record's topic handle (`topic_ptr`, compared as a number, never dereferenced)
    /// finds the route. A handle's address names one topic for as long as `by_handle` is
    /// kept: an assigned partition holds a reference on its topic's handle, and a record on
    /// its own; librdkafka hands over records of assigned partitions only; and every change
    /// of the assignment runs the rebalance callback, which bumps
    /// `RebalanceContext::assignment_changes` (the argument here) and so empties
    /// `by_handle` before the next record. A handle freed and its address reused by
    /// another topic's handle therefore never meets an entry learned before. Debug builds
    /// (the tests) check every record's route by name.
    pub(super) fn for_record(
        &mut self,
        msg: &SourceRecord<'_>,
        assignment_changes: u64,
    ) -> Option<&mut Route> {
        if assignment_changes != self.handles_learned_at {
            self.by_handle.clear();
            self.handles_learned_at = assignment_changes;
        }
        let handle = msg.topic_handle();
        let index = match self.by_handle.get(&handle) {
            Some(&index) => index,
            None => {
                let index = *self.by_name.get(msg.topic())?;
                self.by_handle.insert(handle, index);
                index
            }
        };
        let route = &mut self.list[index];
        debug_assert_eq!(
            route.source_topic,
            msg.topic(),
            "route found by topic handle"
        );
        Some(route)
    }

    /// Each topic's per-partition send state, for the routes that replace these.
    pub(super) fn into_sent(self) -> FxHashMap<String, Vec<SentRecords>> {
        self.list
            .into_iter()
            .map(|r| (r.source_topic, r.sent))
            .collect()
    }
}

/// What this producer has sent on one partition: the timestamps of the records in flight,
/// run-length encoded (one entry per change of timestamp, so a backlog written in the same
/// millisecond costs one entry), for lag in seconds; and where the last provenance header
/// went.
#[derive(Default)]
pub(super) struct SentRecords {
    /// (first source offset, timestamp ms) of each run, oldest first.
    pub(super) runs: VecDeque<(i64, i64)>,
    pub(super) last_sent: Option<i64>,
    pub(super) since_anchor: u32,
    /// Whether the consumer is handing over records below `last_sent` again (warned once
    /// per occurrence).
    pub(super) rewound: bool,
}

impl SentRecords {
    /// Notes the record at `offset` as handed to the producer, and returns whether its
    /// copy is an anchor (carries the provenance header): the first copy this producer
    /// sends to the partition, the first after a gap in the source offsets (compaction,
    /// transaction markers, a seek), and every `interval`th copy, so that a tail scan
    /// never reads more than `interval` copies past the last one it can name. The copies
    /// in between are identified by position, which the tail scanner checks by content.
    pub(super) fn send(&mut self, offset: i64, timestamp: Option<i64>, interval: u32) -> bool {
        if let Some(ts) = timestamp {
            if self.runs.back().is_none_or(|&(_, t)| t != ts) {
                self.runs.push_back((offset, ts));
            }
        }
        let contiguous = self.last_sent == Some(offset - 1);
        self.last_sent = Some(offset);
        if contiguous && self.since_anchor + 1 < interval {
            self.since_anchor += 1;
            false
        } else {
            self.since_anchor = 0;
            true
        }
    }

    /// The timestamp of the record at `offset` if it is in flight, forgetting the runs
    /// entirely below it.
    pub(super) fn in_flight_at(&mut self, offset: i64) -> Option<i64> {
        while self.runs.len() > 1 && self.runs[1].0 <= offset {
            self.runs.pop_front();
        }
        match (self.runs.front(), self.last_sent) {
            (Some(&(first, ts)), Some(last)) if first <= offset && offset <= last => Some(ts),
            _ => None,
        }
    }
}

pub(super) struct Pipeline<'a> {
    pub(super) spec: &'a FlowSpec,
    pub(super) progress: &'a SharedProgress,
    pub(super) producer: &'a Arc<BaseProducer<DeliveryContext>>,
    pub(super) consumer: &'a BaseConsumer<RebalanceContext>,
    /// Where each subscribed source topic's records go.
    pub(super) routes: Routes,
    /// Reused buffer for the provenance header value.
    pub(super) header_buf: Vec<u8>,
    pub(super) map: Option<&'a PersistedMap>,
    pub(super) status: &'a FlowStatus,
    /// On the flow's first pipeline run in this process, whether the heartbeat topic
    /// (just prepared) exists: the first discovery then waits until the source's
    /// metadata shows it.
    pub(super) heartbeat_exists: Option<bool>,
    /// On the flow's first pipeline run in this process: fires once its own topics on the
    /// target were prepared (see [`Prepared::on_target`]).
    pub(super) own_topics_on_target: Option<OwnTopicsOnTarget>,
    pub(super) topics: &'a Mutex<TargetTopics>,
    pub(super) fetch: &'a FetchQueue<RebalanceContext>,
    /// Fenced flows: when to commit the transaction.
    pub(super) transaction_pace: TransactionPace,
}

impl Pipeline<'_> {
    /// Publishes counters, lag gauges and the `/status` snapshot from the progress state.
    /// Runs once per commit interval, never per record.
    pub(super) fn publish_status(&mut self) {
        let spec = self.spec;
        let now = now_ms();
        let progress = lock(self.progress);
        let mut topics = Vec::with_capacity(progress.topics.len());
        for topic in &progress.topics {
            let mut sent = self
                .routes
                .by_name(&topic.source_topic)
                .map(|r| &mut r.sent);
            let mut status = TopicStatus {
                source_topic: topic.source_topic.clone(),
                target_topic: topic.target_topic.clone(),
                records_replicated: 0,
                bytes_replicated: 0,
                lag_records: 0,
                lag_seconds: None,
                partitions: Vec::with_capacity(topic.partitions.len()),
            };
            for (partition, p) in topic.partitions.iter().enumerate() {
                status.records_replicated += p.records;
                status.bytes_replicated += p.bytes;
                let replicated = p.acked_next.max(p.handled_next);
                let times = sent.as_mut().and_then(|s| s.get_mut(partition));
                let (lag, lag_seconds) = match (p.assigned, p.source_end, replicated) {
                    (true, Some(end), Some(replicated)) if end <= replicated => {
                        (Some(0), Some(0.0))
                    }
                    (true, Some(end), Some(replicated)) => {
                        // The oldest record not yet on the target is in flight, or else
                        // not fetched yet: then the last acknowledged record's age is an
                        // upper bound.
                        let oldest = times
                            .and_then(|t| t.in_flight_at(replicated))
                            .or(p.acked_timestamp);
                        let seconds = oldest.map(|ts| (now - ts).max(0) as f64 / 1000.0);
                        (Some(end - replicated), seconds)
                    }
                    _ => (None, None),
                };
                if let Some(lag) = lag {
                    status.lag_records += lag;
                }
                if let Some(s) = lag_seconds {
                    status.lag_seconds = Some(status.lag_seconds.map_or(s, |m: f64| m.max(s)));
                }
                if spec.partition_metrics && p.assigned {
                    let labels = [
                        ("flow", spec.name.clone()),
                        ("topic", topic.source_topic.clone()),
                        ("partition", partition.to_string()),
                    ];
                    if let Some(lag) = lag {
                        metrics::gauge!(telemetry::REPLICATION_LAG_PARTITION_RECORDS, &labels)
                            .set(lag as f64);
                    }
                    if let Some(s) = lag_seconds {
                        metrics::gauge!(telemetry::REPLICATION_LAG_PARTITION_SECONDS, &labels)
                            .set(s);
                    }
                }
                status.partitions.push(PartitionStatus {
                    partition: partition as i32,
                    assigned: p.assigned,
                    // The end comes from statistics every 2 s; copies can be ahead of it.
                    source_end: match (p.source_end, replicated) {
                        (Some(end), Some(r)) => Some(end.max(r)),
                        (end, _) => end,
                    },
                    replicated_next: replicated,
                    target_next: p.acked_target_next,
                    committed_next: p.committed_next,
                    lag_records: lag,
                    lag_seconds,
                });
            }
            let labels = [
                ("flow", spec.name.clone()),
                ("topic", topic.source_topic.clone()),
            ];
            metrics::counter!(telemetry::RECORDS_REPLICATED_TOTAL, &labels)
                .absolute(status.records_replicated);
            metrics::counter!(telemetry::BYTES_REPLICATED_TOTAL, &labels)
                .absolute(status.bytes_replicated);
            metrics::gauge!(telemetry::REPLICATION_LAG_RECORDS, &labels)
                .set(status.lag_records as f64);
            if let Some(s) = status.lag_seconds {
                metrics::gauge!(telemetry::REPLICATION_LAG_SECONDS, &labels).set(s);
            }
            topics.push(status);
        }
        drop(progress);
        self.status.set_topics(topics);
    }

    pub(super) fn forward_until_cancelled(
        &mut self,
        cancel: &CancellationToken,
        on_topics: &mut dyn FnMut(&[String]) -> Result<(), ReplicatorError>,
    ) -> Result<(), ReplicatorError> {
        let mut subscribed = std::collections::BTreeMap::new();
        self.refresh_topics(&mut subscribed, on_topics)?;
        if subscribed.is_empty() {
            // No assignment is coming (see FlowStatus::wait_started).
            self.status.mark_started();
        }
        let mut next_refresh = Instant::now() + self.spec.refresh_interval;
        let mut next_commit = Instant::now() + self.spec.tuning.commit_interval;
        let mut last_commit = Instant::now();

        loop {
            // The consumer's own queue: rebalances (whose callbacks run here, so never in
            // the middle of a batch), commits and errors; and the records of a partition
            // that could not be routed to the fetch queue.
            let mut served_records = false;
            match self.consumer.poll(Duration::ZERO) {
                None => {}
                Some(Err(e)) => self.on_consumer_error(e, None)?,
                Some(Ok(msg)) => {
                    served_records = true;
                    if !self.forward(&SourceRecord::of(&msg), cancel)? {
                        lock(self.progress).position_untrusted = true;
                        return Ok(());
                    }
                }
            }
            // Waits (for a record or a consumer event) only when there is nothing to do.
            let wait = (!served_records).then_some(Duration::from_millis(100));
            let fetched = self.fetch.take(wait);
            let caught_up = wait.is_some() && fetched.records().next().is_none();
            if !self.forward_batch(&fetched, cancel)? {
                lock(self.progress).position_untrusted = true;
                return Ok(());
            }
            drop(fetched);
            // Delivery reports, failure checks, cancellation and timers are served once a
            // batch (up to 256 records): often enough to keep them flowing, without a poll,
            // a lock and a clock read per record. (`is_cancelled` takes a mutex.)
            if cancel.is_cancelled() {
                return Ok(());
            }
            serve_delivery_reports(self.producer);
            let failure = lock(self.progress).take_failure(self.producer, &self.spec.target.name);
            if let Some(err) = failure {
                return Err(err);
            }
            let now = Instant::now();
            let transactional_id = self.consumer.context().transactional_id.as_deref();
            let due = match transactional_id {
                None => now >= next_commit,
                Some(_) => self.transaction_pace.due(OpenTransaction {
                    age: now.duration_since(last_commit),
                    in_flight: self.producer.in_flight_count().max(0) as u64,
                    caught_up,
                }),
            };
            if due {
                if transactional_id.is_some() {
                    let in_flight = self.producer.in_flight_count();
                    commit_transaction(
                        self.producer,
                        self.progress,
                        &self.spec.target.name,
                        MAX_BLOCKED,
                    )?;
                    self.transaction_pace
                        .committed(in_flight.max(0) as u64, now.elapsed());
                }
                advance_and_persist(self.progress, self.consumer, self.producer, self.map, None)?;
                commit(
                    self.spec,
                    self.progress,
                    self.consumer,
                    CommitMode::Async,
                    None,
                    Claim::of(transactional_id),
                )?;
                self.publish_status();
                next_commit = now + self.spec.tuning.commit_interval;
                last_commit = Instant::now();
            }
            if now >= next_refresh {
                debug!(flow = %self.spec.name, "refreshing topics");
                self.refresh_topics(&mut subscribed, on_topics)?;
                next_refresh = Instant::now() + self.spec.refresh_interval;
            }
        }
    }

    /// Reads the IDs of the source topics copied. One that changed since this pipeline
    /// run first saw it was deleted and created again while copied: the pipeline
    /// restarts, and the assignment compares the IDs recorded with its commits and copies.
    fn check_source_topic_ids<'t>(
        &self,
        topics: impl Iterator<Item = &'t String>,
    ) -> Result<(), ReplicatorError> {
        let names: Vec<&str> = topics.map(String::as_str).collect();
        self.consumer
            .context()
            .source_ids
            .check(self.consumer.client(), &names)
    }

    /// Discovers source topics, subscribes to them, and creates or grows their targets.
    /// Subscribing first lets the group join run while the targets are created; a record
    /// still never arrives for a target partition that does not exist, since partitions
    /// are assigned (and fetched) only in the rebalance callback, which runs in this
    /// thread's next poll. (Partitions added to a subscribed topic can be assigned before
    /// a refresh sees them; the callback grows their targets itself.)
    pub(super) fn refresh_topics(
        &mut self,
        subscribed: &mut std::collections::BTreeMap<String, i32>,
        on_topics: &mut dyn FnMut(&[String]) -> Result<(), ReplicatorError>,
    ) -> Result<(), ReplicatorError> {
        let heartbeat_exists = self.heartbeat_exists.take().unwrap_or(false);
        let mut wanted = discover(self.consumer.client(), self.spec)?;
        // Topics the flow stopped copying stay out of the subscription.
        wanted.retain(|topic, _| !self.status.is_topic_stopped(topic));
        self.check_source_topic_ids(wanted.keys())?;
        let selected_heartbeat = self
            .spec
            .heartbeat
            .as_ref()
            .filter(|h| heartbeat_exists && self.spec.selector.selects(&h.topic));
        if let Some(heartbeat) = selected_heartbeat {
            // A topic created a moment ago can be missing from a broker's metadata for a
            // little while (a KRaft broker applies the controller's record after the
            // creation is answered). Missed here, it would be added at the next refresh:
            // a rebalance in the middle of copying, seen as a 1 s stall under load.
            let deadline = Instant::now() + HEARTBEAT_VISIBLE_WITHIN;
            while !wanted.contains_key(&heartbeat.topic) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                wanted = discover(self.consumer.client(), self.spec)?;
                wanted.retain(|topic, _| !self.status.is_topic_stopped(topic));
            }
        }
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if wanted == *subscribed {
            let began = Instant::now();
            topics.sync_configs(self.spec, &wanted);
            debug!(flow = %self.spec.name, elapsed = ?began.elapsed(), "topic configs compared");
            return Ok(());
        }
        let names: Vec<String> = wanted.keys().cloned().collect();
        on_topics(&names)?;
        if wanted.keys().ne(subscribed.keys()) {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            if refs.is_empty() {
                self.consumer.unsubscribe();
            } else {
                self.consumer
                    .subscribe(&refs)
                    .map_err(|e| ReplicatorError::kafka("subscribing to source topics", e))?;
            }
        }
        match self.own_topics_on_target.take() {
            // A first start: the heartbeat thread is creating the heartbeat copy. Synced
            // here too, it would be created a second time, in a request that the target's
            // controller answers only after the one preparing it. So the other targets are
            // synced meanwhile (the target's metadata took 8-22 ms at a first start on the
            // test bed, as long as the creation itself), and the copy only if that
            // preparation failed. Partitions are assigned only after both.
            Some(prepared) => {
                let mut others = wanted.clone();
                if let Some(heartbeat) = &self.spec.heartbeat {
                    others.remove(&heartbeat.topic);
                }
                topics.sync(self.spec, &others)?;
                let began = Instant::now();
                let created = block_on(prepared).unwrap_or(false);
                debug!(flow = %self.spec.name, waited = ?began.elapsed(), created, "own target topics prepared");
                if !created && others.len() != wanted.len() {
                    topics.sync(self.spec, &wanted)?;
                }
            }
            None => topics.sync(self.spec, &wanted)?,
        }
        topics.note_synced(self.spec, &wanted);
        drop(topics);
        for (topic, partitions) in &wanted {
            match subscribed.get(topic) {
                None => info!(flow = %self.spec.name, topic, partitions, "replicating topic"),
                Some(old) if old != partitions => {
                    info!(flow = %self.spec.name, topic, from = old, to = partitions, "source partitions grew");
                }
                Some(_) => {}
            }
        }
        let mut old_sent = std::mem::take(&mut self.routes).into_sent();
        {
            let mut progress = lock(self.progress);
            let mut routes = Vec::with_capacity(wanted.len());
            for t in wanted.keys() {
                let target_topic = self.spec.naming.target_topic(&self.spec.source.name, t);
                let target = TargetTopic::new(self.producer, &target_topic).map_err(|code| {
                    ReplicatorError::kafka(
                        format!("preparing to produce to {target_topic}"),
                        KafkaError::MessageProduction(code),
                    )
                })?;
                routes.push(Route {
                    progress_id: progress.topic_id(&target_topic, t),
                    source_topic: t.clone(),
                    target_topic,
                    target,
                    header_prefix: Provenance::prefix(&self.spec.source.name, t),
                    topic_id: self
                        .consumer
                        .context()
                        .source_ids
                        .get(t)
                        .map(|id| id.0.into_bytes()),
                    sent: old_sent.remove(t).unwrap_or_default(),
                });
            }
            self.routes = Routes::new(routes);
        }
        *subscribed = wanted;
        Ok(())
    }

    /// `at`: the topic, partition and offset the error is about, when librdkafka says.
    pub(super) fn on_consumer_error(
        &self,
        err: KafkaError,
        at: Option<(&str, i32, i64)>,
    ) -> Result<(), ReplicatorError> {
        // A failure a callback recorded comes first: the assignment that found a loss
        // leaves the partition paused without a position, and the error that follows from
        // that (no offset to fetch from) would otherwise restart the flow in its place.
        if let Some(failure) =
            lock(self.progress).take_failure(self.producer, &self.spec.target.name)
        {
            return Err(failure);
        }
        let code = err.rdkafka_error_code();
        metrics::counter!(
            telemetry::CONSUME_ERRORS_TOTAL,
            "flow" => self.spec.name.clone(),
            "code" => code.map_or_else(|| "unknown".to_string(), |c| format!("{c:?}"))
        )
        .increment(1);
        match code {
            // Expelled from the group or lost a fenced assignment: rejoin from scratch.
            Some(RDKafkaErrorCode::PollExceeded) | Some(RDKafkaErrorCode::Fatal) => {
                Err(ReplicatorError::kafka("source consumer", err))
            }
            Some(RDKafkaErrorCode::TopicAuthorizationFailed)
            | Some(RDKafkaErrorCode::GroupAuthorizationFailed) => {
                Err(ReplicatorError::kafka("source consumer", err))
            }
            Some(RDKafkaErrorCode::AutoOffsetReset) => match at {
                Some(at) => self.on_position_out_of_range(at),
                // Not knowing where: restart; the assignment compares each partition's
                // position with the source's log start.
                None => Err(ReplicatorError::kafka("source consumer", err)),
            },
            // Everything else (broker down, leader moving) is retried inside librdkafka.
            _ => {
                debug!(flow = %self.spec.name, error = %err, "transient consumer error");
                Ok(())
            }
        }
    }

    /// The consumer's position in a source partition is no longer in the log (the
    /// consumer resets nothing itself: `auto.offset.reset = error`). The pipeline
    /// restarts: the next assignment resumes after the last copy on the target, and
    /// reports records deleted before they were copied, if the log start moved past it
    /// (see `RebalanceContext::start_after_loss`), counted once, from where the copy
    /// really stopped. (librdkafka allows no seek in a partition in this state.)
    pub(super) fn on_position_out_of_range(
        &self,
        (topic, partition, position): (&str, i32, i64),
    ) -> Result<(), ReplicatorError> {
        let log = match self
            .consumer
            .fetch_watermarks(topic, partition, COMMIT_TIMEOUT)
        {
            Ok((start, end)) => format!("the log holds [{start}, {end})"),
            Err(e) => format!("the log's offsets not readable: {e}"),
        };
        Err(ReplicatorError::kafka(
            format!(
                "{topic}[{partition}] on the source: position {position} is out of range \
                 ({log}); resuming after the last copy on the target"
            ),
            KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange),
        ))
    }

    /// Hands a batch of records to the producer, in order. Returns `false` if cancelled
    /// while waiting for room in the producer queue; the rest of the batch then stays
    /// uncommitted.
    pub(super) fn forward_batch(
        &mut self,
        fetched: &Fetched<'_>,
        cancel: &CancellationToken,
    ) -> Result<bool, ReplicatorError> {
        for record in fetched.records() {
            match record {
                Ok(record) => {
                    if !self.forward(&record, cancel)? {
                        return Ok(false);
                    }
                }
                Err(failed) => {
                    let at = (failed.topic(), failed.partition(), failed.offset());
                    if let Some(e) = failed.error() {
                        self.on_consumer_error(e, Some(at))?;
                    }
                }
            }
        }
        Ok(true)
    }

    /// Hands one record to the producer. Returns `false` if cancelled while waiting for
    /// room in the producer queue; the record then stays uncommitted.
    pub(super) fn forward(
        &mut self,
        msg: &SourceRecord<'_>,
        cancel: &CancellationToken,
    ) -> Result<bool, ReplicatorError> {
        let assignment_changes = self
            .consumer
            .context()
            .assignment_changes
            .load(Ordering::Relaxed);
        let Some(route) = self.routes.for_record(msg, assignment_changes) else {
            return Err(ReplicatorError::Invariant(format!(
                "received a record from {}, which this flow does not replicate",
                msg.topic()
            )));
        };
        let source_offset = msg.offset();
        let timestamp = msg.timestamp();
        let idx = msg.partition() as usize;
        if route.sent.len() <= idx {
            route.sent.resize_with(idx + 1, SentRecords::default);
        }
        let sent = &mut route.sent[idx];
        if sent.last_sent.is_some_and(|last| source_offset <= last) {
            // The consumer handed over a record this pipeline already sent. librdkafka
            // does that at a rebalance: it pauses every assigned partition, and the pause
            // (on librdkafka's thread) saves the application's position to resume from,
            // which can race with this thread taking a batch off the queue and only then
            // moving that position past it (rd_kafka_q_serve_rkmessages), so the batch's
            // records of that partition are fetched again after the resume. Seen (when
            // records were taken one at a time) as a one-record rewind a few ms after a
            // rebalance. The producer is idempotent and never times a record out, so the
            // first copy arrives or the flow stops; a second would be a duplicate.
            if !sent.rewound {
                sent.rewound = true;
                let (flow, topic, partition) = (&self.spec.name, msg.topic(), msg.partition());
                let within_a_batch = sent
                    .last_sent
                    .is_some_and(|last| last - source_offset < BATCH_SIZE as i64);
                if within_a_batch {
                    // The race above: expected now and then, and harmless.
                    info!(
                        flow = %flow, topic, partition, offset = source_offset,
                        last_sent = ?sent.last_sent,
                        "the source consumer handed over records of the last batch again (a \
                         librdkafka race at rebalances); skipping them"
                    );
                } else {
                    warn!(
                        flow = %flow, topic, partition, offset = source_offset,
                        last_sent = ?sent.last_sent,
                        "the source consumer went back to records already sent; skipping them"
                    );
                }
            }
            metrics::counter!(telemetry::RECORDS_SKIPPED_AS_RESENT_TOTAL, "flow" => self.spec.name.clone())
                .increment(1);
            return Ok(true);
        }
        sent.rewound = false;
        if self.spec.two_way {
            let target = &self.spec.target.name;
            if msg
                .headers()
                .iter()
                .any(|h| copied_from(h, target).is_some())
            {
                // The other flow of a two-way pair copied it here from this flow's target.
                // Left out like a transaction marker: the next copy follows a gap, so it
                // is an anchor, and the commit and the offset map pass over it once a later
                // copy is acknowledged or the pipeline is idle.
                metrics::counter!(telemetry::RECORDS_NOT_COPIED_BACK_TOTAL, "flow" => self.spec.name.clone())
                    .increment(1);
                return Ok(true);
            }
        }
        let anchor = sent.send(source_offset, timestamp, self.spec.provenance_interval);
        let stamp = self.spec.provenance_header && anchor;
        let route = &*route;
        let target_topic = &route.target_topic;
        let source_headers = msg.headers();
        let stamp_id = route.topic_id.as_deref().filter(|_| stamp);
        let count = source_headers.count() + usize::from(stamp) + usize::from(stamp_id.is_some());
        // A header list costs allocations in librdkafka; build one only when needed.
        let mut headers = None;
        if count > 0 {
            let list = headers.insert(OutgoingHeaders::with_capacity(count));
            for header in source_headers.iter() {
                // Never copied back: the flow stops on it, and nothing from it on is
                // committed.
                if let Some(origin) = copied_from(header, &self.spec.target.name) {
                    return Err(ReplicatorError::CopyLoop {
                        source_topic: msg.topic().to_string(),
                        partition: msg.partition(),
                        offset: source_offset,
                        target: self.spec.target.name.clone(),
                        origin_topic: origin.topic.to_string(),
                        origin_partition: origin.partition,
                        origin_offset: origin.offset,
                    });
                }
                list.add(header.0, header.1);
            }
            // The topic ID before the provenance header, which stays the last header:
            // readers of a chain of copies take the last one as the newest hop's.
            if let Some(id) = stamp_id {
                list.add(TOPIC_ID_HEADER, Some(id));
            }
            if stamp {
                Provenance::encode_with_prefix(
                    &route.header_prefix,
                    msg.partition(),
                    source_offset,
                    &mut self.header_buf,
                );
                list.add(PROVENANCE_HEADER, Some(self.header_buf.as_slice()));
            }
        }
        let opaque = DeliveryOpaque::encode(route.progress_id, source_offset);
        let (key, payload) = (msg.key(), msg.payload());

        // Read the clock only once the queue is full: a clock read per record was a
        // visible share of this thread's time in a profile.
        let mut blocked_since: Option<Instant> = None;
        loop {
            let sent = route.target.send(
                msg.partition(),
                key,
                payload,
                timestamp,
                &mut headers,
                opaque,
            );
            match sent.map_err(KafkaError::MessageProduction) {
                Ok(()) => return Ok(true),
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    // Backpressure: the producer queue is the only buffer, and it is bounded.
                    self.producer.poll(Duration::from_millis(20));
                    if cancel.is_cancelled() {
                        return Ok(false);
                    }
                    let failure =
                        lock(self.progress).take_failure(self.producer, &self.spec.target.name);
                    if let Some(err) = failure {
                        return Err(err);
                    }
                    if blocked_since.get_or_insert_with(Instant::now).elapsed() > MAX_BLOCKED {
                        return Err(ReplicatorError::Timeout(
                            MAX_BLOCKED,
                            format!("room in the producer queue for {target_topic}"),
                        ));
                    }
                }
                Err(err) => {
                    // The producer stopped earlier: report why (a delivery report may
                    // already have said), not this record.
                    let target = &self.spec.target.name;
                    if let Some(failure) = lock(self.progress).take_failure(self.producer, target) {
                        return Err(failure);
                    }
                    if let Some(stopped) = fatal_cause(self.producer, target) {
                        return Err(stopped);
                    }
                    let code = err.rdkafka_error_code();
                    return Err(match code {
                        // The target partition does not exist yet: restart, which grows it.
                        Some(RDKafkaErrorCode::UnknownPartition) => ReplicatorError::kafka(
                            format!("producing to {target_topic}[{}]", msg.partition()),
                            err,
                        ),
                        _ => ReplicatorError::RecordRefused {
                            source_topic: msg.topic().to_string(),
                            target_topic: target_topic.clone(),
                            partition: msg.partition(),
                            offset: source_offset,
                            reason: err.to_string(),
                            hint: if is_size_error(&err) {
                                let size =
                                    key.map_or(0, <[u8]>::len) + payload.map_or(0, <[u8]>::len);
                                producer_limit_hint(&self.spec.target, size)
                            } else {
                                String::new()
                            },
                        },
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SentRecords;

    fn stamped(offsets: &[i64], interval: u32) -> Vec<i64> {
        let mut sent = SentRecords::default();
        offsets
            .iter()
            .copied()
            .filter(|&o| sent.send(o, Some(1_700_000_000_000), interval))
            .collect()
    }

    #[test]
    fn anchors_at_start_after_gaps_and_every_interval() {
        let run: Vec<i64> = (10..20).collect();
        assert_eq!(stamped(&run, 4), vec![10, 14, 18]);
        // A transaction marker at 13 and a compaction gap 16..18.
        assert_eq!(
            stamped(&[10, 11, 12, 14, 15, 18, 19], 1000),
            vec![10, 14, 18]
        );
        assert_eq!(stamped(&run, 1), run);
    }
}
