//! KEDA's external scaler protocol, served by the interceptor itself: the ScaledObject that
//! eventscale keeps for each HTTPScaledObject has an `external-push` trigger pointing here.
//!
//! The route is `<namespace>/<httpScaledObject>` (the trigger's metadata), or the
//! ScaledObject's own name when the key is missing (the add-on's v0.8–v0.10). Values are
//! the requests the workload is serving for a concurrency route (held ones make the route
//! active, see `counts`) and requests per second for a request-rate route; the target is
//! the route's. `StreamIsActive` sends activity when the stream opens
//! and again the moment it changes: a request for a quiet route is pushed at once.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use scaler_core::externalscaler as pb;
use scaler_core::externalscaler::external_scaler_server::ExternalScaler;
use scaler_core::http_scaled_object::HTTP_SCALED_OBJECT_KEY;
use tonic::{Request, Response, Status};

use crate::{Route, Shared};

/// How often an open `StreamIsActive` repeats its answer, changed or not: a live stream
/// says so, and a replica that missed a change hears it.
pub const STREAM_REPEAT: Duration = Duration::from_secs(5);

/// The external scaler service.
#[derive(Debug, Clone)]
pub struct Scaler {
    shared: Arc<Shared>,
}

impl Scaler {
    /// The service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn route(&self, r: &pb::ScaledObjectRef) -> Result<Arc<Route>, Status> {
        let name = r
            .scaler_metadata
            .get(HTTP_SCALED_OBJECT_KEY)
            .filter(|n| !n.is_empty())
            .unwrap_or(&r.name);
        let key = format!("{}/{}", r.namespace, name);
        self.shared
            .routes
            .load()
            .by_key
            .get(&key)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no HTTPScaledObject {key} is routed by this interceptor (missing, or invalid: see its status)"
                ))
            })
    }
}

fn metric_value(shared: &Shared, route: &Route, name: String) -> pb::MetricValue {
    let v = shared.value(route);
    pb::MetricValue {
        metric_name: name,
        metric_value: v.ceil() as i64,
        metric_value_float: v,
    }
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for Scaler {
    async fn is_active(
        &self,
        r: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::IsActiveResponse>, Status> {
        let route = self.route(r.get_ref())?;
        Ok(Response::new(pb::IsActiveResponse {
            result: self.shared.active(&route),
        }))
    }

    type StreamIsActiveStream = Streamed<pb::IsActiveResponse>;

    async fn stream_is_active(
        &self,
        r: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let route = self.route(r.get_ref())?;
        let rx = route.counts.active();
        let items = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
            if !first {
                // A closed sender (the route's counts replaced) ends the stream; the client
                // opens it again and finds the new counts.
                if let Ok(Err(_)) = tokio::time::timeout(STREAM_REPEAT, rx.changed()).await {
                    return None;
                }
            }
            let result = *rx.borrow_and_update();
            Some((Ok(pb::IsActiveResponse { result }), (rx, false)))
        })
        .boxed();
        Ok(Response::new(items))
    }

    async fn get_metric_spec(
        &self,
        r: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::GetMetricSpecResponse>, Status> {
        let route = self.route(r.get_ref())?;
        let target = route.spec.metric.target();
        Ok(Response::new(pb::GetMetricSpecResponse {
            metric_specs: vec![pb::MetricSpec {
                metric_name: route.spec.metric_name(),
                target_size: target.ceil() as i64,
                target_size_float: target,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        r: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let req = r.into_inner();
        let reference = req.scaled_object_ref.unwrap_or_default();
        let route = self.route(&reference)?;
        let name = if req.metric_name.is_empty() {
            route.spec.metric_name()
        } else {
            req.metric_name
        };
        Ok(Response::new(pb::GetMetricsResponse {
            metric_values: vec![metric_value(&self.shared, &route, name)],
        }))
    }

    type StreamMetricSpecStream = Streamed<pb::GetMetricSpecResponse>;

    async fn stream_metric_spec(
        &self,
        _: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        // The spec changes only with the HTTPScaledObject, which reconciles the ScaledObject.
        Err(Status::unimplemented("StreamMetricSpec"))
    }
}
