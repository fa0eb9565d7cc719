"""The model step of deploy.py alone, for tests/testbed/test_model_push.py and test_sudo_secret.py.

``--data push_file=PATH push_sha256=HEX model_dir=DIR``: ``install_model`` of that controller file, as
deploy.py runs it for ``model_source=local`` (free-disk check, the one state probe, the push).
"""

from pathlib import Path

from pyinfra import host

from lemfleet.roles import detect
from lemfleet.roles.hoststate import declare
from lemfleet.roles.model_delivery import ModelArtifact, install_model, managed_paths

path = Path(host.data.get("push_file"))
model_dir = host.data.get("model_dir")
model = ModelArtifact("push", path.name, host.data.get("push_sha256"), path.stat().st_size, local_path=path)
facts = detect.gather(extra_paths=[model_dir])
declare(managed_paths(model, model_dir))
# pyinfra types a @deploy function as an operation, as in deploy.py (see pyproject.toml).
install_model(model, facts.disk_free_bytes)  # type: ignore[call-arg, arg-type]
