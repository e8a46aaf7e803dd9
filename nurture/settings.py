"""Configuration, read once from the environment (prefix ``NURTURE_``) and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nurture.core.durations import parse_duration
from nurture.core.zones import is_valid_timezone


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
    secret_key: str = "change-me-in-production"  # refused outside loopback: see below

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
    tick_seconds: float = Field(default=30.0, gt=0)
    batch_size: int = Field(default=200, ge=1)
    # A claimed enrollment whose worker vanished becomes due again after this lease.
    claim_lease_seconds: int = Field(default=600, ge=10)
    # Frequency cap across every sequence: at most N marketing emails per lead per period.
    cap_max_messages: int = Field(default=3, ge=1)
    cap_period: str = "7d"
    # Retries of a temporary (4xx) SMTP failure before the message is marked failed.
    send_max_retries: int = 5

    # The funnel (lifecycle.yaml): hand-off webhooks are signed with this secret
    # (X-Nurture-Signature: sha256=HMAC of "<timestamp>.<body>"). Empty: sent unsigned.
    webhook_secret: str = ""
    # Hand-off targets besides those in lifecycle.yaml (comma-separated URLs).
    handoff_webhook_urls: str = ""
    handoff_slack_urls: str = ""
    # Seconds a webhook receiver has to answer before the attempt counts as failed.
    webhook_timeout: float = Field(default=10.0, gt=0)
    # Holiday calendar (ISO code) of leads without a country: for business-day waits, and for
    # SLAs unless lifecycle.yaml names one.
    default_country: str = ""

    # Web process (`nurture web`, and `nurture run` unless --no-web)
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8000, ge=0, le=65535)
    # uvicorn worker processes for `nurture web` (each has its own database pool).
    web_workers: int = Field(default=1, ge=1)
    # Proxies whose X-Forwarded-For is believed (comma-separated IPs, or *).
    forwarded_allow_ips: str = "127.0.0.1"
    # API keys for /api/v1 (comma-separated). None configured: the API answers 401.
    api_keys: str = ""
    # An API event for an email with no lead: create the lead, or reject the event.
    unknown_email_events: Literal["create", "reject"] = "create"
    # Adds GET /bench/noop.gif, the baseline of bench/track.py. Never on in production.
    bench_endpoints: bool = False

    # Tracking: links in sent mail go through /c/<token>, an open pixel /o/<token>.gif.
    track_clicks: bool = True
    track_opens: bool = True
    # UTM parameters added to tracked links ({sequence} and {step} are filled in); a
    # parameter already in the link is kept. Empty value: that parameter is not added.
    utm_enabled: bool = True
    utm_source: str = "nurture"
    utm_medium: str = "email"
    utm_campaign: str = "{sequence}"
    utm_content: str = "{step}"

    # Bot and scanner filtering: such opens and clicks are stored with is_human=False and
    # never scored. A click this soon after the send is a link scanner, not a person.
    bot_click_seconds: float = Field(default=5.0, ge=0)
    # An open this soon after the send is a prefetch (0 turns the rule off).
    bot_open_seconds: float = Field(default=3.0, ge=0)
    # Every link of a message (two or more) clicked within this many seconds: a scanner.
    bot_burst_seconds: float = Field(default=10.0, ge=0)
    # User-agent substrings (case-insensitive, comma-separated) of link scanners.
    bot_scanner_agents: str = (
        "barracuda,mimecast,proofpoint,python-requests,python-httpx,curl/,wget/,go-http-client,"
        "bot,spider,crawler,headless,microsoft office protection,safelinks,symantec,"
        "trendmicro,forcepoint,sophos,fireeye,ironport,messagelabs,scanner"
    )
    # User-agent substrings and networks (CIDR) of mail privacy proxies that prefetch
    # images (Apple Mail Privacy Protection fetches from Apple's 17.0.0.0/8).
    bot_proxy_agents: str = "yahoomailproxy,mail privacy protection"
    bot_proxy_networks: str = "17.0.0.0/8"

    @property
    def api_key_list(self) -> list[str]:
        """The configured API keys (empty entries dropped)."""
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql")):
            raise ValueError(
                "Nurture runs on SQLite (sqlite:///nurture.db) or PostgreSQL "
                "(postgresql+psycopg://user@host:5432/db)"
            )
        return value

    @field_validator("cap_period")
    @classmethod
    def _period(cls, value: str) -> str:
        if parse_duration(value).is_business:
            raise ValueError("use a calendar duration such as 7d")
        return value

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not is_valid_timezone(value):
            raise ValueError(f"{value!r} is not an IANA time zone, e.g. UTC or Asia/Seoul")
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or value[-3:] == "://":
            raise ValueError("must be the public http(s) URL of the web process")
        return value.rstrip("/")


DEFAULT_SECRET_KEY = "change-me-in-production"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class InsecureSettings(ValueError):
    """A setting that is fine on a laptop but would be dangerous in production."""


def require_secret_key(settings: Settings, process: str) -> None:
    """Refuse to serve signed links with the default key outside a loopback-only setup:
    with it, anyone could forge unsubscribe, open and click tokens."""
    weak = settings.secret_key == DEFAULT_SECRET_KEY or len(settings.secret_key) < 16
    exposed = bool(settings.broker_url) or settings.web_host not in _LOOPBACK_HOSTS
    if weak and exposed:
        raise InsecureSettings(
            f"{process}: NURTURE_SECRET_KEY is the default or shorter than 16 characters; "
            "set a long random value, e.g. "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides (tests, CLI flags)."""
    return Settings(**overrides)  # type: ignore[arg-type]
