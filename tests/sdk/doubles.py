"""Loopback stand-ins the SDK test needs in front of the GCS emulator.

Run as ``python doubles.py --gcs-upstream http://127.0.0.1:PORT --base-email E
--target-email T --wif-subject-token S --azure-upstream https://127.0.0.1:PORT
--entra-tenant T --entra-client C --entra-secret S --databricks-token P``: binds
four servers on 127.0.0.1 (random ports), prints one line ``{"gcs_shim":
"http://...", "iam": "http://...", "azure_front": "http://...", "databricks":
"http://..."}`` on stdout and serves until killed.

* **GCS write shim** (the Python twin of crates/storage-testing/src/gcs_shim.rs):
  fake-gcs-server rejects the XML API upload the server's GCS client sends
  (``PUT /{bucket}/{object}``, "400 invalid uploadType"), so that request becomes
  the JSON media upload ``POST /upload/storage/v1/b/{bucket}/o?uploadType=media``
  and its answer an XML-API style ``200`` with ``ETag``/``x-goog-generation``.
  Everything else is forwarded unchanged with the upstream's ``Host`` (fake-gcs
  answers XML reads with 404 unless ``Host`` is its ``-public-host``).
* **IAM Credentials double** (like crates/storage-testing/src/iam_double.rs):
  ``generateAccessToken`` and ``signBlob`` for one target service account, called
  with a self-signed JWT whose ``iss`` is the base email (what the server sends for
  its own service-account key) or a token this double issued. Signatures are
  SHA-256 of the payload: fake-gcs checks none. ``GET /calls`` tells what both
  servers saw.
* **Google STS double** on the IAM double's port (``POST /v1/token``): the
  token exchange of Workload Identity Federation (``gcswif``). It checks the
  token-exchange form (grant type, a pool provider audience, the subject token
  given with ``--wif-subject-token``, its type, the scope) and issues a
  federated token the IAM double then accepts as the caller.
* **Microsoft Entra double** on the IAM double's port (``POST
  /{tenant}/oauth2/v2.0/token``, like crates/storage-testing/src/entra_double.rs):
  the client-credentials grant of ``azure_spi``, checking the tenant, client,
  secret and scope; it issues an unsigned JWT with the claims Azure Storage
  reads, which the HTTPS Azurite (``--oauth basic``) accepts.
* **Azure front** (the Python twin of crates/storage-testing/src/tls_shim.rs): a
  plain-HTTP front of the HTTPS Azurite, whose certificate is self-signed;
  requests and answers pass unchanged (Shared Key, SAS and bearer tokens sign
  the path, not the host). It records the bearer tokens it forwards.
* **Databricks Files API double** (like crates/storage-testing's Databricks
  double): Unity Catalog volume files in memory, behind a personal access
  token. ``GET /api/2.0/fs/directories{path}`` (pages of ``page_size``, at most
  1000, continued with ``next_page_token``), ``HEAD`` of a directory, and
  ``GET`` (with inclusive ``Range``), ``HEAD``, ``PUT ?overwrite=`` and
  ``DELETE`` of ``/api/2.0/fs/files{path}``; errors are Databricks' JSON bodies
  (``error_code``, ``message``): 401 for another token, 404 for a missing file
  or directory.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import email.utils
import hashlib
import http.client
import json
import re
import ssl
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Headers that describe one hop, not the message (RFC 9110 7.6.1), plus the ones
# this proxy recomputes.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
}


# What the doubles saw, for `GET /calls` on the IAM double: the test checks
# that gcs_sa storages really reach the bucket with impersonated tokens.
SEEN: dict[str, object] = {
    "databricks_requests": 0,
    "generateAccessToken": 0,
    "signBlob": 0,
    "sts_exchanges": 0,
    "entra_tokens": 0,
    "gcs_authorizations": set(),
    "azure_bearers": set(),
}
SEEN_LOCK = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        sys.stderr.write("doubles: " + (format % args) + "\n")

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._chunked_body()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _chunked_body(self) -> bytes:
        """A body sent with `Transfer-Encoding: chunked` (RFC 9112 7.1)."""
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields
                return body
            body += self.rfile.read(size)
            self.rfile.readline()  # the CRLF after each chunk

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: object) -> None:
        self._reply(status, json.dumps(value).encode(), {"Content-Type": "application/json; charset=UTF-8"})


class _Forwarder(_Handler):
    upstream: urllib.parse.SplitResult  # set on the subclass made by serve()

    def _forward(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, list, bytes]:
        if self.upstream.scheme == "https":
            # The emulator's self-signed certificate; loopback test traffic only.
            context = ssl._create_unverified_context()  # noqa: S323
            conn = http.client.HTTPSConnection(self.upstream.hostname, self.upstream.port, timeout=30, context=context)
        else:
            conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            headers = dict(headers)
            headers["Host"] = self.upstream.netloc
            headers["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def _pass_through(self, body: bytes) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        status, reply_headers, reply = self._forward(self.command, self.path, body, headers)
        kept = {k: v for k, v in reply_headers if k.lower() not in HOP_BY_HOP}
        self._reply(status, reply, kept)


class AzureFront(_Forwarder):
    def _handle(self) -> None:
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            with SEEN_LOCK:
                SEEN["azure_bearers"].add(auth[len("Bearer ") :])
        self._pass_through(self._body())

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _handle


class GcsShim(_Forwarder):

    def _xml_write_target(self) -> tuple[str, str] | None:
        url = urllib.parse.urlsplit(self.path)
        keys = {k for k, _ in urllib.parse.parse_qsl(url.query, keep_blank_values=True)}
        if self.command != "PUT" or keys & {"uploadId", "X-Goog-Algorithm"}:
            return None
        bucket, _, obj = url.path.lstrip("/").partition("/")
        if not bucket or not obj or bucket in ("storage", "upload"):
            return None
        return urllib.parse.unquote(bucket), urllib.parse.unquote(obj)

    def _handle(self) -> None:
        body = self._body()
        with SEEN_LOCK:
            SEEN["gcs_authorizations"].add(self.headers.get("Authorization") or "")
        target = self._xml_write_target()
        if target is None:
            self._pass_through(body)
            return
        if self.headers.get("x-goog-copy-source"):
            self._reply(501, b"doubles.py GCS shim: x-goog-copy-source is not supported")
            return
        bucket, obj = target
        path = "/upload/storage/v1/b/{}/o?{}".format(
            urllib.parse.quote(bucket, safe=""),
            urllib.parse.urlencode({"uploadType": "media", "name": obj}),
        )
        content_type = self.headers.get("Content-Type") or "application/octet-stream"
        status, _, reply = self._forward("POST", path, body, {"Content-Type": content_type})
        if not 200 <= status < 300:
            self._reply(status, reply)
            return
        meta = json.loads(reply)
        self._reply(200, b"", {"ETag": '"{}"'.format(meta.get("md5Hash", "")), "x-goog-generation": str(meta.get("generation", ""))})

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _handle


class Databricks(_Handler):
    token: str
    files: dict[str, tuple[bytes, float]]  # absolute path -> (body, modified, seconds)
    lock: threading.Lock

    FILES = "/api/2.0/fs/files"
    DIRECTORIES = "/api/2.0/fs/directories"

    def _error(self, status: int, code: str, message: str) -> None:
        self._json(status, {"error_code": code, "message": message})

    def _authorized(self) -> bool:
        with SEEN_LOCK:
            SEEN["databricks_requests"] += 1
        if self.headers.get("Authorization") == f"Bearer {self.token}":
            return True
        self._error(401, "UNAUTHENTICATED", "Invalid access token.")
        return False

    def _target(self) -> tuple[str, str, dict[str, str]] | None:
        """(API, absolute path, query) of a Files API request."""
        url = urllib.parse.urlsplit(self.path)
        for api in (self.FILES, self.DIRECTORIES):
            if url.path.startswith(api + "/"):
                path = urllib.parse.unquote(url.path[len(api) :]).rstrip("/") or "/"
                return api, path, dict(urllib.parse.parse_qsl(url.query))
        self._error(404, "ENDPOINT_NOT_FOUND", f"No API found for '{self.command} {url.path}'")
        return None

    def _is_directory(self, path: str) -> bool:
        # A volume's root exists; other directories exist while a file is below them.
        if path.count("/") == 4 and path.startswith("/Volumes/"):
            return True
        with self.lock:
            return any(name.startswith(path + "/") for name in self.files)

    def _list(self, path: str, query: dict[str, str]) -> None:
        if not self._is_directory(path):
            self._error(404, "NOT_FOUND", f"The directory being accessed is not found. Path: {path}")
            return
        entries: dict[str, dict[str, object]] = {}
        with self.lock:
            for name, (body, modified) in self.files.items():
                if not name.startswith(path + "/"):
                    continue
                child, _, rest = name[len(path) + 1 :].partition("/")
                full = f"{path}/{child}"
                if rest:
                    entries[full] = {"path": full + "/", "is_directory": True, "name": child}
                else:
                    entries[full] = {"path": full, "is_directory": False, "file_size": len(body), "last_modified": int(modified * 1000), "name": child}
        ordered = [entries[k] for k in sorted(entries)]
        try:
            size = min(int(query.get("page_size") or 1000), 1000)
            start = int(query.get("page_token") or 0)
        except ValueError:
            self._error(400, "INVALID_PARAMETER_VALUE", "page_size and page_token are not valid.")
            return
        page = {"contents": ordered[start : start + size]}
        if start + size < len(ordered):
            page["next_page_token"] = str(start + size)
        self._json(200, page)

    def _read(self, path: str) -> None:
        with self.lock:
            found = self.files.get(path)
        if found is None:
            self._error(404, "NOT_FOUND", f"The file being accessed is not found. Path: {path}")
            return
        body, modified = found
        headers = {"Content-Type": "application/octet-stream", "Last-Modified": email.utils.formatdate(modified, usegmt=True), "Accept-Ranges": "bytes"}
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if wanted and int(wanted.group(1)) < len(body):
            first = int(wanted.group(1))
            last = min(int(wanted.group(2) or len(body) - 1), len(body) - 1)
            headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
            self._reply(206, body[first : last + 1], headers)
        elif wanted:
            self._reply(416, b"", {"Content-Range": f"bytes */{len(body)}"})
        else:
            self._reply(200, body, headers)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self._authorized() and (target := self._target()):
            api, path, query = target
            self._list(path, query) if api == self.DIRECTORIES else self._read(path)

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        if self._authorized() and (target := self._target()):
            api, path, _ = target
            if api == self.DIRECTORIES:
                self._reply(200 if self._is_directory(path) else 404, b"")
            else:
                self._read(path)

    def do_PUT(self) -> None:  # noqa: N802 - stdlib name
        body = self._body()
        if self._authorized() and (target := self._target()):
            _, path, query = target
            with self.lock:
                if path in self.files and query.get("overwrite") != "true":
                    exists = True
                else:
                    exists = False
                    self.files[path] = (body, dt.datetime.now(dt.timezone.utc).timestamp())
            if exists:
                self._error(409, "ALREADY_EXISTS", f"The file being created already exists. Path: {path}")
            else:
                self._reply(204, b"")

    def do_DELETE(self) -> None:  # noqa: N802 - stdlib name
        if self._authorized() and (target := self._target()):
            _, path, _ = target
            with self.lock:
                gone = self.files.pop(path, None)
            if gone is None:
                self._error(404, "NOT_FOUND", f"The file being accessed is not found. Path: {path}")
            else:
                self._reply(204, b"")


WIF_AUDIENCE = re.compile(r"//iam\.googleapis\.com/projects/\d+/locations/global/workloadIdentityPools/[a-z0-9-]+/providers/[a-z0-9-]+")


ENTRA_TOKEN_PATH = re.compile(r"/([^/]+)/oauth2/v2\.0/token")
STORAGE_SCOPE = "https://storage.azure.com/.default"


class Iam(_Handler):
    base_email: str
    target_email: str
    wif_subject_token: str
    entra: dict[str, str]  # tenant, client, secret
    issued: dict[str, str]
    lock: threading.Lock

    def _entra_token(self, tenant: str, body: bytes) -> None:
        """Microsoft Entra's client-credentials grant, answered as Entra does
        (its error bodies carry an `AADSTS` code)."""
        form = dict(urllib.parse.parse_qsl(body.decode()))

        def refuse(status: int, error: str, code: int, description: str) -> None:
            self._json(status, {"error": error, "error_description": f"AADSTS{code}: {description}", "error_codes": [code]})

        if tenant != self.entra["tenant"]:
            refuse(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        elif form.get("grant_type") != "client_credentials":
            refuse(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        elif form.get("scope") != STORAGE_SCOPE:
            refuse(400, "invalid_scope", 70011, f"The provided value for the input parameter 'scope' is not valid: expected {STORAGE_SCOPE}.")
        elif form.get("client_id") != self.entra["client"]:
            refuse(400, "unauthorized_client", 700016, f"Application with identifier '{form.get('client_id')}' was not found in the directory '{tenant}'.")
        elif form.get("client_secret") != self.entra["secret"]:
            refuse(401, "invalid_client", 7000215, "Invalid client secret provided.")
        else:
            with SEEN_LOCK:
                SEEN["entra_tokens"] += 1
                n = SEEN["entra_tokens"]
            now = int(dt.datetime.now(dt.timezone.utc).timestamp())
            claims = {
                "aud": "https://storage.azure.com",
                "iss": f"https://sts.windows.net/{tenant}/",
                "tid": tenant,
                "oid": f"oid-{self.entra['client']}",
                "appid": self.entra["client"],
                "iat": now,
                "nbf": now,
                "exp": now + 3599,
                "jti": f"sdk-double-{n}",
            }

            def b64(value: object) -> str:
                return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

            token = "{}.{}.c2ln".format(b64({"typ": "JWT", "alg": "RS256"}), b64(claims))
            with self.lock:
                self.issued[token] = "entra:" + self.entra["client"]
            self._json(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token})

    def _sts_exchange(self, body: bytes) -> None:
        """Google STS's `POST /v1/token` (token exchange), answered as Google does."""
        form = dict(urllib.parse.parse_qsl(body.decode()))
        expected = {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "scope": "https://www.googleapis.com/auth/cloud-platform",
            "subject_token": self.wif_subject_token,
        }
        wrong = [name for name, value in expected.items() if form.get(name) != value]
        if self.headers.get("Authorization") or wrong or not WIF_AUDIENCE.fullmatch(form.get("audience", "")):
            self._json(400, {"error": "invalid_request", "error_description": f"Invalid value for {wrong or ['audience']}."})
            return
        with SEEN_LOCK:
            SEEN["sts_exchanges"] += 1
        with self.lock:
            token = "sts-federated-{}".format(len(self.issued) + 1)
            self.issued[token] = "federated:" + form["audience"]
        self._json(200, {"access_token": token, "issued_token_type": expected["requested_token_type"], "token_type": "Bearer", "expires_in": 3600})

    def _caller(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            return None
        token = auth[len("Bearer ") :]
        with self.lock:
            if token in self.issued:
                return self.issued[token]
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except ValueError:
            return None
        return claims.get("iss") if claims.get("iss") == self.base_email else None

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        """`GET /calls`: the counters, the issued tokens and the Authorization
        headers the GCS shim received."""
        if self.path != "/calls":
            self._json(404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})
            return
        with SEEN_LOCK, self.lock:
            self._json(
                200,
                {
                    "generateAccessToken": SEEN["generateAccessToken"],
                    "signBlob": SEEN["signBlob"],
                    "sts_exchanges": SEEN["sts_exchanges"],
                    "entra_tokens": SEEN["entra_tokens"],
                    "issued": dict(self.issued),
                    "gcs_authorizations": sorted(SEEN["gcs_authorizations"]),
                    "azure_bearers": sorted(SEEN["azure_bearers"]),
                },
            )

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        body = self._body()
        if self.path == "/v1/token":
            self._sts_exchange(body)
            return
        entra = ENTRA_TOKEN_PATH.fullmatch(self.path)
        if entra:
            self._entra_token(entra.group(1), body)
            return
        prefix = "/v1/projects/-/serviceAccounts/"
        if not self.path.startswith(prefix) or ":" not in self.path:
            self._json(404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})
            return
        email, _, method = urllib.parse.unquote(self.path[len(prefix) :]).rpartition(":")
        if self._caller() is None:
            self._json(401, {"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}})
            return
        if email != self.target_email:
            self._json(404, {"error": {"code": 404, "message": f"Not found; Gaia id not found for email {email}", "status": "NOT_FOUND"}})
            return
        request = json.loads(body or b"{}")
        with SEEN_LOCK:
            if method in ("generateAccessToken", "signBlob"):
                SEEN[method] += 1
        if method == "generateAccessToken":
            lifetime = int(str(request.get("lifetime", "3600s")).rstrip("s"))
            with self.lock:
                token = "ya29.sdk-double-{}".format(len(self.issued) + 1)
                self.issued[token] = email
            expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=lifetime)
            self._json(200, {"accessToken": token, "expireTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ")})
        elif method == "signBlob":
            payload = base64.b64decode(request.get("payload", ""))
            signed = base64.b64encode(hashlib.sha256(payload).digest()).decode()
            self._json(200, {"keyId": "sdk-double-key", "signedBlob": signed})
        else:
            self._json(404, {"error": {"code": 404, "message": f"unknown method {method}", "status": "NOT_FOUND"}})


