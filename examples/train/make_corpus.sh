#!/bin/sh
# The real-text corpus of train_short_test_long: the C++ standard library headers of the Debian
# package libstdc++-12-dev (/usr/include/c++/12, architecture-independent, present wherever g++ 12
# is), read as bytes. Code has structure at every range (matching braces, names declared pages
# before their use, the same idioms across files), which is what a long context is for.
#
#   examples/train/make_corpus.sh OUT_DIR [HEADERS_DIR]
#
# writes OUT_DIR/cxx-train.txt and OUT_DIR/cxx-heldout.txt, for
#   alibi_train_short_test_long --text OUT_DIR/cxx-train.txt --eval-text OUT_DIR/cxx-heldout.txt
# The files in C-locale path order are split by position: every tenth file (the 10th, 20th, ...)
# is held out, so the evaluation text is whole files the model never trained on. Each file's
# leading run of // comment and blank lines (the GPL notice, identical in every file) is dropped,
# so the held-out text is not the same paragraph the model saw 700 times.
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 OUT_DIR [HEADERS_DIR (default /usr/include/c++/12)]" >&2
  exit 2
fi
out=$1
src=${2:-/usr/include/c++/12}
if [ ! -d "$src" ]; then
  echo "$0: $src not found (Debian: apt-get install libstdc++-12-dev)" >&2
  exit 1
fi
mkdir -p "$out"
train="$out/cxx-train.txt"
heldout="$out/cxx-heldout.txt"
: >"$train.tmp"
: >"$heldout.tmp"

n=0
# Paths in the package have no newlines or spaces; read line by line all the same.
find "$src" -type f | LC_ALL=C sort | while IFS= read -r file; do
  n=$((n + 1))
  if [ $((n % 10)) -eq 0 ]; then target="$heldout.tmp"; else target="$train.tmp"; fi
  awk 'body || !(/^\/\// || /^[[:space:]]*$/) { body = 1; print }' "$file" >>"$target"
done
mv "$train.tmp" "$train"
mv "$heldout.tmp" "$heldout"
# Sizes and digests, so a run elsewhere can tell whether it trained on the same bytes.
for f in "$train" "$heldout"; do
  printf '%s: %s bytes, sha256 %s\n' "$f" "$(wc -c <"$f" | tr -d ' ')" \
    "$(sha256sum "$f" | cut -d' ' -f1)"
done
