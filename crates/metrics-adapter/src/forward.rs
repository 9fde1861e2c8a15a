//! Forwarded reads: a cached metric of a ScaledObject another replica owns is asked of
//! that replica (only its owner polls it), over the same TLS API the HPA uses.
//!
//! The channel is authenticated both ways. This replica checks the owner's serving
//! certificate against the CA in its certificate directory, for the Service's name (every
//! replica serves the same certificate). The owner authenticates this replica's
//! ServiceAccount token by TokenReview and authorizes it by SubjectAccessReview, as any
//! caller; the token is read from the kubeconfig or the in-cluster token file at each
//! request, so a rotated token is used at once. A request carrying [`FORWARDED_HEADER`] is
//! answered where it lands, never forwarded again (the header gives a caller nothing it
//! could not have asked for directly).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use kube::config::AuthInfo;
use scaler_core::shard::Member;
use serde::Deserialize;
use tracing::{info, warn};

use crate::api::{GROUP, VERSION};
use crate::provider::ExternalMetricValue;
use crate::status::ApiError;

/// The header marking a forwarded read (its value: the forwarding replica's identity).
pub const FORWARDED_HEADER: &str = "x-eventscale-forwarded";

/// The label a forwarded read's answer carries with the trigger's activity (only
/// forwarded reads get it; the HPA never sees it).
pub const ACTIVE_LABEL: &str = "eventscale.sh/active";

/// How long a forwarded read may take before this replica answers it itself.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Where this replica's own credentials come from.
#[derive(Debug, Clone)]
pub enum Token {
    /// A token given in the kubeconfig.
    Static(String),
    /// A token file (the in-cluster one is rotated by the kubelet).
    File(PathBuf),
}

impl Token {
    /// The bearer token of `auth`, when it has one.
    pub fn of(auth: &AuthInfo) -> Option<Self> {
        use secrecy::ExposeSecret;
        if let Some(t) = &auth.token {
            return Some(Token::Static(t.expose_secret().to_string()));
        }
        auth.token_file.as_ref().map(|f| Token::File(f.into()))
    }

    fn read(&self) -> Option<String> {
        match self {
            Token::Static(t) => Some(t.clone()),
            Token::File(f) => std::fs::read_to_string(f)
                .ok()
                .map(|t| t.trim().to_string()),
        }
    }
}

/// Why a read was not forwarded; the caller answers it itself.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The owner said where it listens in no usable form.
    #[error("owner {0} publishes no usable address")]
    NoAddress(String),
    /// The owner could not be reached, or did not answer in time.
    #[error("owner {owner} at {address}: {error}")]
    Unreachable {
        /// The owner's identity.
        owner: String,
        /// Its address.
        address: String,
        /// What failed.
        error: String,
    },
}

/// An error with its causes (reqwest's own message names only the request).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Sends reads to the replicas that own them.
pub struct Forwarder {
    identity: String,
    server_name: String,
    ca: reqwest::Certificate,
    token: Token,
    clients: Mutex<HashMap<SocketAddr, reqwest::Client>>,
}

#[derive(Deserialize)]
struct ValueList {
    #[serde(default)]
    items: Vec<ExternalMetricValue>,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    message: String,
}

