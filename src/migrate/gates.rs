//! The gate rules: what an approval decides, when a waiting stage is overdue, and what
//! each automatic condition makes of what the probe saw. Pure functions; the controller
//! does the reading and writing.

use super::*;

/// Whether a gate's condition holds now, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Check {
    Pass(String),
    Wait(String),
}

/// What the gate's approval setting decides before any condition is read: wait for an
/// approval, pass on it, or `None`, check the condition. `instruction` says what the
/// operator does at this stage.
pub(super) fn approval_decides(
    stage: Stage,
    approval: Approval,
    approved: bool,
    instruction: &str,
) -> Option<Check> {
    match (approval, approved) {
        (Approval::Manual, false) => Some(Check::Wait(format!(
            "{instruction}; then approve: strait migrate approve --config FILE {}",
            stage.name()
        ))),
        // Elsewhere the approval is required in addition to the condition, so a manual
        // gate never advances while it is unsafe.
        (Approval::Manual, true) if stage.approval_suffices() => {
            Some(Check::Pass("approved".into()))
        }
        _ => None,
    }
}

/// A waiting stage past its gate's timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Overdue {
    No,
    /// Said in the status (and warned once); the stage keeps waiting.
    Warn(Duration),
    /// `on_timeout = "abort"` at a stage that can still go back to plain mirroring.
    Abort(Duration),
}

pub(super) fn overdue(stage: Stage, gate: &Gate, waited: Duration) -> Overdue {
    match gate.timeout.filter(|t| waited > *t) {
        None => Overdue::No,
        Some(t) if gate.on_timeout == OnTimeout::Abort && stage.abortable() => Overdue::Abort(t),
        Some(t) => Overdue::Warn(t),
    }
}

/// `mirror` and `drain`: every partition replicated to the source's end.
pub(super) fn lag_check(lags: &[PartitionLag]) -> Check {
    let behind: Vec<&PartitionLag> = lags.iter().filter(|l| l.lag_records > 0).collect();
    match behind.first() {
        None => Check::Pass(format!(
            "replication lag 0 on all {} partitions",
            lags.len()
        )),
        Some(first) => Check::Wait(format!(
            "replication lag {} records on {} partition(s), e.g. {}/{}",
            behind.iter().map(|l| l.lag_records).sum::<i64>(),
            behind.len(),
            first.topic,
            first.partition
        )),
    }
}

/// `move_producers`: no migrated source partition's end moved for `idle_for`. `moved`:
/// the partitions whose end moved since the last look; `idle`: how long none has.
pub(super) fn producers_idle(
    moved: &[String],
    idle: Duration,
    idle_for: Duration,
    source: &str,
    instruction: &str,
) -> Check {
    if !moved.is_empty() {
        Check::Wait(format!(
            "producers are still writing to '{source}' ({} moved); {instruction}",
            moved.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
        ))
    } else if idle >= idle_for {
        Check::Pass(format!(
            "no new records on '{source}' for {}",
            humantime::format_duration(idle_for)
        ))
    } else {
        Check::Wait(format!(
            "no new records on '{source}' for {}s of {}",
            idle.as_secs(),
            humantime::format_duration(idle_for)
        ))
    }
}

/// What the migrated groups' membership on one cluster says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Membership {
    /// The cluster cannot describe groups: the operator's approval stands in.
    Unknown,
    /// The gate's condition holds.
    Holds,
    /// The groups that keep it from holding, as said in the status.
    Not(Vec<String>),
}

/// `stop_consumers`: every migrated group has no members on the source.
/// `members`: each group and its member count (`None`: cannot be described).
pub(super) fn groups_stopped(members: &[(String, Option<usize>)]) -> Membership {
    if members.iter().any(|(_, n)| n.is_none()) {
        return Membership::Unknown;
    }
    let active: Vec<String> = members
        .iter()
        .filter_map(|(group, n)| {
            n.filter(|n| *n > 0)
                .map(|n| format!("{group} ({n} members)"))
        })
        .collect();
    if active.is_empty() {
        Membership::Holds
    } else {
        Membership::Not(active)
    }
}

