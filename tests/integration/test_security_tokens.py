"""Signed link tokens under key rotation: new tokens are signed with the current key, and
links already delivered (signed with a key in NURTURE_OLD_SECRET_KEYS) keep working."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta

import pytest
from support.engine import MONDAY, add_lead, messages, tick_at
from support.web import BROWSER, Clock, SentLinks, client_for, links_of, web_runtime

from nurture.delivery.transports import MemoryTransport
from nurture.runtime import Runtime
from nurture.settings import InsecureSettings, Settings, require_secret_key
from nurture.tracking.tokens import BadToken, link_of, message_of, sign, verify

OLD = "old-" + secrets.token_urlsafe(32)
NEW = "new-" + secrets.token_urlsafe(32)


@pytest.fixture
def delivered(db_url: str) -> Iterator[tuple[str, SentLinks]]:
    """A mail sent (and its links signed) while the key was OLD."""
    transport = MemoryTransport()
    rt = web_runtime(db_url, transport, secret_key=OLD)
    add_lead(rt, "alex@example.com")
    tick_at(rt, MONDAY)
    rt.close()
    yield db_url, links_of(transport.messages[0])


def after_rotation(
    db_url: str, transport: MemoryTransport | None = None, **settings: str
) -> Runtime:
    return web_runtime(db_url, transport or MemoryTransport(), secret_key=NEW, **settings)


def test_links_delivered_before_a_rotation_keep_working(
    delivered: tuple[str, SentLinks],
) -> None:
    db_url, links = delivered
    rt = after_rotation(db_url, old_secret_keys=f" {secrets.token_urlsafe(32)}, {OLD} ,")
    clock = Clock(MONDAY + timedelta(hours=1))
    with client_for(rt, clock) as client:
        headers = {"User-Agent": BROWSER}
        assert client.get(links.pixel, headers=headers).status_code == 200
        assert client.get(links.clicks[0], headers=headers).status_code == 302
        assert client.get(links.unsubscribe).status_code == 200
        body = {"List-Unsubscribe": "One-Click"}
        assert client.post(links.unsubscribe, data=body).status_code == 200
    rt.close()


def test_without_the_old_key_the_old_links_are_refused(delivered: tuple[str, SentLinks]) -> None:
    db_url, links = delivered
    rt = after_rotation(db_url)
    with client_for(rt, Clock(MONDAY + timedelta(hours=1))) as client:
        for url in (links.pixel, links.clicks[0], links.unsubscribe):
            assert client.get(url, headers={"User-Agent": BROWSER}).status_code == 404
    rt.close()


def test_new_mail_is_signed_with_the_current_key(db_url: str) -> None:
    transport = MemoryTransport()
    rt = after_rotation(db_url, transport, old_secret_keys=OLD)
    add_lead(rt, "sam@example.com")
    tick_at(rt, MONDAY)
    links = links_of(transport.messages[0])
    [message] = messages(rt)
    rt.close()
    token = links.unsubscribe.rsplit("/", 1)[1]
    assert message_of(NEW, "unsubscribe", token) == message.id
    with pytest.raises(BadToken):
        message_of(OLD, "unsubscribe", token)
    click = links.clicks[0].rsplit("/", 1)[1]
    assert link_of((NEW, OLD), click) == (message.id, 1)
    with pytest.raises(BadToken):
        link_of(OLD, click)


def test_tokens_verify_against_every_configured_key() -> None:
    settings = Settings(secret_key=NEW, old_secret_keys=f"{OLD},{NEW}")
    assert settings.token_keys == (NEW, OLD)  # current first, each once
    for key in (NEW, OLD):
        token = sign(key, "open", {"m": 7})
        assert verify(settings.token_keys, "open", token) == {"m": 7}
        assert message_of(settings.token_keys, "open", token) == 7
    stranger = sign(secrets.token_urlsafe(32), "open", {"m": 7})
    with pytest.raises(BadToken):
        verify(settings.token_keys, "open", stranger)
    # One key per purpose still: an open token is no unsubscribe token under any key.
    with pytest.raises(BadToken):
        verify(settings.token_keys, "unsubscribe", sign(OLD, "open", {"m": 7}))


def test_a_weak_old_key_is_refused_like_a_weak_current_one() -> None:
    exposed = {"broker_url": "redis://127.0.0.1:6379/15", "secret_key": NEW}
    require_secret_key(Settings(**exposed, old_secret_keys=OLD), "web")
    for weak in ("change-me-in-production", "short", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"):
        with pytest.raises(InsecureSettings, match="NURTURE_OLD_SECRET_KEYS entry 2"):
            require_secret_key(Settings(**exposed, old_secret_keys=f"{OLD},{weak}"), "web")
    # On a laptop the default may still be an old key, as it may be the current one.
    require_secret_key(Settings(old_secret_keys="change-me-in-production"), "nurture run")


# -- one spelling per token ------------------------------------------------------------

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def same_bytes_last_char(token: str) -> list[str]:
    """The token with its last character replaced by each other one that decodes to the
    same bytes: a 20-byte signature is 27 characters, the last one's 2 low bits unused."""
    value = ALPHABET.index(token[-1])
    return [token[:-1] + ALPHABET[value ^ bits] for bits in (1, 2, 3)]


