#!/usr/bin/env bash
# One machine, one process work pool: register fleetscan's deployments and start a worker.
# Run from a checkout with fleetscan installed (`make setup`), PREFECT_API_URL pointing at your
# Prefect server, and a kubeconfig for the orchestrator identity (deployments/rbac/).
#   deployments/process/worker.sh        (the pool prefect.yaml names: fleetscan)
# Start the same script on more machines to share fleet scans (dispatch: fleet-scan/namespace-scan);
# they need the run directory on a shared filesystem, or `share: s3://...` in the scan parameters.
set -euo pipefail
cd "$(dirname "$0")/../.."
pool=fleetscan
prefect="${PREFECT:-.venv/bin/prefect}"
python="${PYTHON:-.venv/bin/python}"
: "${PREFECT_API_URL:?set PREFECT_API_URL to your Prefect server, e.g. http://prefect.internal:4200/api}"
export FLEETSCAN_HOME="$PWD"            # where the pull step in prefect.yaml finds the code

if ! "$prefect" work-pool inspect "$pool" >/dev/null 2>&1; then
  "$prefect" work-pool create "$pool" --type process
fi
"$prefect" --no-prompt deploy --all     # idempotent: updates the deployments in place
# Flow runs this machine starts at once (each fleet scan is itself concurrent; 4 suits 2-4 cores).
# Started as a background job (`worker.sh &`), the worker inherits SIGINT ignored; it stops on
# SIGTERM by sending itself a SIGINT, so it would never stop. A shell cannot un-ignore a signal:
# Python restores it, then becomes the worker.
exec "$python" -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])' \
  "$prefect" worker start --pool "$pool" --limit "${FLEETSCAN_WORKER_LIMIT:-4}"
