"""``fpgaserve storage-init``: fetch a service package, verify it, unpack it for the server.

Role: the inference pod's init container (argv from ``fpgaserve.api.serving.storage_init_argv``).
Downloads ``--uri`` into DEST while checking ``--sha256``, verifies the package
(``load_service_definition``: links, traversal, bombs, digests, versions, stage shapes) and unpacks
it into DEST, which ``fpgaserve serve DEST`` then loads. Re-running with the same digest over a
complete DEST is a no-op, so a restarted init container does not download again. No TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from fpgaserve.api.errors import UserError
from fpgaserve.api.serving import PACKAGE_FILENAME, SOURCE_DIR, SOURCE_URI_ENV

if TYPE_CHECKING:
    from fpgaserve.api.manifest import Manifest

__all__ = [
    "MARKER_FILE",
    "TERMINATION_MESSAGE_CHARS",
    "add_parser",
    "storage_init",
    "write_termination_message",
]

logger = logging.getLogger(__name__)

# Written last, naming the digest of the package DEST holds: its presence means DEST is complete.
MARKER_FILE = ".fpgaserve-package-sha256"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "storage-init",
        help="download, verify and unpack a service package (the pod's init container)",
        description="Fetch a service package from file://, pvc://CLAIM/PATH, http(s):// or s3://BUCKET/KEY, "
        "check its sha256 while it streams, verify it (links, path traversal, zip bombs, member "
        "digests, format version, stage shapes) and unpack it into DEST.",
    )
    p.add_argument(
        "--uri",
        help=f"where the package is (default: the environment variable {SOURCE_URI_ENV}, where a "
        "URI that carries a credential, such as a presigned URL, is passed)",
    )
    p.add_argument("--sha256", required=True, metavar="HEX", help="the package's expected sha256")
    p.add_argument("--dest", required=True, type=Path, metavar="DIR", help="directory to unpack into")
    p.add_argument(
        "--credentials-dir",
        type=Path,
        metavar="DIR",
        help="a mounted Secret: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY [, AWS_SESSION_TOKEN, AWS_REGION] "
        "for s3://; token (Bearer) for http(s)://",
    )
    p.add_argument(
        "--endpoint", metavar="URL", help="S3-compatible endpoint, e.g. http://minio:9000 (s3:// only)"
    )
    p.add_argument(
        "--termination-log",
        type=Path,
        metavar="FILE",
        help="on failure, write the error there as one line (Kubernetes' terminationMessagePath, "
        "which the operator reports in the web service's status)",
    )
    p.add_argument(
        "--pvc-root",
        type=Path,
        default=Path(SOURCE_DIR),
        metavar="DIR",
        help="where pvc:// claims are mounted (default: %(default)s)",
    )
    p.set_defaults(func=_run)


def storage_init(
    *,
    uri: str,
    sha256: str,
    dest: Path,
    credentials_dir: Path | None = None,
    endpoint: str | None = None,
    pvc_root: Path = Path(SOURCE_DIR),
) -> dict[str, object]:
    """Fetch, verify and unpack; returns a summary. Raises UserError with a secret-free message."""
    from fpgaserve.package.fetch import FetchError, FetchOptions, fetch, redact
    from fpgaserve.package.reader import PackageError, load_service_definition

    sha256 = sha256.strip().lower()
    if endpoint is not None and not uri.startswith("s3://"):
        raise UserError("--endpoint applies to s3:// URIs only")
    dest.mkdir(parents=True, exist_ok=True)
    marker = dest / MARKER_FILE
    if marker.is_file() and marker.read_text().strip() == sha256:
        try:
            definition = load_service_definition(dest)
        except PackageError as exc:
            raise UserError(
                f"{dest} holds a damaged copy of the package ({exc}); empty it and retry"
            ) from None
        logger.info("%s already holds package %s; nothing to do", dest, sha256)
        return _summary(definition.manifest, sha256=sha256, dest=dest, fetched=False)
    leftovers = [p.name for p in dest.iterdir()]
    if leftovers:
        raise UserError(
            f"{dest} is not empty ({', '.join(sorted(leftovers)[:5])}) and holds no complete package; "
            "give storage-init an empty directory"
        )
    download = dest / f".{PACKAGE_FILENAME}.{secrets.token_hex(4)}.partial"
    options = FetchOptions(credentials_dir=credentials_dir, endpoint=endpoint, pvc_root=pvc_root)
    try:
        fetch(uri, download, sha256=sha256, options=options)
        definition = load_service_definition(download, dest=dest)
    except FetchError as exc:
        raise UserError(str(exc)) from None
    except PackageError as exc:
        raise UserError(f"{redact(uri)}: refused: {exc}") from None
    finally:
        download.unlink(missing_ok=True)
    marker.write_text(sha256 + "\n")
    return _summary(definition.manifest, sha256=sha256, dest=dest, fetched=True)


def _summary(manifest: Manifest, *, sha256: str, dest: Path, fetched: bool) -> dict[str, object]:
    return {
        "name": manifest.name,
        "version": manifest.version,
        "sha256": sha256,
        "dest": str(dest),
        "fetched": fetched,
        "pipeline": [{"name": s.name, "kind": s.kind} for s in manifest.pipeline],
        "deviceMemoryBytes": manifest.device_memory_bytes,
    }


# The kubelet keeps at most 4096 bytes of a termination message; one line is what a status shows.
TERMINATION_MESSAGE_CHARS = 1024


def write_termination_message(path: Path, message: str) -> None:
    """One line (at most TERMINATION_MESSAGE_CHARS) into the termination log; never fails the
    caller (the error is on stderr anyway, and the pod falls back to the log tail)."""
    line = " ".join(message.split())
    if len(line) > TERMINATION_MESSAGE_CHARS:
        line = line[: TERMINATION_MESSAGE_CHARS - 3] + "..."
    try:
        path.write_text(line + "\n", encoding="utf-8")
    except OSError as exc:
        logger.warning("cannot write the termination message to %s: %s", path, exc.strerror or exc)


def _run(args: argparse.Namespace) -> int:
    try:
        uri = args.uri or os.environ.get(SOURCE_URI_ENV, "").strip()
        if not uri:
            raise UserError(f"no package URI: give --uri or set {SOURCE_URI_ENV}")
        summary = storage_init(
            uri=uri,
            sha256=args.sha256,
            dest=args.dest,
            credentials_dir=args.credentials_dir,
            endpoint=args.endpoint,
            pvc_root=args.pvc_root,
        )
    except UserError as exc:  # secret-free by construction (URIs redacted, no credentials)
        if args.termination_log is not None:
            write_termination_message(args.termination_log, str(exc))
        raise
    print(json.dumps(summary))
    return 0
