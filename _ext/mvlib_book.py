"""Sphinx extension that ties the book's build to mvlib.

It does three things:

* It clears the notebook execution cache (and the stored claims) when mvlib's
  source or the profile changes. jupyter-cache keys a notebook on its own cells
  only, so without this a chapter computed with older library code, or with the
  other profile, would be served from the cache.
* It provides the ``claims-table`` directive, replaced after every chapter has
  run by the table of all recorded claims, and rebuilds that page on every build.
* At the end of the build it writes ``_build/claims.json`` and emits a warning
  for each failed claim, which ``-W`` turns into a failed build.
"""

import json
import os
import shutil
from pathlib import Path

from docutils import nodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

import mvlib
from mvlib import claims as claim_ledger

_logger = logging.getLogger(__name__)

_STAMP_NAME = "mvlib-build-stamp.json"


def _build_root(app):
    # jupyter-book writes HTML to <root>/_build/html; the stamp, the claims and
    # claims.json live one level up, beside the execution cache
    return Path(app.outdir).parent


def _clear_stale_execution_cache(app, config):
    # The chapters' kernels inherit this, so their ledgers write where the
    # claims table reads. A notebook run outside the build stores nothing.
    os.environ.setdefault("MVLIB_CLAIMS_DIR", str(_build_root(app) / "claims"))
    stamp = {"mvlib": mvlib.SOURCE_HASH, "profile": mvlib.profiles.current()}
    # a config value registered with rebuild="env": when it changes, Sphinx
    # re-reads every page instead of reusing its pickled doctrees
    config.mvlib_build_stamp = json.dumps(stamp, sort_keys=True)
    root = _build_root(app)
    stamp_path = root / _STAMP_NAME
    previous = json.loads(stamp_path.read_text()) if stamp_path.exists() else None
    if previous == stamp:
        return
    cache_path = Path(config.nb_execution_cache_path or root / ".jupyter_cache")
    for stale in (cache_path, claim_ledger.claims_dir()):
        if stale.exists():
            _logger.info("mvlib source or profile changed: clearing %s", stale)
            shutil.rmtree(stale)
    root.mkdir(parents=True, exist_ok=True)
    stamp_path.write_text(json.dumps(stamp))


class claims_placeholder(nodes.General, nodes.Element):
    """Replaced by the claims table once every chapter has run."""


class ClaimsTableDirective(SphinxDirective):
    """``claims-table``: the table of every claim the book's chapters recorded."""

    def run(self):
        return [claims_placeholder()]


def _always_reread_claims_page(app, env, added, changed, removed):
    return [docname for docname in env.found_docs if "claims-table" in Path(env.doc2path(docname)).read_text()]


def _docs_in_toc_order(env, root):
    ordered, stack, seen = [], [root], set()
    while stack:
        docname = stack.pop(0)
        if docname in seen:
            continue
        seen.add(docname)
        ordered.append(docname)
        stack[0:0] = env.toctree_includes.get(docname, [])
    return ordered


def _records_in_book_order(app):
    env = app.env
    order = {}
    for position, docname in enumerate(_docs_in_toc_order(env, app.config.root_doc)):
        if docname in env.titles:
            order.setdefault(env.titles[docname].astext(), (position, docname))
    records = []
    for record in claim_ledger.read_all():
        if record["chapter"] in order:
            records.append((order[record["chapter"]], record))
    records.sort(key=lambda item: item[0][0])
    return records


def _format(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _fill_claims_tables(app, doctree, docname):
    placeholders = list(doctree.findall(claims_placeholder))
    if not placeholders:
        return
    records = _records_in_book_order(app)
    header = ("Chapter", "Claim", "Measured", "Expected", "Tolerance", "Status")
    table = nodes.table(classes=["claims-table"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in (13, 33, 14, 14, 14, 12):
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    body = nodes.tbody()
    group += body

    def add_row(section, cells):
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += cell if isinstance(cell, nodes.Node) else nodes.paragraph(text=cell)
            row += entry
        section += row

    add_row(head, header)
    for (_, chapter_doc), record in records:
        link = nodes.paragraph()
        reference = nodes.reference(text=record["chapter"], refuri=app.builder.get_relative_uri(docname, chapter_doc))
        link += reference
        status = "passed" if record["passed"] else "FAILED"
        add_row(body, (link, record["claim"], _format(record["measured"]), _format(record["expected"]),
                       _format(record.get("tolerance")), status))
    if not records:
        replacement = nodes.paragraph(text="No claims were recorded: no chapter has run.")
    else:
        replacement = table
    for placeholder in placeholders:
        placeholder.replace_self(replacement.deepcopy())


def _write_claims_json(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    records = [record for _, record in _records_in_book_order(app)]
    (_build_root(app) / "claims.json").write_text(json.dumps(records, indent=1))
    for record in records:
        if not record["passed"]:
            _logger.warning("claim failed in %s: %s (measured %s, expected %s)",
                            record["chapter"], record["claim"], record["measured"], record["expected"])


def setup(app):
    app.add_config_value("mvlib_build_stamp", "", "env")
    app.connect("config-inited", _clear_stale_execution_cache)
    app.add_node(claims_placeholder)
    app.add_directive("claims-table", ClaimsTableDirective)
    app.connect("env-get-outdated", _always_reread_claims_page)
    app.connect("doctree-resolved", _fill_claims_tables)
    app.connect("build-finished", _write_claims_json)
    return {"version": mvlib.__version__, "parallel_read_safe": True, "parallel_write_safe": True}
