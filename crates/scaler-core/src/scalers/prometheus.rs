//! The `prometheus` trigger: the value of one PromQL query against a Prometheus server.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use serde_json::Value;

use super::params::Source::{Auth, Env, Meta};
use super::params::{Defaulted, Param, Params, Required};
use super::{MetricSpec, Sample, Scaler, ScalerError, TriggerContext};
use crate::coalesce::Coalescer;
use crate::gcp::{self, ServiceAccountKey};

use crate::quantity::MilliQuantity;

/// KEDA's default query timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(3000);

/// How the scaler authenticates to Prometheus (`authModes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrometheusAuth {
    /// `basic`: user name and password.
    pub basic: Option<(String, String)>,
    /// `bearer`: token (`bearerToken`, or its alias `token`).
    pub bearer: Option<String>,
    /// `tls`: client certificate and key (PEM).
    pub client_cert: Option<(String, String)>,
    /// CA (PEM) to trust, with any of the modes.
    pub ca: Option<String>,
    /// `custom`: header and value.
    pub custom: Option<(String, String)>,
    /// Without a mode: a Google service-account key (`GoogleApplicationCredentials`,
    /// `credentialsFromEnv`, `credentialsFromEnvFile`), whose access tokens are sent as
    /// bearer tokens.
    pub gcp: Option<ServiceAccountKey>,
}

/// Parsed `prometheus` trigger metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusMetadata {
    /// Base URL of the server.
    pub server_address: reqwest::Url,
    /// PromQL.
    pub query: String,
    /// Target per replica.
    pub threshold: f64,
    /// Active strictly above this.
    pub activation_threshold: f64,
    /// Tenant namespace (Thanos/Cortex), sent as `namespace=`.
    pub namespace: Option<String>,
    /// Extra query parameters.
    pub query_parameters: Vec<(String, String)>,
    /// Extra headers.
    pub custom_headers: Vec<(String, String)>,
    /// Empty results and NaN count as 0 (true) or fail (false).
    pub ignore_null_values: bool,
    /// Skip TLS verification.
    pub unsafe_ssl: bool,
    /// Per-query timeout.
    pub timeout: Duration,
    /// Authentication.
    pub auth: PrometheusAuth,
}

/// `serverAddress`: the server's base URL.
const SERVER_ADDRESS: Param<Required> = Param::new("serverAddress").required();
/// `query`: the PromQL.
const QUERY: Param<Required> = Param::new("query").required();
/// `queryParameters`: extra query parameters, `k=v,k=v`.
const QUERY_PARAMETERS: Param = Param::new("queryParameters");
/// `threshold`: the target per replica.
const THRESHOLD: Param<Required> = Param::new("threshold").required();
/// `activationThreshold`: active strictly above this.
const ACTIVATION_THRESHOLD: Param<Defaulted> = Param::new("activationThreshold").default("0");
/// `namespace`: the tenant (Thanos, Cortex).
const NAMESPACE: Param = Param::new("namespace");
/// `customHeaders`: extra headers, `k=v,k=v`.
const CUSTOM_HEADERS: Param = Param::new("customHeaders");
/// `ignoreNullValues`: an empty answer or NaN reads as 0 rather than failing.
const IGNORE_NULL_VALUES: Param<Defaulted> = Param::new("ignoreNullValues").default("true");
/// `unsafeSsl`: skip verifying the server's certificate.
const UNSAFE_SSL: Param<Defaulted> = Param::new("unsafeSsl").default("false");
/// `timeout`: per query, a Go duration or milliseconds.
const TIMEOUT: Param = Param::new("timeout");

/// `authModes` (or `authMode`): KEDA's authentication modes, at most one of bearer, basic
/// and oauth (authentication_types.go:77); the trigger's before the TriggerAuthentication's.
const AUTH_MODES: Param = Param::new("authModes")
    .aliases(&["authMode"])
    .from(&[Meta, Env, Auth])
    .one_of(&["apiKey", "basic", "tls", "bearer", "custom", "oauth"])
    .exclusive(&["bearer", "basic", "oauth"]);
/// `bearerToken` (or `token`), for `bearer`.
const BEARER_TOKEN: Param = Param::new("bearerToken").aliases(&["token"]).from(&[Auth]);
/// `username`, for `basic`.
const USERNAME: Param = Param::new("username").from(&[Auth]);
/// `password`, for `basic`.
const PASSWORD: Param = Param::new("password").from(&[Auth]);
/// `cert`, the client certificate (PEM), for `tls`.
const CERT: Param = Param::new("cert").from(&[Auth]);
/// `key`, its key (PEM), for `tls`.
const KEY: Param = Param::new("key").from(&[Auth]);
/// `ca` (PEM) to trust, with any mode.
const CA: Param = Param::new("ca").from(&[Auth]);
/// `customAuthHeader`, for `custom`.
const CUSTOM_AUTH_HEADER: Param = Param::new("customAuthHeader").from(&[Auth]);
/// `customAuthValue`, for `custom`.
const CUSTOM_AUTH_VALUE: Param = Param::new("customAuthValue").from(&[Auth]);

/// `timeout`: absent, zero (or wrapped negative) is the default, as KEDA then falls back
/// to its global HTTP timeout (prometheus_scaler.go:90-93).
fn timeout(params: &Params<'_>) -> Result<Duration, ScalerError> {
    Ok(params
        .duration(&TIMEOUT)?
        .and_then(|ns| u64::try_from(ns).ok())
        .filter(|ns| *ns > 0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_nanos))
}

