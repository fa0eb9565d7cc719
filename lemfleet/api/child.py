"""Run a lemfleet child process that speaks JSON lines, and hand over its events as they come.

pyinfra must run in a process of its own (see :mod:`lemfleet.api.runner`). The child reads one
JSON request on stdin and writes one JSON object a line on stdout; its stderr is pyinfra's own
human output, which is kept (and echoed when asked) but never parsed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any


class ChildFailed(RuntimeError):
    """The child process ended without its final document; the message holds the end of its log."""


@dataclass
class Child:
    """``python -m module`` given ``request``; iterate :meth:`events`, then read :attr:`log`."""

    module: str
    request: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    echo: IO[str] | None = None
    timeout: float | None = None
    log_lines: list[str] = field(default_factory=list)
    returncode: int | None = None

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.log_lines.append(line)
            if self.echo is not None:
                self.echo.write(line)
                self.echo.flush()

    def events(self) -> Iterator[dict[str, Any]]:
        """Each JSON object the child prints, as soon as it prints it."""
        process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env={**os.environ, **self.env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert process.stdin and process.stdout and process.stderr
        reader = threading.Thread(target=self._pump, args=(process.stderr,), daemon=True)
        reader.start()
        process.stdin.write(json.dumps(self.request))
        process.stdin.close()
        timer = threading.Timer(self.timeout, process.kill) if self.timeout else None
        if timer:
            timer.start()
        try:
            for line in process.stdout:
                if line.strip():
                    yield json.loads(line)
        finally:
            if timer:
                timer.cancel()
            self.returncode = process.wait()
            reader.join(timeout=10)
        if self.returncode < 0:
            raise ChildFailed(f"{self.module} was stopped (signal {-self.returncode}); its log ends:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "".join(self.log_lines[-lines:])
