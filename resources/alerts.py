"""Alerts for operators: always logged and stored in `control.alerts`; published to SNS when
`SUPPORTFLOW_ALERT_SNS_TOPIC_ARN` is set (in the topic's own region). Each channel fails on its
own: a warehouse that is down does not stop the SNS message, nor the other way round."""

from __future__ import annotations

import json
import logging
from typing import Any

import dagster as dg
from psycopg.types.json import Jsonb

from resources.warehouse import WarehouseResource

log = logging.getLogger("supportflow.alerts")


class AlertsResource(dg.ConfigurableResource):
    warehouse: WarehouseResource
    sns_topic_arn: str = ""
    aws_endpoint_url: str = ""

    def raise_alert(
        self,
        source: str,
        summary: str,
        details: dict[str, Any] | None = None,
        severity: str = "error",
    ) -> None:
        """Record an alert; never raises because of the alerting channel itself."""
        details = details or {}
        log.error(
            "ALERT [%s] %s: %s %s", severity, source, summary, json.dumps(details, default=str)
        )
        try:
            with self.warehouse.connection() as conn:
                conn.execute(
                    "insert into control.alerts (severity, source, summary, details) "
                    "values (%s, %s, %s, %s)",
                    (severity, source, summary, Jsonb(details)),
                )
        except Exception as exc:  # the log line above and SNS still carry it
            log.warning("could not store the alert in control.alerts: %s", type(exc).__name__)
        if self.sns_topic_arn:
            try:
                self._sns().publish(
                    TopicArn=self.sns_topic_arn,
                    Subject=_subject(f"supportflow {severity}: {source}"),
                    Message=json.dumps(
                        {"source": source, "summary": summary, "severity": severity, **details},
                        default=str,
                    ),
                )
            except Exception as exc:  # the alert is stored; a broken SNS must not hide it
                log.warning("could not publish alert to SNS: %s", type(exc).__name__)

    def _sns(self):
        # Imported here on purpose: boto3 costs a second to import, and only SNS alerts need it.
        import boto3

        # arn:aws:sns:<region>:<account>:<topic>: publish in the topic's region
        parts = self.sns_topic_arn.split(":")
        region = parts[3] if len(parts) > 5 and parts[3] else None
        return boto3.client("sns", endpoint_url=self.aws_endpoint_url or None, region_name=region)

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.warehouse.connection() as conn:
            rows = conn.execute(
                "select raised_at, severity, source, summary, details from control.alerts "
                "order by alert_id desc limit %s",
                (limit,),
            ).fetchall()
        keys = ("raised_at", "severity", "source", "summary", "details")
        return [dict(zip(keys, row, strict=True)) for row in rows]


def _subject(text: str) -> str:
    """An SNS Subject: printable ASCII without line breaks, under 100 characters."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:99]
