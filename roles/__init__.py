"""The steps of a lemfleet rollout, one module each, in deploy order.

``ROLE_SETTINGS`` lists every role's settings so that they can be validated
together before any host is touched and checked against the README.
"""

from roles import apt_proxy

ROLE_SETTINGS = (apt_proxy.SETTINGS,)
