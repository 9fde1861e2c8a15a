//! `eventscale`: a KEDA-compatible event-driven autoscaler for Kubernetes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, Config, CustomResourceExt};
use metrics_adapter::auth::{self, authn::ConfigHolder, Auth, KubeReviews};
use metrics_adapter::cert_reload::ReloadingCert;
use metrics_adapter::certs::{self, CertOptions};
use metrics_adapter::provider::ScaledObjectProvider;
use metrics_adapter::telemetry::Telemetry;
use metrics_adapter::{eval, poller, routes, server};
use scaler_core::trigger_auth::{ClusterTriggerAuthentication, TriggerAuthentication};
use scaler_core::ScaledObject;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "eventscale",
    version,
    about = "KEDA-compatible event-driven autoscaler for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the external metrics API server and the HPA controller.
    Run(RunArgs),
    /// Generate the CA and serving certificate the APIService trusts.
    Certs(CertsArgs),
    /// Evaluate ScaledObjects' triggers against their real event sources, without a cluster.
    Eval(EvalArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Say why a ScaledObject (or ScaledJob, HTTPScaledObject) has the replicas it has:
    /// its live trace, read through the Kubernetes API from the replica that owns it.
    Explain(ExplainArgs),
    /// Run the HTTP interceptor: route HTTPScaledObjects' requests, hold them while the
    /// workload starts from zero, and serve their counts to the scaler.
    Interceptor(InterceptorArgs),
}

/// A tolerance: a ratio from 0 up to 1.
fn tolerance_arg(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if (0.0..1.0).contains(&t) => Ok(t),
        _ => Err(format!(
            "{s:?} is not a ratio from 0 up to 1 (the default is 0.1)"
        )),
    }
}

/// A Go duration (`500ms`, `20s`, `1m`), as the add-on's settings take them.
fn go_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    let nanos = scaler_core::go_duration::parse(s)?;
    u64::try_from(nanos)
        .map(std::time::Duration::from_nanos)
        .map_err(|_| format!("{s:?} is negative"))
}

#[derive(clap::Args)]
struct InterceptorArgs {
    /// kubeconfig to use; in-cluster configuration when unset.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "EVENTSCALE_BIND_ADDRESS", default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Port of the proxy (the Ingress sends requests here).
    #[arg(
        long,
        env = "EVENTSCALE_INTERCEPTOR_PROXY_PORT",
        default_value_t = 8080
    )]
    proxy_port: u16,
    /// Port of `/queue`, `/livez`, `/readyz` and `/metrics`.
    #[arg(
        long,
        env = "EVENTSCALE_INTERCEPTOR_ADMIN_PORT",
        default_value_t = 9090
    )]
    admin_port: u16,
    /// Port of KEDA's external scaler protocol (gRPC), which the ScaledObjects' triggers read.
    #[arg(
        long,
        env = "EVENTSCALE_INTERCEPTOR_SCALER_PORT",
        default_value_t = 9091
    )]
    scaler_port: u16,
    /// How long a request waits for a ready endpoint unless its HTTPScaledObject says.
    #[arg(long, env = "KEDA_CONDITION_WAIT_TIMEOUT", default_value = "20s", value_parser = go_duration_arg)]
    condition_wait_timeout: std::time::Duration,
    /// How long a workload may take to send response headers unless its HTTPScaledObject says.
    #[arg(long, env = "KEDA_HTTP_RESPONSE_HEADER_TIMEOUT", default_value = "300s", value_parser = go_duration_arg)]
    response_header_timeout: std::time::Duration,
    /// How long a connection to a pod may take.
    #[arg(long, env = "KEDA_HTTP_CONNECT_TIMEOUT", default_value = "3s", value_parser = go_duration_arg)]
    connect_timeout: std::time::Duration,
    /// Requests one HTTPScaledObject may hold while its workload starts; more get 503.
    #[arg(
        long,
        env = "EVENTSCALE_INTERCEPTOR_MAX_HELD_PER_ROUTE",
        default_value_t = 10_000
    )]
    max_held_per_route: usize,
    /// Requests all HTTPScaledObjects together may hold.
    #[arg(
        long,
        env = "EVENTSCALE_INTERCEPTOR_MAX_HELD",
        default_value_t = 50_000
    )]
    max_held: usize,
    /// On SIGTERM, how long `/readyz` fails while requests are still served.
    #[arg(long, env = "EVENTSCALE_INTERCEPTOR_DRAIN_DELAY", default_value = "5s", value_parser = go_duration_arg)]
    drain_delay: std::time::Duration,
    /// On SIGTERM, how long requests in flight may take to finish.
    #[arg(long, env = "EVENTSCALE_INTERCEPTOR_DRAIN_TIMEOUT", default_value = "60s", value_parser = go_duration_arg)]
    drain_timeout: std::time::Duration,
    /// The only address blocks requests may be sent to, comma-separated (`10.244.0.0/16`);
    /// every address when unset. Endpoints naming other addresses are not followed.
    #[arg(
        long,
        env = "EVENTSCALE_INTERCEPTOR_BACKEND_CIDRS",
        value_delimiter = ','
    )]
    backend_cidrs: Vec<interceptor::backends::Cidr>,
    /// The interceptors' admin Service (`namespace/name`): the other replicas, found through
    /// its Endpoints, whose counts are added to this one's. Unset: this replica alone.
    #[arg(long, env = "EVENTSCALE_INTERCEPTOR_PEERS_SERVICE")]
    peers_service: Option<String>,
    /// The admin port's name on that Service.
    #[arg(
        long,
        env = "EVENTSCALE_INTERCEPTOR_PEERS_PORT_NAME",
        default_value = "admin"
    )]
    peers_port_name: String,
    /// How often the other replicas' counts are read.
    #[arg(long, env = "EVENTSCALE_INTERCEPTOR_PEERS_INTERVAL", default_value = "500ms", value_parser = go_duration_arg)]
    peers_interval: std::time::Duration,
    /// Send `X-KEDA-HTTP-Cold-Start` on responses.
    #[arg(long, env = "KEDA_HTTP_ENABLE_COLD_START_HEADER", default_value_t = true, action = clap::ArgAction::Set)]
    cold_start_header: bool,
    /// Log filter: a level (info, debug) or tracing directives.
    #[arg(long, env = "EVENTSCALE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, env = "EVENTSCALE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

