"""Rewriting the links of a rendered email for click tracking, with UTM parameters and an
open pixel. Pure: the same input always gives the same output, and nothing is stored here.

The HTML is never re-serialized: one regular expression finds where each ``<a href>`` value
sits in the source, and exactly those characters are replaced. Everything else stays byte for
byte as the template rendered it. (The HTML comes from our own templates, with lead data
autoescaped, so a tag's quoted values are well formed. An ``<a>`` inside a comment, such as
Outlook's ``<!--[if mso]>`` blocks, is rewritten too: a mail client that renders it is
following a link we send.)

Only links the template itself contains are tracked (``Tracking.allowed``): a URL that came
from lead data (a first name of ``https://evil.example/login``) stays plain text and never
becomes a signed redirect on our domain. A URL a template builds with an expression
(``href="https://x.example/{{ lead.company }}"``) is not literal, so it is not tracked either.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol
from urllib.parse import parse_qsl, quote, urlencode

from nurture.tracking.tokens import click_url, open_url

# Where a URL in plain text ends: whitespace, or a character that cannot be in a bare URL.
_TEXT_URL = re.compile(r"""https?://[^\s<>"'`]+""", re.IGNORECASE)
# Punctuation that usually ends a sentence rather than a URL.
_TRAILING = ".,;:!?"
# The href value of an <a> start tag (the first href, as a browser reads it). Earlier
# attributes are skipped a character or a whole quoted value at a time, so text inside a
# quoted value never counts as an attribute; every alternative starts with a different
# character, so matching stays linear. Not data-href, hreflang, <abbr> or </a>.
_A_HREF = re.compile(
    r"""<a(?=[\s/>])(?:[^>"']|"[^"]*"|'[^']*')*?(?<=[\s"'/])href\s*=\s*"""
    r"""(?P<value>"[^"]*"|'[^']*'|[^\s>"'][^\s>]*)""",
    re.IGNORECASE,
)
# The tracking endpoints of the web app: links to these are never rewritten.
OWN_PATHS = ("/u/", "/o/", "/c/")


class TrackingSettings(Protocol):
    """What link tracking reads of the settings (``nurture.settings.Settings`` has it)."""

    base_url: str
    secret_key: str
    track_clicks: bool
    track_opens: bool
    utm_enabled: bool
    utm_source: str
    utm_medium: str
    utm_campaign: str
    utm_content: str


@dataclass(frozen=True)
class TrackedLink:
    """A link of the message: its position and the URL (with UTM) a click goes to."""

    position: int
    url: str


@dataclass(frozen=True)
class TrackedBody:
    """The rewritten HTML and text parts, and the links they point to."""

    html: str
    text: str
    links: tuple[TrackedLink, ...]


@dataclass(frozen=True)
class Tracking:
    """What to do to one message's links. ``click_url(position)`` gives the tracking URL of a
    link (None: links get UTM parameters but no redirect); ``pixel_url`` None: no pixel."""

    click_url: Callable[[int], str] | None
    pixel_url: str | None
    utm: Mapping[str, str] = field(default_factory=dict)
    # URLs never touched (the unsubscribe URL), and our own base URL.
    keep: Collection[str] = ()
    base_url: str = ""
    # The URLs the template's own text contains (``template_urls``); only these are
    # rewritten. None: every link (for content that holds no lead data).
    allowed: Collection[str] | None = None


def track(html: str, text: str, tracking: Tracking) -> TrackedBody:
    """Rewrite every http(s) link of both parts, add UTM parameters and the open pixel."""
    positions: dict[str, int] = {}
    html_out = _rewrite_html(html, tracking, positions)
    text_out = _rewrite_text(text, tracking, positions)
    if tracking.pixel_url:
        html_out = add_pixel(html_out, tracking.pixel_url)
    links = tuple(
        TrackedLink(position, add_utm(url, tracking.utm)) for url, position in positions.items()
    )
    return TrackedBody(html_out, text_out, links if tracking.click_url else ())


def add_utm(url: str, params: Mapping[str, str]) -> str:
    """``url`` with the UTM parameters it lacks; those it has are kept as they are."""
    return _add_utm(url, tuple(params.items()))


# A template's links and a step's parameters are the same for every lead: parsing and
# encoding them once per distinct pair saves a third of the link rewriting.
@lru_cache(maxsize=4096)
def _add_utm(url: str, params: tuple[tuple[str, str], ...]) -> str:
    base, hash_mark, fragment = url.partition("#")
    path, _, query = base.partition("?")
    present = {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}
    extra = [(name, value) for name, value in params if value and name not in present]
    if not extra:
        return url
    addition = urlencode(extra, quote_via=quote)
    query = f"{query}&{addition}" if query and not query.endswith("&") else query + addition
    return f"{path}?{query}{hash_mark}{fragment}"


