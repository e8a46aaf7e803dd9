"""The few HTML pages a lead may see: unsubscribe confirmation and result. Self-contained
(no scripts, no external resources, no cookies)."""

from __future__ import annotations

from html import escape

GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
    b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; padding: 0 1rem;
       color: #222; line-height: 1.5; }}
button {{ font-size: 1rem; padding: .6rem 1.2rem; border: 0; border-radius: 4px;
         background: #333; color: #fff; cursor: pointer; }}
</style>
</head>
<body>
<h1>{title}</h1>
{body}
</body>
</html>
"""


def page(title: str, body_html: str) -> str:
    """A minimal HTML page; ``body_html`` must already be escaped."""
    return _PAGE.format(title=escape(title), body=body_html)


def confirm_unsubscribe(masked_email: str, sender: str) -> str:
    """The page of GET /u/<token>: a button that POSTs to the same URL. Link scanners
    follow GET, so nothing changes until the button is pressed."""
    body = (
        f"<p>Stop all email from {escape(sender)} to <strong>{escape(masked_email)}</strong>?"
        "</p>\n"
        '<form method="post">\n'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">\n'
        '<button type="submit">Unsubscribe</button>\n'
        "</form>"
    )
    return page("Unsubscribe", body)


def unsubscribed(sender: str) -> str:
    """The answer to the one-click POST and to the confirmation form."""
    return page(
        "You are unsubscribed",
        f"<p>You will get no more email from {escape(sender)}. Sorry to see you go.</p>",
    )


def not_found() -> str:
    """An unknown or broken link."""
    return page("Link not found", "<p>This link is not valid. It may have been mistyped.</p>")


def mask_email(email: str) -> str:
    """``alex@example.com`` -> ``a***@example.com``: enough to recognise, not to harvest."""
    local, at, domain = email.partition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"
