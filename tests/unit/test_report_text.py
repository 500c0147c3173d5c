"""Reports stay valid XML/HTML/Markdown whatever the names in a journal hold."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from chaoslab.report import write_reports
from chaoslab.report.text import safe_text, xml_text
from tests.journals import make_journal

NASTY = "bell\x07 nul\x00 esc\x1b del\x7f c1\x85 lone\ud800 ok-ü-✓"
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def test_control_characters_are_shown_as_escapes() -> None:
    assert xml_text("a\x07b\ud800c\tü") == "a\\x07b\\ud800c\tü"
    assert safe_text("a\x1bb\x85c\nü") == "a\\x1bb\\x85c\nü"


def test_every_report_is_valid_with_control_characters_in_names(tmp_path: Path) -> None:
    journal = make_journal(title=NASTY)
    journal["run"][0]["activity"]["name"] = NASTY
    jpath = tmp_path / "journal.json"
    jpath.write_text(json.dumps(journal), "utf-8")  # \u escapes: the lone surrogate survives
    out = write_reports(
        jpath,
        html=tmp_path / "r.html",
        markdown=tmp_path / "pm.md",
        junit=tmp_path / "j.xml",
        summary=tmp_path / "s.md",
    )
    assert set(out) == {"html", "markdown", "junit", "summary"}
    root = ET.parse(tmp_path / "j.xml").getroot()  # parses: no raw control character
    assert "bell\\x07" in ET.tostring(root, encoding="unicode")
    for name in ("r.html", "pm.md", "s.md"):
        text = (tmp_path / name).read_text("utf-8")
        assert not CONTROL.search(text), name
        assert "bell\\x07" in text and "ok-ü-✓" in text
