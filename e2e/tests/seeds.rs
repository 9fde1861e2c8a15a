//! Every seed example (the YAML users copy from the articles, unchanged) is accepted by the
//! real apiserver against eventscale's generated CRDs, and nothing in it is pruned: what
//! the server would store is what the file says.

use serde_json::Value;

use crate::{kubectl_stdin, Namespace};

/// The kinds eventscale serves or the examples need beside them (HTTPScaledObject belongs
/// to the HTTP add-on, not to eventscale).
const KINDS: [&str; 5] = [
    "ScaledObject",
    "TriggerAuthentication",
    "Secret",
    "Deployment",
    "Service",
];

/// `b` holds everything `a` holds (the server may add defaults, never drop a field).
fn contains(a: &Value, b: &Value, path: &str) -> Result<(), String> {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => a.iter().try_for_each(|(k, v)| {
            let p = format!("{path}.{k}");
            b.get(k)
                .ok_or_else(|| format!("{p} was dropped"))
                .and_then(|w| contains(v, w, &p))
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .try_for_each(|(i, (v, w))| contains(v, w, &format!("{path}[{i}]"))),
        // Quantities and ints-or-strings come back in canonical form.
        (Value::String(x), Value::Number(n)) | (Value::Number(n), Value::String(x))
            if x == &n.to_string() =>
        {
            Ok(())
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{path}: {a} became {b}")),
    }
}

#[test]
fn seed_examples_apply_unchanged_to_the_crds() {
    let dir = crate::repo_root().join("../shared/seed-examples");
    let ns = Namespace::create("e2e-seeds");
    let mut applied = 0;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("shared/seed-examples beside the checkout")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        for doc in text.split("\n---") {
            let value: Value = match serde_yaml::from_str(doc) {
                Ok(v) => v,
                Err(e) => panic!("{}: not YAML: {e}", path.display()),
            };
            let kind = value["kind"].as_str().unwrap_or_default();
            if !KINDS.contains(&kind) {
                continue;
            }
            let json = serde_json::to_string(&value).expect("JSON");
            // A dry run stores nothing, so a document naming its namespace keeps it.
            let namespace = value["metadata"]["namespace"].as_str().unwrap_or(&ns.0);
            let (ok, out, err) = kubectl_stdin(
                &[
                    "-n",
                    namespace,
                    "apply",
                    "--dry-run=server",
                    "-o",
                    "json",
                    "-f",
                    "-",
                ],
                Some(&json),
            );
            assert!(ok, "{} ({kind}) refused: {err}", path.display());
            let stored: Value = serde_json::from_str(&out).expect("kubectl -o json");
            for part in ["spec", "data", "stringData"] {
                if value.get(part).is_none() || kind == "Secret" {
                    continue;
                }
                if let Err(e) = contains(&value[part], &stored[part], part) {
                    panic!("{} ({kind}): {e}", path.display());
                }
            }
            applied += 1;
        }
    }
    assert!(applied >= 8, "only {applied} documents applied");
}