async fn interceptor_command(args: InterceptorArgs) -> anyhow::Result<()> {
    init_tracing(&args.log_level, args.log_format)?;
    let client = kube_client(args.kubeconfig.as_ref()).await?;
    let config = interceptor::Config {
        condition_wait: args.condition_wait_timeout,
        response_header_timeout: args.response_header_timeout,
        connect_timeout: args.connect_timeout,
        max_held_per_route: args.max_held_per_route,
        max_held: args.max_held,
        drain_delay: args.drain_delay,
        drain_timeout: args.drain_timeout,
        cold_start_header: args.cold_start_header,
        backend_cidrs: args.backend_cidrs,
        peers: match args.peers_service.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                let (namespace, name) = s
                    .split_once('/')
                    .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
                    .with_context(|| format!("--peers-service {s:?}: expected namespace/name"))?;
                Some(interceptor::peers::PeersConfig {
                    service: scaler_core::http_scaled_object::ServiceRef {
                        namespace: namespace.into(),
                        name: name.into(),
                        port: scaler_core::http_scaled_object::PortRef::Name(
                            args.peers_port_name.clone(),
                        ),
                    },
                    interval: args
                        .peers_interval
                        .max(std::time::Duration::from_millis(50)),
                })
            }
        },
    };
    let shared = interceptor::Shared::new(config);
    // Memory freed after a burst (10,000 held requests) goes back to the system.
    metrics_adapter::memory::spawn_trim(std::time::Duration::from_secs(10));
    let bind = |port: u16, what: &'static str| {
        let addr = SocketAddr::new(args.bind_address, port);
        async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the {what} port {addr}"))
        }
    };
    let listeners = interceptor::server::Listeners {
        proxy: bind(args.proxy_port, "proxy").await?,
        admin: bind(args.admin_port, "admin").await?,
        scaler: bind(args.scaler_port, "external scaler").await?,
    };
    info!(
        proxy = args.proxy_port,
        admin = args.admin_port,
        scaler = args.scaler_port,
        "interceptor listening"
    );
    tokio::spawn(interceptor::cluster::run(client, shared.clone()));
    interceptor::server::serve(shared, listeners, async {
        stop_signal().await;
        info!("SIGTERM: draining");
    })
    .await;
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct RunArgs {
    /// kubeconfig to use; in-cluster configuration when unset.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Port of the TLS API server.
    #[arg(long, env = "EVENTSCALE_SECURE_PORT", default_value_t = 6443)]
    secure_port: u16,
    /// Address to listen on.
    #[arg(long, env = "EVENTSCALE_BIND_ADDRESS", default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Directory holding tls.crt and tls.key.
    #[arg(
        long,
        env = "EVENTSCALE_CERT_DIR",
        default_value = "/apiserver.local.config/certificates"
    )]
    cert_dir: PathBuf,
    /// Log filter: a level (info, debug) or tracing directives.
    #[arg(long, env = "EVENTSCALE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, env = "EVENTSCALE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve metrics only: no HPA management and no activation, for clusters where an
    /// existing KEDA operator owns the HPAs.
    #[arg(long, env = "EVENTSCALE_METRICS_ONLY")]
    metrics_only: bool,
    /// Connections the TLS port keeps open at once. When it is full, a new connection
    /// closes one that is not answering a request (one that never sent a request first,
    /// then the longest idle), or is refused if every one is.
    #[arg(long, env = "EVENTSCALE_MAX_CONNECTIONS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// The HPA controller's tolerance (kube-controller-manager's
    /// `--horizontal-pod-autoscaler-tolerance`), which traces use to show what the HPA
    /// does with the values served; it cannot be read from the cluster.
    #[arg(long, env = "EVENTSCALE_HPA_TOLERANCE", default_value_t = scaler_core::hpa_math::DEFAULT_TOLERANCE, value_parser = tolerance_arg)]
    hpa_tolerance: f64,
    /// Offer only HTTP/1.1 on the TLS port (no HTTP/2 by ALPN).
    #[arg(long, env = "EVENTSCALE_DISABLE_HTTP2")]
    disable_http2: bool,
    /// Let requests without credentials reach authorization as system:anonymous
    /// (false: answer them 401).
    #[arg(long, env = "EVENTSCALE_ANONYMOUS_AUTH", default_value_t = true, action = clap::ArgAction::Set)]
    anonymous_auth: bool,
    /// Port of the plain-HTTP `/metrics` endpoint with eventscale's own metrics; 0 turns
    /// it off.
    #[arg(long, env = "EVENTSCALE_METRICS_PORT", default_value_t = 8080)]
    metrics_port: u16,
    /// Address the `/metrics` endpoint listens on.
    #[arg(
        long,
        env = "EVENTSCALE_METRICS_BIND_ADDRESS",
        default_value = "0.0.0.0"
    )]
    metrics_bind_address: IpAddr,
    /// How often the serving certificate files are checked for a new pair, in seconds.
    #[arg(long, env = "EVENTSCALE_CERT_RELOAD_SECONDS", default_value_t = 10)]
    cert_reload_seconds: u64,
    /// Keep the certificates in --cert-dir valid: make them when missing and renew the
    /// serving certificate before expiry under the same CA, checking hourly.
    #[arg(long, env = "EVENTSCALE_RENEW_CERTS")]
    renew_certs: bool,
    /// With --renew-certs: also keep these APIServices' caBundle set to the CA
    /// (comma-separated names).
    #[arg(long, env = "EVENTSCALE_PATCH_APISERVICE")]
    patch_apiservice: Option<String>,
    /// The replicas' group: each replica keeps a Lease `<this>-<identity>` in the
    /// --namespace, labelled `eventscale.sh/member-of=<this>`, and the group's
    /// ScaledObjects, ScaledJobs and HTTPScaledObjects are shared among them (each polled,
    /// activated and scaled by one).
    #[arg(
        long,
        env = "EVENTSCALE_LEADER_ELECTION_ID",
        default_value = "eventscale-leader"
    )]
    leader_election_id: String,
    /// How long a replica's Lease holds without renewal, in seconds: the others take over
    /// the share of a replica that died within this.
    #[arg(long, env = "EVENTSCALE_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// pollingInterval, in seconds, of ScaledObjects and ScaledJobs that do not set one (KEDA's: 30).
    #[arg(long, env = "EVENTSCALE_DEFAULT_POLLING_INTERVAL", default_value_t = 30,
          value_parser = clap::value_parser!(i32).range(1..=86400))]
    default_polling_interval: i32,
    /// Where ClusterTriggerAuthentications' Secrets and ConfigMaps are read (KEDA's
    /// variable, so a deployment beside KEDA reads them where KEDA does); default: the
    /// --namespace.
    #[arg(long, env = "KEDA_CLUSTER_OBJECT_NAMESPACE")]
    cluster_object_namespace: Option<String>,
    /// This replica's identity in the Lease (default: POD_NAME, else host name and PID).
    #[arg(long, env = "EVENTSCALE_IDENTITY")]
    identity: Option<String>,
    /// Where other replicas reach this one to ask for the cached metrics it polls
    /// (`ip:port`); default: `$POD_IP:<secure-port>`, else `<bind-address>:<secure-port>`
    /// when the bind address is a specific one. Without it, the others query such metrics
    /// themselves.
    #[arg(long, env = "EVENTSCALE_PEER_ADDRESS")]
    peer_address: Option<String>,
    /// The interceptors' external scaler (`host:port`), which the ScaledObjects kept for
    /// HTTPScaledObjects read; HTTPScaledObjects are not reconciled when unset.
    #[arg(long, env = "EVENTSCALE_INTERCEPTOR_SCALER_ADDRESS")]
    interceptor_scaler_address: Option<String>,
    #[command(flatten)]
    cert: CertFlags,
}

