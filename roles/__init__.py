"""The steps of a lemfleet rollout, one module each; ``deploy.py`` puts them in order.

The package imports none of its modules, so importing one step loads only what
that step needs. Every role's settings are gathered in
:mod:`lemfleet.roles.settings_check`.
"""
