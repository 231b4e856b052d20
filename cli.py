"""The command line of the notebooks when they run as plain scripts (``python GLUE-Finetune.py``).

Under Jupyter a notebook takes its settings from the environment only, and the kernel's own
arguments are none of its business. Run as a script, the same file must not start work on an
argument it does not understand: ``--help`` says what the notebook does and which environment
variables and settings it reads, then exits; any other argument is an error. Both happen before
anything is read or written.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from fnmatch import fnmatch
from pathlib import Path

from fileio import FolderBusy
from params import ENVIRONMENT, notebook_input

REPO = Path(__file__).resolve().parent
SETTINGS_NOTE = ("Any other setting of params.py is set through DITBERT_SET, `section.name=value` pairs separated "
                 "by `;`, e.g. DITBERT_SET=\"finetune.epochs=3;finetune.lr=5e-5\".")


def in_notebook() -> bool:
    """Whether this code runs in an IPython shell (a Jupyter or nbclient kernel) rather than as a script."""
    ipython = sys.modules.get("IPython")
    return ipython is not None and getattr(ipython, "get_ipython", lambda: None)() is not None


def notebook_arguments(notebook: str, settings: str = "", argv: list[str] | None = None) -> None:
    """What a notebook calls first, with its file name and the params.py settings it reads. In Jupyter:
    nothing. As a script: ``--help`` prints the notebook's description and the variables and settings
    it reads, then exits 0; an unknown argument exits 2 naming it."""
    if in_notebook():
        return
    parser = argparse.ArgumentParser(prog=notebook, description=notebook_description(notebook),
                                     epilog=environment_help(notebook, settings),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    sys.excepthook = script_errors(sys.excepthook)


# What a notebook run as a script reports in one line: errors that name the user's input (a missing
# file, results that would be replaced, a bad setting, a folder another run is writing), not faults in the code.
INPUT_ERRORS = (FileNotFoundError, FileExistsError, ValueError, KeyError, FolderBusy)


def script_errors(fallback):
    """An excepthook that prints an input error as ``error: <message>``, as the command-line tools
    do, instead of a traceback (the exit status stays 1); anything else goes to `fallback`."""
    def hook(kind, error, traceback):
        if not issubclass(kind, INPUT_ERRORS):
            return fallback(kind, error, traceback)
        print(f"error: {error.args[0] if kind is KeyError and error.args else error}", file=sys.stderr)
    return hook


def notebook_description(notebook: str) -> str:
    """The first markdown cell of the notebook, up to where it starts on its settings (the epilog
    lists those): its title and what it does."""
    lines = (REPO / notebook).read_text(encoding="utf-8").splitlines()
    start = lines.index("# %% [markdown]") + 1
    cell = []
    for line in lines[start:]:
        if line.startswith("# %%"):
            break
        cell.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
    paragraphs = "\n".join(cell).strip().split("\n\n")
    kept = []
    for paragraph in paragraphs:
        if "Settings" in paragraph or paragraph.startswith("|"):
            break
        kept.append(paragraph)
    return "\n\n".join(kept)


def reads(notebook: str, readers: str) -> bool:
    """Whether a "read by" entry of `ENVIRONMENT` (names or glob patterns, comma-separated) covers `notebook`."""
    if readers.startswith("every notebook"):
        return True
    return any(fnmatch(notebook, pattern.strip()) for pattern in readers.split(","))


def environment_help(notebook: str, settings: str = "") -> str:
    """The environment variables `notebook` reads, with their meaning and the setting each one sets,
    then the settings it reads."""
    rows = []
    for name, (setting, meaning, readers) in ENVIRONMENT.items():
        if reads(notebook, readers):
            text = f"sets {setting}: {meaning}" if setting else meaning
            rows.append(wrap(text, f"  {name:<20} "))
    note = wrap((f"Settings read (params.py): {settings}. " if settings else "") + SETTINGS_NOTE)
    return ("environment variables (the full table is ENVIRONMENT in params.py):\n" + "\n".join(rows)
            + "\n\n" + note)


def wrap(text: str, first: str = "") -> str:
    """`text` as lines of at most 96 characters, after `first`, aligned under its end."""
    return textwrap.fill(text, width=96, initial_indent=first, subsequent_indent=" " * len(first),
                         break_on_hyphens=False)


def overwrite_allowed() -> bool:
    """Whether $DITBERT_OVERWRITE asks to replace what an earlier run wrote."""
    return notebook_input("DITBERT_OVERWRITE", "0").strip().lower() in ("1", "true", "yes")


def resume_asked() -> bool:
    """Whether $GLUE_RESUME asks fine-tuning to keep what an earlier, stopped command finished."""
    return notebook_input("GLUE_RESUME", "0").strip().lower() in ("1", "true", "yes")


def refuse_to_replace(path: str | Path, what: str, setting: str) -> None:
    """Stop before any work when `path` (the value of `setting`) already holds `what` and
    $DITBERT_OVERWRITE does not ask to replace it: what was trained with it would no longer match."""
    if Path(path).exists() and not overwrite_allowed():
        raise FileExistsError(f"{path} exists: {what} is not replaced unless DITBERT_OVERWRITE=1 "
                              f"(or {setting} names another file)")


def environment_markdown() -> str:
    """`ENVIRONMENT` as the markdown table of docs/settings.md (a test keeps the page in step)."""
    rows = ["| variable | setting or meaning | read by |", "|---|---|---|"]
    for name, (setting, meaning, readers) in ENVIRONMENT.items():
        text = f"`{setting}`: {meaning}" if setting else meaning
        rows.append(f"| `{name}` | {text} | {readers} |")
    return "\n".join(rows) + "\n"
