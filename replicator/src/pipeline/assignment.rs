//! The consumer's rebalance callbacks, and where a newly assigned partition starts: the
//! group's commits, the offset map and the target's tail are read, previous owners fenced,
//! losses reported, and the start offsets claimed before the first copy.

use super::*;

/// Consumer callbacks: choose start offsets on assignment, drain and commit on revocation.
pub(super) struct RebalanceContext {
    pub(super) spec: FlowSpec,
    pub(super) status: Arc<FlowStatus>,
    pub(super) progress: SharedProgress,
    pub(super) producer: Arc<BaseProducer<DeliveryContext>>,
    pub(super) scanner: Option<TailScanner>,
    /// Shared with the poll loop's topic refresh, which never holds it across a poll (the
    /// callbacks run inside `poll`).
    pub(super) topics: Arc<Mutex<TargetTopics>>,
    /// The persisted offset map (when offset sync is on), to rebuild what it lacks.
    pub(super) map: Option<Arc<PersistedMap>>,
    /// This pipeline run's transactional id (`fence = "transactions"`).
    pub(super) transactional_id: Option<String>,
    /// The ID of each source topic as this pipeline run first saw it; compared with the
    /// IDs recorded with commits and copies at every assignment.
    pub(super) source_ids: SourceTopicIds,
    /// Bumped by every rebalance callback: see [`Routes::for_record`].
    pub(super) assignment_changes: AtomicU64,
    /// Set once the pipeline has made its last commit and leaves the group.
    pub(super) leaving: AtomicBool,
    /// Where assigned partitions' records go (set once the consumer exists; owned by
    /// [`run`], which destroys it before the consumer).
    pub(super) fetch: OnceLock<Weak<FetchQueue<RebalanceContext>>>,
}

impl ClientContext for RebalanceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.status
            .login
            .client_error(&self.spec.source.name, &error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        self.status.observe_source(&statistics);
        let mut progress = lock(&self.progress);
        for (source_topic, topic) in &statistics.topics {
            let target_topic = self
                .spec
                .naming
                .target_topic(&self.spec.source.name, source_topic);
            let Some(tp) = progress.by_target(&target_topic) else {
                continue;
            };
            for (&partition, stats) in &topic.partitions {
                // read_committed consumers stop at the last stable offset.
                let end = if stats.ls_offset >= 0 {
                    stats.ls_offset
                } else {
                    stats.hi_offset
                };
                if partition >= 0 && end >= 0 {
                    tp.partition(partition).source_end = Some(end);
                }
            }
        }
    }
}

impl ConsumerContext for RebalanceContext {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if result.is_err() {
            // Committed again at the next interval, and before any hand-over.
            return;
        }
        let mut progress = lock(&self.progress);
        for elem in offsets.elements() {
            let (Offset::Offset(next), Ok(())) = (elem.offset(), elem.error()) else {
                continue;
            };
            let target_topic = self
                .spec
                .naming
                .target_topic(&self.spec.source.name, elem.topic());
            if let Some(topic) = progress.by_target(&target_topic) {
                let p = topic.partition(elem.partition());
                p.committed_next = p.committed_next.max(Some(next));
            }
        }
    }

    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.assignment_changes.fetch_add(1, Ordering::Relaxed);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS
                if self.leaving.load(Ordering::Relaxed) =>
            {
                // Assigned while the consumer closes: nothing will be read from these
                // partitions, and reading where they start (the group's commits on the
                // source) waited for a coordinator the closing consumer no longer
                // serves, holding a SIGTERM past a minute. Taken paused, uncommitted, and
                // handed on at the revoke that follows.
                self.status.mark_started();
                if let Err(e) = consumer.incremental_assign(tpl) {
                    debug!(flow = %self.spec.name, error = %e, "assignment while leaving the group not taken");
                    return;
                }
                let _ = consumer.pause(tpl);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let resolved = self.choose_start_offsets(consumer, tpl);
                // Whatever the outcome, the start-up work waiting for this may go ahead.
                self.status.mark_started();
                if let Some(fetch) = self.fetch.get().and_then(Weak::upgrade) {
                    for e in tpl.elements() {
                        if !fetch.route(e.topic(), e.partition()) {
                            debug!(flow = %self.spec.name, topic = e.topic(), partition = e.partition(), "records of this partition come through the consumer's queue");
                        }
                    }
                }
                if let Err(e) = consumer.incremental_assign(tpl) {
                    lock(&self.progress).fail(ReplicatorError::kafka("assigning partitions", e));
                    return;
                }
                if let Err(e) = resolved {
                    // Never consume from a position we could not prove; the loop restarts.
                    let _ = consumer.pause(tpl);
                    lock(&self.progress).fail(e);
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.drain_and_commit(consumer, tpl);
                if let Err(e) = consumer.incremental_unassign(tpl) {
                    warn!(flow = %self.spec.name, error = %e, "unassigning revoked partitions failed");
                }
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                warn!(flow = %self.spec.name, error = %code, "rebalance error");
            }
        }
    }
}

