"""qtasks: a plugin-first task queue. Start at ``qtasks.hookspecs``.

``qtasks.QueueTasks`` is the blocking app; ``qtasks.asyncio.QueueTasks`` the asyncio one.
"""

from qtasks.builtin.injection import Depends, State
from qtasks.chains import Chain, chain
from qtasks.config import Config
from qtasks.errors import (
    CapabilityError,
    ConfigError,
    MalformedMessage,
    PayloadTooLarge,
    PluginLoadError,
    QtasksError,
    Retry,
    TaskCancelError,
    TaskTimeoutError,
    TimeLimitExceeded,
    UnknownComponentError,
    UnknownTaskError,
)
from qtasks.hookspecs import hookimpl
from qtasks.messages import Message, Record, Status
from qtasks.sync import QueueTasks
from qtasks.tasks import AsyncRouter, AsyncTask, Router, SyncRouter, SyncTask, TaskCall, shared_task

__version__ = "0.1.0"

__all__ = [
    "AsyncRouter",
    "AsyncTask",
    "CapabilityError",
    "Chain",
    "Config",
    "ConfigError",
    "Depends",
    "MalformedMessage",
    "Message",
    "PayloadTooLarge",
    "PluginLoadError",
    "QtasksError",
    "QueueTasks",
    "Record",
    "Retry",
    "Router",
    "State",
    "Status",
    "SyncRouter",
    "SyncTask",
    "TaskCall",
    "TaskCancelError",
    "TaskTimeoutError",
    "TimeLimitExceeded",
    "UnknownComponentError",
    "UnknownTaskError",
    "__version__",
    "chain",
    "hookimpl",
    "shared_task",
]
