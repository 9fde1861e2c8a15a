//! The ScaledJob figures (`cargo bench -p metrics-adapter --bench eventscale -- jobs`), on
//! the local cluster's eventscale with real Jobs of the demo image on the node and a queue
//! in the real MariaDB:
//!
//! - decision to Job created: from a poll's decision to its Job's create answered, as
//!   eventscale's own histogram measures it, against the same Job created by this bench
//!   straight through the API (the baseline, same run), as a ratio;
//! - writes: the apiserver's writes per ScaledJob per minute when nothing changes (idle
//!   ScaledJobs and active ones whose Jobs are running), target 0.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

use crate::cluster_support::{
    apply, client, eventscale_metric, eventually, kubectl, Namespace, DEMO_IMAGE,
};
use crate::report::{Report, Row};
use crate::sources::{mariadb, mysql_queue as queue, sources_env};

const FIGURE: &str = "jobs";

fn scaled_job(
    env: &BTreeMap<String, String>,
    name: &str,
    table: &str,
    interval: u32,
    max: u32,
    seconds: u32,
) -> String {
    format!(
        r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {{name: {name}}}
spec:
  pollingInterval: {interval}
  maxReplicaCount: {max}
  successfulJobsHistoryLimit: 2
  jobTargetRef:
    template:
      spec:
        restartPolicy: Never
        containers:
        - {{name: w, image: {DEMO_IMAGE}, imagePullPolicy: Never, args: [job, "{seconds}"], env: [{{name: P, value: "{password}"}}]}}
  triggers:
  - type: mysql
    metadata: {{{fields}, passwordFromEnv: P, query: "SELECT COUNT(*) FROM {table}", queryValue: "1"}}
"#,
        password = env["EVENTSCALE_MYSQL_PASSWORD"],
        fields = crate::sources::mysql_fields(env),
    )
}

fn job_count(ns: &str, name: &str) -> usize {
    let (_, out, _) = kubectl(&[
        "-n",
        ns,
        "get",
        "jobs",
        "-l",
        &format!("scaledjob.keda.sh/name={name}"),
        "-o",
        "name",
    ]);
    out.lines().count()
}

/// Every ScaledJob figure.
pub async fn run(report: &mut Report, quick: bool) -> anyhow::Result<()> {
    let env = sources_env(&["mysql"]);
    let guard = Namespace::create("bench-jobs");
    let ns = guard.0.clone();
    latency(report, &env, &ns, quick).await?;
    writes(report, &env, &ns, quick).await?;
    Ok(())
}

async fn latency(
    report: &mut Report,
    env: &BTreeMap<String, String>,
    ns: &str,
    quick: bool,
) -> anyhow::Result<()> {
    // Baseline: the bench creates the same kind of Job through the API, one at a time.
    let api: Api<Job> = Api::namespaced(client().await, ns);
    let rounds = if quick { 5 } else { 15 };
    let mut baseline = Vec::new();
    for i in 0..rounds {
        let job: Job = serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": format!("baseline-{i}"), "labels": {"bench": "baseline"}},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "w", "image": DEMO_IMAGE, "imagePullPolicy": "Never", "args": ["job", "1"]}]}}}
        }))?;
        let started = Instant::now();
        api.create(&PostParams::default(), &job).await?;
        baseline.push(started.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let base = baseline.iter().sum::<f64>() / baseline.len() as f64;

    // eventscale: one row, at most one Job at a time, each done in a second; every poll
    // that finds the last one complete creates the next.
    let table = format!("bench_jobs_latency_{}", std::process::id());
    queue(env, &table, 1);
    let (count0, sum0) = (
        eventscale_metric("eventscale_scaledjob_decision_to_created_seconds_count"),
        eventscale_metric("eventscale_scaledjob_decision_to_created_seconds_sum"),
    );
    apply(ns, &scaled_job(env, "latency", &table, 1, 1, 1));
    let want = count0 + rounds as f64;
    eventually(Duration::from_secs(300), "the ScaledJob's Jobs", || {
        let n = eventscale_metric("eventscale_scaledjob_decision_to_created_seconds_count");
        async move { (n >= want).then_some(()) }
    })
    .await;
    let count =
        eventscale_metric("eventscale_scaledjob_decision_to_created_seconds_count") - count0;
    let sum = eventscale_metric("eventscale_scaledjob_decision_to_created_seconds_sum") - sum0;
    let mean = sum / count.max(1.0);
    mariadb(env, &format!("DROP TABLE {table};"));
    let (ok, _, err) = kubectl(&["-n", ns, "delete", "scaledjob", "latency"]);
    anyhow::ensure!(ok, "deleting the ScaledJob: {err}");
    report.push(Row::new(
        FIGURE,
        "decision to Job created, one Job per poll",
        vec![
            ("eventscale ms", mean * 1e3),
            ("bench's own create ms", base * 1e3),
            ("ratio", mean / base.max(1e-9)),
            ("polls", count),
        ],
        "eventscale_scaledjob_decision_to_created_seconds (mean over the polls) against the bench's own Job POSTs in the same run".into(),
    ));
    Ok(())
}

