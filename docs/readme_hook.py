"""mkdocs hook: the site's guide page is README.md itself, so the two never drift apart.

README.md lives at the top of the repository and links the docs as ``docs/x.md``; the docs link
it as ``../README.md``. Both kinds of link are rewritten to their place in the site.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_README = Path(__file__).resolve().parent.parent / "README.md"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Give index.md the README's text, and point links to the README at index.md."""
    if page.file.src_uri == "index.md":
        return re.sub(r"\]\(docs/", "](", _README.read_text())
    return re.sub(r"\]\(\.\./README\.md", "](index.md", markdown)
