//! Listing and describing consumer groups, and reading and writing any group's committed
//! offsets, through one client: librdkafka's ListConsumerGroups, DescribeConsumerGroups,
//! ListConsumerGroupOffsets and AlterConsumerGroupOffsets admin calls.
//!
//! Why this module holds `unsafe` (as does `replicator/src/produce.rs`): rust-rdkafka
//! 0.39 does not wrap these calls, and librdkafka's consumer API reads and commits offsets
//! only for the client's own `group.id`. Without them, offset sync kept a client per group on each
//! cluster. With the default `groups = [".*"]` on the test bed's primary, which had
//! collected 253 groups, one flow's first seconds sent it 759 ApiVersions, 760 Metadata
//! and 698 FindCoordinator requests; 60 groups with `sync_group_offsets` made 529
//! threads. With these calls, one client per cluster serves every group.
//!
//! The unsafe surface is kept to what these calls need, each pointer's owner is named
//! where it is used, and every librdkafka object is destroyed by a guard, whichever way a
//! call returns. Inputs are copied by librdkafka when a request is made; results are
//! copied out of the event before it is destroyed.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::topic_partition_list::TopicPartitionList;

/// A failed call: the error code, and librdkafka's or the broker's words for it
/// (becomes [`crate::OffsetSyncError::Admin`] with the caller's context).
#[derive(Debug, Clone)]
pub struct AdminCallError {
    pub code: RDKafkaErrorCode,
    pub reason: String,
}

/// One partition of a result: committed offset (`None`: the group never committed
/// there), or the partition's own error.
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: Option<i64>,
    /// The metadata committed with the offset ("" for none).
    pub metadata: String,
    pub error: Option<RDKafkaErrorCode>,
}

/// The committed offsets of each of `groups` on `partitions` (`None`: on every partition
/// the group committed on), in the order of `groups`. librdkafka takes one group per
/// request, so there is a request per group, all in flight together: a round over
/// hundreds of groups takes a few round trips, not hundreds.
pub fn list<C: ClientContext>(
    client: &Client<C>,
    groups: &[&str],
    partitions: Option<&TopicPartitionList>,
    timeout: Duration,
) -> Vec<Result<Vec<PartitionOffset>, AdminCallError>> {
    let requests = match Requests::new(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
        rd::RD_KAFKA_EVENT_LISTCONSUMERGROUPOFFSETS_RESULT,
        timeout,
    ) {
        Ok(r) => r,
        Err(e) => return groups.iter().map(|_| Err(e.clone())).collect(),
    };
    let mut sent = Vec::with_capacity(groups.len());
    for (index, group) in groups.iter().enumerate() {
        sent.push(c_string(group).and_then(|group_c| {
            requests.send(index, |rk, options, queue| {
                // SAFETY: `group_c` and `partitions` outlive the call; librdkafka copies
                // both into the request object (a null list asks for every committed
                // partition), and the call copies that object (and the options) again, so
                // it is destroyed right after.
                unsafe {
                    let request = rd::rd_kafka_ListConsumerGroupOffsets_new(
                        group_c.as_ptr(),
                        partitions.map_or(std::ptr::null(), |list| list.ptr().cast_const()),
                    );
                    let mut one = [request];
                    rd::rd_kafka_ListConsumerGroupOffsets(rk, one.as_mut_ptr(), 1, options, queue);
                    rd::rd_kafka_ListConsumerGroupOffsets_destroy(request);
                }
            })
        }));
    }
    requests.collect(sent, |event| {
        let mut count = 0usize;
        // SAFETY: `event` is a live ListConsumerGroupOffsets result event (checked by
        // `collect`); the array and the results it points to belong to it.
        unsafe {
            let result = rd::rd_kafka_event_ListConsumerGroupOffsets_result(event);
            group_results(
                rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count),
                count,
            )
        }
    })
}

