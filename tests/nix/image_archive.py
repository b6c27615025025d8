#!/usr/bin/env python3
"""Write a docker-archive laid out as `dockerTools.buildLayeredImage` writes it, from a fake store.

The tests of nix/check-image.sh need archives shaped exactly like the real ones, and nixpkgs cannot
be evaluated here. This reproduces, independently, the layout of nixpkgs'
pkgs/build-support/docker/stream_layered_image.py (which streamLayeredImage runs) and of the `gz`
compressor buildLayeredImage pipes it through (`pigz -nTR`):

  outer tar (Python tarfile, PAX format), gzip-wrapped with no name and mtime 0:
    <sha256 of layer tar>/layer.tar   one per store layer, then the customisation layer
    <sha256 of config>.json           image config: created, architecture, os, config, rootfs, history
                                      (one "store paths: [...]" comment per layer; the customisation
                                      layer's is /nix/store/<hash>-<image name>-customisation-layer)
    manifest.json                     [{"Config": ..., "RepoTags": [...], "Layers": [...]}]
  each store layer tar:
    /nix/ and /nix/store/             directories, mode 0755, first
    /nix/store/<path>[/...]           ABSOLUTE names: the store path, then everything below it in
                                      sorted order (a symlink store path alone); modes as on disk,
                                      hard links stored as regular files; mtime/uid/gid/uname/gname
                                      from the configuration (defaults 1, 0, 0, root, root)
  customisation layer tar:            GNU tar of the `contents`/`extraCommands` directory (`.` first,
                                      relative names, numeric owner 0, mtime SOURCE_DATE_EPOCH); for
                                      an image without contents it holds the single entry `./`

The leading `/` of the layer member names is what the original images-contract listing missed
(`tar -tf` keeps it when listing), so the tests depend on it being reproduced here.

Usage:
  image_archive.py --root R --layer /nix/store/A [--layer /nix/store/B,/nix/store/C ...] --config CONFIG.json
                   [--contents DIR] [--repo-tag NAME:TAG] OUT.tar.gz

R stands in for `/`: the store path /nix/store/A is read from R/nix/store/A. CONFIG.json is the
`config` attribute of the image (Entrypoint, User, ExposedPorts, Env, Labels). --contents is a
directory whose files go into the customisation layer (default: none, as in nix/images.nix).
--uncompressed writes the bare tar, as streamLayeredImage streams it.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile

# streamLayeredImage's defaults: created "1970-01-01T00:00:01Z" (normalised with `date -Iseconds`),
# also used as the mtime of every file; files owned by 0:0 root:root.
CREATED = "1970-01-01T00:00:01+00:00"
MTIME = 1
OWNER = {"uid": 0, "gid": 0, "uname": "root", "gname": "root"}
# nixpkgs' stdenv sets SOURCE_DATE_EPOCH to 1980-01-01; the customisation layer's tar uses it.
SOURCE_DATE_EPOCH = 315532800


def fake_store_hash(name):
    """A stand-in store hash: 32 characters of Nix's base-32 alphabet (no e, o, t, u), fixed per
    name; the same rule as fake_hash in tests/nix/check.sh."""
    return hashlib.sha256(name.encode()).hexdigest()[:32].replace("e", "g")


def with_owner(info):
    info.mtime = MTIME
    for key, value in OWNER.items():
        setattr(info, key, value)
    return info


def store_layer_tar(root, store_paths):
    """The tar of one store layer: /nix, /nix/store, then each path and its contents."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("/nix", "/nix/store"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(with_owner(info))
        for store_path in store_paths:
            on_disk = pathlib.Path(root, store_path.lstrip("/"))
            if on_disk.is_symlink():
                files = [on_disk]
            else:
                files = [on_disk, *on_disk.rglob("*")]
            for path in sorted(files):
                # Named as inside the image, absolute: /nix/store/...
                arcname = "/" + str(path.relative_to(root))
                info = tar.gettarinfo(str(path), arcname=arcname.lstrip("/"))
                info.name = arcname
                if info.islnk():
                    info.type = tarfile.REGTYPE
                    info.linkname = ""
                    info.size = path.stat().st_size
                with_owner(info)
                if info.isfile():
                    with open(path, "rb") as content:
                        tar.addfile(info, content)
                else:
                    tar.addfile(info)
    return buffer.getvalue()


