"""Build trust and build once: the cache manifest, the leader/follower choice, and the receiving host's check.

The receiving host's script runs here for real (sh, tar, sha256sum, runuser) on a
bundle packed like a building host packs one, with a stand-in binary.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lemfleet.roles import build_cache, build_ops
from lemfleet.roles.build_cache import BuildTrustError, CacheEntry
from lemfleet.roles.build_share import BuildShare, BuildShareError

BID = "0123456789abcdef"


def _build_dir(root: Path, bid: str = BID, script: str = "#!/bin/sh\necho version: 1\n") -> Path:
    build = root / bid
    (build / "bin").mkdir(parents=True)
    binary = build / "bin" / "llama-server"
    binary.write_text(script)
    binary.chmod(0o755)
    (build / "build.json").write_text(json.dumps({"build_id": bid}) + "\n")
    (build / "build.log").write_text("log\n")
    return build


def _sums(build: Path) -> str:
    return "".join(
        f"{hashlib.sha256((build / p).read_bytes()).hexdigest()}  {p}\n" for p in ("bin/llama-server", "build.json")
    )


def _pack(root: Path, bid: str = BID) -> Path:
    bundle = root / f"{bid}.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        tar.add(root / bid, arcname=bid)
    return bundle


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_publish_keeps_a_bundle_whose_sha256_is_the_one_its_host_recorded(tmp_path: Path):
    host_side, cache = tmp_path / "host", tmp_path / "cache"
    cache.mkdir()
    build = _build_dir(host_side)
    partial = cache / ".partial"
    partial.write_bytes(_pack(host_side).read_bytes())
    entry = build_cache.publish(cache, BID, partial, _sha(partial) + "\n", _sums(build), "tb1")
    assert entry.bundle == cache / f"{BID}.tar.gz" and not partial.exists()
    manifest = json.loads((cache / f"{BID}.json").read_text())
    assert manifest["bundle_sha256"] == _sha(entry.bundle) and manifest["built_on"] == "tb1"
    assert manifest["recorded_on"] == "host"
    assert set(manifest["files"]) == {"bin/llama-server", "build.json"}
    assert build_cache.read_entry(cache, BID) == entry


def test_publish_refuses_a_bundle_changed_on_the_way_and_caches_nothing(tmp_path: Path):
    host_side, cache = tmp_path / "host", tmp_path / "cache"
    cache.mkdir()
    build = _build_dir(host_side)
    partial = cache / ".partial"
    partial.write_bytes(_pack(host_side).read_bytes() + b"x")
    with pytest.raises(BuildTrustError, match=r"not the .* recorded there when it was packed"):
        build_cache.publish(cache, BID, partial, _sha(_pack(host_side)), _sums(build), "tb1")
    assert list(cache.iterdir()) == []
    with pytest.raises(BuildTrustError, match="recorded no sha256"):
        build_cache.publish(cache, BID, partial, "", _sums(build), "tb1")


@pytest.mark.parametrize(
    "sums",
    ["", "nothex  bin/llama-server\n", f"{'a' * 64}  ../etc/passwd\n{'a' * 64}  bin/llama-server\n",
     f"{'a' * 64}  bin/llama-server\n{'b' * 64}  bin/llama-server\n"],
)  # fmt: skip
def test_sums_that_are_not_plain_sha256_lines_are_refused(sums: str):
    with pytest.raises(BuildTrustError):
        build_cache.parse_sums(sums, "test")


def test_a_cache_entry_from_before_manifests_is_adopted_once_and_then_checked(tmp_path: Path):
    build = _build_dir(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    bundle = _pack(tmp_path)
    bundle.rename(cache / bundle.name)
    entry = build_cache.read_entry(cache, BID)
    assert entry is not None and entry.recorded_on == "controller"
    assert entry.bundle_sha256 == _sha(cache / bundle.name)
    assert entry.sums_text() == _sums(build)  # the log is not part of the sums
    manifest = json.loads((cache / f"{BID}.json").read_text())
    assert manifest["adopted"] and manifest["recorded_on"] == "controller"
    # Adopted once: a later change of the bundle no longer changes the recorded sha256.
    (cache / bundle.name).write_bytes(b"tampered")
    again = build_cache.read_entry(cache, BID)
    assert again is not None and again.bundle_sha256 == entry.bundle_sha256


def test_a_bundle_that_is_not_one_build_directory_is_not_adopted(tmp_path: Path):
    _build_dir(tmp_path, "other")
    cache = tmp_path / "cache"
    cache.mkdir()
    with tarfile.open(cache / f"{BID}.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "other", arcname="other")
    with pytest.raises(BuildTrustError, match="not adopted"):
        build_cache.read_entry(cache, BID)
    assert not (cache / f"{BID}.json").exists()


def test_no_bundle_no_entry_and_a_broken_manifest_is_a_clear_error(tmp_path: Path):
    assert build_cache.read_entry(tmp_path, BID) is None
    (tmp_path / f"{BID}.tar.gz").write_bytes(b"x")
    (tmp_path / f"{BID}.json").write_text('{"build_id": "other"}')
    with pytest.raises(BuildTrustError, match=r"not a valid build manifest.*delete it"):
        build_cache.read_entry(tmp_path, BID)


# -- leader and followers


def test_the_leader_is_the_first_registered_host_to_ask_and_stays_chosen():
    share = BuildShare()
    for name, order in (("tb3", 2), ("tb1", 0), ("tb2", 1)):  # registered in greenlet order, not inventory order
        share.register(BID, name, order)
    # Under --serial pyinfra may run tb3 first: it asks first, so it leads and runs before the others.
    assert share.is_leader(BID, "tb3", lambda h: False)
    assert not share.is_leader(BID, "tb1", lambda h: False) and share.leader(BID, lambda h: True) == "tb3"
    assert share.registered(BID) == ["tb1", "tb2", "tb3"]


def test_a_host_that_cannot_lead_leaves_it_to_the_first_in_inventory_order_that_has_not_failed():
    share = BuildShare()
    for name, order in (("tb3", 2), ("tb1", 0), ("tb2", 1)):
        share.register(BID, name, order)
    assert not share.is_leader(BID, "tb9", lambda h: h == "tb1")  # not registered: the cache held its build
    assert share.leader(BID, lambda h: False) == "tb2"
    other = BuildShare()
    other.register(BID, "tb1", 0)
    with pytest.raises(BuildShareError, match="every host that needs it has failed"):
        other.is_leader(BID, "tb1", lambda h: True)


def test_followers_wait_for_the_leader_to_publish():
    share = BuildShare()
    share.register(BID, "tb1", 0)
    share.register(BID, "tb2", 1)
    waited: list[str] = []
    follower = threading.Thread(target=lambda: waited.append(share.wait(BID, lambda h: False, poll_s=0.05)))
    follower.start()
    time.sleep(0.3)
    assert follower.is_alive() and not waited
    share.publish(BID)
    follower.join(5)
    assert waited == ["tb1"]


def test_a_follower_stops_waiting_when_its_leader_fails_or_time_is_up():
    share = BuildShare()
    share.register(BID, "tb1", 0)
    share.register(BID, "tb2", 1)
    assert share.leader(BID, lambda h: False) == "tb1"
    with pytest.raises(BuildShareError, match=r"compiled for this run by tb1.*tb1 failed"):
        share.wait(BID, lambda h: h == "tb1", poll_s=0.01)
    with pytest.raises(BuildShareError, match="did not publish it within"):
        share.wait(BID, lambda h: False, limit_s=0.05, poll_s=0.01)
    share.publish(BID)
    assert share.wait(BID, lambda h: h == "tb1") == "tb1"  # published: the leader's later state does not matter


def test_one_build_id_one_leader_each():
    share = BuildShare()
    share.register("a" * 16, "tb1", 0)
    share.register("b" * 16, "tb2", 1)
    share.register("b" * 16, "tb3", 2)
    assert share.leader("a" * 16, lambda h: False) == "tb1"
    assert share.leader("b" * 16, lambda h: False) == "tb2"


# -- the receiving host's check, run for real


@pytest.fixture
def place(tmp_path: Path) -> Iterator[Path]:
    """A folder that ``nobody`` can reach (pytest's own are private to root), as /opt/lemfleet is on a host."""
    folder = Path(tempfile.mkdtemp(prefix="lemfleet-receive-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def _receive(tmp_path: Path, bundle: Path, entry: CacheEntry) -> subprocess.CompletedProcess[str]:
    builds = tmp_path / "builds"
    builds.mkdir(exist_ok=True)
    tmp = tmp_path / "incoming.tar.gz.partial"
    tmp.write_bytes(bundle.read_bytes())
    script = build_ops.install_script(BID, str(tmp), entry).replace(build_ops.BUILDS, str(builds))
    if os.geteuid() != 0:  # runuser needs root; elsewhere the stand-in binary runs as this user
        script = script.replace(f"runuser -u {build_ops.RUN_AS} -- ", "")
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)


def _entry(bundle: Path, build: Path, sha: str | None = None) -> CacheEntry:
    files = build_cache.parse_sums(_sums(build), "test")
    return CacheEntry(BID, bundle, sha or _sha(bundle), files, "tb1", "host")


def test_a_received_build_is_installed_only_when_its_sha256_matches(place: Path):
    tmp_path = place
    source = tmp_path / "src"
    build = _build_dir(source)
    # The stand-in binary proves who runs it: never root.
    (build / "bin" / "llama-server").write_text('#!/bin/sh\n[ "$(id -u)" != 0 ] || exit 7\necho version: 1\n')
    bundle = _pack(source)
    proc = _receive(tmp_path, bundle, _entry(bundle, build))
    assert proc.returncode == 0, proc.stderr
    installed = tmp_path / "builds" / BID
    assert (installed / "bin" / "llama-server").read_text() == (build / "bin" / "llama-server").read_text()
    assert (installed / build_cache.SUMS).read_text() == _sums(build)
    assert not (tmp_path / "incoming.tar.gz.partial").exists()


def test_a_tampered_bundle_is_refused_with_both_sha256s_and_nothing_is_installed(place: Path):
    tmp_path = place
    source = tmp_path / "src"
    build = _build_dir(source)
    bundle = _pack(source)
    recorded = _sha(bundle)
    bundle.write_bytes(bundle.read_bytes() + b"tampered")
    proc = _receive(tmp_path, bundle, _entry(bundle, build, sha=recorded))
    assert proc.returncode == 1
    assert f"has sha256 {_sha(bundle)}, not the {recorded} recorded on tb1" in proc.stderr
    assert "refused, nothing was installed" in proc.stderr
    assert list((tmp_path / "builds").iterdir()) == []
    assert not (tmp_path / "incoming.tar.gz.partial").exists()


def test_files_that_differ_from_the_recorded_sums_are_refused(place: Path):
    tmp_path = place
    source = tmp_path / "src"
    build = _build_dir(source)
    entry = _entry(_pack(source), build)
    (build / "bin" / "llama-server").write_text("#!/bin/sh\necho other\n")
    bundle = _pack(source)  # a bundle whose own sha256 is recorded, holding another binary than the sums say
    proc = _receive(tmp_path, bundle, CacheEntry(BID, bundle, _sha(bundle), entry.files, "tb1", "host"))
    assert proc.returncode == 1 and "its files do not match the sha256 sums recorded on tb1" in proc.stderr
    assert list((tmp_path / "builds").iterdir()) == []
