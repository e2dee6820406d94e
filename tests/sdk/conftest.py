"""Fixtures for the SDK test: the running storage-server binary (started by
scripts/sdk-test.sh, which passes its address in SDK_TEST_* variables), the
emulators (STORAGE_TEST_* from scripts/emulators.sh env) and direct readers
and writers of the buckets, so that what the server did is checked without it.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import boto3
import httpx
import redis
import pytest
from label_studio_sdk.client import LabelStudio

# A sync that is not finished by then is a failure, not something to wait for.
SYNC_DEADLINE_S = 60


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: run the SDK test through scripts/sdk-test.sh (it needs the "
            "emulators: scripts/emulators.sh install && scripts/emulators.sh start && "
            'eval "$(scripts/emulators.sh env)")',
            pytrace=False,
        )
    return value


class Recorder:
    """Keeps the last response the SDK received, so a test can check its
    status and validate its JSON strictly (the SDK itself parses leniently)."""

    def __init__(self) -> None:
        self.last: httpx.Response | None = None

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        self.last = response


@pytest.fixture(scope="session")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="session")
def ls(recorder: Recorder) -> LabelStudio:
    # No retries: a failing request must fail the test, not be tried again.
    client = httpx.Client(timeout=30, event_hooks={"response": [recorder]})
    return LabelStudio(base_url=env("SDK_TEST_URL"), api_key=env("SDK_TEST_TOKEN"), httpx_client=client, max_retries=0)


@pytest.fixture()
def unique() -> str:
    """A fresh name part, so reruns against the same emulators never collide."""
    return "sdk-" + uuid.uuid4().hex[:12]


LABEL_CONFIG = (
    '<View><Text name="text" value="$text"/>'
    '<Choices name="label" toName="text"><Choice value="yes"/><Choice value="no"/></Choices></View>'
)


def wait_finished(get, storage_id: int):
    """Polls `get(storage_id)` until the sync left queued/in_progress."""
    deadline = time.monotonic() + SYNC_DEADLINE_S
    while True:
        storage = get(storage_id)
        if storage.status not in ("queued", "in_progress"):
            return storage
        if time.monotonic() > deadline:
            pytest.fail(f"storage {storage_id} still {storage.status} after {SYNC_DEADLINE_S} s: {storage!r}")
        time.sleep(0.1)


class LocalDir:
    """Folders under the server's local-files document root."""

    def __init__(self, root: Path, unique: str):
        self.root = root
        self.unique = unique

    def folder(self, name: str) -> str:
        path = self.root / self.unique / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def put(self, folder: str, name: str, body: bytes) -> None:
        (Path(folder) / name).write_bytes(body)

    def get(self, folder: str, name: str) -> bytes | None:
        path = Path(folder) / name
        return path.read_bytes() if path.exists() else None


class S3Bucket:
    """The moto bucket, read and written with boto3."""

    def __init__(self):
        self.endpoint = env("STORAGE_TEST_MOTO_ENDPOINT")
        self.name = env("STORAGE_TEST_BUCKET")
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="sdk-test-key",
            aws_secret_access_key="sdk-test-secret",
            region_name="us-east-1",
        )

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=body)

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None


