"""A loopback stand-in for the Hugging Face Hub, for tests.

It implements the part of the Hub's HTTP API that the real `huggingface_hub` (2.4) client uses to create a repository,
upload a folder of small files as regular (non-LFS) git blobs, and download it again:

    POST /api/repos/create                                   create_repo
    POST /api/validate-yaml                                  README.md metadata check (create_commit, RepoCard.push)
    POST /api/models/{repo}/preupload/{revision}             upload modes: "regular" for every file
    POST /api/models/{repo}/commit/{revision}                the NDJSON commit (header + base64 files)
    GET  /api/models/{repo}[/revision/{revision}]            repo_info / model_info, with siblings
    GET  /api/models/{repo}/tree/{revision}[/{path}]         list_repo_tree (always recursive, one page)
    HEAD/GET /{repo}/resolve/{revision}/{path}               file metadata (ETag, X-Repo-Commit, Content-Length) and bytes

Tokens map to users; a user may create and write repositories in their own namespace only (403 otherwise); private
repositories are invisible to others (404 RepoNotFound); an unknown token gets 401 "Invalid credentials". Any other
request is answered 404 and recorded in `FakeHub.unhandled`, so tests can check that the client needed nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
REVISION = r"(?P<revision>[^/]+)"


def git_blob_oid(content: bytes) -> str:
    """The git object id of a file, as the Hub reports it for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    owner: str
    private: bool
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def commit(self, message: str, files: dict[str, bytes]) -> Commit:
        parent = self.commits[-1].oid if self.commits else ""
        digest = hashlib.sha1(f"{parent}\n{message}\n{len(self.commits)}".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_oid(files[path])}\n".encode())
        commit = Commit(oid=digest.hexdigest(), message=message, files=files)
        self.commits.append(commit)
        return commit

    def at(self, revision: str) -> Commit | None:
        if revision == "main":
            return self.head
        return next((commit for commit in self.commits if commit.oid == revision), None)


