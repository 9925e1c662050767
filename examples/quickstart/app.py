"""The quickstart app: a few tasks on the embedded default (SQLite in ./qtasks.db, no server)."""

import time

from qtasks import QueueTasks

app = QueueTasks()


@app.task
def echo(text: str) -> str:
    return text


@app.task
def divide(a: float, b: float) -> float:
    return a / b


@app.task(generate_handler=lambda n: n * n)
def squares(n: int):
    yield from range(n)


@app.task(max_time=0.5)
def too_slow() -> None:
    time.sleep(2)


@app.task(echo=True)
def whoami(self) -> dict:
    return {"task_id": self.ctx.task_id, "attempt": self.ctx.attempt}
