//! ScaledJobs on the real cluster: a queue in the real MariaDB, Jobs of the demo image that
//! really run on the node and complete, KEDA's count of Jobs per poll, the history limits,
//! garbage collection of a deleted ScaledJob's Jobs, and bad input reported on the
//! ScaledJob without a Job created.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sources::{mariadb, mysql_queue as queue};
use crate::{apply, eventually, kubectl, kubectl_json, Namespace, DEMO_IMAGE};

/// The Jobs of ScaledJob `name`, by its label.
fn jobs(ns: &str, name: &str) -> Vec<Value> {
    let selector = format!("scaledjob.keda.sh/name={name}");
    kubectl_json(&["-n", ns, "get", "jobs", "-l", &selector, "-o", "json"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn finished(job: &Value) -> Option<&str> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["status"] == "True" && (c["type"] == "Complete" || c["type"] == "Failed"))?
        ["type"]
        .as_str()
}

fn names(jobs: &[Value]) -> BTreeSet<String> {
    jobs.iter()
        .filter_map(|j| j["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

fn condition(ns: &str, name: &str, type_: &str) -> (String, String, String) {
    crate::condition_of(ns, "scaledjob", name, type_)
}

fn event_notes(ns: &str, name: &str, reason: &str) -> Vec<String> {
    let all = kubectl_json(&["-n", ns, "get", "events.events.k8s.io", "-o", "json"]);
    all["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == name && e["reason"] == reason)
        .filter_map(|e| e["note"].as_str().map(str::to_string))
        .collect()
}

/// A ScaledJob over table `table` of the test database: one Job per row (queryValue 1),
/// each Job the demo image sleeping `seconds`. The password reaches the trigger through
/// `passwordFromEnv`, from the Job template's container.
fn scaled_job(
    env: &BTreeMap<String, String>,
    name: &str,
    table: &str,
    seconds: u32,
    extra: &str,
) -> String {
    format!(
        r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {{name: {name}}}
spec:
  pollingInterval: 1
  maxReplicaCount: 4
  successfulJobsHistoryLimit: 3
{extra}
  jobTargetRef:
    backoffLimit: 0
    template:
      spec:
        restartPolicy: Never
        containers:
        - name: worker
          image: {DEMO_IMAGE}
          imagePullPolicy: Never
          args: [job, "{seconds}"]
          env: [{{name: DB_PASSWORD, value: "{password}"}}]
  triggers:
  - type: mysql
    metadata: {{{fields}, passwordFromEnv: DB_PASSWORD, query: "SELECT COUNT(*) FROM {table}", queryValue: "1"}}
"#,
        password = env["EVENTSCALE_MYSQL_PASSWORD"],
        fields = crate::sources::mysql_fields(env),
    )
}

/// Six rows, at most 4 Jobs at once, each Job taking 10 s: 4 Jobs, never more while they
/// run; the test takes 4 rows (the work those Jobs did), and once they complete the next
/// poll creates the 2 the queue still asks for; then the queue is empty and nothing more
/// is created. Every Job ran the demo image to completion on the node; 3 completed Jobs
/// are kept (the history limit); deleting the ScaledJob takes its Jobs with it.
#[tokio::test]
async fn a_queue_is_drained_by_jobs_that_run_to_completion() {
    let _node = crate::NODE_LOAD.read().await;
    let env = crate::sources::sources_env(&["mysql"]);
    let table = format!("sj_drain_{}", std::process::id());
    queue(&env, &table, 6);
    let ns = Namespace::create("e2e-sj-drain");
    apply(&ns.0, &scaled_job(&env, "drain", &table, 10, ""));
    let mut seen = BTreeSet::new();
    let mut most_unfinished = 0;
    let watch = |seen: &mut BTreeSet<String>, most: &mut usize| {
        let js = jobs(&ns.0, "drain");
        seen.extend(names(&js));
        let unfinished = js.iter().filter(|j| finished(j).is_none()).count();
        *most = (*most).max(unfinished);
        js
    };
    eventually(Duration::from_secs(60), "4 Jobs created", || {
        let n = watch(&mut seen, &mut most_unfinished).len();
        async move { (n >= 4).then_some(()) }
    })
    .await;
    // While the 4 run, polls every second create nothing more.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        watch(&mut seen, &mut most_unfinished);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    let (ready, reason, _) = condition(&ns.0, "drain", "Ready");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("True", "ScaledJobReady")
    );
    assert_eq!(condition(&ns.0, "drain", "Active").0, "True");
    mariadb(&env, &format!("DELETE FROM {table} LIMIT 4;"));
    eventually(
        Duration::from_secs(90),
        "2 more Jobs after the first 4 complete",
        || {
            watch(&mut seen, &mut most_unfinished);
            let n = seen.len();
            async move { (n >= 6).then_some(()) }
        },
    )
    .await;
    mariadb(&env, &format!("DELETE FROM {table};"));
    eventually(Duration::from_secs(90), "every Job complete", || {
        let js = watch(&mut seen, &mut most_unfinished);
        let done = js.iter().all(|j| finished(j) == Some("Complete"));
        async move { done.then_some(()) }
    })
    .await;
    // Nothing more is created for an empty queue, and the history keeps 3.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let js = eventually(Duration::from_secs(30), "3 completed Jobs kept", || {
        let js = watch(&mut seen, &mut most_unfinished);
        async move { (js.len() == 3).then_some(js) }
    })
    .await;
    assert_eq!(seen.len(), 6, "Jobs created: {seen:?}");
    assert!(most_unfinished <= 4, "{most_unfinished} Jobs ran at once");
    for j in &js {
        assert_eq!(j["status"]["succeeded"], 1, "{j}");
        assert_eq!(
            j["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "keda-operator"
        );
        let owner = &j["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["controller"].as_bool()),
            (Some("ScaledJob"), Some(true))
        );
        assert!(j["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("drain-")));
    }
    assert_eq!(condition(&ns.0, "drain", "Active").0, "False");
    let created: usize = event_notes(&ns.0, "drain", "KEDAJobsCreated").len();
    assert!(created >= 1, "no KEDAJobsCreated Event");

    // Deleted with Jobs running: its Jobs and their pods go with it.
    queue(&env, &table, 2);
    eventually(Duration::from_secs(60), "2 running Jobs", || {
        let running = jobs(&ns.0, "drain")
            .iter()
            .filter(|j| finished(j).is_none())
            .count();
        async move { (running >= 2).then_some(()) }
    })
    .await;
    let (ok, _, err) = kubectl(&["-n", &ns.0, "delete", "scaledjob", "drain", "--wait=false"]);
    assert!(ok, "{err}");
    eventually(Duration::from_secs(90), "no Job and no pod left", || {
        let left = jobs(&ns.0, "drain").len();
        let pods = kubectl_json(&[
            "-n",
            &ns.0,
            "get",
            "pods",
            "-l",
            "scaledjob.keda.sh/name=drain",
            "-o",
            "json",
        ]);
        let pods = pods["items"].as_array().map_or(0, Vec::len);
        async move { (left == 0 && pods == 0).then_some(()) }
    })
    .await;
    mariadb(&env, &format!("DROP TABLE {table};"));
}

/// An invalid JobSpec, a trigger naming a TriggerAuthentication that does not exist, a
/// trigger whose queryValue is not a number and a trigger with a metricType: each ScaledJob says why on its Ready condition and in an
/// Event, no Job is created, and a valid ScaledJob beside them works.
#[tokio::test]
async fn bad_scaled_jobs_are_reported_and_create_nothing() {
    let _node = crate::NODE_LOAD.read().await;
    let env = crate::sources::sources_env(&["mysql"]);
    let table = format!("sj_bad_{}", std::process::id());
    queue(&env, &table, 1);
    let ns = Namespace::create("e2e-sj-bad");
    let good = scaled_job(&env, "good", &table, 1, "");
    let invalid = scaled_job(&env, "invalid-spec", &table, 1, "")
        .replace("restartPolicy: Never", "restartPolicy: Always");
    let no_auth = scaled_job(&env, "no-auth", &table, 1, "").replace(
        "queryValue: \"1\"}",
        "queryValue: \"1\"}\n    authenticationRef: {name: missing}",
    );
    let metric_type = scaled_job(&env, "metric-type", &table, 1, "")
        .replace("  - type: mysql", "  - type: mysql\n    metricType: Value");
    let broken = scaled_job(&env, "broken-trigger", &table, 1, "")
        .replace("queryValue: \"1\"", "queryValue: \"one\"");
    apply(
        &ns.0,
        &[good, invalid, no_auth, metric_type, broken].join("\n---\n"),
    );
    for (name, status, reason, says) in [
        (
            "invalid-spec",
            "False",
            "ScaledJobCheckFailed",
            "restartPolicy",
        ),
        (
            "metric-type",
            "False",
            "ScaledJobCheckFailed",
            "Cannot set metricType in ScaledJob triggers",
        ),
        (
            "no-auth",
            "False",
            "TriggerError",
            "Triggers defined in ScaledJob are not working correctly",
        ),
        (
            "broken-trigger",
            "False",
            "TriggerError",
            "Triggers defined in ScaledJob are not working correctly",
        ),
    ] {
        eventually(
            Duration::from_secs(60),
            &format!("{name}: Ready {status} {reason}"),
            || {
                let (s, r, m) = condition(&ns.0, name, "Ready");
                let ok = s == status && r == reason && m.contains(says);
                async move { ok.then_some(()) }
            },
        )
        .await;
    }
    let notes = event_notes(&ns.0, "invalid-spec", "ScaledJobCheckFailed");
    assert!(
        notes.iter().any(|n| n.contains("spec.jobTargetRef")),
        "{notes:?}"
    );
    eventually(
        Duration::from_secs(30),
        "a KEDAScalerFailed Event naming the TriggerAuthentication",
        || {
            let notes = event_notes(&ns.0, "no-auth", "KEDAScalerFailed");
            let ok = notes.iter().any(|n| n.contains("missing"));
            async move { ok.then_some(()) }
        },
    )
    .await;
    eventually(Duration::from_secs(60), "the valid ScaledJob's Job", || {
        let n = jobs(&ns.0, "good").len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "a KEDAScalerFailed Event naming queryValue",
        || {
            let notes = event_notes(&ns.0, "broken-trigger", "KEDAScalerFailed");
            let ok = notes.iter().any(|n| n.contains("queryValue"));
            async move { ok.then_some(()) }
        },
    )
    .await;
    for name in ["invalid-spec", "no-auth", "metric-type", "broken-trigger"] {
        assert!(jobs(&ns.0, name).is_empty(), "{name} created a Job");
    }
    mariadb(&env, &format!("DROP TABLE {table};"));
}

/// KEDA's documented difference between the strategies, with Jobs that outlive the test
/// (600 s) and a poll every 5 s. 2 messages: the first poll creates 2 Jobs (`custom`, with
/// a deduction of 1: 1), whose work the test then takes (the queue shows 0). 2 more
/// messages: `default` counts the running Jobs against the queue and creates nothing;
/// `eager` and `accurate` take the queue as work not yet started and create 2 more;
/// `custom` deducts 1 and half the running Jobs and creates 1. Each then holds (no poll
/// creates more), and none goes past `maxReplicaCount` 4.
#[tokio::test]
async fn strategies_create_what_kedas_formulas_say() {
    let _node = crate::NODE_LOAD.read().await;
    let env = crate::sources::sources_env(&["mysql"]);
    let ns = Namespace::create("e2e-sj-strategies");
    let cases = [
        ("default", "", 2, 2),
        ("eager", "  scalingStrategy: {strategy: eager}", 2, 4),
        ("accurate", "  scalingStrategy: {strategy: accurate}", 2, 4),
        (
            "custom",
            "  scalingStrategy: {strategy: custom, customScalingQueueLengthDeduction: 1, customScalingRunningJobPercentage: \"0.5\"}",
            1,
            2,
        ),
    ];
    let table = |name: &str| format!("sj_{name}_{}", std::process::id());
    let mut docs = Vec::new();
    for (name, extra, _, _) in &cases {
        queue(&env, &table(name), 2);
        docs.push(
            scaled_job(&env, name, &table(name), 600, extra)
                .replace("pollingInterval: 1", "pollingInterval: 5"),
        );
    }
    apply(&ns.0, &docs.join("\n---\n"));
    let running = |name: &str| {
        jobs(&ns.0, name)
            .iter()
            .filter(|j| finished(j).is_none())
            .count()
    };
    // The first poll's Jobs take the messages: the queues are emptied as soon as those
    // Jobs exist, well before the next poll.
    eventually(Duration::from_secs(60), "the first poll's Jobs", || {
        let ok = cases
            .iter()
            .all(|(name, _, first, _)| running(name) >= *first);
        async move { ok.then_some(()) }
    })
    .await;
    for (name, _, _, _) in &cases {
        mariadb(&env, &format!("DELETE FROM {};", table(name)));
    }
    eventually(Duration::from_secs(90), "every Job's pod running", || {
        let pods = kubectl_json(&["-n", &ns.0, "get", "pods", "-o", "json"]);
        let all = pods["items"].as_array().cloned().unwrap_or_default();
        let ok = all.len() >= 7 && all.iter().all(|p| p["status"]["phase"] == "Running");
        async move { ok.then_some(()) }
    })
    .await;
    for (name, _, first, _) in &cases {
        assert_eq!(running(name), *first, "{name} after the first 2 messages");
        queue(&env, &table(name), 2);
    }
    for (name, _, _, total) in &cases {
        eventually(
            Duration::from_secs(60),
            &format!("{name}: {total} Jobs"),
            || {
                let n = running(name);
                async move { (n >= *total).then_some(()) }
            },
        )
        .await;
    }
    // And no more than that over the next polls.
    tokio::time::sleep(Duration::from_secs(11)).await;
    for (name, _, _, total) in &cases {
        assert_eq!(running(name), *total, "{name} after 2 more messages");
        mariadb(&env, &format!("DROP TABLE {};", table(name)));
    }
}

/// Pending Jobs are counted: `eager` with pods the node cannot run (a CPU request no node
/// has) creates the 2 Jobs a queue of 2 asks for and no more, though under `eager` a Job
/// whose pod ran would leave room for 2 more. Pausing stops the polls and resuming starts
/// them again. A new generation deletes the earlier generation's Jobs (`immediate`) or
/// leaves them running (`gradual`).
#[tokio::test]
async fn pending_pause_and_rollout() {
    let _node = crate::NODE_LOAD.read().await;
    let env = crate::sources::sources_env(&["mysql"]);
    let ns = Namespace::create("e2e-sj-lifecycle");
    let table = |name: &str| format!("sj_{}_{}", name.replace('-', "_"), std::process::id());
    let unschedulable = scaled_job(
        &env,
        "pending",
        &table("pending"),
        600,
        "  scalingStrategy: {strategy: eager}",
    )
    .replace(
        "          env:",
        "          resources: {requests: {cpu: \"1000\"}}\n          env:",
    );
    let mut docs = vec![unschedulable];
    for name in ["paused", "immediate", "gradual"] {
        let extra = match name {
            "gradual" => "  rollout: {strategy: gradual}",
            _ => "",
        };
        docs.push(scaled_job(&env, name, &table(name), 600, extra));
    }
    for name in ["pending", "paused"] {
        queue(&env, &table(name), 2);
    }
    for name in ["immediate", "gradual"] {
        queue(&env, &table(name), 1);
    }
    apply(&ns.0, &docs.join("\n---\n"));
    let unfinished = |name: &str| {
        jobs(&ns.0, name)
            .into_iter()
            .filter(|j| finished(j).is_none())
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(60),
        "every ScaledJob's first Jobs",
        || {
            let ok = unfinished("pending").len() >= 2
                && unfinished("paused").len() >= 2
                && unfinished("immediate").len() == 1
                && unfinished("gradual").len() == 1;
            async move { ok.then_some(()) }
        },
    )
    .await;

    // Pending: their pods stay Pending and polls create nothing more.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(unfinished("pending").len(), 2);
    let pods = kubectl_json(&[
        "-n",
        &ns.0,
        "get",
        "pods",
        "-l",
        "scaledjob.keda.sh/name=pending",
        "-o",
        "json",
    ]);
    let phases: Vec<&str> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["status"]["phase"].as_str())
        .collect();
    assert_eq!(phases, ["Pending", "Pending"], "{pods}");

    // Paused: 6 rows would give 2 more Jobs, but nothing is created until it resumes.
    let (ok, _, err) = kubectl(&[
        "-n",
        &ns.0,
        "annotate",
        "scaledjob",
        "paused",
        "autoscaling.keda.sh/paused=true",
    ]);
    assert!(ok, "{err}");
    eventually(Duration::from_secs(30), "Paused True", || {
        let (s, r, _) = condition(&ns.0, "paused", "Paused");
        let ok = s == "True" && r == "ScaledJobPaused";
        async move { ok.then_some(()) }
    })
    .await;
    queue(&env, &table("paused"), 6);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        unfinished("paused").len(),
        2,
        "a paused ScaledJob created Jobs"
    );
    let (ok, _, err) = kubectl(&[
        "-n",
        &ns.0,
        "annotate",
        "scaledjob",
        "paused",
        "autoscaling.keda.sh/paused-",
    ]);
    assert!(ok, "{err}");
    eventually(Duration::from_secs(30), "4 Jobs once resumed", || {
        let n = unfinished("paused").len();
        async move { (n == 4).then_some(()) }
    })
    .await;
    let (s, r, _) = condition(&ns.0, "paused", "Paused");
    assert_eq!((s.as_str(), r.as_str()), ("False", "ScaledJobUnpaused"));

    // A new generation: `immediate` deletes the running Job of generation 1 and creates
    // one of generation 2; `gradual` leaves it running (and counting).
    let before: BTreeMap<&str, BTreeSet<String>> = ["immediate", "gradual"]
        .into_iter()
        .map(|n| (n, names(&unfinished(n))))
        .collect();
    for name in ["immediate", "gradual"] {
        let (ok, _, err) = kubectl(&[
            "-n",
            &ns.0,
            "patch",
            "scaledjob",
            name,
            "--type=merge",
            "-p",
            r#"{"spec":{"jobTargetRef":{"activeDeadlineSeconds":900}}}"#,
        ]);
        assert!(ok, "{err}");
    }
    eventually(
        Duration::from_secs(60),
        "immediate: the old Job gone, a new one running",
        || {
            let now = unfinished("immediate");
            let gone = names(&now).is_disjoint(&before["immediate"]);
            let new = now.len() == 1
                && now[0]["metadata"]["annotations"]["scaledjob.keda.sh/generation"] == "2";
            async move { (gone && new).then_some(()) }
        },
    )
    .await;
    let notes = event_notes(&ns.0, "immediate", "ScaledJobRolloutCleanupStarted");
    assert!(
        notes.iter().any(|n| n.contains("Deleting 1 jobs")),
        "{notes:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        names(&unfinished("gradual")),
        before["gradual"],
        "gradual: the old Job runs on, nothing more"
    );
    for name in ["pending", "paused", "immediate", "gradual"] {
        mariadb(&env, &format!("DROP TABLE {};", table(name)));
    }
}
