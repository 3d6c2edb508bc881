#!/bin/sh
export PATH="/usr/local/bin:/usr/bin"
export GREETING="${GREETING:-"hello \"world\" \$HOME"}"
export EMPTY="${EMPTY:-}"
export EQ="${EQ:-"a=b"}"
export BLANK="${BLANK:-""}"
export BS="${BS:-"back\\slash\`tick\`"}"
