"""The local hub speaks the protocol well enough for huggingface_hub itself, faults included."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub import errors as hf_errors
from huggingface_hub.hf_api import RepoFile

from lemfleet.hub import DEFAULT_FILE as Q4
from lemfleet.hub import DEFAULT_REPO as LEM_REPO
from tests.hubserver import HubServer

if TYPE_CHECKING:
    from tests.integration.conftest import LocalHub


def test_lfs_resolve_redirects_to_the_cdn_with_the_hub_headers(local_hub: LocalHub) -> None:
    head = httpx.head(f"{local_hub.url}/{LEM_REPO}/resolve/main/{Q4}")
    assert head.status_code == 302
    sha256 = local_hub.sha256(LEM_REPO, Q4)
    assert head.headers["X-Repo-Commit"] == local_hub.server.commit(LEM_REPO)
    assert head.headers["X-Linked-Etag"] == f'"{sha256}"'
    assert head.headers["X-Linked-Size"] == "1000003"
    assert head.headers["Location"].startswith(f"{local_hub.server.cdn_url}/lfs/{sha256}?")
    body = httpx.get(head.headers["Location"])
    assert body.status_code == 200
    assert hashlib.sha256(body.content).hexdigest() == sha256


def test_git_file_is_served_directly_with_its_blob_id(local_hub: LocalHub) -> None:
    data = local_hub.path(LEM_REPO, "README.md").read_bytes()
    answer = httpx.get(f"{local_hub.url}/{LEM_REPO}/resolve/main/README.md")
    assert answer.status_code == 200 and answer.content == data
    git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert answer.headers["ETag"] == f'"{git_oid}"'


def test_ranges_are_answered_with_206(local_hub: LocalHub) -> None:
    data = local_hub.path(LEM_REPO, Q4).read_bytes()
    cdn = httpx.head(f"{local_hub.url}/{LEM_REPO}/resolve/main/{Q4}").headers["Location"]
    tail = httpx.get(cdn, headers={"Range": "bytes=1000000-"})
    assert tail.status_code == 206 and tail.content == data[1000000:]
    assert tail.headers["Content-Range"] == "bytes 1000000-1000002/1000003"
    middle = httpx.get(cdn, headers={"Range": "bytes=10-19"})
    assert middle.content == data[10:20]
    assert httpx.get(cdn, headers={"Range": "bytes=-5"}).content == data[-5:]
    beyond = httpx.get(cdn, headers={"Range": "bytes=2000000-"})
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == "bytes */1000003"


def test_cdn_refuses_an_unsigned_link(local_hub: LocalHub) -> None:
    cdn = httpx.head(f"{local_hub.url}/{LEM_REPO}/resolve/main/{Q4}").headers["Location"]
    assert httpx.get(cdn.replace("signature=", "signature=0")).status_code == 403


def test_huggingface_hub_reads_metadata_and_listings(local_hub: LocalHub) -> None:
    api = HfApi(endpoint=local_hub.url)
    info = api.model_info(LEM_REPO, revision="main", files_metadata=True)
    assert info.sha == local_hub.server.commit(LEM_REPO)
    sizes = {s.rfilename: (s.size, s.lfs.sha256 if s.lfs else None) for s in info.siblings or []}
    assert sizes[Q4] == (1_000_003, local_hub.sha256(LEM_REPO, Q4))
    assert sizes["README.md"] == (1_234, None)
    paths = api.get_paths_info(LEM_REPO, [Q4, "absent.gguf"])
    assert [(p.path, p.lfs.sha256 if isinstance(p, RepoFile) and p.lfs else None) for p in paths] == [
        (Q4, local_hub.sha256(LEM_REPO, Q4))
    ]
    assert Q4 in api.list_repo_files(LEM_REPO)
    url = hf_hub_url(LEM_REPO, Q4, endpoint=local_hub.url)
    meta = get_hf_file_metadata(url, endpoint=local_hub.url)
    assert (meta.etag, meta.size) == (local_hub.sha256(LEM_REPO, Q4), 1_000_003)


@pytest.mark.parametrize(
    ("repo", "filename", "revision", "token", "error", "status"),
    [
        ("acme/absent", "x.gguf", "main", None, hf_errors.RepositoryNotFoundError, 404),
        (LEM_REPO, "absent.gguf", "main", None, hf_errors.RemoteEntryNotFoundError, 404),
        (LEM_REPO, Q4, "v9.9", None, hf_errors.RevisionNotFoundError, 404),
        ("acme/gated", "model-Q4_K_M.gguf", "main", None, hf_errors.GatedRepoError, 401),
        ("acme/gated", "model-Q4_K_M.gguf", "main", "other", hf_errors.GatedRepoError, 403),
        ("acme/private", "model-Q4_K_M.gguf", "main", None, hf_errors.RepositoryNotFoundError, 401),
        ("acme/private", "model-Q4_K_M.gguf", "main", "hf_wrong", hf_errors.HfHubHTTPError, 401),
    ],
)
def test_errors_become_huggingface_hub_error_classes(
    local_hub: LocalHub,
    tmp_path: Path,
    no_hf_token: None,
    repo: str,
    filename: str,
    revision: str,
    token: str | None,
    error: type[Exception],
    status: int,
) -> None:
    token = local_hub.other_token if token == "other" else token
    with pytest.raises(error) as caught:
        hf_hub_download(
            repo,
            filename,
            revision=revision,
            cache_dir=tmp_path,
            endpoint=local_hub.url,
            token=token,
        )
    assert caught.value.response.status_code == status  # type: ignore[attr-defined]


def test_a_granted_token_downloads_and_never_reaches_the_cdn(local_hub: LocalHub, tmp_path: Path) -> None:
    path = hf_hub_download(
        "acme/gated",
        "model-Q4_K_M.gguf",
        cache_dir=tmp_path,
        endpoint=local_hub.url,
        token=local_hub.good_token,
    )
    assert Path(path).read_bytes() == local_hub.path("acme/gated", "model-Q4_K_M.gguf").read_bytes()
    seen = {(r.server, r.authorized) for r in local_hub.server.requests if "gated" in r.path or r.server == "cdn"}
    assert seen == {("hub", True), ("cdn", False)}


def test_a_cut_body_is_resumed_by_the_client_within_one_call(local_hub: LocalHub, tmp_path: Path) -> None:
    repo, name = "acme/big-GGUF", "big-Q4_K_M.gguf"
    local_hub.server.cut_next_body(15 * 1024 * 1024)
    path = hf_hub_download(repo, name, cache_dir=tmp_path, endpoint=local_hub.url)
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == local_hub.sha256(repo, name)
    # The client writes 10 MiB chunks; the bytes after the last whole chunk are fetched again.
    assert local_hub.cdn_gets() == [None, "bytes=10485760-"]


def test_refused_and_corrupted_bodies(local_hub: LocalHub) -> None:
    cdn = httpx.head(f"{local_hub.url}/{LEM_REPO}/resolve/main/{Q4}").headers["Location"]
    local_hub.server.refuse_next(2, status=503)
    assert [httpx.get(cdn).status_code for _ in range(3)] == [503, 503, 200]
    local_hub.server.corrupt_next_body()
    bad, good = httpx.get(cdn).content, httpx.get(cdn).content
    assert len(bad) == len(good) and bad != good and bad[1:] == good[1:]


def test_cli_serves_a_root(hub_root: Path, free_port: Callable[[], int]) -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "tests.hubserver",
        "--root",
        str(hub_root),
        "--port",
        str(port),
    ]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith(f"HF_ENDPOINT=http://127.0.0.1:{port} ")
        deadline = time.monotonic() + 10
        info = HfApi(endpoint=f"http://127.0.0.1:{port}").model_info(LEM_REPO)
        assert time.monotonic() < deadline
        assert Q4 in [s.rfilename for s in info.siblings or []]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_server_on_all_addresses_redirects_each_client_to_the_address_it_used(hub_root: Path, tmp_path: Path) -> None:
    # 127.0.0.2 stands for a gateway address: another address of this machine, on which a
    # client elsewhere (a test-bed host) reaches the server.
    with HubServer(hub_root, host="0.0.0.0") as server:
        assert server.url == f"http://127.0.0.1:{server.url.rsplit(':', 1)[1]}"
        endpoint = server.url_at("127.0.0.2")
        head = httpx.head(f"{endpoint}/{LEM_REPO}/resolve/main/{Q4}")
        assert head.headers["Location"].startswith(f"http://127.0.0.2:{server.cdn_url.rsplit(':', 1)[1]}/lfs/")
        path = hf_hub_download(LEM_REPO, Q4, cache_dir=tmp_path, endpoint=endpoint)
        assert Path(path).read_bytes() == (hub_root / LEM_REPO / Q4).read_bytes()
        cdn = [r for r in server.requests if r.server == "cdn" and r.method == "GET"]
        # The peer address is recorded: the kernel answers 127.0.0.2 from lo's own 127.0.0.1.
        assert [r.client for r in cdn] == ["127.0.0.1"]


def test_a_server_on_one_address_keeps_its_own_cdn_address(local_hub: LocalHub) -> None:
    head = httpx.head(f"{local_hub.url}/{LEM_REPO}/resolve/main/{Q4}", headers={"Host": "elsewhere.example:80"})
    assert head.headers["Location"].startswith(f"{local_hub.server.cdn_url}/lfs/")
