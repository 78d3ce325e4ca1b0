"""Two HumanEval problems (add, is_palindrome) in MultiPL-E's row format for each of the paper's ten languages,
written for fusebench's tests after MultiPL-E's translators (dataset_builder/humaneval_to_<lang>.py): the prompt as
the dataset holds it (ending in a newline), the tests as a program fragment, and the language's stop tokens.

Each problem carries a correct and a wrong RAW generation: what a model would emit after the stripped prompt,
including text past the first stop token (a new function, a `main`, a comment...), so only the stop-token cut
makes the correct one compile and pass. Wrong ones compile but compute the wrong value.
"""

from __future__ import annotations

# MultiPL-E's stop tokens, copied here by hand from its translators (not from fusebench's code, which they check).
STOP_TOKENS = {
    "cpp": ["\n}"], "go": ["\nfunc", "struct", "\n// "], "java": ["\n    }\n"],
    "js": ["\nfunction ", "\n/*", "\n//", "\nconsole.log"], "php": ["\nfunction", "\n?>", "\n//", "\n#"],
    "py": ["\ndef", "\n#", "\nif", "\nclass"], "r": ["\n#", "\n```"], "rb": ["\nclass", "\ndef", "\n#", "\n\n"],
    "rs": ["\n}"], "ts": ["\nfunction ", "\n/*", "\n//", "\nclass"],
}

_JAVA_IMPORTS = ("import java.util.*;\nimport java.lang.reflect.*;\nimport org.javatuples.*;\nimport java.security.*;\n"
                 "import java.math.*;\nimport java.io.*;\nimport java.util.stream.*;\nclass Problem {\n")
_GO_HEAD = "package {name}_test\n\nimport (\n    \"testing\"\n    \"fmt\"\n)\n\n"


def _go_tests(entry: str, cases: list[tuple[str, str]]) -> str:
    lines = [f"func Test{entry.title()}(t *testing.T) {{", f"  candidate := {entry}", "\ttype test struct {",
             "\t\tactual   interface{}", "\t\texpected interface{}", "\t}", "   tests := []test{"]
    lines += [f"     {{ actual: candidate({a}), expected: {e} }}," for a, e in cases]
    lines += ["   }\n", "\tfor i, tc := range tests {",
              "\t\tt.Run(fmt.Sprintf(\"test num % d\", i), func(t *testing.T) {",
              "\t\t\tif fmt.Sprintf(\"%v\", tc.actual) != fmt.Sprintf(\"%v\", tc.expected) {",
              "\t\t\t\tt.Errorf(\"expected '%s', got '%s'\", tc.expected, tc.actual)", "\t\t\t}", "\t\t})", "\t}",
              "}\n"]
    return "\n".join(lines)


