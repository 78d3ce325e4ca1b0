"""The sandbox on real programs: MultiPL-E-shaped solutions in all ten languages pass or fail as they should, and
hostile programs (endless loops, fork bombs, 10 GB allocations, writes outside the work directory, network access)
are contained without harming the machine. Needs the toolchains from .ci/setup-toolchains.sh.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from fusebench.errors import FusebenchError
from fusebench.evaluate.code_exec import LANGUAGES, assemble, check_toolchain, run_tests
from fusebench.evaluate.sandbox import Limits, run_sandboxed, sandbox_mode

pytestmark = pytest.mark.toolchains

# One small problem ("largest element of a list") in MultiPL-E's shape per language, written for these tests:
# (prompt, correct completion, wrong completion, tests); prompt + completion + "\n" + tests is the program.
PROBLEMS: dict[str, tuple[str, str, str, str]] = {
    "cpp": (
        "#include<assert.h>\n#include<bits/stdc++.h>\n// Return the largest element of the vector.\n"
        "long max_element(std::vector<long> l) {\n",
        "    return *std::max_element(l.begin(), l.end());\n",
        "    return l[0];\n",
        "}\nint main() {\n    auto candidate = max_element;\n    assert(candidate((std::vector<long>({1, 2, 3}))) == (3));\n"
        "    assert(candidate((std::vector<long>({5, 3, -5, 2, 123, 1}))) == (123));\n}\n",
    ),
    "go": (
        "package max_element_test\n\nimport (\n    \"testing\"\n    \"fmt\"\n)\n\n"
        "// Return the largest element of the list.\nfunc max_element(l []int) int {\n",
        "    m := l[0]\n    for _, x := range l {\n        if x > m {\n            m = x\n        }\n    }\n"
        "    return m\n}\n",
        "    return l[0]\n}\n",
        # MultiPL-E's Go tests start with the test function: the completion closes its own function
        "func TestMax_Element(t *testing.T) {\n  candidate := max_element\n"
        "  type test struct {\n    actual   interface{}\n    expected interface{}\n  }\n"
        "  tests := []test{\n     { actual: candidate([]int{1, 2, 3}), expected: 3 },\n"
        "     { actual: candidate([]int{5, 3, -5, 2, 123, 1}), expected: 123 },\n  }\n\n"
        "  for i, tc := range tests {\n    t.Run(fmt.Sprintf(\"test num % d\", i), func(t *testing.T) {\n"
        "      if fmt.Sprintf(\"%v\", tc.actual) != fmt.Sprintf(\"%v\", tc.expected) {\n"
        "        t.Errorf(\"expected '%s', got '%s'\", tc.expected, tc.actual)\n      }\n    })\n  }\n}\n",
    ),
    "java": (
        "import java.util.*;\nimport java.lang.reflect.*;\nimport org.javatuples.*;\nimport java.security.*;\n"
        "import java.math.*;\nimport java.io.*;\nimport java.util.stream.*;\nclass Problem {\n"
        "    // Return the largest element of the list.\n    public static long maxElement(ArrayList<Long> l) {\n",
        "        return Collections.max(l);\n",
        "        return l.get(0);\n",
        "    }\n    public static void main(String[] args) {\n"
        "    assert(maxElement((new ArrayList<Long>(Arrays.asList((long)1l, (long)2l, (long)3l)))) == (3l));\n"
        "    assert(maxElement((new ArrayList<Long>(Arrays.asList((long)5l, (long)3l, (long)-5l, (long)2l, "
        "(long)123l, (long)1l)))) == (123l));\n    }\n\n}\n",
    ),
    "js": (
        "//Return the largest element of the list.\nfunction max_element(l){\n",
        "  return Math.max(...l);\n",
        "  return l[0];\n",
        "}\n\nconst assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = max_element;\n"
        "  assert.deepEqual(candidate([1, 2, 3]),3);\n  assert.deepEqual(candidate([5, 3, -5, 2, 123, 1]),123);\n}\n\n"
        "test();\n",
    ),
    "php": (
        "<?php\n// Return the largest element of the array.\nfunction max_element($l) {\n",
        "    return max($l);\n",
        "    return $l[0];\n",
        "}\n\nfunction candidate(...$args) {\n    return max_element(...$args);\n}\n\nfunction test(): void {\n"
        "    if (candidate(array(1, 2, 3)) !== 3) { throw new Exception(\"Test failed!\"); }\n"
        "    if (candidate(array(5, 3, -5, 2, 123, 1)) !== 123) { throw new Exception(\"Test failed!\"); }\n}\n\n"
        "test();",
    ),
    "py": (
        "from typing import List\n\ndef max_element(l: List[int]) -> int:\n"
        "    \"\"\"Return the largest element of the list.\"\"\"\n",
        "    return max(l)\n",
        "    return l[0]\n",
        "def check(candidate):\n    assert candidate([1, 2, 3]) == 3\n"
        "    assert candidate([5, 3, -5, 2, 123, 1]) == 123\n\ndef test_check():\n    check(max_element)\n\n"
        "test_check()\n",
    ),
    "r": (
        "# Return the largest element of the list.\nmax_element <- function(l) {\n",
        "    max(unlist(l))\n",
        "    l[[1]]\n",
        "}\ntest_humaneval <- function() {\ncandidate <- max_element\n"
        "    if(!identical(candidate(c(1, 2, 3)), 3)){quit('no', 1)}\n"
        "    if(!identical(candidate(c(5, 3, -5, 2, 123, 1)), 123)){quit('no', 1)}\n}\ntest_humaneval()",
    ),
    "rb": (
        "# Return the largest element of the array.\ndef max_element(l)\n",
        "  l.max\n",
        "  l[0]\n",
        "end\n\nrequire 'test/unit'\nclass TestHumanEval < Test::Unit::TestCase\n  def test_max_element\n"
        "    candidate = method(:max_element)\n    assert_equal(3, candidate.call([1, 2, 3]))\n"
        "    assert_equal(123, candidate.call([5, 3, -5, 2, 123, 1]))\n  end\nend\n",
    ),
    "rs": (
        "/// Return the largest element of the vector.\nfn max_element(l: Vec<isize>) -> isize {\n",
        "    *l.iter().max().unwrap()\n",
        "    l[0]\n",
        "}\n\nfn main() {\n    let candidate = max_element;\n    assert_eq!(candidate(vec![1, 2, 3]), 3);\n"
        "    assert_eq!(candidate(vec![5, 3, -5, 2, 123, 1]), 123);\n}\n",
    ),
    "ts": (
        "//Return the largest element of the array.\nfunction max_element(l: number[]): number {\n",
        "  return Math.max(...l);\n",
        "  return l[0];\n",
        "}\n\ndeclare var require: any;\nconst assert = require('node:assert');\n\n\nfunction test() {\n"
        "  let candidate = max_element;\n  assert.deepEqual(candidate([1, 2, 3]),3);\n"
        "  assert.deepEqual(candidate([5, 3, -5, 2, 123, 1]),123);\n}\n\ntest();\n",
    ),
}


QUICK = Limits(wall_s=3.0, cpu_s=3)


def _python(code: str, limits: Limits = QUICK):
    return run_sandboxed(["python3", "main.py"], {"main.py": code}, limits)


def _sandbox_processes() -> list[int]:
    """Pids of live processes running as one of the sandbox's uids (61000-62999)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        state = next(line for line in status.splitlines() if line.startswith("State:"))
        if 61000 <= uid < 63000 and "Z" not in state.split()[1]:
            pids.append(int(entry.name))
    return pids


