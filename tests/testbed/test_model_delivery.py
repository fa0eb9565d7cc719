"""Model delivery on real test-bed hosts: the real hub client against a local hub, real pushes, real faults.

A :class:`HubServer` listening on all of the controller's addresses serves generated gemma3 GGUFs (real
files that llama-server loads) as ``lthn/LEM-Gemma3-1B-GGUF``, plus a gated, a private and a large repo.
Controller-mode runs reach it on loopback. In host mode a host reaches it at its own gateway address
(``HF_ENDPOINT=http://10.213.N.1:PORT``), which no other host can route to, so host-mode runs go to one
host at a time. The tests run in file order on shared hosts: tb1 and tb2 from ``fleet``, tb3 bare.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lemfleet import testbed
from lemfleet.demo import vocab_path
from lemfleet.hub import DEFAULT_REPO, download, resolve_model
from lemfleet.hub import sha256_file as sha256
from lemfleet.roles.model_source import CONTEXT_RESERVE
from lemfleet.testbed import HostRecord
from lemfleet.testbed.paths import SSH_CONFIG
from lemfleet.testbed.paths import run as run_here
from lemfleet.testbed.tinygguf import TinyShape, write_tiny_gemma3
from tests.hubserver import HubServer, Request
from tests.testbed.conftest import PyinfraRun, pyinfra

UNIT = "lemfleet-llama.service"
MODEL_DIR = "/var/lib/lemfleet/models"
STEM = "LEM-Gemma3-1B"
GATED, PRIVATE, BIG = "acme/gated-GGUF", "acme/private-GGUF", "acme/big-GGUF"
GOOD_TOKEN = "hf_lemfleet-testbed-good-9d41c7"  # may read the gated and private repos
OTHER_TOKEN = "hf_lemfleet-testbed-other-3a07e"  # a valid account without access to them
MIB = 1024 * 1024
Hosts = list[HostRecord]
SMALL = "/run/lemfleet-small"  # a small filesystem for the full-disk test
CUT = 3 * MIB + 12_345  # where a cut transfer stops (host mode: curl keeps every byte it got)

# (repo, file) -> (shape, seed). Bigger quants get more layers, so that quant=auto sees sizes in the
# usual order; BIG spans more than two of the hub client's 10 MiB chunks, so a cut leaves a partial.
MODELS = {
    (DEFAULT_REPO, f"{STEM}-Q4_K_M.gguf"): (TinyShape(layers=2), 41),
    (DEFAULT_REPO, f"{STEM}-Q5_K_M.gguf"): (TinyShape(layers=3), 51),
    (DEFAULT_REPO, f"{STEM}-Q8_0.gguf"): (TinyShape(layers=4), 81),
    (DEFAULT_REPO, f"{STEM}-BF16.gguf"): (TinyShape(layers=6), 161),
    (GATED, "gated-Q4_K_M.gguf"): (TinyShape(layers=2), 7),
    (PRIVATE, "private-Q4_K_M.gguf"): (TinyShape(layers=2), 8),
    (BIG, "big-Q4_K_M.gguf"): (TinyShape(layers=4, embd=256), 9),
}


@dataclass
class Controller:
    """The controller's side of hub deploys: the local hub, a cache of its own, every run's output."""

    hub: HubServer
    root: Path
    home: Path  # HF_HOME: no stored token
    cache: Path  # HF_HUB_CACHE
    runs: list[tuple[PyinfraRun, str | None]] = field(default_factory=list)  # with the token given

    def deploy(
        self, hosts: Hosts, *data: str, endpoint: str | None = None, token: str | None = None,
        offline: bool = False, cache: Path | None = None, dry: bool = False, timeout: float = 3600,
    ) -> PyinfraRun:  # fmt: skip
        """``pyinfra inventories/testbed.py deploy.py`` to ``hosts``, with the hub in ``HF_ENDPOINT``."""
        args = ["inventories/testbed.py", "deploy.py", "--json", "--dry" if dry else "-y"]
        for rec in hosts:
            args += ["--limit", rec.name]  # --limit takes one pattern; repeat it
        for item in data:
            args += ["--data", item]
        # Only the token given: none from this shell's environment or a stored login.
        env = {"HF_HOME": str(self.home), "HF_TOKEN_PATH": str(self.home / "token"),
               "HF_TOKEN": token or "", "HUGGING_FACE_HUB_TOKEN": "", "HF_HUB_CACHE": str(cache or self.cache),
               "HF_ENDPOINT": endpoint or self.hub.url, "HF_HUB_OFFLINE": "1" if offline else "0"}  # fmt: skip
        run = pyinfra(*args, env=env, timeout=timeout)
        self.runs.append((run, token))
        return run

    def file(self, repo: str, name: str) -> Path:
        return self.root / repo / name

    def dest(self, repo: str, name: str) -> str:
        """Where the deploy puts a file on a host: named by its sha256."""
        return f"{MODEL_DIR}/{sha256(self.file(repo, name))[:12]}-{name}"

    def since(self, index: int, server: str, client: str | None = None) -> list[Request]:
        """File-body requests (GET) to ``server`` after ``requests[index]``, from ``client`` if given."""
        return [
            r for r in self.hub.requests[index:]
            if r.server == server and r.method == "GET" and client in (None, r.client)
        ]  # fmt: skip


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    root = tmp_path_factory.mktemp("hub")
    for (repo, name), (shape, seed) in MODELS.items():
        write_tiny_gemma3(root / repo / name, vocab_path(), shape=shape, seed=seed, name=name.removesuffix(".gguf"))
    server = HubServer(root, host="0.0.0.0", tokens=[OTHER_TOKEN],
                       gated={GATED: [GOOD_TOKEN]}, private={PRIVATE: [GOOD_TOKEN]})  # fmt: skip
    with server:
        home = tmp_path_factory.mktemp("hf-home")
        yield Controller(server, root, home, home / "hub")


@pytest.fixture(scope="module")
def hosts(bed: Hosts, fleet: Hosts) -> Hosts:
    """tb1 and tb2 serving the tiny local model (``fleet``), tb3 only booted."""
    return bed[:3]


# -- what a host says -------------------------------------------------------------


def on_host(rec: HostRecord, command: str) -> str:
    return testbed.ssh(rec, command, check=False, timeout=300).strip()


def serving(rec: HostRecord) -> tuple[str, str]:
    """(MainPID, the model path llama-server reports in /props)."""
    props = json.loads(on_host(rec, "curl -sf http://127.0.0.1:8080/props") or "{}")
    return on_host(rec, f"systemctl show -p MainPID --value {UNIT}"), str(props.get("model_path"))


def model_files(rec: HostRecord) -> set[str]:
    return set(on_host(rec, f"ls -1d {MODEL_DIR}/* 2>/dev/null").split())


def host_sha256(rec: HostRecord, path: str) -> str:
    return on_host(rec, f"sha256sum {path}").split(" ")[0]


def changed_hosts(run: PyinfraRun, name: str) -> list[str]:
    """Hosts on which an operation whose name contains ``name`` changed something."""
    return sorted({h for op in run.json["results"]["operations"] if name in op["name"] for h in op["success"]})


def changed(run: PyinfraRun) -> int:
    return int(run.json["results"]["totals"]["success"])


# -- controller mode --------------------------------------------------------------


def test_controller_mode_downloads_once_and_pushes_to_three_hosts(hosts: Hosts, ctl: Controller) -> None:
    name = f"{STEM}-Q4_K_M.gguf"
    index, sent = len(ctl.hub.requests), ctl.hub.bytes_sent
    run = ctl.deploy(hosts)  # the defaults: the hub, lthn/LEM-Gemma3-1B-GGUF, Q4_K_M, controller delivery
    assert run.returncode == 0, run.output[-4000:]
    assert changed_hosts(run, f"Push {name}") == ["tb1", "tb2", "tb3"]
    assert [r.range for r in ctl.since(index, "cdn")] == [None]  # one download for three hosts
    assert ctl.hub.bytes_sent - sent == ctl.file(DEFAULT_REPO, name).stat().st_size
    dest = ctl.dest(DEFAULT_REPO, name)
    for rec in hosts:
        assert serving(rec)[1] == dest
        assert host_sha256(rec, dest) == sha256(ctl.file(DEFAULT_REPO, name))
        assert on_host(rec, f"stat -c '%U %a' {dest}") == "root 644"
        assert not [p for p in model_files(rec) if p.endswith(".partial")]


def test_a_second_controller_run_transfers_nothing(hosts: Hosts, ctl: Controller) -> None:
    assert ctl.deploy(hosts).returncode == 0  # the model is in place after this, whatever ran before
    index, sent = len(ctl.hub.requests), ctl.hub.bytes_sent
    run = ctl.deploy(hosts)
    assert run.returncode == 0, run.output[-3000:]
    assert changed(run) == 0, [o for o in run.json["results"]["operations"] if o["success"]]
    assert changed_hosts(run, "Push") == []
    assert ctl.since(index, "cdn") == [] and ctl.hub.bytes_sent == sent


def test_controller_mode_resumes_a_cut_download_on_the_next_run(hosts: Hosts, ctl: Controller) -> None:
    rec, name = hosts[2], "big-Q4_K_M.gguf"
    size, before = ctl.file(BIG, name).stat().st_size, serving(hosts[2])
    ctl.hub.cut_next_body(15 * MIB)
    ctl.hub.refuse_next(1, status=503)  # the client's own retry fails too, so the run ends
    failed = ctl.deploy([rec], f"model_repo={BIG}")
    assert failed.returncode != 0
    assert f"stopped at byte {10 * MIB} of {size} (HTTP 503)" in failed.output and "next run resumes" in failed.output
    assert serving(rec) == before  # resolving and fetching happen before any host is touched
    index, sent = len(ctl.hub.requests), ctl.hub.bytes_sent
    run = ctl.deploy([rec], f"model_repo={BIG}")
    assert run.returncode == 0, run.output[-3000:]
    assert [r.range for r in ctl.since(index, "cdn")] == [f"bytes={10 * MIB}-"]
    assert ctl.hub.bytes_sent - sent == size - 10 * MIB
    assert serving(rec)[1] == ctl.dest(BIG, name)


# -- host mode --------------------------------------------------------------------


def test_host_mode_downloads_the_resolved_url_on_the_host(hosts: Hosts, ctl: Controller) -> None:
    rec, name = hosts[0], f"{STEM}-Q5_K_M.gguf"
    endpoint, index = ctl.hub.url_at(rec.gateway), len(ctl.hub.requests)
    run = ctl.deploy([rec], "model_delivery=host", "model_quant=Q5_K_M", endpoint=endpoint)
    assert run.returncode == 0, run.output[-4000:]
    assert changed_hosts(run, f"Download {name} on the host") == [rec.name]
    assert changed_hosts(run, "Push") == []
    # The body went to the host alone: the controller only resolved (metadata, no CDN request).
    assert [(r.client, r.range) for r in ctl.since(index, "cdn")] == [(rec.address, None)]
    sha = sha256(ctl.file(DEFAULT_REPO, name))
    assert not list(ctl.cache.rglob(sha))
    assert serving(rec)[1] == ctl.dest(DEFAULT_REPO, name) and host_sha256(rec, ctl.dest(DEFAULT_REPO, name)) == sha
    index = len(ctl.hub.requests)
    again = ctl.deploy([rec], "model_delivery=host", "model_quant=Q5_K_M", endpoint=endpoint)
    assert again.returncode == 0 and changed(again) == 0, again.output[-3000:]
    assert ctl.since(index, "cdn") == []


def test_host_mode_resumes_a_cut_transfer_on_the_next_run(hosts: Hosts, ctl: Controller) -> None:
    rec, name = hosts[1], "big-Q4_K_M.gguf"
    dest, data = ctl.dest(BIG, name), ("model_delivery=host", f"model_repo={BIG}")
    endpoint, before = ctl.hub.url_at(rec.gateway), serving(rec)
    ctl.hub.cut_next_body(CUT)
    failed = ctl.deploy([rec], *data, endpoint=endpoint)
    assert failed.returncode != 0
    assert "failed (curl exit 18)" in failed.output, failed.output[-3000:]  # 18: partial file
    assert on_host(rec, f"stat -c %s {dest}.partial") == str(CUT)
    assert f"{dest}" not in model_files(rec) and serving(rec) == before
    index, sent = len(ctl.hub.requests), ctl.hub.bytes_sent
    run = ctl.deploy([rec], *data, endpoint=endpoint)
    assert run.returncode == 0, run.output[-3000:]
    assert [(r.client, r.range) for r in ctl.since(index, "cdn")] == [(rec.address, f"bytes={CUT}-")]
    assert ctl.hub.bytes_sent - sent == ctl.file(BIG, name).stat().st_size - CUT
    assert serving(rec)[1] == dest and f"{dest}.partial" not in model_files(rec)


def test_host_mode_rejects_a_corrupted_download_and_the_old_model_serves(hosts: Hosts, ctl: Controller) -> None:
    rec, name = hosts[2], f"{STEM}-Q8_0.gguf"
    dest, data = ctl.dest(DEFAULT_REPO, name), ("model_delivery=host", "model_quant=Q8_0")
    endpoint, before = ctl.hub.url_at(rec.gateway), serving(rec)
    ctl.hub.corrupt_next_body()
    failed = ctl.deploy([rec], *data, endpoint=endpoint)
    assert failed.returncode != 0
    assert "sha256 mismatch" in failed.output and "rejected" in failed.output, failed.output[-3000:]
    assert serving(rec) == before
    assert not {dest, f"{dest}.partial"} & model_files(rec)
    run = ctl.deploy([rec], *data, endpoint=endpoint)
    assert run.returncode == 0 and serving(rec)[1] == dest, run.output[-3000:]


# -- choosing the model -----------------------------------------------------------


def starts_since(rec: HostRecord, since: int) -> int:
    log = on_host(rec, f"journalctl -u {UNIT} -o cat --no-pager --since @{since}")
    return sum(line.startswith("Started ") for line in log.splitlines())


def test_a_quant_switch_restarts_once_and_keeps_the_previous_model(hosts: Hosts, ctl: Controller) -> None:
    rec = hosts[0]
    q4, q8, bf16 = (ctl.dest(DEFAULT_REPO, f"{STEM}-{q}.gguf") for q in ("Q4_K_M", "Q8_0", "BF16"))
    assert ctl.deploy([rec], "model_quant=Q4_K_M").returncode == 0  # the starting point
    time.sleep(1)
    pid, since = serving(rec)[0], int(time.time())
    run = ctl.deploy([rec], "model_quant=Q8_0")
    assert run.returncode == 0, run.output[-3000:]
    assert changed_hosts(run, "Restart lemfleet-llama") == [rec.name]
    after = serving(rec)
    assert after[0] != pid and after[1] == q8
    assert starts_since(rec, since) == 1
    # model_keep=2: the one serving, and the one that served before it, for a rollback.
    assert {p for p in model_files(rec) if p.endswith(".gguf")} == {q4, q8}
    run = ctl.deploy([rec], "model_quant=BF16")
    assert run.returncode == 0, run.output[-3000:]
    assert {p for p in model_files(rec) if p.endswith(".gguf")} == {q8, bf16}


def test_quant_auto_on_a_cpu_host_takes_the_largest_quant_its_ram_holds(hosts: Hosts, ctl: Controller) -> None:
    rec = hosts[1]  # every test-bed host sees the controller's RAM: gigabytes, so the largest file fits
    run = ctl.deploy([rec], "model_quant=auto")
    assert run.returncode == 0, run.output[-3000:]
    assert serving(rec)[1] == ctl.dest(DEFAULT_REPO, f"{STEM}-BF16.gguf")


def test_quant_auto_follows_each_hosts_memory_budget(hosts: Hosts, ctl: Controller) -> None:
    reserve = CONTEXT_RESERVE["cpu"]
    for rec, quant in ((hosts[0], "Q4_K_M"), (hosts[1], "Q8_0")):
        name = f"{STEM}-{quant}.gguf"
        budget = reserve + ctl.file(DEFAULT_REPO, name).stat().st_size  # exactly fits; the next size up does not
        run = ctl.deploy([rec], "model_quant=auto", f"model_memory_budget={budget}")
        assert run.returncode == 0, run.output[-3000:]
        assert serving(rec)[1] == ctl.dest(DEFAULT_REPO, name)
        record = json.loads(on_host(rec, "cat /etc/lemfleet/deployed.json"))
        assert f"model_quant=auto chose {quant}" in json.dumps(record["model"])
    before = serving(hosts[0])
    tight = reserve + ctl.file(DEFAULT_REPO, f"{STEM}-Q4_K_M.gguf").stat().st_size - 1
    run = ctl.deploy([hosts[0]], "model_quant=auto", f"model_memory_budget={tight}")
    assert run.returncode != 0 and "no quant fits the memory budget" in run.output
    assert serving(hosts[0]) == before


# -- refusals: nothing changes, the message says what to do ------------------------


def test_a_pinned_sha256_that_does_not_match_stops_the_deploy(hosts: Hosts, ctl: Controller) -> None:
    rec, name = hosts[0], f"{STEM}-Q5_K_M.gguf"
    before = serving(rec)
    wrong = "ab" * 32  # not all digits: pyinfra's --data would read "000..." as the integer 0
    run = ctl.deploy([rec], "model_quant=Q5_K_M", f"model_sha256={wrong}")
    assert run.returncode != 0
    assert f"model_sha256='{wrong}' does not match {DEFAULT_REPO}/{name}" in run.output
    assert f"whose sha256 is {sha256(ctl.file(DEFAULT_REPO, name))}" in run.output
    assert serving(rec) == before


@pytest.mark.parametrize(
    ("data", "token", "message"),
    [
        ((f"model_repo={GATED}",), None, f"{GATED} is a gated repo and no token was sent (401)"),
        ((f"model_repo={GATED}",), OTHER_TOKEN, "the token's account has not been granted access (403)"),
        ((f"model_repo={PRIVATE}",), None, f"model_repo='{PRIVATE}' was not found at {{url}} (401)"),
        ((f"model_repo={PRIVATE}",), "hf_lemfleetRevokedToken0000", "the hub rejected the token (401)"),
        (("model_repo=acme/absent-GGUF",), None, "model_repo='acme/absent-GGUF' was not found at {url} (404)"),
        ((f"model_file={STEM}-Q2_K.gguf",), None, f"model_file='{STEM}-Q2_K.gguf' is not in {DEFAULT_REPO}"),
    ],
    ids=["gated-401", "gated-403", "private-401", "bad-token-401", "repo-404", "missing-file"],
)
def test_hub_refusals_stop_the_deploy_with_what_to_do(
    hosts: Hosts, ctl: Controller, data: tuple[str, ...], token: str | None, message: str
) -> None:
    rec = hosts[0]
    before = serving(rec)
    run = ctl.deploy([rec], *data, token=token)
    assert run.returncode != 0
    assert message.format(url=ctl.hub.url) in run.output, run.output[-3000:]
    assert serving(rec) == before


def test_a_full_model_disk_fails_clearly_and_the_old_model_serves(hosts: Hosts, ctl: Controller) -> None:
    rec, before = hosts[1], serving(hosts[1])
    quant = "Q5_K_M" if before[1] == ctl.dest(DEFAULT_REPO, f"{STEM}-Q8_0.gguf") else "Q8_0"  # not the serving one
    name = f"{STEM}-{quant}.gguf"
    size = int(on_host(rec, f"stat -c %s {before[1]}"))
    # A small filesystem on the model directory, holding the serving model and 1 MiB more.
    kib = (size + MIB) // 1024 + 8
    testbed.ssh(rec, f"set -e; mkdir -p {SMALL}; mount -t tmpfs -o size={kib}k,mode=755 lemfleet-small {SMALL}; "
                     f"cp -p {before[1]} {SMALL}/; mount --bind {SMALL} {MODEL_DIR}")  # fmt: skip
    try:
        run = ctl.deploy([rec], f"model_quant={quant}")
        listing = model_files(rec)
    finally:
        on_host(rec, f"umount {MODEL_DIR}; umount {SMALL}; rmdir {SMALL}")
    assert run.returncode != 0
    assert f"not enough disk for {name}" in run.output and f"free under {MODEL_DIR}" in run.output, run.output[-3000:]
    assert listing == {before[1]}  # nothing transferred: no partial file, no new model
    assert serving(rec) == before


# -- an offline controller --------------------------------------------------------


def test_an_offline_controller_deploys_from_its_warm_cache(
    hosts: Hosts, ctl: Controller, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, name = hosts[2], f"{STEM}-Q5_K_M.gguf"
    # Warm the cache here, with the real client and no token from this shell.
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(ctl.home / "token"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    download(resolve_model(quant="Q5_K_M", endpoint=ctl.hub.url, cache_dir=ctl.cache), ctl.cache)
    index = len(ctl.hub.requests)
    run = ctl.deploy([rec], "model_quant=Q5_K_M", offline=True)  # HF_ENDPOINT still names the live hub
    assert run.returncode == 0, run.output[-3000:]
    assert ctl.hub.requests[index:] == []
    assert changed_hosts(run, f"Push {name}") == [rec.name] and serving(rec)[1] == ctl.dest(DEFAULT_REPO, name)
    cold = ctl.deploy([rec], "model_quant=Q8_0", offline=True, cache=tmp_path / "cold")
    assert cold.returncode != 0
    assert f"HF_HUB_OFFLINE is set and {DEFAULT_REPO}@main is not in the cache" in cold.output
    assert "warm the cache" in cold.output and ctl.hub.requests[index:] == []


# -- the token stays on the controller ----------------------------------------------


def grep_host(rec: HostRecord, patterns: list[str]) -> list[str]:
    """Files under /etc /var /opt /root /run /tmp holding any of ``patterns`` (sent on stdin, never argv)."""
    command = "grep -rlsF -D skip -f /dev/stdin /etc /var /opt /root /run /tmp"
    proc = run_here(["ssh", "-F", str(SSH_CONFIG), rec.name, command], check=False, timeout=600,
                    input_text="\n".join(patterns) + "\n")  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr  # 1: no match
    return sorted(proc.stdout.split())


def test_the_token_reaches_no_host(hosts: Hosts, ctl: Controller) -> None:
    run = ctl.deploy([hosts[0]], f"model_repo={GATED}", token=GOOD_TOKEN)  # controller mode
    assert run.returncode == 0, run.output[-3000:]
    rec, index = hosts[2], len(ctl.hub.requests)
    run = ctl.deploy([rec], f"model_repo={GATED}", "model_delivery=host", token=GOOD_TOKEN,
                     endpoint=ctl.hub.url_at(rec.gateway))  # fmt: skip
    assert run.returncode == 0, run.output[-3000:]
    # The token stays on the controller: it asked the hub for the signed CDN link, and the host fetched
    # that link without a token and never asked the hub (roles/model_fetch.py).
    assert ctl.since(index, "hub", rec.address) == []
    assert [r.authorized for r in ctl.since(index, "cdn", rec.address)] == [False]
    dry = ctl.deploy([hosts[1]], f"model_repo={GATED}", "model_delivery=host", token=GOOD_TOKEN, dry=True,
                     endpoint=ctl.hub.url_at(hosts[1].gateway))  # fmt: skip
    assert dry.returncode == 0, dry.output[-3000:]
    canary = f"lemfleet-canary-{secrets.token_hex(8)}"  # proves the search finds what is there
    for rec in hosts:
        testbed.ssh(rec, f"echo {canary} > /root/lemfleet-canary")
        try:
            assert grep_host(rec, [GOOD_TOKEN, OTHER_TOKEN, canary]) == ["/root/lemfleet-canary"], rec.name
        finally:
            testbed.ssh(rec, "rm -f /root/lemfleet-canary")
        # The journal stores long fields compressed, where grep cannot see them; journalctl decompresses
        # every field, _CMDLINE included, which would show a token passed on a command line.
        journal = testbed.ssh(rec, "journalctl --no-pager --all -o json", timeout=300)
        assert "lemfleet-llama" in journal and GOOD_TOKEN not in journal and OTHER_TOKEN not in journal


def test_no_token_in_any_captured_output(ctl: Controller) -> None:
    given = {token for _, token in ctl.runs}
    assert {GOOD_TOKEN, OTHER_TOKEN} <= given, "runs after the tests above, in file order"
    for run, _ in ctl.runs:
        assert not [t for t in given if t and t in run.output], run.output[-3000:]
