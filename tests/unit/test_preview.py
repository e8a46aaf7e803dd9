"""`nurture preview`: one email step rendered to files, including a parseable .eml."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
from email.message import EmailMessage
from pathlib import Path

import pytest
from support import FIXTURES
from typer.testing import CliRunner, Result

from nurture.cli import app
from nurture.settings import Settings
from nurture.tracking.tokens import BadToken, link_of, verify

GOOD = FIXTURES / "authoring" / "good"
runner = CliRunner()


def preview(tmp_path: Path, *args: str) -> Result:
    folders = ["--sequences", str(GOOD / "sequences"), "--templates", str(GOOD / "templates")]
    return runner.invoke(app, ["preview", *args, *folders, "--out", str(tmp_path / "out")])


def parse(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_preview_in_korean_writes_four_files(tmp_path: Path) -> None:
    result = preview(tmp_path, "finance-awareness", "welcome", "--locale", "ko")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "finance-awareness" / "welcome.ko"
    files = ["subject.txt", "body.html", "body.txt", "message.eml"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    assert "preview written to" in result.output and "welcome.ko" in result.output
    assert (folder / "subject.txt").read_text(encoding="utf-8") == "김민준님, 결산을 더 빠르게\n"
    assert "결산을 더 빨리" in (folder / "body.html").read_text(encoding="utf-8")
    raw = (folder / "message.eml").read_bytes()
    assert raw.isascii()  # the Korean subject travels RFC 2047-encoded
    message = parse(folder / "message.eml")
    assert message["Subject"] == "김민준님, 결산을 더 빠르게"
    assert message["From"] == "Nurture <hello@nurture.example>"
    assert message["List-Unsubscribe"].startswith("<http://127.0.0.1:8000/u/")
    text = message.get_body(("plain",))
    assert text is not None and "한빛테크 같은 기업의 재무팀" in text.get_content()


def test_preview_default_locale_and_lead_file(tmp_path: Path) -> None:
    lead = tmp_path / "lead.yaml"
    lead.write_text(
        "first_name: Dana\nemail: dana@globex.example\ncompany: Globex\n", encoding="utf-8"
    )
    result = preview(tmp_path, "finance-awareness", "welcome", "--lead", str(lead))
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "finance-awareness" / "welcome"
    assert (folder / "subject.txt").read_text() == "Dana, close the books faster\n"
    message = parse(folder / "message.eml")
    assert message["To"] == "Dana Morgan <dana@globex.example>"
    html = message.get_body(("html",))
    assert html is not None and "companies like Globex" in html.get_content()


def test_preview_persona_option_and_json_lead(tmp_path: Path) -> None:
    lead = tmp_path / "lead.json"
    lead.write_text('{"first_name": "Kim", "industry": "Logistics"}', encoding="utf-8")
    args = ["finance-awareness", "case-study", "--lead", str(lead), "--persona", "Finance_Leader"]
    result = preview(tmp_path, *args)
    assert result.exit_code == 0, result.output
    subject = tmp_path / "out" / "finance-awareness" / "case-study" / "subject.txt"
    assert subject.read_text() == "How a logistics company closed 4 days sooner\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "welcome"], "no sequence 'nope'"),
        (["finance-awareness", "nope"], "has no step 'nope' (email steps: welcome, case-study)"),
        (["finance-awareness", "check"], "step 'check' is a branch step, not an email step"),
    ],
)
def test_preview_unknown_sequence_or_step(tmp_path: Path, args: list[str], message: str) -> None:
    result = preview(tmp_path, *args)
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_preview_bad_lead_file(tmp_path: Path) -> None:
    lead = tmp_path / "lead.yaml"
    lead.write_text("first_name: Dana\nfavourite: blue\n", encoding="utf-8")
    result = preview(tmp_path, "finance-awareness", "welcome", "--lead", str(lead))
    assert result.exit_code == 1
    assert f"{lead}:2: unknown lead field 'favourite'" in result.output
    lead.write_text("first_name: [Dana\n", encoding="utf-8")
    result = preview(tmp_path, "finance-awareness", "welcome", "--lead", str(lead))
    assert result.exit_code == 1 and f"{lead}:2: YAML syntax error" in result.output
    result = preview(tmp_path, "finance-awareness", "welcome", "--lead", str(tmp_path / "x.json"))
    assert result.exit_code == 1 and "cannot read" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--persona", "it_director"],
            "--persona: persona 'it_director' is not in the audience of sequence "
            "'finance-awareness' (personas: finance_leader)",
        ),
        (
            ["--locale", "xx_YY_ZZ"],
            "--locale: bad locale 'xx_YY_ZZ': use a language tag such as en",
        ),
    ],
)
def test_preview_refuses_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = preview(tmp_path, "finance-awareness", "welcome", *args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_preview_checks_the_lead_file_like_an_import(tmp_path: Path) -> None:
    lead = tmp_path / "lead.yaml"
    lead.write_text(
        "first_name: Dana\n"
        "company_size: lots\n"  # 2
        "timezone: Mars/Base\n"  # 3
        "journey_stage: decision\n",  # 4
        encoding="utf-8",
    )
    result = preview(tmp_path, "finance-awareness", "welcome", "--lead", str(lead))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"{lead}:2: company_size: expected a whole number like 250 or 1,200, got 'lots'" in lines
    assert any(
        line.startswith(f"{lead}:3: timezone: unknown time zone 'Mars/Base'") for line in lines
    )
    assert not (tmp_path / "out").exists()

    lead.write_text("journey_stage: decision\nlocale: ko_kr\n", encoding="utf-8")
    result = preview(tmp_path, "finance-awareness", "welcome", "--lead", str(lead))
    assert result.exit_code == 1
    assert f"{lead}:1: journey stage 'decision' is not in the audience" in result.output

    lead.write_text("locale: ko_kr\ntitle:\n", encoding="utf-8")  # normalized, like an import
    result = preview(tmp_path, "finance-awareness", "welcome", "--lead", str(lead))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "finance-awareness" / "welcome.ko-KR" / "subject.txt").exists()


GUIDE = "https://docs.example.com/guide"


def _linked_templates(tmp_path: Path) -> Path:
    """The good fixtures, with a link in the welcome email (HTML and text)."""
    root = tmp_path / "good"
    shutil.copytree(GOOD, root)
    welcome = root / "templates" / "finance_leader" / "awareness" / "welcome"
    for suffix, link in (("html", f'<a href="{GUIDE}">guide</a>'), ("txt", GUIDE)):
        path = welcome.with_suffix(f".{suffix}")
        path.write_text(path.read_text().replace("with Nurture.", f"with Nurture. {link}"))
    return root


def _preview_in(root: Path, tmp_path: Path, env: dict[str, str] | None = None) -> Result:
    folders = ["--sequences", str(root / "sequences"), "--templates", str(root / "templates")]
    args = ["preview", "finance-awareness", "welcome", *folders, "--out", str(tmp_path / "out")]
    return runner.invoke(app, args, env=env)


def test_preview_eml_is_what_the_engine_sends(tmp_path: Path) -> None:
    result = _preview_in(_linked_templates(tmp_path), tmp_path)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "finance-awareness" / "welcome"
    message = parse(folder / "message.eml")
    html, text = message.get_body(("html",)), message.get_body(("plain",))
    assert html is not None and text is not None
    clicks = re.findall(r"http://127\.0\.0\.1:8000/c/[\w.-]+", text.get_content())
    assert len(clicks) == 1 and f'href="{clicks[0]}"' in html.get_content()
    token = clicks[0].rsplit("/", 1)[1]
    assert verify(Settings().secret_key, "click", token) == {"m": 0, "l": 1}
    with pytest.raises(BadToken):  # a preview token names no message: the click gets 404
        link_of(Settings().secret_key, token)
    assert GUIDE not in text.get_content()
    assert '<img src="http://127.0.0.1:8000/o/' in html.get_content()  # the open pixel
    assert clicks[0] in (folder / "body.txt").read_text(encoding="utf-8")
    # Where the tracked link goes, with its UTM tags, is shown to the marketer.
    utm = "utm_source=nurture&utm_medium=email&utm_campaign=finance-awareness&utm_content=welcome"
    assert f"link 1: {GUIDE}?{utm}" in result.output


def test_preview_without_click_tracking_shows_utm_in_the_links(tmp_path: Path) -> None:
    env = {"NURTURE_TRACK_CLICKS": "false", "NURTURE_TRACK_OPENS": "false"}
    result = _preview_in(_linked_templates(tmp_path), tmp_path, env)
    assert result.exit_code == 0, result.output
    message = parse(tmp_path / "out" / "finance-awareness" / "welcome" / "message.eml")
    html, text = message.get_body(("html",)), message.get_body(("plain",))
    assert html is not None and text is not None
    assert f"{GUIDE}?utm_source=nurture&utm_medium=email" in text.get_content()
    assert f'href="{GUIDE}?utm_source=nurture&amp;utm_medium=email' in html.get_content()
    assert "/c/" not in text.get_content() and "/o/" not in html.get_content()