/// Sets `group`'s committed offsets to those in `offsets`. The broker refuses this while
/// the group has members; that refusal comes back as an error, for the whole call or for
/// each partition.
pub fn alter<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    offsets: &TopicPartitionList,
    timeout: Duration,
) -> Result<Vec<PartitionOffset>, AdminCallError> {
    let requests = Requests::new(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERCONSUMERGROUPOFFSETS,
        rd::RD_KAFKA_EVENT_ALTERCONSUMERGROUPOFFSETS_RESULT,
        timeout,
    )?;
    let group_c = c_string(group)?;
    let sent = requests.send(0, |rk, options, queue| {
        // SAFETY: as in `list`: both inputs are copied by librdkafka.
        unsafe {
            let request =
                rd::rd_kafka_AlterConsumerGroupOffsets_new(group_c.as_ptr(), offsets.ptr());
            let mut one = [request];
            rd::rd_kafka_AlterConsumerGroupOffsets(rk, one.as_mut_ptr(), 1, options, queue);
            rd::rd_kafka_AlterConsumerGroupOffsets_destroy(request);
        }
    });
    let mut results = requests.collect(vec![sent], |event| {
        let mut count = 0usize;
        // SAFETY: as in `list`, for an AlterConsumerGroupOffsets result event.
        unsafe {
            let result = rd::rd_kafka_event_AlterConsumerGroupOffsets_result(event);
            group_results(
                rd::rd_kafka_AlterConsumerGroupOffsets_result_groups(result, &mut count),
                count,
            )
        }
    });
    results.pop().unwrap_or_else(|| Err(failed("no result")))
}

/// The names of the cluster's consumer groups: ListGroups only, sent to every broker. (The
/// consumer API's group list also describes every group, members included, which on a
/// cluster of thousands of groups is a large answer to throw away every round.)
/// `Ok(None)`: the cluster does not implement ListGroups (librdkafka's mock cluster, some
/// Kafka-compatible services).
pub fn list_group_names<C: ClientContext>(
    client: &Client<C>,
    timeout: Duration,
) -> Result<Option<Vec<String>>, AdminCallError> {
    let requests = Requests::new(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS,
        rd::RD_KAFKA_EVENT_LISTCONSUMERGROUPS_RESULT,
        timeout,
    )?;
    let sent = requests.send(0, |rk, options, queue| {
        // SAFETY: the options are copied by the call.
        unsafe { rd::rd_kafka_ListConsumerGroups(rk, options, queue) }
    });
    let mut results = requests.collect(vec![sent], |event| {
        // SAFETY: `event` is a live ListConsumerGroups result event (checked by
        // `collect`); both arrays and what they point to belong to it, and are copied.
        unsafe {
            let result = rd::rd_kafka_event_ListConsumerGroups_result(event);
            let mut count = 0usize;
            let errors = rd::rd_kafka_ListConsumerGroups_result_errors(result, &mut count);
            let errors: Vec<AdminCallError> = (0..count)
                .map(|i| {
                    let error = *errors.add(i);
                    AdminCallError {
                        code: rd::rd_kafka_error_code(error).into(),
                        reason: text(rd::rd_kafka_error_string(error)),
                    }
                })
                .collect();
            let listings = rd::rd_kafka_ListConsumerGroups_result_valid(result, &mut count);
            let names: Vec<String> = (0..count)
                .map(|i| text(rd::rd_kafka_ConsumerGroupListing_group_id(*listings.add(i))))
                .collect();
            Ok((names, errors))
        }
    });
    let (names, errors) = results.pop().unwrap_or_else(|| Err(failed("no result")))?;
    // A broker that cannot list groups fails the whole list: a group it coordinates would
    // otherwise drop out of offset sync without a word.
    match errors.into_iter().next() {
        None => Ok(Some(names)),
        Some(e) if names.is_empty() && is_unsupported(e.code) => Ok(None),
        Some(e) => Err(e),
    }
}

/// What a consumer group is doing now, as its coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// librdkafka's name of the group's state: "Stable", "Empty", "Dead" (no such
    /// group), "PreparingRebalance", "CompletingRebalance" or "Unknown".
    pub state: String,
    pub members: usize,
}

