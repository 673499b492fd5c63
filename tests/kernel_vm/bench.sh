#!/bin/sh
# /job/run.sh of the benchmark's kernel VM (tests/bench/kernel_vm.py puts it there): one
# 10,000-peer interface, then the netlink read timed next to `wg show all dump` once per
# pyroute2 version. Results go to ttyS1, progress to the console (ttyS0).
out=/dev/ttyS1
stty -F $out raw -echo 2>/dev/null
cd /job
py="/usr/bin/python3.11 -S -m"
labels=$(ls /opt | sed -n 's/^pyroute2-//p')
export PYTHONPATH=/job
$py kernel_vm.bench setup > $out 2>/dev/ttyS0
for label in $labels; do
    PYTHONPATH=/job:/opt/pyroute2-$label $py kernel_vm.bench measure --label $label > $out 2>/dev/ttyS0
done
$py kernel_vm.runner done > $out 2>/dev/ttyS0
