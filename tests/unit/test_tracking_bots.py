"""The bot filter: scanners, privacy proxies, too-fast clicks and all-links bursts are
not people; an ordinary reader is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nurture.settings import Settings
from nurture.tracking.bots import BotRules, Hit, burst_members, judge_click, judge_open

SENT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15"
RULES = BotRules.from_settings(Settings())


def at(seconds: float) -> datetime:
    return SENT + timedelta(seconds=seconds)


def click(seconds: float, agent: str = BROWSER, position: int = 1, earlier=(), links=3) -> str:  # type: ignore[no-untyped-def]
    return judge_click(
        RULES, Hit(at(seconds), agent, "203.0.113.9"), SENT, position, earlier, links
    )


def test_a_reader_clicking_later_is_human() -> None:
    assert click(3600) == ""
    assert judge_open(RULES, Hit(at(600), BROWSER, "203.0.113.9"), SENT) == ""


@pytest.mark.parametrize(
    "agent",
    [
        "Barracuda Sentinel (EE)",
        "Mimecast-Scanner/1.0",
        "Mozilla/5.0 (compatible; Proofpoint URL Defense)",
        "python-requests/2.31.0",
        "curl/8.5.0",
        "Mozilla/5.0 (compatible; bingbot/2.0)",
        "Microsoft Office Protection/1.0",
    ],
)
def test_scanner_user_agents_are_not_human(agent: str) -> None:
    assert click(3600, agent) == "scanner user agent"


def test_a_click_within_seconds_of_the_send_is_a_scanner() -> None:
    assert click(4.9).startswith("clicked within 5s")
    assert click(5.1) == ""
    assert click(-30).startswith("clicked within")  # before the send was even recorded


def test_every_link_clicked_at_once_is_a_scanner() -> None:
    earlier = [(1, at(600)), (2, at(601))]
    assert click(603, position=3, earlier=earlier).startswith("every link clicked")
    # The same links spread over minutes: a reader.
    assert click(900, position=3, earlier=[(1, at(600)), (2, at(700))]) == ""
    # Not every link yet.
    assert click(602, position=2, earlier=[(1, at(600))]) == ""
    # One link only: clicking it is no burst.
    assert click(600, position=1, earlier=[], links=1) == ""
    assert burst_members(RULES, at(603), [(1, at(100)), *earlier]) == [1, 2]


def test_privacy_proxy_and_prefetch_opens_are_not_human() -> None:
    apple_ip = "17.58.10.1"
    assert judge_open(RULES, Hit(at(600), "Mozilla/5.0", apple_ip), SENT) == "privacy proxy"
    yahoo = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 YahooMailProxy"
    assert judge_open(RULES, Hit(at(600), yahoo, "203.0.113.9"), SENT) == "privacy proxy"
    assert judge_open(RULES, Hit(at(1), BROWSER, "203.0.113.9"), SENT).startswith("opened within")


def test_thresholds_and_lists_come_from_settings() -> None:
    rules = BotRules.from_settings(
        Settings(
            bot_click_seconds=0,
            bot_burst_seconds=0,
            bot_scanner_agents="acme-scanner",
            bot_proxy_networks="198.51.100.0/24, 2001:db8::/32",
        )
    )
    hit = Hit(at(1), BROWSER, "198.51.100.7")
    assert judge_click(rules, hit, SENT, 2, [(1, at(1))], 2) == ""
    assert judge_click(rules, Hit(at(1), "ACME-Scanner/2"), SENT, 1, [], 1) == "scanner user agent"
    assert judge_open(rules, hit, SENT) == "privacy proxy"
    assert judge_open(rules, Hit(at(900), BROWSER, "2001:db8::1"), SENT) == "privacy proxy"
    with pytest.raises(ValueError, match="NURTURE_BOT_PROXY_NETWORKS"):
        BotRules.from_settings(Settings(bot_proxy_networks="not-a-network"))
