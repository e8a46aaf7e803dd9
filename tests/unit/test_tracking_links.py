"""Link rewriting at send time: every http(s) link goes through the click redirect with
UTM parameters, the rest of the HTML stays exactly as rendered, and a pixel is added."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from nurture.settings import Settings
from nurture.tracking.links import Tracking, add_utm, track, tracking_for
from nurture.tracking.tokens import link_of, message_of, unsubscribe_url

BASE = "https://t.example"
UNSUB = f"{BASE}/u/TOKEN"
UTM = {"utm_source": "nurture", "utm_medium": "email", "utm_campaign": "drip"}


def tracking(**overrides: object) -> Tracking:
    values: dict[str, object] = {
        "click_url": lambda position: f"{BASE}/c/link{position}",
        "pixel_url": f"{BASE}/o/pixel.gif",
        "utm": UTM,
        "keep": (UNSUB,),
        "base_url": BASE,
        **overrides,
    }
    return Tracking(**values)  # type: ignore[arg-type]


HTML = f"""<html><body>
<p>Read <a href="https://docs.example.com/guide?step=1&amp;x=2">the guide</a>,
<a class="btn" href='https://example.com/pricing?utm_source=partner#plans'>pricing</a>,
<a href=https://example.com/bare>bare</a>,
<a href="mailto:sales@example.com">mail us</a>, <a href="tel:+15551234">call</a>,
<a href="#top">top</a>, <a href="/relative">relative</a>, <a name="anchor">no href</a>,
<a href="{UNSUB}">Unsubscribe</a></p>
<p>Again: <a href="https://docs.example.com/guide?step=1&amp;x=2">guide</a></p>
</body></html>"""

TEXT = f"""Read the guide: https://docs.example.com/guide?step=1&x=2.
Pricing (https://example.com/pricing?utm_source=partner#plans) and a text-only link
https://example.com/only-in-text, mail sales@example.com.
Unsubscribe: {UNSUB}
"""


def test_every_http_link_goes_through_the_click_redirect() -> None:
    body = track(HTML, TEXT, tracking())
    assert 'href="https://t.example/c/link1">the guide' in body.html
    assert 'class="btn" href="https://t.example/c/link2">pricing' in body.html
    assert 'href="https://t.example/c/link3">bare' in body.html
    # The same URL twice is one link (one position).
    assert 'href="https://t.example/c/link1">guide' in body.html
    assert "https://docs.example.com" not in body.html


def test_other_links_and_the_rest_of_the_html_are_untouched() -> None:
    body = track(HTML, TEXT, tracking())
    for kept in (
        'href="mailto:sales@example.com"',
        'href="tel:+15551234"',
        'href="#top"',
        'href="/relative"',
        '<a name="anchor">',
        f'href="{UNSUB}">Unsubscribe',
    ):
        assert kept in body.html
    # Only the href values changed: removing them gives back the original document.
    without_pixel = body.html.replace(
        '<img src="https://t.example/o/pixel.gif" width="1" height="1" alt="" '
        'style="border:0;width:1px;height:1px;">',
        "",
    )
    assert _strip_hrefs(without_pixel) == _strip_hrefs(HTML)


def _strip_hrefs(html: str) -> str:
    import re

    return re.sub(r"""href=("[^"]*"|'[^']*'|[^\s>]+)""", "href=X", html)


def test_utm_parameters_are_added_and_existing_ones_kept() -> None:
    body = track(HTML, TEXT, tracking())
    links = {link.position: link.url for link in body.links}
    guide = parse_qs(urlsplit(links[1]).query)
    assert guide == {
        "step": ["1"],
        "x": ["2"],
        "utm_source": ["nurture"],
        "utm_medium": ["email"],
        "utm_campaign": ["drip"],
    }
    pricing = urlsplit(links[2])
    assert parse_qs(pricing.query)["utm_source"] == ["partner"]  # not overridden
    assert parse_qs(pricing.query)["utm_medium"] == ["email"]
    assert pricing.fragment == "plans"
    assert links[2].startswith("https://example.com/pricing?utm_source=partner&utm_medium=email")


def test_text_part_links_are_rewritten_with_the_same_positions() -> None:
    body = track(HTML, TEXT, tracking())
    assert "Read the guide: https://t.example/c/link1." in body.text
    assert "Pricing (https://t.example/c/link2) and" in body.text
    assert "https://t.example/c/link4," in body.text  # only in the text part: its own position
    assert f"Unsubscribe: {UNSUB}" in body.text
    assert "mail sales@example.com" in body.text
    assert [link.position for link in body.links] == [1, 2, 3, 4]
    assert body.links[3].url.startswith("https://example.com/only-in-text?utm_source=nurture")


