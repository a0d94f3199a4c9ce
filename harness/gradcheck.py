"""``python -m harness.gradcheck``: the 48-triple exact/mismatched table (see :mod:`harness.core.gradcheck`)."""

from harness.core.gradcheck import main

if __name__ == "__main__":
    raise SystemExit(main())
