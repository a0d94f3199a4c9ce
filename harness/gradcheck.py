"""``python -m harness.gradcheck``: the 48-triple exact/mismatched table (see :mod:`harness.core.gradcheck`).

``python -m harness.gradcheck --l2 3`` adds the whole network's gradient of the L2-regularised cost at λ = 3.
"""

from harness.core.gradcheck import main

if __name__ == "__main__":
    raise SystemExit(main())