fn auth(params: &Params<'_>) -> Result<PrometheusAuth, ScalerError> {
    let mut a = PrometheusAuth::default();
    let Some(modes) = params.list(&AUTH_MODES)? else {
        // Without a mode KEDA tries the cloud providers' transports
        // (prometheus_scaler.go:110-140): AWS SigV4 (refused here), or a Google key.
        super::cloud_auth::refuse_aws_sigv4(params)?;
        a.gcp = super::cloud_auth::gcp_credentials(params)?.map(|(_, key)| key);
        return Ok(a);
    };
    if let Some(m) = modes.iter().find(|m| matches!(**m, "apiKey" | "oauth")) {
        return Err(ScalerError::invalid(
            "authModes",
            format!("parameter \"authModes\" value {m:?} is not supported by eventscale yet"),
        ));
    }
    let enabled = |m: &str| modes.contains(&m);
    let get = |p: &Param| -> Result<Option<String>, ScalerError> {
        Ok(params.text(p)?.map(str::to_string))
    };
    let shown = |v: &Option<String>| if v.is_some() { "<present>" } else { "<empty>" };
    // Checked in KEDA's order, first failure wins (authentication_types.go:115-139).
    if enabled("bearer") {
        a.bearer = Some(get(&BEARER_TOKEN)?.ok_or_else(|| {
            ScalerError::invalid(
                "bearerToken",
                "bearer token=<empty> is required when bearer auth is enabled",
            )
        })?);
    }
    if enabled("basic") {
        let user = get(&USERNAME)?.ok_or_else(|| {
            ScalerError::invalid(
                "username",
                "username=<empty> is required when basic auth is enabled",
            )
        })?;
        a.basic = Some((user, get(&PASSWORD)?.unwrap_or_default()));
    }
    if enabled("tls") {
        let (cert, key) = (get(&CERT)?, get(&KEY)?);
        let message = format!(
            "cert={} and key={} are required when tls auth is enabled",
            shown(&cert),
            shown(&key)
        );
        let param = if cert.is_none() { "cert" } else { "key" };
        a.client_cert = Some(
            cert.zip(key)
                .ok_or_else(|| ScalerError::invalid(param, message))?,
        );
    }
    if enabled("custom") {
        let (header, value) = (get(&CUSTOM_AUTH_HEADER)?, get(&CUSTOM_AUTH_VALUE)?);
        let message = format!(
            "customAuthHeader={} and customAuthValue={} are required when custom auth is enabled",
            shown(&header),
            shown(&value)
        );
        let param = if header.is_none() {
            "customAuthHeader"
        } else {
            "customAuthValue"
        };
        a.custom = Some(
            header
                .zip(value)
                .ok_or_else(|| ScalerError::invalid(param, message))?,
        );
    }
    // A CA is trusted with any mode, but not without one (prometheus_scaler.go:97-98).
    a.ca = get(&CA)?;
    Ok(a)
}

impl PrometheusMetadata {
    /// The TLS settings the HTTP client is made with.
    fn tls(&self) -> crate::tls::Settings {
        crate::tls::Settings {
            ca: self.auth.ca.clone(),
            cert_key: self.auth.client_cert.clone(),
            unsafe_ssl: self.unsafe_ssl,
        }
    }

    /// Parse the trigger's metadata (and its resolved authentication parameters).
    pub fn parse(ctx: &TriggerContext<'_>) -> Result<Self, ScalerError> {
        let params = ctx.params();
        let address = params.text(&SERVER_ADDRESS)?;
        let server_address = reqwest::Url::parse(address).map_err(|e| {
            ScalerError::invalid(
                "serverAddress",
                format!("error parsing serverAddress {address:?}: {e}"),
            )
        })?;
        if !matches!(server_address.scheme(), "http" | "https") {
            return Err(ScalerError::invalid(
                "serverAddress",
                format!("serverAddress {address:?} must be an http or https URL"),
            ));
        }
        Ok(Self {
            server_address,
            query: params.text(&QUERY)?.to_string(),
            query_parameters: params.pairs(&QUERY_PARAMETERS)?.unwrap_or_default(),
            threshold: params.float(&THRESHOLD)?,
            activation_threshold: params.float(&ACTIVATION_THRESHOLD)?,
            namespace: params.text(&NAMESPACE)?.map(str::to_string),
            custom_headers: params.pairs(&CUSTOM_HEADERS)?.unwrap_or_default(),
            ignore_null_values: params.flag(&IGNORE_NULL_VALUES)?,
            unsafe_ssl: params.flag(&UNSAFE_SSL)?,
            timeout: timeout(&params)?,
            auth: auth(&params)?,
        })
    }
}

/// What every prometheus trigger shares (one per [`crate::pools::Pools`]).
pub struct PrometheusClients {
    /// Identical prometheus queries for the same second share one HTTP request: the polls
    /// of many ScaledObjects at one aligned instant start within milliseconds of each
    /// other but not all while the first request is in flight, so an answer keeps serving
    /// its (query, second) until that second is surely over.
    inflight: Arc<Coalescer<QueryKey, Result<f64, ScalerError>>>,
}

impl Default for PrometheusClients {
    fn default() -> Self {
        Self {
            inflight: Arc::new(Coalescer::with_linger(std::time::Duration::from_secs(1))),
        }
    }
}

impl std::fmt::Debug for PrometheusClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusClients").finish_non_exhaustive()
    }
}

/// The largest answer read from Prometheus.
const MAX_ANSWER_BYTES: usize = 8 << 20;

/// The prometheus scaler.
#[derive(Debug, Clone)]
pub struct PrometheusScaler {
    metadata: Arc<PrometheusMetadata>,
    spec: MetricSpec,
    client: reqwest::Client,
    /// Access tokens for the Google key, kept by this scaler (and its clones).
    gcp: Option<Arc<gcp::TokenSource>>,
    shared: Arc<PrometheusClients>,
}

