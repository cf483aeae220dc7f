"""bash (Debian's bash-static) runs a script as a guest exactly as it runs natively."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from aioumm.guest.runner import run_program
from aioumm.loop import Controller

BASH = "/bin/bash-static"

# Only builtins and /bin/busybox applets; nothing printed depends on pids or times.
SCRIPT = r"""
set -u
BB=/bin/busybox
greet() { local who=$1; echo "hello, $who"; return 3; }
greet world; echo "status $?"
fact() { if [ $1 -le 1 ]; then echo 1; else echo $(( $1 * $(fact $(( $1 - 1 ))) )); fi; }
echo "5! = $(fact 5)"

trap 'echo "exit trap, status $?"' EXIT
trap 'echo "got USR1"' USR1
kill -USR1 $$
echo "after USR1"
trap - USR1; trap 'echo "USR2 in $FUNCNAME"' USR2; f() { kill -USR2 $$; }; f

for i in 1 2 3; do printf '%s:' "$i"; done; echo
n=0; while [ $n -lt 5 ]; do n=$((n + 2)); done; echo "n=$n"
until [ $n -le 0 ]; do n=$((n - 3)); done; echo "n=$n"
printf 'l1\nl2\n' | while read -r line; do echo "read $line"; done

echo "b a c" | $BB tr ' ' '\n' | $BB sort | $BB tr '\n' ' '; echo
upper=$(echo shout | $BB tr a-z A-Z); echo "upper=$upper"
echo "$(echo "$(echo inner)" outer)"
set -o pipefail; $BB false | $BB true; echo "pipefail $?"; set +o pipefail
$BB true | $BB false | $BB true; echo "PIPESTATUS ${PIPESTATUS[*]}"
$BB cat <(echo from-process-substitution)
$BB diff <(printf 'a\nb\n') <(printf 'a\nc\n'); echo "diff $?"

echo to-file > out.txt; echo appended >> out.txt; $BB cat out.txt
$BB ls no-such-file > err.txt 2>&1; echo "ls status $?"; $BB cat err.txt
{ echo on-stderr >&2; } 2>&1 | $BB sed 's/^/piped: /'
out=$( { echo o; echo e >&2; } 2>&1 >/dev/null ); echo "captured [$out]"
exec 3> fd3.txt; echo via-fd3 >&3; exec 3>&-; $BB cat fd3.txt
echo "to stderr" >&2

( cd /; echo "subshell in $(pwd)"; exit 7 ); echo "subshell status $? in ${PWD##*/}"
x=outer; ( x=inner; echo "sub x=$x" ); echo "x=$x"
(set -e; $BB false; echo "not reached"); echo "set -e subshell $?"

$BB cat <<END
here-doc with $((6 * 7)) and $(echo substitution)
END
$BB cat <<'END'
quoted here-doc: $HOME stays
END
$BB wc -l <<< "a here-string"
read -r first rest <<< "one two three"; echo "$first|$rest"

$BB sleep 0.2 & p1=$!
( echo background-subshell > bg.txt ) & p2=$!
wait $p1; echo "sleep status $?"
wait $p2; $BB cat bg.txt
false & wait $!; echo "false status $?"
( : > started; exec $BB sleep 5 ) & victim=$!
until [ -e started ]; do $BB sleep 0.05; done  # killed before its traps were reset, it would run ours
kill -TERM $victim; wait $victim; echo "killed job status $?"
( trap 'echo "subshell caught TERM"; exit 5' TERM; : > ready; $BB sleep 5 & wait ) & sub=$!
until [ -e ready ]; do $BB sleep 0.05; done
kill -TERM $sub; wait $sub; echo "subshell job status $?"
$BB sleep 0.1 & $BB sleep 0.2 & wait -n; echo "wait -n $?"; wait; echo "wait all $?"

arr=(zero one two three); echo "${#arr[@]} ${arr[2]} ${arr[@]:1:2}"
arr+=(four); for e in "${arr[@]}"; do printf '[%s]' "$e"; done; echo
declare -A m=([k1]=v1 [k2]=v2); echo "${m[k2]}"
mapfile -t lines < <(printf 'x\ny\n'); echo "${#lines[@]} ${lines[1]}"
for w in apple Banana 42 "x y"; do
  case $w in
    [a-z]*) echo "$w: lower" ;;
    [A-Z]*) echo "$w: upper" ;;
    [0-9]*) echo "$w: number" ;;
    *) echo "$w: other" ;;
  esac
done
echo $(( 2 ** 10 )) $(( 17 % 5 )) $(( (3 + 4) * 2 )) $(( 1 << 4 )) $(( -7 / 2 ))
let y=5*5; echo "y=$y"; (( y > 20 )) && echo "y is big"
s="Hello World"; echo "${s,,} ${s^^} ${s/World/There} ${#s} ${s:6}"
[[ "abc" =~ ^a(b)c$ ]] && echo "regex ${BASH_REMATCH[1]}"
printf -v pv '%s-%s' p v; echo "$pv"; $BB printf '%05d\n' 42
eval 'echo "eval $((1 + 1))"'
command -v greet; command -v nothing-here || echo "no nothing-here"; type -t echo
$BB false || echo "or branch"; $BB true && echo "and branch"
if ! $BB grep -q zzz out.txt; then echo "no zzz"; fi
set -- a b c; echo "$# args: $*"; shift; echo "now $1"
umask 027; umask; : > masked; $BB stat -c %a masked
exit 4
"""


def _outcome(status: int, out: Path, err: Path) -> tuple[int, bytes, bytes]:
    return status, out.read_bytes(), err.read_bytes()


@pytest.mark.asyncio
async def test_a_bash_script_runs_as_it_runs_natively(tmp_path: Path, busybox: str) -> None:
    if not os.access(BASH, os.X_OK):
        pytest.fail("bash-static is required by this test: apt-get install bash-static")
    script = tmp_path / "script.sh"
    script.write_text(SCRIPT)
    results = []
    work = tmp_path / "work"  # the same directory for both runs, emptied in between
    for where in ("native", "guest"):
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        env = {"PATH": "/bin:/usr/bin", "HOME": str(work), "LC_ALL": "C"}
        out, err = tmp_path / f"{where}.out", tmp_path / f"{where}.err"
        with open(os.devnull, "rb") as i, open(out, "wb") as o, open(err, "wb") as e:
            if where == "native":
                proc = subprocess.run([BASH, str(script)], cwd=work, env=env, stdin=i, stdout=o, stderr=e, timeout=60)
                status = proc.returncode
            else:
                async with Controller() as ctl:
                    status = await asyncio.wait_for(
                        run_program(
                            ctl,
                            BASH,
                            [BASH, str(script)],
                            env,
                            cwd=str(work),
                            stdio=(i.fileno(), o.fileno(), e.fileno()),
                        ),
                        60,
                    )
        results.append(_outcome(status, out, err))
    native, guest = results
    assert native[0] == 4 and b"exit trap, status 4\n" in native[1]  # the script did run to its end
    assert guest == native