def other_spellings(token: str) -> list[str]:
    """Spellings a lenient base64 decoder reads as the same token."""
    body, _, signature = token.rpartition(".")
    found = [token + "=", token + "==", token + "\n", " " + token, token + "!"]
    found += [f"{body}.{signature[:5]}!{signature[5:]}", f"{body}.{signature[:5]}é{signature[5:]}"]
    found.append(f"{body}.{signature.replace('-', '+').replace('_', '/')}")
    return [spelling for spelling in found if spelling != token]


def a_token(purpose: str = "unsubscribe") -> str:
    """A genuine token whose signature uses - or _ (so the other alphabet has a spelling)."""
    for m in range(1, 10_000):
        token = sign(NEW, purpose, {"m": m})  # type: ignore[arg-type]
        if "-" in token.rpartition(".")[2] or "_" in token.rpartition(".")[2]:
            return token
    raise AssertionError("no token with - or _ in its signature")


@pytest.mark.parametrize("purpose", ["unsubscribe", "open", "click"])
def test_only_the_canonical_spelling_of_a_token_verifies(purpose: str) -> None:
    token = a_token(purpose)
    assert verify(NEW, purpose, token) is not None  # type: ignore[arg-type]
    for spelling in same_bytes_last_char(token) + other_spellings(token):
        with pytest.raises(BadToken):
            verify(NEW, purpose, spelling)  # type: ignore[arg-type]
    with pytest.raises(BadToken):
        verify((NEW, OLD), purpose, same_bytes_last_char(token)[0])  # type: ignore[arg-type]


def test_the_tracking_links_refuse_other_spellings(delivered: tuple[str, SentLinks]) -> None:
    db_url, links = delivered
    rt = after_rotation(db_url, old_secret_keys=OLD)
    with client_for(rt, Clock(MONDAY + timedelta(hours=1))) as client:
        headers = {"User-Agent": BROWSER}
        unsubscribe, click = links.unsubscribe, links.clicks[0]
        pixel_token = links.pixel.removesuffix(".gif")
        for url in same_bytes_last_char(unsubscribe):
            assert client.get(url).status_code == 404
            assert client.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 404
        for url in same_bytes_last_char(click):
            assert client.get(url, headers=headers).status_code == 404
        for token in same_bytes_last_char(pixel_token):
            assert client.get(f"{token}.gif", headers=headers).status_code == 404
        assert client.get(unsubscribe + "=").status_code == 404
        # The genuine spellings still work.
        assert client.get(unsubscribe).status_code == 200
        assert client.get(click, headers=headers).status_code == 302
        assert client.get(links.pixel, headers=headers).status_code == 200
    rt.close()


def test_itsdangerous_compressed_tokens_still_verify() -> None:
    from itsdangerous import URLSafeSerializer

    payload = {"m": 1, "pad": "x" * 400}  # compressed: the token starts with "."
    token = URLSafeSerializer(NEW, salt="nurture.click").dumps(payload)
    assert token.startswith(".")
    assert verify(NEW, "click", token) == payload
    for spelling in same_bytes_last_char(token):
        with pytest.raises(BadToken):
            verify(NEW, "click", spelling)