/// This replica's name in the Lease.
fn identity(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("POD_NAME").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "eventscale".into());
            format!("{host}-{}", std::process::id())
        })
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// YAML with ScaledObjects, and the TriggerAuthentications, Secrets and ConfigMaps they
    /// use (multi-document files are fine; `-` is standard input). Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// KEY=VALUE lines: the scale target container's environment (for `env` parameters).
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// Output format: text, or json (one object per ScaledObject per line).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// eventscale's namespace, where ClusterTriggerAuthentications' Secrets are looked up.
    #[arg(long, env = "EVENTSCALE_NAMESPACE", default_value = "eventscale")]
    namespace: String,
    /// Print each ScaledObject's scaling trace (as `eventscale explain` prints the
    /// cluster's): the decision rule, cooldown, fallback and the HPA's arithmetic. With
    /// `-o json`, one trace per line.
    #[arg(long)]
    explain: bool,
    /// With --explain: the scale target's current replicas (all taken as ready).
    #[arg(long, default_value_t = 0, requires = "explain", value_parser = clap::value_parser!(i32).range(0..))]
    current_replicas: i32,
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// The object: NAMESPACE/NAME, or NAME with -n.
    target: String,
    /// The namespace (when the target is a bare NAME).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// The kind: scaledobject (so), scaledjob (sj) or httpscaledobject (hso).
    #[arg(short = 'k', long, default_value = "scaledobject")]
    kind: String,
    /// Output format: text or json.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// kubeconfig to use; in-cluster configuration when unset.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

