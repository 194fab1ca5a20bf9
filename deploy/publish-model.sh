#!/usr/bin/env bash
# Publishes a model version folder into a model repository atomically, for
# hosts without profilectl (an NFS server, a CI job, an init container):
#
#     deploy/publish-model.sh SRC_DIR REPO NAME
#
# SRC_DIR holds model.json + model.safetensors (and optionally items.index,
# users.index and their .hnsw sidecars). The files are copied into
# REPO/NAME/.publish-XXXX on the same file system, flushed, then the folder is
# renamed to the next free version number REPO/NAME/<N> in one rename(2): a
# watching profiled sees either nothing or the whole version, never a partial
# one, and a published file is never modified in place. Prints the version.
# Same layout and rules as `profilectl publish SRC --repo REPO --name NAME`.
set -euo pipefail

if [ "$#" -ne 3 ]; then
    echo "usage: $0 SRC_DIR REPO NAME" >&2
    exit 2
fi
src=$1
repo=$2
name=$3

case "$name" in
    "" | . | .. | *[!A-Za-z0-9._-]* | .*)
        echo "publish-model: bad model name '$name' (letters, digits, . _ -; no leading dot)" >&2
        exit 2
        ;;
esac
for f in model.json model.safetensors; do
    if [ ! -f "$src/$f" ]; then
        echo "publish-model: $src: missing $f" >&2
        exit 1
    fi
done

model_dir=$repo/$name
mkdir -p "$model_dir"
tmp=$(mktemp -d "$model_dir/.publish-XXXXXXXX")
trap 'rm -rf "$tmp"' EXIT
# Regular files only, no symlinks followed out of SRC_DIR.
for f in "$src"/*; do
    if [ -f "$f" ] && [ ! -L "$f" ]; then
        cp -- "$f" "$tmp/"
    fi
done
chmod 0755 "$tmp"
chmod 0644 "$tmp"/*
sync -f "$tmp" 2>/dev/null || sync

# Next version: one past the highest numeric folder; a concurrent publisher
# that took the number makes the rename fail, and we try the next one.
last=0
for d in "$model_dir"/*/; do
    v=$(basename "$d")
    case "$v" in
        '' | *[!0-9]*) continue ;;
    esac
    v=$((10#$v))
    if [ "$v" -gt "$last" ]; then
        last=$v
    fi
done
version=$((last + 1))
for _ in $(seq 1 1000); do
    if [ ! -e "$model_dir/$version" ] && mv -T -- "$tmp" "$model_dir/$version" 2>/dev/null; then
        trap - EXIT
        sync -f "$model_dir" 2>/dev/null || true
        echo "published $src as $name version $version ($model_dir/$version)"
        exit 0
    fi
    version=$((version + 1))
done
echo "publish-model: $model_dir: could not find a free version number" >&2
exit 1
