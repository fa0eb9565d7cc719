"""The git pin's pure parts: the commit setting and the parsing of ``git ls-remote`` (live: tests/integration)."""

from __future__ import annotations

import pytest

from lemfleet.roles.git_pin import commit_setting, peeled_commit

TAG = "b1"


def test_commit_setting_takes_full_ids_only() -> None:
    assert commit_setting("llama_cpp_git_commit", "AB" * 20) == "ab" * 20
    assert commit_setting("llama_cpp_git_commit", "cd" * 32) == "cd" * 32
    assert commit_setting("llama_cpp_git_commit", None) is None
    for bad in ("abc1234", "g" * 40, "--upload-pack=x", 123):
        with pytest.raises(ValueError, match="accepted: a full commit id"):
            commit_setting("llama_cpp_git_commit", bad)


def test_peeled_commit_prefers_the_tagged_commit() -> None:
    output = f"{'a' * 40}\trefs/tags/{TAG}\n{'b' * 40}\trefs/tags/{TAG}^{{}}\n"
    assert peeled_commit(output, TAG) == "b" * 40
    assert peeled_commit(f"{'c' * 40}\trefs/heads/{TAG}\n", TAG) == "c" * 40
    assert peeled_commit("", TAG) is None
