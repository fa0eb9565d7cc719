"""lemfleet: detect, plan, drivers, llama.cpp, model, server, smoke — for each host.

    pyinfra inventories/<fleet>.py deploy.py [--dry] [--limit H] [--serial]

This file only puts the steps in order; each lives in its own module under roles/.

It is also the packaged deploy, installed as ``lemfleet.deploy``, which another
project calls from its own deploy.py, with its own inventory::

    from lemfleet.deploy import deploy_lemfleet
    deploy_lemfleet()

Settings are host data (inventory, group_data/, ``--data``) over ``DEFAULTS``,
every role's defaults, given to pyinfra as ``data_defaults``. The first step
checks this host's settings, so a bad value stops the deploy before anything
changes; in this repo, config.py has already checked every host before pyinfra
connected (lemfleet/preflight.py).
"""

from pyinfra import host
from pyinfra.api import deploy

from lemfleet.roles import apt_proxy, detect, hoststate, llama_cpp, model_source, server
from lemfleet.roles import model as model_step
from lemfleet.roles.controller import once, settings_for, source_for
from lemfleet.roles.drivers import install_drivers, plan_for_host
from lemfleet.roles.llama_cpp import BINARY, install_llama_cpp
from lemfleet.roles.model import install_model, prune_models
from lemfleet.roles.plan import ModelInfo, plan_host
from lemfleet.roles.record import deploy_record
from lemfleet.roles.server import install_server
from lemfleet.roles.settings_check import DEFAULTS
from lemfleet.roles.smoke import smoke


@deploy("lemfleet", data_defaults=DEFAULTS)
def deploy_lemfleet() -> None:
    """Serve the configured GGUF model on this host with llama-server, and prove it serves."""
    settings = settings_for(host)
    facts = detect.gather(extra_paths=[settings["model_dir"]])
    model = once(
        "model", model_source.model_key(settings, facts), lambda: model_source.resolve_for_host(settings, facts)
    )
    plan = plan_host(facts, settings, ModelInfo(alias=model.alias, size_bytes=model.size))
    drivers = plan_for_host(facts, plan.backend, settings)
    source = source_for(settings)
    hoststate.declare(
        [*apt_proxy.PATHS, *llama_cpp.managed_paths(plan, source),
         *model_step.managed_paths(model, settings["model_dir"]),
         *server.managed_paths(settings["server_unit_name"])]
    )  # fmt: skip

    apt_proxy.configure_apt_proxy()
    # The service user joins the GPU groups in the server step, where it is created.
    install_drivers(drivers)
    build_switched = install_llama_cpp(plan, source)
    model_path, model_placed = install_model(model, facts.disk_free_bytes)
    environment = install_server(
        plan,
        binary=BINARY,
        model_path=model_path,
        restart_when=[build_switched] + ([model_placed] if model_placed else []),
        record=deploy_record(
            plan, source, model, model_path, unit_name=settings["server_unit_name"], user=settings["server_user"]
        ),
        supplementary_groups=drivers.service_groups,
    )
    prune_models(
        settings["model_dir"], model_path, settings["model_keep"], when=[environment, *filter(None, [model_placed])]
    )
    smoke(port=plan.port, listen_host=plan.listen_host, alias=plan.alias, backend=plan.backend,
          n_gpu_layers=plan.n_gpu_layers)  # fmt: skip


# pyinfra runs this file as this repo's deploy (it executes it without a module name);
# another project imports it as lemfleet.deploy and calls deploy_lemfleet() itself.
if __name__ != "lemfleet.deploy":
    deploy_lemfleet()
