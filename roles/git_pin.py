"""The llama.cpp git source pinned by commit: a tag names it, the commit proves it.

A tag can be moved or re-pushed (or answered differently by a mirror in between), so the git
source takes both ``llama_cpp_git_ref`` (the tag to clone) and ``llama_cpp_git_commit`` (the
commit that tag must be). The controller checks the tag against the pin with ``git ls-remote``
before any host is touched (roles/llama_sources.py); each host checks what it actually cloned, after
the clone and before anything is built from it (:func:`pinned_checkout`). A checkout at any other
commit is removed and the host fails, so the next run clones again.
"""

from __future__ import annotations

import re
from shlex import quote

from pyinfra import host
from pyinfra.api import FactBase, operation

COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
"""A full commit id: sha1, or sha256 for repositories in git's sha256 object format."""


def commit_setting(name: str, value: object) -> str | None:
    """The settings check of ``llama_cpp_git_commit``: a full commit id, lower case, or None."""
    if value is None:
        return None
    if isinstance(value, str) and COMMIT.fullmatch(value.strip().lower()):
        return value.strip().lower()
    raise ValueError(f"{name}={value!r} is not valid; accepted: a full commit id (40 or 64 hex digits) or None")


def peeled_commit(ls_remote: str, ref: str) -> str | None:
    """The commit ``refs/tags/<ref>`` (peeled for an annotated tag) or ``refs/heads/<ref>`` names in ``ls-remote``."""
    refs = {}
    for line in ls_remote.splitlines():
        sha, _, name = line.partition("\t")
        refs[name.strip()] = sha
    for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}"):
        if name in refs:
            return refs[name].strip().lower()
    return None


class CheckoutCommit(FactBase):
    """The commit checked out in a git work tree, or None when there is none.

    Sample output::

        3d652bfddfba09022525067e672c3c145c074649
    """

    def command(self, path: str) -> str:
        return f"git -C {quote(path)} rev-parse --verify --quiet 'HEAD^{{commit}}' 2>/dev/null || true"

    def requires_command(self, path: str) -> str:
        return "git"

    def process(self, output: list[str]) -> str | None:
        text = output[0].strip().lower() if output else ""
        return text if COMMIT.fullmatch(text) else None


def check_script(path: str, commit: str, ref: str) -> str:
    """Shell that passes when ``path`` is checked out at ``commit``, else removes ``path`` and fails."""
    wanted = f"the pinned llama_cpp_git_commit={commit} (tag {ref})"
    return (
        f"head=$(git -C {quote(path)} rev-parse --verify --quiet 'HEAD^{{commit}}'); "
        f'[ "$head" = {quote(commit)} ] || {{ '
        f'echo "llama.cpp checkout "{quote(path)}" is at commit ${{head:-none}}, not "{quote(wanted)}"; clone '
        f'removed" >&2; '
        f"rm -rf {quote(path)}; exit 1; }}"
    )


@operation()
def pinned_checkout(path: str, commit: str, ref: str):
    """Fail (and remove the clone) unless the work tree at ``path`` is at ``commit``."""
    if host.get_fact(CheckoutCommit, path=path) == commit:
        host.noop(f"{path} is at the pinned commit {commit[:12]}")
        return
    yield check_script(path, commit, ref)