def test_the_pixel_goes_just_before_the_body_ends() -> None:
    body = track(HTML, TEXT, tracking())
    assert body.html.endswith(
        '<img src="https://t.example/o/pixel.gif" width="1" height="1" alt="" '
        'style="border:0;width:1px;height:1px;"></body></html>'
    )
    assert track("<p>no body tag</p>", "", tracking()).html.endswith('height:1px;">')


def test_tracking_can_be_turned_off() -> None:
    body = track(HTML, TEXT, tracking(click_url=None, pixel_url=None))
    assert body.links == ()
    assert "<img" not in body.html
    # Without the redirect the links still carry the UTM parameters.
    assert "https://docs.example.com/guide?step=1&amp;x=2&amp;utm_source=nurture" in body.html
    assert "https://example.com/only-in-text?utm_source=nurture" in body.text


def test_add_utm_keeps_the_url_as_written() -> None:
    assert add_utm("https://a.example/p", {}) == "https://a.example/p"
    assert (
        add_utm("https://a.example/p?", {"utm_source": "n"}) == "https://a.example/p?utm_source=n"
    )
    assert (
        add_utm("https://a.example/p?q=a%20b#f", {"utm_campaign": "x y"})
        == "https://a.example/p?q=a%20b&utm_campaign=x%20y#f"
    )
    assert add_utm("https://a.example/?UTM_SOURCE=x", {"utm_source": "n"}).endswith("UTM_SOURCE=x")


def test_links_to_our_own_endpoints_are_never_wrapped() -> None:
    html = f'<a href="{BASE}/u/other">u</a><a href="{BASE}/c/abc">c</a><a href="{BASE}/x">x</a>'
    body = track(html, "", tracking(pixel_url=None))
    assert f'href="{BASE}/u/other"' in body.html
    assert f'href="{BASE}/c/abc"' in body.html
    assert 'href="https://t.example/c/link1"' in body.html


def test_tracking_for_signs_tokens_and_fills_utm_from_settings() -> None:
    settings = Settings(base_url=BASE, secret_key="k", utm_content="{step}-v1")
    unsub = unsubscribe_url(BASE, "k", 42)
    html = f'<body><a href="https://example.com/a">a</a><a href="{unsub}">u</a></body>'
    body = track(html, "", tracking_for(settings, 42, "drip", "welcome", unsub))
    token = body.html.split('href="https://t.example/c/')[1].split('"')[0]
    assert link_of("k", token) == (42, 1)
    pixel = body.html.split('src="https://t.example/o/')[1].split('.gif"')[0]
    assert message_of("k", "open", pixel) == 42
    query = parse_qs(urlsplit(body.links[0].url).query)
    assert query["utm_campaign"] == ["drip"] and query["utm_content"] == ["welcome-v1"]
    off = Settings(base_url=BASE, secret_key="k", utm_enabled=False, track_opens=False)
    plain = track(html, "", tracking_for(off, 42, "drip", "welcome", unsub))
    assert plain.links[0].url == "https://example.com/a" and "<img" not in plain.html


def test_only_the_href_of_a_tags_is_found_however_the_tag_is_written() -> None:
    html = (
        '<abbr href="https://example.com/abbr">x</abbr>'
        '<a data-href="https://example.com/data" hreflang="en" title="href=\'https://no.example\'>"'
        ' HREF="https://example.com/upper" href="https://example.com/second">one</a>'
        "<A\nclass=btn\nhref = 'https://example.com/multi?a=1&amp;b=2'>two</A>"
        '<a title="a > b" href="https://example.com/after-gt">three</a>'
        '<area href="https://example.com/area"></a>'
    )
    body = track(html, "", tracking(pixel_url=None))
    assert body.html == (
        '<abbr href="https://example.com/abbr">x</abbr>'
        '<a data-href="https://example.com/data" hreflang="en" title="href=\'https://no.example\'>"'
        ' HREF="https://t.example/c/link1" href="https://example.com/second">one</a>'
        '<A\nclass=btn\nhref = "https://t.example/c/link2">two</A>'
        '<a title="a > b" href="https://t.example/c/link3">three</a>'
        '<area href="https://example.com/area"></a>'
    )
    urls = [link.url.split("?")[0] for link in body.links]
    assert urls == [
        "https://example.com/upper",
        "https://example.com/multi",
        "https://example.com/after-gt",
    ]
    assert body.links[1].url.startswith("https://example.com/multi?a=1&b=2&utm_source=")


def test_an_unterminated_tag_is_left_alone() -> None:
    html = '<p><a href="https://example.com/x>broken</p>'
    assert track(html, "", tracking(pixel_url=None)).html == html
