"""The only code that speaks PlanFix XML: client, envelope, signature, safe
parsing, the Task model and the error codes."""

from .client import ClientSettings, OpenGate, PlanfixClient, RequestGate, RequestRecord
from .errors import (
    BadResponseError,
    ConfigError,
    ErrorClass,
    PlanfixApiError,
    PlanfixError,
    QuotaExhaustedError,
    TransportError,
    is_task_gone,
)
from .feeds import Action, TaskPage, TaskQuery
from .model import People, Ref, StatusSet, Task, TaskStatus
from .statuses import StatusCatalog

__all__ = [
    "Action",
    "BadResponseError",
    "ClientSettings",
    "ConfigError",
    "ErrorClass",
    "OpenGate",
    "People",
    "PlanfixApiError",
    "PlanfixClient",
    "PlanfixError",
    "QuotaExhaustedError",
    "Ref",
    "RequestGate",
    "RequestRecord",
    "StatusCatalog",
    "StatusSet",
    "Task",
    "TaskPage",
    "TaskQuery",
    "TaskStatus",
    "TransportError",
    "is_task_gone",
]
