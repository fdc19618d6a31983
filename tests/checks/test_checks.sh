#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# test_checks - the source checks themselves (scripts/lint.sh,
# scripts/spdx-apply.sh, scripts/format-check.sh, scripts/format-apply.sh),
# each run on small trees made here, in a temporary directory: what must
# be found is found at the right file:line, what must not (comments,
# literals, tests/, bench/, strtok_r, snprintf) is not, spdx-apply writes
# the line each file type wants and a second run changes nothing, and
# format-apply makes format-check pass.
# Usage: test_checks.sh SOURCE_DIR. Exit 0 pass, 1 fail.
set -uo pipefail

src=${1:?usage: test_checks.sh SOURCE_DIR}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
n=0

check() {   # check DESCRIPTION COMMAND...
    local what=$1; shift
    n=$((n + 1))
    if "$@"; then
        echo "ok $n - $what"
    else
        echo "not ok $n - $what"
        failures=$((failures + 1))
    fi
}
has_line() { grep -qxF -- "$2" "$1"; }
lacks() { ! grep -qF -- "$2" "$1"; }

# ---------------------------------------------------------------- lint
t=$work/lint
mkdir -p "$t/src" "$t/tests" "$t/bench" "$t/scripts"
cat >"$t/src/clean.c" <<'EOF'
/* SPDX-License-Identifier: Apache-2.0 */
/* strcpy(a, b) in a comment, and sprintf( too */
// gets(line) in a line comment
static const char *s = "strcat(x, y) and \"strtok(p, q)\"";
static const char c = '"';
static void f(char *p, size_t n, char **save)
{
    snprintf(p, n, "%s", s);
    (void)strtok_r(p, ",", save);
    (void)fgets(p, (int)n, stdin);
    (void)vsnprintf;
    /* a comment over
       several lines: strcpy(p, s); */
}
EOF
cat >"$t/src/bad.c" <<'EOF'
/* SPDX-License-Identifier: Apache-2.0 */
static void f(char *a, const char *b)
{
    strcpy(a, b);
    sprintf(a, "%s", b);
    char q = '"'; strcat (a, b);
    /* strcpy( here is a comment
       over two lines */ gets(a);
    (void)strtok(a, ",");
    vsprintf(a, "%s", ap);
}
EOF
cat >"$t/src/raw.cc" <<'EOF'
/* SPDX-License-Identifier: Apache-2.0 */
static const char *r = R"x(strcpy(a, b) "quoted" )x";
int g() { return std::sprintf(buf, "%d", 1); }
EOF
printf '/* SPDX-License-Identifier: Apache-2.0 */\nvoid t(void) { strcpy(a, b); }\n' >"$t/tests/t.c"
printf '/* SPDX-License-Identifier: Apache-2.0 */\nvoid t(void) { sprintf(a, "x"); }\n' >"$t/bench/b.c"
printf '#!/bin/sh\n# SPDX-License-Identifier: Apache-2.0\necho ok\n' >"$t/scripts/good.sh"
printf '#!/bin/sh\n# a comment first\n# SPDX-License-Identifier: Apache-2.0\n' >"$t/scripts/late.sh"
printf 'print("no licence line")\n' >"$t/tests/nolicence.py"
printf '# SPDX-License-Identifier: Apache-2.0\nproject(x)\n' >"$t/CMakeLists.txt"
printf 'cmake_minimum_required(VERSION 3.25)\n' >"$t/src/CMakeLists.txt"
printf 'not a source file: strcpy(a, b)\n' >"$t/src/notes.txt"

bash "$src/scripts/lint.sh" "$t" >"$work/lint.out" 2>"$work/lint.err"
rc=$?
check "lint: findings give exit status 1" test "$rc" -eq 1
check "lint: strcpy found at its line" has_line "$work/lint.out" \
    "src/bad.c:4: banned: strcpy() (use snprintf or a bounded copy)"
check "lint: sprintf found" has_line "$work/lint.out" \
    "src/bad.c:5: banned: sprintf() (use snprintf)"
check "lint: strcat after a character literal '\"' found" has_line "$work/lint.out" \
    "src/bad.c:6: banned: strcat() (use snprintf or a bounded append)"
check "lint: gets after a two-line comment found on its line" has_line "$work/lint.out" \
    "src/bad.c:8: banned: gets() (use fgets)"
check "lint: strtok found" has_line "$work/lint.out" \
    "src/bad.c:9: banned: strtok() (use strtok_r)"
check "lint: vsprintf found" has_line "$work/lint.out" \
    "src/bad.c:10: banned: vsprintf() (use vsnprintf)"
check "lint: bad.c has exactly its six findings" \
    test "$(grep -c '^src/bad.c:' "$work/lint.out")" -eq 6
check "lint: std::sprintf in C++ found, raw string ignored" has_line "$work/lint.out" \
    "src/raw.cc:3: banned: sprintf() (use snprintf)"
