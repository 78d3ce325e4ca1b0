#!/usr/bin/env bash
# Install the compilers and interpreters that MultiPL-E execution needs (cpp, go, java, js, php, py, r, rb, rs, ts),
# all from Debian packages so a fresh machine and CI get the same versions. Idempotent: installs only what is
# missing, prints one line when everything is present, and fails loudly (non-zero, with apt's log) otherwise.
# Why these packages: libjavatuples-java because MultiPL-E's Java prompts `import org.javatuples.*`;
# ruby-test-unit because its Ruby tests subclass Test::Unit::TestCase; node-typescript gives a `tsc` that needs
# no npm; bubblewrap is the sandbox those programs run in (fusebench/sandbox/), libseccomp2 compiles its seccomp
# filter (bubblewrap does not depend on it); chromium renders the leaderboard page headless in its test
# (tests/test_leaderboard_ranking.py: screenshot, table present, no overlapping text). The toolchains must live on the
# system PATH (/usr/bin): the sandbox runs programs as an unprivileged user with a clean environment and only the
# system directories mounted, so it cannot see per-user installs such as rustup's ~/.cargo.
set -euo pipefail

PACKAGES=(g++ golang-go default-jdk-headless libjavatuples-java nodejs node-typescript php-cli r-base-core
          ruby ruby-test-unit rustc bubblewrap libseccomp2 chromium)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# nodejs may come from another source (e.g. NodeSource) that already provides a working `node`.
if command -v node >/dev/null 2>&1; then
  missing=("${missing[@]/nodejs}")
fi
read -r -a missing <<<"${missing[*]:-}"

if [ "${#missing[@]}" -gt 0 ]; then
  log="$(mktemp)"
  export DEBIAN_FRONTEND=noninteractive
  if ! { $SUDO apt-get update -qq && \
         $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    echo "setup-toolchains: apt-get failed installing: ${missing[*]}" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  rm -f "$log"
fi

# Every tool must run from the system PATH, not only be installed.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
for tool in g++ go javac java node tsc php Rscript ruby rustc python3 bwrap chromium; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "setup-toolchains: '$tool' is not on the system PATH after installing ${PACKAGES[*]}" >&2
    exit 1
  fi
done
test -f /usr/share/java/javatuples.jar || { echo "setup-toolchains: /usr/share/java/javatuples.jar missing" >&2; exit 1; }
echo "setup-toolchains: cpp go java js php py r rb rs ts toolchains ready"
