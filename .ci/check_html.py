"""Check the rendered book: every page present, every figure shown, no error output.

A notebook can lose a figure, print a traceback or show a Markdown table as
plain text without the Sphinx build failing, so this reads the HTML itself. It also checks that _build/claims.json
exists, that every claim in it passed, and that every executed chapter recorded
at least one claim. Exits non-zero with one line per problem.
"""

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"

# a figure's name as written in a code cell's mystnb metadata
FIGURE_NAME = re.compile(r"^\s+name:\s*(fig-[\w-]+)\s*$", re.MULTILINE)
ERROR_MARKERS = ("Traceback (most recent call last)", 'class="output traceback', "output stderr",
                 "ClaimFailed", "Error in callback")
# a Markdown table that was printed as a paragraph instead of rendered: its
# delimiter row, such as "| --- | --- |", inside a <p>, where Sphinx's smart
# quotes may have turned "---" into an em dash
RAW_TABLE = re.compile(r"<p>[^<]*\|\s*(?:-{3,}|\u2014+)\s*\|")


def toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files.extend(chapter["file"] for chapter in part.get("chapters", []))
    return files


def check_page(source_name, problems):
    source = ROOT / f"{source_name}.md"
    page = HTML / f"{source_name}.html"
    if not page.exists():
        problems.append(f"{page.relative_to(ROOT)}: page missing")
        return
    html = page.read_text()
    text = source.read_text()
    for name in FIGURE_NAME.findall(text):
        block = re.search(rf'<figure[^>]*id="{re.escape(name)}".*?</figure>', html, re.DOTALL)
        if block is None or "<img" not in block.group(0):
            problems.append(f"{page.relative_to(ROOT)}: figure {name} is missing or has no image")
    for marker in ERROR_MARKERS:
        if marker in html:
            problems.append(f"{page.relative_to(ROOT)}: contains {marker!r}")
    if RAW_TABLE.search(html):
        problems.append(f"{page.relative_to(ROOT)}: a Markdown table is shown as plain text")
    return "{code-cell}" in text


def main():
    problems = []
    chapters = []
    for source_name in toc_files():
        if check_page(source_name, problems):
            chapters.append(source_name)

    claims_path = ROOT / "_build" / "claims.json"
    if not claims_path.exists():
        problems.append("_build/claims.json is missing")
        records = []
    else:
        records = json.loads(claims_path.read_text())
    for record in records:
        if not record["passed"]:
            problems.append(f"claim failed in {record['chapter']}: {record['claim']}")
    recorded = {record["chapter"] for record in records}
    for chapter in chapters:
        title = (ROOT / f"{chapter}.md").read_text().split("\n# ", 1)[1].splitlines()[0].strip()
        if title not in recorded:
            problems.append(f"{chapter}: executed chapter recorded no claim under its title {title!r}")

    for problem in problems:
        print(problem)
    print(f"checked {len(toc_files())} pages, {len(chapters)} executed chapters, {len(records)} claims: "
          f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
