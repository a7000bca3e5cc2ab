#!/usr/bin/env bash
# Installs the Debian packages listed in scripts/system-packages.txt that are
# missing. As root it runs apt-get (update first); otherwise it names what is
# missing and fails, because the tests need those programs.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
while read -r pkg; do
  pkg=${pkg%%#*}; pkg=${pkg//[[:space:]]/}
  [ -z "$pkg" ] && continue
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done < scripts/system-packages.txt
# npm installs axe-core (pinned) for the e2e accessibility checks. Machines with
# NodeSource's nodejs have npm inside it, and Debian's npm package conflicts
# with that, so it is only asked for when no npm command exists at all.
if ! command -v npm >/dev/null 2>&1; then
  missing+=(npm)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  echo "run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
