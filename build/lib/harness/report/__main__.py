"""``python -m harness.report EXPERIMENT [--out DIR] [--uri URI] [--parent RUN_ID]``."""

from harness.report.notebook import main

if __name__ == "__main__":
    raise SystemExit(main())
