#!/bin/sh
# /job/run.sh of the benchmark's kernel VM (tests/bench/kernel_vm.py puts it there): one
# 10,000-peer interface, then the netlink read timed next to `wg show all dump` once per
# pyroute2 version. Results go to ttyS1, progress to the console (ttyS0).
. /job/kernel_vm/common.sh
$py kernel_vm.bench setup > $out 2>/dev/ttyS0
for label in $labels; do
    PYTHONPATH=/job:/opt/pyroute2-$label $py kernel_vm.bench measure --label $label > $out 2>/dev/ttyS0
done
$py kernel_vm.runner done > $out 2>/dev/ttyS0
