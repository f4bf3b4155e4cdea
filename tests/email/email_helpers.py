"""Helpers shared by the email delivery tests (a unique module name, unlike conftest)."""

from __future__ import annotations


def email_defs(resources, **overrides):
    """The email delivery definitions for a deployment (pod, time zone ...) on test resources."""
    import dagster as dg

    from assets.notifications import EmailDeliverySettings, build_defs

    config = EmailDeliverySettings(**overrides)
    return dg.Definitions.merge(dg.Definitions(resources=resources), build_defs(config))
