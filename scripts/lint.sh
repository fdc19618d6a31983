#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# lint - the small source checks that keep the tree as ../shared/STYLE.md
# and docs/architecture.md ("Checks") describe it (in the manner of curl's
# checksrc). Usage: scripts/lint.sh [ROOT]   (ROOT: the tree, default ours)
#
# Rules, each reported as "file:line: rule: what to do":
#   banned  In production code (every C/C++ file not under tests/ or
#           bench/): no strcpy, strcat, sprintf, vsprintf, gets, strtok.
#           Comments and string or character literals do not count, so
#           a comment may name them. Use snprintf or a bounded copy, and
#           strtok_r.
#   spdx    Every source file of ours (.c .cc .h .cmake .sh .py .js .mjs
#           and CMakeLists.txt, tests and benchmarks included) starts with
#           the comment line "SPDX-License-Identifier: Apache-2.0", after
#           a "#!" line if it has one; scripts/spdx-apply.sh adds it.
# Files are those git tracks under ROOT, or, when ROOT is not a git work
# tree, every file under it except build*/ and node_modules/.
# Exit status: 0 clean, 1 findings (listed on stdout), 2 usage error.
set -euo pipefail

root=${1:-$(dirname "$0")/..}
if [ ! -d "$root" ]; then
    echo "lint: $root: not a directory" >&2
    exit 2
fi
exec python3 - "$root" <<'PY'
import os
import re
import subprocess
import sys

root = sys.argv[1]

C_EXT = (".c", ".cc", ".cpp", ".h", ".hh", ".hpp")
SPDX_EXT = (".c", ".cc", ".h", ".cmake", ".sh", ".py", ".js", ".mjs")
SPDX = "SPDX-License-Identifier: Apache-2.0"
BANNED = {
    "strcpy": "use snprintf or a bounded copy",
    "strcat": "use snprintf or a bounded append",
    "sprintf": "use snprintf",
    "vsprintf": "use vsnprintf",
    "gets": "use fgets",
    "strtok": "use strtok_r",
}
BANNED_RE = re.compile(r"\b(" + "|".join(BANNED) + r")\s*\(")


def tracked_files():
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "-z"],
                             check=True, capture_output=True).stdout
        return [f for f in out.decode().split("\0") if f]
    except (subprocess.CalledProcessError, FileNotFoundError):
        found = []
        for d, dirs, files in os.walk(root):
            dirs[:] = sorted(x for x in dirs if not x.startswith("build")
                             and x not in (".git", "node_modules"))
            for f in sorted(files):
                found.append(os.path.relpath(os.path.join(d, f), root))
        return found


def blank_comments_and_literals(text):
    """The C/C++ text with comments, string and character literals (raw
    strings too) replaced by spaces; newlines are kept, so line numbers
    stay right."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        two = text[i:i + 2]
        if two == "//":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif two == "/*":
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "R" and text[i + 1:i + 2] == '"' and \
                (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'R"([^()\\ ]{0,16})\(', text[i:])
            if m is None:
                out.append(c)
                i += 1
                continue
            end = text.find(")" + m.group(1) + '"', i + m.end())
            j = n if end < 0 else end + len(m.group(1)) + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def production(path):
    top = path.split("/", 1)[0]
    return top not in ("tests", "bench")


def wants_spdx(path):
    name = os.path.basename(path)
    return name == "CMakeLists.txt" or name.endswith(SPDX_EXT)


def has_spdx(text):
    lines = text.split("\n", 2)
    if lines and lines[0].startswith("#!"):
        lines = lines[1:]
    return bool(lines) and SPDX in lines[0]


findings = []
for path in tracked_files():
    full = os.path.join(root, path)
    if not os.path.isfile(full) or os.path.islink(full):
        continue
    is_c = path.endswith(C_EXT)
    if not (is_c or wants_spdx(path)):
        continue
    with open(full, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if wants_spdx(path) and not has_spdx(text):
        findings.append(f"{path}:1: spdx: first comment line must be "
                        f"'{SPDX}' (scripts/spdx-apply.sh)")
    if is_c and production(path):
        code = blank_comments_and_literals(text)
        for lineno, line in enumerate(code.split("\n"), 1):
            for m in BANNED_RE.finditer(line):
                fn = m.group(1)
                findings.append(f"{path}:{lineno}: banned: {fn}() "
                                f"({BANNED[fn]})")

for line in findings:
    print(line)
if findings:
    print(f"lint: {len(findings)} finding(s)", file=sys.stderr)
    sys.exit(1)
print("lint: clean", file=sys.stderr)
PY
