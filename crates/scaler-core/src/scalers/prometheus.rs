//! The `prometheus` trigger: the value of one PromQL query against a Prometheus server.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use serde::Deserialize;

use super::{MetricSpec, Sample, Scaler, ScalerError, TriggerContext};
use crate::coalesce::Coalescer;
use crate::quantity::quantity_string;

/// KEDA's default query timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(3000);

/// How the scaler authenticates to Prometheus (`authModes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrometheusAuth {
    /// `basic`: user name and password.
    pub basic: Option<(String, String)>,
    /// `bearer`: token.
    pub bearer: Option<String>,
    /// `tls`: client certificate and key (PEM).
    pub client_cert: Option<(String, String)>,
    /// CA (PEM) to trust, with `tls` or alone.
    pub ca: Option<String>,
    /// `custom`: header and value.
    pub custom: Option<(String, String)>,
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

/// `k1=v1,k2=v2`.
fn pairs(ctx: &TriggerContext<'_>, key: &str) -> Result<Vec<(String, String)>, ScalerError> {
    let Some(raw) = ctx.param(key) else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or_else(|| {
                ScalerError::invalid(key, format!("error parsing {key}: {p:?} is not key=value"))
            })?;
            let k = k.trim();
            if k.is_empty() {
                return Err(ScalerError::invalid(
                    key,
                    format!("error parsing {key}: empty key in {p:?}"),
                ));
            }
            Ok((k.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// `timeout`: milliseconds (`5000`) or a duration (`5s`, `500ms`, `1m`).
fn timeout(ctx: &TriggerContext<'_>) -> Result<Duration, ScalerError> {
    let Some(v) = ctx.param("timeout") else {
        return Ok(DEFAULT_TIMEOUT);
    };
    let bad = || {
        ScalerError::invalid(
            "timeout",
            format!("error parsing timeout: {v:?} is not milliseconds or a duration"),
        )
    };
    if let Ok(ms) = v.parse::<u64>() {
        return if ms == 0 {
            Err(bad())
        } else {
            Ok(Duration::from_millis(ms))
        };
    }
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(bad)?);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn auth(ctx: &TriggerContext<'_>) -> Result<PrometheusAuth, ScalerError> {
    let mut a = PrometheusAuth::default();
    let Some(modes) = ctx
        .auth_param("authModes")
        .or_else(|| ctx.param("authModes"))
    else {
        return Ok(a);
    };
    let get = |k: &str| ctx.auth_param(k).map(str::to_string);
    let need = |k: &str| get(k).ok_or_else(|| ScalerError::MissingParameter(k.to_string()));
    for mode in modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        match mode {
            "basic" => a.basic = Some((need("username")?, get("password").unwrap_or_default())),
            "bearer" => a.bearer = Some(need("bearerToken")?),
            "tls" => {
                a.client_cert = Some((need("cert")?, need("key")?));
                a.ca = get("ca");
            }
            "custom" => a.custom = Some((need("customAuthHeader")?, need("customAuthValue")?)),
            other => {
                return Err(ScalerError::invalid(
                    "authModes",
                    format!("parameter \"authModes\" value {other:?} must be one of [basic bearer tls custom]"),
                ))
            }
        }
    }
    if a.basic.is_some() && a.bearer.is_some() {
        return Err(ScalerError::invalid(
            "authModes",
            "beare and basic authentication can not be set both",
        ));
    }
    if a.ca.is_none() {
        a.ca = get("ca");
    }
    Ok(a)
}

impl PrometheusMetadata {
    /// Parse the trigger's metadata (and its resolved authentication parameters).
    pub fn parse(ctx: &TriggerContext<'_>) -> Result<Self, ScalerError> {
        let address = ctx.required("serverAddress")?;
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
        let query = ctx.required("query")?.to_string();
        let threshold = ctx
            .float("threshold")?
            .ok_or_else(|| ScalerError::MissingParameter("threshold".into()))?;
        Ok(Self {
            server_address,
            query,
            threshold,
            activation_threshold: ctx.float("activationThreshold")?.unwrap_or(0.0),
            namespace: ctx.param("namespace").map(str::to_string),
            query_parameters: pairs(ctx, "queryParameters")?,
            custom_headers: pairs(ctx, "customHeaders")?,
            ignore_null_values: ctx.flag("ignoreNullValues", true)?,
            unsafe_ssl: ctx.flag("unsafeSsl", false)?,
            timeout: timeout(ctx)?,
            auth: auth(ctx)?,
        })
    }
}

/// What makes two scalers able to share one HTTP client: its TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    unsafe_ssl: bool,
    ca: Option<String>,
    client_cert: Option<(String, String)>,
}

/// One HTTP client (connection pool) per distinct TLS configuration, shared by every
/// prometheus trigger.
static CLIENTS: LazyLock<Mutex<HashMap<ClientKey, reqwest::Client>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn client(key: &ClientKey) -> Result<reqwest::Client, ScalerError> {
    let mut clients = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = clients.get(key) {
        return Ok(c.clone());
    }
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(key.unsafe_ssl);
    if let Some(ca) = &key.ca {
        let cert = reqwest::Certificate::from_pem(ca.as_bytes())
            .map_err(|e| ScalerError::invalid("ca", format!("error parsing ca: {e}")))?;
        b = b.add_root_certificate(cert);
    }
    if let Some((cert, k)) = &key.client_cert {
        let identity =
            reqwest::Identity::from_pem(format!("{cert}\n{k}").as_bytes()).map_err(|e| {
                ScalerError::invalid("cert", format!("error parsing cert and key: {e}"))
            })?;
        b = b.identity(identity);
    }
    let c = b
        .build()
        .map_err(|e| ScalerError::Query(format!("building the HTTP client: {e}")))?;
    clients.insert(key.clone(), c.clone());
    Ok(c)
}

/// The prometheus scaler.
#[derive(Debug, Clone)]
pub struct PrometheusScaler {
    metadata: Arc<PrometheusMetadata>,
    spec: MetricSpec,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct ApiResponse {
    data: Option<ApiData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiData {
    result_type: Option<String>,
    result: serde_json::Value,
}

impl PrometheusScaler {
    /// Parse and validate the trigger.
    pub fn new(ctx: TriggerContext<'_>) -> Result<Self, ScalerError> {
        let metadata = PrometheusMetadata::parse(&ctx)?;
        let spec = MetricSpec {
            name: ctx.metric_name("prometheus"),
            target_type: ctx.target_type()?,
            target: quantity_string(metadata.threshold),
        };
        let client = client(&ClientKey {
            unsafe_ssl: metadata.unsafe_ssl,
            ca: metadata.auth.ca.clone(),
            client_cert: metadata.auth.client_cert.clone(),
        })?;
        Ok(Self {
            metadata: Arc::new(metadata),
            spec,
            client,
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

    /// Turn the API's answer into a value, with KEDA's rules for empty, multiple and NaN.
    pub fn value_of(&self, status: u16, body: &str) -> Result<f64, ScalerError> {
        let m = &self.metadata;
        if !(200..300).contains(&status) {
            return Err(ScalerError::Query(format!(
                "prometheus query api returned error. status: {status} response: {}",
                body.chars().take(512).collect::<String>()
            )));
        }
        let parsed: ApiResponse = serde_json::from_str(body).map_err(|e| {
            ScalerError::Query(format!(
                "prometheus query api returned an unparsable body: {e}"
            ))
        })?;
        let data = parsed
            .data
            .ok_or_else(|| ScalerError::Query("prometheus query api returned no data".into()))?;
        let raw = match data.result_type.as_deref() {
            // A scalar is `[ts, "v"]`; KEDA only reads vectors, a scalar is one value.
            Some("scalar") => Some(data.result.get(1).cloned()),
            _ => match data.result.as_array().map(Vec::as_slice) {
                None | Some([]) => None,
                Some([one]) => Some(one.get("value").and_then(|v| v.get(1)).cloned()),
                Some(_) => {
                    return Err(ScalerError::Query(format!(
                        "prometheus query {} returned multiple elements",
                        m.query
                    )))
                }
            },
        };
        let Some(raw) = raw else {
            return if m.ignore_null_values {
                Ok(0.0)
            } else {
                Err(ScalerError::Query(format!(
                    "prometheus metrics '{}' target may be lost, the result is empty",
                    self.spec.name
                )))
            };
        };
        let text = raw.as_ref().and_then(|v| v.as_str()).unwrap_or_default();
        let value: f64 = text.parse().map_err(|_| {
            ScalerError::Query(format!(
                "prometheus query returned a value that is not a number: {raw:?}"
            ))
        })?;
        if value.is_finite() {
            Ok(value)
        } else if m.ignore_null_values {
            Ok(0.0)
        } else {
            Err(ScalerError::Query(format!(
                "prometheus query {} returned {value}, which is not a usable value",
                m.query
            )))
        }
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
    tls: ClientKey,
    ignore_null_values: bool,
}

/// Identical prometheus queries for the same second, across all ScaledObjects, share one
/// HTTP request: the polls of many ScaledObjects at one aligned instant start within
/// milliseconds of each other but not all while the first request is in flight, so an
/// answer keeps serving its (query, second) until that second is surely over.
static INFLIGHT: LazyLock<Arc<Coalescer<QueryKey, Result<f64, ScalerError>>>> =
    LazyLock::new(|| Arc::new(Coalescer::with_linger(std::time::Duration::from_secs(1))));

impl PrometheusScaler {
    fn query_key(&self, time: &str) -> QueryKey {
        let m = &self.metadata;
        QueryKey {
            url: self.query_url("").to_string(),
            time: time.to_string(),
            headers: m.custom_headers.clone(),
            auth: format!("{:?}", (&m.auth.basic, &m.auth.bearer, &m.auth.custom)),
            tls: ClientKey {
                unsafe_ssl: m.unsafe_ssl,
                ca: m.auth.ca.clone(),
                client_cert: m.auth.client_cert.clone(),
            },
            ignore_null_values: m.ignore_null_values,
        }
    }

    /// The value, from a request shared with identical queries in flight.
    pub async fn query_coalesced(&self) -> Result<f64, ScalerError> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let this = self.clone();
        let key = self.query_key(&now);
        INFLIGHT
            .run(key, async move { this.query(&now).await })
            .await
            .0
    }

    /// One HTTP request to Prometheus, evaluated at `now` (RFC 3339, whole seconds).
    async fn query(&self, now: &str) -> Result<f64, ScalerError> {
        let m = &self.metadata;
        let mut req = self.client.get(self.query_url(now)).timeout(m.timeout);
        for (k, v) in &m.custom_headers {
            req = req.header(k, v);
        }
        if let Some((user, pass)) = &m.auth.basic {
            req = req.basic_auth(user, Some(pass));
        }
        if let Some(token) = &m.auth.bearer {
            req = req.bearer_auth(token);
        }
        if let Some((h, v)) = &m.auth.custom {
            req = req.header(h, v);
        }
        let resp = req.send().await.map_err(|e| {
            ScalerError::Query(format!(
                "querying prometheus at {}: {}",
                m.server_address,
                super::error_chain(&e)
            ))
        })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| {
            ScalerError::Query(format!(
                "reading prometheus' answer from {}: {e}",
                m.server_address
            ))
        })?;
        self.value_of(status, &body)
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

    fn parse(
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
    ) -> Result<PrometheusMetadata, ScalerError> {
        let t = trigger(meta);
        let auth: AuthParams = auth
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PrometheusMetadata::parse(&TriggerContext {
            index: 0,
            trigger: &t,
            auth: &auth,
            namespace: "ns",
            name: "test",
            client: None,
            as_metric_source: false,
        })
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

    /// KEDA's parse table, and a few more.
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
            (with(&[("ignoreNullValues", "false")]), &[]),
            (with(&[("unsafeSsl", "true")]), &[]),
            (with(&[("timeout", "500")]), &[]),
            (with(&[("timeout", "2s")]), &[]),
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
            (
                BASE.to_vec(),
                &[
                    ("authModes", "custom"),
                    ("customAuthHeader", "X-Key"),
                    ("customAuthValue", "v"),
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
                "missing required parameter \"serverAddress\"",
            ),
            (
                vec![("serverAddress", "http://x"), ("threshold", "1")],
                &[],
                "missing required parameter \"query\"",
            ),
            (
                vec![("serverAddress", "http://x"), ("query", "q")],
                &[],
                "missing required parameter \"threshold\"",
            ),
            (
                with(&[("threshold", "one")]),
                &[],
                "error parsing threshold",
            ),
            (
                with(&[("activationThreshold", "x")]),
                &[],
                "error parsing activationThreshold",
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
                "error parsing ignoreNullValues",
            ),
            (
                with(&[("unsafeSsl", "yes")]),
                &[],
                "error parsing unsafeSsl",
            ),
            (
                with(&[("queryParameters", "novalue")]),
                &[],
                "is not key=value",
            ),
            (with(&[("timeout", "soon")]), &[], "error parsing timeout"),
            (with(&[("timeout", "0")]), &[], "error parsing timeout"),
            (
                BASE.to_vec(),
                &[("authModes", "basic")],
                "missing required parameter \"username\"",
            ),
            (
                BASE.to_vec(),
                &[("authModes", "bearer")],
                "missing required parameter \"bearerToken\"",
            ),
            (
                BASE.to_vec(),
                &[("authModes", "tls"), ("cert", "c")],
                "missing required parameter \"key\"",
            ),
            (
                BASE.to_vec(),
                &[("authModes", "custom"), ("customAuthHeader", "h")],
                "missing required parameter \"customAuthValue\"",
            ),
            (
                BASE.to_vec(),
                &[
                    ("authModes", "basic,bearer"),
                    ("username", "u"),
                    ("bearerToken", "t"),
                ],
                "can not be set both",
            ),
            (
                BASE.to_vec(),
                &[("authModes", "oauth")],
                "must be one of [basic bearer tls custom]",
            ),
        ];
        for (meta, auth, want) in bad {
            let err = parse(meta, auth).expect_err(want).to_string();
            assert!(err.contains(want), "{meta:?} {auth:?}: {err}");
        }
        let m = parse(&with(&[("timeout", "1500")]), &[]).expect("ok");
        assert_eq!(m.timeout, Duration::from_millis(1500));
        assert!(m.ignore_null_values, "default true");
        assert_eq!(parse(&BASE, &[]).expect("ok").timeout, DEFAULT_TIMEOUT);
    }

    fn scaler(meta: &[(&str, &str)]) -> PrometheusScaler {
        let t = trigger(meta);
        let auth = AuthParams::new();
        PrometheusScaler::new(TriggerContext {
            index: 2,
            trigger: &t,
            auth: &auth,
            namespace: "ns",
            name: "test",
            client: None,
            as_metric_source: false,
        })
        .expect("scaler")
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

    #[test]
    fn values_follow_keda() {
        let lenient = scaler(&BASE);
        let strict = scaler(&with(&[("ignoreNullValues", "false")]));
        let vector = |vals: &[&str]| {
            let items: Vec<String> = vals
                .iter()
                .map(|v| format!(r#"{{"metric":{{}},"value":[1700000000,"{v}"]}}"#))
                .collect();
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
                items.join(",")
            )
        };
        assert_eq!(lenient.value_of(200, &vector(&["42"])), Ok(42.0));
        assert_eq!(lenient.value_of(200, &vector(&["1.5"])), Ok(1.5));
        assert_eq!(lenient.value_of(200, &vector(&[])), Ok(0.0));
        assert_eq!(lenient.value_of(200, &vector(&["NaN"])), Ok(0.0));
        assert_eq!(lenient.value_of(200, &vector(&["+Inf"])), Ok(0.0));
        assert!(strict.value_of(200, &vector(&[])).is_err_and(|e| e
            .to_string()
            .contains("target may be lost, the result is empty")));
        assert!(strict.value_of(200, &vector(&["NaN"])).is_err());
        assert!(lenient
            .value_of(200, &vector(&["1", "2"]))
            .is_err_and(|e| e.to_string().contains("returned multiple elements")));
        assert!(lenient
            .value_of(400, r#"{"status":"error"}"#)
            .is_err_and(|e| e
                .to_string()
                .starts_with("prometheus query api returned error. status: 400")));
        assert!(lenient.value_of(200, "<html>").is_err());
        assert_eq!(
            lenient.value_of(
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"7"]}}"#
            ),
            Ok(7.0)
        );
    }
}
