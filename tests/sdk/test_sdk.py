"""Label Studio's official Python SDK against the storage-server binary.

For each storage type the SDK and this server share (localfiles, s3, gcs,
azure, redis, gcs_sa, azure_spi, gcswif, s3s, databricks) one test walks the whole life of an import and an export storage
through the SDK's own client: create, list, get, update, validate, sync,
the imported tasks, an annotation exported on save, deletion. What the server
did is checked in the bucket or folder itself (boto3 on moto, the GCS JSON
API of fake-gcs, plain files), not through the server.

Where the SDK and the server disagree the server is fixed, not this test.
"""

from __future__ import annotations

import inspect
import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pydantic
import pytest
from conftest import (
    LABEL_CONFIG,
    AzureContainer,
    DatabricksVolume,
    GcsBucket,
    LocalDir,
    Recorder,
    RedisDb,
    S3Bucket,
    env,
    gcs_credentials,
    wait_finished,
)
from label_studio_sdk.client import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.types import LseTask

# Every storage type label-studio-sdk 2.1.2 knows.
SUPPORTED = {"localfiles", "s3", "gcs", "azure", "redis", "gcs_sa", "azure_spi", "gcswif", "s3s", "databricks"}

TASKS = [{"text": "first task"}, {"text": "second task"}]