/// `start_consumers`: every migrated group has members on the target.
pub(super) fn groups_started(members: &[(String, Option<usize>)]) -> Membership {
    if members.iter().any(|(_, n)| n.is_none()) {
        return Membership::Unknown;
    }
    let waiting: Vec<String> = members
        .iter()
        .filter(|(_, n)| *n == Some(0))
        .map(|(group, _)| group.clone())
        .collect();
    if waiting.is_empty() {
        Membership::Holds
    } else {
        Membership::Not(waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(approval: Approval, timeout: Option<u64>, on_timeout: OnTimeout) -> Gate {
        Gate {
            approval,
            timeout: timeout.map(Duration::from_secs),
            on_timeout,
            ..Gate::default()
        }
    }

    #[test]
    fn a_manual_gate_waits_for_its_approval_which_suffices_only_where_it_is_safe() {
        let wait = approval_decides(Stage::Drain, Approval::Manual, false, "catch up");
        assert_eq!(
            wait,
            Some(Check::Wait(
                "catch up; then approve: strait migrate approve --config FILE drain".into()
            ))
        );
        for stage in [Stage::Mirror, Stage::MoveProducers, Stage::StartConsumers] {
            assert_eq!(
                approval_decides(stage, Approval::Manual, true, ""),
                Some(Check::Pass("approved".into())),
                "{stage:?}"
            );
        }
        // Approved, the unsafe stages still check their condition.
        for stage in [
            Stage::Drain,
            Stage::StopConsumers,
            Stage::TranslateOffsets,
            Stage::Verify,
        ] {
            assert_eq!(approval_decides(stage, Approval::Manual, true, ""), None);
        }
        assert_eq!(
            approval_decides(Stage::Mirror, Approval::Auto, false, ""),
            None
        );
    }

    #[test]
    fn an_overdue_stage_aborts_only_where_it_can_go_back() {
        let abort = gate(Approval::Auto, Some(60), OnTimeout::Abort);
        let sixty = Duration::from_secs(60);
        assert_eq!(overdue(Stage::Drain, &abort, sixty), Overdue::No);
        assert_eq!(
            overdue(Stage::Drain, &abort, Duration::from_secs(61)),
            Overdue::Abort(sixty)
        );
        // Consumers may already read the target: never go back from there.
        assert_eq!(
            overdue(Stage::StartConsumers, &abort, Duration::from_secs(61)),
            Overdue::Warn(sixty)
        );
        let wait = gate(Approval::Auto, Some(60), OnTimeout::Wait);
        assert_eq!(
            overdue(Stage::Drain, &wait, Duration::from_secs(61)),
            Overdue::Warn(sixty)
        );
        let none = gate(Approval::Auto, None, OnTimeout::Abort);
        assert_eq!(overdue(Stage::Drain, &none, Duration::MAX), Overdue::No);
    }

    fn lag(partition: i32, lag_records: i64) -> PartitionLag {
        PartitionLag {
            topic: "orders".into(),
            partition,
            source_end: 100,
            replicated_to: 100 - lag_records,
            lag_records,
        }
    }

    #[test]
    fn lag_passes_only_at_zero_everywhere() {
        assert_eq!(
            lag_check(&[lag(0, 0), lag(1, 0)]),
            Check::Pass("replication lag 0 on all 2 partitions".into())
        );
        assert_eq!(
            lag_check(&[lag(0, 0), lag(1, 3), lag(2, 4)]),
            Check::Wait("replication lag 7 records on 2 partition(s), e.g. orders/1".into())
        );
    }

    #[test]
    fn producers_are_idle_once_no_end_moved_for_the_whole_interval() {
        let ten = Duration::from_secs(10);
        let moved = vec!["orders/0".to_string()];
        assert!(matches!(
            producers_idle(&moved, ten, ten, "old", "stop them"),
            Check::Wait(w) if w == "producers are still writing to 'old' (orders/0 moved); stop them"
        ));
        assert_eq!(
            producers_idle(&[], Duration::from_secs(4), ten, "old", ""),
            Check::Wait("no new records on 'old' for 4s of 10s".into())
        );
        assert_eq!(
            producers_idle(&[], ten, ten, "old", ""),
            Check::Pass("no new records on 'old' for 10s".into())
        );
    }

    #[test]
    fn group_membership_gates_need_every_group_and_say_which_hold_them() {
        let members = |v: &[(&str, Option<usize>)]| -> Vec<(String, Option<usize>)> {
            v.iter().map(|(g, n)| (g.to_string(), *n)).collect()
        };
        assert_eq!(
            groups_stopped(&members(&[("a", Some(0)), ("b", Some(2))])),
            Membership::Not(vec!["b (2 members)".into()])
        );
        assert_eq!(
            groups_stopped(&members(&[("a", Some(0)), ("b", Some(0))])),
            Membership::Holds
        );
        assert_eq!(
            groups_stopped(&members(&[("a", Some(3)), ("b", None)])),
            Membership::Unknown
        );
        assert_eq!(
            groups_started(&members(&[("a", Some(1)), ("b", Some(0))])),
            Membership::Not(vec!["b".into()])
        );
        assert_eq!(
            groups_started(&members(&[("a", Some(1)), ("b", Some(4))])),
            Membership::Holds
        );
        assert_eq!(
            groups_started(&members(&[("a", None)])),
            Membership::Unknown
        );
    }
}
