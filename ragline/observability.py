"""Logging, tracing and metrics set up one way for every function (Powertools, JSON logs).

The correlation id is minted at the API and carried in every event's metadata; consumers put it
back on the logger so one id follows a document through every queue."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

NAMESPACE = "Ragline"


def logger(service: str) -> Logger:
    return Logger(service=service)


def tracer(service: str) -> Tracer:
    return Tracer(service=service)


def metrics(service: str) -> Metrics:
    return Metrics(namespace=NAMESPACE, service=service)
