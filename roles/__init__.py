"""The steps of a lemfleet rollout, one module each, in deploy order.

``ROLE_SETTINGS`` lists every role's settings so that they can be validated
together before any host is touched and checked against the README.
"""

from lemfleet.roles import apt_proxy, drivers, gpu_plan, llama_cpp, model, server, smoke

ROLE_SETTINGS = (
    apt_proxy.SETTINGS,
    gpu_plan.SETTINGS,
    drivers.SETTINGS,
    llama_cpp.SETTINGS,
    model.SETTINGS,
    server.SETTINGS,
    smoke.SETTINGS,
)
