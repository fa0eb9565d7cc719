"""lemfleet: detect, plan, drivers, llama.cpp, model, server, gate — for each host, as one transaction.

    pyinfra inventories/<fleet>.py deploy.py [--dry] [--limit H] [--serial]

This file only puts the steps in order; each lives in its own module under roles/.
What serves changes only when the new state passes the health gate; otherwise
the host goes back to its last good state (roles/transaction.py).

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

from lemfleet.roles import (
    apt_proxy,
    detect,
    distro_release,
    hoststate,
    llama_cpp,
    model_source,
    ownership,
    server,
    server_units,
    transaction,
)
from lemfleet.roles import model_delivery as model_step
from lemfleet.roles.controller import once, settings_for, source_for
from lemfleet.roles.distro_index import host_index
from lemfleet.roles.distro_install import DistroState, install_distro
from lemfleet.roles.drivers import install_drivers, plan_for_host
from lemfleet.roles.gate import Target, gate, passed_on
from lemfleet.roles.llama_cpp import BINARY, BUILDS, build_id, install_llama_cpp, prune_builds, runtime_packages
from lemfleet.roles.model_delivery import install_model, prune_models
from lemfleet.roles.plan import ModelInfo, plan_host
from lemfleet.roles.record import deploy_record
from lemfleet.roles.server import install_server
from lemfleet.roles.settings_check import DEFAULTS
from lemfleet.roles.source_plan import choose_for_host


@deploy("lemfleet", data_defaults=DEFAULTS)
def deploy_lemfleet() -> None:
    """Serve the configured GGUF model on this host with llama-server, and prove it serves."""
    settings = settings_for(host)
    facts = detect.gather(extra_paths=[settings["model_dir"]])
    model = once(
        "model", model_source.model_key(settings, facts), lambda: model_source.resolve_for_host(settings, facts)
    )
    unit_name = settings["server_unit_name"]
    # The instances and deploy record the host has now: a layout change leaves nothing stale behind.
    present = host.get_fact(server_units.InstanceUnits, unit_name=unit_name)
    plan = plan_host(facts, settings, ModelInfo(alias=model.alias, size_bytes=model.size), recorded=present.record)
    drivers = plan_for_host(facts, plan.backend, settings)
    # llama_cpp_source: compiled, or the distribution's packages (roles/distro_install.py); refused here, before
    # anything changes, where the distribution's build cannot serve the plan.
    # A release lemfleet's table does not know (Ubuntu) is decided from the host's own indexes (roles/distro_index.py).
    choice = choose_for_host(settings, facts, plan.backend, plan.gpu_targets, host_index(facts)).check(host.name)
    distro = DistroState.of(choice.distro, plan) if choice.distro else None
    source = distro.source if distro else source_for({**settings, "llama_cpp_source": choice.method})
    templated = plan.instances[0].index is not None
    instance_count = max(present.count, len(plan.instances) if templated else 0, 1 if present.template else 0)
    layout = transaction.Layout.for_unit(unit_name, instance_count)
    hoststate.declare(
        [*apt_proxy.PATHS, *(distro.managed_paths() if distro else llama_cpp.managed_paths(plan, source)),
         *model_step.managed_paths(model, settings["model_dir"]),
         *server.managed_paths(unit_name), *server_units.instance_paths(unit_name, instance_count),
         *transaction.managed_paths(layout)]
    )  # fmt: skip

    # Before anything changes: the user, unit and model directory must be lemfleet's (roles/ownership.py).
    ownership.claim(name="Take over only what lemfleet created", user=settings["server_user"], unit_name=unit_name,
                    model_dir=settings["model_dir"])  # fmt: skip
    transaction.adopt_last_good(name="Adopt the serving state as the last good one", layout=layout)
    apt_proxy.configure_apt_proxy()
    # The service user joins the GPU groups in the server step, where it is created. The GPU SDK and
    # -dev packages go only where llama-server is compiled (roles/build_ops.py); a distro host compiles nothing.
    install_drivers(drivers, compiles=(lambda: False) if distro else llama_cpp.host_build_role(plan, source).compiles)
    # The distribution's packages the new state does not use (a switch to a compiled source): unheld now, purged
    # after a passing gate; a failed gate's restore holds the last good state's again (roles/distro_release.py).
    distro_installed, distro_needed = distro_release.distro_packages(), tuple(distro.versions) if distro else ()
    build_switched = install_distro(distro) if distro else install_llama_cpp(plan, source)
    # What the new state loads at its next start stays, whatever a purge of the distribution's packages takes.
    distro_release.protect_runtime([*drivers.runtime_packages, *([] if distro else runtime_packages(plan))])
    distro_release.release_on_switch(distro_installed, distro_needed)
    model_path, model_placed = install_model(model, facts.disk_free_bytes)
    tls = server.host_tls(host.data)
    pin = tls.fingerprint if tls else None
    _, files_digest = install_server(
        plan,
        binary=BINARY,
        model_path=model_path,
        restart_when=[build_switched] + ([model_placed] if model_placed else []),
        supplementary_groups=drivers.service_groups,
        present=present,
    )
    record = deploy_record(plan, source, model, model_path, unit_name=unit_name, user=settings["server_user"],
                           tls_fingerprint=pin, tls_spki_sha256=tls.spki_sha256 if tls else None)  # fmt: skip
    if distro:
        record["build"] = distro.record_build(record["build"])
    build_dir = distro.path if distro else f"{BUILDS}/{build_id(source, plan)}"
    digest = transaction.state_digest(files_digest, build_dir, model_path, record)
    gate(
        [Target(port=i.port, listen_host=plan.listen_host, alias=plan.alias, backend=plan.backend,
                unit=i.unit(unit_name), n_gpu_layers=plan.n_gpu_layers, tls_fingerprint=pin) for i in plan.instances],
        fallback=transaction.fallback(layout, digest),
        layout=layout,
        restored=[Target(port=port, listen_host=plan.listen_host, alias=plan.alias, backend=plan.backend, unit=unit)
                  for unit, port in present.recorded_units],
    )  # fmt: skip
    passed = passed_on(host.name)
    kept = transaction.commit(layout, record, build_dir, model_path, digest, passed)
    prune_builds(settings["llama_cpp_keep_builds"], when=[passed, kept.did_change])
    prune_models(settings["model_dir"], model_path, settings["model_keep"], when=[passed, kept.did_change])
    distro_release.release_after_gate(distro_installed, distro_needed, passed)


# pyinfra runs this file as this repo's deploy (it executes it without a module name);
# another project imports it as lemfleet.deploy and calls deploy_lemfleet() itself.
if __name__ != "lemfleet.deploy":
    deploy_lemfleet()
