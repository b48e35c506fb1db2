#!/bin/sh
# Builds the consumer with nothing but pkg-config and the compiler, against an installed prefix.
# Arguments: compiler, install prefix, consumer source, output directory.
set -eu
mkdir -p "$4"
PKG_CONFIG_PATH="$2/share/pkgconfig" && export PKG_CONFIG_PATH
# shellcheck disable=SC2046  # the flags must split
"$1" -O2 $(pkg-config --cflags alibi) "$3" -o "$4/consumer" $(pkg-config --libs alibi)
"$4/consumer"
