"""The one exception type users see.

Anything that is the user's to fix (a bad recipe key, a missing file, an offline hub request) is raised as a
`FusebenchError` whose message is a paragraph naming the problem, where it is and the fix. The CLI prints it
without a traceback and exits with status 2; everything else is a bug and keeps its traceback.
"""


class FusebenchError(Exception):
    """A problem with the user's input or environment, explained in plain words."""


# torch.save reports a full disk without an errno (its C++ stream writer fails); these are its words for that
_WRITER_FAILURES = ("iostream error", "inline_container", "PytorchStreamWriter", "file write failed")


def is_disk_full(err: BaseException, path) -> bool:
    """Whether `err` (or an exception it was raised from) is a full disk: ENOSPC / EDQUOT from Python or Rust
    (safetensors), or torch's errno-less writer failure while the filesystem holding `path` is (nearly) full."""
    import errno
    import shutil

    chain, seen = [], err
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for e in chain:
        text = str(e)
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "os error 28" in text:
            return True
    if any(marker in str(e) for e in chain for marker in _WRITER_FAILURES):
        try:
            return shutil.disk_usage(path).free < 64 << 20
        except OSError:
            return False
    return False