class HubError(Exception):
    """An error answer: status, message and the X-Error-Code the client dispatches on."""

    def __init__(
        self, status: int, message: str, code: str | None = None, commit: str | None = None, **payload: Any
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.commit, self.payload = status, message, code, commit, payload


class FakeHub:
    """The Hub's state (users, repositories, commits) and its HTTP server on 127.0.0.1."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = dict(tokens)  # token -> user name
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.commit_failures: list[int] = []  # statuses answered to the next commits, in order (an outage)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-hub", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_repo(self, repo_id: str, owner: str, files: dict[str, bytes], private: bool = False) -> Repo:
        repo = Repo(repo_id=repo_id, owner=owner, private=private)
        repo.commit(
            "initial commit", {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n", **files}
        )
        self.repos[repo_id] = repo
        return repo

    # ------------------------------------------------------------------------------------------ routing

    def routes(self) -> list[tuple[str, re.Pattern, Any]]:
        return [
            ("POST", re.compile(r"/api/repos/create"), self.create_repo),
            ("POST", re.compile(r"/api/validate-yaml"), self.validate_yaml),
            ("POST", re.compile(rf"/api/models/{REPO}/preupload/{REVISION}"), self.preupload),
            ("POST", re.compile(rf"/api/models/{REPO}/commit/{REVISION}"), self.commit),
            ("GET", re.compile(rf"/api/models/{REPO}(?:/revision/{REVISION})?"), self.repo_info),
            ("GET", re.compile(rf"/api/models/{REPO}/tree/{REVISION}(?:/(?P<path>.+))?"), self.tree),
            ("HEAD", re.compile(rf"/{REPO}/resolve/{REVISION}/(?P<path>.+)"), self.resolve),
            ("GET", re.compile(rf"/{REPO}/resolve/{REVISION}/(?P<path>.+)"), self.resolve),
        ]

    def handle(self, method: str, path: str, user: str | None, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Answers one request: (status, headers, body)."""
        self.requests.append((method, path))
        for route_method, pattern, handler in self.routes():
            match = pattern.fullmatch(path)
            if route_method == method and match:
                parameters = {name: unquote(value) for name, value in match.groupdict().items() if value is not None}
                with self.lock:
                    return handler(user=user, body=body, **parameters)
        self.unhandled.append((method, path))
        raise HubError(404, f"not implemented by the test Hub: {method} {path}")

    # --------------------------------------------------------------------------------------- endpoints

    def create_repo(self, user: str | None, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if user is None:
            raise HubError(401, "You must be authenticated to create a repository")
        payload = json.loads(body)
        namespace = payload.get("organization") or user
        repo_id = f"{namespace}/{payload['name']}"
        if namespace != user:
            raise HubError(403, f'You don\'t have the rights to create a model under the namespace "{namespace}"')
        if repo_id in self.repos:
            raise HubError(409, "You already created this model repo", url=f"{self.endpoint}/{repo_id}")
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self.add_repo(repo_id, owner=user, files={}, private=private)
        return _json(200, {"url": f"{self.endpoint}/{repo_id}", "name": repo_id, "id": repo_id})

    def validate_yaml(self, user: str | None, body: bytes) -> tuple[int, dict[str, str], bytes]:
        content = json.loads(body)["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as error:
            return _json(400, {"errors": [{"message": f"Invalid YAML: {error}"}], "warnings": []})
        if not isinstance(metadata, dict):
            return _json(400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []})
        return _json(200, {"errors": [], "warnings": []})

    def preupload(self, user: str | None, body: bytes, repo: str, revision: str) -> tuple[int, dict[str, str], bytes]:
        commit = self._writable(repo, user).at(revision)
        files = []
        for file in json.loads(body)["files"]:
            current = commit.files.get(file["path"]) if commit else None
            files.append(
                {
                    "path": file["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_oid(current) if current is not None else None,
                }
            )
        return _json(200, {"files": files})

    def commit(self, user: str | None, body: bytes, repo: str, revision: str) -> tuple[int, dict[str, str], bytes]:
        if self.commit_failures:  # as the Hub in an outage: 5xx with Retry-After, which the client honours
            raise HubError(self.commit_failures.pop(0), "the test Hub is having an outage", retry_after="0")
        target = self._writable(repo, user)
        if revision != "main":
            raise HubError(400, "this test Hub only commits to main")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        files = dict(target.head.files)
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key != "header":
                raise HubError(400, f"this test Hub does not support {key} operations (LFS)")
        commit = target.commit(header["summary"], files)
        url = f"{self.endpoint}/{repo}/commit/{commit.oid}"
        return _json(200, {"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None})

    def repo_info(
        self, user: str | None, body: bytes, repo: str, revision: str = "main"
    ) -> tuple[int, dict[str, str], bytes]:
        target = self._visible(repo, user)
        commit = self._commit(target, revision)
        siblings = [{"rfilename": path, "size": len(content)} for path, content in sorted(commit.files.items())]
        info = {"id": repo, "modelId": repo, "author": target.owner, "sha": commit.oid, "private": target.private}
        return _json(200, {**info, "siblings": siblings, "tags": [], "downloads": 0, "likes": 0})

    def tree(
        self, user: str | None, body: bytes, repo: str, revision: str, path: str = ""
    ) -> tuple[int, dict[str, str], bytes]:
        commit = self._commit(self._visible(repo, user), revision)
        prefix = f"{path.strip('/')}/" if path else ""
        entries = [
            {"type": "file", "path": name, "size": len(content), "oid": git_blob_oid(content)}
            for name, content in sorted(commit.files.items())
            if name.startswith(prefix)
        ]
        return _json(200, entries)

    def resolve(
        self, user: str | None, body: bytes, repo: str, revision: str, path: str
    ) -> tuple[int, dict[str, str], bytes]:
        commit = self._commit(self._visible(repo, user), revision)
        if path not in commit.files:
            raise HubError(404, f"{path} does not exist at {revision}", code="EntryNotFound", commit=commit.oid)
        content = commit.files[path]
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{git_blob_oid(content)}"',
            "X-Repo-Commit": commit.oid,
        }
        return 200, headers, content

    # ---------------------------------------------------------------------------------------- access

    def _visible(self, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and repo.owner != user):
            raise HubError(404, "Repository not found", code="RepoNotFound")
        return repo

    def _writable(self, repo_id: str, user: str | None) -> Repo:
        repo = self._visible(repo_id, user)
        if user is None:
            raise HubError(401, "You must be authenticated to write to a repository")
        if repo.owner != user:
            raise HubError(403, f"You don't have write access to {repo_id}")
        return repo

    @staticmethod
    def _commit(repo: Repo, revision: str) -> Commit:
        commit = repo.at(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return commit


def _json(status: int, payload: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _handler_class(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._answer()

        def do_HEAD(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            body = self._read_body()
            try:
                user = self._user()
                status, headers, content = hub.handle(self.command, urlsplit(self.path).path, user, body)
            except HubError as error:
                status, headers, content = _json(error.status, {"error": error.message, **error.payload})
                headers["X-Error-Message"] = error.message
                if error.code:
                    headers["X-Error-Code"] = error.code
                if error.commit:
                    headers["X-Repo-Commit"] = error.commit
                if "retry_after" in error.payload:
                    headers["Retry-After"] = str(error.payload["retry_after"])
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        def _user(self) -> str | None:
            authorization = self.headers.get("Authorization")
            if authorization is None:
                return None
            user = hub.tokens.get(authorization.removeprefix("Bearer ").strip())
            if user is None:
                raise HubError(401, "Invalid credentials in Authorization header")
            return user

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def log_message(self, format: str, *args: Any) -> None:  # quiet: requests are recorded on the hub
            pass

    return Handler