/// The `-f` files and the `--env-file`, read and checked.
fn eval_inputs(a: &EvalArgs) -> anyhow::Result<eval::Inputs> {
    let mut inputs = eval::Inputs::default();
    for f in &a.files {
        inputs.add_file(f)?;
    }
    if let Some(env) = &a.env_file {
        let text =
            std::fs::read_to_string(env).with_context(|| format!("reading {}", env.display()))?;
        inputs.add_env_file(&env.display().to_string(), &text)?;
    }
    anyhow::ensure!(
        !inputs.scaled_objects.is_empty() || !inputs.scaled_jobs.is_empty(),
        "no ScaledObject or ScaledJob in {:?}",
        a.files
    );
    Ok(inputs)
}

/// Append each of `items` to `out` as one line of JSON.
fn json_lines<T: serde::Serialize>(out: &mut String, items: &[T]) -> anyhow::Result<()> {
    for i in items {
        out.push_str(&serde_json::to_string(i).context("serializing")?);
        out.push('\n');
    }
    Ok(())
}

/// `eval --explain`: each ScaledObject's trace; ScaledJobs as `eval` prints them.
async fn explain_offline(
    a: &EvalArgs,
    inputs: &eval::Inputs,
    pools: &std::sync::Arc<scaler_core::pools::Pools>,
) -> anyhow::Result<std::process::ExitCode> {
    let now = chrono::Utc::now();
    let mut traces = Vec::new();
    for so in &inputs.scaled_objects {
        traces.push(eval::explain(inputs, so, &a.namespace, pools, a.current_replicas, now).await);
    }
    let mut job_evals = Vec::new();
    for sj in &inputs.scaled_jobs {
        job_evals.push(eval::evaluate_job(inputs, sj, &a.namespace, pools).await);
    }
    let mut out = String::new();
    match a.output {
        Output::Text => {
            let texts: Vec<String> = traces
                .iter()
                .map(metrics_adapter::trace::render_text)
                .collect();
            out.push_str(&texts.join("\n"));
            out.push_str(&eval::render_jobs_text(&job_evals));
        }
        Output::Json => {
            json_lines(&mut out, &traces)?;
            json_lines(&mut out, &job_evals)?;
        }
    }
    emit(&out)?;
    let failed = traces
        .iter()
        .flat_map(|t| &t.triggers)
        .filter_map(|t| t.error.as_ref())
        .chain(
            job_evals
                .iter()
                .flat_map(|e| &e.triggers)
                .filter_map(|t| t.error.as_ref()),
        )
        .collect::<Vec<_>>();
    Ok(exit_for(&failed))
}

