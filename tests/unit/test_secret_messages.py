"""No error message echoes a secret: every setting marked secret, fed values each check refuses.

The values carry a marker; whatever check refuses them (the setting's own, the control-character and
length rules, the URL rule), the message must name the setting and never contain the marker.
"""

from __future__ import annotations

from typing import Any

import pytest

from lemfleet.roles.settings import SettingsError
from lemfleet.roles.settings_check import all_settings, validate
from lemfleet.secret import Secret

MARKER = "s3cretMarker7f1c"
BAD_VALUES: list[Any] = [
    {"key": MARKER},  # not a string
    [MARKER, MARKER],
    12345678901234567,
    f"{MARKER}\n{MARKER}",  # control characters
    f"{MARKER}\x00",
    f"{MARKER} with spaces",
    f"#{MARKER}",
    f"ftp://user:{MARKER}@proxy:21",  # a URL of the wrong scheme
    f"http://user:{MARKER}@proxy/\x1b[31m",
    MARKER * 400,  # too long
    Secret(f"{MARKER}\n"),  # from Ansible Vault, and bad
]
SECRET_SETTINGS = [s.name for s in all_settings() if s.secret]


def test_the_known_secrets_are_marked_secret() -> None:
    # Every setting marked secret is checked below; these must be among them.
    assert {"apt_proxy", "server_api_key"} <= set(SECRET_SETTINGS)


@pytest.mark.parametrize("name", SECRET_SETTINGS)
@pytest.mark.parametrize("value", BAD_VALUES, ids=range(len(BAD_VALUES)))
def test_a_refused_secret_is_never_echoed(name: str, value: Any) -> None:
    data = {"server_host": "0.0.0.0", "server_api_key": "a-valid-client-key-0123", name: value}
    try:
        validate(data, "bed-01")
    except SettingsError as err:
        message = str(err)
        assert name in message
        assert MARKER not in message and MARKER.lower() not in message.lower()
    # A value some secret setting accepts (a URL apt_proxy takes) is fine; the point is no echo on refusal.