def _assert_machine_fine() -> None:
    assert subprocess.run(["true"]).returncode == 0  # we can still fork and exec
    if os.geteuid() == 0:
        # Killed processes are reaped asynchronously; on a loaded machine that can take a moment.
        deadline = time.monotonic() + 10
        while _sandbox_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _sandbox_processes() == []


@pytest.mark.parametrize("lang", sorted(PROBLEMS))
def test_correct_solution_passes(lang):
    prompt, good, _, tests = PROBLEMS[lang]
    result = run_tests(lang, assemble(prompt, good, tests))
    assert result.status == "passed", result.stderr[-2000:] + result.stdout[-2000:]
    assert result.exit_code == 0


@pytest.mark.parametrize("lang", sorted(PROBLEMS))
def test_wrong_solution_fails(lang):
    prompt, _, bad, tests = PROBLEMS[lang]
    result = run_tests(lang, assemble(prompt, bad, tests))
    assert result.status == "failed"
    assert result.exit_code not in (0, None)


def test_compile_error_fails():
    prompt, _, _, tests = PROBLEMS["rs"]
    result = run_tests("rs", assemble(prompt, "    this is not rust\n", tests))
    assert result.status == "failed" and "error" in result.stderr


def test_endless_loop_times_out_and_leaves_nothing_running():
    result = _python("while True:\n    pass\n")
    assert result.status == "timeout" and result.exit_code is None
    assert result.elapsed_s < 6
    _assert_machine_fine()