/// `eventscale explain`: GET the trace through the API server (so its authentication,
/// its authorization and the APIService apply) and print it.
async fn explain_command(a: ExplainArgs) -> anyhow::Result<std::process::ExitCode> {
    use metrics_adapter::trace::{render_text, ScalingTrace, TraceKind};
    let Some(kind) = TraceKind::parse(match a.kind.as_str() {
        "so" => "scaledobject",
        "sj" => "scaledjob",
        "hso" => "httpscaledobject",
        k => k,
    }) else {
        eprintln!(
            "error: unknown kind {:?}: scaledobject, scaledjob or httpscaledobject",
            a.kind
        );
        return Ok(std::process::ExitCode::from(2));
    };
    let config = kube_config(a.kubeconfig.as_ref()).await?;
    // A bare NAME is in -n, else the kubeconfig context's namespace, as kubectl takes it.
    let (namespace, name) = match (a.target.split_once('/'), &a.namespace) {
        (Some((ns, name)), _) => (ns.to_string(), name.to_string()),
        (None, Some(ns)) => (ns.clone(), a.target.clone()),
        (None, None) => (config.default_namespace.clone(), a.target.clone()),
    };
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        eprintln!("error: {:?} is not NAMESPACE/NAME", a.target);
        return Ok(std::process::ExitCode::from(2));
    }
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    let request = axum::http::Request::get(kind.path(&namespace, &name))
        .body(Vec::new())
        .context("building the request")?;
    let body = match client.request_text(request).await {
        Ok(body) => body,
        Err(kube::Error::Api(e)) => {
            // As kubectl says it.
            eprintln!("Error from server ({}): {}", e.reason, e.message);
            return Ok(std::process::ExitCode::from(1));
        }
        Err(e) => return Err(e).context(format!("reading the trace of {namespace}/{name}")),
    };
    let trace: ScalingTrace = serde_json::from_str(&body)
        .with_context(|| format!("the trace of {namespace}/{name} is unreadable"))?;
    match a.output {
        Output::Text => emit(&render_text(&trace))?,
        Output::Json => emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&trace).context("serializing")?
        ))?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn eval_command(a: EvalArgs) -> anyhow::Result<std::process::ExitCode> {
    // Input that cannot be used is bad usage (2), as clap's own argument errors are; a
    // trigger that fails is 1.
    let inputs = match eval_inputs(&a) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(std::process::ExitCode::from(2));
        }
    };
    let pools = std::sync::Arc::new(scaler_core::pools::Pools::default());
    if a.explain {
        return explain_offline(&a, &inputs, &pools).await;
    }
    let mut evals = Vec::new();
    for so in &inputs.scaled_objects {
        evals.push(eval::evaluate(&inputs, so, &a.namespace, &pools).await);
    }
    let mut job_evals = Vec::new();
    for sj in &inputs.scaled_jobs {
        job_evals.push(eval::evaluate_job(&inputs, sj, &a.namespace, &pools).await);
    }
    match a.output {
        Output::Text => emit(&format!(
            "{}{}",
            eval::render_text(&evals),
            eval::render_jobs_text(&job_evals)
        ))?,
        Output::Json => {
            let mut out = String::new();
            json_lines(&mut out, &evals)?;
            json_lines(&mut out, &job_evals)?;
            emit(&out)?;
        }
    }
    let composite_errors: Vec<String> = evals
        .iter()
        .filter_map(|e| match &e.composite {
            Some(Err(err)) => Some(format!(
                "ScaledObject {}: composite-metric: {err}",
                e.scaled_object
            )),
            _ => None,
        })
        .collect();
    let failed = evals
        .iter()
        .flat_map(|e| &e.triggers)
        .chain(job_evals.iter().flat_map(|e| &e.triggers))
        .filter_map(|t| t.error.as_ref())
        .chain(&composite_errors)
        .collect::<Vec<_>>();
    Ok(exit_for(&failed))
}