impl Forwarder {
    /// A forwarder for this replica (`identity`), checking owners' certificates against
    /// `cert_dir/ca.crt` for `service.namespace.svc`, authenticating with `token`. `None`
    /// (and a log line saying why) when it cannot: reads are then answered where they land.
    pub fn new(
        identity: &str,
        service: &str,
        namespace: &str,
        cert_dir: &Path,
        token: Option<Token>,
    ) -> Option<Self> {
        let ca_path = cert_dir.join("ca.crt");
        let ca = match std::fs::read(&ca_path)
            .map_err(|e| e.to_string())
            .and_then(|pem| reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string()))
        {
            Ok(ca) => ca,
            Err(e) => {
                info!(path = %ca_path.display(), error = %e, "no CA to check other replicas by: cached metric reads of other replicas' ScaledObjects are answered with a live query instead of being forwarded");
                return None;
            }
        };
        let Some(token) = token else {
            info!("no bearer token to authenticate to other replicas with: cached metric reads of other replicas' ScaledObjects are answered with a live query instead of being forwarded");
            return None;
        };
        Some(Self {
            identity: identity.to_string(),
            server_name: format!("{service}.{namespace}.svc"),
            ca,
            token,
            clients: Mutex::new(HashMap::new()),
        })
    }

    fn client(&self, addr: SocketAddr) -> Result<reqwest::Client, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&addr) {
            return Ok(c.clone());
        }
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(self.ca.clone())
            .resolve(&self.server_name, addr)
            .connect_timeout(Duration::from_millis(500))
            .timeout(TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        // Owners come and go with their Pods' addresses: keep a handful.
        if clients.len() >= 64 {
            clients.clear();
        }
        clients.insert(addr, client.clone());
        Ok(client)
    }

    /// Ask `owner` for `metric` of ScaledObject `name` in `namespace`. An answer of the
    /// owner's (a value or a Status error) is returned as it gave it; `Err` when it could
    /// not be asked.
    pub async fn forward(
        &self,
        owner: &Member,
        namespace: &str,
        metric: &str,
        name: &str,
    ) -> Result<Result<Vec<ExternalMetricValue>, ApiError>, ForwardError> {
        let path = format!("/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{metric}");
        let query = [(
            "labelSelector",
            format!("{}={name}", scaler_core::SCALED_OBJECT_NAME_LABEL),
        )];
        let answer = self.get(owner, &path, &query).await?;
        Ok(match answer {
            Ok(body) => {
                let list: ValueList =
                    serde_json::from_slice(&body).map_err(|e| ForwardError::Unreachable {
                        owner: owner.identity.clone(),
                        address: owner.address.clone().unwrap_or_default(),
                        error: format!("unreadable answer: {e}"),
                    })?;
                Ok(list.items)
            }
            Err(e) => Err(e),
        })
    }

    /// GET `path` (with `query`) of `owner`: the body of a 200, or the owner's Status
    /// error; `Err` when it could not be asked, refused this replica (401, 403), or does
    /// not know the object yet (404).
    pub async fn get(
        &self,
        owner: &Member,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Result<bytes::Bytes, ApiError>, ForwardError> {
        let address = owner.address.clone().unwrap_or_default();
        let addr: SocketAddr = address
            .parse()
            .map_err(|_| ForwardError::NoAddress(owner.identity.clone()))?;
        let unreachable = |error: String| ForwardError::Unreachable {
            owner: owner.identity.clone(),
            address: address.clone(),
            error,
        };
        let client = self.client(addr).map_err(unreachable)?;
        let url = format!("https://{}:{}{path}", self.server_name, addr.port());
        let mut req = client
            .get(url)
            .query(query)
            .header(FORWARDED_HEADER, &self.identity);
        if let Some(t) = self.token.read() {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| unreachable(chain(&e)))?;
        let code = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| unreachable(chain(&e)))?;
        if code == 200 {
            return Ok(Ok(body));
        }
        // The owner refused us (our credentials or RBAC): a problem of this replica's, not
        // the caller's; answer here and say so.
        if code == 401 || code == 403 {
            warn!(owner = %owner.identity, code, %path, "the owner refused a forwarded read; check eventscale's RBAC (list on external.metrics.k8s.io, get on scaledobjects and scaledjobs)");
            return Err(unreachable(format!("refused with {code}")));
        }
        // The owner has not seen the object yet (its watch is behind ours).
        if code == 404 {
            return Err(unreachable("the owner does not know the object yet".into()));
        }
        let message = serde_json::from_slice::<Status>(&body)
            .map(|s| s.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Ok(Err(ApiError::with_code(code, message)))
    }

    /// A poll of `metric` of ScaledObject `name` asked of `owner` (the replica that polls
    /// its question): the value and activity, or the owner's error message. `Err` when
    /// the owner could not be asked.
    pub async fn sample(
        &self,
        owner: &Member,
        namespace: &str,
        metric: &str,
        name: &str,
    ) -> Result<Result<scaler_core::scalers::Sample, String>, ForwardError> {
        let answer = self.forward(owner, namespace, metric, name).await?;
        Ok(match answer {
            Ok(items) => match items.first() {
                Some(item) => scaler_core::quantity::parse_quantity(&item.value)
                    .map(|value| scaler_core::scalers::Sample {
                        value,
                        active: item.metric_labels.get(ACTIVE_LABEL).map(String::as_str)
                            == Some("true"),
                    })
                    .ok_or_else(|| {
                        format!("unreadable value {:?} from {}", item.value, owner.identity)
                    }),
                None => Err(format!("no value from {}", owner.identity)),
            },
            Err(e) => Err(e.message),
        })
    }
}
