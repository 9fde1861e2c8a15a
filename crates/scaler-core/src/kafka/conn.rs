//! One connection to one Kafka broker: TCP or TLS, API version negotiation, SASL, and
//! request/response framing with correlation ids.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiVersionsRequest, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Request, StrBytes, VersionRange,
};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::scram::ScramClient;
use super::{KafkaError, Sasl};

/// Responses larger than this are refused rather than allocated (a misdirected TLS or
/// HTTP peer answers with garbage lengths).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

const CLIENT_ID: &str = "eventscale";

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An open, authenticated connection.
pub struct Conn {
    addr: String,
    stream: Box<dyn Stream>,
    /// The broker's supported versions by API key.
    versions: HashMap<i16, (i16, i16)>,
    correlation: i32,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("addr", &self.addr).finish()
    }
}

/// The versions of each API this client speaks; the newest both sides know is used.
pub fn ours<R: Request>() -> VersionRange {
    use kafka_protocol::messages as m;
    let max = match R::KEY {
        k if k == m::ApiKey::Metadata as i16 => 12,
        k if k == m::ApiKey::FindCoordinator as i16 => 3,
        // 8 and 9 ask by group (the form newer brokers answer best); 10 names topics by id.
        k if k == m::ApiKey::OffsetFetch as i16 => 9,
        k if k == m::ApiKey::ListOffsets as i16 => 7,
        k if k == m::ApiKey::SaslHandshake as i16 => 1,
        k if k == m::ApiKey::SaslAuthenticate as i16 => 2,
        _ => R::VERSIONS.max,
    };
    VersionRange {
        min: R::VERSIONS.min,
        max: max.min(R::VERSIONS.max),
    }
}

fn protocol(addr: &str, what: impl std::fmt::Display) -> KafkaError {
    KafkaError::Protocol {
        broker: addr.to_string(),
        message: what.to_string(),
    }
}

/// Read one response frame to a request of type `R` sent as version `v` with
/// `correlation`: the size prefix, the header (whose correlation id must match) and the
/// body. Everything here comes from the broker: a wrong size, a short frame or bytes that
/// do not decode are an error, never a panic or an allocation larger than what arrived.
pub async fn read_response<R: Request>(
    stream: &mut (impl AsyncRead + Unpin),
    broker: &str,
    v: i16,
    correlation: i32,
) -> Result<R::Response, KafkaError> {
    let io = |e: std::io::Error| KafkaError::Io {
        broker: broker.to_string(),
        message: e.to_string(),
    };
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.map_err(io)?;
    let len = i32::from_be_bytes(len);
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_RESPONSE)
        .ok_or_else(|| protocol(broker, format!("bad response length {len}")))?;
    // Grown as bytes arrive: a size prefix alone does not reserve 64 MiB.
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    let read = (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut buf)
        .await
        .map_err(io)?;
    if read < len {
        return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let mut buf = Bytes::from(buf);
    let rh = ResponseHeader::decode(&mut buf, R::Response::header_version(v))
        .map_err(|e| protocol(broker, format!("decoding response header: {e}")))?;
    if rh.correlation_id != correlation {
        return Err(protocol(
            broker,
            format!(
                "response for request {} arrived while waiting for {correlation}",
                rh.correlation_id
            ),
        ));
    }
    super::lengths::check(R::KEY, v, &buf).map_err(|e| {
        protocol(
            broker,
            format!("malformed response to API key {} v{v}: {e}", R::KEY),
        )
    })?;
    let resp = R::Response::decode(&mut buf, v).map_err(|e| {
        protocol(
            broker,
            format!("decoding response to API key {} v{v}: {e}", R::KEY),
        )
    })?;
    if buf.has_remaining() {
        tracing::debug!(
            broker,
            api_key = R::KEY,
            left = buf.remaining(),
            "response had trailing bytes"
        );
    }
    Ok(resp)
}