/// `eval`'s exit: each error on standard error, then 1 when there was any, else 0.
fn exit_for(failed: &[&String]) -> std::process::ExitCode {
    for e in failed {
        eprintln!("error: {e}");
    }
    if failed.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

#[derive(clap::Args)]
struct CertsArgs {
    /// Directory to keep ca.crt, ca.key, tls.crt and tls.key in.
    #[arg(long, conflicts_with = "secret", required_unless_present = "secret")]
    dir: Option<PathBuf>,
    /// Secret `namespace/name` to keep them in instead (type kubernetes.io/tls).
    #[arg(long)]
    secret: Option<String>,
    #[command(flatten)]
    cert: CertFlags,
    /// Renew a certificate that expires within this many days, as `90d` or `90` (the same
    /// as --renew-before-days).
    #[arg(long, value_name = "DAYS", value_parser = certs::parse_days, conflicts_with = "renew_before_days")]
    renew_before: Option<i64>,
    /// Also set these APIServices' caBundle to the CA, only when it differs
    /// (comma-separated names; without a value, both of eventscale's:
    /// v1beta1.external.metrics.k8s.io and v1alpha1.explain.eventscale.sh).
    #[arg(long, value_name = "APISERVICES", num_args = 0..=1, default_missing_value = certs::APISERVICES)]
    patch_apiservice: Option<String>,
    /// kubeconfig for --secret and --patch-apiservice; in-cluster configuration when unset.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Replace everything, the CA included.
    #[arg(long)]
    force: bool,
}

/// What the serving certificate is for and how long it lives.
#[derive(clap::Args)]
struct CertFlags {
    /// Service name of the adapter.
    #[arg(
        long,
        env = "EVENTSCALE_SERVICE",
        default_value = "eventscale-metrics-apiserver"
    )]
    service: String,
    /// Namespace of the Service.
    #[arg(long, env = "EVENTSCALE_NAMESPACE", default_value = "eventscale")]
    namespace: String,
    /// CA lifetime in days.
    #[arg(long, default_value_t = 3650)]
    ca_days: i64,
    /// Serving certificate lifetime in days.
    #[arg(long, default_value_t = 365)]
    leaf_days: i64,
    /// Renew a certificate that expires within this many days (the CA stays while valid).
    #[arg(long, default_value_t = 90)]
    renew_before_days: i64,
}

impl CertFlags {
    fn options(&self, force: bool) -> CertOptions {
        CertOptions {
            service: self.service.clone(),
            namespace: self.namespace.clone(),
            ca_days: self.ca_days,
            leaf_days: self.leaf_days,
            renew_before_days: self.renew_before_days,
            force,
        }
    }
}

fn cert_store(dir: Option<PathBuf>, secret: Option<&str>) -> anyhow::Result<certs::Store> {
    match (dir, secret) {
        (Some(dir), _) => Ok(certs::Store::Dir(dir)),
        (None, Some(s)) => {
            let (namespace, name) = s
                .split_once('/')
                .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
                .with_context(|| format!("--secret {s:?}: expected namespace/name"))?;
            Ok(certs::Store::Secret {
                namespace: namespace.into(),
                name: name.into(),
            })
        }
        (None, None) => anyhow::bail!("give --dir or --secret"),
    }
}

async fn certs_command(a: CertsArgs) -> anyhow::Result<()> {
    let store = cert_store(a.dir, a.secret.as_deref())?;
    let needs_client = matches!(store, certs::Store::Secret { .. }) || a.patch_apiservice.is_some();
    let client = if needs_client {
        Some(kube_client(a.kubeconfig.as_ref()).await?)
    } else {
        None
    };
    let outcome = certs::renew_once(
        &store,
        &a.cert.options(a.force),
        client.as_ref(),
        a.patch_apiservice.as_deref(),
    )
    .await?;
    let what = match (outcome.ca_created, outcome.leaf_issued) {
        (true, _) => "made a new CA and serving certificate",
        (false, true) => "issued a new serving certificate under the existing CA",
        (false, false) => "kept the existing certificates",
    };
    println!("{what} in {store:?} ({})", outcome.reason);
    Ok(())
}

fn init_tracing(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid --log-level {filter:?}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

async fn kube_client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    Client::try_from(kube_config(kubeconfig).await?).context("building the Kubernetes client")
}

/// Where this replica is reached by the others (see --peer-address).
fn peer_address(args: &RunArgs) -> Option<String> {
    if let Some(a) = args.peer_address.as_ref().filter(|a| !a.trim().is_empty()) {
        return Some(a.trim().to_string());
    }
    let ip: Option<IpAddr> = std::env::var("POD_IP")
        .ok()
        .and_then(|ip| ip.trim().parse().ok())
        .or_else(|| (!args.bind_address.is_unspecified()).then_some(args.bind_address));
    ip.map(|ip| SocketAddr::new(ip, args.secure_port).to_string())
}

