"""The argv builders of the serving contract spell the command lines its comment documents."""

from __future__ import annotations

from fpgaserve.api import serving


def test_storage_init_argv() -> None:
    assert serving.storage_init_argv(uri="https://h/p.zip", sha256="ab") == [
        "storage-init", "--uri", "https://h/p.zip", "--sha256", "ab", "--dest", serving.MODEL_DIR,
    ]  # fmt: skip
    argv = serving.storage_init_argv(
        uri="s3://b/k",
        sha256="ab",
        dest="/d",
        credentials_dir=serving.CREDENTIALS_DIR,
        endpoint="http://minio:9000",
    )
    assert argv[-4:] == ["--credentials-dir", serving.CREDENTIALS_DIR, "--endpoint", "http://minio:9000"]
    assert argv[argv.index("--dest") + 1] == "/d"


def test_serve_argv_minimal() -> None:
    assert serving.serve_argv(port=serving.HTTP_PORT) == [
        "serve", serving.MODEL_DIR, "--host", "0.0.0.0", "--port", str(serving.HTTP_PORT),
    ]  # fmt: skip


def test_serve_argv_everything() -> None:
    argv = serving.serve_argv(
        port=serving.HTTPS_PORT,
        tls=True,
        keys=True,
        max_batch_size=8,
        max_batch_delay_ms=2.5,
        max_queue=100,
        max_body_bytes=16 * 1024 * 1024,
        request_timeout_s=30,
    )
    assert argv[argv.index("--tls-cert") + 1] == serving.TLS_CERT_FILE
    assert argv[argv.index("--tls-key") + 1] == serving.TLS_KEY_FILE
    assert argv[argv.index("--keys-file") + 1] == serving.KEYS_FILE
    # Numbers keep every digit and drop a useless ".0".
    assert argv[argv.index("--max-body-bytes") + 1] == "16777216"
    assert argv[argv.index("--max-batch-delay-ms") + 1] == "2.5"
    assert argv[argv.index("--request-timeout-s") + 1] == "30"
