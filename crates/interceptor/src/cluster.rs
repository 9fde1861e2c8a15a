//! What the interceptor reads from the cluster: HTTPScaledObjects (the routes), Services
//! (which port is which) and Endpoints (the ready pods), each by one watch over every
//! namespace. Nothing is read per request.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use scaler_core::http_scaled_object::HttpScaledObject;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::Shared;

fn key<K: Resource>(o: &K) -> (String, String) {
    (o.meta().namespace.clone().unwrap_or_default(), o.name_any())
}

/// Watches HTTPScaledObjects, Services and Endpoints into `shared` until the watches end
/// (they retry with backoff, so: never). `shared.synced` is set once all three listed.
pub async fn run(client: Client, shared: Arc<Shared>) {
    let (listed_tx, mut listed_rx) = watch::channel(0u8);
    let listed = Arc::new(listed_tx);
    let routes = tokio::spawn(watch_routes(
        watcher::watcher(
            Api::<HttpScaledObject>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
        shared.clone(),
        listed.clone(),
    ));
    let services = tokio::spawn(watch_directory(
        watcher::watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
        shared.clone(),
        listed.clone(),
        |s: &Shared, o: &Service| s.directory.apply_service(o),
        |s: &Shared, ns, name| s.directory.delete_service(ns, name),
        true,
    ));
    let endpoints = tokio::spawn(watch_directory(
        watcher::watcher(Api::<Endpoints>::all(client), watcher::Config::default())
            .default_backoff(),
        shared.clone(),
        listed,
        |s: &Shared, o: &Endpoints| s.directory.apply_endpoints(o),
        |s: &Shared, ns, name| s.directory.delete_endpoints(ns, name),
        false,
    ));
    let synced = shared.clone();
    tokio::spawn(async move {
        if listed_rx.wait_for(|n| *n >= 3).await.is_ok() {
            info!("routes, Services and Endpoints listed: ready");
            synced.synced.store(true, Ordering::Release);
        }
    });
    let _ = tokio::join!(routes, services, endpoints);
}

fn mark_listed(listed: &watch::Sender<u8>, done: &mut bool) {
    if !*done {
        *done = true;
        listed.send_modify(|n| *n += 1);
    }
}

async fn watch_routes(
    events: impl Stream<Item = Result<Event<HttpScaledObject>, watcher::Error>>,
    shared: Arc<Shared>,
    listed: Arc<watch::Sender<u8>>,
) {
    let mut objects: HashMap<(String, String), HttpScaledObject> = HashMap::new();
    let mut relist: Option<HashMap<(String, String), HttpScaledObject>> = None;
    let mut done = false;
    let mut events = std::pin::pin!(events);
    loop {
        let event = match events.try_next().await {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(e) => {
                warn!("watching HTTPScaledObjects: {e}");
                continue;
            }
        };
        match event {
            Event::Init => relist = Some(HashMap::new()),
            Event::InitApply(o) => {
                relist.get_or_insert_default().insert(key(&o), o);
                continue;
            }
            Event::InitDone => {
                objects = relist.take().unwrap_or_default();
                mark_listed(&listed, &mut done);
            }
            Event::Apply(o) => {
                objects.insert(key(&o), o);
            }
            Event::Delete(o) => {
                objects.remove(&key(&o));
            }
        }
        let mut routes = Vec::with_capacity(objects.len());
        for o in objects.values() {
            match o.route() {
                Ok(r) => routes.push(r),
                // The controller sets the object's Ready condition; the interceptor skips it.
                Err(e) => warn!("not routed: {e}"),
            }
        }
        info!(routes = routes.len(), "routing table rebuilt");
        shared.set_routes(routes);
    }
}

async fn watch_directory<K>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    shared: Arc<Shared>,
    listed: Arc<watch::Sender<u8>>,
    apply: fn(&Shared, &K),
    delete: fn(&Shared, &str, &str),
    is_service: bool,
) where
    K: Resource + Clone,
{
    let what = if is_service { "Services" } else { "Endpoints" };
    let mut relisted: Option<HashSet<(String, String)>> = None;
    let mut done = false;
    let mut events = std::pin::pin!(events);
    loop {
        let event = match events.next().await {
            Some(Ok(e)) => e,
            None => return,
            Some(Err(e)) => {
                warn!("watching {what}: {e}");
                continue;
            }
        };
        match event {
            Event::Init => relisted = Some(HashSet::new()),
            Event::InitApply(o) => {
                relisted.get_or_insert_default().insert(key(&o));
                apply(&shared, &o);
            }
            Event::InitDone => {
                let seen = relisted.take().unwrap_or_default();
                shared.directory.retain(|ns, name, service| {
                    service != is_service || seen.contains(&(ns.to_string(), name.to_string()))
                });
                mark_listed(&listed, &mut done);
            }
            Event::Apply(o) => apply(&shared, &o),
            Event::Delete(o) => {
                let (ns, name) = key(&o);
                delete(&shared, &ns, &name);
            }
        }
    }
}