impl Conn {
    /// Connect to `addr` (`host:port`), with TLS when `tls` is set, learn the broker's API
    /// versions and authenticate with `sasl`.
    pub async fn open(
        addr: &str,
        tls: Option<&Arc<rustls::ClientConfig>>,
        sasl: Option<&Sasl>,
    ) -> Result<Self, KafkaError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| KafkaError::Connect {
                broker: addr.to_string(),
                message: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(config) => {
                let host = addr
                    .rsplit_once(':')
                    .map_or(addr, |(h, _)| h)
                    .trim_matches(['[', ']']);
                let name =
                    rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|_| {
                        KafkaError::Connect {
                            broker: addr.to_string(),
                            message: format!("{host:?} is not a valid TLS server name"),
                        }
                    })?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| KafkaError::Connect {
                        broker: addr.to_string(),
                        message: format!("TLS handshake: {e}"),
                    })?;
                Box::new(tls)
            }
        };
        let mut conn = Conn {
            addr: addr.to_string(),
            stream,
            versions: HashMap::new(),
            correlation: 0,
        };
        // ApiVersions v0 is understood by every broker since 0.10.
        let resp = conn.send(&ApiVersionsRequest::default(), 0).await?;
        if let Some(e) = ResponseError::try_from_code(resp.error_code) {
            return Err(protocol(addr, format!("ApiVersions: {e}")));
        }
        conn.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if let Some(sasl) = sasl {
            conn.authenticate(sasl).await?;
        }
        Ok(conn)
    }

    /// The newest version of `R` both sides speak.
    fn version<R: Request>(&self) -> Result<i16, KafkaError> {
        let ours = ours::<R>();
        let (min, max) = self.versions.get(&R::KEY).copied().ok_or_else(|| {
            protocol(
                &self.addr,
                format!("the broker does not support API key {}", R::KEY),
            )
        })?;
        let v = ours.max.min(max);
        if v < ours.min.max(min) {
            return Err(protocol(
                &self.addr,
                format!(
                    "no common version for API key {}: broker {min}..{max}, eventscale {ours}",
                    R::KEY
                ),
            ));
        }
        Ok(v)
    }

    /// Build a request for the newest common version (`build` gets the version: some
    /// requests change shape), send it and read its response.
    pub async fn call<R: Request>(
        &mut self,
        build: &(impl Fn(i16) -> R + Sync),
    ) -> Result<(i16, R::Response), KafkaError> {
        let v = self.version::<R>()?;
        Ok((v, self.send(&build(v), v).await?))
    }

    /// Send `req` as version `v` and read its response.
    async fn send<R: Request>(&mut self, req: &R, v: i16) -> Result<R::Response, KafkaError> {
        self.correlation = self.correlation.wrapping_add(1);
        let correlation = self.correlation;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(v)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(v))
            .and_then(|()| req.encode(&mut body, v))
            .map_err(|e| protocol(&self.addr, format!("encoding request {}: {e}", R::KEY)))?;
        let len =
            i32::try_from(body.len()).map_err(|_| protocol(&self.addr, "request too large"))?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(len);
        frame.extend_from_slice(&body);
        let broker = self.addr.clone();
        let io = |e: std::io::Error| KafkaError::Io {
            broker: broker.clone(),
            message: e.to_string(),
        };
        self.stream.write_all(&frame).await.map_err(io)?;
        self.stream.flush().await.map_err(io)?;

        read_response::<R>(&mut self.stream, &self.addr, v, correlation).await
    }

    /// One SaslAuthenticate round trip.
    async fn sasl_step(&mut self, bytes: Vec<u8>) -> Result<Bytes, KafkaError> {
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes));
        let (_, resp) = self.call(&|_| req.clone()).await?;
        if let Some(e) = ResponseError::try_from_code(resp.error_code) {
            let detail = resp
                .error_message
                .as_ref()
                .map(|m| format!(": {}", m.as_str()))
                .unwrap_or_default();
            return Err(KafkaError::Auth {
                broker: self.addr.clone(),
                message: format!("{e}{detail}"),
            });
        }
        Ok(resp.auth_bytes)
    }

    async fn authenticate(&mut self, sasl: &Sasl) -> Result<(), KafkaError> {
        let mechanism = sasl.mechanism();
        let broker = self.addr.clone();
        let auth = |m: String| KafkaError::Auth {
            broker: broker.clone(),
            message: m,
        };
        let req =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        let (_, hs) = self.call(&|_| req.clone()).await?;
        if let Some(e) = ResponseError::try_from_code(hs.error_code) {
            let enabled: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(auth(format!(
                "the broker refused SASL mechanism {mechanism} ({e}); it offers {enabled:?}"
            )));
        }
        match sasl {
            Sasl::Plain { user, password } => {
                let mut msg = Vec::with_capacity(user.len() + password.len() + 2);
                msg.push(0);
                msg.extend_from_slice(user.as_bytes());
                msg.push(0);
                msg.extend_from_slice(password.as_bytes());
                self.sasl_step(msg).await?;
            }
            Sasl::Scram {
                hash,
                user,
                password,
            } => {
                let mut scram =
                    ScramClient::new(*hash, user, password).map_err(|e| auth(e.to_string()))?;
                let first = self.sasl_step(scram.client_first().into_bytes()).await?;
                let first = std::str::from_utf8(&first)
                    .map_err(|_| auth("the server's SCRAM message is not UTF-8".into()))?
                    .to_string();
                // Thousands of hash rounds: off the async workers.
                let (returned, last) = tokio::task::spawn_blocking(move || {
                    let last = scram.client_final(&first);
                    (scram, last)
                })
                .await
                .map_err(|e| auth(format!("SCRAM key derivation: {e}")))?;
                scram = returned;
                let last = last.map_err(|e| auth(e.to_string()))?;
                let fin = self.sasl_step(last.into_bytes()).await?;
                let fin = std::str::from_utf8(&fin)
                    .map_err(|_| auth("the server's SCRAM message is not UTF-8".into()))?;
                scram
                    .verify_server_final(fin)
                    .map_err(|e| auth(e.to_string()))?;
            }
        }
        Ok(())
    }
}