/// Describes `group` with librdkafka's DescribeConsumerGroups, which asks the coordinator
/// with ConsumerGroupDescribe (KIP-848) where the broker has it, and with the classic
/// DescribeGroups for classic groups and older brokers. (The consumer API's group list,
/// DescribeGroups alone, shows a group of the new protocol as "Dead" with no members,
/// even while its consumers run.) `Ok(None)`: the cluster cannot describe groups.
pub fn describe<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    timeout: Duration,
) -> Result<Option<GroupDescription>, AdminCallError> {
    let requests = Requests::new(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
        rd::RD_KAFKA_EVENT_DESCRIBECONSUMERGROUPS_RESULT,
        timeout,
    )?;
    let group_c = c_string(group)?;
    let sent = requests.send(0, |rk, options, queue| {
        // SAFETY: the name outlives the call, which copies it and the options.
        unsafe {
            let mut one = [group_c.as_ptr()];
            rd::rd_kafka_DescribeConsumerGroups(rk, one.as_mut_ptr(), 1, options, queue);
        }
    });
    let mut results = requests.collect(vec![sent], |event| {
        // SAFETY: `event` is a live DescribeConsumerGroups result event (checked by
        // `collect`); the descriptions and their strings belong to it and are copied.
        unsafe {
            let result = rd::rd_kafka_event_DescribeConsumerGroups_result(event);
            let mut count = 0usize;
            let groups = rd::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut count);
            if groups.is_null() || count == 0 {
                return Err(failed("librdkafka returned no group description"));
            }
            let description = *groups;
            let error = rd::rd_kafka_ConsumerGroupDescription_error(description);
            if !error.is_null() {
                return Err(AdminCallError {
                    code: rd::rd_kafka_error_code(error).into(),
                    reason: text(rd::rd_kafka_error_string(error)),
                });
            }
            Ok(GroupDescription {
                state: text(rd::rd_kafka_consumer_group_state_name(
                    rd::rd_kafka_ConsumerGroupDescription_state(description),
                )),
                members: rd::rd_kafka_ConsumerGroupDescription_member_count(description),
            })
        }
    });
    match results.pop().unwrap_or_else(|| Err(failed("no result"))) {
        Ok(description) => Ok(Some(description)),
        Err(e) if is_unsupported(e.code) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_unsupported(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnsupportedFeature | RDKafkaErrorCode::UnsupportedVersion
    )
}

pub(crate) fn c_string(name: &str) -> Result<CString, AdminCallError> {
    CString::new(name).map_err(|_| AdminCallError {
        code: RDKafkaErrorCode::InvalidArgument,
        reason: format!("name {name:?} contains a NUL byte"),
    })
}

pub(crate) fn failed(reason: &str) -> AdminCallError {
    AdminCallError {
        code: RDKafkaErrorCode::Fail,
        reason: reason.to_string(),
    }
}

/// Admin requests of one kind, answered on a queue of their own (also used by
/// [`crate::topic_ids`]). Borrows the client it
/// was made from, so that the client outlives the raw pointer kept here.
pub(crate) struct Requests<'client> {
    rk: *mut rd::rd_kafka_t,
    _client: PhantomData<&'client ()>,
    queue: Guard<rd::rd_kafka_queue_t>,
    op: rd::rd_kafka_admin_op_t,
    event_type: i32,
    timeout: Duration,
}

impl<'client> Requests<'client> {
    pub(crate) fn new<C: ClientContext>(
        client: &'client Client<C>,
        op: rd::rd_kafka_admin_op_t,
        event_type: i32,
        timeout: Duration,
    ) -> Result<Self, AdminCallError> {
        let rk = client.native_ptr();
        // SAFETY: `rk` is a live client. The queue is ours until the guard destroys it; a
        // request still pending then keeps its own reference to the queue, so a late
        // answer is dropped by librdkafka, not written to freed memory.
        let queue = Guard(unsafe { rd::rd_kafka_queue_new(rk) }, |q| unsafe {
            rd::rd_kafka_queue_destroy(q)
        });
        if queue.0.is_null() {
            return Err(failed("librdkafka could not create a queue"));
        }
        Ok(Self {
            rk,
            _client: PhantomData,
            queue,
            op,
            event_type,
            timeout,
        })
    }

    /// Makes one request with `send(client, options, queue)`; its answer carries `index`.
    pub(crate) fn send(
        &self,
        index: usize,
        send: impl FnOnce(
            *mut rd::rd_kafka_t,
            *const rd::rd_kafka_AdminOptions_t,
            *mut rd::rd_kafka_queue_t,
        ),
    ) -> Result<(), AdminCallError> {
        // SAFETY: the client is live (see `new`); the options are ours until the guard
        // destroys them, after `send`, whose call copies them.
        let options = Guard(
            unsafe { rd::rd_kafka_AdminOptions_new(self.rk, self.op) },
            |o| unsafe { rd::rd_kafka_AdminOptions_destroy(o) },
        );
        if options.0.is_null() {
            return Err(failed("librdkafka could not set up an admin request"));
        }
        let timeout_ms = i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX);
        let mut errstr = [0 as c_char; 256];
        // SAFETY: `errstr` is writable for the length passed. The opaque is a number that
        // comes back in the answer's event, never a pointer that is followed.
        unsafe {
            rd::rd_kafka_AdminOptions_set_request_timeout(
                options.0,
                timeout_ms,
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            rd::rd_kafka_AdminOptions_set_opaque(options.0, index as *mut c_void);
        }
        send(self.rk, options.0, self.queue.0);
        Ok(())
    }

