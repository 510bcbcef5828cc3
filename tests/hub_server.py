"""A real HTTP server on 127.0.0.1 that answers like the Hugging Face Hub, for the calls huggingface_hub makes.

Tests point the real ``huggingface_hub`` client at it (``endpoint=`` / ``HF_ENDPOINT``) instead of mocking it, so
what they exercise is the client's own request, redirect, ``Range`` and error handling. Routes served (as read
from huggingface_hub 2.4's ``hf_api.py`` / ``file_download.py``):

* ``GET /api/models?filter=..&filter=..&search=..&author=..&sort=..&limit=..`` -- ``HfApi.list_models``: every
  ``filter`` value must be one of the repo's tags (the Hub ANDs them), ``search`` is a case-insensitive substring
  of the id, ``sort`` orders descending; results come a page at a time (``limit``, else ``FakeHub.page_size``)
  with a ``Link: <...&cursor=N>; rel="next"`` header, as the Hub paginates.
* ``GET /api/models/{owner}/{name}[/revision/{rev}]`` -- ``HfApi.model_info`` / ``repo_info``; with ``?blobs=True``
  (``files_metadata=True``) each sibling carries ``size``, ``blobId`` and, for LFS files, ``lfs``.
* ``GET /api/models/{owner}/{name}/tree/{rev}[/{path}]`` -- ``list_repo_tree`` / ``list_repo_files`` /
  ``snapshot_download``.
* ``HEAD|GET /{owner}/{name}/resolve/{rev}/{file}`` -- ``get_hf_file_metadata`` / ``hf_hub_download``. Small
  ("git") files answer ``200`` with ``ETag`` (git blob sha1), ``X-Repo-Commit`` and ``Content-Length``. LFS files
  (``*.safetensors``) answer ``302`` to a CDN URL on another origin (``localhost`` instead of ``127.0.0.1``, so the
  client treats it as off-Hub and must not forward the token), with ``X-Linked-Etag`` (sha256), ``X-Linked-Size``
  and ``X-Repo-Commit``, as the Hub does.
* ``HEAD|GET /cdn/{sha256}/{file}`` -- the CDN: plain bytes with ``Range`` support (``206`` + ``Content-Range``).

Errors carry the Hub's ``X-Error-Code`` header (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``,
``GatedRepo``) so ``hf_raise_for_status`` raises the same exception types as against the real Hub.

Fault injection, per repo and file name: cut the connection at given byte offsets (each offset once), hold the
stream at an offset until the test releases it (deterministic "download in progress" states without timing),
answer the next GETs with given status codes, or ignore ``Range`` headers.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import socket
import struct
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf", ".model")
HOLD_TIMEOUT_S = 30.0  # a held stream gives up after this long, so a failing test cannot hang the suite


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file, which the Hub reports as ``blobId`` and as the ETag of small files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Hold:
    """Stop streaming a file at ``offset`` until ``release`` is set; ``reached`` is set when the stream gets there."""

    offset: int
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@dataclass
class FakeRepo:
    """One model repo: file name -> bytes at a single commit, plus its access rule and fault plan."""

    repo_id: str
    files: dict[str, bytes]
    token: str | None = None  # when set, file downloads need ``Authorization: Bearer <token>`` (a gated repo)
    cut_at: dict[str, list[int]] = field(default_factory=dict)
    hold: dict[str, Hold] = field(default_factory=dict)
    fail_next: dict[str, list[int]] = field(default_factory=dict)
    ignore_range: bool = False
    tamper: dict[str, bytes] = field(default_factory=dict)  # served instead of the real bytes (same metadata)
    _sha256: dict[str, str] = field(default_factory=dict, repr=False)
    cut_with_reset: bool = False  # cut with a TCP reset (ECONNRESET) instead of a clean close mid-body
    tags: list[str] | None = None  # None: "safetensors", config.json's model_type and "mlx", as the Hub derives them
    downloads: int = 0
    likes: int = 0

    def hub_tags(self) -> list[str]:
        if self.tags is not None:
            return list(self.tags)
        tags = ["safetensors"]
        try:
            model_type = json.loads(self.files.get("config.json", b"{}")).get("model_type")
        except (ValueError, AttributeError):
            model_type = None
        if isinstance(model_type, str):
            tags += [model_type, "mlx"]
        return tags

    @functools.cached_property
    def commit(self) -> str:
        h = hashlib.sha1(self.repo_id.encode())
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + bytes.fromhex(self.sha256(name)))
        return h.hexdigest()

    def is_lfs(self, name: str) -> bool:
        return name.endswith(LFS_SUFFIXES)

    def sha256(self, name: str) -> str:
        if name not in self._sha256:
            self._sha256[name] = hashlib.sha256(self.files[name]).hexdigest()
        return self._sha256[name]

    def sibling(self, name: str, *, blobs: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"rfilename": name}
        if blobs:
            data = self.files[name]
            entry["size"] = len(data)
            entry["blobId"] = git_blob_sha1(self._pointer(name) if self.is_lfs(name) else data)
            if self.is_lfs(name):
                entry["lfs"] = {"size": len(data), "sha256": self.sha256(name), "pointerSize": len(self._pointer(name))}
        return entry

    def tree_entry(self, name: str) -> dict[str, Any]:
        data = self.files[name]
        entry: dict[str, Any] = {"type": "file", "path": name, "size": len(data)}
        if self.is_lfs(name):
            entry["oid"] = git_blob_sha1(self._pointer(name))
            entry["lfs"] = {"oid": self.sha256(name), "size": len(data), "pointerSize": len(self._pointer(name))}
        else:
            entry["oid"] = git_blob_sha1(data)
        return entry

    def _pointer(self, name: str) -> bytes:
        spec = "version https://git-lfs.github.com/spec/v1"
        return f"{spec}\noid sha256:{self.sha256(name)}\nsize {len(self.files[name])}\n".encode()


class FakeHub:
    """The server: ``with FakeHub() as hub: hub.add_folder("owner/name", path); ... hub.url``."""

    def __init__(self, *, cdn_host: str = "localhost") -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.log: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self  # type: ignore[attr-defined]
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cdn_url = f"http://{cdn_host}:{self.port}"
        self._thread: threading.Thread | None = None
        self.page_size = 1000  # the Hub's page size for list requests without ``limit``
        self._connections: set[socket.socket] = set()

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> FakeHub:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        for repo in self.repos.values():
            for hold in repo.hold.values():
                hold.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:  # kept-alive connections would go on answering: the "network" is gone now
            open_connections, self._connections = list(self._connections), set()
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- content ---------------------------------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        token: str | None = None,
        tags: list[str] | None = None,
        downloads: int = 0,
    ) -> FakeRepo:
        repo = FakeRepo(repo_id=repo_id, files=dict(files), token=token, tags=tags, downloads=downloads)
        self.repos[repo_id] = repo
        return repo

    def add_folder(
        self,
        repo_id: str,
        folder: str | Path,
        *,
        token: str | None = None,
        extra: dict[str, bytes] | None = None,
        tags: list[str] | None = None,
        downloads: int = 0,
    ) -> FakeRepo:
        """Serve every file of ``folder`` (recursively, relative paths) as the repo's content."""
        folder = Path(folder)
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        files.update(extra or {})
        return self.add_repo(repo_id, files, token=token, tags=tags, downloads=downloads)

    def requests(self, method: str | None = None, path_contains: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.log if (method is None or r["method"] == method) and path_contains in r["path"]]

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.log.append(entry)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    disable_nagle_algorithm = True  # else Nagle + delayed ACKs stall every small write by ~40 ms

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self) -> None:
        with self.hub._lock:
            self.hub._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    @property
    def hub(self) -> FakeHub:
        return self.server.hub  # type: ignore[attr-defined]

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    # -- routing ---------------------------------------------------------------------------------------------
    def _dispatch(self, *, head: bool) -> None:
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.split("/")[1:]]
        query = parse_qs(split.query)
        self.hub._record(
            {
                "method": self.command,
                "path": split.path,
                "query": query,
                "range": self.headers.get("Range"),
                "authorization": self.headers.get("Authorization"),
                "host": self.headers.get("Host"),
            }
        )
        try:
            if parts == ["api", "models"]:
                self._api_list(query)
            elif parts[:2] == ["api", "models"] and len(parts) >= 4:
                self._api_model(parts[2:], query)
            elif parts and parts[0] == "cdn" and len(parts) >= 3:
                self._cdn(parts[1], "/".join(parts[2:]), query.get("repo", [""])[0], head=head)
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head=head)
            else:
                self._error(404, None, "Not found")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _repo_or_error(self, repo_id: str) -> FakeRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
        return repo

    def _revision_ok(self, repo: FakeRepo, rev: str) -> bool:
        if rev in ("main", repo.commit):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", commit=None)
        return False

    # -- /api/models -----------------------------------------------------------------------------------------
    def _api_list(self, query: dict[str, list[str]]) -> None:
        """The model list, filtered, sorted and paginated as the Hub does it (see the module docstring)."""
        wanted = query.get("filter", [])
        search = query.get("search", [""])[0].lower()
        author = query.get("author", [""])[0]
        repos = [
            r
            for r in self.hub.repos.values()
            if all(t in r.hub_tags() for t in wanted)
            and search in r.repo_id.lower()
            and (not author or r.repo_id.split("/")[0] == author)
        ]
        sort = query.get("sort", [""])[0]
        if sort in ("downloads", "likes"):
            repos.sort(key=lambda r: (getattr(r, sort), r.repo_id), reverse=True)
        else:
            repos.sort(key=lambda r: r.repo_id)
        limit = int(query.get("limit", [str(self.hub.page_size)])[0])
        page_size = max(1, min(limit, self.hub.page_size))
        start = int(query.get("cursor", ["0"])[0])
        page = repos[start : start + page_size]
        now = datetime(2025, 11, 20, tzinfo=UTC).isoformat().replace("+00:00", ".000Z")
        items = [
            {
                "_id": hashlib.md5(r.repo_id.encode()).hexdigest()[:24],
                "id": r.repo_id,
                "modelId": r.repo_id,
                "likes": r.likes,
                "trendingScore": 0,
                "private": False,
                "downloads": r.downloads,
                "tags": r.hub_tags(),
                "pipeline_tag": "text-generation",
                "library_name": "mlx" if "mlx" in r.hub_tags() else "transformers",
                "createdAt": now,
            }
            for r in page
        ]
        headers = {}
        if start + page_size < len(repos):
            rest = [(k, v) for k, values in query.items() if k != "cursor" for v in values]
            rest.append(("cursor", str(start + page_size)))
            url = f"{self.hub.url}/api/models?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in rest)
            headers["Link"] = f'<{url}>; rel="next"'
        self._json(items, headers=headers)

    def _api_model(self, parts: list[str], query: dict[str, list[str]]) -> None:
        repo_id = f"{parts[0]}/{parts[1]}"
        rest = parts[2:]
        repo = self._repo_or_error(repo_id)
        if repo is None:
            return
        if not rest:
            rev = "main"
        elif rest[0] in ("revision", "tree") and len(rest) >= 2:
            rev = rest[1]
        else:
            self._error(404, None, "Not found")
            return
        if not self._revision_ok(repo, rev):
            return
        if rest and rest[0] == "tree":
            prefix = "/".join(rest[2:])
            names = [n for n in sorted(repo.files) if not prefix or n.startswith(prefix.rstrip("/") + "/")]
            self._json([repo.tree_entry(n) for n in names])
            return
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        now = datetime(2025, 11, 20, tzinfo=UTC).isoformat().replace("+00:00", ".000Z")
        owner = repo_id.split("/")[0]
        self._json(
            {
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": owner,
                "sha": repo.commit,
                "lastModified": now,
                "createdAt": now,
                "private": False,
                "gated": "manual" if repo.token else False,
                "disabled": False,
                "likes": repo.likes,
                "library_name": "mlx" if "mlx" in repo.hub_tags() else "transformers",
                "tags": repo.hub_tags(),
                "downloads": repo.downloads,
                "siblings": [repo.sibling(n, blobs=blobs) for n in sorted(repo.files)],
                "usedStorage": sum(len(d) for d in repo.files.values()),
            }
        )

    # -- /{repo}/resolve -------------------------------------------------------------------------------------
    def _resolve(self, repo_id: str, rev: str, name: str, *, head: bool) -> None:
        repo = self._repo_or_error(repo_id)
        if repo is None or not self._revision_ok(repo, rev):
            return
        if repo.token is not None and self.headers.get("Authorization") != f"Bearer {repo.token}":
            self._error(
                401,
                "GatedRepo",
                f"Access to model {repo_id} is restricted. You must have access to it and be authenticated to "
                "access it. Please log in.",
                commit=repo.commit,
            )
            return
        if name not in repo.files:
            self._error(404, "EntryNotFound", f'{name} does not exist on "{rev}"', commit=repo.commit)
            return
        data = repo.files[name]
        if repo.is_lfs(name):
            location = f"{self.hub.cdn_url}/cdn/{repo.sha256(name)}/{quote(name)}?repo={quote(repo_id, safe='')}"
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("X-Linked-Etag", f'"{repo.sha256(name)}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("ETag", f'"{git_blob_sha1(repo._pointer(name))}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_bytes(repo, name, data, head=head, etag=git_blob_sha1(data), commit=repo.commit)

    # -- /cdn ------------------------------------------------------------------------------------------------
    def _cdn(self, sha: str, name: str, repo_id: str, *, head: bool) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is not None and name in repo.files and repo.is_lfs(name) and repo.sha256(name) == sha:
            self._send_bytes(repo, name, repo.files[name], head=head, etag=sha, commit=None)
            return
        self._error(404, None, "No such object")

    def _send_bytes(self, repo: FakeRepo, name: str, data: bytes, *, head: bool, etag: str, commit: str | None) -> None:
        data = repo.tamper.get(name, data)
        if not head and repo.fail_next.get(name):
            status = repo.fail_next[name].pop(0)
            self._error(status, None, "Injected failure")
            return
        size = len(data)
        start = 0
        range_header = self.headers.get("Range")
        if range_header and not repo.ignore_range and not head:
            spec = range_header.removeprefix("bytes=")
            first, _, last = spec.partition("-")
            start = int(first) if first else 0
            end = int(last) + 1 if last else size
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            end = min(end, size)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        else:
            end = size
            self.send_response(200)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{etag}"')
        if commit is not None:
            self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if head:
            return
        self._stream(repo, name, data, start, end)

    def _stream(self, repo: FakeRepo, name: str, data: bytes, start: int, end: int) -> None:
        """Write ``data[start:end]``, honouring the repo's cut and hold plans for this file."""
        cuts = repo.cut_at.get(name, [])
        cut = next((c for c in sorted(cuts) if start <= c < end), None)
        hold = repo.hold.get(name)
        pos = start
        if hold is not None and start <= hold.offset < end:
            self._write(data[pos : hold.offset])
            pos = hold.offset
            self.wfile.flush()
            hold.reached.set()
            hold.release.wait(HOLD_TIMEOUT_S)
        if cut is not None and cut >= pos:
            cuts.remove(cut)
            self._write(data[pos:cut])
            self.wfile.flush()
            self._drop_connection(reset=repo.cut_with_reset)
            return
        self._write(data[pos:end])

    def _write(self, chunk: bytes) -> None:
        step = 16 * 1024
        for i in range(0, len(chunk), step):
            self.wfile.write(chunk[i : i + step])

    def _drop_connection(self, *, reset: bool) -> None:
        """Close the socket mid-body, as a dropped Wi-Fi connection or a killed proxy would.

        A clean close (FIN) reaches the client as "peer closed connection without sending complete message body";
        a reset (RST, via a zero linger time) as ECONNRESET. huggingface_hub handles the two in different places.
        """
        self.close_connection = True
        try:
            if reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- helpers ---------------------------------------------------------------------------------------------
    def _json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code is not None:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit is not None:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
