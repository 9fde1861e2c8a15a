#!/usr/bin/env python3
"""Pack static files into an OCI image archive for `ctr images import`, with no registry
and no container engine: one gzip layer, a config, a manifest, and an index naming the
image once per reference. The output is byte-for-byte reproducible (fixed times, owners
and order), so the manifest digest it prints changes only when a file does, and
`e2e/node.sh` re-imports only then.

    oci_image.py --out OUT.tar [--arch amd64] --ref NAME:TAG [--ref NAME:TAG...] \
        --file SRC=/PATH/IN/IMAGE [--file ...] [--user UID:GID] [--env K=V...] \
        [--expose 8080/tcp] -- ENTRYPOINT [ARG...]

Prints the manifest digest (sha256:...) on stdout.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

EPOCH = "1970-01-01T00:00:00Z"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(files):
    """An uncompressed tar of FILES [(src, path_in_image)], parents first, owned by root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        made = set()
        for src, dst in sorted(files, key=lambda f: f[1]):
            parts = dst.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in made:
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    tar.addfile(info)
                    made.add(d)
            st = os.stat(src)
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mtime = st.st_size, 0
            info.mode = 0o755 if st.st_mode & 0o111 else 0o644
            with open(src, "rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--arch", default="amd64")
    p.add_argument("--ref", action="append", required=True)
    p.add_argument("--file", action="append", required=True)
    p.add_argument("--user")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--expose", action="append", default=[])
    p.add_argument("entrypoint", nargs="+")
    a = p.parse_args()

    files = []
    for f in a.file:
        src, sep, dst = f.partition("=")
        if not sep or not dst.startswith("/"):
            p.error(f"--file {f!r}: want SRC=/PATH/IN/IMAGE")
        if not os.path.isfile(src):
            p.error(f"--file {f!r}: {src} is not a file")
        files.append((src, dst))
    for ref in a.ref:
        name, _, tag = ref.rpartition(":")
        if not name or not tag or "/" in tag:
            p.error(f"--ref {ref!r}: want NAME:TAG")

    tar = layer(files)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=9) as g:
        g.write(tar)
    layer_gz = gz.getvalue()

    config = {
        "architecture": a.arch,
        "os": "linux",
        "created": EPOCH,
        "config": {
            "Entrypoint": a.entrypoint,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [digest(tar)]},
        "history": [{"created": EPOCH, "created_by": "e2e/oci_image.py"}],
    }
    if a.user:
        config["config"]["User"] = a.user
    if a.expose:
        config["config"]["ExposedPorts"] = {e: {} for e in a.expose}
    config_b = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(config_b),
            "size": len(config_b),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest(layer_gz),
            "size": len(layer_gz),
        }],
    }
    manifest_b = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST,
            "digest": digest(manifest_b),
            "size": len(manifest_b),
            "platform": {"architecture": a.arch, "os": "linux"},
            "annotations": {
                "io.containerd.image.name": ref,
                "org.opencontainers.image.ref.name": ref.rpartition(":")[2],
            },
        } for ref in a.ref],
    }
    index_b = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()

    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as out:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            out.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index_b)
        for blob in sorted({config_b, layer_gz, manifest_b}, key=digest):
            add("blobs/sha256/" + digest(blob)[7:], blob)
    os.replace(tmp, a.out)
    print(digest(manifest_b))


if __name__ == "__main__":
    sys.exit(main())
