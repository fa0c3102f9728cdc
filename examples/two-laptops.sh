#!/usr/bin/env bash
# Two laptops that sync with each other directly, over ssh.
#
# Run it once on each laptop, each time naming the other one:
#   alice$ examples/two-laptops.sh ~/notes alice bob   bob-laptop:notes
#   bob$   examples/two-laptops.sh ~/notes bob   alice alice-laptop:notes
# Without arguments it is a local demo in a temporary directory: two repositories that are
# each other's peers by path, so it runs without an ssh server.
set -euo pipefail

usage() {
    cat <<USAGE
usage: $0 [-c KEY=VALUE]... DIR NAME PEER_NAME PEER_URL
       $0                       (local demo in a temporary directory)

Make DIR a git repository (if it is not one yet), record this node as NAME, add the other
laptop as git remote PEER_NAME at PEER_URL (an ssh URL such as bob-laptop:notes or
ssh://bob-laptop/home/bob/notes, or a local path), and start the assistant in DIR.
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
    demo=$(mktemp -d "${TMPDIR:-/tmp}/annexsync-two-laptops.XXXXXX")
    bash "$0" -c annexsync.poll=1s "$demo/alice" alice bob "$demo/bob"
    bash "$0" -c annexsync.poll=1s "$demo/bob" bob alice "$demo/alice"
    cat <<DEMO
Demo ready in $demo: write a file in $demo/alice and it appears in $demo/bob, and back.
Stop it with:
  ${annexsync[*]} assistant --stop -C $demo/alice
  ${annexsync[*]} assistant --stop -C $demo/bob
DEMO
    exit 0
fi
if [[ $# -ne 4 ]]; then
    usage >&2
    exit 2
fi
dir=$1 name=$2 peer_name=$3 peer_url=$4

mkdir -p "$dir"
git -C "$dir" init -q
"${annexsync[@]}" -C "$dir" init --name "$name"
if git -C "$dir" remote get-url "$peer_name" >/dev/null 2>&1; then
    git -C "$dir" remote set-url "$peer_name" "$peer_url"
else
    git -C "$dir" remote add "$peer_name" "$peer_url"
fi
for kv in ${configs[@]+"${configs[@]}"}; do
    git -C "$dir" config "${kv%%=*}" "${kv#*=}"
done
"${annexsync[@]}" -C "$dir" assistant
echo "$name: assistant running in $dir, syncing with $peer_name at $peer_url"