async fn kube_config(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Config> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => Config::infer()
            .await
            .context("no kubeconfig given and no in-cluster configuration")?,
    };
    Ok(config)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(&args.log_level, args.log_format)?;
    let config = kube_config(args.kubeconfig.as_ref()).await?;
    let token = metrics_adapter::forward::Token::of(&config.auth_info);
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    // Wakes the renewal when the reload watch finds the served certificate expired.
    let renew_now = Arc::new(tokio::sync::Notify::new());
    if args.renew_certs {
        let store = certs::Store::Dir(args.cert_dir.clone());
        let opts = args.cert.options(false);
        let client = args.patch_apiservice.as_ref().map(|_| client.clone());
        // The first pass before serving, so a fresh install starts with certificates.
        certs::renew_once(
            &store,
            &opts,
            client.as_ref(),
            args.patch_apiservice.as_deref(),
        )
        .await?;
        tokio::spawn(certs::renew_loop(
            store,
            opts,
            client,
            args.patch_apiservice.clone(),
            std::time::Duration::from_secs(3600),
            renew_now.clone(),
        ));
    }
    let serving = ReloadingCert::load(
        &args.cert_dir.join("tls.crt"),
        &args.cert_dir.join("tls.key"),
    )?;
    if args.renew_certs {
        serving.renew_when_expired(renew_now);
    }
    serving.spawn_watch(std::time::Duration::from_secs(
        args.cert_reload_seconds.max(1),
    ));
    let tls = server::server_config(serving, !args.disable_http2)?;
    metrics_adapter::memory::spawn_trim(std::time::Duration::from_secs(10));

    let telemetry = Telemetry::new();
    if args.metrics_port != 0 {
        let addr = SocketAddr::new(args.metrics_bind_address, args.metrics_port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics port {addr}"))?;
        let t = telemetry.clone();
        tokio::spawn(async move {
            if let Err(e) = t.serve(listener, std::future::pending()).await {
                error!(error = %e, "the /metrics endpoint stopped");
            }
        });
    }
    let auth_config = Arc::new(ConfigHolder::default());
    tokio::spawn(auth::watch_config(client.clone(), auth_config.clone()));
    let auth = Arc::new(Auth::new(
        auth_config,
        Arc::new(KubeReviews::new(client.clone())),
        args.anonymous_auth,
        telemetry.clone(),
    ));

    let (store, writer) = reflector::store::<ScaledObject>();
    let sos: Api<ScaledObject> = Api::all(client.clone());
    let reflect = reflector(
        writer,
        watcher(sos, watcher::Config::default()).modify(scaler_core::scaled_object::slim),
    )
    .default_backoff()
    .applied_objects()
    .for_each(|r| async move {
        if let Err(e) = r {
            warn!(error = %e, "watching ScaledObjects failed; retrying");
        }
    });
    tokio::spawn(reflect);

    let cluster_objects = args
        .cluster_object_namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| args.cert.namespace.clone());
    // Every ScaledObject's scalers, built once and rebuilt when the ScaledObject or what
    // its authentication reads changes (seen by watches, so a steady state asks nothing).
    let versions = scaler_core::watch::ClusterVersions::start(client.clone());
    let new_runtimes = || {
        Arc::new(
            scaler_core::runtime::Runtimes::new(
                Arc::new(scaler_core::resolve::KubeSourceFactory::new(client.clone())),
                versions.clone(),
                Some(client.clone()),
                cluster_objects.clone(),
                telemetry.clone(),
            )
            .with_default_interval(args.default_polling_interval),
        )
    };
    let runtimes = new_runtimes();
    let membership = activator::membership::MembershipConfig {
        namespace: args.cert.namespace.clone(),
        group: args.leader_election_id.clone(),
        identity: identity(args.identity.clone()),
        address: peer_address(&args),
        duration: std::time::Duration::from_secs(args.lease_duration_seconds.clamp(3, 3600)),
    };
    // Every replica serves every read; each polls, activates and scales only its share.
    let shard = activator::membership::spawn(client.clone(), membership.clone());
    let forwarder = metrics_adapter::forward::Forwarder::new(
        &membership.identity,
        &args.cert.service,
        &args.cert.namespace,
        &args.cert_dir,
        token,
    )
    .map(Arc::new);
    // External scalers' pushes are acted on where the scale loop acts (full mode); the
    // sink is connected before anything can build a trigger, so every push trigger built
    // opens its stream.
    let pushes = (!args.metrics_only)
        .then(|| runtimes.pools.external.push.connect())
        .flatten();
    let job_runtimes = new_runtimes();
    let activation = if args.metrics_only {
        info!(
            "metrics-only mode: serving metrics; HPAs and activation are left to another operator"
        );
        None
    } else {
        let ctx = activator::Context::new(
            client.clone(),
            cluster_objects.clone(),
            runtimes.clone(),
            shard.clone(),
        )
        .await
        .context("starting the HPA controller")?;
        let http = args
            .interceptor_scaler_address
            .clone()
            .filter(|a| !a.trim().is_empty())
            .map(|a| activator::http::HttpContext::new(client.clone(), a, shard.clone()));
        if http.is_none() {
            info!("no --interceptor-scaler-address: HTTPScaledObjects are not reconciled");
        }
        // ScaledJobs' scalers: a registry of their own (a ScaledJob may share its name
        // with a ScaledObject), rebuilt on the same watches.
        let jobs = activator::jobs::JobsContext::new(
            client.clone(),
            job_runtimes.clone(),
            env!("CARGO_PKG_VERSION"),
            telemetry.clone(),
            shard.clone(),
        );
        tokio::spawn(controllers(ctx.clone(), http, jobs));
        Some(poller::Activation { ctx })
    };

    tokio::spawn(poller::run(
        store.clone(),
        runtimes.clone(),
        shard.clone(),
        forwarder.clone(),
        activation,
        pushes,
    ));
    let provider = Arc::new(
        ScaledObjectProvider::new(
            store,
            client.clone(),
            runtimes,
            telemetry.clone(),
            shard.clone(),
            forwarder,
        )
        .with_traces(metrics_adapter::provider::TraceConfig::new(
            membership.identity.clone(),
            if args.metrics_only {
                "metricsOnly"
            } else {
                "full"
            },
            (!args.metrics_only).then_some(job_runtimes),
            args.hpa_tolerance,
        )),
    );
    let reads = Arc::new(routes::MetricReads::new(
        provider.clone(),
        auth.clone(),
        telemetry.clone(),
    ));
    let app = routes::app(provider, auth, telemetry.clone());
    let addr = SocketAddr::new(args.bind_address, args.secure_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let shutdown = async move {
        stop_signal().await;
        info!("shutting down");
        // Stop acting, and hand the share over at once rather than after the Lease's
        // duration.
        activator::membership::leave(&client, &membership, &shard).await;
    };
    let serving = server::Serving {
        limits: metrics_adapter::connections::Limits {
            max_connections: args.max_connections as usize,
            ..Default::default()
        },
        telemetry,
    };
    server::serve_with(listener, tls, app, Some(reads), serving, shutdown).await
}

