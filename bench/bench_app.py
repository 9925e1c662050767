"""The app the benchmark's worker processes run: one no-op task, configured from the environment."""

from qtasks.asyncio import AsyncRouter, QueueTasks

router = AsyncRouter()


@router.task
async def noop(i: int) -> int:
    return i


app = QueueTasks(concurrency=50)
app.include_router(router)
