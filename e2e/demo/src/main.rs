//! eventscale-demo: the application that the local cluster's pods run, packed (alone, as a
//! static binary) into the image `localhost/eventscale/demo:v1` by `e2e/node.sh`.
//!
//! - `eventscale-demo` (or `serve`): HTTP/1.1 on `0.0.0.0:$PORT` (default 8080).
//!   `GET /` answers 200 `hello from <pod name>` after a delay of `$DELAY_MS` milliseconds,
//!   or of the query's `?delay_ms=N` (so that a test can make requests pile up);
//!   `GET /healthz` answers 200 `ok`, or 503 after `POST /healthz/fail` until
//!   `POST /healthz/pass` (a test makes one pod of a Deployment not Ready through its
//!   readiness probe). On SIGTERM it stops accepting, finishes the requests in flight and
//!   exits 0.
//! - `eventscale-demo job SECONDS`: sleeps that long and exits 0 (for Jobs).
//! - `eventscale-demo cat FILE...`: prints files, for `kubectl exec` (the image has no
//!   shell; tests read the pod's routes and resolver through it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// The longest delay a request may ask for: a test's, not a denial of service.
const MAX_DELAY_MS: u64 = 600_000;
/// How long a SIGTERM waits for the requests in flight.
const DRAIN: Duration = Duration::from_secs(25);

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    Serve,
    Job(Duration),
    Cat(Vec<String>),
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    match args.first().map(String::as_str) {
        None | Some("serve") if args.len() <= 1 => Ok(Command::Serve),
        Some("job") if args.len() == 2 => {
            let secs: f64 = args[1]
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| format!("job: {:?} is not a number of seconds", args[1]))?;
            Ok(Command::Job(Duration::from_secs_f64(secs)))
        }
        Some("cat") if args.len() >= 2 => Ok(Command::Cat(args[1..].to_vec())),
        _ => Err(format!(
            "usage: eventscale-demo [serve] | job SECONDS | cat FILE...  (got {args:?})"
        )),
    }
}

/// A delay in milliseconds, as `$DELAY_MS` or `?delay_ms=` give it.
fn parse_delay(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(ms) if ms <= MAX_DELAY_MS => Ok(Duration::from_millis(ms)),
        Ok(_) => Err(format!("delay_ms {text} is above {MAX_DELAY_MS}")),
        Err(_) => Err(format!(
            "delay_ms {text:?} is not a whole number of milliseconds"
        )),
    }
}

/// The request's `delay_ms`, if its query has one.
fn query_delay(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("delay_ms="))
}

struct State {
    name: String,
    default_delay: Duration,
    healthy: AtomicBool,
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let response = match (req.uri().path(), req.method()) {
        ("/", _) if read => {
            let delay = match query_delay(req.uri().query()) {
                Some(q) => parse_delay(q),
                None => Ok(state.default_delay),
            };
            match delay {
                Ok(d) => {
                    if !d.is_zero() {
                        tokio::time::sleep(d).await;
                    }
                    text(StatusCode::OK, format!("hello from {}\n", state.name))
                }
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
        ("/healthz", _) if read => {
            if state.healthy.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ok\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "failing on purpose (POST /healthz/pass to restore)\n".into(),
                )
            }
        }
        ("/healthz/fail", &Method::POST) => {
            state.healthy.store(false, Ordering::Relaxed);
            text(StatusCode::OK, "/healthz now fails\n".into())
        }
        ("/healthz/pass", &Method::POST) => {
            state.healthy.store(true, Ordering::Relaxed);
            text(StatusCode::OK, "/healthz now passes\n".into())
        }
        ("/" | "/healthz" | "/healthz/fail" | "/healthz/pass", _) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed here\n", req.method()),
        ),
        (path, _) => text(StatusCode::NOT_FOUND, format!("{path}: not found\n")),
    };
    Ok(response)
}

/// The pod's name: `$POD_NAME` when set, else the host name (a pod's is its name).
fn pod_name() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

async fn serve() -> Result<(), String> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| format!("PORT {p:?} is not a port number"))?,
        Err(_) => 8080,
    };
    let default_delay = match std::env::var("DELAY_MS") {
        Ok(d) => parse_delay(&d).map_err(|e| format!("DELAY_MS: {e}"))?,
        Err(_) => Duration::ZERO,
    };
    let state = Arc::new(State {
        name: pod_name(),
        default_delay,
        healthy: AtomicBool::new(true),
    });
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("binding {addr}: {e}"))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    eprintln!("eventscale-demo: serving on {addr} as {}", state.name);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: wait a little rather than spin.
                        eprintln!("eventscale-demo: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let state = state.clone();
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| handle(req, state.clone())),
                    );
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    drop(listener);
    eprintln!("eventscale-demo: stopping; finishing the requests in flight");
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("eventscale-demo: requests still in flight after {DRAIN:?}; exiting");
    }
    Ok(())
}

async fn job(duration: Duration) -> Result<(), String> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    eprintln!("eventscale-demo: job running for {duration:?}");
    tokio::select! {
        _ = tokio::time::sleep(duration) => {
            eprintln!("eventscale-demo: job done");
            Ok(())
        }
        // As PID 1 of its container the default action of SIGTERM would be ignored.
        _ = term.recv() => Err("job stopped by SIGTERM before its end".into()),
    }
}

fn cat(files: &[String]) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| format!("{f}: {e}"))?;
        out.write_all(&bytes).map_err(|e| format!("stdout: {e}"))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("eventscale-demo: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Cat(files) => cat(&files),
        command => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))
            .and_then(|rt| {
                rt.block_on(async {
                    match command {
                        Command::Job(d) => job(d).await,
                        _ => serve().await,
                    }
                })
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eventscale-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_lines() {
        assert_eq!(parse_args(&args(&[])), Ok(Command::Serve));
        assert_eq!(parse_args(&args(&["serve"])), Ok(Command::Serve));
        assert_eq!(
            parse_args(&args(&["job", "2"])),
            Ok(Command::Job(Duration::from_secs(2)))
        );
        assert_eq!(
            parse_args(&args(&["job", "0.5"])),
            Ok(Command::Job(Duration::from_millis(500)))
        );
        assert_eq!(
            parse_args(&args(&["cat", "/a", "/b"])),
            Ok(Command::Cat(args(&["/a", "/b"])))
        );
        for bad in [
            &["job"][..],
            &["job", "-1"],
            &["job", "soon"],
            &["job", "NaN"],
            &["job", "1", "2"],
            &["cat"],
            &["serve", "x"],
            &["jobs", "1"],
        ] {
            let e = parse_args(&args(bad)).expect_err("refused");
            assert!(!e.is_empty(), "{bad:?}");
        }
        assert!(parse_args(&args(&["job", "soon"]))
            .unwrap_err()
            .contains("\"soon\" is not a number of seconds"));
    }

    #[test]
    fn delays() {
        assert_eq!(parse_delay("0"), Ok(Duration::ZERO));
        assert_eq!(parse_delay("250"), Ok(Duration::from_millis(250)));
        assert!(parse_delay("600001").unwrap_err().contains("above 600000"));
        assert!(parse_delay("1.5").unwrap_err().contains("whole number"));
        assert!(parse_delay("-3").unwrap_err().contains("whole number"));
        assert_eq!(query_delay(Some("a=1&delay_ms=40")), Some("40"));
        assert_eq!(query_delay(Some("delay_ms=7")), Some("7"));
        assert_eq!(query_delay(Some("xdelay_ms=7")), None);
        assert_eq!(query_delay(None), None);
    }
}
