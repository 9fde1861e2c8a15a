"""Helm's own engine (helm-python-sdk, which wraps Helm v4's Go SDK) for the chart tests.

  helm.py lint CHART [VALUES.json] [--kube-version v1.30.0]
      prints the strict lint report as JSON; exit 1 when it has warnings or errors
  helm.py render CHART NAME NAMESPACE [VALUES.json] [--kubeconfig FILE]
      prints the rendered manifests (templates, then the CRDs of crds/) as one YAML stream;
      with --kubeconfig the render is cluster-aware: `lookup` reads live objects and the
      capabilities are the cluster's
  helm.py install CHART NAME NAMESPACE KUBECONFIG [VALUES.json]
      installs (or upgrades) the release and prints its status as JSON
  helm.py uninstall NAME NAMESPACE KUBECONFIG
"""

import json
import sys

import helm_python as helm


def values(path):
    if not path:
        return None
    with open(path) as f:
        return json.load(f)


def opt(args, name):
    if name in args:
        i = args.index(name)
        value = args[i + 1]
        del args[i : i + 2]
        return value
    return None


def main(argv):
    args = list(argv)
    kubeconfig = opt(args, "--kubeconfig")
    kube_version = opt(args, "--kube-version")
    cmd = args[0] if args else ""
    if cmd == "lint":
        report = helm.lint(args[1], values(args[2] if len(args) > 2 else None), strict=True, kube_version=kube_version)
        print(json.dumps(report, indent=1))
        bad = report.get("errors") or [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        return 1 if bad else 0
    if cmd == "render":
        chart = helm.Chart.load(args[1])
        vals = values(args[4] if len(args) > 4 else None)
        if kubeconfig:
            # An install with a server-side dry run: the cluster's capabilities (discovery)
            # and live `lookup`, nothing created.
            with helm.Config(kubeconfig_path=kubeconfig, namespace=args[3]) as cfg:
                rel = cfg.install(chart, args[2], vals, namespace=args[3], dry_run="server")
            docs = [rel["manifest"]]
        else:
            out = chart.render(vals, name=args[2], namespace=args[3], is_install=True)
            docs = [out[k] for k in sorted(out) if k.endswith((".yaml", ".yml")) and out[k].strip()]
        docs += [c["data"] for c in chart.crds]
        print("\n---\n".join(d.strip() for d in docs))
        return 0
    if cmd == "install":
        chart = helm.Chart.load(args[1])
        name, ns, kc = args[2], args[3], args[4]
        vals = values(args[5] if len(args) > 5 else None)
        with helm.Config(kubeconfig_path=kc, namespace=ns) as cfg:
            if any(r.get("name") == name for r in cfg.list(name_filter=f"^{name}$")):
                rel = cfg.upgrade(chart, name, vals, namespace=ns)
            else:
                rel = cfg.install(chart, name, vals, namespace=ns)
        print(json.dumps(rel, default=str))
        return 0
    if cmd == "uninstall":
        with helm.Config(kubeconfig_path=args[3], namespace=args[2]) as cfg:
            cfg.uninstall(args[1])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except helm.HelmError as e:
        print(f"helm: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
