"""The asyncio API: ``from qtasks.asyncio import QueueTasks``."""

from qtasks.app import QueueTasks
from qtasks.tasks import AsyncRouter, AsyncTask

__all__ = ["AsyncRouter", "AsyncTask", "QueueTasks"]