def choice(value: str) -> list[dict[str, Any]]:
    """An annotation result choosing `value` in LABEL_CONFIG."""
    return [{"id": "r1", "from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [value]}}]


RESULT = choice("yes")


@dataclass
class Case:
    """How one storage type is set up and where its objects are."""

    sdk_name: str  # attribute of ls.import_storage / ls.export_storage
    wire_type: str  # the `type` the server answers with
    import_fields: dict[str, Any]  # create/validate arguments besides project
    export_fields: dict[str, Any]
    put: Callable[[str, bytes], None]  # writes an object of the import location
    get_export: Callable[[str], bytes | None]  # reads an object of the export location
    filename: Callable[[str], str]  # storage_filename of an imported object
    # A validate call that must fail: (arguments, the key of the 400's
    # validation_errors, the start of its message).
    bad_validate: tuple[dict[str, Any], str, str]
    secrets: dict[str, str] = field(default_factory=dict)  # write-only fields sent


def local_case(unique: str) -> Case:
    files = LocalDir(Path(env("SDK_TEST_DOCUMENT_ROOT")), unique)
    source, target = files.folder("import"), files.folder("export")
    return Case(
        sdk_name="local",
        wire_type="localfiles",
        import_fields={"path": source},
        export_fields={"path": target},
        put=lambda name, body: files.put(source, name, body),
        get_export=lambda key: files.get(target, key),
        filename=lambda name: f"{source}/{name}",
        bad_validate=({"path": "/etc"}, "non_field_errors", 'Absolute local path "/etc" must be a subdirectory of LOCAL_FILES_DOCUMENT_ROOT='),
    )


def bucket_case(
    name: str,
    bucket: S3Bucket | GcsBucket | AzureContainer | DatabricksVolume,
    unique: str,
    connection: dict[str, Any],
    bad_validate: tuple[dict[str, Any], str, str],
    secrets: dict[str, str] | None = None,
) -> Case:
    """A bucket storage type (SDK name and wire type `name`): imports from
    `<unique>/import`, exports to `<unique>/export` of `bucket`."""
    return Case(
        sdk_name=name,
        wire_type=name,
        import_fields={**connection, "prefix": f"{unique}/import"},
        export_fields={**connection, "prefix": f"{unique}/export"},
        put=lambda key, body: bucket.put(f"{unique}/import/{key}", body),
        get_export=lambda key: bucket.get(f"{unique}/export/{key}"),
        filename=lambda key: f"{unique}/import/{key}",
        bad_validate=bad_validate,
        secrets=secrets or {},
    )


def s3_case(unique: str) -> Case:
    bucket = S3Bucket()
    secrets = {"aws_access_key_id": "sdk-test-key", "aws_secret_access_key": "sdk-test-secret"}
    connection = {"bucket": bucket.name, "s3endpoint": bucket.endpoint, "region_name": "us-east-1", **secrets}
    bad = ({**connection, "bucket": "no such bucket!"}, "bucket", 'Invalid bucket name "no such bucket!"')
    return bucket_case("s3", bucket, unique, connection, bad, secrets)


def gcs_case(unique: str) -> Case:
    bucket = GcsBucket()
    secrets = {"google_application_credentials": gcs_credentials()}
    connection = {"bucket": bucket.name, **secrets}
    bad = (
        {**connection, "google_application_credentials": "{not json"},
        "google_application_credentials",
        "Google Application Credentials must be valid JSON string.",
    )
    return bucket_case("gcs", bucket, unique, connection, bad, secrets)


def gcs_sa_case(unique: str) -> Case:
    bucket = GcsBucket()
    connection = {
        "bucket": bucket.name,
        "google_project_id": "sdk-data-project",
        "target_service_account_email": env("SDK_TEST_GCS_SA_TARGET"),
    }
    bad = (
        {**connection, "target_service_account_email": "not-an-email"},
        "target_service_account_email",
        '"not-an-email" is not a service account email',
    )
    return bucket_case("gcs_sa", bucket, unique, connection, bad)


def s3s_case(unique: str) -> Case:
    """S3 with an IAM role: the role is assumed at moto's STS (the server's
    --sts-endpoint) with the storage's own keys as the base identity."""
    bucket = S3Bucket()
    secrets = {"aws_access_key_id": "sdk-test-base-key", "aws_secret_access_key": "sdk-test-base-secret"}
    connection = {
        "bucket": bucket.name,
        "s3endpoint": bucket.endpoint,
        "region_name": "us-east-1",
        "role_arn": "arn:aws:iam::123456789012:role/sdk-test",
        "external_id": "sdk-test-external-id",
        **secrets,
    }
    bad = ({**connection, "role_arn": "not-an-arn"}, "role_arn", '"not-an-arn" is not an IAM role ARN')
    return bucket_case("s3s", bucket, unique, connection, bad, secrets)


def gcswif_case(unique: str) -> Case:
    bucket = GcsBucket()
    connection = {
        "bucket": bucket.name,
        "google_project_number": "123456789012",
        "google_wif_pool_id": "sdk-pool",
        "google_wif_provider_id": "sdk-provider",
        "google_service_account_email": env("SDK_TEST_GCS_SA_TARGET"),
    }
    bad = (
        {**connection, "google_project_number": "my-project"},
        "google_project_number",
        '"my-project" is not a project number',
    )
    return bucket_case("gcswif", bucket, unique, connection, bad)


def azure_case(unique: str) -> Case:
    container = AzureContainer()
    secrets = {"account_name": container.account, "account_key": container.key}
    connection = {"container": container.name, **secrets}
    bad = ({**connection, "container": "No_Such"}, "container", 'Invalid container name "No_Such"')
    return bucket_case("azure", container, unique, connection, bad, secrets)


def azure_spi_case(unique: str) -> Case:
    """Azure with a Microsoft Entra service principal: the token comes from
    the Entra double (the server's --azure-authority-host), the HTTPS Azurite
    checks it."""
    container = AzureContainer()
    secrets = {"client_secret": env("SDK_TEST_ENTRA_SECRET")}
    connection = {
        "container": container.name,
        "account_name": container.account,
        "auth_mode": "service_principal",
        "tenant_id": env("SDK_TEST_ENTRA_TENANT"),
        "client_id": env("SDK_TEST_ENTRA_CLIENT"),
        **secrets,
    }
    bad = ({**connection, "container": "No_Such"}, "container", 'Invalid container name "No_Such"')
    return bucket_case("azure_spi", container, unique, connection, bad, secrets)


def redis_case(unique: str) -> Case:
    """Redis: task JSON in keys under `path` of database 1; export writes
    one key per annotation id, without prefix, as Label Studio does, so it
    gets a database of its own (the Rust tests export to 3)."""
    source, target = RedisDb(1), RedisDb(5)
    secrets = {"password": source.password}
    connection = {"host": source.host, "port": str(source.port), **secrets}
    return Case(
        sdk_name="redis",
        wire_type="redis",
        import_fields={**connection, "db": source.db, "path": f"{unique}/import/"},
        export_fields={**connection, "db": target.db},
        put=lambda key, body: source.put(f"{unique}/import/{key}", body),
        get_export=target.get,
        filename=lambda key: f"{unique}/import/{key}",
        bad_validate=({**connection, "db": 0}, "db", "Please explicitly pass a redis db id"),
        secrets=secrets,
    )


def databricks_case(unique: str) -> Case:
    """Databricks Unity Catalog volume files through the Files API double
    (doubles.py), with a personal access token."""
    volume = DatabricksVolume()
    secrets = {"token": volume.token}
    connection = {
        "host": volume.host,
        "catalog": volume.catalog,
        "schema": volume.schema,
        "volume": volume.volume,
        "auth_type": "pat",
        **secrets,
    }
    bad = ({**connection, "volume": ".."}, "volume", 'Invalid Unity Catalog name ".."')
    return bucket_case("databricks", volume, unique, connection, bad, secrets)


CASES = {
    "localfiles": local_case,
    "s3": s3_case,
    "gcs": gcs_case,
    "gcs_sa": gcs_sa_case,
    "azure": azure_case,
    "azure_spi": azure_spi_case,
    "redis": redis_case,
    "gcswif": gcswif_case,
    "s3s": s3s_case,
    "databricks": databricks_case,
}


# Where the SDK's models (generated from Label Studio Enterprise's API) are
# stricter than Label Studio 1.23.2 itself: fields only Enterprise sends. The
# SDK parses leniently, so these break nothing.
TOLERATED = {
    # Label Studio 1.23.2 sends created_by {id, first_name, last_name, email,
    # avatar}, no username; so does this server.
    ("LseProjectCreate", ("created_by", "username"), "missing"),
    ("ProjectExt", ("created_by", "username"), "missing"),
    # Enterprise project settings.
    ("ProjectExt", ("assignment_settings",), "missing"),
    ("ProjectExt", ("review_settings",), "missing"),
    # The same in each project of a projects list (one a page in the test).
    ("PaginatedAllRolesProjectListList", ("results", 0, "created_by", "username"), "missing"),
    ("PaginatedAllRolesProjectListList", ("results", 0, "assignment_settings"), "missing"),
    ("PaginatedAllRolesProjectListList", ("results", 0, "review_settings"), "missing"),
}


def api_error(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


def conform(rec: Recorder, data: Any, status: int = 200) -> Any:
    """Checks the response behind the SDK's `data`: its status, and that its
    JSON validates strictly against the SDK model it was parsed into (the SDK
    itself parses leniently: a wrong type or a missing required field would go
    unnoticed)."""
    response = rec.last
    assert response is not None
    where = f"{response.request.method} {response.request.url}"
    assert response.status_code == status, (where, response.status_code, response.text)
    if data is None:
        assert response.content == b"", (where, response.text)
        return data
    body = response.json()
    if isinstance(data, list):
        assert isinstance(body, list) and len(body) == len(data), (where, body)
        pairs = list(zip(data, body))
    else:
        pairs = [(data, body)]
    for item, raw in pairs:
        strict(type(item), raw, where)
    return data


def strict(model: type[pydantic.BaseModel], raw: Any, where: str) -> None:
    try:
        model.model_validate(raw)
    except pydantic.ValidationError as err:
        unexpected = [e for e in err.errors() if (model.__name__, e["loc"], e["type"]) not in TOLERATED]
        assert not unexpected, (where, model.__name__, [(e["loc"], e["type"]) for e in unexpected])


def assert_validate_refuses(case: Case, sdk: Any, project_id: int) -> None:
    fields, key, message = case.bad_validate
    error = api_error(lambda: sdk.validate(project=project_id, **fields))
    assert error.status_code == 400, error
    assert error.body["detail"] == "Validation error"
    errors = error.body["validation_errors"]
    assert list(errors) == [key], errors
    assert errors[key][0].startswith(message), errors


def assert_gone(rec: Recorder, sdk: Any, storage_id: int, project_id: int) -> None:
    error = api_error(lambda: sdk.get(storage_id))
    assert error.status_code == 404, error
    assert error.body["detail"] == "Not found.", error.body
    assert conform(rec, sdk.list(project=project_id)) == []


def assert_no_secrets(case: Case, storage: Any, rec: Recorder) -> None:
    for name, value in case.secrets.items():
        assert getattr(storage, name, None) is None, f"{name} is echoed"
        assert value not in rec.last.text, f"the value of {name} is in a response"


def project_tasks(ls: LabelStudio, rec: Recorder, project_id: int, **params: Any) -> list[Any]:
    pager = ls.tasks.list(project=project_id, **params)
    first_page = conform(rec, pager.response)
    # `tasks` is a union of three role-specific shapes; an admin gets LseTask.
    for raw in rec.last.json()["tasks"]:
        strict(LseTask, raw, str(rec.last.request.url))
    tasks = list(pager)  # the SDK's pager walks pages until an empty one
    assert first_page.total == len(tasks)
    return tasks


def test_storage_types_are_the_supported_ones(ls: LabelStudio, recorder: Recorder) -> None:
    for client in (ls.import_storage, ls.export_storage):
        types = conform(recorder, client.list_types())
        assert {t.name for t in types} == SUPPORTED
        assert all(isinstance(t.title, str) and t.title for t in types)


@pytest.mark.parametrize("wire_type", sorted(CASES))
def test_import_and_export_storage(ls: LabelStudio, recorder: Recorder, unique: str, wire_type: str) -> None:
    case = CASES[wire_type](unique)
    project = conform(recorder, ls.projects.create(title=unique, label_config=LABEL_CONFIG), 201)
    assert (project.title, project.label_config, project.task_number) == (unique, LABEL_CONFIG, 0)
    tasks = import_phase(ls, recorder, project.id, case)
    export_phase(ls, recorder, project.id, case, tasks)
    if wire_type in ("gcs_sa", "gcswif"):
        # The server impersonated the target account and used the tokens it
        # got for it on the bucket (not its own identity); gcswif got the
        # identity it impersonates with from the STS token exchange.
        calls = iam_calls()
        assert calls["generateAccessToken"] >= 1, calls
        if wire_type == "gcswif":
            assert calls["sts_exchanges"] >= 1, calls
        target_tokens = {f"Bearer {t}" for t, email in calls["issued"].items() if email == env("SDK_TEST_GCS_SA_TARGET")}
        assert target_tokens & set(calls["gcs_authorizations"]), calls
    if wire_type == "azure_spi":
        # Azurite was reached with the service principal's Entra tokens,
        # fetched once and cached across the whole storage lifecycle.
        calls = iam_calls()
        entra_tokens = {t for t, who in calls["issued"].items() if who == "entra:" + env("SDK_TEST_ENTRA_CLIENT")}
        assert entra_tokens & set(calls["azure_bearers"]), calls
        assert calls["entra_tokens"] == 1, calls


def iam_calls() -> dict[str, Any]:
    with urllib.request.urlopen(env("SDK_TEST_IAM") + "/calls", timeout=10) as response:
        return json.loads(response.read())


def import_phase(ls: LabelStudio, rec: Recorder, project_id: int, case: Case) -> list[Any]:
    sdk = getattr(ls.import_storage, case.sdk_name)
    case.put("tasks.json", json.dumps(TASKS).encode())
    case.put("notes.txt", b"not a task file")

    # Create with a filter that matches nothing; the update below fixes it.
    created = conform(
        rec,
        sdk.create(project=project_id, title="sdk import", regex_filter=r"nothing-matches\.json", **case.import_fields),
        201,
    )
    assert_no_secrets(case, created, rec)
    assert created.id > 0
    assert (created.type, created.project, created.title) == (case.wire_type, project_id, "sdk import")
    assert created.status == "initialized"
    assert created.use_blob_urls is False
    assert created.regex_filter == r"nothing-matches\.json"
    assert created.last_sync is None and created.last_sync_count is None

    listed = conform(rec, sdk.list(project=project_id, ordering="id"))
    assert_no_secrets(case, listed[0], rec)
    assert [s.id for s in listed] == [created.id]
    assert listed[0].title == "sdk import"
    fetched = conform(rec, sdk.get(created.id))
    assert_no_secrets(case, fetched, rec)
    assert fetched.id == created.id and fetched.created_at == created.created_at

    updated = conform(
        rec,
        sdk.update(created.id, title="sdk import (renamed)", description="from the SDK", regex_filter=r".*\.json"),
    )
    assert_no_secrets(case, updated, rec)
    assert (updated.id, updated.title, updated.description) == (created.id, "sdk import (renamed)", "from the SDK")
    assert updated.regex_filter == r".*\.json"
    assert conform(rec, sdk.get(created.id)).title == "sdk import (renamed)"

    # validate answers 200 with an empty body; a bad field is a 400 naming it.
    assert conform(rec, sdk.validate(project=project_id, **case.import_fields)) is None
    if "id" in inspect.signature(sdk.validate).parameters:  # the SDK's gcs_sa has no `id`
        assert conform(rec, sdk.validate(project=project_id, id=created.id, **case.import_fields)) is None
    assert_validate_refuses(case, sdk, project_id)

    queued = conform(rec, sdk.sync(created.id))
    assert_no_secrets(case, queued, rec)
    assert queued.id == created.id
    assert queued.status in ("queued", "in_progress", "completed")
    done = wait_finished(sdk.get, created.id)
    conform(rec, done)
    assert done.status == "completed", done.traceback
    assert done.last_sync_count == 2
    assert done.last_sync is not None and done.last_sync >= created.created_at
    assert done.traceback is None
    assert done.meta["tasks_existed"] == 0

    tasks = sorted(project_tasks(ls, rec, project_id), key=lambda t: t.id)
    assert [t.data for t in tasks] == TASKS
    assert {t.storage_filename for t in tasks} == {case.filename("tasks.json")}
    assert all(t.project == project_id and t.total_annotations == 0 for t in tasks)
    assert [t.id for t in project_tasks(ls, rec, project_id, page_size=1)] == [t.id for t in tasks]
    assert conform(rec, ls.projects.get(project_id)).task_number == 2

    # A second sync finds the same file and imports nothing twice.
    conform(rec, sdk.sync(created.id))
    again = wait_finished(sdk.get, created.id)
    assert again.status == "completed", again.traceback
    assert (again.last_sync_count, again.meta["tasks_existed"]) == (0, 2)
    assert len(project_tasks(ls, rec, project_id)) == 2

    assert conform(rec, sdk.delete(created.id), 204) is None
    assert_gone(rec, sdk, created.id, project_id)
    # Deleting a storage keeps its tasks (as Label Studio does).
    assert len(project_tasks(ls, rec, project_id)) == 2
    return tasks


def export_phase(ls: LabelStudio, rec: Recorder, project_id: int, case: Case, tasks: list[Any]) -> None:
    sdk = getattr(ls.export_storage, case.sdk_name)

    created = conform(rec, sdk.create(project=project_id, title="sdk export", **case.export_fields), 201)
    assert_no_secrets(case, created, rec)
    assert created.id > 0
    assert (created.type, created.project, created.title) == (case.wire_type, project_id, "sdk export")
    assert not created.can_delete_objects
    # Creating an export storage starts a full export (nothing to write yet).
    first = wait_finished(sdk.get, created.id)
    conform(rec, first)
    assert_no_secrets(case, first, rec)
    assert first.status == "completed", first.traceback
    assert first.last_sync_count == 0

    listed = conform(rec, sdk.list(project=project_id))
    assert [s.id for s in listed] == [created.id]
    assert listed[0].title == "sdk export"
    updated = conform(rec, sdk.update(created.id, title="sdk export (renamed)", can_delete_objects=True))
    assert_no_secrets(case, updated, rec)
    assert (updated.title, updated.can_delete_objects) == ("sdk export (renamed)", True)
    assert conform(rec, sdk.get(created.id)).can_delete_objects is True

    assert conform(rec, sdk.validate(project=project_id, **case.export_fields)) is None
    if "id" in inspect.signature(sdk.validate).parameters:
        assert conform(rec, sdk.validate(project=project_id, id=created.id, **case.export_fields)) is None
    assert_validate_refuses(case, sdk, project_id)

    # Saving an annotation writes it to the export storage at once.
    task = tasks[0]
    annotation = conform(rec, ls.annotations.create(id=task.id, result=RESULT, lead_time=2.5), 201)
    assert annotation.id > 0 and annotation.task == task.id
    assert (annotation.result, annotation.lead_time, annotation.was_cancelled) == (RESULT, 2.5, False)
    exported = case.get_export(str(annotation.id))
    assert exported is not None, f"annotation {annotation.id} was not exported on save"
    payload = json.loads(exported)
    assert payload["id"] == annotation.id
    assert payload["result"] == RESULT
    assert payload["task"]["id"] == task.id
    assert payload["task"]["data"] == TASKS[0]
    annotated = conform(rec, ls.tasks.get(task.id))
    strict(LseTask, rec.last.json(), "GET task")
    assert (annotated.total_annotations, annotated.is_labeled) == (1, True)
    assert [a["id"] for a in annotated.annotations] == [annotation.id]

    # Updating it writes the object again.
    changed = conform(rec, ls.annotations.update(annotation.id, result=choice("no")))
    assert (changed.id, changed.result) == (annotation.id, choice("no"))
    assert json.loads(case.get_export(str(annotation.id)))["result"] == choice("no")

    # An export sync writes every annotation again.
    conform(rec, sdk.sync(created.id))
    synced = wait_finished(sdk.get, created.id)
    assert synced.status == "completed", synced.traceback
    assert synced.last_sync_count == 1
    assert json.loads(case.get_export(str(annotation.id)))["result"] == choice("no")

    # With can_delete_objects, deleting the annotation deletes its object.
    assert conform(rec, ls.annotations.delete(annotation.id), 204) is None
    assert case.get_export(str(annotation.id)) is None
    assert conform(rec, ls.tasks.get(task.id)).total_annotations == 0

    assert conform(rec, sdk.delete(created.id), 204) is None
    assert_gone(rec, sdk, created.id, project_id)


def test_webhooks_client(ls: LabelStudio, recorder: Recorder, unique: str) -> None:
    """The SDK's webhooks client creates, lists, reads, updates and deletes
    webhooks unchanged; the server's extensions (the delivery state, a
    secret never shown) ride along as extra keys."""
    project = conform(recorder, ls.projects.create(title=unique, label_config=LABEL_CONFIG), 201)
    info = conform(recorder, ls.webhooks.info())
    assert info.tasks_created.key == "tasks"
    only = conform(recorder, ls.webhooks.info(organization_only=True))
    assert set(recorder.last.json()) == {"PROJECT_CREATED", "PROJECT_DELETED"}, only

    # Nobody listens there: deliveries fail, which the webhook shows.
    url = "http://127.0.0.1:9/hook"
    created = conform(
        recorder,
        ls.webhooks.create(
            url=url,
            project=project.id,
            send_for_all_actions=False,
            actions=["TASKS_CREATED", "ANNOTATION_CREATED"],
            headers={"X-Team": "sdk"},
        ),
        201,
    )
    assert (created.url, created.project, created.is_active) == (url, project.id, True)
    assert sorted(created.actions) == ["ANNOTATION_CREATED", "TASKS_CREATED"]
    listed = conform(recorder, ls.webhooks.list(project=str(project.id)))
    assert [w.id for w in listed] == [created.id]
    assert conform(recorder, ls.webhooks.get(created.id)).headers == {"X-Team": "sdk"}

    # The SDK's PATCH omits `actions`: they are kept (Label Studio would
    # clear them and silently stop the webhook).
    updated = conform(recorder, ls.webhooks.update(created.id, is_active=False, send_payload=False))
    assert (updated.is_active, updated.send_payload) == (False, False)
    assert sorted(updated.actions) == ["ANNOTATION_CREATED", "TASKS_CREATED"]

    assert conform(recorder, ls.webhooks.delete(created.id), 204) is None
    error = api_error(lambda: ls.webhooks.get(created.id))
    assert error.status_code == 404, error
    assert conform(recorder, ls.webhooks.list(project=str(project.id))) == []


def test_versions_whoami_projects_and_annotations(ls: LabelStudio, recorder: Recorder, unique: str) -> None:
    """The calls clients make to find their way around: versions, who they
    are, their projects, the annotations of a task."""
    version = conform(recorder, ls.versions.get())
    assert version.release == "1.23.2"
    me = conform(recorder, ls.users.whoami())
    assert me.id > 0 and me.email == "admin@localhost"

    project = conform(recorder, ls.projects.create(title=unique, label_config=LABEL_CONFIG), 201)
    assert project.parsed_label_config["label"]["to_name"] == ["text"]
    assert project.parsed_label_config["label"]["labels"] == ["yes", "no"]
    pager = ls.projects.list(page_size=1)
    conform(recorder, pager.response)
    listed = [p.id for p in pager]  # pages of one until the last
    assert project.id in listed and len(listed) == len(set(listed))

    ls.projects.import_tasks(id=project.id, request=TASKS)
    task = project_tasks(ls, recorder, project.id)[0]
    first = conform(recorder, ls.annotations.create(id=task.id, result=RESULT), 201)
    second = conform(recorder, ls.annotations.create(id=task.id, result=choice("no"), was_cancelled=True), 201)
    annotations = conform(recorder, ls.annotations.list(id=task.id))
    assert [a.id for a in annotations] == [first.id], "cancelled ones are not listed, as in Label Studio"
    assert conform(recorder, ls.annotations.get(second.id)).was_cancelled is True
    assert conform(recorder, ls.annotations.get(first.id)).result == RESULT

    counted = conform(recorder, ls.projects.get(project.id))
    assert (counted.task_number, counted.num_tasks_with_annotations, counted.skipped_annotations_number) == (2, 1, 1)
    assert counted.total_annotations_number == 1
