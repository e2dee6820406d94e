"""The legacy client (`from label_studio_sdk import Client` of SDK 1.0 and
earlier, shipped as `label_studio_sdk._legacy` in the pinned 2.1.2) against
the storage-server binary, through a whole session per storage type it
knows and this server has: connect, create a project, connect an import and
an export storage, sync, read the tasks (paging until Label Studio's 404),
annotate, see the annotation land in the export location, update and delete
it, delete the storages.

Scripts written against Label Studio with this client must run unchanged:
where it and the server disagree the server is fixed, not this test.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import LABEL_CONFIG, SYNC_DEADLINE_S, AzureContainer, GcsBucket, LocalDir, S3Bucket, env, gcs_credentials
from label_studio_sdk._extensions.label_studio_tools.core.label_config import parse_config
from label_studio_sdk._legacy.client import Client
from label_studio_sdk._legacy.project import Project

TASKS = [{"text": "first task"}, {"text": "second task"}, {"text": "third task"}]
RESULT = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["yes"]}}]


@pytest.fixture()
def client() -> Client:
    return Client(url=env("SDK_TEST_URL"), api_key=env("SDK_TEST_TOKEN"))


def wait_synced(project: Project, path: str) -> dict[str, Any]:
    """Polls the storage at `path` until its sync left queued/in_progress."""
    deadline = time.monotonic() + SYNC_DEADLINE_S
    while True:
        storage = project.make_request("GET", path).json()
        if storage["status"] not in ("queued", "in_progress"):
            return storage
        if time.monotonic() > deadline:
            pytest.fail(f"{path} still {storage['status']} after {SYNC_DEADLINE_S} s: {storage}")
        time.sleep(0.1)


def test_connecting_reads_versions_and_health(client: Client) -> None:
    # The constructor already called /api/version (it fails without it).
    assert client.versions["release"] == "1.23.2"
    assert client.is_enterprise is False
    assert client.check_connection() == {"status": "UP", "database": "UP"}


def test_projects_are_created_found_and_listed(client: Client, unique: str) -> None:
    project = client.start_project(title=unique, label_config=LABEL_CONFIG)
    assert project.id > 0 and project.title == unique
    # The server parses the config as Label Studio 1.23.2 does (the SDK's
    # parse_config); the legacy client's own older parse agrees but for the
    # `valueType` of inputs, which it leaves out.
    assert project.params["parsed_label_config"] == parse_config(LABEL_CONFIG)
    local = project.parsed_label_config
    for control in local.values():
        for inputs in control["inputs"]:
            inputs.setdefault("valueType", None)
    assert project.params["parsed_label_config"] == local
    same = client.get_project(project.id)
    assert (same.id, same.title, same.label_config) == (project.id, unique, LABEL_CONFIG)
    assert project.id in [p.id for p in client.list_projects()]
    # No tasks yet: paging ends at once.
    assert project.get_tasks() == []


def local_setup(project: Project, unique: str) -> tuple[dict, dict, Callable[[str], bytes | None]]:
    files = LocalDir(Path(env("SDK_TEST_DOCUMENT_ROOT")), unique)
    source, target = files.folder("import"), files.folder("export")
    files.put(source, "tasks.json", json.dumps(TASKS).encode())
    imported = project.connect_local_import_storage(source, regex_filter=r".*\.json", use_blob_urls=False, title="legacy import")
    # The legacy client has no local export call: its own request function.
    exported = project.make_request(
        "POST",
        "/api/storages/export/localfiles",
        json={"project": project.id, "path": target, "title": "legacy export", "can_delete_objects": True},
    ).json()
    return imported, exported, lambda key: files.get(target, key)


def s3_setup(project: Project, unique: str) -> tuple[dict, dict, Callable[[str], bytes | None]]:
    bucket = S3Bucket()
    bucket.put(f"{unique}/import/tasks.json", json.dumps(TASKS).encode())
    connection = {
        "aws_access_key_id": "sdk-test-key",
        "aws_secret_access_key": "sdk-test-secret",
        "region_name": "us-east-1",
        "s3_endpoint": bucket.endpoint,
    }
    imported = project.connect_s3_import_storage(
        bucket.name, prefix=f"{unique}/import", regex_filter=r".*\.json", use_blob_urls=False, title="legacy import", **connection
    )
    exported = project.connect_s3_export_storage(
        bucket.name, prefix=f"{unique}/export", title="legacy export", can_delete_objects=True, **connection
    )
    return imported, exported, lambda key: bucket.get(f"{unique}/export/{key}")


def gcs_setup(project: Project, unique: str) -> tuple[dict, dict, Callable[[str], bytes | None]]:
    bucket = GcsBucket()
    bucket.put(f"{unique}/import/tasks.json", json.dumps(TASKS).encode())
    credentials = gcs_credentials()
    imported = project.connect_google_import_storage(
        bucket.name,
        prefix=f"{unique}/import",
        regex_filter=r".*\.json",
        use_blob_urls=False,
        google_application_credentials=credentials,
        title="legacy import",
    )
    exported = project.connect_google_export_storage(
        bucket.name,
        prefix=f"{unique}/export",
        google_application_credentials=credentials,
        title="legacy export",
        can_delete_objects=True,
    )
    return imported, exported, lambda key: bucket.get(f"{unique}/export/{key}")


def azure_setup(project: Project, unique: str) -> tuple[dict, dict, Callable[[str], bytes | None]]:
    container = AzureContainer()
    container.put(f"{unique}/import/tasks.json", json.dumps(TASKS).encode())
    secrets = {"account_name": container.account, "account_key": container.key}
    imported = project.connect_azure_import_storage(
        container.name, prefix=f"{unique}/import", regex_filter=r".*\.json", use_blob_urls=False, title="legacy import", **secrets
    )
    exported = project.connect_azure_export_storage(
        container.name, prefix=f"{unique}/export", title="legacy export", can_delete_objects=True, **secrets
    )
    return imported, exported, lambda key: container.get(f"{unique}/export/{key}")


SETUPS = {"localfiles": local_setup, "s3": s3_setup, "gcs": gcs_setup, "azure": azure_setup}


@pytest.mark.parametrize("storage_type", sorted(SETUPS))
def test_a_whole_session(client: Client, unique: str, storage_type: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The client checks a local folder is below the root it is told about.
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", env("SDK_TEST_DOCUMENT_ROOT"))
    project = client.start_project(title=unique, label_config=LABEL_CONFIG)
    imported, exported, read_export = SETUPS[storage_type](project, unique)
    assert imported["type"] == storage_type and imported["status"] == "initialized", imported
    assert exported["type"] == storage_type, exported
    for secret in ("aws_secret_access_key", "google_application_credentials", "account_key", "account_name"):
        assert secret not in imported and secret not in exported
    import_path = f"/api/storages/{storage_type}/{imported['id']}"
    export_path = f"/api/storages/export/{storage_type}/{exported['id']}"
    assert [s["id"] for s in project.get_import_storages()] == [imported["id"]]
    assert [s["id"] for s in project.get_export_storages()] == [exported["id"]]

    queued = project.sync_import_storage(storage_type, imported["id"])
    assert queued["status"] in ("queued", "in_progress", "completed"), queued
    synced = wait_synced(project, import_path)
    assert synced["status"] == "completed", synced["traceback"]
    assert synced["last_sync_count"] == len(TASKS)

    # get_tasks pages (100 a page) until the server answers 404.
    tasks = project.get_tasks()
    assert sorted(t["data"]["text"] for t in tasks) == sorted(t["text"] for t in TASKS)
    assert len(project.get_paginated_tasks(page=1, page_size=2)["tasks"]) == 2
    assert project.get_paginated_tasks(page=3, page_size=2) == {"tasks": [], "end_pagination": True}
    task = project.get_task(tasks[0]["id"])
    assert task["data"] == tasks[0]["data"]

    # The export storage's first sync (on creation) has finished.
    assert wait_synced(project, export_path)["status"] == "completed"
    annotation = project.create_annotation(task["id"], result=RESULT, lead_time=1.5)
    assert annotation["task"] == task["id"] and annotation["result"] == RESULT
    written = read_export(str(annotation["id"]))
    assert written is not None, "the annotation was not exported on save"
    assert json.loads(written)["result"] == RESULT
    assert project.get_annotation(annotation["id"])["id"] == annotation["id"]
    assert [a["id"] for a in project.list_annotations(task["id"])] == [annotation["id"]]
    counters = client.get_project(project.id)
    assert (counters.task_number, counters.total_annotations_number, counters.num_tasks_with_annotations) == (
        len(TASKS),
        1,
        1,
    )

    cancelled = project.update_annotation(annotation["id"], was_cancelled=True)
    assert cancelled["was_cancelled"] is True
    assert json.loads(read_export(str(annotation["id"])))["was_cancelled"] is True
    assert client.get_project(project.id).skipped_annotations_number == 1

    assert project.sync_export_storage(storage_type, exported["id"])["id"] == exported["id"]
    assert wait_synced(project, export_path)["status"] == "completed"

    assert project.delete_annotation(annotation["id"]) == 204
    assert read_export(str(annotation["id"])) is None, "can_delete_objects removes the object"
    assert project.list_annotations(task["id"]) == []

    for path in (import_path, export_path):
        assert project.make_request("DELETE", path).status_code == 204
    assert project.get_import_storages() == [] and project.get_export_storages() == []
    # Deleting storages keeps the tasks, as Label Studio does.
    assert len(project.get_tasks()) == len(TASKS)