/// SIGINT or SIGTERM (what Kubernetes sends a Pod that is stopping).
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Run the HPA controller, the HTTPScaledObject controller and the ScaledJob executor;
/// each acts only on the objects this replica owns.
async fn controllers(
    ctx: std::sync::Arc<activator::Context>,
    http: Option<std::sync::Arc<activator::http::HttpContext>>,
    jobs: std::sync::Arc<activator::jobs::JobsContext>,
) {
    let http = async move {
        if let Some(h) = http {
            activator::http::run(h).await;
        }
    };
    let hpa = async move {
        if let Err(e) = activator::run(ctx).await {
            error!(error = %e, "the HPA controller stopped");
        }
    };
    tokio::join!(hpa, http, activator::jobs::run(jobs));
}

/// Print `text` on standard output; a reader that stopped reading (`| head`) is not an
/// error.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing to standard output")
        }
        _ => Ok(()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let done = match cli.command {
        Command::Run(args) => run(args).await,
        Command::Certs(mut a) => {
            if let Some(days) = a.renew_before.take() {
                a.cert.renew_before_days = days;
            }
            certs_command(a).await
        }
        Command::Eval(a) => return eval_command(a).await,
        Command::Explain(a) => return explain_command(a).await,
        Command::Interceptor(a) => interceptor_command(a).await,
        Command::Crds => emit(
            &[
                ScaledObject::crd(),
                TriggerAuthentication::crd(),
                ClusterTriggerAuthentication::crd(),
                scaler_core::http_scaled_object::HttpScaledObject::crd(),
                scaler_core::scaled_job::crd(),
            ]
            .iter()
            .map(serde_yaml::to_string)
            .collect::<Result<Vec<_>, _>>()
            .context("serializing the CRDs")?
            .join("---\n"),
        ),
    };
    done.map(|()| std::process::ExitCode::SUCCESS)
}