/// The `value` lists of an answer's `data.result`, decoded as KEDA's Go struct is
/// (prometheus_scaler.go:63-73, 258-262): a null or absent field is empty, a field of the
/// wrong type fails. A `scalar` result (`[ts, "v"]`, which KEDA fails to decode) is one
/// value list.
fn result_values(body: &Value) -> Result<Vec<&[Value]>, String> {
    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
    fn field<'a>(v: &'a Value, name: &str, path: &str) -> Result<Option<&'a Value>, String> {
        match v {
            Value::Null => Ok(None),
            Value::Object(o) => Ok(o.get(name).filter(|f| !f.is_null())),
            other => Err(format!("{path} is {}, not an object", kind(other))),
        }
    }
    fn list<'a>(v: Option<&'a Value>, path: &str) -> Result<&'a [Value], String> {
        match v {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(other) => Err(format!("{path} is {}, not an array", kind(other))),
        }
    }
    let Some(data) = field(body, "data", "the body")? else {
        return Ok(Vec::new());
    };
    let result = field(data, "result", "data")?;
    if field(data, "resultType", "data")?.and_then(Value::as_str) == Some("scalar") {
        return Ok(vec![list(result, "data.result")?]);
    }
    list(result, "data.result")?
        .iter()
        .map(|item| list(field(item, "value", "a result")?, "a result's value"))
        .collect()
}

/// Go's `%f` of a non-finite float.
fn go_non_finite(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "+Inf"
    } else {
        "-Inf"
    }
}

impl PrometheusScaler {
    /// Parse and validate the trigger.
    pub fn new(ctx: TriggerContext<'_>) -> Result<Self, ScalerError> {
        let metadata = PrometheusMetadata::parse(&ctx)?;
        let spec = MetricSpec {
            name: ctx.metric_name("prometheus"),
            target_type: ctx.target_type()?,
            target: MilliQuantity::from_value(metadata.threshold),
        };
        let client = ctx.pools.http.client(&metadata.tls())?;
        let gcp = metadata
            .auth
            .gcp
            .clone()
            .map(|key| gcp::TokenSource::new(key, gcp::SCOPE_MONITORING_READ, metadata.timeout))
            .transpose()
            .map_err(ScalerError::Query)?
            .map(Arc::new);
        Ok(Self {
            metadata: Arc::new(metadata),
            spec,
            client,
            gcp,
            shared: ctx.pools.prometheus.clone(),
        })
    }

    /// The parsed metadata.
    pub fn metadata(&self) -> &PrometheusMetadata {
        &self.metadata
    }

    /// The query URL at `time` (RFC 3339).
    pub fn query_url(&self, time: &str) -> reqwest::Url {
        let m = &self.metadata;
        let mut url = m.server_address.clone();
        {
            let mut path = url.path().trim_end_matches('/').to_string();
            path.push_str("/api/v1/query");
            url.set_path(&path);
        }
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("query", &m.query).append_pair("time", time);
            if let Some(ns) = &m.namespace {
                q.append_pair("namespace", ns);
            }
            for (k, v) in &m.query_parameters {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// Turn the API's answer into a value, as KEDA's `ExecutePromQuery` does
    /// (prometheus_scaler.go:246-307): an empty result or value list is 0 (an error with
    /// `ignoreNullValues: false`), so is NaN or ±Inf; several series are an error.
    pub fn value_of(&self, status: u16, body: &str) -> Result<f64, ScalerError> {
        let m = &self.metadata;
        if !(200..300).contains(&status) {
            return Err(ScalerError::Query(format!(
                "prometheus query api returned error. status: {status} response: {}",
                body.chars().take(512).collect::<String>()
            )));
        }
        let unparsable = |why: String| {
            ScalerError::Query(format!(
                "prometheus query api returned an unparsable body: {why}"
            ))
        };
        let parsed: Value = serde_json::from_str(body).map_err(|e| unparsable(e.to_string()))?;
        let results = result_values(&parsed).map_err(unparsable)?;
        let empty = |what: &str| {
            if m.ignore_null_values {
                Ok(0.0)
            } else {
                Err(ScalerError::Query(format!(
                    "prometheus metrics 'prometheus' target may be lost, the {what} is empty"
                )))
            }
        };
        let values = match results.as_slice() {
            [] => return empty("result"),
            [one] => *one,
            _ => {
                return Err(ScalerError::Query(format!(
                    "prometheus query {} returned multiple elements",
                    m.query
                )))
            }
        };
        let raw = match values {
            [] => return empty("value list"),
            [_] => {
                return Err(ScalerError::Query(format!(
                    "prometheus query {} didn't return enough values",
                    m.query
                )))
            }
            [_, raw, ..] => raw,
        };
        // Prometheus sends values as strings; KEDA has no answer for anything else.
        let Value::String(text) = raw else {
            return Err(ScalerError::Query(format!(
                "prometheus query {} returned a value that is not a string: {raw}",
                m.query
            )));
        };
        let value: f64 = text.parse().map_err(|_| {
            ScalerError::Query(format!(
                "strconv.ParseFloat: parsing {text:?}: invalid syntax"
            ))
        })?;
        // Go's ParseFloat fails on a finite number too large for f64; Rust gives ±inf.
        let spelled_inf = text
            .trim_start_matches(['+', '-'])
            .get(..3)
            .is_some_and(|p| p.eq_ignore_ascii_case("inf"));
        if value.is_infinite() && !spelled_inf {
            return Err(ScalerError::Query(format!(
                "strconv.ParseFloat: parsing {text:?}: value out of range"
            )));
        }
        if value.is_finite() {
            Ok(value)
        } else if m.ignore_null_values {
            Ok(0.0)
        } else {
            Err(ScalerError::Query(format!(
                "prometheus query returns {}",
                go_non_finite(value)
            )))
        }
    }

    /// The request at `now`: the custom headers, then one authentication header (bearer,
    /// else basic, else custom) that replaces a custom header of the same name, as KEDA's
    /// `Header.Set` does (prometheus_scaler.go:225-238).
    fn request(&self, now: &str) -> Result<reqwest::Request, ScalerError> {
        let m = &self.metadata;
        let a = &m.auth;
        let auth_header = if a.bearer.is_some() || a.basic.is_some() {
            Some("authorization")
        } else {
            a.custom.as_ref().map(|(h, _)| h.as_str())
        };
        let mut req = self.client.get(self.query_url(now)).timeout(m.timeout);
        for (k, v) in &m.custom_headers {
            if !auth_header.is_some_and(|h| h.eq_ignore_ascii_case(k)) {
                req = req.header(k, v);
            }
        }
        req = if let Some(token) = &a.bearer {
            req.bearer_auth(token)
        } else if let Some((user, pass)) = &a.basic {
            req.basic_auth(user, Some(pass))
        } else if let Some((h, v)) = &a.custom {
            req.header(h, v)
        } else {
            req
        };
        req.build().map_err(|e| {
            ScalerError::Query(format!(
                "building the request to {}: {}",
                m.server_address,
                super::error_chain(&e)
            ))
        })
    }
}

#[async_trait]
impl Scaler for PrometheusScaler {
    fn scaler_type(&self) -> &'static str {
        "prometheus"
    }

    fn metric_spec(&self) -> &MetricSpec {
        &self.spec
    }

    fn activation_threshold(&self) -> Option<f64> {
        Some(self.metadata.activation_threshold)
    }

    async fn sample(&self) -> Result<Sample, ScalerError> {
        let value = self.query_coalesced().await?;
        Ok(Sample {
            value,
            active: value > self.metadata.activation_threshold,
        })
    }
}

/// What makes two queries the same question: server, query, parameters, headers,
/// credentials, TLS settings and the evaluation time (whole seconds, as sent).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct QueryKey {
    url: String,
    time: String,
    headers: Vec<(String, String)>,
    auth: String,
    tls: crate::tls::Settings,
    ignore_null_values: bool,
}