# lang -> [(entry point, prompt, tests, correct raw generation, wrong raw generation), ...]
PROBLEMS: dict[str, list[tuple[str, str, str, str, str]]] = {
    "py": [
        ("add", 'def add(x: int, y: int) -> int:\n    """Add two numbers x and y\n    >>> add(2, 3)\n    5\n    """\n',
         "def check(candidate):\n    assert candidate(0, 1) == 1\n    assert candidate(5, 7) == 12\n\n"
         "def test_check():\n    check(add)\n\ntest_check()\n",
         "\n    return x + y\n\n\ndef subtract(x, y):\n    return x - y\n",
         "\n    return x - y\n\nif __name__ == '__main__':\n    print(add(1, 2))\n"),
        ("is_palindrome", 'def is_palindrome(text: str) -> bool:\n    """Checks if given string is a palindrome\n'
         "    >>> is_palindrome('aba')\n    True\n    \"\"\"\n",
         "def check(candidate):\n    assert candidate('') == True\n    assert candidate('aba') == True\n"
         "    assert candidate('zbcd') == False\n\ndef test_check():\n    check(is_palindrome)\n\ntest_check()\n",
         "\n    return text == text[::-1]\n\n# a trailing comment\nprint('junk')\n",
         "\n    return len(text) > 1 and text[0] == text[-1]\n\nclass Extra:\n    pass\n"),
    ],
    "js": [
        ("add", "//Add two numbers x and y\n// >>> add(2, 3)\n// 5\nfunction add(x, y){\n",
         "const assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = add;\n"
         "  assert.deepEqual(candidate(0, 1),1);\n  assert.deepEqual(candidate(5, 7),12);\n}\n\ntest();",
         "\n  return x + y;\n}\n\nconsole.log(add(1, 2));\nfunction sub(x, y){",
         "\n  return x * y;\n}\n// another function\nfunction mul(a, b) {"),
        ("is_palindrome", "//Checks if given string is a palindrome\n// >>> is_palindrome(\"aba\")\n// true\n"
         "function is_palindrome(text){\n",
         "const assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = is_palindrome;\n"
         "  assert.deepEqual(candidate(\"\"),true);\n  assert.deepEqual(candidate(\"aba\"),true);\n"
         "  assert.deepEqual(candidate(\"zbcd\"),false);\n}\n\ntest();",
         "\n  return text === text.split(\"\").reverse().join(\"\");\n}\n\nfunction main() {\n",
         "\n  return text.length > 1 && text[0] === text[text.length - 1];\n}\n/* end of file"),
    ],
    "ts": [
        ("add", "//Add two numbers x and y\n// >>> add(2, 3)\n// 5\nfunction add(x: number, y: number): number {\n",
         "declare var require: any;\nconst assert = require('node:assert');\n\n\nfunction test() {\n"
         "  let candidate = add;\n  assert.deepEqual(candidate(0, 1),1);\n"
         "  assert.deepEqual(candidate(5, 7),12);\n}\n\n"
         "test();",
         "\n  return x + y;\n}\n\nclass Helper {\n",
         "\n  return x - y;\n}\n\nfunction other(): void {}\n"),
        ("is_palindrome", "//Checks if given string is a palindrome\n// >>> is_palindrome(\"aba\")\n// true\n"
         "function is_palindrome(text: string): boolean {\n",
         "declare var require: any;\nconst assert = require('node:assert');\n\n\nfunction test() {\n"
         "  let candidate = is_palindrome;\n  assert.deepEqual(candidate(\"\"),true);\n"
         "  assert.deepEqual(candidate(\"aba\"),true);\n  assert.deepEqual(candidate(\"zbcd\"),false);\n}\n\ntest();",
         "\n  return text === text.split(\"\").reverse().join(\"\");\n}\n// tests follow\n",
         "\n  return text.length > 1;\n}\n/* junk"),
    ],
    "php": [
        ("add", "<?php\n// Add two numbers x and y\n// >>> add(2, 3)\n// 5\nfunction add($x, $y) {\n",
         "function candidate(...$args) {\n    return add(...$args);\n}\n\nfunction test(): void {\n"
         "    if (candidate(0, 1) !== 1) { throw new Exception(\"Test failed!\"); }\n"
         "    if (candidate(5, 7) !== 12) { throw new Exception(\"Test failed!\"); }\n}\n\ntest();",
         "\n    return $x + $y;\n}\n\nfunction sub($x, $y) {\n",
         "\n    return $x - $y;\n}\n?>\n<html>"),
        ("is_palindrome", "<?php\n// Checks if given string is a palindrome\n// >>> is_palindrome(\"aba\")\n// true\n"
         "function is_palindrome($text) {\n",
         "function candidate(...$args) {\n    return is_palindrome(...$args);\n}\n\nfunction test(): void {\n"
         "    if (candidate(\"\") !== true) { throw new Exception(\"Test failed!\"); }\n"
         "    if (candidate(\"aba\") !== true) { throw new Exception(\"Test failed!\"); }\n"
         "    if (candidate(\"zbcd\") !== false) { throw new Exception(\"Test failed!\"); }\n}\n\ntest();",
         "\n    return $text === strrev($text);\n}\n// done\n",
         "\n    return strlen($text) > 1;\n}\n# junk\n"),
    ],
    "r": [
        ("add", "# Add two numbers x and y\n# >>> add(2, 3)\n# 5\nadd <- function(x, y) {\n",
         "test_humaneval <- function() {\ncandidate <- add\n    if(!identical(candidate(0, 1), 1)){quit('no', 1)}\n"
         "    if(!identical(candidate(5, 7), 12)){quit('no', 1)}\n}\ntest_humaneval()",
         "\n    x + y\n}\n# Example\nprint(add(1, 2))",
         "\n    x * y\n}\n```\nThat is the function."),
        ("is_palindrome", "# Checks if given string is a palindrome\n# >>> is_palindrome('aba')\n# TRUE\n"
         "is_palindrome <- function(text) {\n",
         "test_humaneval <- function() {\ncandidate <- is_palindrome\n"
         "    if(!identical(candidate(''), TRUE)){quit('no', 1)}\n"
         "    if(!identical(candidate('aba'), TRUE)){quit('no', 1)}\n"
         "    if(!identical(candidate('zbcd'), FALSE)){quit('no', 1)}\n}\ntest_humaneval()",
         "\n    paste(rev(strsplit(text, NULL)[[1]]), collapse = '') == text\n}\n# end",
         "\n    nchar(text) > 1\n}\n# junk"),
    ],
    "rb": [
        ("add", "# Add two numbers x and y\n# >>> add.call(2, 3)\n# 5\ndef add(x, y)\n",
         "require 'test/unit'\nclass TestHumanEval < Test::Unit::TestCase\n  def test_add\n"
         "    candidate = method(:add)\n    assert_equal(1, candidate.call(0, 1))\n"
         "    assert_equal(12, candidate.call(5, 7))\n  end\nend\n",
         "\n  x + y\nend\n\nputs add(1, 2)\n",
         "\n  x - y\nend\ndef other\nend\n"),
        ("is_palindrome", "# Checks if given string is a palindrome\n# >>> is_palindrome.call(\"aba\")\n# true\n"
         "def is_palindrome(text)\n",
         "require 'test/unit'\nclass TestHumanEval < Test::Unit::TestCase\n  def test_is_palindrome\n"
         "    candidate = method(:is_palindrome)\n    assert_equal(true, candidate.call(\"\"))\n"
         "    assert_equal(true, candidate.call(\"aba\"))\n    assert_equal(false, candidate.call(\"zbcd\"))\n"
         "  end\nend\n",
         "\n  text == text.reverse\nend\n# junk",
         "\n  text.length > 1\nend\nclass X\nend"),
    ],
    "go": [
        ("add", _GO_HEAD.format(name="add") + "// Add two numbers x and y\n// >>> add(2, 3)\n// 5\n"
         "func add(x int, y int) int {\n",
         _go_tests("add", [("0, 1", "1"), ("5, 7", "12")]),
         "\n    return x + y\n}\n\nfunc main() {\n    fmt.Println(add(1, 2))\n}\n",
         "\n    return x - y\n}\n\n// helper\nfunc helper() {}\n"),
        ("is_palindrome", _GO_HEAD.format(name="is_palindrome") + "// Checks if given string is a palindrome\n"
         "// >>> is_palindrome(\"aba\")\n// true\nfunc is_palindrome(text string) bool {\n",
         _go_tests("is_palindrome", [('""', "true"), ('"aba"', "true"), ('"zbcd"', "false")]),
         "\n    for i := 0; i < len(text)/2; i++ {\n        if text[i] != text[len(text)-1-i] {\n"
         "            return false\n        }\n    }\n    return true\n}\n\nfunc helper() {}\n",
         "\n    return len(text) > 1\n}\n// junk\n"),
    ],
    "java": [
        ("add", _JAVA_IMPORTS + "    // Add two numbers x and y\n    // >>> add((2l), (3l))\n    // (5l)\n"
         "    public static long add(long x, long y) {\n",
         "    }\n    public static void main(String[] args) {\n    assert(add((0l), (1l)) == (1l));\n"
         "    assert(add((5l), (7l)) == (12l));\n    }\n\n}\n",
         "\n        return x + y;\n    }\n    public static void helper() {\n    }\n}\n",
         "\n        return x - y;\n    }\n}\n"),
        ("is_palindrome", _JAVA_IMPORTS + "    // Checks if given string is a palindrome\n"
         "    // >>> isPalindrome((\"aba\"))\n    // (true)\n    public static boolean isPalindrome(String text) {\n",
         "    }\n    public static void main(String[] args) {\n    assert(isPalindrome((\"\")) == (true));\n"
         "    assert(isPalindrome((\"aba\")) == (true));\n    assert(isPalindrome((\"zbcd\")) == (false));\n"
         "    }\n\n}\n",
         "\n        return new StringBuilder(text).reverse().toString().equals(text);\n    }\n\n}",
         "\n        return text.length() > 1;\n    }\n}"),
    ],
    "cpp": [
        ("add", "#include<assert.h>\n#include<bits/stdc++.h>\n// Add two numbers x and y\n// >>> add((2), (3))\n"
         "// (5)\nlong add(long x, long y) {\n",
         "}\nint main() {\n    auto candidate = add;\n    assert(candidate((0), (1)) == (1));\n"
         "    assert(candidate((5), (7)) == (12));\n}\n",
         "\n    return x + y;\n}\nint main() { return 0; }\n",
         "\n    return x - y;\n}\n"),
        ("is_palindrome", "#include<assert.h>\n#include<bits/stdc++.h>\n// Checks if given string is a palindrome\n"
         "// >>> is_palindrome((\"aba\"))\n// (true)\nbool is_palindrome(std::string text) {\n",
         "}\nint main() {\n    auto candidate = is_palindrome;\n    assert(candidate((\"\")) == (true));\n"
         "    assert(candidate((\"aba\")) == (true));\n    assert(candidate((\"zbcd\")) == (false));\n}\n",
         "\n    return std::string(text.rbegin(), text.rend()) == text;\n}\n\nint helper() { return 1; }\n",
         "\n    return text.size() > 1;\n}\n"),
    ],
    "rs": [
        ("add", "/// Add two numbers x and y\n/// >>> add(2, 3)\n/// 5\nfn add(x: isize, y: isize) -> isize {\n",
         "}\n\nfn main() {\n    let candidate = add;\n    assert_eq!(candidate(0, 1), 1);\n"
         "    assert_eq!(candidate(5, 7), 12);\n}\n",
         "\n    x + y\n}\n\nfn main() {}\n",
         "\n    x - y\n}\n"),
        ("is_palindrome", "/// Checks if given string is a palindrome\n/// >>> is_palindrome(String::from(\"aba\"))\n"
         "/// true\nfn is_palindrome(text: String) -> bool {\n",
         "}\n\nfn main() {\n    let candidate = is_palindrome;\n    assert_eq!(candidate(String::from(\"\")), true);\n"
         "    assert_eq!(candidate(String::from(\"aba\")), true);\n"
         "    assert_eq!(candidate(String::from(\"zbcd\")), false);\n}\n",
         "\n    text.chars().rev().collect::<String>() == text\n}\n\nfn unused() {}\n",
         "\n    text.len() > 1\n}\n"),
    ],
}

NUMBERS = {"add": 53, "is_palindrome": 48}  # their HumanEval indices


def rows(lang: str) -> list[dict]:
    """The dataset rows of `lang`, with MultiPL-E's column names (`language` is "go_test.go" for Go)."""
    return [{"name": f"HumanEval_{NUMBERS[entry]}_{entry}", "language": "go_test.go" if lang == "go" else lang,
             "prompt": prompt, "doctests": "transform", "original": f"HumanEval_{NUMBERS[entry]}_{entry}.py",
             "prompt_terminology": "reworded", "tests": tests, "stop_tokens": STOP_TOKENS[lang]}
            for entry, prompt, tests, _correct, _wrong in PROBLEMS[lang]]


def generations(lang: str, which: str) -> dict[str, str]:
    """Stripped prompt -> the raw `which` ("correct" / "wrong") generation, for every problem of `lang`."""
    index = {"correct": 3, "wrong": 4}[which]
    return {p[1].strip(): p[index] for p in PROBLEMS[lang]}