class AzureContainer:
    """A container of the HTTPS Azurite (through the plain-HTTP front of
    tests/sdk/doubles.py, as the server reaches it), read and written with
    Shared Key requests (the signing Microsoft documents for the Blob service;
    no Azure package)."""

    # Azurite's well-known development account (public, documented by Microsoft).
    account = "devstoreaccount1"
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    # Created by scripts/emulators.sh when it starts Azurite.
    name = "conformance"

    def __init__(self):
        self.endpoint = env("SDK_TEST_AZURE_ENDPOINT").rstrip("/")

    def _request(self, method: str, key: str, body: bytes = b"") -> urllib.request.Request:
        path = f"/{self.account}/{self.name}/{urllib.parse.quote(key)}"
        headers = {
            "x-ms-date": email.utils.formatdate(usegmt=True),
            "x-ms-version": "2021-08-06",
        }
        if method == "PUT":
            headers["x-ms-blob-type"] = "BlockBlob"
        length = str(len(body)) if body else ""
        # urllib would add a form content type to a body: name one, and sign it.
        content_type = "application/octet-stream" if body else ""
        canonical = "".join(f"{name}:{value}\n" for name, value in sorted(headers.items()))
        to_sign = (
            f"{method}\n\n\n{length}\n\n{content_type}\n\n\n\n\n\n\n{canonical}/{self.account}{path}"
        )
        signature = hmac.new(base64.b64decode(self.key), to_sign.encode(), hashlib.sha256).digest()
        headers["Authorization"] = f"SharedKey {self.account}:{base64.b64encode(signature).decode()}"
        if content_type:
            headers["Content-Type"] = content_type
        return urllib.request.Request(f"{self.endpoint}{path}", data=body or None, method=method, headers=headers)

    def put(self, key: str, body: bytes) -> None:
        with urllib.request.urlopen(self._request("PUT", key, body), timeout=10) as response:
            assert response.status == 201, response.read()

    def get(self, key: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self._request("GET", key), timeout=10) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise


class GcsBucket:
    """The fake-gcs bucket, through the GCS JSON API directly (not the shim)."""

    def __init__(self):
        self.endpoint = env("STORAGE_TEST_GCS_ENDPOINT").rstrip("/")
        self.name = env("STORAGE_TEST_BUCKET")

    def put(self, key: str, body: bytes) -> None:
        query = urllib.parse.urlencode({"uploadType": "media", "name": key})
        request = urllib.request.Request(
            f"{self.endpoint}/upload/storage/v1/b/{self.name}/o?{query}",
            data=body,
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, response.read()

    def get(self, key: str) -> bytes | None:
        url = f"{self.endpoint}/storage/v1/b/{self.name}/o/{urllib.parse.quote(key, safe='')}?alt=media"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise


class RedisDb:
    """A database of the test Redis (scripts/redis.sh), through redis-py."""

    def __init__(self, db: int):
        url = urllib.parse.urlsplit(env("STORAGE_TEST_REDIS_URL"))
        self.host, self.port, self.password, self.db = url.hostname, url.port, url.password, db
        self.client = redis.Redis(host=self.host, port=self.port, password=self.password, db=db, socket_timeout=10)

    def put(self, key: str, body: bytes) -> None:
        assert self.client.set(key, body)

    def get(self, key: str) -> bytes | None:
        return self.client.get(key)


class DatabricksVolume:
    """A Unity Catalog volume of the Databricks Files API double (doubles.py),
    read and written through that API with its personal access token."""

    catalog, schema, volume = "sdk", "default", "files"

    def __init__(self):
        self.host = env("SDK_TEST_DATABRICKS").rstrip("/")
        self.token = env("SDK_TEST_DATABRICKS_TOKEN")

    def _request(self, method: str, key: str, body: bytes | None = None) -> urllib.request.Request:
        path = urllib.parse.quote(f"/Volumes/{self.catalog}/{self.schema}/{self.volume}/{key}")
        return urllib.request.Request(
            f"{self.host}/api/2.0/fs/files{path}?overwrite=true",
            data=body,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/octet-stream"},
        )

    def put(self, key: str, body: bytes) -> None:
        with urllib.request.urlopen(self._request("PUT", key, body), timeout=10) as response:
            assert response.status == 204, response.read()

    def get(self, key: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self._request("GET", key), timeout=10) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise


def gcs_credentials() -> str:
    """A service-account key JSON whose `gcs_base_url` sends the server to the
    write shim in front of fake-gcs (see doubles.py). The key is the throw-away
    test key of crates/storage-testing."""
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "sdk-test-project",
            "private_key_id": "sdk-test-key",
            "private_key": Path(env("SDK_TEST_GCS_KEY_PEM")).read_text(),
            "client_email": "sdk-test@sdk-test-project.iam.gserviceaccount.com",
            "gcs_base_url": env("SDK_TEST_GCS_SHIM"),
            "disable_oauth": True,
        }
    )