async fn writes(
    report: &mut Report,
    env: &BTreeMap<String, String>,
    ns: &str,
    quick: bool,
) -> anyhow::Result<()> {
    let n = 10;
    let mut docs = Vec::new();
    for i in 0..n {
        let table = format!("bench_jobs_w{i}_{}", std::process::id());
        // Half idle (empty queues), half active with their one Job running (600 s).
        queue(env, &table, usize::from(i % 2 == 1));
        docs.push(scaled_job(env, &format!("w-{i}"), &table, 2, 5, 600));
    }
    apply(ns, &docs.join("\n---\n"));
    eventually(
        Duration::from_secs(120),
        "every ScaledJob Ready, the active ones with their Job",
        || {
            let (_, out, _) = kubectl(&["-n", ns, "get", "scaledjobs", "-o", "json"]);
            let list: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
            let ready = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|sj| {
                    sj["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .count();
            let jobs = (0..n)
                .filter(|i| i % 2 == 1)
                .all(|i| job_count(ns, &format!("w-{i}")) == 1);
            async move { (ready == n && jobs).then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let window = Duration::from_secs(if quick { 30 } else { 60 });
    let c = client().await;
    let before = crate::cluster::apiserver_writes()?;
    let events_before = crate::cluster::eventscale_events(&c, ns).await?;
    tokio::time::sleep(window).await;
    let after = crate::cluster::apiserver_writes()?;
    let events_after = crate::cluster::eventscale_events(&c, ns).await?;
    let delta = |resource: &str, sub: &str| {
        let k = (resource.to_string(), sub.to_string());
        after.get(&k).copied().unwrap_or(0.0) - before.get(&k).copied().unwrap_or(0.0)
    };
    let minutes = window.as_secs_f64() / 60.0;
    let per = |v: f64| v / n as f64 / minutes;
    let status = delta("scaledjobs", "status");
    let spec = delta("scaledjobs", "");
    let jobs = delta("jobs", "");
    let events = events_after - events_before;
    report.push(Row::new(
        FIGURE,
        &format!("{n} ScaledJobs at steady state (5 idle, 5 with their Job running), polled every 2 s"),
        vec![
            ("status/SJ/min", per(status)),
            ("SJ spec/SJ/min", per(spec)),
            ("Job writes/SJ/min", per(jobs)),
            ("events/SJ/min", per(events)),
        ],
        format!("apiserver_request_total over {:.0} s (Job writes: every component's, the Job controller's status updates included)", window.as_secs_f64()),
    ));
    let ours = status + spec + events;
    report.check(
        FIGURE,
        "eventscale's writes per ScaledJob per minute when nothing changes",
        format!("{:.3}", per(ours + jobs)),
        "0",
        ours + jobs == 0.0,
    );
    for i in 0..n {
        mariadb(
            env,
            &format!("DROP TABLE bench_jobs_w{i}_{};", std::process::id()),
        );
    }
    Ok(())
}