def customisation_layer_tar(contents):
    """GNU tar of the customisation directory, as streamLayeredImage makes it under fakeroot."""
    with tempfile.TemporaryDirectory() as scratch:
        stage = pathlib.Path(scratch, "layer")
        stage.mkdir(mode=0o755)
        stage.chmod(0o755)
        if contents:
            subprocess.run(["cp", "-a", f"{contents}/.", str(stage)], check=True)
        out = pathlib.Path(scratch, "layer.tar")
        subprocess.run(
            ["tar", "--sort=name", "--numeric-owner", "--owner=0", "--group=0",
             f"--mtime=@{SOURCE_DATE_EPOCH}", "--hard-dereference",
             "-C", str(stage), "-cf", str(out), "."],
            check=True,
        )
        return out.read_bytes()


def add_member(tar, name, data, mode=None):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = MTIME
    if mode is not None:
        info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def build(args):
    config = json.loads(pathlib.Path(args.config).read_text())
    layers = []  # (member name, store paths, checksum)

    outer = io.BytesIO()
    with tarfile.open(fileobj=outer, mode="w") as tar:
        # With maxLayers 100 and a closure of a few paths, each store path gets a layer of its
        # own; `--layer A,B` puts several in one, as the last layer of a bigger closure holds.
        for store_paths in args.layer:
            data = store_layer_tar(args.root, store_paths)
            checksum = hashlib.sha256(data).hexdigest()
            add_member(tar, f"{checksum}/layer.tar", data)
            layers.append((f"{checksum}/layer.tar", store_paths, checksum))

        # The customisation layer is a store path holding layer.tar (read-only, like every store
        # file): its outer entry keeps the file's mode and owner, only name and mtime are set.
        data = customisation_layer_tar(args.contents)
        checksum = hashlib.sha256(data).hexdigest()
        with tempfile.TemporaryDirectory() as scratch:
            custom = pathlib.Path(scratch, "layer.tar")
            custom.write_bytes(data)
            custom.chmod(0o444)
            info = tar.gettarinfo(str(custom))
            info.name = f"{checksum}/layer.tar"
            info.mtime = MTIME
            with open(custom, "rb") as content:
                tar.addfile(info, content)
        layers.append((f"{checksum}/layer.tar", [args.customisation_path], checksum))

        image = {
            "created": CREATED,
            "architecture": args.architecture,
            "os": "linux",
            "config": config,
            "rootfs": {
                "diff_ids": [f"sha256:{checksum}" for _, _, checksum in layers],
                "type": "layers",
            },
            "history": [
                {"created": CREATED, "comment": f"store paths: {paths}"}
                for _, paths, _ in layers
            ],
        }
        image_json = json.dumps(image, indent=4).encode()
        image_name = hashlib.sha256(image_json).hexdigest() + ".json"
        add_member(tar, image_name, image_json)

        manifest = [{
            "Config": image_name,
            "RepoTags": [args.repo_tag],
            "Layers": [name for name, _, _ in layers],
        }]
        add_member(tar, "manifest.json", json.dumps(manifest, indent=4).encode())

    with open(args.out, "wb") as out:
        if args.uncompressed:
            out.write(outer.getvalue())
        else:
            # pigz -n -T: no file name, no modification time in the gzip header.
            with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as compressed:
                compressed.write(outer.getvalue())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="directory standing in for /")
    parser.add_argument("--layer", action="append", default=[], type=lambda v: v.split(","),
                        help="store path(s) of one layer, comma-separated (store names have no commas)")
    parser.add_argument("--config", required=True, help="JSON file: the image's `config`")
    parser.add_argument("--contents", help="directory copied into the customisation layer")
    parser.add_argument("--repo-tag", default="image:00000000000000000000000000000000",
                        help="NAME:TAG; dockerTools tags with the store hash (32 characters) by default")
    parser.add_argument("--architecture", default="amd64")
    parser.add_argument("--customisation-path",
                        help="store path of the customisation layer (only named in the history); "
                             "default /nix/store/<hash>-<image name>-customisation-layer, as "
                             "streamLayeredImage names it (`${baseNameOf name}-customisation-layer`), "
                             "the image name read from --repo-tag")
    parser.add_argument("--uncompressed", action="store_true")
    parser.add_argument("out")
    args = parser.parse_args()
    if args.customisation_path is None:
        image_name = args.repo_tag.rsplit(":", 1)[0].rsplit("/", 1)[-1]
        layer_name = f"{image_name}-customisation-layer"
        args.customisation_path = f"/nix/store/{fake_store_hash(layer_name)}-{layer_name}"
    for store_path in (path for layer in args.layer for path in layer):
        if not store_path.startswith("/nix/store/"):
            sys.exit(f"not a store path: {store_path}")
        if not os.path.lexists(os.path.join(args.root, store_path.lstrip("/"))):
            sys.exit(f"{store_path} is not under {args.root}")
    build(args)


if __name__ == "__main__":
    main()
