#!/bin/bash
# C-MOVE of one study from dicom-node to DCMTK storescp: seconds per move, for
# an A/B of two checkouts of the node (each put first on PYTHONPATH). Run as
# root from the repository, after bench/ingest.py has generated its CT set:
#
#   git archive <old commit> | tar -x -C /tmp/old
#   for i in 1 2 3; do
#     unshare -n -- bash bench/move_ab.sh /tmp/old before
#     unshare -n -- bash bench/move_ab.sh "$PWD" after
#   done
#
# Inside its own network namespace (storescp listens on every interface): a node
# with its defaults and storescp as the move destination DEST, the CT-300 set
# stored into the node with storescu, then three C-MOVEs of its study by
# movescu, each timed from start to exit and its files counted.
# TCP_NODELAY=1 for storescp as in bench/ingest.py: without it, DCMTK's Nagle
# holds each C-STORE-RSP for the node's delayed ACK (about 47 ms a
# sub-operation, 300 instances in 14 s).
set -euo pipefail
CHECKOUT=$1
LABEL=$2
REPO=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-/tmp/dicom-node-bench/data/ct-300/st00001}
ip link set lo up
W=$(mktemp -d /tmp/move-ab.XXXX)
trap 'kill $NODE $SCP 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
mkdir -p "$W/dest" "$W/data"
echo "# move_ab: defaults plus the environment" > "$W/node.toml"
PYTHONPATH=$CHECKOUT DICOM_NODE_CONFIG=$W/node.toml DICOM_NODE_DATA_DIR=$W/data \
    DICOM_NODE_DICOM_PORT=11112 DICOM_NODE_HTTP_PORT=18080 DICOM_NODE_BIND_HOST=127.0.0.1 \
    DICOM_NODE_LOG_LEVEL=WARNING DICOM_NODE_PEERS="DEST@127.0.0.1:11113" \
    "$REPO/.venv/bin/dicom-node" serve > "$W/node.log" 2>&1 &
NODE=$!
for _ in $(seq 150); do curl -sf http://127.0.0.1:18080/health > /dev/null && break; sleep 0.2; done
TCP_NODELAY=1 storescp --fork -od "$W/dest" +xa -pdu 131072 11113 > "$W/scp.log" 2>&1 &
SCP=$!
storescu -aec DICOM_NODE -pdu 131072 +sd +r 127.0.0.1 11112 "$DATA" > "$W/scu.log" 2>&1
STUDY=$("$REPO/.venv/bin/python" -c "import glob, pydicom; print(pydicom.dcmread(sorted(glob.glob('$DATA/*/*.dcm'))[0], stop_before_pixels=True).StudyInstanceUID)")
for round in 1 2 3; do
    rm -rf "${W:?}/dest/"*
    start=$(date +%s.%N)
    movescu -aec DICOM_NODE -aem DEST -S -k QueryRetrieveLevel=STUDY \
        -k StudyInstanceUID="$STUDY" 127.0.0.1 11112 > /dev/null 2>&1
    end=$(date +%s.%N)
    echo "$LABEL move $round: $(find "$W/dest" -type f | wc -l) instances in $(echo "$end - $start" | bc) s"
done
