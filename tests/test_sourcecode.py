"""The source tree passes `ruff check`, with the rules and paths of pyproject.toml's [tool.ruff].

A test rather than a CI step, so that the README's test command lints too. Ruff comes with the test
extras (pip install -e ".[test]"); to see and fix the findings: `ruff check` at the top of the tree.
"""

import ast
import importlib.util
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff():
    assert importlib.util.find_spec("ruff"), 'ruff is not installed: pip install -e ".[test]"'
    # --no-cache: writes nothing into the tree; no paths: pyproject.toml's include and excludes decide
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, "ruff check found:\n" + proc.stdout + proc.stderr


# --- the shape of the source: the done criteria of issue 30, kept ---

PACKAGE = os.path.join(ROOT, "fastcluster")
MAX_LINES = 800
MAX_FIELDS = 30
MAX_TWIN_LINES = 60
# Known exceptions: none. (A file or class on its way under a limit on a branch of its own may be
# named here, with that branch, until it lands.)
LONG_FILES = set()
BIG_CLASSES = set()


def _sources(*suffixes):
    """fastcluster's source files, without the generated ones (the `_<name>_c.py` copies, .c, .html)."""
    for name in sorted(os.listdir(PACKAGE)):
        if name.endswith(suffixes) and not (name.startswith("_") and name.endswith("_c.py")):
            yield name


def _lines(name):
    with open(os.path.join(PACKAGE, name), encoding="utf-8") as f:
        return f.read().splitlines()


def test_no_source_file_is_over_800_lines():
    long = {name: len(_lines(name)) for name in _sources(".py", ".pyx", ".pxi", ".pxd", ".pyi")
            if len(_lines(name)) >= MAX_LINES and name not in LONG_FILES}
    assert not long, ("over %d lines: %s. Split the file along a seam that exists (one concern a file, "
                      "with a docstring that says what it owns), as _http.py was into _transport.py, "
                      "_request.py, _dispatch.py and _http.py." % (MAX_LINES, long))


def _cdef_fields(lines):
    """{class name: its own fields} of the `cdef class` blocks in a .pxd/.pyx/.pxi: the names declared
    with `cdef` (one a line, in a `cdef:` block, or several after one type), not the methods."""
    fields, cls, block = {}, None, False
    for raw in lines:
        line = raw.split("#")[0].rstrip()
        found = re.match(r"(?:cdef )?(?:public )?class (\w+)", line) if line.startswith(("cdef class", "class",
                                                                                       "cdef public class")) else None
        if found:
            cls, block = found.group(1), False
            fields.setdefault(cls, set())
            continue
        if cls is None or not line.strip():
            continue
        if not line.startswith(" "):
            cls = None
            continue
        text = line.strip()
        if text == "cdef:":
            block = True
            continue
        indent = len(line) - len(line.lstrip())
        if block and indent <= 4:
            block = False
        if block:
            if indent != 8 or "(" in text or text.startswith(("@", "cdef", "cpdef", "def")):
                continue
        elif indent == 4 and text.startswith("cdef ") and "(" not in text:
            text = text[5:]          # a field declared on its own line in the class body
        else:
            continue                 # a method, its body (its own cdef locals), a docstring
        text = re.sub(r"^(?:public |readonly )", "", re.sub(r"\[.*?\]", "", text))
        parts = text.split(",")      # `type a, b, c`: the type, then names
        names = [parts[0].split()[-1]] + [part.strip() for part in parts[1:]]
        names = [n.strip("*") for n in names]
        fields[cls].update(n for n in names if re.fullmatch(r"\w+", n))
    return fields


def _python_fields(name):
    """{class name: the attributes its methods store on self}, for the classes of a .py file."""
    tree = ast.parse("\n".join(_lines(name)))
    fields = {}
    for cls in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
        fields[cls.name] = {node.attr for node in ast.walk(cls) if isinstance(node, ast.Attribute)
                            and isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name)
                            and node.value.id == "self"}
    return fields


def _class_fields():
    """{(file, class): own fields}: a cdef class's are its `cdef` fields (in the augmenting .pxd of a
    shared source, in _parser.pxd or an included .pxi); any other class's, its `self.X` stores."""
    declared = {}
    for name in _sources(".pxd", ".pyx", ".pxi"):
        owner = name[:-len("_c.pxd")] + ".py" if name.endswith("_c.pxd") else "_parser.pyx"
        for cls, names in _cdef_fields(_lines(name)).items():
            declared.setdefault((owner, cls), set()).update(names)
    result = dict(declared)
    for name in _sources(".py"):
        for cls, names in _python_fields(name).items():
            if (name, cls) not in declared:
                result[(name, cls)] = names
    return result


def test_no_class_holds_more_than_30_fields():
    fields = _class_fields()
    assert ("_http.py", "HttpConnection") in fields and len(fields[("_http.py", "HttpConnection")]) > 3
    big = {"%s %s" % key: len(names) for key, names in fields.items()
           if len(names) > MAX_FIELDS and key not in BIG_CLASSES}
    assert not big, ("classes over %d fields: %s. Group what belongs together into an object of its own "
                     "(as HttpServer's Settings and Admission) or a base class by concern (as the "
                     "connection's Transport, RequestBuilder, AppDispatch)." % (MAX_FIELDS, big))


def _twin_lines(path):
    """The code lines that count for the twin: stripped, not blank, not a comment, over 12 characters."""
    with open(path, encoding="utf-8") as f:
        return [s for s in (line.strip() for line in f) if s and not s.startswith("#") and len(s) > 12]


def test_the_twin_restates_at_most_60_lines_of_the_compiled_loop():
    compiled = set()
    for name in _sources(".pyx", ".pxi"):
        compiled.update(_twin_lines(os.path.join(PACKAGE, name)))
    same = [line for line in _twin_lines(os.path.join(PACKAGE, "_parser_py.py")) if line in compiled]
    assert len(same) <= MAX_TWIN_LINES, (
        "_parser_py.py restates %d lines of the compiled loop (at most %d): move control flow that touches "
        "no C buffer into the shared sources (_server.py, _transport.py, _http.py, ...) over an I/O "
        "primitive each loop provides; a duplicated docstring becomes a one-line pointer. The lines:\n  %s"
        % (len(same), MAX_TWIN_LINES, "\n  ".join(same)))
