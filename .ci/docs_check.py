"""Walks the built HTML site and reports every local href/src that points at nothing.

  python .ci/docs_check.py docs/_build/html

Exit status 1 (and one line per broken reference) when a page links to a missing page, anchor
file or image; external links (http, https, mailto) are not fetched: the CI has no network.
"""

from __future__ import annotations

import html.parser
import pathlib
import sys
import urllib.parse


class _Refs(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.refs: list[str] = []
    self.ids: set[str] = set()

  def handle_starttag(self, tag, attrs):
    a = dict(attrs)
    if a.get("id"):
      self.ids.add(a["id"])
    for key in ("href", "src"):
      if a.get(key) and not (tag == "link" and a.get("rel") == "preconnect"):
        self.refs.append(a[key])


def check(root: pathlib.Path) -> list[str]:
  # _static holds the theme's Jinja macro files (not pages).
  pages = sorted(p for p in root.rglob("*.html") if "_static" not in p.relative_to(root).parts)
  parsed = {}
  for page in pages:
    p = _Refs()
    p.feed(page.read_text(encoding="utf-8", errors="replace"))
    parsed[page.resolve()] = p
  broken = []
  for page, p in parsed.items():
    for ref in p.refs:
      url = urllib.parse.urlparse(ref)
      if url.scheme or ref.startswith(("//", "#", "data:", "javascript:")):
        continue
      target = (page.parent / urllib.parse.unquote(url.path)).resolve()
      if url.path.endswith("/") or target.is_dir():
        target = target / "index.html"
      if not target.exists():
        broken.append(f"{page.relative_to(root.resolve())}: {ref}")
      elif url.fragment and target.suffix == ".html" and target in parsed and (
          url.fragment not in parsed[target].ids):
        broken.append(f"{page.relative_to(root.resolve())}: {ref} (no such anchor)")
  return broken


def main(argv: list[str]) -> int:
  root = pathlib.Path(argv[1] if len(argv) > 1 else "docs/_build/html")
  broken = check(root)
  for line in broken:
    print("broken:", line)
  print(f"{len(list(root.rglob('*.html')))} pages, {len(broken)} broken local references")
  return 1 if broken else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