def add_pixel(html: str, pixel_url: str) -> str:
    """The HTML with a 1x1 open pixel just before ``</body>`` (or at the end if none)."""
    tag = (
        f'<img src="{html_lib.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="border:0;width:1px;height:1px;">'
    )
    at = html.lower().rfind("</body")
    return html + tag if at < 0 else html[:at] + tag + html[at:]


def is_trackable(url: str, tracking: Tracking) -> bool:
    """An absolute http(s) URL, written in the template (when ``allowed`` says which), that
    is not the unsubscribe link nor one of our own."""
    if not url.lower().startswith(("http://", "https://")) or url in tracking.keep:
        return False
    if tracking.allowed is not None and url not in tracking.allowed:
        return False
    base = tracking.base_url.rstrip("/")
    return not (base and any(url.startswith(base + path) for path in OWN_PATHS))


def _position(url: str, positions: dict[str, int]) -> int:
    # One position per distinct URL: the text part's copy of a link is the same link.
    return positions.setdefault(url, len(positions) + 1)


def _target(url: str, tracking: Tracking, positions: dict[str, int]) -> str:
    position = _position(url, positions)
    if tracking.click_url is None:
        return add_utm(url, tracking.utm)
    return tracking.click_url(position)


def _rewrite_html(html: str, tracking: Tracking, positions: dict[str, int]) -> str:
    pieces: list[str] = []
    done = 0
    for match in _A_HREF.finditer(html):
        url = html_lib.unescape(_unquote(match.group("value"))).strip()
        if not is_trackable(url, tracking):
            continue
        target = _target(url, tracking, positions)
        pieces += [html[done : match.start("value")], '"', html_lib.escape(target, quote=True), '"']
        done = match.end("value")
    pieces.append(html[done:])
    return "".join(pieces)


def _rewrite_text(text: str, tracking: Tracking, positions: dict[str, int]) -> str:
    def replace(match: re.Match[str]) -> str:
        url = _trim(match.group(0))
        rest = match.group(0)[len(url) :]
        if not is_trackable(url, tracking):
            return match.group(0)
        return _target(url, tracking, positions) + rest

    return _TEXT_URL.sub(replace, text)


def _trim(url: str) -> str:
    """Drop sentence punctuation and an unbalanced closing parenthesis from a text URL."""
    while url and (url[-1] in _TRAILING or (url[-1] == ")" and url.count(")") > url.count("("))):
        url = url[:-1]
    return url


def template_urls(literal: str) -> set[str]:
    """Every URL a piece of literal template text contains, as the rewriting will compare
    it: text URLs (trimmed or not) and ``<a href>`` values, raw and HTML-unescaped."""
    found: set[str] = set()
    for match in _TEXT_URL.finditer(literal):
        found.update((match.group(0), _trim(match.group(0))))
    for match in _A_HREF.finditer(literal):
        found.add(_unquote(match.group("value")).strip())
    return found | {html_lib.unescape(url).strip() for url in found}


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def utm_params(settings: TrackingSettings, sequence_key: str, step_id: str) -> dict[str, str]:
    """The UTM parameters configured in ``settings`` for one step of a sequence."""
    if not settings.utm_enabled:
        return {}
    values = {
        "utm_source": settings.utm_source,
        "utm_medium": settings.utm_medium,
        "utm_campaign": settings.utm_campaign,
        "utm_content": settings.utm_content,
    }
    return {
        name: value.replace("{sequence}", sequence_key).replace("{step}", step_id)
        for name, value in values.items()
        if value
    }


def tracking_for(
    settings: TrackingSettings,
    message_id: int,
    sequence_key: str,
    step_id: str,
    unsubscribe_url: str,
    *,
    allowed: Collection[str] | None = None,
) -> Tracking:
    """What to do to the links of one message, as ``settings`` configure it; ``allowed``:
    the URLs its template contains (the only ones rewritten)."""
    base, secret = settings.base_url, settings.secret_key

    def click(position: int) -> str:
        return click_url(base, secret, message_id, position)

    return Tracking(
        click_url=click if settings.track_clicks else None,
        pixel_url=open_url(base, secret, message_id) if settings.track_opens else None,
        utm=utm_params(settings, sequence_key, step_id),
        keep=(unsubscribe_url,),
        base_url=base,
        allowed=allowed,
    )
