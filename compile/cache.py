"""The content-addressed artifact cache: keys, manifests and integrity checks.

``<out>/builds/<model>/<target>/<key>/`` holds an artifact's files and ``manifest.json``. The key hashes
everything that changes the result: the model's name and build arguments, its weights (file hash) or seed, the
input shape and batch, the precision, the target and its compiler versions, the versions of torch, onnx and
onnxsim, and the source code of the zoo and of the target's module. A manifest records those inputs, each
file's SHA-256 and size, the time of each build stage and the target's own facts.

Integrity: a cache hit re-hashes every file and compares it with the manifest, so a truncated, rewritten or
corrupted-in-place artifact is found and rebuilt; a manifest that names a file outside its folder, or whose file
list is malformed, makes the artifact invalid too.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import __version__

__all__ = ["MANIFEST", "SCHEMA", "file_sha256", "source_hash", "cache_key", "read_manifest", "write_manifest",
           "verify_artifact", "describe_files"]

MANIFEST = "manifest.json"
SCHEMA = 1
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@cache
def source_hash(*relative_dirs_or_files: str) -> str:
    """Hash of vcompile's own source files (zoo code, a target's module): a code change is a new key."""
    digest = hashlib.sha256()
    for rel in relative_dirs_or_files:
        path = _PACKAGE_ROOT / rel
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(_PACKAGE_ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cache_key(inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A short hex key of ``inputs`` plus vcompile's and the common toolchain's versions, and those full inputs."""
    full = {**inputs, "vcompile": __version__,
            "toolchain": {d: _version(d) for d in ("torch", "torchvision", "timm", "onnx", "onnxsim")}}
    blob = json.dumps(full, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20], full


def describe_files(folder: Path, files: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Manifest entries for an artifact's files (directories such as .mlpackage are hashed file by file)."""
    described = {}
    for role, name in files.items():
        path = folder / name
        if path.is_dir():
            parts = sorted(p for p in path.rglob("*") if p.is_file())
            digest = hashlib.sha256()
            for part in parts:
                digest.update(str(part.relative_to(path)).encode())
                digest.update(file_sha256(part).encode())
            described[role] = {"name": name, "sha256": digest.hexdigest(), "dir": True,
                               "bytes": sum(p.stat().st_size for p in parts),
                               "mtime_ns": max((p.stat().st_mtime_ns for p in parts), default=0)}
        else:
            stat = path.stat()
            described[role] = {"name": name, "sha256": file_sha256(path), "bytes": stat.st_size,
                               "mtime_ns": stat.st_mtime_ns}
    return described


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("schema") == SCHEMA else None


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    os.replace(tmp, folder / MANIFEST)


def _plain_name(folder: Path, name: Any) -> bool:
    """Whether a manifest's file name names a file inside ``folder``: one path component, no ``..``, not absolute,
    and not a symlink that leads out of the folder."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        return False
    path = folder / name
    return not path.is_symlink() or path.resolve().is_relative_to(folder.resolve())


def verify_artifact(folder: Path, manifest: dict[str, Any], full: bool = True) -> str | None:
    """Why the files in ``folder`` no longer match ``manifest``, or None if they do.

    Every file is re-hashed (``full``, the default): a tensor corrupted in place keeps its size and can keep its
    modification time, and an artifact is only served if it is byte for byte what was built. ``full=False`` trusts
    an unchanged size and modification time (for listing a cache, never for running an artifact). A manifest whose
    file list is malformed, or that names a file outside its folder, makes the artifact invalid (it is rebuilt).
    """
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "the manifest lists no files"
    for role, entry in files.items():
        if not isinstance(entry, dict) or not {"name", "bytes", "sha256"} <= entry.keys():
            return f"the manifest's entry for {role!r} is malformed"
        if not _plain_name(folder, entry["name"]):
            return f"the manifest names {entry['name']!r}, which is not a file inside the artifact's folder"
        path = folder / entry["name"]
        if not path.exists():
            return f"{entry['name']} is missing"
        current = describe_files(folder, {role: entry["name"]})[role] if (full or entry.get("dir")) else None
        if current is None:
            stat = path.stat()
            if stat.st_size == entry["bytes"] and stat.st_mtime_ns == entry.get("mtime_ns"):
                continue
            current = {"sha256": file_sha256(path), "bytes": stat.st_size}
        if current["bytes"] != entry["bytes"]:
            return f"{entry['name']} has {current['bytes']} bytes, the manifest says {entry['bytes']}"
        if current["sha256"] != entry["sha256"]:
            return f"{entry['name']} does not match its SHA-256 in the manifest"
    return None
