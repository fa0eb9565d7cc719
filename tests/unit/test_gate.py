"""The gate's reading of the unit: when has the start it watches ended? (``systemctl show -p ...`` output)."""

from __future__ import annotations

from lemfleet.roles.gate import start_ended

UNIT = "lemfleet-llama.service"


def show(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.strip().splitlines())


# The properties the gate reads, in systemctl's KEY=value form (the IDs are made up): llama-server loading.
LOADING = show("""
ActiveState=active
SubState=running
Result=success
NRestarts=0
InvocationID=5d0c0f6b0a2f4a8f9d1c2b3a4e5f6071
ExecMainStatus=0
""")
# The same unit 1 s after llama-server exited with status 1 on a model it could not load (RestartSec=2).
WAITING = show("""
ActiveState=activating
SubState=auto-restart
Result=exit-code
NRestarts=0
InvocationID=5d0c0f6b0a2f4a8f9d1c2b3a4e5f6071
ExecMainStatus=1
""")
# And after systemd started it again.
AGAIN = show("""
ActiveState=active
SubState=running
Result=success
NRestarts=1
InvocationID=9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b
ExecMainStatus=1
""")
STOPPED = show("""
ActiveState=failed
SubState=failed
Result=exit-code
NRestarts=0
InvocationID=5d0c0f6b0a2f4a8f9d1c2b3a4e5f6071
ExecMainStatus=203
""")


def test_a_server_that_loads_has_not_ended() -> None:
    assert start_ended(UNIT, LOADING, LOADING) is None


def test_an_exit_waiting_for_its_restart_ends_the_start() -> None:
    assert start_ended(UNIT, LOADING, WAITING) == (
        "lemfleet-llama.service exited during start (exit status 1, activating/auto-restart, result exit-code)"
    )


def test_a_restart_the_gate_did_not_see_happen_ends_the_start() -> None:
    assert start_ended(UNIT, LOADING, AGAIN) is not None


def test_a_failed_unit_ends_the_start_even_at_the_first_look() -> None:
    message = start_ended(UNIT, STOPPED, STOPPED)
    assert message is not None and "exit status 203" in message and "failed/failed" in message
