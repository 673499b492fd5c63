# Sourced by the VM jobs (run.sh, bench.sh): results to ttyS1, progress to the console
# (ttyS0), Debian's python3.11 without site, one label per pyroute2 tree in /opt.
out=/dev/ttyS1
stty -F $out raw -echo 2>/dev/null
cd /job
py="/usr/bin/python3.11 -S -m"
labels=$(ls /opt | sed -n 's/^pyroute2-//p')
export PYTHONPATH=/job