impl RebalanceContext {
    pub(super) fn choose_start_offsets(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
    ) -> Result<(), ReplicatorError> {
        let began = std::time::Instant::now();
        self.check_source_topic_ids(consumer, tpl)?;
        self.learn_target_partitions(consumer, tpl)?;
        let target_partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| {
                let topic = self
                    .spec
                    .naming
                    .target_topic(&self.spec.source.name, e.topic());
                (topic, e.partition())
            })
            .collect();
        // Three independent reads, each from its own client: the group's commits (then
        // the log starts of partitions without one) on the source, the offset map to its
        // end, and the target watermarks for the tail check. One after another they took
        // 8-15 ms of a first start's assignment on the test bed, on the way to the first
        // record; side by side, the longest of them.
        let (source_side, index, watermarks) = std::thread::scope(|threads| {
            let watermarks = threads.spawn(|| match &self.scanner {
                Some(scanner) => scanner.watermarks(&target_partitions),
                None => HashMap::new(),
            });
            let index = threads.spawn(|| -> Result<_, ReplicatorError> {
                let Some(map) = &self.map else {
                    return Ok(None);
                };
                let index = &map.get()?.index;
                // Read the map up to its current end once per assignment: another
                // instance may have owned these partitions until just now.
                index.lock().unwrap_or_else(|p| p.into_inner()).catch_up()?;
                debug!(flow = %self.spec.name, elapsed = ?began.elapsed(), "assignment: offset map read to its end");
                Ok(Some(index))
            });
            let committed = || consumer.committed_offsets(tpl.clone(), COMMIT_TIMEOUT);
            let source_side = committed
                .retry(settling_backoff(COMMIT_TIMEOUT))
                .sleep(std::thread::sleep)
                .when(passes_on_its_own)
                .call()
                .map_err(|e| ReplicatorError::kafka("reading committed offsets", e))
                .and_then(|committed| {
                    debug!(flow = %self.spec.name, elapsed = ?began.elapsed(), "assignment: committed offsets read");
                    let fresh_starts = self.fresh_starts(consumer, &committed)?;
                    let log_bounds = self.log_bounds(consumer, &committed)?;
                    Ok((committed, fresh_starts, log_bounds))
                });
            (source_side, join_scoped(index), join_scoped(watermarks))
        });
        let (committed, fresh_starts, log_bounds) = source_side?;
        let index = index?;
        // The tail is read only once every previous owner is fenced: before, copies it
        // still sends could land after it.
        let watermarks = match (self.fence_previous_owners(&committed)?, &self.scanner) {
            (true, Some(scanner)) => scanner.watermarks(&target_partitions),
            _ => watermarks,
        };
        let mut claims = Vec::new();
        // New map epochs of source topics created again, written before anything is
        // copied or claimed: see `persist_epochs`.
        let mut epochs = Vec::new();
        debug!(flow = %self.spec.name, elapsed = ?began.elapsed(), known = watermarks.len(), "assignment: start offsets and target watermarks read");
        for elem in committed.elements() {
            let (source_topic, partition) = (elem.topic().to_string(), elem.partition());
            let target_topic = self
                .spec
                .naming
                .target_topic(&self.spec.source.name, &source_topic);
            let committed_next = match elem.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            let commit_metadata = CommitMetadata::decode(elem.metadata());
            let committed_target = commit_metadata.target_next;
            let source_topic_id = self.source_ids.get(&source_topic);
            let log_start = log_bounds
                .get(&(source_topic.clone(), partition))
                .map(|&(low, _)| low);
            // The source topic was created again, and the flow goes on with it
            // (`on_source_topic_recreated = "continue"`): what was recorded of the old
            // one is set aside below, and the new one is copied from its start.
            let mut recreated = match committed_next {
                Some(next) => self.check_commit_is_of_this_topic(
                    (&source_topic, &target_topic, partition),
                    next,
                    commit_metadata.source_topic_id.as_deref(),
                    source_topic_id.as_ref(),
                    log_start,
                )?,
                None => false,
            };

            let (persisted, last_copy) = index.map_or((None, None), |index| {
                let index = index.lock().unwrap_or_else(|p| p.into_inner());
                (
                    index.persisted_coverage(&source_topic, partition),
                    index.last_copy(&source_topic, partition),
                )
            });
            let map = match (index, persisted) {
                (None, _) => OffsetMap::Off,
                (Some(_), None) => OffsetMap::Empty,
                (Some(_), Some(c)) => OffsetMap::Covers {
                    through: c.through,
                    target_next: c.target_next,
                },
            };
            let scan_from = scan_start(committed_next.map(|next| (next, committed_target)), map);
            // The target partition's (log start, end): from the batch read, else read on
            // its own, which reports what kept it from the batch. (Not used to fall back
            // only inside the scan: the map's start below needs it too, and without it a
            // partition the batch missed restarted the flow, seen in CI on a just-created
            // 48-partition target.)
            let target_watermarks = match &self.scanner {
                Some(scanner) => scanner.watermarks_in(&watermarks, &target_topic, partition)?,
                None => None,
            };
            let target_watermarks = match (recreated, committed_target, target_watermarks) {
                (false, Some(acked), Some(w)) if w.1 < acked => {
                    self.wait_for_stable_end((&target_topic, partition), acked, w)?
                }
                _ => target_watermarks,
            };
            if let (false, Some(acked), Some((_, end))) =
                (recreated, committed_target, target_watermarks)
            {
                self.check_target_kept_its_copies(
                    (&source_topic, &target_topic, partition),
                    end,
                    acked,
                )?;
            }
            // No commit, while the offset map knows copies: the commits may have gone
            // with the topic they were made for. The newest anchor on the target says
            // which topic its copies came from.
            if let (None, Some(_), Some(scanner), Some(w)) =
                (committed_next, last_copy, &self.scanner, target_watermarks)
            {
                if source_topic_id.is_some() && !recreated {
                    let newest = scanner.copies_after_commit(
                        &target_topic,
                        &SourcePartition {
                            cluster: &self.spec.source.name,
                            topic: &source_topic,
                            partition,
                        },
                        None,
                        w,
                    )?;
                    recreated = self.check_copies_are_of_this_topic(
                        (&source_topic, &target_topic, partition),
                        &newest,
                        source_topic_id.as_ref(),
                        (last_copy.map(|(source, _)| source + 1), log_start),
                    )?;
                }
            }
            let compared = match (recreated, committed_next, last_copy, target_watermarks) {
                (false, None, Some(last), Some((_, end))) => self.check_source_is_what_was_copied(
                    (&source_topic, &target_topic, partition),
                    last,
                    end,
                    log_bounds.get(&(source_topic.clone(), partition)),
                )?,
                _ => SameTopic::Unknown,
            };
            recreated |= compared == SameTopic::Recreated;
            let map_confirmed = compared == SameTopic::Confirmed;
            // Going on after copies the target lost (`on_data_loss = "continue"`): the
            // next copies land at its end.
            let committed_target = match (committed_target, target_watermarks) {
                (Some(acked), Some((_, end))) => Some(acked.min(end)),
                (acked, _) => acked,
            };
            // Copies on the target after that position, oldest first.
            let copied = match (&self.scanner, target_watermarks) {
                _ if recreated => FoundCopies::default(),
                (Some(scanner), Some(w)) => scanner.copies_after_commit(
                    &target_topic,
                    &SourcePartition {
                        cluster: &self.spec.source.name,
                        topic: &source_topic,
                        partition,
                    },
                    scan_from,
                    w,
                )?,
                // No scanner, or no target topic yet: nothing was copied.
                _ => FoundCopies::default(),
            };
            if committed_next.is_none() && scan_from.is_none() && !recreated {
                // Read back from the target's end for the newest anchor: as above.
                recreated = self.check_copies_are_of_this_topic(
                    (&source_topic, &target_topic, partition),
                    &copied,
                    source_topic_id.as_ref(),
                    (None, log_start),
                )?;
            }
            // Going on with a topic created again: nothing recorded of the old one counts.
            let (committed_next, committed_target, persisted, map, copied) = if recreated {
                let map = match map {
                    OffsetMap::Off => OffsetMap::Off,
                    _ => OffsetMap::Empty,
                };
                (None, None, None, map, FoundCopies::default())
            } else {
                (committed_next, committed_target, persisted, map, copied)
            };
            let last_copied = copied.last();
            let resume = resume_point(&Witnesses {
                committed: committed_next.map(|next| (next, committed_target)),
                map,
                last_copied,
                target_end: target_watermarks.map(|(_, end)| end),
                map_confirmed,
            });
            // Nothing yet: start explicitly at the log start (or end); see `fresh_starts`.
            let start = resume.source_next.or_else(|| {
                fresh_starts
                    .get(&(source_topic.clone(), partition))
                    .copied()
            });
            let start = match (
                recreated,
                log_bounds.get(&(source_topic.clone(), partition)),
            ) {
                (true, Some(&(low, high))) => Some(match self.spec.start_from {
                    StartFrom::Earliest => low,
                    StartFrom::Latest => high,
                }),
                _ => start,
            };
            let start = match (start, log_bounds.get(&(source_topic.clone(), partition))) {
                (Some(start), Some(&(low, high))) => {
                    // The map may know copies of records past the start: a source topic
                    // deleted and created again takes its group's commits with it.
                    let copied_to = persisted.as_ref().map_or(start, |c| start.max(c.through));
                    self.check_offsets_did_not_go_back(&source_topic, partition, copied_to, high)?;
                    Some(self.start_after_loss(&source_topic, partition, start, low)?)
                }
                (start, _) => start,
            };
            let offset = start.map_or(Offset::Invalid, Offset::Offset);
            tpl.set_partition_offset(&source_topic, partition, offset)
                .map_err(|e| ReplicatorError::kafka("setting start offset", e))?;

            let mut progress = lock(&self.progress);
            let topic_progress = progress.topic(&target_topic, &source_topic);
            topic_progress.source_topic_id = source_topic_id.as_ref().map(|id| id.0.clone());
            let p = topic_progress.partition(partition);
            p.assigned = true;
            if let (true, Some((_, end))) = (recreated, target_watermarks) {
                // The new topic's copies land after the old one's, and its map starts
                // again there (see `Epoch`).
                p.acked_target_next = Some(end);
                p.begin_map_epoch(Epoch {
                    topic_id: source_topic_id.map(|id| id.0),
                    target_from: end,
                });
                info!(flow = %self.spec.name, topic = %source_topic, partition, start = ?start, target_topic = %target_topic, target_from = end, "copying the source topic created again from its start, after the old topic's copies, with a new offset map epoch");
            }
            p.broken = false;
            p.committed_next = committed_next;
            if let Some(start) = start {
                p.acked_next = Some(start);
                p.handled_next = Some(start);
            }
            p.target_next_expected = target_watermarks.map(|(_, end)| end);
            if resume.target_next.is_some() {
                p.acked_target_next = resume.target_next;
            }
            p.in_transaction = false;
            if let Some(start) = start {
                claims.push((source_topic.clone(), partition, start, p.acked_target_next));
            }
            p.map_found_copies(&copied.pairs);
            if index.is_some() {
                // Where this writer's map begins: the persisted map's start, else where
                // the copies found name everything from (see
                // `FoundCopies::rebuilt_map_start`), else where replication starts now.
                let rebuilt = match (persisted, &self.scanner, target_watermarks) {
                    (None, Some(scanner), Some((_, high))) if !copied.pairs.is_empty() => {
                        let head = scanner.source_head(&source_topic, partition)?;
                        copied.rebuilt_map_start(high, head)
                    }
                    _ => None,
                };
                let from = persisted
                    .map(|c| c.from)
                    .or(rebuilt.map(|(from, _)| from))
                    .or(start);
                // The target's end from the settled watermarks: a target topic created
                // moments ago answers "not leader" for a while, and a map started without
                // this never said how far it was complete, so every translation stayed
                // pending (a migration waited at `mirror` for ever).
                let target_next = persisted
                    .map(|c| c.target_next)
                    .or(rebuilt.map(|(_, target)| target))
                    .or(p.acked_target_next)
                    .or(target_watermarks.map(|(_, high)| high));
                let (Some(from), Some(target_next)) = (from, target_next) else {
                    // Never copy without a map that can vouch for the copies; the
                    // pipeline restarts and asks again.
                    let unknown = if from.is_none() {
                        format!(
                            "the start offset of {source_topic}[{partition}] on '{}'",
                            self.spec.source.name
                        )
                    } else {
                        format!(
                            "the end offset of {target_topic}[{partition}] on '{}'",
                            self.spec.target.name
                        )
                    };
                    return Err(ReplicatorError::Timeout(
                        COMMIT_TIMEOUT,
                        format!("{unknown}, where its offset map starts"),
                    ));
                };
                let complete_below: Vec<i64> = persisted
                    .map(|c| c.through)
                    .into_iter()
                    .chain(start)
                    .collect();
                p.start_map(from, target_next, &complete_below);
                if recreated {
                    epochs.push((source_topic.clone(), partition, p.map_handled_through(None)));
                }
            }
            // Per partition at debug: a group of 1,200 partitions would write 1,200 lines
            // at every rebalance. The summary below is the info line.
            debug!(
                flow = %self.spec.name, topic = %source_topic, partition,
                committed = ?committed_next, map_through = ?persisted.map(|c| c.through),
                found_on_target = ?last_copied.map(|(s, _)| s),
                start = ?start, "partition assigned"
            );
        }
        self.persist_epochs(epochs)?;
        self.claim(consumer, &claims)?;
        let assigned: Vec<(String, i32)> = committed
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        info!(flow = %self.spec.name, partitions = assigned.len(), topics = %topics_of(&assigned), "partitions assigned");
        Ok(())
    }

    /// Fenced flows: fences every other owner named in the commits of a new assignment
    /// (see the `fence` module). Returns whether it fenced any, after which the target's
    /// watermarks are read again.
    pub(super) fn fence_previous_owners(
        &self,
        committed: &TopicPartitionList,
    ) -> Result<bool, ReplicatorError> {
        let Some(own) = &self.transactional_id else {
            return Ok(false);
        };
        let metadata: Vec<CommitMetadata> = committed
            .elements()
            .iter()
            .map(|e| CommitMetadata::decode(e.metadata()))
            .collect();
        let previous = owners_to_fence(metadata.iter().map(|m| m.owner.as_deref()), own);
        for id in &previous {
            fence_previous_owner(&self.spec.name, &self.spec.target, id, COMMIT_TIMEOUT)?;
        }
        Ok(!previous.is_empty())
    }

    /// Commits each newly assigned partition's start offset, with the target offset after
    /// the newest copy, before its first copy. Later commits can be refused for long
    /// stretches (a member between generations); this one leaves the group a commit for
    /// the partition, without which the next owner does not trust the offset map's end
    /// (see the `resume` module).
    ///
    /// Fenced flows also name this run's transactional id in it: whoever takes a partition
    /// over after this instance stopped answering then knows whom to fence. Refused (the
    /// group moved on meanwhile), a fenced flow does not copy from the assignment; an
    /// unfenced one goes on, as it did before claims were made.
    pub(super) fn claim(
        &self,
        consumer: &BaseConsumer<Self>,
        claims: &[(String, i32, i64, Option<i64>)],
    ) -> Result<(), ReplicatorError> {
        let owner = self.transactional_id.clone();
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, start, target_next) in claims {
            let mut elem = tpl.add_partition(topic, *partition);
            elem.set_offset(Offset::Offset(*start))
                .map_err(|e| ReplicatorError::kafka("building the claim", e))?;
            let metadata = CommitMetadata {
                target_next: *target_next,
                owner: owner.clone(),
                source_topic_id: self.source_ids.get(topic).map(|id| id.0),
            };
            if metadata != CommitMetadata::default() {
                elem.set_metadata(metadata.encode());
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            if owner.is_some() {
                return Err(ReplicatorError::kafka(
                    "claiming the assigned partitions (naming this owner's transactional id in their source commits)",
                    e,
                ));
            }
            warn!(flow = %self.spec.name, error = %e, "the start offsets of the assigned partitions were not committed; copying goes on");
            return Ok(());
        }
        let mut progress = lock(&self.progress);
        for (source_topic, partition, start, _) in claims {
            self.partition_progress(&mut progress, source_topic, *partition)
                .committed_next = Some(*start);
        }
        Ok(())
    }

    /// The progress of a source partition of this flow.
    pub(super) fn partition_progress<'p>(
        &self,
        progress: &'p mut FlowProgress,
        source_topic: &str,
        partition: i32,
    ) -> &'p mut PartitionProgress {
        let target_topic = self
            .spec
            .naming
            .target_topic(&self.spec.source.name, source_topic);
        progress
            .topic(&target_topic, source_topic)
            .partition(partition)
    }

    /// Makes sure the target partitions of a new assignment exist and that the producer
    /// and tail scanner know of them: see [`TargetTopics::partitions_to_learn`].
    pub(super) fn learn_target_partitions(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> Result<(), ReplicatorError> {
        let assigned: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let to_learn = topics.partitions_to_learn(&self.spec, consumer.client(), &assigned)?;
        for (source_topic, target_topic, partitions) in to_learn {
            let target = &self.spec.target.name;
            learn_partitions(self.producer.client(), target, &target_topic, partitions)?;
            if let Some(scanner) = &self.scanner {
                scanner.learn_partitions(&source_topic, &target_topic, partitions)?;
            }
            topics.learned(&target_topic, partitions);
            debug!(flow = %self.spec.name, topic = %target_topic, partitions, "target partitions learned");
        }
        Ok(())
    }

    /// For partitions without a committed offset: the source log start (or end, for
    /// `start_from = "latest"`), in one request per broker. Starting there explicitly lets
    /// the offset map know exactly where it begins, and is faster than leaving it to
    /// `auto.offset.reset`: librdkafka then looks the offset up itself and began fetching
    /// about 100 ms after the assignment, against 5-20 ms with explicit offsets (traced
    /// on the test bed). (Where the first copies land, the target ends, comes from the
    /// target watermarks read for the tail check.)
    pub(super) fn fresh_starts(
        &self,
        consumer: &BaseConsumer<Self>,
        committed: &TopicPartitionList,
    ) -> Result<HashMap<(String, i32), i64>, ReplicatorError> {
        let wanted = match self.spec.start_from {
            StartFrom::Earliest => Offset::Beginning,
            StartFrom::Latest => Offset::End,
        };
        let new = committed
            .elements()
            .into_iter()
            .filter(|e| !matches!(e.offset(), Offset::Offset(_)));
        source_offsets_at(consumer, new, wanted, "start offsets of new partitions")
    }

    /// The source log start and end of the assigned partitions. A restart resumes after
    /// the last copy: records between it and the log start were deleted before they were
    /// copied, and a log that ends before it went back.
    pub(super) fn log_bounds(
        &self,
        consumer: &BaseConsumer<Self>,
        committed: &TopicPartitionList,
    ) -> Result<LogBounds, ReplicatorError> {
        let assigned = || committed.elements().into_iter();
        let starts =
            source_offsets_at(consumer, assigned(), Offset::Beginning, "log start offsets")?;
        let mut ends = source_offsets_at(consumer, assigned(), Offset::End, "log end offsets")?;
        Ok(starts
            .into_iter()
            .filter_map(|(key, start)| {
                let end = ends.remove(&key)?;
                Some((key, (start, end)))
            })
            .collect())
    }

    /// A source partition that ends below `copied_to`, the offset after the last record
    /// copied, went back: see [`ReplicatorError::SourceOffsetsWentBack`]. Reported as a
    /// loss of the offsets the source will reuse, and the flow stops whatever
    /// `on_data_loss` says.
    pub(super) fn check_offsets_did_not_go_back(
        &self,
        source_topic: &str,
        partition: i32,
        copied_to: i64,
        end: i64,
    ) -> Result<(), ReplicatorError> {
        if end >= copied_to {
            return Ok(());
        }
        self.lost(
            (source_topic, partition, "source", end, copied_to),
            "source_offsets_went_back",
            StopOnLoss::Always(ReplicatorError::SourceOffsetsWentBack {
                topic: source_topic.to_string(),
                partition,
                end,
                copied_to,
            }),
        )
    }

    /// Reads the IDs of the assigned partitions' source topics: one that changed since
    /// this pipeline run first saw it restarts the pipeline, whose next assignment then
    /// compares the new ID with those recorded (see the `source_ids` module).
    fn check_source_topic_ids(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> Result<(), ReplicatorError> {
        let mut topics: Vec<String> = tpl
            .elements()
            .iter()
            .map(|e| e.topic().to_string())
            .collect();
        topics.sort_unstable();
        topics.dedup();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.source_ids.check(consumer.client(), &names)
    }

    /// Writes the new map epochs of source topics created again, and waits until the map
    /// topic holds them. A commit naming the new topic's ID follows (the claim), so a
    /// crash after it finds the map of the new topic, not the old one's coverage, which
    /// would have made the new topic's offsets look as if they went back.
    fn persist_epochs(
        &self,
        epochs: Vec<(String, i32, Vec<MapUpdate>)>,
    ) -> Result<(), ReplicatorError> {
        if epochs.is_empty() {
            return Ok(());
        }
        let Some(writer) = PersistedMap::writer(self.map.as_deref())? else {
            return Ok(());
        };
        for (topic, partition, updates) in epochs {
            writer.write(&topic, partition, updates)?;
        }
        writer.flush(COMMIT_TIMEOUT)?;
        Ok(())
    }

    /// A target partition whose stable end (what committed readers see, the tail scan
    /// among them) is below the copies the group's commit says were acknowledged, while
    /// its log holds them: a transaction's markers are not written yet. The transaction
    /// coordinator writes them after it answered the commit (or the abort a fence made),
    /// so a new owner that reads right after a fenced hand-over can find the stable end
    /// behind the previous owner's committed copies; taken for the end, that was reported
    /// as copies the target lost (seen in CI, a fenced flow with an instance frozen). So
    /// the stable end is read again until it reaches them, for at most the scan's stall
    /// limit. A log that ends below them did lose copies: the watermarks are returned as
    /// they are, for [`Self::check_target_kept_its_copies`].
    fn wait_for_stable_end(
        &self,
        (target_topic, partition): (&str, i32),
        acked: i64,
        mut watermarks: (i64, i64),
    ) -> Result<Option<(i64, i64)>, ReplicatorError> {
        let Some(scanner) = &self.scanner else {
            return Ok(Some(watermarks));
        };
        let began = std::time::Instant::now();
        let mut waited = false;
        while watermarks.1 < acked {
            let log_end = scanner.log_end(&self.spec.target, target_topic, partition)?;
            if log_end.is_none_or(|end| end < acked) {
                break;
            }
            if began.elapsed() > STABLE_END_WAIT {
                return Err(ReplicatorError::Timeout(
                    STABLE_END_WAIT,
                    format!(
                        "waiting for {target_topic}[{partition}] on '{}' to be stable up to \
                         offset {acked} (it is at {}, its log ends at {}): a transaction on it \
                         stays open",
                        self.spec.target.name,
                        watermarks.1,
                        log_end.unwrap_or_default()
                    ),
                ));
            }
            if !waited {
                debug!(flow = %self.spec.name, topic = target_topic, partition, stable_end = watermarks.1, acked, ?log_end, "waiting for transaction markers on the target");
                waited = true;
            }
            std::thread::sleep(Duration::from_millis(50));
            match scanner.watermarks_of(target_topic, partition)? {
                Some(w) => watermarks = w,
                None => break,
            }
        }
        if waited {
            debug!(flow = %self.spec.name, topic = target_topic, partition, waited = ?began.elapsed(), "target stable end reached the acknowledged copies");
        }
        Ok(Some(watermarks))
    }

    /// A commit made for another topic ID than the source topic's now was made for a
    /// topic deleted since: see [`Self::topic_replaced`]. `true`: the flow goes on with
    /// the new topic.
    fn check_commit_is_of_this_topic(
        &self,
        partition: (&str, &str, i32),
        committed_next: i64,
        recorded: Option<&str>,
        current: Option<&TopicId>,
        log_start: Option<i64>,
    ) -> Result<bool, ReplicatorError> {
        if !is_other_topic(recorded, current) {
            return Ok(false);
        }
        self.topic_replaced(
            partition,
            format!(
                "the group's commit of offset {committed_next} was made for topic ID {}, and \
                 the topic's ID is now {}",
                recorded.unwrap_or_default(),
                current.map(|c| c.0.as_str()).unwrap_or_default()
            ),
            committed_next,
            log_start,
        )?;
        Ok(true)
    }

    /// Copies whose newest anchor names another topic ID than the source topic's now
    /// were made from a topic deleted since: see [`Self::topic_replaced`]. `copied_to`:
    /// the source offset after the newest copy known (from the offset map, or the copies).
    /// `true`: the flow goes on with the new topic.
    fn check_copies_are_of_this_topic(
        &self,
        partition: (&str, &str, i32),
        copies: &FoundCopies,
        current: Option<&TopicId>,
        (copied_to, log_start): (Option<i64>, Option<i64>),
    ) -> Result<bool, ReplicatorError> {
        let Some((recorded, anchor)) = &copies.topic_id else {
            return Ok(false);
        };
        if !is_other_topic(Some(recorded), current) {
            return Ok(false);
        }
        let copied_to = copied_to
            .into_iter()
            .chain(copies.last().map(|(source, _)| source + 1))
            .max()
            .unwrap_or(0);
        let (_, target_topic, partition_number) = partition;
        self.topic_replaced(
            partition,
            format!(
                "its newest anchor copy, at {target_topic}[{partition_number}] offset \
                 {anchor}, was made from topic ID {recorded}, and the topic's ID is now {}",
                current.map(|c| c.0.as_str()).unwrap_or_default()
            ),
            copied_to,
            log_start,
        )?;
        Ok(true)
    }

    /// The source topic is not the one copied: every record below `copied_to` in it
    /// would be taken for one already copied. With `on_source_topic_recreated = "stop"`
    /// (the default), reported as lost from the source's log start to there, and copying
    /// that topic stops whatever `on_data_loss` says: the pipeline restarts without it,
    /// and the flow's other topics go on. With `"continue"`, reported with an empty
    /// range (nothing of the new topic is taken for a copy; what the old topic held past
    /// its copies went with it, and how much is not known), and `Ok`: the caller copies
    /// the new topic from its start, after the old one's copies.
    fn topic_replaced(
        &self,
        (source_topic, target_topic, partition): (&str, &str, i32),
        evidence: String,
        copied_to: i64,
        log_start: Option<i64>,
    ) -> Result<(), ReplicatorError> {
        let from = match self.spec.on_source_topic_recreated {
            OnSourceTopicRecreated::Stop => log_start.map_or(0, |s| s.min(copied_to)),
            OnSourceTopicRecreated::Continue => copied_to,
        };
        self.lost(
            (source_topic, partition, "source", from, copied_to),
            "source_topic_replaced",
            StopOnLoss::IfRecreatedPolicySays(ReplicatorError::SourceTopicReplaced {
                topic: source_topic.to_string(),
                partition,
                target_topic: target_topic.to_string(),
                evidence,
                copied_to,
            }),
        )
        .map_err(|error| {
            // That topic alone: the pipeline restarts without it (see `refresh_topics`).
            self.status.stop_topic(source_topic, &error);
            ReplicatorError::SourceTopicStopped {
                topic: source_topic.to_string(),
            }
        })
    }

    /// Deleting a topic deletes its group offsets, so a partition the group has no commit
    /// for, while the offset map knows copies of it, may belong to a topic deleted and
    /// created again under the same name. Shorter than what was copied, it is found by
    /// [`Self::check_offsets_did_not_go_back`]; written past it, only the records tell:
    /// the newest copy is compared with the source record at the offset it was copied
    /// from. A different record there stops the topic (see [`Self::topic_replaced`]); the same one
    /// confirms the map (`true`: see [`resume_point`]); one that cannot be read (gone from
    /// either side, or no access to the source) leaves the other checks to decide.
    pub(super) fn check_source_is_what_was_copied(
        &self,
        (source_topic, target_topic, partition): (&str, &str, i32),
        (source_offset, target_offset): (i64, i64),
        target_end: i64,
        source_bounds: Option<&(i64, i64)>,
    ) -> Result<SameTopic, ReplicatorError> {
        let Some(scanner) = &self.scanner else {
            return Ok(SameTopic::Unknown);
        };
        let Some(&(log_start, source_end)) = source_bounds else {
            return Ok(SameTopic::Unknown);
        };
        if source_end <= source_offset {
            // Shorter than what was copied: the offsets went back.
            return Ok(SameTopic::Unknown);
        }
        let same = scanner.copy_matches_source(
            target_topic,
            &SourcePartition {
                cluster: &self.spec.source.name,
                topic: source_topic,
                partition,
            },
            (source_offset, target_offset),
            target_end,
        )?;
        match same {
            Some(true) => return Ok(SameTopic::Confirmed),
            None => return Ok(SameTopic::Unknown),
            Some(false) => {}
        }
        self.topic_replaced(
            (source_topic, target_topic, partition),
            format!(
                "its record at offset {source_offset} differs from that record's copy at \
                 {target_topic}[{partition}] offset {target_offset}"
            ),
            source_offset + 1,
            Some(log_start),
        )?;
        Ok(SameTopic::Recreated)
    }

    /// Records below `log_start` that are not copied are gone: see [`Self::lost`]. With
    /// `on_data_loss = "continue"`, the copy goes on from the log start.
    pub(super) fn start_after_loss(
        &self,
        source_topic: &str,
        partition: i32,
        start: i64,
        log_start: i64,
    ) -> Result<i64, ReplicatorError> {
        if log_start <= start {
            return Ok(start);
        }
        self.lost(
            (source_topic, partition, "source", start, log_start),
            "deleted_before_copy",
            ReplicatorError::SourceDataLoss {
                topic: source_topic.to_string(),
                partition,
                from: start,
                to: log_start,
            },
        )?;
        Ok(log_start)
    }

    /// A target partition that ends before the copies it acknowledged lost them: see
    /// [`Self::lost`]. With `on_data_loss = "continue"`, the copy goes on after them.
    pub(super) fn check_target_kept_its_copies(
        &self,
        (source_topic, target_topic, partition): (&str, &str, i32),
        target_end: i64,
        acked: i64,
    ) -> Result<(), ReplicatorError> {
        if target_end >= acked {
            return Ok(());
        }
        self.lost(
            (source_topic, partition, "target", target_end, acked),
            "lost_on_target",
            ReplicatorError::TargetDataLoss {
                cluster: self.spec.target.name.clone(),
                target_topic: target_topic.to_string(),
                partition,
                end: target_end,
                acked,
            },
        )
    }

    /// Records lost to the copy, `[from, to)` on one side: an ERROR, a count in
    /// `strait_records_lost_total`, an entry in `/status`; then `stop` is the flow's
    /// error (`on_data_loss = "stop"`, or a loss the copy cannot go on after), or the flow
    /// goes on.
    pub(super) fn lost(
        &self,
        (source_topic, partition, on, from, to): (&str, i32, &'static str, i64, i64),
        reason: &'static str,
        stop: impl Into<StopOnLoss>,
    ) -> Result<(), ReplicatorError> {
        let (stop, stops, what_stops) = match stop.into() {
            StopOnLoss::Always(error) => (error, true, "the flow stops"),
            StopOnLoss::IfPolicySays(error) => (
                error,
                self.spec.on_data_loss == OnDataLoss::Stop,
                "the flow stops",
            ),
            StopOnLoss::IfRecreatedPolicySays(error) => (
                error,
                self.spec.on_source_topic_recreated == OnSourceTopicRecreated::Stop,
                "copying this topic stops; the flow's other topics go on",
            ),
        };
        error!(
            flow = %self.spec.name, topic = source_topic, partition, on, from, to,
            lost = to - from, reason, action = if stops { "stop" } else { "continue" },
            "records lost to the copy: offsets [{from}, {to}) on the {on} ({reason}); {}",
            if stops { what_stops } else { "the copy goes on" }
        );
        metrics::counter!(telemetry::RECORDS_LOST_TOTAL,
            "flow" => self.spec.name.clone(), "topic" => source_topic.to_string(),
            "reason" => reason)
        .increment((to - from) as u64);
        self.status.record_loss(DataLoss {
            source_topic: source_topic.to_string(),
            partition,
            on,
            from,
            to,
            reason,
            action: if stops { "stopped" } else { "continued" },
            found_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        });
        if stops {
            return Err(stop);
        }
        Ok(())
    }
}

/// What comparing a copy with the source record it was made of tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SameTopic {
    /// The same record: the source topic is the one copied.
    Confirmed,
    /// Not comparable (no access to the source, or a record gone from either side).
    Unknown,
    /// Another record: the topic was created again, and the flow goes on with it
    /// (`on_source_topic_recreated = "continue"`; otherwise the flow stopped).
    Recreated,
}

/// How long an assignment waits for a target partition's transaction markers: see
/// [`RebalanceContext::wait_for_stable_end`].
const STABLE_END_WAIT: Duration = Duration::from_secs(30);

/// (log start, log end) of source partitions.
pub(super) type LogBounds = HashMap<(String, i32), (i64, i64)>;

/// Whether a loss stops the flow.
pub(super) enum StopOnLoss {
    /// As `on_data_loss` says.
    IfPolicySays(ReplicatorError),
    /// As `on_source_topic_recreated` says.
    IfRecreatedPolicySays(ReplicatorError),
    /// Whatever it says: the copy cannot go on exactly.
    Always(ReplicatorError),
}

impl From<ReplicatorError> for StopOnLoss {
    fn from(error: ReplicatorError) -> Self {
        Self::IfPolicySays(error)
    }
}

/// Each of `partitions`' offset at `at` (log start or end) on the source, in one request
/// per broker; partitions whose offset could not be read are left out.
pub(super) fn source_offsets_at<'a, C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: impl Iterator<Item = rdkafka::topic_partition_list::TopicPartitionListElem<'a>>,
    at: Offset,
    what: &str,
) -> Result<HashMap<(String, i32), i64>, ReplicatorError> {
    let mut source = TopicPartitionList::new();
    for elem in partitions {
        source
            .add_partition_offset(elem.topic(), elem.partition(), at)
            .map_err(|e| ReplicatorError::kafka("building offset request", e))?;
    }
    if source.count() == 0 {
        return Ok(HashMap::new());
    }
    // A partition whose leader is moving (a broker restarting, an election) answers
    // NotLeaderForPartition for a moment: asked again, not a reason to restart the flow.
    let attempt = || {
        let found = offsets_learning_partitions(consumer, source.clone(), COMMIT_TIMEOUT)?;
        match found.elements().iter().find_map(|e| e.error().err()) {
            Some(e) if passes_on_its_own(&e) => Err(e),
            _ => Ok(found),
        }
    };
    let found = attempt
        .retry(settling_backoff(COMMIT_TIMEOUT))
        .sleep(std::thread::sleep)
        .when(passes_on_its_own)
        .notify(|e, delay| debug!(error = %e, retry_in = ?delay, "reading {what}: asked again"))
        .call()
        .map_err(|e| ReplicatorError::kafka(format!("reading {what}"), e))?;
    Ok(offsets_of(&found))
}

/// A partition's leader moving, or one broker unreachable: errors a read asks again
/// through, for a while, rather than restarting the flow.
pub(super) fn passes_on_its_own(e: &rdkafka::error::KafkaError) -> bool {
    is_connection_trouble(e) || e.rdkafka_error_code().is_some_and(is_leader_settling)
}
