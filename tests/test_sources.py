"""Every rerun reference in the documentation names something a clone of main holds: git tags do not travel
with a branch, so a reference is a commit hash, and each hash named resolves to a commit of this history."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
HASH = re.compile(r"`([0-9a-f]{7,40})`")
TAG = re.compile(r"\b(?:git tag|tag `|git checkout [A-Za-z][\w.-]*-\d)")


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def test_no_document_sends_the_reader_to_a_git_tag():
    found = [f"{doc.name}:{n}: {line.strip()}" for doc in DOCS
             for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1) if TAG.search(line)]
    assert not found, "name the commit instead of a tag:\n" + "\n".join(found)


def test_every_commit_named_in_the_documents_is_in_the_history():
    named = {h for doc in DOCS for h in HASH.findall(doc.read_text(encoding="utf-8")) if not h.isdigit()}
    assert "309010d" in named, "the retired switches' commit is named"
    assert git("rev-parse", "--is-inside-work-tree").stdout.strip() == "true", "run the tests in a git clone"
    if git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        # a shallow clone holds the newest commits only: check the hashes that fall inside it
        named = {h for h in named if git("cat-file", "-e", f"{h}^{{commit}}").returncode == 0} or named
    missing = sorted(h for h in named if git("cat-file", "-e", f"{h}^{{commit}}").returncode != 0)
    assert not missing, f"commits named in the documents but not in this repository: {missing}"
