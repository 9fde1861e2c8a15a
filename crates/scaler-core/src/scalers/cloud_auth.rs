//! KEDA's cloud-provider authentication of an HTTP trigger without `authModes` (its
//! prometheus scaler): a Google service-account key, which eventscale supports, and AWS
//! SigV4, which it refuses loudly rather than query unsigned.

use super::params::{Param, Params, Source::*};
use super::ScalerError;
use crate::gcp::ServiceAccountKey;

/// The key's JSON, from the TriggerAuthentication.
const GOOGLE_APPLICATION_CREDENTIALS: Param = Param::new("GoogleApplicationCredentials")
    .from(&[Auth])
    .secret();
/// The variable of the scale target's container that holds the key's JSON.
const CREDENTIALS_FROM_ENV: Param = Param::new("credentialsFromEnv").from(&[Meta]);
/// Its value, resolved from the environment before the build.
const CREDENTIALS: Param = Param::new("credentials").from(&[Env]);
/// The variable that holds the path of the key file.
const CREDENTIALS_FROM_ENV_FILE: Param = Param::new("credentialsFromEnvFile").from(&[Meta]);
/// Its value, resolved from the environment before the build.
const CREDENTIALS_FILE: Param = Param::new("credentialsFile").from(&[Meta]);
/// Whose AWS identity signs the queries.
const IDENTITY_OWNER: Param = Param::new("identityOwner").from(&[Meta]);
/// An AWS role to assume.
const AWS_ROLE_ARN: Param = Param::new("awsRoleArn").from(&[Auth]);
/// An AWS access key.
const AWS_ACCESS_KEY_ID: Param = Param::new("awsAccessKeyID")
    .aliases(&["awsAccessKeyId"])
    .from(&[Auth, Meta]);

/// The largest key file read for `credentialsFromEnvFile` (a key is about 2 KiB).
const MAX_KEY_FILE_BYTES: u64 = 1 << 20;

/// The trigger parameter a Google key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcpSource {
    /// The authentication parameter `GoogleApplicationCredentials`: the key's JSON.
    AuthParam,
    /// `credentialsFromEnv`: a variable of the scale target's container holding the JSON.
    Env,
    /// `credentialsFromEnvFile`: a variable holding the path of a file with the JSON.
    EnvFile,
}

impl GcpSource {
    /// The parameter's name, which errors name.
    pub fn param(self) -> &'static str {
        match self {
            GcpSource::AuthParam => "GoogleApplicationCredentials",
            GcpSource::Env => "credentialsFromEnv",
            GcpSource::EnvFile => "credentialsFromEnvFile",
        }
    }
}

/// The variable a `<param>FromEnv*` parameter names could not be read.
fn unset(source: GcpSource, var: &str) -> ScalerError {
    ScalerError::invalid(
        source.param(),
        format!(
            "environment variable {var:?} (named by {}) is not set in the scale target's container",
            source.param()
        ),
    )
}

/// A key file on eventscale's own filesystem: a regular file (a FIFO would block the
/// build), of at most [`MAX_KEY_FILE_BYTES`]. Small and local (a mounted Secret), it is
/// read once when the trigger is built, as KEDA reads it.
fn read_key_file(path: &str) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path} is not a regular file"));
    }
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(format!("{path} is larger than 1 MiB: not a key file"));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// The trigger's Google key, found as KEDA's `gcp.GetGCPAuthorization` finds it: the
/// authentication parameter `GoogleApplicationCredentials`, else `credentialsFromEnv`, else
/// `credentialsFromEnvFile` (whose path is read on eventscale's filesystem, as KEDA reads it
/// on its operator's). The first given wins even when its variable is unset; KEDA then
/// queries unauthenticated, eventscale refuses the trigger, naming the parameter. (`podIdentity:
/// gcp` is refused with the TriggerAuthentication.) The environment was resolved by
/// [`super::with_env`]: `credentialsFromEnv` into `credentials`, `credentialsFromEnvFile` into
/// `credentialsFile`.
pub fn gcp_credentials(
    params: &Params<'_>,
) -> Result<Option<(GcpSource, ServiceAccountKey)>, ScalerError> {
    let (source, json) = if let Some(json) = params.text(&GOOGLE_APPLICATION_CREDENTIALS)? {
        (GcpSource::AuthParam, json.to_string())
    } else if let Some(var) = params.text(&CREDENTIALS_FROM_ENV)? {
        let json = params
            .text(&CREDENTIALS)?
            .ok_or_else(|| unset(GcpSource::Env, var))?;
        (GcpSource::Env, json.to_string())
    } else if let Some(var) = params.text(&CREDENTIALS_FROM_ENV_FILE)? {
        let path = params
            .text(&CREDENTIALS_FILE)?
            .ok_or_else(|| unset(GcpSource::EnvFile, var))?;
        let json = read_key_file(path).map_err(|e| {
            ScalerError::invalid(
                "credentialsFromEnvFile",
                format!("the service account key file (environment variable {var:?}): {e}"),
            )
        })?;
        (GcpSource::EnvFile, json)
    } else {
        return Ok(None);
    };
    let key = ServiceAccountKey::from_json(&json)
        .map_err(|e| ScalerError::invalid(source.param(), format!("{}: {e}", source.param())))?;
    Ok(Some((source, key)))
}

