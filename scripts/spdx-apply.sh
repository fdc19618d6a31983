#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# spdx-apply - gives every source file of ours the licence line that
# scripts/lint.sh ("spdx") asks for: "SPDX-License-Identifier: Apache-2.0"
# as the first comment line, after a "#!" line if there is one.
#   .c .cc .h                            /* SPDX-License-Identifier: ... */
#   CMakeLists.txt .cmake .sh .py        # SPDX-License-Identifier: ...
#   .js .mjs                             // SPDX-License-Identifier: ...
# Usage: scripts/spdx-apply.sh [ROOT]   (ROOT: the tree, default ours)
# Idempotent: a file that already has the line is left alone, so a second
# run changes nothing. A file naming another SPDX licence is not touched
# but listed (exit status 1). Files are chosen as lint.sh chooses them
# (git ls-files, else a walk skipping build*/ and node_modules/); the file
# mode is kept. Prints one line per changed file and a count.
set -euo pipefail

root=${1:-$(dirname "$0")/..}
if [ ! -d "$root" ]; then
    echo "spdx-apply: $root: not a directory" >&2
    exit 2
fi
exec python3 - "$root" <<'PY'
import os
import re
import subprocess
import sys

root = sys.argv[1]
SPDX = "SPDX-License-Identifier: Apache-2.0"
STYLES = [
    ((".c", ".cc", ".h"), "/* " + SPDX + " */"),
    ((".cmake", ".sh", ".py"), "# " + SPDX),
    ((".js", ".mjs"), "// " + SPDX),
]


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


def spdx_line(path):
    name = os.path.basename(path)
    if name == "CMakeLists.txt":
        return "# " + SPDX
    for exts, line in STYLES:
        if name.endswith(exts):
            return line
    return None


changed = 0
foreign = []
for path in tracked_files():
    full = os.path.join(root, path)
    line = spdx_line(path)
    if line is None or not os.path.isfile(full) or os.path.islink(full):
        continue
    with open(full, "rb") as f:
        data = f.read()
    text = data.decode("utf-8", errors="surrogateescape")
    lines = text.split("\n")
    at = 1 if lines[0].startswith("#!") else 0
    if at < len(lines) and SPDX in lines[at]:
        continue
    named = re.findall(r"SPDX-License-Identifier:\s*([A-Za-z0-9.+-]+)",
                       "\n".join(lines[:at + 3]))
    if any(n != "Apache-2.0" for n in named):
        foreign.append(path)
        continue
    if text == "":
        lines = [line, ""]
    else:
        lines.insert(at, line)
    new = "\n".join(lines).encode("utf-8", errors="surrogateescape")
    mode = os.stat(full).st_mode
    tmp = full + ".spdx-tmp"
    with open(tmp, "wb") as f:
        f.write(new)
    os.chmod(tmp, mode & 0o7777)
    os.replace(tmp, full)
    print(f"spdx-apply: {path}")
    changed += 1

print(f"spdx-apply: {changed} file(s) changed", file=sys.stderr)
for path in foreign:
    print(f"spdx-apply: {path}: names another SPDX licence, left alone",
          file=sys.stderr)
sys.exit(1 if foreign else 0)
PY
