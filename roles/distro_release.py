"""The distro source's packages across state changes: reinstall a kept state's .debs; release those no state needs.

A distro build (roles/distro_install.py) is more than its directory: what
serves is the packages dpkg has installed. So a state change that moves the
``current`` link must also move the packages:

- **Back to a kept state** (a failed gate's automatic restore, ``lemfleet
  rollback``): :func:`reinstall_script` runs first in
  roles/transaction.py's ``restore_script``. When the kept state's build is a
  distro build, it names its packages by the .debs kept in its directory
  (``<build>/debs/``, each .deb's own Package and Version), ``dpkg -i`` those
  whose installed version differs (no archive needed: it may have moved on),
  and holds them all again. It runs before any file or link is put back, so
  a reinstall that fails leaves the host as it was, and the step fails.
- **Away from the distro source, or to fewer packages** (a switch to a
  compiled source, a backend the new state does not need): the packages
  lemfleet's distro builds name that the new state does not use are unheld
  with the switch and purged once the new state passed the gate
  (:func:`release_after_gate`), with the dependencies only they kept
  installed. A failed gate puts the last good state back, and the hook above
  holds its packages again.
- **A failed switch to the distro source, or to more packages**: the failed
  gate's restore purges, last, the packages the failed state's build
  installed that the last good state does not name
  (:func:`release_failed_script`), so a compiled host that failed its
  switch is left with no distribution package, held or not.

The .debs stay in the distro build's directory while that state is the last
good or the previous one (a ``lemfleet rollback`` reinstalls them from
there); the build prune removes them with the directory once it is neither.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from shlex import quote
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, operation

from lemfleet.roles.distro_builds import known_packages
from lemfleet.roles.distro_install import DEBCONF, dpkg_query_command, parse_dpkg
from lemfleet.roles.facts.host import MARK, split_sections
from lemfleet.roles.llama_cpp import BUILDS


def reinstall_script(build_link: str) -> str:
    """Shell: when ``build_link`` leads to a distro build, install its kept .debs where the installed version
    differs, hold them and check each; nothing for a compiled build. Runs in a subshell; fails the caller."""
    # Whether package $p is installed at version $v; then ";; *)" and what to do when it is not.
    installed = 'case "$(dpkg-query -W -f=\'${db:Status-Abbrev}|${Version}\' "$p" 2>/dev/null)" in ?i?"|$v") ;; '
    check = installed + '*) echo "lemfleet: $p $v from $f is not installed after the reinstall" >&2; exit 1 ;; esac'
    return "\n".join(
        [
            "(",
            f"b=$(readlink -f {quote(build_link)} 2>/dev/null || true)",
            'if [ -n "$b" ] && grep -qs \'"source": "distro"\' "$b/build.json"; then',
            "export DEBIAN_FRONTEND=noninteractive",
            'ls "$b"/debs/*.deb >/dev/null 2>&1 || { echo "lemfleet: the kept distro build $b has no .debs to '
            'reinstall" >&2; exit 1; }',
            'names=""; set --',
            'for f in "$b"/debs/*.deb; do p=$(dpkg-deb -f "$f" Package); v=$(dpkg-deb -f "$f" Version); '
            'names="$names $p"',
            installed + '*) set -- "$@" "$f" ;; esac; done',
            'if [ "$#" -gt 0 ]; then',
            "apt-mark unhold $names >/dev/null",
            f"echo {quote(DEBCONF)} | debconf-set-selections",
            # dpkg -i needs no archive; apt (-f: over what dpkg left unconfigured) only when a dependency went
            # missing meanwhile, e.g. purged with the packages by a switch to a compiled source.
            'dpkg -i "$@" || apt-get -f install -y -q --no-install-recommends --allow-downgrades '
            '--allow-change-held-packages "$@"',
            "fi",
            "apt-mark hold $names >/dev/null",
            f'for f in "$b"/debs/*.deb; do p=$(dpkg-deb -f "$f" Package); v=$(dpkg-deb -f "$f" Version); {check}; done',
            "fi",
            ")",
        ]
    )


class DistroPackages(FactBase):
    """The packages lemfleet's distro builds name (each ``distro-*/build.json``), as installed: ``{name: (version,
    held)}``; empty on a host without a distro build. Sample output::

    @@lemfleet:build /opt/lemfleet/llama.cpp/distro-1a2b3c4d5e6f/build.json
    {"backend": "cpu", "packages": {"libggml0": "0.27.0-1", ...}, "source": "distro", ...}
    @@lemfleet:dpkg
    libggml0	0.27.0-1	hi
    """

    def command(self) -> str:
        return (
            f'for f in {BUILDS}/distro-*/build.json; do [ -f "$f" ] || continue; '
            f'echo "{MARK}build $f"; cat "$f"; echo; done; '
            f"ls {BUILDS}/distro-*/build.json >/dev/null 2>&1 && {{ echo {MARK}dpkg; "
            f"{dpkg_query_command(known_packages())}; }}; true"
        )

    def process(self, output: Iterable[str]) -> dict[str, tuple[str, bool]]:
        return parse_distro_packages(output)


def parse_distro_packages(lines: Iterable[str]) -> dict[str, tuple[str, bool]]:
    """The installed packages (version, held) among those the build records name; a record not JSON names none."""
    sections = split_sections(lines)
    named: set[str] = set()
    for title, body in sections.items():
        if not title.startswith("build "):
            continue
        try:
            record = json.loads("\n".join(body))
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("source") == "distro" and isinstance(record.get("packages"), dict):
            named.update(str(name) for name in record["packages"])
    installed = parse_dpkg(sections.get("dpkg", []))
    return {name: state for name, state in installed.items() if name in named}


def purge_script(names: Iterable[str]) -> str:
    """Shell: unhold and purge ``names``, then purge the packages that only they kept installed (those
    ``apt-get autoremove`` would remove now and would not before; anything else autoremovable is left)."""
    return _purge_lines(" ".join(quote(n) for n in names))


def remember_failed_script(current_link: str) -> str:
    """Shell, before a failed gate's restore moves ``current_link``: note the build it leads to, the failed
    state's, for :func:`release_failed_script` (same shell)."""
    return f"lemfleet_failed_build=$(readlink -f {quote(current_link)} 2>/dev/null || true)"


