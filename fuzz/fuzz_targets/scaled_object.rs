//! ScaledObject documents, JSON (what the API server sends the controller) or YAML (what
//! `eventscale eval` reads): any document is refused or becomes a ScaledObject, never a
//! panic. An accepted one serialises back to JSON that reads as the same object, and goes
//! the controller's way: its triggers are built into scalers (without a cluster, external
//! scalers left out since building one dials it), the spec, pause annotations and
//! scalingModifiers are validated, and the desired HPA, when there is one, is named as the
//! ScaledObject says and carries one metric per trigger (or the one composite metric).
#![no_main]

use std::sync::OnceLock;

use eventscale_fuzz::document;
use libfuzzer_sys::fuzz_target;
use scaler_core::activation::pause_of;
use scaler_core::hpa::{desired_hpa, hpa_name};
use scaler_core::pools::Pools;
use scaler_core::runtime::{build_triggers, BuildInputs};
use scaler_core::trigger_auth::NoSources;
use scaler_core::validation::validate_spec;
use scaler_core::{modifiers, ScaledObject};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("a runtime for the fuzz target: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(mut so) = document::<ScaledObject>(data) else {
        return;
    };

    let written = serde_json::to_string(&so).unwrap_or_else(|e| panic!("serialising: {e}"));
    match serde_json::from_str::<ScaledObject>(&written) {
        Ok(again) => {
            assert_eq!(again.metadata, so.metadata, "{written}");
            assert_eq!(again.spec, so.spec, "{written}");
            assert_eq!(again.status, so.status, "{written}");
        }
        Err(e) => panic!("{written} does not read back: {e}"),
    }

    // As the API server hands it over: in a namespace, with a uid.
    so.metadata.namespace.get_or_insert_with(|| "fuzz".into());
    so.metadata.uid.get_or_insert_with(|| "fuzz-uid".into());

    let _ = validate_spec(&so);
    let _ = pause_of(&so.metadata.annotations.clone().unwrap_or_default());
    let modifiers = modifiers::of_scaled_object(&so);

    let mut buildable = so.clone();
    buildable
        .spec
        .triggers
        .retain(|t| !t.type_.starts_with("external"));
    let pools = Pools::default();
    let inputs = BuildInputs {
        sources: &NoSources,
        client: None,
        operator_namespace: "keda",
        pools: &pools,
    };
    let built = runtime().block_on(build_triggers(&buildable, &inputs));
    assert_eq!(built.len(), buildable.spec.triggers.len());
    let specs: Vec<_> = built
        .iter()
        .filter_map(|b| b.scaler.as_ref().ok())
        .map(|s| s.metric_spec().clone())
        .collect();
    if specs.len() < built.len() {
        return;
    }
    if let Ok(hpa) = desired_hpa(&buildable, &specs) {
        assert_eq!(
            hpa.metadata.name.as_deref(),
            Some(hpa_name(&buildable).as_str())
        );
        let metrics = hpa
            .spec
            .as_ref()
            .and_then(|s| s.metrics.as_ref())
            .map_or(0, Vec::len);
        let expected = match modifiers {
            Some(_) => 1,
            None => specs.len(),
        };
        assert_eq!(metrics, expected, "{written}");
        serde_json::to_string(&hpa).unwrap_or_else(|e| panic!("serialising the HPA: {e}"));
    }
});
