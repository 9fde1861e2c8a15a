//! A TCP proxy on loopback, between eventscale and a real event source, that can take the
//! source down, make it slow, make it answer garbage or corrupt its answers, on demand:
//! repeatable source faults for the end-to-end tests. Included with `#[path]` by the test
//! binaries.
//!
//! It runs on a thread and runtime of its own, so a test blocked in `kubectl` never stalls
//! the traffic it relays. Every change of fault cuts the connections open at that moment
//! (pooled connections included), so the next query meets the new fault at once.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to the connections it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Relay both ways.
    None,
    /// Reset every connection at once (the source is down).
    Down,
    /// Relay, but hold each chunk of the source's answers this long (past a timeout).
    Slow(Duration),
    /// Answer with bytes that are no protocol at all, then close.
    Garbage,
    /// Relay, but flip bits in what the source answers (each chunk's first 4 bytes kept,
    /// so a length prefix still frames what follows it).
    Corrupt,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// Where eventscale is to connect.
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FaultProxy {
    /// A proxy to `upstream` listening on `listen` (port 0: any free port).
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> Self {
        let (fault, faults) = watch::channel(Fault::None);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            rt.block_on(async move {
                let listener = match TcpListener::bind(listen).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = tx.send(listener.local_addr().map_err(|e| e.to_string()));
                let accept = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        let faults = faults.clone();
                        tokio::spawn(relay(client, upstream, faults));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        let addr = rx
            .recv()
            .expect("the proxy thread answers")
            .unwrap_or_else(|e| panic!("the fault proxy cannot listen on {listen}: {e}"));
        Self {
            addr,
            fault,
            _stop: stop,
        }
    }

    /// From now on, `fault`; the connections open now are cut.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, mut faults: watch::Receiver<Fault>) {
    let fault = *faults.borrow_and_update();
    match fault {
        Fault::Down => {
            // A reset, as from a port nobody listens on any more.
            let _ = client.set_zero_linger();
        }
        Fault::Garbage => {
            let junk: Vec<u8> = (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            let answer = async {
                // Some protocols speak first (MySQL), others ask first: answer either way.
                let mut buf = [0u8; 1024];
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
                let _ = client.write_all(&junk).await;
                let _ = client.shutdown().await;
            };
            tokio::select! {
                _ = answer => {}
                _ = faults.changed() => {}
            }
        }
        Fault::None | Fault::Slow(_) | Fault::Corrupt => {
            let hold = match fault {
                Fault::Slow(d) => d,
                _ => Duration::ZERO,
            };
            let corrupt = fault == Fault::Corrupt;
            let Ok(server) = TcpStream::connect(upstream).await else {
                let _ = client.set_zero_linger();
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let up = async {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
                let _ = sw.shutdown().await;
            };
            let down = async {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if !hold.is_zero() {
                                tokio::time::sleep(hold).await;
                            }
                            if corrupt {
                                for b in buf[..n].iter_mut().skip(4) {
                                    *b ^= 0x5a;
                                }
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = cw.shutdown().await;
            };
            // Ends when both directions end, or at the next change of fault.
            tokio::select! {
                _ = async { tokio::join!(up, down) } => {}
                // Dropping both halves closes both connections.
                _ = faults.changed() => {}
            }
        }
    }
}
