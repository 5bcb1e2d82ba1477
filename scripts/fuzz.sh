#!/usr/bin/env bash
# Longer runs of the property tests (proptest) that CI runs at their default 256 cases:
# form and query decoding, Authorization headers, cookie decoding, user-code normalization,
# JWT parsing, the login API's and token service's JSON replies, and next= redirects.
#
#   scripts/fuzz.sh            # 100,000 cases per property (release build; a few minutes)
#   scripts/fuzz.sh 1000000    # a million
#
# A failure prints the smallest input that breaks the property; proptest also saves it under
# proptest-regressions/ so the next run tries it first (commit that file with the fix).
set -euo pipefail
cd "$(dirname "$0")/.."
CASES=${1:-100000}
echo "property tests with $CASES cases each"
PROPTEST_CASES=$CASES cargo test --release --workspace --locked fuzz:: -- --test-threads 2
