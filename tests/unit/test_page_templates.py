"""What every page template must be, checked on the sources (api/pages/templates):

- nothing inline that the pages' Content-Security-Policy would have to allow
  (no inline ``<script>``, no ``<style>``, no ``style=``, no ``on...=`` handler);
- every form that enters data is ``method="post"``: the pages' scripts send
  them through the API, but if a script has not loaded yet (Enter pressed
  early) or failed, a form without a method is a GET and the browser puts its
  fields (an initial password, a patient's name and birth date) in the URL,
  its history and any proxy's log. Searches and filters, which carry codes and
  IDs and belong in the address, say so with ``role="search"``; a dialog's
  own form (``method="dialog"``) never leaves the page.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TEMPLATES = sorted((Path(__file__).parents[2] / "api" / "pages" / "templates").glob("*.html"))
INLINE = re.compile(r"<script(?![^>]*\bsrc=)|<style\b|\sstyle=|\son[a-z]+=", re.IGNORECASE)
FORM = re.compile(r"<form\b[^>]*>", re.IGNORECASE)


def test_there_are_templates() -> None:
    assert len(TEMPLATES) > 10


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: path.name)
def test_a_template_has_nothing_inline(template: Path) -> None:
    assert not INLINE.search(template.read_text()), template.name


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: path.name)
def test_a_form_that_enters_data_posts(template: Path) -> None:
    for form in FORM.findall(template.read_text()):
        assert re.search(r'method="(post|dialog)"|role="search"', form), f"{template.name}: {form}"