    /// The answers to the requests in `sent` (by index; an entry is the error if that
    /// request was never made), each read with `read`.
    pub(crate) fn collect<T>(
        &self,
        sent: Vec<Result<(), AdminCallError>>,
        read: impl Fn(*mut rd::rd_kafka_event_t) -> Result<T, AdminCallError>,
    ) -> Vec<Result<T, AdminCallError>> {
        let mut waiting = sent.iter().filter(|s| s.is_ok()).count();
        let mut results: Vec<Option<Result<T, AdminCallError>>> =
            sent.into_iter().map(|s| s.err().map(Err)).collect();
        // Each request times itself out after `timeout`; the extra second lets those
        // answers arrive instead of a bare "no answer" here.
        let deadline = Instant::now() + self.timeout + Duration::from_secs(1);
        while waiting > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let left_ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
            // SAFETY: the queue is live (see `new`); the event, if any, is ours until its
            // guard destroys it, after everything is copied out of it.
            let event = Guard(
                unsafe { rd::rd_kafka_queue_poll(self.queue.0, left_ms) },
                |e| unsafe { rd::rd_kafka_event_destroy(e) },
            );
            if event.0.is_null() {
                continue;
            }
            // SAFETY: `event.0` is a live event (checked above).
            let (kind, err, index) = unsafe {
                (
                    rd::rd_kafka_event_type(event.0),
                    rd::rd_kafka_event_error(event.0),
                    rd::rd_kafka_event_opaque(event.0) as usize,
                )
            };
            let Some(slot) = results.get_mut(index).filter(|r| r.is_none()) else {
                continue;
            };
            *slot = Some(
                if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    // SAFETY: the string belongs to the live event and is copied here.
                    let reason = unsafe { text(rd::rd_kafka_event_error_string(event.0)) };
                    Err(AdminCallError {
                        code: err.into(),
                        reason,
                    })
                } else if kind != self.event_type {
                    Err(failed(&format!(
                        "unexpected librdkafka event type {kind} (wanted {})",
                        self.event_type
                    )))
                } else {
                    read(event.0)
                },
            );
            waiting -= 1;
        }
        let timeout = self.timeout;
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(AdminCallError {
                        code: RDKafkaErrorCode::OperationTimedOut,
                        reason: format!("no answer within {timeout:?}"),
                    })
                })
            })
            .collect()
    }
}

/// The single group result of a call: its error, or its partitions.
///
/// # Safety
/// `groups` points to `count` live group results, owned by a live event.
unsafe fn group_results(
    groups: *mut *const rd::rd_kafka_group_result_t,
    count: usize,
) -> Result<Vec<PartitionOffset>, AdminCallError> {
    if groups.is_null() || count == 0 {
        return Err(failed("librdkafka returned no group result"));
    }
    // One group per call, so one result.
    let group = *groups;
    let error = rd::rd_kafka_group_result_error(group);
    if !error.is_null() {
        return Err(AdminCallError {
            code: rd::rd_kafka_error_code(error).into(),
            reason: text(rd::rd_kafka_error_string(error)),
        });
    }
    let list = rd::rd_kafka_group_result_partitions(group);
    if list.is_null() {
        return Ok(Vec::new());
    }
    let list = &*list;
    let len = usize::try_from(list.cnt).unwrap_or(0);
    let mut out = Vec::with_capacity(len);
    for i in 0..len {
        let p = &*list.elems.add(i);
        out.push(PartitionOffset {
            topic: text(p.topic),
            partition: p.partition,
            // librdkafka's "no offset" is negative (RD_KAFKA_OFFSET_INVALID).
            offset: (p.offset >= 0).then_some(p.offset),
            metadata: if p.metadata.is_null() || p.metadata_size == 0 {
                String::new()
            } else {
                String::from_utf8_lossy(std::slice::from_raw_parts(
                    p.metadata.cast::<u8>(),
                    p.metadata_size,
                ))
                .into_owned()
            },
            error: (p.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
                .then(|| p.err.into()),
        });
    }
    Ok(out)
}

/// A copy of a C string owned by librdkafka ("" for null).
///
/// # Safety
/// `s` is null or a NUL-terminated string that lives for this call.
pub(crate) unsafe fn text(s: *const c_char) -> String {
    if s.is_null() {
        String::new()
    } else {
        CStr::from_ptr(s).to_string_lossy().into_owned()
    }
}

/// Destroys a librdkafka object when dropped (unless null).
struct Guard<T>(*mut T, fn(*mut T));

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            (self.1)(self.0);
        }
    }
}
