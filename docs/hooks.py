"""MkDocs hooks: the site is built from the repository's own pages and from the code.

Three things a hand-written site would let drift, made at build time instead:

- Pages that live elsewhere in the repository (README.md as the home page, the
  lessons, the exercises' README, slurm/README.md) are read from where they are,
  not copied into docs/. A link from any page to a file of the repository that is
  not a page (`../mpipipe/schedules/one_f_one_b.py`) is rewritten to a copy of
  that file under `src/` in the site; a link to a file that does not exist is
  left alone, so `mkdocs build --strict` fails on it.
- `<!-- cli-reference -->` becomes the `--help` of every `mpipipe` command, from
  the argparse parser itself.
- `<!-- output -->` right after a ```bash block holding one `.venv/bin/mpipipe
  simulate|export|topology ...` command becomes that command's output, and
  `<!-- plan-picture: ARGS -->` becomes the PNG `mpipipe simulate ARGS
  --timeline` draws. Those commands need no MPI and take a second.
"""

import contextlib
import hashlib
import io
import os
import posixpath
import re
import shlex
import subprocess
import sys
import tempfile

from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Repository pages outside docs/ that are part of the site, at these places in it.
INCLUDED = {"README.md": "index.md", "slurm/README.md": "slurm/README.md"}
INCLUDED_FOLDERS = {"lessons": "lessons", "lessons/exercises": "lessons/exercises"}
LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")
OUTPUT = re.compile(r"```bash\n\.venv/bin/mpipipe ((?:simulate|export|topology)[^\n]*)\n```\n<!-- output -->")
PICTURE = re.compile(r"<!-- plan-picture: ([^>]*?) -->")
CLI_REFERENCE = "<!-- cli-reference -->"

_site_of = {}      # repository path -> site path, for every page and copied file
_sources = {}      # site path -> repository path, for the pages read from outside docs/


def repository_pages():
    pages = dict(INCLUDED)
    for folder, there in INCLUDED_FOLDERS.items():
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if name.endswith(".md"):
                pages[f"{folder}/{name}"] = f"{there}/{name}"
    return pages


def on_files(files, config):
    for source, site in repository_pages().items():
        with open(os.path.join(ROOT, source)) as text:
            files.append(File.generated(config, site, content=text.read()))
        _site_of[source] = site
        _sources[site] = source
    for page in files.documentation_pages():
        source = _sources.get(page.src_uri, f"docs/{page.src_uri}")
        _site_of.setdefault(source, page.src_uri)
    # Files of the repository that some page links to: copied under src/.
    for page in list(files.documentation_pages()):
        source = _sources.get(page.src_uri, f"docs/{page.src_uri}")
        for target in linked_files(source, page.content_string):
            if target not in _site_of and not target.startswith("docs/"):
                # (MkDocs leaves dot folders out of a site: .github/ is copied as github/)
                site = "src/" + "/".join(part.lstrip(".") for part in target.split("/"))
                _site_of[target] = site
                with open(os.path.join(ROOT, target), "rb") as data:
                    files.append(File.generated(config, site, content=data.read()))
    for picture in pictures(files, config):
        files.append(picture)
    return files


def linked_files(source, markdown):
    """Repository files (not folders) that the page at `source` links to."""
    found = []
    for match in LINK.finditer(markdown):
        target = resolve(source, match.group(2))
        if target and os.path.isfile(os.path.join(ROOT, target)):
            found.append(target)
    return found


def resolve(source, link):
    """The repository path a relative link from `source` names (a lesson's picture of
    its own run, lessons/out/NAME.png, is the copy of one run kept in docs/images/lessons/)."""
    if re.match(r"^[a-z]+:", link) or link.startswith("/"):
        return None
    target = posixpath.normpath(posixpath.join(posixpath.dirname(source), link))
    if target.startswith("lessons/out/"):
        target = "docs/images/lessons/" + posixpath.basename(target)
    return None if target.startswith("..") else target


def site_path(target):
    if target in _site_of:
        return _site_of[target]
    if target.startswith("docs/") and os.path.isfile(os.path.join(ROOT, target)):
        return target[len("docs/"):]
    return None


def on_page_markdown(markdown, page, config, files):
    source = _sources.get(page.file.src_uri, f"docs/{page.file.src_uri}")
    here = posixpath.dirname(page.file.src_uri)

    def relink(match):
        target = resolve(source, match.group(2))
        there = target and site_path(target)
        if not there:
            return match.group(0)
        new = posixpath.relpath(there, here or ".")
        return f"{match.group(1)}{new}{match.group(3) or ''}{match.group(4)}"

    markdown = LINK.sub(relink, markdown)
    markdown = OUTPUT.sub(lambda m: m.group(0).replace("<!-- output -->", fenced(run(m.group(1)))),
                          markdown)
    markdown = PICTURE.sub(lambda m: f"![mpipipe simulate {m.group(1)}]"
                           f"({posixpath.relpath(picture_path(m.group(1)), here or '.')})", markdown)
    if CLI_REFERENCE in markdown:
        markdown = markdown.replace(CLI_REFERENCE, cli_reference())
    return markdown


def fenced(text):
    return "```text\n" + text.rstrip() + "\n```"


def run(command):
    """The output of `mpipipe COMMAND`, run in a scratch folder (export writes a file)."""
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run([sys.executable, "-m", "mpipipe", *shlex.split(command)],
                              capture_output=True, text=True, cwd=scratch, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"mpipipe {command} failed:\n{done.stderr}")
    return done.stdout


def picture_path(arguments):
    return f"images/plan/{hashlib.sha1(arguments.encode()).hexdigest()[:10]}.png"


def pictures(files, config):
    """One PNG for every `<!-- plan-picture: ARGS -->` on any page."""
    wanted = set()
    for page in files.documentation_pages():
        wanted.update(PICTURE.findall(page.content_string))
    made = []
    for arguments in sorted(wanted):
        with tempfile.TemporaryDirectory() as scratch:
            path = os.path.join(scratch, "plan.png")
            run(f"{arguments} --timeline {shlex.quote(path)}")
            with open(path, "rb") as data:
                made.append(File.generated(config, picture_path(arguments), content=data.read()))
    return made


def cli_reference():
    """`mpipipe --help` and each command's `--help`, as the parser prints them."""
    from mpipipe.cli.main import build_parser

    parser = build_parser()
    os.environ["COLUMNS"] = "100"
    parts = ["```text\n$ mpipipe --help\n" + parser.format_help().rstrip() + "\n```"]
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in commands.choices.items():
        with contextlib.redirect_stdout(io.StringIO()):
            text = sub.format_help()
        parts.append(f"## mpipipe {name}\n\n```text\n$ mpipipe {name} --help\n{text.rstrip()}\n```")
    return "\n\n".join(parts)
