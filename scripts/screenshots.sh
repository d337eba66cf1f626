#!/usr/bin/env bash
# PNG screenshots of every page at desktop (1280 px) and mobile (390 px) width, as a visitor, an
# organisation owner, an organisation admin and a staff user, for review (not committed):
#   ./scripts/screenshots.sh [DIR]        default DIR: var/screenshots
# Runs the browser tier (dashboard/tests/browser, Debian's /usr/bin/chromium) on the test database
# of DATABASE_URL (Postgres, e.g. postgres://postgres@127.0.0.1:5432/ruapi) or, unset, SQLite; the
# shots are written even when a page fails a check (the failures are printed at the end).
set -uo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-var/screenshots}"
rm -rf "$DIR"
mkdir -p "$DIR"
RUAPI_SCREENSHOTS="$(cd "$DIR" && pwd)" python3 -m pytest dashboard/tests/browser -q -p no:cacheprovider -k "not test_every_route_is_mapped"
status=$?
echo "Screenshots: $(find "$DIR" -name '*.png' | wc -l) PNG files in $DIR/<role>-<width>/"
exit $status
