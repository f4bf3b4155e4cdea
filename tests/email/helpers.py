"""Helpers shared by the email delivery tests (a unique module name, unlike conftest)."""

from __future__ import annotations


def email_defs(resources, **overrides):
    """The email delivery definitions for a deployment (pod, time zone ...) on test resources."""
    import dagster as dg

    from assets.email.defs import EmailDeliverySettings, build_defs
    from sensors.email import build_defs as build_sensor_defs

    config = EmailDeliverySettings(**overrides)
    return dg.Definitions.merge(
        dg.Definitions(resources=resources), build_defs(config), build_sensor_defs(config.pod)
    )