def test_cpu_limit_stops_a_busy_program_before_the_wall_clock():
    result = _python("while True:\n    pass\n", Limits(wall_s=20, cpu_s=1))
    assert result.status == "timeout"
    assert result.elapsed_s < 10


def test_fork_bomb_is_contained():
    bomb = "import os\nwhile True:\n    try:\n        if os.fork() == 0:\n            os.setsid()\n    except OSError:\n        pass\n"
    result = _python(bomb)
    assert result.status in ("timeout", "failed", "killed")
    _assert_machine_fine()
    # A shell bomb whose every level waits for its children: it grows until the process limit refuses forks.
    result = run_sandboxed(["bash", "-c", "bomb() { bomb | bomb; }; bomb"], {}, QUICK)
    assert result.status in ("timeout", "failed", "killed")
    assert result.elapsed_s < QUICK.wall_s + 5
    _assert_machine_fine()


def test_ten_gigabyte_allocation_fails_inside_the_sandbox():
    result = _python("data = bytearray(10 * 2**30)\nprint(len(data))\n")
    assert result.status in ("failed", "killed")
    assert "MemoryError" in result.stderr or result.status == "killed"
    cpp = "#include <cstring>\nint main() { char *p = new char[10000000000L]; memset(p, 1, 10000000000L); return p[5]; }\n"
    result = run_sandboxed(["sh", "-c", "g++ -o m m.cpp && ./m"], {"m.cpp": cpp}, Limits(wall_s=30))
    assert result.status in ("failed", "killed") and result.exit_code != 0
    _assert_machine_fine()


@pytest.mark.skipif(sandbox_mode() == "userns", reason="userns mode keeps the caller's uid (documented)")
def test_writes_outside_the_work_directory_fail(tmp_path):
    host_file = tmp_path / "escaped.txt"
    targets = [str(host_file), "/etc/fusebench-escaped", "/root/fusebench-escaped", "/usr/fusebench-escaped"]
    code = (
        "import sys\nopen('inside.txt', 'w').write('ok')\nescaped = []\n"
        f"for path in {targets!r}:\n"
        "    try:\n        open(path, 'w').write('x')\n        escaped.append(path)\n"
        "    except OSError:\n        pass\n"
        "print(escaped)\nsys.exit(1 if escaped else 0)\n"
    )
    try:
        result = _python(code)
        assert result.status == "passed", result.stdout + result.stderr
        for path in targets:
            assert not Path(path).exists()
    finally:  # if the sandbox leaked, do not leave the probes behind
        for path in targets:
            Path(path).unlink(missing_ok=True)


@pytest.mark.skipif(sandbox_mode() == "rlimits", reason="no network namespace available here")
def test_network_is_unreachable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # reachable from outside the sandbox
        code = (
            "import socket, sys\nreached = []\n"
            f"for host in [('127.0.0.1', {port}), ('1.1.1.1', 53), ('8.8.8.8', 443)]:\n"
            "    try:\n        socket.create_connection(host, timeout=2).close()\n        reached.append(host)\n"
            "    except OSError:\n        pass\n"
            "print(reached)\nsys.exit(1 if reached else 0)\n"
        )
        result = _python(code, Limits(wall_s=10))
        assert result.status == "passed", result.stdout + result.stderr
    finally:
        server.close()


def test_output_is_capped_and_does_not_block():
    result = _python("import sys\nsys.stdout.write('x' * 10_000_000)\n", Limits(wall_s=10, output_bytes=1000))
    assert result.status == "passed"
    assert result.truncated and len(result.stdout) == 1000


def test_environment_is_clean(monkeypatch):
    monkeypatch.setenv("FUSEBENCH_TEST_SECRET", "hunter2")
    result = _python("import os\nprint(sorted(os.environ))\nprint(os.getcwd() == os.environ['HOME'])\n")
    assert "FUSEBENCH_TEST_SECRET" not in result.stdout
    assert result.stdout.splitlines()[-1] == "True"


def test_missing_toolchain_names_the_package_to_install():
    lang = dataclasses.replace(LANGUAGES["rs"], tools=("rustc-not-installed",))
    with pytest.raises(FusebenchError, match="apt-get install --no-install-recommends rustc"):
        check_toolchain(lang)
