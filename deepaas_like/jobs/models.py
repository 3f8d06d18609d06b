"""The ``jobs`` table (SQLAlchemy 2 declarative)."""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Job states. ``pending`` is reserved for queued jobs.
RUNNING, DONE, ERROR, CANCELLED = "running", "done", "error", "cancelled"


class Base(DeclarativeBase):
    pass


class Job(Base):
    """One training of one model; ``uuid`` is 32 hex characters."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_model_created", "model", "created"),)

    uuid: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), default="train")
    status: Mapped[str] = mapped_column(String(20), default=RUNNING)
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created: Mapped[datetime.datetime] = mapped_column(DateTime)
    finished: Mapped[datetime.datetime | None] = mapped_column(DateTime, nullable=True)
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)
    output: Mapped[Any] = mapped_column(JSON, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)

    def to_training(self) -> dict[str, Any]:
        """The DEEPaaS V2 training object: ``date``, ``args``, ``uuid``, ``status`` and
        ``finish_date``/``message``/``result`` as the state adds them. Dates print as
        DEEPaaS prints them (``str(datetime)``).
        """
        training: dict[str, Any] = {
            "date": str(self.created),
            "args": self.args,
            "uuid": self.uuid,
            "status": self.status,
        }
        if self.finished is not None:
            training["finish_date"] = str(self.finished)
        if self.status == ERROR:
            training["message"] = self.message or ""
        elif self.status == CANCELLED and self.message:
            training["message"] = self.message
        if self.status == DONE:
            training["result"] = {
                "output": self.output,
                "finish_date": str(self.finished),
                "duration": self.duration,
            }
        return training
