"""GGUF quant names: read them out of file names, and choose one for a memory budget.

Hub GGUF repos name each file ``<stem>-<QUANT>.gguf`` (``LEM-Gemma3-1B-Q4_K_M.gguf``).
The quant names are llama.cpp's file types, as ``llama-quantize`` spells them;
they are taken from the ``gguf`` package's ``LlamaFileType`` so that a new
llama.cpp quant is recognised without a change here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import gguf

from lemfleet.errors import SettingsError

# The quants published for LEM-Gemma3-1B (model card), smallest first.
LEM_QUANTS = (
    "IQ3_XXS",
    "IQ3_XS",
    "Q3_K_S",
    "Q3_K_M",
    "IQ4_XS",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_K_S",
    "Q5_K_M",
    "Q6_K",
    "Q8_0",
    "BF16",
)
DEFAULT_QUANT = "Q4_K_M"
AUTO = "auto"


def _known_quants() -> tuple[str, ...]:
    names = {"F32", "F16", "BF16", *LEM_QUANTS}
    for member in gguf.LlamaFileType.__members__:
        if member.startswith("MOSTLY_"):
            names.add(member.removeprefix("MOSTLY_"))
    # Longest first, so that Q4_K_M wins over Q4_K when both could match a name.
    return tuple(sorted(names, key=lambda name: (-len(name), name)))


KNOWN_QUANTS = _known_quants()
_NAME = re.compile(
    r"^(?P<stem>.+?)[-._](?P<quant>" + "|".join(map(re.escape, KNOWN_QUANTS)) + r")\.gguf$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class GgufFile:
    """One GGUF in a repo: its file name, the stem and quant read from it, and its size."""

    filename: str
    stem: str
    quant: str
    size: int


def parse_gguf_name(filename: str) -> tuple[str, str] | None:
    """``(stem, QUANT)`` for ``<stem>-<QUANT>.gguf``, or ``None`` when the name carries no quant."""
    match = _NAME.match(filename.rsplit("/", 1)[-1])
    if match is None:
        return None
    return match["stem"], match["quant"].upper()


def gguf_files(files_with_sizes: Mapping[str, int] | Iterable[tuple[str, int]]) -> list[GgufFile]:
    """The GGUFs among ``(filename, size)`` pairs whose names carry a quant, smallest first."""
    pairs = files_with_sizes.items() if isinstance(files_with_sizes, Mapping) else files_with_sizes
    found = []
    for filename, size in pairs:
        parsed = parse_gguf_name(filename)
        if parsed is not None:
            found.append(GgufFile(filename, parsed[0], parsed[1], int(size)))
    return sorted(found, key=lambda f: (f.size, f.filename))


def model_files(repo: str, files_with_sizes: Mapping[str, int] | Iterable[tuple[str, int]]) -> list[GgufFile]:
    """The repo's model GGUFs, smallest first: those named after the repo (less ``-GGUF``)
    when any are, so that a projector such as ``mmproj-F16.gguf`` is not taken for a quant."""
    quants = gguf_files(files_with_sizes)
    stem = repo.rsplit("/", 1)[-1].removesuffix("-GGUF")
    return [f for f in quants if f.stem == stem] or quants


def choose_file(
    repo: str,
    files: list[tuple[str, int]],
    filename: str | None,
    quant: str | None,
    memory_budget_bytes: int | None = None,
    context_bytes_estimate: int = 0,
) -> tuple[str, str]:
    """Pick ``(filename, reason)`` among a repo's ``(filename, size)`` GGUFs.

    ``filename`` wins; else ``quant`` by name, or ``auto`` within the memory
    budget; with neither, :data:`DEFAULT_QUANT` or the repo's only GGUF. Quants
    are looked up among :func:`model_files`.
    """
    names = sorted(name for name, _ in files)
    if filename:
        if filename not in names:
            accepted = ", ".join(names) or "none"
            raise SettingsError([f"model_file={filename!r} is not in {repo}; accepted: {accepted}"])
        return filename, f"model_file={filename}"
    main = model_files(repo, files)
    if quant and quant.lower() == AUTO:
        if memory_budget_bytes is None:
            raise SettingsError(["model_quant='auto' needs the host's memory budget to choose"])
        pairs = [(f.filename, f.size) for f in main]
        return pick_auto_quant(pairs, memory_budget_bytes, context_bytes_estimate)
    wanted = (quant or DEFAULT_QUANT).upper()
    matches = [f for f in main if f.quant == wanted]
    if len(matches) == 1:
        return matches[0].filename, f"model_quant={wanted}"
    if not quant and len(names) == 1:
        return names[0], "the repo's only GGUF"
    accepted = ", ".join(dict.fromkeys(f.quant for f in main)) or "none"
    if matches:
        also = ", ".join(f.filename for f in matches)
        raise SettingsError([f"model_quant={wanted!r} matches several files in {repo} ({also}); set model_file"])
    setting = "model_quant" if quant else "model_quant (default)"
    raise SettingsError([f"{setting}={wanted!r} is not in {repo}; accepted: {accepted}"])


def human_bytes(size: int) -> str:
    """``967 MB`` style, in the decimal units the hub shows sizes in."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"


def pick_auto_quant(
    files_with_sizes: Mapping[str, int] | Iterable[tuple[str, int]],
    memory_budget_bytes: int,
    context_bytes_estimate: int,
) -> tuple[str, str]:
    """The largest listed quant whose file plus context fits the budget: ``(filename, reason)``.

    ``context_bytes_estimate`` covers the KV cache and compute buffers for the
    planned context. Raises :class:`SettingsError`
    when even the smallest quant does not fit, naming what it would need.
    """
    files = gguf_files(files_with_sizes)
    if not files:
        raise SettingsError(["model_quant='auto': the repo lists no <stem>-<QUANT>.gguf files"])
    fitting = [f for f in files if f.size + context_bytes_estimate <= memory_budget_bytes]
    budget, context = human_bytes(memory_budget_bytes), human_bytes(context_bytes_estimate)
    if not fitting:
        smallest = files[0]
        need = human_bytes(smallest.size + context_bytes_estimate)
        raise SettingsError(
            [
                f"model_quant='auto': no quant fits the memory budget of {budget}; the smallest, "
                f"{smallest.quant} ({human_bytes(smallest.size)}), needs {need} with {context} "
                f"for context; accepted: a host with at least {need} free, a smaller context, "
                f"or a named model_quant"
            ]
        )
    chosen = fitting[-1]
    reason = (
        f"model_quant=auto chose {chosen.quant}: {human_bytes(chosen.size)} + {context} context "
        f"fits the {budget} budget"
    )
    larger = [f for f in files if f.size > chosen.size]
    if larger:
        nxt = larger[0]
        reason += f"; {nxt.quant} would need {human_bytes(nxt.size + context_bytes_estimate)}"
    return chosen.filename, reason
