//! The ScaledObject's status conditions: their types, statuses and reasons named once for
//! every crate that writes or reads them (the activator's reconcile and scale loop, the
//! fallback, the metrics adapter's poller). On the wire they stay KEDA's strings.

use crate::scaled_object::{Condition, ScaledObjectStatus};

/// A condition's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// The spec is valid and the triggers work.
    Ready,
    /// Some trigger is active.
    Active,
    /// Some metric is answered by the fallback.
    Fallback,
    /// Paused by annotation.
    Paused,
}

impl ConditionType {
    /// Every type, in the order a new status lists them.
    pub const ALL: [Self; 4] = [Self::Ready, Self::Active, Self::Fallback, Self::Paused];

    /// The type as written in the status.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Active => "Active",
            Self::Fallback => "Fallback",
            Self::Paused => "Paused",
        }
    }
}

/// A condition's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

impl ConditionStatus {
    /// The status as written.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// A condition's `reason`, as KEDA names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Ready True: the spec is valid.
    ScaledObjectReady,
    /// Ready False: the spec, a trigger's configuration or the target is wrong.
    ScaledObjectCheckFailed,
    /// Ready False: every trigger fails and no fallback applies.
    TriggerError,
    /// Ready Unknown: active, with some triggers failing.
    PartialTriggerError,
    /// Active True.
    ScalerActive,
    /// Active False, waiting for the cooldown to scale in.
    ScalerCooldown,
    /// Active False.
    ScalerNotActive,
    /// Fallback True.
    FallbackExists,
    /// Fallback False.
    NoFallbackFound,
    /// Paused True.
    ScaledObjectPaused,
    /// Paused False after a pause.
    ScaledObjectUnpaused,
    /// ScaledJob Ready True.
    ScaledJobReady,
    /// ScaledJob Ready False: its spec or a trigger's configuration is wrong.
    ScaledJobCheckFailed,
    /// ScaledJob Paused True.
    ScaledJobPaused,
    /// ScaledJob Paused False after a pause.
    ScaledJobUnpaused,
    /// Active Unknown: the check failed.
    UnknownState,
}

impl Reason {
    /// The reason as written.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ScaledObjectReady => "ScaledObjectReady",
            Self::ScaledObjectCheckFailed => "ScaledObjectCheckFailed",
            Self::TriggerError => "TriggerError",
            Self::PartialTriggerError => "PartialTriggerError",
            Self::ScalerActive => "ScalerActive",
            Self::ScalerCooldown => "ScalerCooldown",
            Self::ScalerNotActive => "ScalerNotActive",
            Self::FallbackExists => "FallbackExists",
            Self::NoFallbackFound => "NoFallbackFound",
            Self::ScaledObjectPaused => "ScaledObjectPaused",
            Self::ScaledObjectUnpaused => "ScaledObjectUnpaused",
            Self::ScaledJobReady => "ScaledJobReady",
            Self::ScaledJobCheckFailed => "ScaledJobCheckFailed",
            Self::ScaledJobPaused => "ScaledJobPaused",
            Self::ScaledJobUnpaused => "ScaledJobUnpaused",
            Self::UnknownState => "UnknownState",
        }
    }
}

/// The longest condition message written, in bytes (`metav1.Condition`'s limit): a message
/// quoting a huge value is cut, never the status write refused for its size.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// `message` cut to at most `max` bytes on a character boundary, ending in `…` when cut
/// (messages name the field first, so the cut keeps it).
pub fn truncate_message(mut message: String, max: usize) -> String {
    const MORE: &str = "…";
    if message.len() <= max {
        return message;
    }
    let mut end = max.saturating_sub(MORE.len());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(MORE);
    message
}

impl Condition {
    /// A condition with a reason and a message (at most [`MAX_MESSAGE_BYTES`]).
    pub fn new(
        type_: ConditionType,
        status: ConditionStatus,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: type_.as_str().into(),
            status: status.as_str().into(),
            reason: Some(reason.as_str().into()),
            message: Some(truncate_message(message.into(), MAX_MESSAGE_BYTES)),
        }
    }

    /// A condition nothing has reported on yet: no reason, no message.
    pub fn unset(type_: ConditionType, status: ConditionStatus) -> Self {
        Self {
            type_: type_.as_str().into(),
            status: status.as_str().into(),
            reason: None,
            message: None,
        }
    }

    /// Whether this condition is of `type_`.
    pub fn is(&self, type_: ConditionType) -> bool {
        self.type_ == type_.as_str()
    }

    /// Whether this condition is of `type_` and has `status`.
    pub fn is_status(&self, type_: ConditionType, status: ConditionStatus) -> bool {
        self.is(type_) && self.status == status.as_str()
    }

    /// Whether this condition's reason is one of `reasons`.
    pub fn has_reason(&self, reasons: &[Reason]) -> bool {
        self.reason
            .as_deref()
            .is_some_and(|r| reasons.iter().any(|x| x.as_str() == r))
    }
}

