"""lemfleet: detect, plan, drivers, llama.cpp, model, server, smoke — for each host.

    pyinfra inventories/<fleet>.py deploy.py [--dry] [--limit H] [--serial]

This file only puts the steps in order; each lives in its own module under roles/.
"""

from pyinfra import host

from lemfleet.roles import apt_proxy, detect, hoststate, llama_cpp, model_source, server
from lemfleet.roles import model as model_step
from lemfleet.roles.controller import once, source_for, validate_hosts
from lemfleet.roles.drivers import install_drivers, plan_for_host
from lemfleet.roles.llama_cpp import BINARY, install_llama_cpp
from lemfleet.roles.model import install_model, prune_models
from lemfleet.roles.plan import ModelInfo, plan_host
from lemfleet.roles.record import deploy_record
from lemfleet.roles.server import install_server
from lemfleet.roles.smoke import smoke

settings = validate_hosts([host])[host.name]
facts = detect.gather(extra_paths=[settings["model_dir"]])
model = once("model", model_source.model_key(settings, facts), lambda: model_source.resolve_for_host(settings, facts))
plan = plan_host(facts, settings, ModelInfo(alias=model.alias, size_bytes=model.size))
drivers = plan_for_host(facts, plan.backend, settings)
source = source_for(settings)
hoststate.declare(
    [*apt_proxy.PATHS, *llama_cpp.managed_paths(plan, source), *model_step.managed_paths(model, settings["model_dir"]),
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