def release_failed_script(kept_link: str) -> str:
    """Shell, after a failed gate put the kept state back: the packages the failed state's distro build
    installed (its ``debs/``; the build :func:`remember_failed_script` noted) that the kept state's build
    does not name are unheld and purged, as a passing switch would have purged them.

    Best effort: the kept state serves from its own files, so a purge that fails is reported and the
    restore goes on (the next passing deploy purges what is left: :func:`release_after_gate`).
    """
    names = 'for d in "$1"/debs/*.deb; do [ -f "$d" ] && dpkg-deb -f "$d" Package; done | sort -u'
    distro = 'grep -qs \'"source": "distro"\' "$1/build.json"'
    listing = f"names() {{ if {distro}; then {names}; fi; }}"
    purge = _purge_lines('"$@"')
    return "\n".join(
        [
            "(",
            f"{listing}",
            f'k=$(readlink -f {quote(kept_link)} 2>/dev/null || true); f="$lemfleet_failed_build"',
            'if [ -n "$f" ] && [ "$f" != "$k" ]; then',
            "kept=\" $(names \"$k\" | tr '\\n' ' ') \"",
            'extra=$(names "$f" | while read -r p; do case $kept in *" $p "*) ;; *) echo "$p" ;; esac; done)',
            'if [ -n "$extra" ]; then',
            f"sh -c {quote(purge)} lemfleet-release $extra || echo \"lemfleet: the failed state's packages "
            'could not all be purged ($extra): the next passing deploy purges them" >&2',
            "fi",
            "fi",
            ")",
        ]
    )


def _purge_lines(words: str) -> str:
    removable = "apt-get -s -q autoremove 2>/dev/null | sed -n 's/^Remv \\([^ ]*\\) .*/\\1/p' | sort"
    return "\n".join(
        [
            "set -e",
            "export DEBIAN_FRONTEND=noninteractive",
            "t=$(mktemp -d); trap 'rm -rf \"$t\"' EXIT",
            f'{removable} > "$t/before"',
            f"apt-mark unhold {words} >/dev/null",
            f"apt-get purge -y -q {words}",
            f'{removable} > "$t/after"',
            'only=$(comm -13 "$t/before" "$t/after")',
            'if [ -n "$only" ]; then apt-get purge -y -q $only; fi',
        ]
    )