impl ScaledObjectStatus {
    /// The condition of `type_`, when the status has one.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        find(&self.conditions, type_)
    }

    /// Whether the condition of `type_` has `status`.
    pub fn condition_is(&self, type_: ConditionType, status: ConditionStatus) -> bool {
        find(&self.conditions, type_).is_some_and(|c| c.is_status(type_, status))
    }

    /// Set `c`, replacing the condition of its type (appended when there is none).
    pub fn set_condition(&mut self, c: Condition) {
        set_in(&mut self.conditions, c);
    }
}

/// The condition of `type_` in a status's `conditions`, when there is one.
pub fn find(conditions: &Option<Vec<Condition>>, type_: ConditionType) -> Option<&Condition> {
    conditions.iter().flatten().find(|c| c.is(type_))
}

/// KEDA's initial conditions, added where a status has none of the type: Ready, Active
/// and Fallback Unknown, Paused False (KEDA's `GetInitializedConditions`, for
/// ScaledObjects and ScaledJobs alike).
pub fn initialise(conditions: &mut Option<Vec<Condition>>) {
    for t in ConditionType::ALL {
        if find(conditions, t).is_none() {
            let unset = match t {
                ConditionType::Paused => ConditionStatus::False,
                _ => ConditionStatus::Unknown,
            };
            set_in(conditions, Condition::unset(t, unset));
        }
    }
}

/// Set `c` in a status's `conditions`, replacing the condition of its type (appended when
/// there is none).
pub fn set_in(conditions: &mut Option<Vec<Condition>>, c: Condition) {
    let conditions = conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|x| x.type_ == c.type_) {
        Some(x) => *x = c,
        None => conditions.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_strings_are_kedas() {
        let types: Vec<_> = ConditionType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(types, ["Ready", "Active", "Fallback", "Paused"]);
        let c = Condition::new(
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::ScaledObjectCheckFailed,
            "bad",
        );
        assert_eq!(
            serde_json::to_value(&c).expect("JSON"),
            serde_json::json!({"type": "Ready", "status": "False",
                               "reason": "ScaledObjectCheckFailed", "message": "bad"})
        );
        assert_eq!(
            serde_json::to_value(Condition::unset(
                ConditionType::Paused,
                ConditionStatus::Unknown
            ))
            .expect("JSON"),
            serde_json::json!({"type": "Paused", "status": "Unknown"})
        );
        assert!(c.has_reason(&[Reason::TriggerError, Reason::ScaledObjectCheckFailed]));
        assert!(!c.has_reason(&[Reason::TriggerError]));
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        assert_eq!(truncate_message("short".into(), 10), "short");
        assert_eq!(truncate_message("spec.x: ééééé".into(), 13), "spec.x: é…");
        assert_eq!(truncate_message("spec.x: ééééé".into(), 12), "spec.x: …");
        let huge = "spec.triggers[0].metadata.threshold: ".to_string() + &"9".repeat(100_000);
        let c = Condition::new(
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::ScaledObjectCheckFailed,
            huge,
        );
        let message = c.message.unwrap_or_default();
        assert!(message.len() <= MAX_MESSAGE_BYTES);
        assert!(message.starts_with("spec.triggers[0].metadata.threshold: 999"));
    }

    #[test]
    fn set_condition_replaces_by_type() {
        let mut s = ScaledObjectStatus::default();
        assert!(s.condition(ConditionType::Active).is_none());
        s.set_condition(Condition::unset(
            ConditionType::Active,
            ConditionStatus::Unknown,
        ));
        s.set_condition(Condition::new(
            ConditionType::Active,
            ConditionStatus::True,
            Reason::ScalerActive,
            "on",
        ));
        assert_eq!(s.conditions.as_ref().map(Vec::len), Some(1));
        assert!(s.condition_is(ConditionType::Active, ConditionStatus::True));
        assert!(!s.condition_is(ConditionType::Ready, ConditionStatus::True));
    }
}
