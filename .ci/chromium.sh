#!/usr/bin/env bash
# Install (Debian packages) the headless browser of the UI test: chromium and its chromedriver, which
# selenium drives without downloading a browser of its own. Prints nothing when both are installed.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
echo "chromium: installing chromium and chromium-driver (apt)"
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
$sudo apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
