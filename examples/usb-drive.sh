#!/usr/bin/env bash
# A laptop that syncs with a repository on a USB drive whenever the drive is mounted.
#
#   examples/usb-drive.sh ~/notes laptop /media/$USER/STICK/notes.git
# Run it on a second machine with the same drive path to carry changes between the two on the
# drive. Without arguments it is a local demo in a temporary directory, with a plain directory
# standing in for the drive.
set -euo pipefail

usage() {
    cat <<USAGE
usage: $0 [-c KEY=VALUE]... DIR NAME DRIVE_REPO
       $0                       (local demo in a temporary directory)

Make DIR a git repository (if it is not one yet) and record this node as NAME. Create a bare
repository at DRIVE_REPO if there is none (the drive must be mounted), add it as git remote
"usb", and start the assistant in DIR. The assistant syncs with the drive the moment it is
mounted, and leaves it alone while it is not (see docs/drives.md).
-c KEY=VALUE sets a git config key in DIR first (e.g. -c annexsync.poll=30s).
ANNEXSYNC names the command to run (default: annexsync).
USAGE
}

read -r -a annexsync <<<"${ANNEXSYNC:-annexsync}"
configs=()
while getopts "c:h" opt; do
    case $opt in
        c) [[ $OPTARG == *=* ]] || { echo "$0: -c wants KEY=VALUE, got '$OPTARG'" >&2; exit 2; }
           configs+=("$OPTARG") ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))

if [[ $# -eq 0 ]]; then
    demo=$(mktemp -d "${TMPDIR:-/tmp}/annexsync-usb-drive.XXXXXX")
    mkdir "$demo/STICK"
    bash "$0" -c annexsync.poll=1s "$demo/notes" laptop "$demo/STICK/notes.git"
    cat <<DEMO
Demo ready in $demo: write a file in $demo/notes and it is committed and pushed to the
"drive" at once (git -C $demo/STICK/notes.git log). Stop it with:
  ${annexsync[*]} assistant --stop -C $demo/notes
DEMO
    exit 0
fi
if [[ $# -ne 3 ]]; then
    usage >&2
    exit 2
fi
dir=$1 name=$2 drive_repo=$3

if [[ ! -e $drive_repo ]]; then
    if [[ ! -d $(dirname "$drive_repo") ]]; then
        echo "$0: $(dirname "$drive_repo") does not exist: is the drive mounted?" >&2
        exit 1
    fi
    git init -q --bare "$drive_repo"
    echo "created a bare repository at $drive_repo"
fi
mkdir -p "$dir"
git -C "$dir" init -q
"${annexsync[@]}" -C "$dir" init --name "$name"
if git -C "$dir" remote get-url usb >/dev/null 2>&1; then
    git -C "$dir" remote set-url usb "$drive_repo"
else
    git -C "$dir" remote add usb "$drive_repo"
fi
for kv in ${configs[@]+"${configs[@]}"}; do
    git -C "$dir" config "${kv%%=*}" "${kv#*=}"
done
"${annexsync[@]}" -C "$dir" assistant
echo "$name: assistant running in $dir, syncing with the drive at $drive_repo"
