#!/usr/bin/env bash
# The test suite: set up (system tools included), then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
status=$?
set -e
if [ $status -eq 5 ]; then echo "test.sh: pytest collected no tests: failing" >&2; exit 1; fi
exit $status
