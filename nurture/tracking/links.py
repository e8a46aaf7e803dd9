"""Rewriting the links of a rendered email for click tracking, with UTM parameters and an
open pixel. Pure: the same input always gives the same output, and nothing is stored here.

The HTML is never re-serialized: the parser only finds where each ``<a href>`` value sits
in the source, and exactly those characters are replaced. Everything else stays byte for
byte as the template rendered it.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qsl, quote, urlencode

from nurture.settings import Settings
from nurture.tokens import click_url, open_url

# Where a URL in plain text ends: whitespace, or a character that cannot be in a bare URL.
_TEXT_URL = re.compile(r"""https?://[^\s<>"'`]+""", re.IGNORECASE)
# Punctuation that usually ends a sentence rather than a URL.
_TRAILING = ".,;:!?"
_TAG_NAME = re.compile(r"<[a-zA-Z][^\s/>]*")
# An attribute inside a start tag, as html.parser reads it: name, then an optional value.
_ATTRIBUTE = re.compile(r"""([^\s/>"'=][^\s/>=]*)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>]*))?""")
# The tracking endpoints of the web app: links to these are never rewritten.
OWN_PATHS = ("/u/", "/o/", "/c/")


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
    base, hash_mark, fragment = url.partition("#")
    path, _, query = base.partition("?")
    present = {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}
    extra = [(name, value) for name, value in params.items() if value and name not in present]
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
    """An absolute http(s) URL that is not the unsubscribe link nor one of our own."""
    if not url.lower().startswith(("http://", "https://")) or url in tracking.keep:
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
    finder = _HrefFinder(html)
    pieces: list[str] = []
    done = 0
    for start, end, url in finder.spans():
        if not is_trackable(url, tracking):
            continue
        target = _target(url, tracking, positions)
        pieces += [html[done:start], '"', html_lib.escape(target, quote=True), '"']
        done = end
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


class _HrefFinder(HTMLParser):
    """Finds where the href value of each ``<a>`` start tag sits in the source."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self._source = source
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", source)]
        self._found: list[tuple[int, int, str]] = []

    def spans(self) -> list[tuple[int, int, str]]:
        """(start, end, unescaped URL) of each href value, quotes included, in order."""
        self.feed(self._source)
        self.close()
        return self._found

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        href = next((value for name, value in attrs if name == "href"), None)
        raw = self.get_starttag_text()
        if href is None or raw is None:
            return
        line, column = self.getpos()
        start = self._line_starts[line - 1] + column
        if self._source[start : start + len(raw)] != raw:
            return  # never guess: a link we cannot place is left as it is
        span = _href_span(raw)
        if span and html_lib.unescape(_unquote(raw[span[0] : span[1]])) == href:
            self._found.append((start + span[0], start + span[1], href.strip()))


def _href_span(raw_tag: str) -> tuple[int, int] | None:
    """Where the first href value sits in a raw start tag (quotes included)."""
    name = _TAG_NAME.match(raw_tag)
    if name is None:
        return None
    for match in _ATTRIBUTE.finditer(raw_tag, name.end()):
        if match.group(1).lower() == "href" and match.group(2) is not None:
            return match.start(2), match.end(2)
        if match.group(1).lower() == "href":
            return None
    return None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def utm_params(settings: Settings, sequence_key: str, step_id: str) -> dict[str, str]:
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
    settings: Settings, message_id: int, sequence_key: str, step_id: str, unsubscribe_url: str
) -> Tracking:
    """What to do to the links of one message, as ``settings`` configure it."""
    base, secret = settings.base_url, settings.secret_key

    def click(position: int) -> str:
        return click_url(base, secret, message_id, position)

    return Tracking(
        click_url=click if settings.track_clicks else None,
        pixel_url=open_url(base, secret, message_id) if settings.track_opens else None,
        utm=utm_params(settings, sequence_key, step_id),
        keep=(unsubscribe_url,),
        base_url=base,
    )
