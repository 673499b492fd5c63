#!/bin/sh
# /job/run.sh inside the kernel VM (tests/beds/qemu.py puts it there): the whole kernel
# tier in one boot. Setups first, then the reader checks once per pyroute2 version, then
# restore --apply per backend. Results go to ttyS1, progress to the console (ttyS0).
. /job/kernel_vm/common.sh
$py kernel_vm.runner setup > $out 2>/dev/ttyS0
$py kernel_vm.restore_vm setup > $out 2>/dev/ttyS0
for label in $labels; do
    PYTHONPATH=/job:/opt/pyroute2-$label $py kernel_vm.runner check --label $label > $out 2>/dev/ttyS0
done
# restore --apply into namespace nsR: `wg syncconf` without pyroute2, then netlink per version
/usr/bin/ip netns exec nsR $py kernel_vm.restore_vm run --backend wg > $out 2>/dev/ttyS0
for label in $labels; do
    PYTHONPATH=/job:/opt/pyroute2-$label /usr/bin/ip netns exec nsR $py kernel_vm.restore_vm run \
        --backend netlink --label $label > $out 2>/dev/ttyS0
done
$py kernel_vm.runner done > $out 2>/dev/ttyS0
