"""Telling people from machines: link scanners, privacy proxies that prefetch images, and
clicks no person could make. Pure: each judgement is a function of the hit, the message's
send time, its earlier clicks and the rules. An empty reason means human.

A hit judged a bot is still recorded (``is_human=False``, ``data.bot_reason``) so a
marketer can see it, but it never scores and never steers a branch.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BotSettings(Protocol):
    """What the filter reads of the settings (``nurture.settings.Settings`` has it all)."""

    bot_click_seconds: float
    bot_open_seconds: float
    bot_burst_seconds: float
    bot_scanner_agents: str
    bot_proxy_agents: str
    bot_proxy_networks: str


@dataclass(frozen=True)
class BotRules:
    """The thresholds and lists of the filter (see the NURTURE_BOT_* settings)."""

    click_seconds: float = 5.0
    open_seconds: float = 3.0
    burst_seconds: float = 10.0
    scanner_agents: tuple[str, ...] = ()
    proxy_agents: tuple[str, ...] = ()
    proxy_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: BotSettings) -> BotRules:
        """The rules configured in ``settings``; a bad network is a ValueError naming it."""
        return cls(
            click_seconds=settings.bot_click_seconds,
            open_seconds=settings.bot_open_seconds,
            burst_seconds=settings.bot_burst_seconds,
            scanner_agents=_words(settings.bot_scanner_agents),
            proxy_agents=_words(settings.bot_proxy_agents),
            proxy_networks=tuple(_network(n) for n in _words(settings.bot_proxy_networks)),
        )


@dataclass(frozen=True)
class Hit:
    """One request to the open pixel or a click URL."""

    at: datetime
    user_agent: str = ""
    ip: str = ""


def judge_open(rules: BotRules, hit: Hit, sent_at: datetime | None) -> str:
    """Why this open is not a person reading the mail, or "" if it may well be one."""
    if _matches(hit.user_agent, rules.proxy_agents) or _in_networks(hit.ip, rules.proxy_networks):
        return "privacy proxy"
    if _matches(hit.user_agent, rules.scanner_agents):
        return "scanner user agent"
    if _too_soon(hit.at, sent_at, rules.open_seconds):
        return f"opened within {rules.open_seconds:g}s of the send"
    return ""


def judge_click(
    rules: BotRules,
    hit: Hit,
    sent_at: datetime | None,
    position: int,
    earlier: Sequence[tuple[int, datetime]],
    link_count: int,
) -> str:
    """Why this click is not a person, or "". ``earlier`` holds (position, time) of the
    message's previous clicks; ``link_count`` is how many tracked links the message has."""
    if _matches(hit.user_agent, rules.scanner_agents):
        return "scanner user agent"
    if _too_soon(hit.at, sent_at, rules.click_seconds):
        return f"clicked within {rules.click_seconds:g}s of the send"
    if is_burst(rules, hit.at, position, earlier, link_count):
        return f"every link clicked within {rules.burst_seconds:g}s"
    return ""


def is_burst(
    rules: BotRules,
    at: datetime,
    position: int,
    earlier: Sequence[tuple[int, datetime]],
    link_count: int,
) -> bool:
    """True when this click completes a set of clicks on every link of a message (two or
    more) within ``burst_seconds``: what a scanner does, and no reader."""
    if link_count < 2 or rules.burst_seconds <= 0:
        return False
    window = timedelta(seconds=rules.burst_seconds)
    recent = {p for p, t in earlier if abs(at - t) <= window}
    return len(recent | {position}) >= link_count


def burst_members(
    rules: BotRules, at: datetime, earlier: Sequence[tuple[int, datetime]]
) -> list[int]:
    """Indexes into ``earlier`` of the clicks that belong to a burst ending at ``at``."""
    window = timedelta(seconds=rules.burst_seconds)
    return [i for i, (_, t) in enumerate(earlier) if abs(at - t) <= window]


def _too_soon(at: datetime, sent_at: datetime | None, seconds: float) -> bool:
    if sent_at is None or seconds <= 0:
        return False
    return timedelta(0) <= at - sent_at < timedelta(seconds=seconds) or at < sent_at


def _matches(user_agent: str, words: Sequence[str]) -> bool:
    agent = user_agent.lower()
    return any(word in agent for word in words)


def _in_networks(ip: str, networks: Sequence[IPNetwork]) -> bool:
    if not ip or not networks:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _words(value: str) -> tuple[str, ...]:
    return tuple(w.strip().lower() for w in value.split(",") if w.strip())


def _network(value: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"NURTURE_BOT_PROXY_NETWORKS: {value!r} is not a network: {exc}") from None
