#!/usr/bin/env bash
# Nodes that cannot reach each other (behind NAT) syncing through a bare repository on a hub
# that all of them can reach. The hub needs git and ssh, not annexsync.
#
#   hub$    git init --bare ~/notes.git             (once)
#   laptop$ examples/nat-hub.sh ~/notes laptop hub.example.org:notes.git
#   desk$   examples/nat-hub.sh ~/notes desk   hub.example.org:notes.git
# Without arguments it is a local demo in a temporary directory: a bare repository on a path
# as the hub, and two nodes.
set -euo pipefail

usage() {
    cat <<USAGE
usage: $0 [-c KEY=VALUE]... DIR NAME HUB_URL
       $0                       (local demo in a temporary directory)

Make DIR a git repository (if it is not one yet), record this node as NAME, add the bare
repository at HUB_URL (an ssh URL such as hub.example.org:notes.git, or a local path, which
is created if missing) as git remote "hub", and start the assistant in DIR. A hub without
annexsync cannot tell the nodes of changes, so each node fetches from it every annexsync.poll
(default 1m; e.g. -c annexsync.poll=20s), and pushes to it at once on every commit.
-c KEY=VALUE sets a git config key in DIR first.
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
    demo=$(mktemp -d "${TMPDIR:-/tmp}/annexsync-nat-hub.XXXXXX")
    bash "$0" -c annexsync.poll=1s "$demo/laptop" laptop "$demo/hub.git"
    bash "$0" -c annexsync.poll=1s "$demo/desk" desk "$demo/hub.git"
    cat <<DEMO
Demo ready in $demo: write a file in $demo/laptop and it appears in $demo/desk within a
poll interval (1s here), and back. Stop it with:
  ${annexsync[*]} assistant --stop -C $demo/laptop
  ${annexsync[*]} assistant --stop -C $demo/desk
DEMO
    exit 0
fi
if [[ $# -ne 3 ]]; then
    usage >&2
    exit 2
fi
dir=$1 name=$2 hub_url=$3

# A local path (not host:path or scheme://) that does not exist yet: create the bare hub.
if [[ $hub_url != *://* && ( $hub_url == /* || $hub_url == .* || $hub_url != *:* ) ]]; then
    if [[ ! -e $hub_url ]]; then
        git init -q --bare "$hub_url"
        echo "created a bare repository at $hub_url"
    fi
fi
mkdir -p "$dir"
git -C "$dir" init -q
"${annexsync[@]}" -C "$dir" init --name "$name"
if git -C "$dir" remote get-url hub >/dev/null 2>&1; then
    git -C "$dir" remote set-url hub "$hub_url"
else
    git -C "$dir" remote add hub "$hub_url"
fi
for kv in ${configs[@]+"${configs[@]}"}; do
    git -C "$dir" config "${kv%%=*}" "${kv#*=}"
done
"${annexsync[@]}" -C "$dir" assistant
echo "$name: assistant running in $dir, syncing through the hub at $hub_url"