check "lint: raw string literal not scanned" lacks "$work/lint.out" "src/raw.cc:2:"
check "lint: comments, literals, snprintf, strtok_r, fgets pass" \
    lacks "$work/lint.out" "src/clean.c"
check "lint: nothing banned reported under tests/ or bench/" \
    bash -c "! grep -E '^(tests|bench)/.*banned' '$work/lint.out'"
check "lint: a .py without the SPDX line is found (tests/ too)" has_line "$work/lint.out" \
    "tests/nolicence.py:1: spdx: first comment line must be 'SPDX-License-Identifier: Apache-2.0' (scripts/spdx-apply.sh)"
check "lint: an SPDX line below the first comment line does not count" \
    grep -q '^scripts/late.sh:1: spdx' "$work/lint.out"
check "lint: CMakeLists.txt without it is found" grep -q '^src/CMakeLists.txt:1: spdx' "$work/lint.out"
check "lint: after a #! line the SPDX line passes" lacks "$work/lint.out" "scripts/good.sh"
check "lint: other files are not scanned" lacks "$work/lint.out" "notes.txt"
check "lint: the count goes to stderr" grep -q '^lint: 10 finding(s)$' "$work/lint.err"
rm "$t/src/bad.c" "$t/src/raw.cc" "$t/tests/nolicence.py" "$t/scripts/late.sh" "$t/src/CMakeLists.txt"
bash "$src/scripts/lint.sh" "$t" >"$work/lint2.out" 2>&1
check "lint: a clean tree gives exit status 0" test $? -eq 0
bash "$src/scripts/lint.sh" "$work/does-not-exist" >/dev/null 2>&1
check "lint: a missing tree is a usage error (2)" test $? -eq 2

# ---------------------------------------------------------- spdx-apply
t=$work/spdx
mkdir -p "$t/a/b" "$t/node_modules/x" "$t/build-x"
printf '/*\n * m - a module.\n */\n#ifndef M_H\n#define M_H\n#endif\n' >"$t/a/m.h"
printf 'int main(void)\n{\n    return 0;\n}\n' >"$t/a/main.c"
printf 'int f();\n' >"$t/a/b/f.cc"
: >"$t/a/empty.c"
printf '#!/usr/bin/env bash\nset -e\necho hi\n' >"$t/a/run.sh"
chmod 0755 "$t/a/run.sh"
printf '#!/usr/bin/python3\n"""Doc."""\nprint(__doc__)\n' >"$t/a/tool.py"
printf 'project(p)\n' >"$t/CMakeLists.txt"
printf 'set(X 1)\n' >"$t/a/x.cmake"
printf '// a server\nexport default 1;\n' >"$t/a/s.mjs"
printf 'console.log(1);\n' >"$t/a/c.js"
printf '/* SPDX-License-Identifier: MIT */\nint vendored;\n' >"$t/a/vendored.c"
printf '# SPDX-License-Identifier: Apache-2.0\nset(Y 2)\n' >"$t/a/done.cmake"
printf 'plain text\n' >"$t/a/readme.txt"
printf 'int dep;\n' >"$t/node_modules/x/dep.c"
printf 'int gen;\n' >"$t/build-x/gen.c"
cp "$t/a/done.cmake" "$work/done.before"

bash "$src/scripts/spdx-apply.sh" "$t" >"$work/spdx.out" 2>"$work/spdx.err"
rc=$?
check "spdx-apply: a file naming another licence gives exit status 1" test "$rc" -eq 1
check "spdx-apply: and is named" grep -q 'a/vendored.c: names another SPDX licence, left alone' "$work/spdx.err"
check "spdx-apply: the other licence is left alone" \
    has_line "$t/a/vendored.c" "/* SPDX-License-Identifier: MIT */"
check "spdx-apply: C header gets /* */ on line 1, its comment kept below" \
    test "$(sed -n 1,2p "$t/a/m.h")" = "$(printf '/* SPDX-License-Identifier: Apache-2.0 */\n/*')"
check "spdx-apply: .c" test "$(head -1 "$t/a/main.c")" = "/* SPDX-License-Identifier: Apache-2.0 */"
check "spdx-apply: .cc" test "$(head -1 "$t/a/b/f.cc")" = "/* SPDX-License-Identifier: Apache-2.0 */"
check "spdx-apply: an empty file gets the one line" \
    test "$(cat "$t/a/empty.c")" = "/* SPDX-License-Identifier: Apache-2.0 */"
check "spdx-apply: .sh after its #! line" \
    test "$(sed -n 1,3p "$t/a/run.sh")" = "$(printf '#!/usr/bin/env bash\n# SPDX-License-Identifier: Apache-2.0\nset -e')"
check "spdx-apply: the mode is kept" test "$(stat -c %a "$t/a/run.sh")" = 755
check "spdx-apply: the script still runs" test "$(bash "$t/a/run.sh")" = hi
check "spdx-apply: .py after its #! line, docstring still the docstring" \
    test "$(python3 "$t/a/tool.py")" = "Doc."
