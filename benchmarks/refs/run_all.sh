#!/bin/sh
# Build every reference and run each in both placements, one JSON object per
# line on stdout. Usage: run_all.sh [N_C] [N_PYTHON] [N_BRIDGE_PER_CHILD]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
n_c=${1:-100000}
n_py=${2:-20000}
n_bridge=${3:-100000}
if [ -x "$here/../../.venv/bin/python" ]; then
	python=${PYTHON:-$here/../../.venv/bin/python}
else
	python=${PYTHON:-python3}
fi

make -s -C "$here"
for pin in same none; do
	"$here/build/native" -n "$n_c" --pin "$pin"
	"$here/build/ptrace_sysemu" -n "$n_c" --pin "$pin"
	"$here/build/unotify" -n "$n_c" --pin "$pin"
	"$here/build/unotify" -n "$n_c" --pin "$pin" --sync-wakeup off
	"$here/build/c_stub" -n "$n_c" --pin "$pin"
	"$here/build/c_stub" --mode flush -n "$((n_c / 10))" --pin "$pin"
	"$python" "$here/python_ptrace_ref.py" -n "$n_py" --pin "$pin" --mode syscall
	"$python" "$here/python_ptrace_ref.py" -n "$n_py" --pin "$pin" --mode sysemu
	"$here/build/bridge_choice" -n "$n_bridge" --pin "$pin"
done
