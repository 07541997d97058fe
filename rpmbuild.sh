#!/usr/bin/env bash
# Build python-livereduce and python-livereduce-watchdog (RPMs and SRPM) into build/rpmbuild/.
# The version comes from pyproject.toml; the source tarball is `git archive` of HEAD plus uncommitted changes
# of tracked files (so a checkout builds what it holds). Needs rpmbuild (dnf install rpm-build / apt-get install rpm).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
[[ -n "$version" ]] || { echo "rpmbuild.sh: no version in pyproject.toml" >&2; exit 1; }
topdir="$PWD/build/rpmbuild"
mkdir -p "$topdir/SOURCES"
tarball="$topdir/SOURCES/livereduce-$version.tar.gz"
stash=$(git stash create || true)
git archive --format=tar.gz --prefix="livereduce-$version/" -o "$tarball" "${stash:-HEAD}"

rpmbuild -ba livereduce.spec --define "_topdir $topdir" --define "version $version"
echo "Built:"
find "$topdir/RPMS" "$topdir/SRPMS" -name '*.rpm' -print
echo "Inspect with: rpm -qilRp --scripts <file.rpm>"