check "spdx-apply: CMakeLists.txt" test "$(head -1 "$t/CMakeLists.txt")" = "# SPDX-License-Identifier: Apache-2.0"
check "spdx-apply: .cmake" test "$(head -1 "$t/a/x.cmake")" = "# SPDX-License-Identifier: Apache-2.0"
check "spdx-apply: .mjs" test "$(head -1 "$t/a/s.mjs")" = "// SPDX-License-Identifier: Apache-2.0"
check "spdx-apply: .js" test "$(head -1 "$t/a/c.js")" = "// SPDX-License-Identifier: Apache-2.0"
check "spdx-apply: a file that has it is untouched" cmp -s "$t/a/done.cmake" "$work/done.before"
check "spdx-apply: other files untouched" test "$(cat "$t/a/readme.txt")" = "plain text"
check "spdx-apply: node_modules/ and build*/ skipped" \
    test "$(cat "$t/node_modules/x/dep.c")$(cat "$t/build-x/gen.c")" = "int dep;int gen;"
check "spdx-apply: 10 files changed" grep -q '^spdx-apply: 10 file(s) changed$' "$work/spdx.err"
(cd "$t" && find . -type f -exec sha256sum {} + | sort) >"$work/sums1"
bash "$src/scripts/spdx-apply.sh" "$t" >"$work/spdx2.out" 2>"$work/spdx2.err"
(cd "$t" && find . -type f -exec sha256sum {} + | sort) >"$work/sums2"
check "spdx-apply: a second run changes nothing" cmp -s "$work/sums1" "$work/sums2"
check "spdx-apply: and says so" grep -q '^spdx-apply: 0 file(s) changed$' "$work/spdx2.err"
bash "$src/scripts/lint.sh" "$t" >"$work/spdx-lint.out" 2>&1
check "spdx-apply then lint: only the foreign licence is left" \
    test "$(grep -c ': spdx:' "$work/spdx-lint.out")" -eq 1
check "spdx-apply then lint: that is vendored.c" grep -q '^a/vendored.c:1: spdx' "$work/spdx-lint.out"

# ------------------------------------------------ format check / apply
cf=$(command -v clang-format-14 || command -v clang-format || true)
if [ -n "$cf" ] && "$cf" --version | grep -q 'version 14\.'; then
    t=$work/fmt
    mkdir -p "$t/src"
    cp "$src/.clang-format" "$t/"
    cat >"$t/src/good.c" <<'EOF'
#include <stdio.h>

static const int list[] = { 1, 2, 3 };

int main(void)
{
    if (list[0] == 1)
        printf("%d\n", list[1]);
    return 0;
}
EOF
    printf 'int main(void) {\n  int x=1;\n  return x;\n}\n' >"$t/src/bad.c"
    printf 'void f(void)\n{\n    log_info("event=a-very-long-log-line key=%%s other=%%s third=%%s fourth=%%s", a, b, c, d);\n}\n' >"$t/src/log.c"
    cp "$t/src/log.c" "$work/log.before"
    bash "$src/scripts/format-check.sh" "$t" >"$work/fmt.out" 2>"$work/fmt.err"
    rc=$?
    check "format-check: an unformatted file gives exit status 1" test "$rc" -eq 1
    check "format-check: names it with its first line" grep -q '^src/bad.c:1:[0-9]*: not formatted' "$work/fmt.out"
    check "format-check: the formatted file passes" lacks "$work/fmt.out" "src/good.c"
    bash "$src/scripts/format-apply.sh" "$t" >"$work/fmta.out" 2>"$work/fmta.err"
    check "format-apply: exit status 0" test $? -eq 0
    check "format-apply: formats as STYLE.md says (4 spaces, brace below)" \
        test "$(cat "$t/src/bad.c")" = "$(printf 'int main(void)\n{\n    int x = 1;\n    return x;\n}')"
    check "format-apply: a log string is never split" \
        grep -qF '"event=a-very-long-log-line key=%s other=%s third=%s fourth=%s"' "$t/src/log.c"
    bash "$src/scripts/format-check.sh" "$t" >/dev/null 2>&1
    check "format-check: passes after format-apply" test $? -eq 0
    (cd "$t" && sha256sum src/*) >"$work/f1"
    bash "$src/scripts/format-apply.sh" "$t" >/dev/null 2>"$work/fmta2.err"
    (cd "$t" && sha256sum src/*) >"$work/f2"
    check "format-apply: a second run changes nothing" cmp -s "$work/f1" "$work/f2"
    rm "$t/.clang-format"
    bash "$src/scripts/format-check.sh" "$t" >/dev/null 2>&1
    check "format-check: no .clang-format is an error (2)" test $? -eq 2
else
    echo "# clang-format 14 missing: format checks not tested"
fi

echo "1..$n"
if [ "$failures" -gt 0 ]; then
    echo "# $failures of $n failed"
    exit 1
fi