def unused(installed: dict[str, tuple[str, bool]], needed: Iterable[str]) -> list[str]:
    """The installed distro packages the new state does not use, sorted."""
    keep = set(needed)
    return sorted(name for name in installed if name not in keep)


@operation()
def unhold_unused(installed: dict[str, tuple[str, bool]], needed: tuple[str, ...]):
    """Unhold the distro packages the new state does not use, as it switches (purged after the gate)."""
    held = [name for name in unused(installed, needed) if installed[name][1]]
    if not held:
        host.noop("no held distro package outside the new state")
        return
    yield f"apt-mark unhold {' '.join(quote(n) for n in held)}"


@operation(is_idempotent=False)
def purge_unused(installed: dict[str, tuple[str, bool]], needed: tuple[str, ...]):
    """Purge the distro packages the state that passed the gate does not use, with what only they needed."""
    names = unused(installed, needed)
    if not names:
        host.noop("no distro package outside the serving state")
        return
    yield purge_script(names)


def packages_of_record(record: dict[str, Any] | None) -> tuple[str, ...]:
    """The distribution's packages a deploy record's build uses (none for a compiled build)."""
    build = (record or {}).get("build") or {}
    packages = build.get("packages") if build.get("source") == "distro" else None
    return tuple(sorted(packages)) if isinstance(packages, dict) else ()


def distro_packages() -> dict[str, tuple[str, bool]]:
    return host.get_fact(DistroPackages) or {}


class AutoInstalled(FactBase):
    """Which of ``packages`` apt counts as pulled in by others (``apt-mark showauto``): those an autoremove
    may take once the packages that pulled them in go. Sample output::

    libgomp1
    """

    def command(self, packages: tuple[str, ...]) -> str:
        return f"apt-mark showauto {' '.join(quote(p) for p in packages)} 2>/dev/null || true"

    def process(self, output: Iterable[str]) -> list[str]:
        return sorted({line.strip() for line in output if line.strip()})


@operation()
def keep_marked_manual(auto: list[str]):
    """Mark ``auto`` (runtime packages of the new state) as installed on purpose."""
    if not auto:
        host.noop("the new state's runtime packages are installed on purpose already")
        return
    yield f"apt-mark manual {' '.join(quote(n) for n in auto)}"


def protect_runtime(runtime: Iterable[str]) -> None:
    """The new state's runtime packages that apt counts as pulled in by others (libgomp1 by libggml0 or by
    gcc, ROCm's libraries by the HIP backend) are marked manual, as apt marks what it installs by name. Then
    no purge's autoremove step (a switch away from the distro source, a failed switch to it, a rollback),
    and no ``apt autoremove`` of the operator's, takes what a compiled llama-server loads at its next start:
    the running server keeps a removed library mapped, so nothing shows until it restarts."""
    packages = tuple(sorted(set(runtime)))
    if not packages:  # apt-mark showauto with no name lists every package
        return
    auto = host.get_fact(AutoInstalled, packages=packages)
    keep_marked_manual(name="Keep the new state's runtime packages installed on purpose", auto=auto)


def release_on_switch(installed: dict[str, tuple[str, bool]], needed: Iterable[str]) -> None:
    """With the switch: unhold the distro packages the new state does not use (none: no change)."""
    unhold_unused(name="Unhold the distribution's packages the new state does not use", installed=installed,
                  needed=tuple(sorted(needed)))  # fmt: skip


def release_after_gate(
    installed: dict[str, tuple[str, bool]], needed: Iterable[str], passed: Callable[[], bool]
) -> None:
    """After a passing gate: purge the distro packages the serving state does not use (none: no change)."""
    purge_unused(name="Remove the distribution's packages the serving state does not use", installed=installed,
                 needed=tuple(sorted(needed)), _if=passed)  # fmt: skip
