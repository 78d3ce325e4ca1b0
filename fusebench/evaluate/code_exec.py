"""Execute generated code against its tests, per language, in the sandbox; and the unbiased pass@k estimator.

A MultiPL-E problem is a `prompt` (imports, doc comment, signature), the model's completion (cut at the problem's
`stop_tokens`) and `tests`: a program fragment (a `main`, a test class, a `check` call...) that exits non-zero when
an assertion fails. `assemble(prompt, completion, tests)` glues them the way MultiPL-E does, and
`run_tests(language, program)` builds and runs the result in one sandboxed shell command: a compile error, a failed
assertion, a crash or a timeout all count as "not passed".

The ten languages are the paper's (cpp, go, java, js, php, py, r, rb, rs, ts), keyed by MultiPL-E's short names.
Their toolchains come from Debian packages installed by `.ci/setup-toolchains.sh`.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field

from fusebench.errors import FusebenchError
from fusebench.sandbox import SYSTEM_PATH, Limits, run
from fusebench.sandbox import Result as ExecResult

# The JVM sizes its heap and GC/JIT thread pools from the machine; pin them small so a run fits the sandbox's
# process and memory limits on any host, and stop at the C1 JIT, which starts far faster for 1-second programs.
_JVM_FLAGS = "-Xmx512m -Xss8m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:CICompilerCount=1"
_JAVATUPLES = "/usr/share/java/javatuples.jar"  # MultiPL-E's Java prompts import org.javatuples.*


@dataclass(frozen=True)
class Language:
    name: str                  # MultiPL-E's short name
    file_name: str             # what the assembled program is saved as (Java and Go care)
    command: str               # sh command, run in the work directory: build (if any) && run
    tools: tuple[str, ...]     # executables it needs on the system PATH
    package: str               # where they come from (Debian unless said otherwise)
    stop_tokens: tuple[str, ...]  # MultiPL-E's, used when a dataset row carries none
    env: dict[str, str] = field(default_factory=dict)
    limits: Limits = Limits()


# Timeouts follow MultiPL-E's evaluators (evaluation/src/eval_*.py there): 15 s per subprocess, so 15 s for an
# interpreted run and 30 s for build + run (cpp, java, ts), 30 s for `go test`, and for Rust (build unbounded there,
# run 5 s) 30 s. One wall limit covers the whole build-and-run command here, not one per step.
_RUN = Limits(wall_s=15.0, cpu_s=15)
_BUILD_RUN = Limits(wall_s=30.0, cpu_s=30)

# Stop tokens are MultiPL-E's (the `stop` of each dataset_builder/humaneval_to_<lang>.py, also every row's
# `stop_tokens`); commands are MultiPL-E's build and run steps, with the sandbox's paths and JVM sizing.
LANGUAGES: dict[str, Language] = {lang.name: lang for lang in [
    Language("cpp", "main.cpp", "g++ main.cpp -o main -std=c++17 && ./main", ("g++",), "g++",
             ("\n}",), limits=_BUILD_RUN),
    # `go test` on a lone _test.go file needs no module; its build cache lives in the throwaway HOME. MultiPL-E's
    # Go tests start with `func TestX(t *testing.T)`, so the completion closes its own function before "\nfunc".
    Language("go", "main_test.go", "go test main_test.go", ("go",), "golang-go", ("\nfunc", "struct", "\n// "),
             env={"GOCACHE": "/tmp/work/.gocache", "GOPATH": "/tmp/work/.gopath", "GOFLAGS": "-count=1",
                  "GO111MODULE": "auto", "GOMAXPROCS": "2", "CGO_ENABLED": "0"}, limits=_BUILD_RUN),
    Language("java", "Problem.java",
             f"javac -J{' -J'.join(_JVM_FLAGS.split())} -encoding UTF8 -cp {_JAVATUPLES} -d . Problem.java && "
             f"java {_JVM_FLAGS} -ea -cp .:{_JAVATUPLES} Problem",
             ("javac", "java"), "default-jdk-headless libjavatuples-java", ("\n    }\n",), limits=_BUILD_RUN),
    Language("js", "main.js", "node main.js", ("node",), "nodejs",
             ("\nfunction ", "\n/*", "\n//", "\nconsole.log"), env={"UV_THREADPOOL_SIZE": "2"}, limits=_RUN),
    Language("php", "main.php", "php main.php", ("php",), "php-cli",
             ("\nfunction", "\n?>", "\n//", "\n#"), limits=_RUN),
    Language("py", "main.py", "python3 main.py", ("python3",), "python3",
             ("\ndef", "\n#", "\nif", "\nclass"), limits=_RUN),
    Language("r", "main.r", "Rscript main.r", ("Rscript",), "r-base-core", ("\n#", '\n```'), limits=_RUN),
    Language("rb", "main.rb", "ruby main.rb", ("ruby",), "ruby ruby-test-unit",
             ("\nclass", "\ndef", "\n#", "\n\n"), limits=_RUN),
    # rustc with its default edition (2015), as MultiPL-E's eval_rust.py runs it: the prompts were made for it.
    Language("rs", "main.rs", "rustc main.rs -o main && ./main", ("rustc",), "rustc",
             ("\n}",), limits=_BUILD_RUN),
    # tsc exits non-zero on type errors: as in MultiPL-E (same flags), a program that does not type-check fails.
    Language("ts", "main.ts",
             "tsc --target esnext main.ts && node main.js",
             ("tsc", "node"), "node-typescript nodejs", ("\nfunction ", "\n/*", "\n//", "\nclass"),
             env={"UV_THREADPOOL_SIZE": "2"}, limits=_BUILD_RUN),
]}
# Other spellings seen in datasets and harnesses.
ALIASES = {"python": "py", "javascript": "js", "rust": "rs", "ruby": "rb", "typescript": "ts", "c++": "cpp"}


def language(name: str) -> Language:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in LANGUAGES:
        raise FusebenchError(f"unknown code language {name!r}: fusebench executes {', '.join(LANGUAGES)} "
                             f"(MultiPL-E's short names; also {', '.join(ALIASES)}).")
    return LANGUAGES[key]


def check_toolchain(lang: Language) -> None:
    """Raise a FusebenchError naming the package to install if any of `lang`'s tools is not on the system PATH."""
    missing = [tool for tool in lang.tools if shutil.which(tool, path=SYSTEM_PATH) is None]
    if missing:
        raise FusebenchError(
            f"cannot execute {lang.name} code: {', '.join(missing)} not found on the system PATH ({SYSTEM_PATH}); "
            f"sandboxed programs only see system-wide toolchains, not per-user installs such as ~/.cargo. Fix: "
            f"`apt-get install --no-install-recommends {lang.package}`, or run .ci/setup-toolchains.sh, which "
            f"installs all ten languages.")


def assemble(prompt: str, completion: str, tests: str) -> str:
    """The program MultiPL-E runs: prompt, then the (already stop-truncated) completion, then the tests."""
    return prompt + completion + "\n" + tests


def truncate_at_stop(completion: str, stop_tokens: list[str] | tuple[str, ...]) -> str:
    """Cut `completion` at the earliest stop token (generation backends may overshoot or include it)."""
    cut = min((i for i in (completion.find(s) for s in stop_tokens if s) if i >= 0), default=len(completion))
    return completion[:cut]


def run_tests(language_name: str, program: str, limits: Limits | None = None) -> ExecResult:
    """Build and run one complete program (solution + tests) in the sandbox; "passed" means it exited 0.

    Raises SandboxError (a FusebenchError) when no sandbox can run here and the weaker mode was not named."""
    lang = language(language_name)
    check_toolchain(lang)
    return run(["/bin/sh", "-c", lang.command], files={lang.file_name: program}, limits=limits or lang.limits,
               env=lang.env)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed (Chen et al., 2021): 1 - C(n-c, k) / C(n, k).

    Computed as a running product, 1 - prod_{i=n-c+1..n} (1 - k/i), so large n never forms huge binomials."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if n - c < k:  # every size-k subset contains a passing sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