def serve(args: argparse.Namespace) -> tuple[ThreadingHTTPServer, ...]:
    """Starts the four servers on 127.0.0.1:0 in daemon threads."""
    shim_handler = type("BoundGcsShim", (GcsShim,), {"upstream": urllib.parse.urlsplit(args.gcs_upstream)})
    front_handler = type("BoundAzureFront", (AzureFront,), {"upstream": urllib.parse.urlsplit(args.azure_upstream)})
    iam_handler = type(
        "BoundIam",
        (Iam,),
        {
            "base_email": args.base_email,
            "target_email": args.target_email,
            "wif_subject_token": args.wif_subject_token,
            "entra": {"tenant": args.entra_tenant, "client": args.entra_client, "secret": args.entra_secret},
            "issued": {},
            "lock": threading.Lock(),
        },
    )
    databricks_handler = type("BoundDatabricks", (Databricks,), {"token": args.databricks_token, "files": {}, "lock": threading.Lock()})
    handlers = (shim_handler, iam_handler, front_handler, databricks_handler)
    servers = tuple(ThreadingHTTPServer(("127.0.0.1", 0), h) for h in handlers)
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gcs-upstream", required=True)
    parser.add_argument("--base-email", required=True)
    parser.add_argument("--target-email", required=True)
    parser.add_argument("--wif-subject-token", required=True)
    parser.add_argument("--azure-upstream", required=True)
    parser.add_argument("--entra-tenant", required=True)
    parser.add_argument("--entra-client", required=True)
    parser.add_argument("--entra-secret", required=True)
    parser.add_argument("--databricks-token", required=True)
    args = parser.parse_args()
    servers = serve(args)
    names = ("gcs_shim", "iam", "azure_front", "databricks")
    print(json.dumps({name: "http://127.0.0.1:%d" % server.server_port for name, server in zip(names, servers)}), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
