"""Configuration, read once from the environment (prefix ``NURTURE_``) and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the engine. Defaults give the embedded mode: SQLite, outbox, no Redis."""

    model_config = SettingsConfigDict(env_prefix="NURTURE_", env_file=".env", extra="ignore")

    # Storage: SQLite file by default; production uses postgresql+psycopg://...
    database_url: str = "sqlite:///nurture.db"
    # Celery broker. Empty means the embedded mode: ticks and tasks run in-process.
    broker_url: str = ""

    # Authoring
    sequences_dir: Path = Path("sequences")
    templates_dir: Path = Path("templates")

    # Who the mail comes from
    sender_email: str = "hello@nurture.example"
    sender_name: str = "Nurture"
    reply_to: str = ""
    # Public URL of the web process: tracking and unsubscribe links point here.
    base_url: str = "http://127.0.0.1:8000"
    # Optional mailto for List-Unsubscribe, e.g. unsubscribe@nurture.example
    unsubscribe_mailto: str = ""
    # Signs tracking and unsubscribe tokens. Change it in production.
    secret_key: str = "change-me-in-production"

    # Leads without their own time zone / locale get these.
    default_timezone: str = "UTC"
    default_locale: str = "en"

    # Delivery
    transport: Literal["outbox", "smtp", "memory"] = "outbox"
    outbox_dir: Path = Path("outbox")
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_security: Literal["none", "starttls", "ssl"] = "none"
    smtp_timeout: float = 30.0

    # Scheduler
    tick_seconds: float = 30.0
    batch_size: int = 200
    # A claimed enrollment whose worker vanished becomes due again after this lease.
    claim_lease_seconds: int = 600
    # Frequency cap across every sequence: at most N marketing emails per lead per period.
    cap_max_messages: int = Field(default=3, ge=1)
    cap_period: str = "7d"
    # Retries of a temporary (4xx) SMTP failure before the message is marked failed.
    send_max_retries: int = 5


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides (tests, CLI flags)."""
    return Settings(**overrides)  # type: ignore[arg-type]
