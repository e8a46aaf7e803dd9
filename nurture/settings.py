"""Configuration, read once from the environment (prefix ``NURTURE_``) and passed down."""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

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
    # Keys tokens were signed with before (comma-separated): after a rotation, links in mail
    # already delivered keep working. New tokens are always signed with ``secret_key``.
    old_secret_keys: str = ""

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

    # The funnel (lifecycle.yaml): hand-off webhooks are signed with this secret, unless a
    # target names its own (secret_env). X-Nurture-Signature: v1=HMAC-SHA256 of timestamp,
    # delivery id, event and body (nurture/lifecycle/signing.py). Empty: never sent.
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

    # Opens and clicks one tracking token, or one client address, may record per window;
    # beyond that they are answered as usual and recorded nowhere (0: no limit).
    track_limit_per_token: int = Field(default=20, ge=0)
    track_limit_per_address: int = Field(default=600, ge=0)
    track_limit_seconds: float = Field(default=600.0, gt=0)

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
    def token_keys(self) -> tuple[str, ...]:
        """The keys a token is verified with: the current one first, then the old ones."""
        old = [key.strip() for key in self.old_secret_keys.split(",") if key.strip()]
        return (self.secret_key, *dict.fromkeys(key for key in old if key != self.secret_key))

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
# A key shorter than this is refused; ``secrets.token_urlsafe(32)`` gives 43 characters.
MIN_SECRET_KEY_LENGTH = 32
# The least entropy a key must show, estimated from the key itself (:func:`estimated_bits`):
# token_urlsafe(32) keys score 180 to 240; a word or a run repeated, or
# ``secrets.token_hex(16)`` (32 hex digits), score under 128.
MIN_SECRET_KEY_BITS = 128
MAKE_A_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
_LOOPBACK_NAMES = ("localhost",)


class InsecureSettings(ValueError):
    """A setting that is fine on a laptop but would be dangerous in production."""


def estimated_bits(key: str) -> float:
    """An estimate of the entropy of ``key``: the Shannon entropy of its characters'
    frequencies, per character, times the characters that are not a repeat (its distinct
    3-character pieces, plus 2), so ``0123456789`` four times counts once."""
    if not key:
        return 0.0
    counts = Counter(key)
    per_char = -sum(n / len(key) * math.log2(n / len(key)) for n in counts.values())
    novel = min(len(key), 2 + len({key[i : i + 3] for i in range(len(key) - 2)}))
    return per_char * novel


def key_weakness(key: str) -> str | None:
    """Why ``key`` is too weak to sign links with, or None. Whitespace around it does not
    count, and the default is recognised in any case and inside a longer key."""
    text = key.strip()
    if DEFAULT_SECRET_KEY in text.lower():
        return "is (or contains) the default"
    if len(text) < MIN_SECRET_KEY_LENGTH:
        return f"is shorter than {MIN_SECRET_KEY_LENGTH} characters"
    bits = estimated_bits(text)
    if bits < MIN_SECRET_KEY_BITS:
        return f"is too predictable (about {bits:.0f} bits; at least {MIN_SECRET_KEY_BITS})"
    return None


def weak_keys(settings: Settings) -> list[str]:
    """What is wrong with the configured keys: the current one and every old one (a token
    an old key signs is as good as one the current key signs)."""
    found = []
    why = key_weakness(settings.secret_key)
    if why:
        found.append(f"NURTURE_SECRET_KEY {why}")
    for number, key in enumerate(settings.token_keys[1:], start=1):
        why = key_weakness(key)
        if why:
            found.append(f"NURTURE_OLD_SECRET_KEYS entry {number} {why}")
    return found


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def loopback_only(settings: Settings, web_host: str | None = None) -> bool:
    """Nothing signed can be used from another machine: no broker, the web app on
    loopback (``web_host``, else NURTURE_WEB_HOST) and links pointing at loopback."""
    link_host = urlsplit(settings.base_url).hostname or ""
    host = settings.web_host if web_host is None else web_host
    return not settings.broker_url and is_loopback(host) and is_loopback(link_host)


def require_secret_key(settings: Settings, process: str, web_host: str | None = None) -> None:
    """Refuse weak keys unless the whole setup is on this machine (:func:`loopback_only`):
    the embedded default of ``nurture run``, ``nurture web`` and ``nurture tick`` on a
    laptop. With a weak key, anyone who reaches the web app can forge unsubscribe, open and
    click tokens."""
    if not loopback_only(settings, web_host):
        _refuse_weak(settings, process, LOOPBACK_RULE)


def require_strong_secret_key(settings: Settings, process: str) -> None:
    """Refuse weak keys whatever the setup: for processes that cannot tell who reaches them
    (the ``uvicorn --factory`` app, Celery workers)."""
    _refuse_weak(settings, process, STRICT_RULE)


# Where a weak key is allowed, as the refusal explains it.
LOOPBACK_RULE = (
    "a weak key is allowed only when everything runs on this machine: no broker, the web "
    "app on 127.0.0.1 and NURTURE_BASE_URL on 127.0.0.1"
)
STRICT_RULE = "this process cannot tell who reaches it, so it never takes a weak key"


def _refuse_weak(settings: Settings, process: str, rule: str) -> None:
    problems = weak_keys(settings)
    if problems:
        raise InsecureSettings(
            f"{process}: {'; '.join(problems)}; {rule}. Make a key with: {MAKE_A_KEY}"
        )


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides (tests, CLI flags)."""
    return Settings(**overrides)  # type: ignore[arg-type]
