"""The names qtasks-otel emits: OpenTelemetry messaging semantic conventions v1.44.0, and ours.

Kept as local constants on purpose: ``opentelemetry-semantic-conventions`` pins
``opentelemetry-api`` to one exact version, and every messaging name there is still
"incubating". Depending on it would pin the user's whole OpenTelemetry install for a dozen strings.
"""

from __future__ import annotations

from typing import Final

#: The semantic-conventions version these names follow (tracer and meter ``schema_url``).
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.44.0"
#: The instrumentation scope name.
SCOPE: Final = "qtasks_otel"

# ----------------------------------------------------------------------- span and metric attributes

MESSAGING_SYSTEM: Final = "messaging.system"
MESSAGING_OPERATION_NAME: Final = "messaging.operation.name"
MESSAGING_OPERATION_TYPE: Final = "messaging.operation.type"
MESSAGING_DESTINATION_NAME: Final = "messaging.destination.name"
MESSAGING_MESSAGE_ID: Final = "messaging.message.id"
MESSAGING_CLIENT_ID: Final = "messaging.client.id"
ERROR_TYPE: Final = "error.type"
CODE_FUNCTION_NAME: Final = "code.function.name"

TASK_NAME: Final = "qtasks.task.name"
TASK_ID: Final = "qtasks.task.id"
TASK_ATTEMPT: Final = "qtasks.task.attempt"
#: How the run ended: success, failure, retry, rejected, cancelled, dead_letter, duplicate,
#: or ``interrupted`` (the worker stopped and gave the message back).
TASK_OUTCOME: Final = "qtasks.task.outcome"

#: ``messaging.operation.type`` / ``messaging.operation.name`` values.
SEND: Final = "send"
PROCESS: Final = "process"

#: The value of a metric attribute whose real value would be unbounded (semconv's fallback).
OTHER: Final = "_OTHER"

# ----------------------------------------------------------------------- metrics

SENT_MESSAGES: Final = "messaging.client.sent.messages"
CONSUMED_MESSAGES: Final = "messaging.client.consumed.messages"
CLIENT_OPERATION_DURATION: Final = "messaging.client.operation.duration"
PROCESS_DURATION: Final = "messaging.process.duration"
TASK_ACTIVE: Final = "qtasks.task.active"
TASK_RETRIES: Final = "qtasks.task.retries"
TASK_WAIT_DURATION: Final = "qtasks.task.wait.duration"

#: The advisory bucket boundaries of both messaging duration histograms (seconds).
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: Queue waits outgrow run-time buckets under a backlog: up to 30 minutes.
WAIT_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
)