impl PrometheusScaler {
    fn query_key(&self, time: &str) -> QueryKey {
        let m = &self.metadata;
        QueryKey {
            url: self.query_url("").to_string(),
            time: time.to_string(),
            headers: m.custom_headers.clone(),
            auth: format!(
                "{:?}",
                (
                    &m.auth.basic,
                    &m.auth.bearer,
                    &m.auth.custom,
                    m.auth.gcp.as_ref().map(ServiceAccountKey::fingerprint)
                )
            ),
            tls: m.tls(),
            ignore_null_values: m.ignore_null_values,
        }
    }

    /// The value, from a request shared with identical queries in flight.
    pub async fn query_coalesced(&self) -> Result<f64, ScalerError> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let this = self.clone();
        let key = self.query_key(&now);
        self.shared
            .inflight
            .run(key, async move { this.query(&now).await })
            .await
            .0
    }

    /// One HTTP request to Prometheus, evaluated at `now` (RFC 3339, whole seconds).
    async fn query(&self, now: &str) -> Result<f64, ScalerError> {
        let m = &self.metadata;
        let mut req = self.request(now)?;
        if let Some(gcp) = &self.gcp {
            // As Go's oauth2.Transport, the token replaces any Authorization header.
            let token = gcp.authorization().await.map_err(|e| {
                ScalerError::Query(format!(
                    "getting a Google access token for {}: {e}",
                    gcp.key().client_email()
                ))
            })?;
            req.headers_mut()
                .insert(reqwest::header::AUTHORIZATION, token);
        }
        let resp = self.client.execute(req).await.map_err(|e| {
            // A serverAddress may carry userinfo: never in an error.
            ScalerError::Query(super::anonymize(&format!(
                "querying prometheus at {}: {}",
                m.server_address,
                super::error_chain(&e)
            )))
        })?;
        let status = resp.status().as_u16();
        let reading = |e: String| {
            ScalerError::Query(format!(
                "reading prometheus' answer from {}: {e}",
                m.server_address
            ))
        };
        // One value is a few hundred bytes; a query matching a whole TSDB is not read
        // into memory whole.
        let body = super::read_capped(resp, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| reading(format!("{e}; the query must return one element")))?;
        self.value_of(status, &String::from_utf8_lossy(&body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaled_object::ScaleTriggers;
    use crate::scalers::AuthParams;

    fn trigger(meta: &[(&str, &str)]) -> ScaleTriggers {
        ScaleTriggers {
            type_: "prometheus".into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    /// `build` on trigger `index` of `meta` with the authentication parameters `auth`.
    fn build<T>(
        index: usize,
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
        build: impl FnOnce(TriggerContext<'_>) -> T,
    ) -> T {
        let t = trigger(meta);
        let auth: AuthParams = auth
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        build(TriggerContext {
            index,
            trigger: &t,
            auth: &auth,
            namespace: "ns",
            name: "test",
            client: None,
            as_metric_source: false,
            pools: &crate::pools::Pools::default(),
        })
    }

    fn parse(
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
    ) -> Result<PrometheusMetadata, ScalerError> {
        build(0, meta, auth, |ctx| PrometheusMetadata::parse(&ctx))
    }

    const BASE: [(&str, &str); 3] = [
        ("serverAddress", "http://localhost:9090"),
        ("query", "sum(up)"),
        ("threshold", "100"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = BASE.to_vec();
        v.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        v.extend_from_slice(extra);
        v
    }

    type Meta = Vec<(&'static str, &'static str)>;
    type Pairs = &'static [(&'static str, &'static str)];

    /// KEDA's parse tables (prometheus_scaler_test.go:35-124), and a few more.
    #[test]
    fn metadata_parse_table() {
        let ok: &[(Meta, Pairs)] = &[
            (BASE.to_vec(), &[]),
            (with(&[("activationThreshold", "10.5")]), &[]),
            (with(&[("namespace", "tenant-a")]), &[]),
            (
                with(&[("queryParameters", "key-1=value-1,key-2=value-2")]),
                &[],
            ),
            (
                with(&[("customHeaders", "X-Client-Id=cid,X-Tenant-Id=tid")]),
                &[],
            ),
            (with(&[("customHeaders", "key1=value1,key2=value2")]), &[]),
            // Go accepts an empty key; an empty header name fails at query time.
            (with(&[("queryParameters", "=v,k=")]), &[]),
            (with(&[("ignoreNullValues", "false")]), &[]),
            (with(&[("unsafeSsl", "true")]), &[]),
            (with(&[("timeout", "500")]), &[]),
            (with(&[("timeout", "1000")]), &[]),
            (with(&[("timeout", "2s")]), &[]),
            (with(&[("timeout", "0")]), &[]),
            (with(&[("timeout", "1h")]), &[]),
            (with(&[("timeout", "1m30s")]), &[]),
            (with(&[("timeout", "250us")]), &[]),
            (with(&[("timeout", "1.5s")]), &[]),
            (with(&[("threshold", "0.5")]), &[]),
            (
                BASE.to_vec(),
                &[("authModes", "basic"), ("username", "u"), ("password", "p")],
            ),
            (BASE.to_vec(), &[("authModes", "basic"), ("username", "u")]),
            (
                BASE.to_vec(),
                &[("authModes", "bearer"), ("bearerToken", "t")],
            ),
            (BASE.to_vec(), &[("authModes", "bearer"), ("token", "t")]),
            (BASE.to_vec(), &[("authMode", "bearer"), ("token", "t")]),
            (
                with(&[("authModes", "basic")]),
                &[("username", "u"), ("password", "p")],
            ),
            (
                BASE.to_vec(),
                &[
                    ("authModes", "custom"),
                    ("customAuthHeader", "X-Key"),
                    ("customAuthValue", "v"),
                ],
            ),
            (
                BASE.to_vec(),
                &[
                    ("authModes", "custom"),
                    ("customAuthHeader", "header\n"),
                    ("customAuthValue", "value\n"),
                ],
            ),
            (
                BASE.to_vec(),
                &[
                    ("authModes", "tls"),
                    ("ca", "caaa"),
                    ("cert", "ceert"),
                    ("key", "keey"),
                ],
            ),
            (
                BASE.to_vec(),
                &[("authModes", "tls"), ("cert", "ceert"), ("key", "keey")],
            ),
            (
                with(&[("authModes", "tls, basic")]),
                &[
                    ("ca", "caaa"),
                    ("cert", "ceert"),
                    ("key", "keey"),
                    ("username", "user"),
                    ("password", "pass"),
                ],
            ),
        ];
        for (meta, auth) in ok {
            assert!(
                parse(meta, auth).is_ok(),
                "{meta:?} {auth:?}: {:?}",
                parse(meta, auth)
            );
        }
        let bad: &[(Meta, Pairs, &str)] = &[
            (
                vec![("query", "q"), ("threshold", "1")],
                &[],
                "missing required parameter \"serverAddress\" in [triggerMetadata resolvedEnv]",
            ),
            (
                with(&[("serverAddress", "")]),
                &[],
                "missing required parameter \"serverAddress\" in [triggerMetadata resolvedEnv]",
            ),
            (
                vec![("serverAddress", "http://x"), ("threshold", "1")],
                &[],
                "missing required parameter \"query\" in [triggerMetadata resolvedEnv]",
            ),
            (
                vec![("serverAddress", "http://x"), ("query", "q")],
                &[],
                "missing required parameter \"threshold\" in [triggerMetadata resolvedEnv]",
            ),
            (
                with(&[("threshold", "one")]),
                &[],
                "unable to set param \"threshold\" value \"one\": unable to unmarshal to field type float64: invalid character 'o' looking for beginning of value",
            ),
            (
                with(&[("activationThreshold", "x")]),
                &[],
                "unable to set param \"activationThreshold\" value \"x\": unable to unmarshal to field type float64: invalid character 'x' looking for beginning of value",
            ),
            (
                with(&[("serverAddress", "not a url")]),
                &[],
                "error parsing serverAddress",
            ),
            (
                with(&[("serverAddress", "ftp://host")]),
                &[],
                "must be an http or https URL",
            ),
            (
                with(&[("ignoreNullValues", "maybe")]),
                &[],
                "unable to set param \"ignoreNullValues\" value \"maybe\": unable to parse boolean value",
            ),
            (
                with(&[("unsafeSsl", "yes")]),
                &[],
                "unable to set param \"unsafeSsl\" value \"yes\": unable to parse boolean value",
            ),
            (
                with(&[("queryParameters", "novalue")]),
                &[],
                "unable to set param \"queryParameters\" value \"novalue\": expected format key=value, got \"novalue\"",
            ),
            (
                with(&[("customHeaders", "key1=value1,key2")]),
                &[],
                "unable to set param \"customHeaders\" value \"key1=value1,key2\": expected format key=value, got \"key2\"",
            ),
            (
                with(&[("queryParameters", "key1=value1,key2")]),
                &[],
                "expected format key=value, got \"key2\"",
            ),
            (
                with(&[("customHeaders", "k=a=b")]),
                &[],
                "expected format key=value, got \"k=a=b\"",
            ),
            (
                with(&[("customHeaders", "k=v,")]),
                &[],
                "expected format key=value, got \"\"",
            ),
            (
                with(&[("timeout", "-1")]),
                &[],
                "unable to set param \"timeout\" value \"-1\": duration cannot be negative: -1 milliseconds",
            ),
            (
                with(&[("timeout", "-1s")]),
                &[],
                "duration cannot be negative: \"-1s\"",
            ),
            (
                with(&[("timeout", "a")]),
                &[],
                "unable to set param \"timeout\" value \"a\": unable to parse duration value \"a\": must be either a duration string (e.g. '30s', '5m') or a number of milliseconds",
            ),
            (
                with(&[("timeout", "soon")]),
                &[],
                "unable to parse duration value",
            ),
            (
                with(&[("timeout", "1d")]),
                &[],
                "unable to parse duration value",
            ),
            (
                with(&[("timeout", "1.5")]),
                &[],
                "unable to parse duration value",
            ),
            (
                BASE.to_vec(),
                &[("authModes", "basic")],
                "username=<empty> is required when basic auth is enabled",
            ),
            (
                BASE.to_vec(),
                &[("authModes", "bearer")],
                "bearer token=<empty> is required when bearer auth is enabled",
            ),
            (
                BASE.to_vec(),
                &[("authModes", "tls"), ("ca", "caaa"), ("cert", "ceert")],
                "cert=<present> and key=<empty> are required when tls auth is enabled",
            ),
            (
                BASE.to_vec(),
                &[("authModes", "tls"), ("ca", "caaa"), ("key", "keey")],
                "cert=<empty> and key=<present> are required when tls auth is enabled",
            ),
            (
                with(&[("authModes", "tls,basic")]),
                &[("username", "user"), ("password", "pass")],
                "cert=<empty> and key=<empty> are required when tls auth is enabled",
            ),
            (
                BASE.to_vec(),
                &[("authModes", "custom"), ("customAuthHeader", "")],
                "customAuthHeader=<empty> and customAuthValue=<empty> are required when custom auth is enabled",
            ),
            (
                BASE.to_vec(),
                &[("authModes", "custom"), ("customAuthValue", "v")],
                "customAuthHeader=<empty> and customAuthValue=<present> are required when custom auth is enabled",
            ),
            (
                BASE.to_vec(),
                &[("authModes", "custom"), ("customAuthHeader", "h")],
                "customAuthHeader=<present> and customAuthValue=<empty> are required when custom auth is enabled",
            ),
            (
                BASE.to_vec(),
                &[
                    ("authModes", "basic,bearer"),
                    ("username", "u"),
                    ("bearerToken", "t"),
                ],
                "parameter \"authModes,authMode\" value \"basic,bearer\" must contain only one of [bearer basic oauth]",
            ),
            (
                BASE.to_vec(),
                &[("authModes", "nope")],
                "parameter \"authModes,authMode\" value \"nope\" must be one of [apiKey basic tls bearer custom oauth]",
            ),
            (
                BASE.to_vec(),
                &[("authModes", "basic,"), ("username", "u")],
                "must be one of [apiKey basic tls bearer custom oauth]",
            ),
            (
                BASE.to_vec(),
                &[("authModes", "apiKey"), ("apiKey", "k")],
                "parameter \"authModes\" value \"apiKey\" is not supported by eventscale yet",
            ),
            (
                BASE.to_vec(),
                &[("authModes", "oauth")],
                "parameter \"authModes\" value \"oauth\" is not supported by eventscale yet",
            ),
            // The trigger's `authModes` comes before the authentication's.
            (
                with(&[("authModes", "bearer")]),
                &[("authModes", "basic"), ("username", "u")],
                "bearer token=<empty> is required when bearer auth is enabled",
            ),
        ];
        for (meta, auth, want) in bad {
            let err = parse(meta, auth).expect_err(want).to_string();
            assert!(err.contains(want), "{meta:?} {auth:?}: {err}");
        }
    }

    /// Without `authModes`, KEDA's cloud transports: a Google key from any of its three
    /// parameters (prometheus_scaler.go:110-140, gcp_common.go), AWS SigV4 refused. With a
    /// mode KEDA never looks at them.
    #[test]
    fn cloud_authentication_parse_table() {
        let pki = crate::test_pki::Pki::new("prometheus-gcp");
        let pem = pki.key("sa", crate::test_pki::KeyType::Rsa);
        let key = serde_json::json!({"type": "service_account", "client_email": "sa@p", "private_key": pem}).to_string();
        let gcp = |meta: &[(&'static str, &'static str)], auth: &[(&str, &str)]| {
            build(0, &with(meta), auth, |ctx| PrometheusMetadata::parse(&ctx))
                .map(|m| m.auth.gcp.map(|k| k.client_email().to_string()))
        };
        let some = Ok(Some("sa@p".to_string()));
        assert_eq!(gcp(&[], &[("GoogleApplicationCredentials", &key)]), some);
        assert_eq!(gcp(&[], &[]), Ok(None));
        // A mode set: the key is not KEDA's concern, nor eventscale's.
        assert_eq!(
            gcp(
                &[("authModes", "basic")],
                &[("GoogleApplicationCredentials", &key), ("username", "u")]
            ),
            Ok(None)
        );
        assert_eq!(
            gcp(
                &[],
                &[
                    ("authModes", "bearer"),
                    ("bearerToken", "t"),
                    ("GoogleApplicationCredentials", "{}")
                ]
            ),
            Ok(None)
        );
        assert_eq!(
            gcp(
                &[],
                &[
                    ("authModes", "basic"),
                    ("username", "u"),
                    ("awsRoleArn", "arn")
                ]
            ),
            Ok(None)
        );
        // (metadata, authentication, parameter named, part of the message)
        type Case<'a> = (Meta, &'a [(&'a str, &'a str)], &'a str, &'a str);
        let bad: &[Case<'_>] = &[
            (
                vec![],
                &[("GoogleApplicationCredentials", "{}")],
                "GoogleApplicationCredentials",
                "expected credential type \"service_account\", found \"\"",
            ),
            (
                vec![("credentialsFromEnv", "GCP")],
                &[],
                "credentialsFromEnv",
                "environment variable \"GCP\" (named by credentialsFromEnv) is not set",
            ),
            (
                vec![("credentialsFromEnvFile", "GCP_FILE")],
                &[],
                "credentialsFromEnvFile",
                "environment variable \"GCP_FILE\" (named by credentialsFromEnvFile) is not set",
            ),
            (
                vec![("identityOwner", "operator")],
                &[],
                "identityOwner",
                "AWS SigV4",
            ),
            (
                vec![],
                &[("awsAccessKeyID", "AKIA"), ("awsSecretAccessKey", "s")],
                "awsAccessKeyID",
                "AWS SigV4",
            ),
            // AWS wins over Google in KEDA: refused first.
            (
                vec![],
                &[
                    ("awsRoleArn", "arn"),
                    ("GoogleApplicationCredentials", &key),
                ],
                "awsRoleArn",
                "AWS SigV4",
            ),
        ];
        for (meta, auth, param, want) in bad {
            let err = gcp(meta, auth).expect_err(want);
            assert_eq!(err.param(), Some(*param), "{err}");
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn parsed_values() {
        let m = parse(&with(&[("timeout", "1500")]), &[]).expect("ok");
        assert_eq!(m.timeout, Duration::from_millis(1500));
        assert!(m.ignore_null_values, "default true");
        assert_eq!(parse(&BASE, &[]).expect("ok").timeout, DEFAULT_TIMEOUT);
        let timeouts = [
            ("0", DEFAULT_TIMEOUT),
            ("-0s", DEFAULT_TIMEOUT),
            ("1h", Duration::from_secs(3600)),
            ("1m30s", Duration::from_secs(90)),
            ("250us", Duration::from_micros(250)),
            ("250\u{b5}s", Duration::from_micros(250)),
            ("1.5s", Duration::from_millis(1500)),
            ("+20", Duration::from_millis(20)),
            // Go's milliseconds-to-nanoseconds product wraps negative: the default.
            ("9223372036854775807", DEFAULT_TIMEOUT),
        ];
        for (v, want) in timeouts {
            let m = parse(&with(&[("timeout", v)]), &[]).expect(v);
            assert_eq!(m.timeout, want, "{v}");
        }

        let m = parse(
            &with(&[
                ("customHeaders", " a = 1 , b=2, a=3 "),
                ("queryParameters", "x=y"),
            ]),
            &[],
        )
        .expect("ok");
        let owned = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(m.custom_headers, owned(&[("a", "3"), ("b", "2")]));
        assert_eq!(m.query_parameters, owned(&[("x", "y")]));

        let pair = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        let auth = |meta: &[(&'static str, &'static str)], auth: Pairs| {
            parse(&with(meta), auth).expect("auth").auth
        };
        let custom = auth(
            &[],
            &[
                ("authModes", "custom"),
                ("customAuthHeader", "header\n"),
                ("customAuthValue", "value\n"),
            ],
        );
        assert_eq!(custom.custom, pair("header", "value"), "trimmed");
        let token = auth(&[], &[("authModes", "bearer"), ("token", "t")]);
        assert_eq!(token.bearer.as_deref(), Some("t"));
        let both = auth(
            &[],
            &[
                ("authModes", "bearer"),
                ("bearerToken", "b"),
                ("token", "t"),
            ],
        );
        assert_eq!(both.bearer.as_deref(), Some("b"), "bearerToken first");
        let meta_first = auth(
            &[("authModes", "basic")],
            &[("authModes", "bearer"), ("username", "u")],
        );
        assert_eq!((meta_first.basic, meta_first.bearer), (pair("u", ""), None));
        let tls = auth(
            &[("authModes", "tls, basic")],
            &[
                ("ca", "caaa"),
                ("cert", "ceert"),
                ("key", "keey"),
                ("username", "user"),
                ("password", "pass"),
            ],
        );
        assert_eq!(
            (tls.client_cert, tls.ca.as_deref(), tls.basic),
            (pair("ceert", "keey"), Some("caaa"), pair("user", "pass"))
        );
        // Without a mode KEDA builds no TLS transport: the CA goes unused.
        assert_eq!(auth(&[], &[("ca", "caaa")]).ca, None);
    }

    fn scaler(meta: &[(&str, &str)]) -> PrometheusScaler {
        scaler_with(meta, &[])
    }

    fn scaler_with(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> PrometheusScaler {
        build(2, meta, auth, PrometheusScaler::new).expect("scaler")
    }

    #[test]
    fn metric_spec_and_url() {
        let s = scaler(&with(&[
            ("serverAddress", "http://prom:9090/sub/"),
            ("threshold", "2.5"),
            ("namespace", "team"),
            ("queryParameters", "dedup=true"),
        ]));
        assert_eq!(s.metric_spec().name, "s2-prometheus");
        assert_eq!(s.metric_spec().target, "2500m");
        let url = s.query_url("2026-01-01T00:00:00Z").to_string();
        assert_eq!(
            url,
            "http://prom:9090/sub/api/v1/query?query=sum%28up%29&time=2026-01-01T00%3A00%3A00Z&namespace=team&dedup=true"
        );
    }

    /// KEDA's query result table (prometheus_scaler_test.go:191-327), and a few more.
    #[test]
    fn values_follow_keda() {
        let lenient = scaler(&BASE);
        let strict = scaler(&with(&[("ignoreNullValues", "false")]));
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"5"]]}]}}"#;
        let one = |v: &str| {
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1700000000,"{v}"]}}]}}}}"#
            )
        };
        let two = r#"{"data":{"result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}"#;
        // (ignoreNullValues, status, body, value or a part of the error)
        let cases: Vec<(bool, u16, String, Result<f64, &str>)> =
            vec![
            (true, 200, "{}".into(), Ok(0.0)),
            (
                false,
                200,
                "{}".into(),
                Err("prometheus metrics 'prometheus' target may be lost, the result is empty"),
            ),
            (true, 200, r#"{"data":{"result":[]}}"#.into(), Ok(0.0)),
            (
                false,
                200,
                r#"{"data":{"result":[]}}"#.into(),
                Err("prometheus metrics 'prometheus' target may be lost, the result is empty"),
            ),
            (true, 200, r#"{"data":null}"#.into(), Ok(0.0)),
            (
                true,
                200,
                r#"{"data":{"result":[{"value": []}]}}"#.into(),
                Ok(0.0),
            ),
            (
                false,
                200,
                r#"{"data":{"result":[{"value": []}]}}"#.into(),
                Err("prometheus metrics 'prometheus' target may be lost, the value list is empty"),
            ),
            (true, 200, matrix.into(), Ok(0.0)),
            (
                false,
                200,
                matrix.into(),
                Err("prometheus metrics 'prometheus' target may be lost, the value list is empty"),
            ),
            (
                true,
                200,
                r#"{"data":{"result":[{"value": ["1", "2"]}]}}"#.into(),
                Ok(2.0),
            ),
            (
                true,
                200,
                r#"{"data":{"result":[{"value": ["1"]}]}}"#.into(),
                Err("prometheus query sum(up) didn't return enough values"),
            ),
            (
                true,
                200,
                r#"{"data":{"result":[{},{}]}}"#.into(),
                Err("prometheus query sum(up) returned multiple elements"),
            ),
            (
                true,
                200,
                two.into(),
                Err("prometheus query sum(up) returned multiple elements"),
            ),
            (
                true,
                400,
                "{}".into(),
                Err("prometheus query api returned error. status: 400"),
            ),
            (
                true,
                503,
                r#"{"status":"error"}"#.into(),
                Err("prometheus query api returned error. status: 503"),
            ),
            (true, 200, one("+Inf"), Ok(0.0)),
            (false, 200, one("+Inf"), Err("prometheus query returns +Inf")),
            (true, 200, one("-Inf"), Ok(0.0)),
            (false, 200, one("-Inf"), Err("prometheus query returns -Inf")),
            (true, 200, one("NaN"), Ok(0.0)),
            (false, 200, one("NaN"), Err("prometheus query returns NaN")),
            (true, 200, one("42"), Ok(42.0)),
            (false, 200, one("1.5"), Ok(1.5)),
            (true, 299, one("-3"), Ok(-3.0)),
            (
                true,
                200,
                one("abc"),
                Err("strconv.ParseFloat: parsing \"abc\": invalid syntax"),
            ),
            (
                true,
                200,
                one("1e400"),
                Err("strconv.ParseFloat: parsing \"1e400\": value out of range"),
            ),
            (
                true,
                200,
                r#"{"data":{"result":[{"value":[1,2]}]}}"#.into(),
                Err("returned a value that is not a string: 2"),
            ),
            (
                true,
                200,
                r#"{"data":{"result":"x"}}"#.into(),
                Err("unparsable body: data.result is a string, not an array"),
            ),
            (
                true,
                200,
                r#"{"data":{"result":[{"value":{}}]}}"#.into(),
                Err("unparsable body: a result's value is an object, not an array"),
            ),
            (true, 200, "<html>".into(), Err("unparsable body")),
            // Beyond KEDA: a scalar is one value.
            (
                true,
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"7"]}}"#
                    .into(),
                Ok(7.0),
            ),
        ];
        for (ignore, status, body, want) in cases {
            let s = if ignore { &lenient } else { &strict };
            let got = s.value_of(status, &body);
            match want {
                Ok(v) => assert_eq!(got, Ok(v), "{ignore} {status} {body}"),
                Err(part) => assert!(
                    got.as_ref().is_err_and(|e| e.to_string().contains(part)),
                    "{ignore} {status} {body}: {got:?}, want an error with {part:?}"
                ),
            }
        }
    }

    /// One authentication header, KEDA's choice (bearer, else basic, else custom), and it
    /// replaces a custom header of the same name.
    #[test]
    fn one_authentication_header() {
        let base = |headers: &'static str| with(&[("customHeaders", headers)]);
        // (metadata, authentication, header, the values it is sent with)
        let cases: &[(Meta, Pairs, &str, &[&str])] = &[
            (
                base("Authorization=Bearer x,X-A=1"),
                &[("authModes", "basic"), ("username", "u"), ("password", "p")],
                "authorization",
                &["Basic dTpw"],
            ),
            (
                base("Authorization=Bearer x,X-A=1"),
                &[("authModes", "basic"), ("username", "u"), ("password", "p")],
                "x-a",
                &["1"],
            ),
            (
                base("X-A=1"),
                &[
                    ("authModes", "bearer,custom"),
                    ("bearerToken", "t"),
                    ("customAuthHeader", "X-Key"),
                    ("customAuthValue", "v"),
                ],
                "authorization",
                &["Bearer t"],
            ),
            (
                base("X-A=1"),
                &[
                    ("authModes", "bearer,custom"),
                    ("bearerToken", "t"),
                    ("customAuthHeader", "X-Key"),
                    ("customAuthValue", "v"),
                ],
                "x-key",
                &[],
            ),
            (
                base("x-key=old"),
                &[
                    ("authModes", "custom"),
                    ("customAuthHeader", "X-Key"),
                    ("customAuthValue", "v"),
                ],
                "x-key",
                &["v"],
            ),
            (
                base("Authorization=Bearer x"),
                &[],
                "authorization",
                &["Bearer x"],
            ),
        ];
        for (meta, auth, header, want) in cases {
            let req = scaler_with(meta, auth).request("now").expect("request");
            let got: Vec<&str> = req
                .headers()
                .get_all(*header)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            assert_eq!(&got, want, "{meta:?} {auth:?} {header}");
        }
    }
}
