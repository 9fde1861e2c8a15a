//! A kind as one value: group, version and kind, compared as a struct and rendered one
//! way (KEDA's `GVKString`, `apps/v1.Deployment`, `/v1.Kind` for the core group) in every
//! message that names it.

use crate::scaled_object::{GroupVersionKindResource, ScaleTarget};

/// A kind's group, version and kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Gvk {
    /// API group (empty for the core group).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
}

impl Gvk {
    /// From an `apiVersion` (`apps/v1`, or `v1` for the core group) and a kind.
    pub fn from_api_version(api_version: &str, kind: &str) -> Self {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
        }
    }

    /// The kind `scaleTargetRef` names, with KEDA's defaults (`apps/v1`, `Deployment`).
    pub fn of_scale_target(r: &ScaleTarget) -> Self {
        Self::from_api_version(r.api_version_or_default(), r.kind_or_default())
    }

    /// `status.scaleTargetKind` as eventscale writes it: like [`Display`](std::fmt::Display)
    /// but without the leading `/` for the core group (`v1.ReplicationController`).
    pub fn scale_target_kind(&self) -> String {
        if self.group.is_empty() {
            format!("{}.{}", self.version, self.kind)
        } else {
            self.to_string()
        }
    }
}

impl From<&GroupVersionKindResource> for Gvk {
    fn from(g: &GroupVersionKindResource) -> Self {
        Self {
            group: g.group.clone(),
            version: g.version.clone(),
            kind: g.kind.clone(),
        }
    }
}

impl std::fmt::Display for Gvk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}.{}", self.group, self.version, self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_one_rendering() {
        let d = Gvk::from_api_version("apps/v1", "Deployment");
        assert_eq!(d.to_string(), "apps/v1.Deployment");
        assert_eq!(d.scale_target_kind(), "apps/v1.Deployment");
        let rc = Gvk::from_api_version("v1", "ReplicationController");
        assert_eq!(rc.group, "");
        assert_eq!(rc.to_string(), "/v1.ReplicationController");
        assert_eq!(rc.scale_target_kind(), "v1.ReplicationController");
        let discovered = GroupVersionKindResource {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            resource: "deployments".into(),
        };
        assert_eq!(Gvk::from(&discovered), d);
        let default: ScaleTarget =
            serde_json::from_value(serde_json::json!({"name": "web"})).expect("ref");
        assert_eq!(Gvk::of_scale_target(&default), d);
    }
}
