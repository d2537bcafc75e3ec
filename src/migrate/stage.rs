//! The stages of a migration, in order, and what each allows.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Stage {
    Mirror,
    MoveProducers,
    Drain,
    StopConsumers,
    TranslateOffsets,
    Verify,
    StartConsumers,
    Done,
    Aborted,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Self::Mirror => "mirror",
            Self::MoveProducers => "move_producers",
            Self::Drain => "drain",
            Self::StopConsumers => "stop_consumers",
            Self::TranslateOffsets => "translate_offsets",
            Self::Verify => "verify",
            Self::StartConsumers => "start_consumers",
            Self::Done => "done",
            Self::Aborted => "aborted",
        }
    }

    pub(super) fn next(self) -> Self {
        match self {
            Self::Mirror => Self::MoveProducers,
            Self::MoveProducers => Self::Drain,
            Self::Drain => Self::StopConsumers,
            Self::StopConsumers => Self::TranslateOffsets,
            Self::TranslateOffsets => Self::Verify,
            Self::Verify => Self::StartConsumers,
            Self::StartConsumers | Self::Done => Self::Done,
            Self::Aborted => Self::Aborted,
        }
    }

    pub(super) fn gate(self, m: &MigrationConfig) -> Option<&Gate> {
        let g = &m.gates;
        Some(match self {
            Self::Mirror => &g.mirror,
            Self::MoveProducers => &g.move_producers,
            Self::Drain => &g.drain,
            Self::StopConsumers => &g.stop_consumers,
            Self::TranslateOffsets => &g.translate_offsets,
            Self::Verify => &g.verify,
            Self::StartConsumers => &g.start_consumers,
            Self::Done | Self::Aborted => return None,
        })
    }

    /// Until consumers start on the target, the source is still the truth and the
    /// migration can go back to plain mirroring.
    pub(super) fn abortable(self) -> bool {
        self < Self::StartConsumers
    }

    /// Stages where an operator's approval stands for the condition; in the others it
    /// is required in addition, so a manual gate never advances while it is unsafe.
    pub(super) fn approval_suffices(self) -> bool {
        matches!(
            self,
            Self::Mirror | Self::MoveProducers | Self::StartConsumers
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_run_in_order_and_end_at_done() {
        let mut stage = Stage::Mirror;
        let mut seen = vec![stage.name()];
        while stage != Stage::Done {
            stage = stage.next();
            seen.push(stage.name());
        }
        assert_eq!(
            seen,
            [
                "mirror",
                "move_producers",
                "drain",
                "stop_consumers",
                "translate_offsets",
                "verify",
                "start_consumers",
                "done"
            ]
        );
        assert_eq!(Stage::Aborted.next(), Stage::Aborted);
    }

    #[test]
    fn only_stages_before_consumers_start_on_the_target_can_go_back() {
        assert!(Stage::Verify.abortable());
        assert!(!Stage::StartConsumers.abortable());
        assert!(!Stage::Done.abortable());
    }

    #[test]
    fn each_stage_has_its_own_gate_and_the_ends_have_none() {
        let mut m = MigrationConfig {
            flow: "f".into(),
            groups: Vec::new(),
            state_topic: None,
            gates: crate::config::Gates::default(),
        };
        m.gates.verify.timeout = Some(Duration::from_secs(7));
        assert_eq!(
            Stage::Verify.gate(&m).and_then(|g| g.timeout),
            Some(Duration::from_secs(7))
        );
        assert_eq!(Stage::Drain.gate(&m).and_then(|g| g.timeout), None);
        assert!(Stage::Done.gate(&m).is_none());
        assert!(Stage::Aborted.gate(&m).is_none());
    }
}