/// Refuse what would make KEDA sign the queries with AWS SigV4 (Amazon Managed Service for
/// Prometheus, `aws.NewSigV4RoundTripper`): `identityOwner: operator` (the operator's own
/// credentials), or an AWS role or access key. eventscale cannot sign them, and querying
/// unsigned would only fail later with 403. (`podIdentity: aws` is refused with the
/// TriggerAuthentication.)
pub fn refuse_aws_sigv4(params: &Params<'_>) -> Result<(), ScalerError> {
    let field = if params.text(&IDENTITY_OWNER)?.is_some_and(|o| o != "pod") {
        Some("identityOwner")
    } else if params.text(&AWS_ROLE_ARN)?.is_some() {
        Some("awsRoleArn")
    } else if params.text(&AWS_ACCESS_KEY_ID)?.is_some() {
        Some("awsAccessKeyID")
    } else {
        None
    };
    match field {
        Some(field) => Err(ScalerError::invalid(
            field,
            format!(
                "{field} asks for AWS SigV4 signing (Amazon Managed Service for Prometheus), \
                 which eventscale does not support"
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaled_object::ScaleTriggers;
    use crate::scalers::{with_env, AuthParams, TriggerContext};
    use std::collections::BTreeMap;

    use crate::test_pki as pki;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `f` on a trigger of `meta` (its environment resolved from `env`) and `auth`.
    fn with_ctx<T>(
        meta: &[(&str, &str)],
        env: &[(&str, &str)],
        auth: &[(&str, &str)],
        f: impl FnOnce(&TriggerContext<'_>) -> T,
    ) -> T {
        let raw = ScaleTriggers {
            type_: "prometheus".into(),
            metadata: map(meta).into(),
            ..Default::default()
        };
        let (trigger, _) = with_env(&raw, &map(env));
        let auth: AuthParams = map(auth);
        f(&TriggerContext {
            index: 0,
            trigger: &trigger,
            auth: &auth,
            namespace: "ns",
            name: "so",
            client: None,
            as_metric_source: false,
            pools: &crate::pools::Pools::default(),
        })
    }

    /// KEDA's `TestGetGCPAuthorization` cases (gcp_common_test.go), and the files.
    #[test]
    fn gcp_sources_in_keda_order() {
        let pki = pki::Pki::new("cloud-auth");
        let key = |email: &str| {
            let pem = pki.key(email, pki::KeyType::Rsa);
            serde_json::json!({"type": "service_account", "private_key": pem, "client_email": email})
                .to_string()
        };
        let (a, e, f) = (key("auth@p"), key("env@p"), key("file@p"));
        let file = pki.dir().join("key.json");
        std::fs::write(&file, &f).expect("key file");
        let path = file.display().to_string();
        let dir = pki.dir().display().to_string();
        let missing = pki.dir().join("nope.json").display().to_string();
        let found = |meta: &[(&str, &str)], env: &[(&str, &str)], auth: &[(&str, &str)]| {
            with_ctx(meta, env, auth, |ctx| {
                gcp_credentials(&ctx.params())
                    .map(|c| c.map(|(s, k)| (s, k.client_email().to_string())))
            })
        };
        let ok = |s: GcpSource, email: &str| Ok(Some((s, email.to_string())));
        let env_meta = [("credentialsFromEnv", "GCP_CREDS")];
        let file_meta = [("credentialsFromEnvFile", "GCP_CREDS_FILE")];
        let both_meta = [
            ("credentialsFromEnv", "GCP_CREDS"),
            ("credentialsFromEnvFile", "GCP_CREDS_FILE"),
        ];
        let env = [("GCP_CREDS", e.as_str()), ("GCP_CREDS_FILE", path.as_str())];
        assert_eq!(
            found(&[], &[], &[("GoogleApplicationCredentials", &a)]),
            ok(GcpSource::AuthParam, "auth@p")
        );
        assert_eq!(found(&env_meta, &env, &[]), ok(GcpSource::Env, "env@p"));
        assert_eq!(
            found(&file_meta, &env, &[]),
            ok(GcpSource::EnvFile, "file@p")
        );
        assert_eq!(
            found(&env_meta, &env, &[("GoogleApplicationCredentials", &a)]),
            ok(GcpSource::AuthParam, "auth@p")
        );
        assert_eq!(found(&both_meta, &env, &[]), ok(GcpSource::Env, "env@p"));
        assert_eq!(found(&[], &[], &[]), Ok(None));
        // An unresolved authentication parameter is empty: the next source is read.
        assert_eq!(
            found(&env_meta, &env, &[("GoogleApplicationCredentials", "")]),
            ok(GcpSource::Env, "env@p")
        );

        // (metadata, environment, authentication, parameter named, part of the message)
        type Pairs<'a> = Vec<(&'a str, &'a str)>;
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            Pairs<'a>,
            Pairs<'a>,
            &'a str,
            &'a str,
        );
        let bad: Vec<Case<'_>> = vec![
            (&env_meta, vec![], vec![], "credentialsFromEnv", "environment variable \"GCP_CREDS\" (named by credentialsFromEnv) is not set in the scale target's container"),
            // The first given wins even when unset (KEDA then goes unauthenticated).
            (&both_meta, vec![("GCP_CREDS_FILE", path.as_str())], vec![], "credentialsFromEnv", "is not set"),
            (&file_meta, vec![], vec![], "credentialsFromEnvFile", "environment variable \"GCP_CREDS_FILE\" (named by credentialsFromEnvFile) is not set"),
            (&file_meta, vec![("GCP_CREDS_FILE", missing.as_str())], vec![], "credentialsFromEnvFile", "cannot read"),
            (&file_meta, vec![("GCP_CREDS_FILE", dir.as_str())], vec![], "credentialsFromEnvFile", "is not a regular file"),
            (&env_meta, vec![("GCP_CREDS", "{\"type\":\"authorized_user\"}")], vec![], "credentialsFromEnv", "credentialsFromEnv: google: expected credential type \"service_account\", found \"authorized_user\""),
            (&[], vec![], vec![("GoogleApplicationCredentials", "not json")], "GoogleApplicationCredentials", "GoogleApplicationCredentials: not a JSON service account key"),
        ];
        for (meta, env, auth, param, want) in bad {
            let err = with_ctx(meta, &env, &auth, |ctx| {
                gcp_credentials(&ctx.params()).map(|_| ())
            })
            .expect_err(want);
            assert_eq!(err.param(), Some(param), "{err}");
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn aws_sigv4_is_refused_naming_the_field() {
        let refused = |meta: &[(&str, &str)], auth: &[(&str, &str)]| {
            with_ctx(meta, &[], auth, |ctx| {
                refuse_aws_sigv4(&ctx.params()).map_err(|e| e.param().map(str::to_string))
            })
        };
        let named = |f: &str| Err(Some(f.to_string()));
        assert_eq!(refused(&[], &[]), Ok(()));
        assert_eq!(refused(&[("identityOwner", "pod")], &[]), Ok(()));
        assert_eq!(refused(&[("awsRegion", "eu-west-1")], &[]), Ok(()));
        assert_eq!(
            refused(&[("identityOwner", "operator")], &[]),
            named("identityOwner")
        );
        assert_eq!(
            refused(&[], &[("awsRoleArn", "arn:aws:iam::1:role/r")]),
            named("awsRoleArn")
        );
        assert_eq!(
            refused(
                &[],
                &[("awsAccessKeyID", "AKIA"), ("awsSecretAccessKey", "s")]
            ),
            named("awsAccessKeyID")
        );
        assert_eq!(
            refused(&[], &[("awsAccessKeyId", "AKIA")]),
            named("awsAccessKeyID")
        );
        assert_eq!(
            refused(&[("awsAccessKeyID", "AKIA")], &[]),
            named("awsAccessKeyID")
        );
    }
}
